// Similarity-search benchmarks (issue 6): query latency over 10k and 100k stored 1280-d
// embeddings in float32 and float16, index load (normalisation and copy) time, and memory.
// Target: one query over 100k vectors in under 50 ms on the project's 2-core machine.
import Benchmark
import MobileNet

/// Non-negative pseudo-embeddings (like pooled ReLU6 outputs), deterministic.
func embeddings(count: Int, dimension: Int, seed: UInt64) -> [Float] {
    var state = seed
    return (0..<(count * dimension)).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(state >> 40) / 16_777_216 * 6
    }
}

/// The index and query of one benchmark, made in its setup hook.
final class SearchFixture: @unchecked Sendable {
    var index: EmbeddingIndex?
    var raw: [Float] = []
    var query: [Float] = []
}

let benchmarks: @Sendable () -> Void = {
    let dimension = 1280
    for count in [10_000, 100_000] {
        for precision in VectorPrecision.allCases {
            let fixture = SearchFixture()
            Benchmark("similar: top-5 query over \(count / 1000)k vectors, \(precision.rawValue)", configuration: .init(
                metrics: [.wallClock, .throughput, .peakMemoryResident],
                maxDuration: .seconds(5),
                maxIterations: 200,
                setup: {
                    let raw = embeddings(count: count, dimension: dimension, seed: 1)
                    fixture.index = try EmbeddingIndex(identifiers: (0..<count).map { "image\($0).jpg" }, vectors: raw,
                                                       dimension: dimension, precision: precision)
                    fixture.query = embeddings(count: 1, dimension: dimension, seed: 2)
                },
                teardown: { fixture.index = nil }
            )) { benchmark in
                for _ in benchmark.scaledIterations {
                    blackHole(try fixture.index?.search(fixture.query, top: 5))
                }
            }
        }
        let loadFixture = SearchFixture()
        Benchmark("similar: load \(count / 1000)k vectors into the index (normalise, float32)", configuration: .init(
            metrics: [.wallClock, .peakMemoryResident],
            maxDuration: .seconds(5),
            maxIterations: 20,
            setup: { loadFixture.raw = embeddings(count: count, dimension: dimension, seed: 1) },
            teardown: { loadFixture.raw = [] }
        )) { benchmark in
            let identifiers = (0..<count).map { "image\($0).jpg" }
            for _ in benchmark.scaledIterations {
                blackHole(try EmbeddingIndex(identifiers: identifiers, vectors: loadFixture.raw, dimension: dimension))
            }
        }
    }
}
