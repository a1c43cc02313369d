// Inference benchmarks: batch-1 latency and batch-32 throughput of MobileNetV2 on the oneDNN
// backend, with allocation counts and peak resident memory, at 1 and 2 threads (2 threads with
// the adaptive and the fixed thread policy), for alpha 1.0 at 224x224 and alpha 0.35 at 96x96.
// Random weights: speed does not depend on the values. The names carry the OpenMP waiting
// behaviour of the run (`make bench-waiting` runs the suite with GNU OpenMP's default bounded
// spin and again with OMP_WAIT_POLICY=passive), so a regression in either shows.
import Benchmark
import Foundation
import MobileNet

/// The model and input of one benchmark, made in its setup hook.
final class Fixture: @unchecked Sendable {
    var model: MobileNetV2?
    var input = Tensor(shape: [0])
}

let benchmarks: @Sendable () -> Void = {
    // Throughput is batches per second: multiply by the batch size for images per second.
    for (alpha, size) in [(1.0, 224), (0.35, 96)] {
        let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: size, inputWidth: size, includeTop: true)
        let waiting = ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"].map { "wait \($0)" } ?? "wait spin"
        for (threads, policy) in [(1, OneDNNBackend.ThreadPolicy.fixed), (2, .adaptive), (2, .fixed)] {
            for batch in [1, 32] {
                let fixture = Fixture()
                let name = "MobileNetV2 alpha \(alpha) \(size)x\(size), batch \(batch), \(threads) thread\(threads == 1 ? "" : "s \(policy.rawValue)"), \(waiting)"
                Benchmark(name, configuration: .init(
                    metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident],
                    maxDuration: .seconds(batch == 1 ? 5 : 15),
                    maxIterations: batch == 1 ? 200 : 20,
                    setup: {
                        fixture.model = try MobileNetV2(configuration: configuration, weights: KerasWeightSet.random(for: configuration),
                                                        backend: OneDNNBackend(threads: threads, threadPolicy: policy))
                        fixture.input = Tensor.randomInput(shape: [batch, size, size, 3], seed: 42)
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
