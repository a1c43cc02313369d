// Inference benchmarks: batch-1 latency and batch-32 throughput of MobileNetV2 on the oneDNN
// backend, with allocation counts and peak resident memory, at 1 and 2 threads, for alpha 1.0
// at 224x224 and alpha 0.35 at 96x96. Random weights: speed does not depend on the values.
import Benchmark
import MobileNet

/// A SplitMix64 stream of uniform floats in 0..<1.
struct SplitMix {
    var state: UInt64
    mutating func uniform() -> Float {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Float((z ^ (z >> 31)) >> 40) / 16_777_216
    }
}

/// Random weights of the right shapes for `configuration` (BatchNorm statistics near identity).
func randomWeights(_ configuration: MobileNetV2Configuration) throws -> KerasWeightSet {
    var generator = SplitMix(state: 7)
    let layers = try MobileNetV2Architecture.layers(for: configuration)
    return KerasWeightSet(source: "random", layers: layers.filter { !$0.weights.isEmpty }.map { layer in
        KerasLayerWeights(name: layer.name, arrays: layer.weights.map { spec in
            let fanIn = spec.name == "depthwise_kernel" ? spec.shape[0] * spec.shape[1] : spec.shape.dropLast().reduce(1, *)
            let limit = (3 / Float(max(fanIn, 1))).squareRoot()
            let values: [Float] = (0..<spec.shape.reduce(1, *)).map { _ in
                let u = generator.uniform()
                switch spec.name {
                case "gamma", "moving_variance": return 0.5 + u
                case "beta", "moving_mean", "bias": return (u * 2 - 1) * 0.1
                default: return (u * 2 - 1) * limit
                }
            }
            return WeightArray(name: spec.name, shape: spec.shape, values: values)
        })
    })
}

/// The model and input of one benchmark, made in its setup hook.
final class Fixture: @unchecked Sendable {
    var model: MobileNetV2?
    var input = Tensor(shape: [0])
}

let benchmarks: @Sendable () -> Void = {
    // Throughput is batches per second: multiply by the batch size for images per second.
    for (alpha, size) in [(1.0, 224), (0.35, 96)] {
        let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: size, inputWidth: size, includeTop: true)
        for threads in [1, 2] {
            for batch in [1, 32] {
                let fixture = Fixture()
                let name = "MobileNetV2 alpha \(alpha) \(size)x\(size), batch \(batch), \(threads) thread\(threads == 1 ? "" : "s")"
                Benchmark(name, configuration: .init(
                    metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident],
                    maxDuration: .seconds(batch == 1 ? 5 : 15),
                    maxIterations: batch == 1 ? 200 : 20,
                    setup: {
                        fixture.model = try MobileNetV2(configuration: configuration, weights: randomWeights(configuration),
                                                        backend: OneDNNBackend(threads: threads))
                        var generator = SplitMix(state: 42)
                        fixture.input = Tensor(shape: [batch, size, size, 3],
                                               scalars: (0..<(batch * size * size * 3)).map { _ in generator.uniform() * 2 - 1 })
                        _ = try fixture.model?(fixture.input)  // plans the buffers for this batch size
                    },
                    teardown: { fixture.model = nil }
                )) { benchmark in
                    guard let model = fixture.model else { return }
                    for _ in benchmark.scaledIterations {
                        blackHole(try model(fixture.input))
                    }
                }
            }
        }
    }
}
