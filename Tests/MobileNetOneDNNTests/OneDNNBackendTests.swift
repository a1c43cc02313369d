import Foundation
import MobileNet
import MobileNetOneDNN
import MobileNetTestSupport
import Testing

typealias RandomFixture = KerasRandomFixture

/// The oneDNN backend against the plain-Swift reference backend (the oracle) and Keras.
@Suite("oneDNN backend: parity with the reference backend and Keras")
struct OneDNNBackendTests {
    @Test("every random-weight fixture: oneDNN equals the reference backend and Keras within 1e-4, 1 and 2 threads",
          arguments: RandomFixture.all)
    func fixtures(fixture: RandomFixture) throws {
        let configuration = fixture.configuration
        let weights = try FormulaWeights.weights(for: configuration, seed: fixture.seed)
        let input = FormulaWeights.input(seed: fixture.seed, batch: fixture.batch, height: configuration.inputHeight, width: configuration.inputWidth)
        let expected = try NPY.read(contentsOf: TestData.fixtures.appendingPathComponent("keras-random/\(fixture.file)"))
        let reference = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())(input)
        for threads in [1, 2] {
            let model = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: threads))
            #expect(model.backendName == "onednn")
            let output = try model(input)
            let vsReference = output.maxAbsoluteDifference(to: reference)
            let vsKeras = output.maxAbsoluteDifference(to: expected)
            print("onednn parity \(fixture.name) threads \(threads): max |diff| vs reference \(vsReference), vs Keras \(vsKeras)")
            #expect(vsReference <= 1e-4, "\(fixture.name), \(threads) threads: vs reference \(vsReference)")
            #expect(vsKeras <= 1e-4, "\(fixture.name), \(threads) threads: vs Keras \(vsKeras)")
        }
    }

    @Test("batch sizes 1, 3 and 32 at 1 and 2 threads; every example equals its batch-1 run and the reference",
          arguments: [1, 2])
    func batchSizes(threads: Int) throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 96, inputWidth: 96, includeTop: true)
        let weights = try FormulaWeights.weights(for: configuration, seed: 5)
        let model = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: threads))
        let reference = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())
        let big = FormulaWeights.input(seed: 5, batch: 32, height: 96, width: 96)
        let expected = try reference(big)
        // Every example on its own (batch 1) through the same oneDNN model.
        let singles = try big.rows.map { try model(Tensor(shape: [1, 96, 96, 3], scalars: $0)).scalars }
        for batch in [1, 3, 32, 3, 1] {  // repeated sizes reuse their cached plans
            let input = Tensor(shape: [batch, 96, 96, 3], scalars: Array(big.scalars.prefix(batch * 96 * 96 * 3)))
            let output = try model(input)
            #expect(output.shape == [batch, 1000])
            let want = Tensor(shape: [batch, 1000], scalars: Array(expected.scalars.prefix(batch * 1000)))
            let diff = output.maxAbsoluteDifference(to: want)
            print("onednn batch \(batch), threads \(threads): max |diff| vs reference \(diff)")
            #expect(diff <= 1e-4, "batch \(batch): \(diff)")
            let vsSingle = zip(output.rows, singles).map { zip($0, $1).map { abs($0 - $1) }.max() ?? .infinity }.max() ?? .infinity
            #expect(vsSingle <= 1e-5, "batch \(batch): max |diff| vs the batch-1 runs \(vsSingle)")
        }
    }

    @Test("micro-batching: a batch of 7 or 32 run as micro-batches of 1, 3, 4 or 64 equals the reference, feature maps included")
    func microBatches() throws {
        for includeTop in [true, false] {
            let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 48, includeTop: includeTop, pooling: nil)
            let weights = try FormulaWeights.weights(for: configuration, seed: 21)
            let reference = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())
            for batch in [7, 32] {
                let input = FormulaWeights.input(seed: 21, batch: batch, height: 64, width: 48)
                let expected = try reference(input)
                var outputs: [Tensor] = []
                for micro in [1, 3, 4, 64] {
                    let model = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 2, microBatch: micro))
                    let output = try model(input)
                    #expect(output.shape == expected.shape, "micro \(micro)")
                    let diff = output.maxAbsoluteDifference(to: expected)
                    #expect(diff <= 1e-4, "top \(includeTop), batch \(batch), micro-batch \(micro): max |diff| \(diff)")
                    outputs.append(output)
                }
                // The split changes nothing beyond float rounding between plans.
                for output in outputs.dropFirst() { #expect(output.maxAbsoluteDifference(to: outputs[0]) <= 1e-5) }
            }
        }
        #expect(OneDNNBackend(microBatch: 0).microBatch == 1)
        // Many distinct batch sizes (as when failed files shrink batches): plans are evicted and
        // rebuilt, results stay right.
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: true)
        let weights = try FormulaWeights.weights(for: configuration, seed: 22)
        let reference = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())
        let model = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 1, microBatch: 16))
        for batch in [5, 6, 7, 8, 5, 9, 1, 16, 6, 5] {
            let input = FormulaWeights.input(seed: 22 + batch, batch: batch, height: 32, width: 32)
            let diff = try model(input).maxAbsoluteDifference(to: reference(input))
            #expect(diff <= 1e-4, "batch \(batch): \(diff)")
        }
    }

    @Test("thread policies: adaptive (lanes of micro-batches; all threads or one per micro-batch) gives the same bits as one fixed thread, every output, uneven splits, many runs")
    func threadPolicies() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 48, includeTop: true)
        let weights = try FormulaWeights.weights(for: configuration, seed: 23)
        let single = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 1, microBatch: 2, threadPolicy: .fixed))
        let adaptive = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 2, microBatch: 2, threadPolicy: .adaptive))
        let fixed = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 2, microBatch: 2, threadPolicy: .fixed))
        #expect(OneDNNBackend().threadPolicy == .adaptive)
        // Batch 9 in micro-batches of 2: five micro-batches over two lanes, the last of one image.
        for batch in [9, 4, 1] {
            let input = FormulaWeights.input(seed: 23 + batch, batch: batch, height: 64, width: 48)
            let expected = try single.forward(input)
            // Batch 1 runs many times: the chooser tries both thread counts and switches.
            for _ in 0..<(batch == 1 ? 40 : 3) {
                for (name, model) in [("adaptive", adaptive), ("fixed", fixed)] {
                    try expectSameBits(try model.forward(input), expected, "\(name) batch \(batch)")
                }
            }
        }
    }

    @Test("lanes take micro-batches as they free up: more threads than cores (one lane per core), every split, the same bits as one thread")
    func lanesTakeMicroBatches() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 48, inputWidth: 48, includeTop: true)
        let weights = try FormulaWeights.weights(for: configuration, seed: 31)
        let single = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 1, microBatch: 3, threadPolicy: .fixed))
        // Three threads on a 2-core machine: two lanes (at most one per core; a third would only
        // wait for a core and hold a plan's buffers); which lane runs which micro-batch changes
        // from run to run.
        let lanes = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 3, microBatch: 3, threadPolicy: .adaptive))
        // 8 = 3 + 3 + 2 (two sizes per lane), 7 = 3 + 3 + 1, 6 = 3 + 3 (fewer micro-batches than lanes), 13 = 3 * 4 + 1.
        for batch in [8, 7, 6, 13, 8] {
            let input = FormulaWeights.input(seed: 31 + batch, batch: batch, height: 48, width: 48)
            let expected = try single.forward(input)
            for _ in 0..<4 {
                try expectSameBits(try lanes.forward(input), expected, "batch \(batch)")
            }
        }
    }

    @Test("the thread chooser starts at one thread when another thread is runnable, at all threads when none is, and then tries both")
    func chooserFirstChoice() {
        // Only this thread runnable: all threads first. One more (a busy process on a 2-core
        // machine): one thread first. The first runs: 3 at the first choice (the first only warms
        // the plan up), then 3 at the other count.
        for (runnable, first, other) in [(1, 2, 1), (2, 1, 2), (9, 1, 2), (nil, 2, 1)] as [(Int?, Int, Int)] {
            var chooser = ThreadCountChooser(maximum: 2, adaptive: true, runnableThreads: runnable)
            #expect(chooser.firstChoice == first, "runnable \(String(describing: runnable))")
            let counts = (0..<6).map { _ in chooser.next(batch: 1) }
            #expect(counts == [first, first, first, other, other, other], "runnable \(String(describing: runnable)): \(counts)")
        }
        // The fixed policy and a single thread never switch.
        var fixed = ThreadCountChooser(maximum: 2, adaptive: false, runnableThreads: 5)
        #expect(fixed.firstChoice == 2 && (0..<10).allSatisfy { _ in fixed.next(batch: 1) == 2 })
        var single = ThreadCountChooser(maximum: 1, adaptive: true, runnableThreads: 5)
        #expect((0..<10).allSatisfy { _ in single.next(batch: 1) == 1 })
        // After the first six runs the faster count is used: here one thread, measured faster.
        var chooser = ThreadCountChooser(maximum: 2, adaptive: true, runnableThreads: 1)
        for _ in 0..<6 {
            let threads = chooser.next(batch: 1)
            chooser.record(batch: 1, threads: threads, seconds: threads == 1 ? 0.005 : 0.010)
        }
        #expect(chooser.next(batch: 1) == 1)
    }

    @Test("the thread chooser returns to all threads within one probe interval and a few runs after a load ends, and keeps away from a losing count")
    func chooserFollowsLoad() {
        var chooser = ThreadCountChooser(maximum: 2, adaptive: true, runnableThreads: 1)
        // Loaded: two threads 10 ms, one thread 5 ms, for 100 runs.
        var counts: [Int] = []
        for _ in 0..<100 {
            let threads = chooser.next(batch: 1)
            counts.append(threads)
            chooser.record(batch: 1, threads: threads, seconds: threads == 2 ? 0.010 : 0.005)
        }
        // After the first six runs, two threads only as rare probes (the interval doubles).
        #expect(counts.dropFirst(6).filter { $0 == 2 }.count <= 4, "\(counts)")
        // The load ends: two threads 3 ms. Within the current interval (at most 64 runs by now)
        // plus three runs, two threads are chosen and stay chosen.
        counts = []
        for _ in 0..<(ThreadCountChooser.longestProbeInterval + 8) {
            let threads = chooser.next(batch: 1)
            counts.append(threads)
            chooser.record(batch: 1, threads: threads, seconds: threads == 2 ? 0.003 : 0.005)
        }
        let firstTwo = counts.firstIndex(of: 2) ?? counts.count
        let settled = counts.indices.first { i in counts[i...].prefix(ThreadCountChooser.probeInterval - 1).allSatisfy { $0 == 2 } } ?? counts.count
        #expect(firstTwo <= 64, "\(counts)")
        #expect(settled <= firstTwo + 3, "two threads won at run \(firstTwo) but were settled on only at \(settled): \(counts)")
        // From then on one thread only as a probe every interval.
        let probesOfOne = counts[settled...].filter { $0 == 1 }.count
        let allowed = (counts.count - settled) / ThreadCountChooser.probeInterval + 1
        #expect(probesOfOne <= allowed, "\(counts)")
    }

    /// Every output of `output` (features, embedding, probabilities) equals `expected` bit for bit.
    private func expectSameBits(_ output: MobileNetV2Output, _ expected: MobileNetV2Output, _ label: String) throws {
        let f = output.features.maxAbsoluteDifference(to: expected.features)
        let e = output.embedding.maxAbsoluteDifference(to: expected.embedding)
        let p = try #require(output.probabilities).maxAbsoluteDifference(to: try #require(expected.probabilities))
        #expect(f == 0 && e == 0 && p == 0, "\(label): features \(f), embedding \(e), probabilities \(p)")
    }

    @Test("layout policies: blocked (the default) and library equal the reference; on AVX-512 blocked runs oneDNN's jit kernels on nChw16c, library its brgemm ones")
    func layoutPolicies() throws {
        #expect(OneDNNBackend().layoutPolicy == .blocked)
        #expect(OneDNNBackend().microBatch == 1 && OneDNNBackend.defaultMicroBatch == 1)
        // Without lanes (fixed policy) micro-batches run one after the other: 4 by default.
        #expect(OneDNNBackend(threadPolicy: .fixed).microBatch == 4 && OneDNNBackend(microBatch: 3, threadPolicy: .fixed).microBatch == 3)
        let configuration = MobileNetV2Configuration(alpha: 0.5, inputHeight: 64, inputWidth: 64, includeTop: true)
        let weights = try FormulaWeights.weights(for: configuration, seed: 51)
        let reference = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())
        var implementations: [OneDNNBackend.LayoutPolicy: [String]] = [:]
        for policy in [OneDNNBackend.LayoutPolicy.blocked, .library] {
            let backend = OneDNNBackend(threads: 2, layoutPolicy: policy, microBatch: 2, threadPolicy: .fixed)
            let model = try MobileNetV2(configuration: configuration, weights: weights, backend: backend)
            let summary = try backend.planSummary(for: model.graph, batch: 2)
            implementations[policy] = summary.primitives.map(\.implementation)
            // Every convolution of the graph is one primitive, none a reference kernel.
            #expect(summary.primitives.filter { $0.node.hasSuffix("_expand") }.count == 16, "\(policy)")
            #expect(!summary.primitives.contains { $0.implementation.contains("ref") }, "\(policy): \(summary.primitives)")
            #expect(summary.activationBytes > 0)
            for batch in [1, 3] {
                let input = FormulaWeights.input(seed: 51 + batch, batch: batch, height: 64, width: 64)
                let a = try model.forward(input), r = try reference.forward(input)
                #expect(a.features.maxAbsoluteDifference(to: r.features) <= 1e-4, "\(policy) batch \(batch)")
                let p = try #require(a.probabilities).maxAbsoluteDifference(to: try #require(r.probabilities))
                #expect(p <= 1e-5, "\(policy) batch \(batch): probabilities \(p)")
            }
        }
        if OneDNNBackend.runsAVX512 {
            let blocked = implementations[.blocked] ?? [], library = implementations[.library] ?? []
            #expect(blocked.filter { $0.hasPrefix("jit_1x1") }.count >= 30, "\(blocked)")
            #expect(!blocked.contains { $0.hasPrefix("brg") }, "\(blocked)")
            #expect(library.contains { $0.hasPrefix("brg") }, "\(library)")
        }
    }

    @Test("depthwise fusion: at 224x224 oneDNN fuses some expansion and depthwise pairs; equal to the reference and to the unfused plan, the same bits at 1 and 2 threads (fused differently)")
    func depthwiseFusion() throws {
        let configuration = MobileNetV2Configuration(alpha: 1.0, inputHeight: 224, inputWidth: 224, includeTop: true)
        let weights = try FormulaWeights.weights(for: configuration, seed: 61)
        let graph = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend()).graph
        // oneDNN judges the work per thread: at one thread it fuses the most (2026-12-03, 2 MB L2:
        // blocks 1-3 at one thread, block 1 at two).
        let fusedSummary = try OneDNNBackend(threads: 1, threadPolicy: .fixed).planSummary(for: graph)
        let fusedPairs = fusedSummary.primitives.filter { $0.node.contains("+") }.map(\.node)
        let fusedAtTwo = try OneDNNBackend(threads: 2, threadPolicy: .fixed).planSummary(for: graph).primitives.filter { $0.node.contains("+") }.map(\.node)
        print("fused 1x1 + depthwise pairs at 224x224: 1 thread \(fusedPairs), 2 threads \(fusedAtTwo)")
        #expect(!fusedPairs.isEmpty, "oneDNN fused no pair at 224x224 on one thread on this CPU")
        #expect(fusedPairs.allSatisfy { $0.hasSuffix("_depthwise") && $0.contains("_expand+") }, "\(fusedPairs)")
        let unfusedSummary = try OneDNNBackend(threads: 1, threadPolicy: .fixed, fusesDepthwise: false).planSummary(for: graph)
        #expect(!unfusedSummary.primitives.contains { $0.node.contains("+") })
        #expect(unfusedSummary.primitives.count == fusedSummary.primitives.count + fusedPairs.count)

        let input = FormulaWeights.input(seed: 61, batch: 1, height: 224, width: 224)
        let reference = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend()).forward(input)
        let fused1 = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 1, threadPolicy: .fixed)).forward(input)
        let fused2 = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 2, threadPolicy: .fixed)).forward(input)
        let unfused = try MobileNetV2(configuration: configuration, weights: weights,
                                      backend: OneDNNBackend(threads: 2, threadPolicy: .fixed, fusesDepthwise: false)).forward(input)
        try expectSameBits(fused2, fused1, "fused, 2 threads against 1")
        for (name, output, tolerance) in [("reference", reference, Float(1e-4)), ("unfused", unfused, Float(1e-5))] {
            let f = fused2.features.maxAbsoluteDifference(to: output.features)
            let p = try #require(fused2.probabilities).maxAbsoluteDifference(to: try #require(output.probabilities))
            #expect(f <= tolerance && p <= tolerance, "fused against \(name): features \(f), probabilities \(p)")
        }
    }

    @Test("feature maps (no top, no pooling) and max pooling come out in NHWC like the reference")
    func featureMapLayout() throws {
        for pooling in [Pooling?.none, .max] {
            let configuration = MobileNetV2Configuration(alpha: 0.5, inputHeight: 67, inputWidth: 45, includeTop: false, pooling: pooling)
            let weights = try FormulaWeights.weights(for: configuration, seed: 9)
            let input = FormulaWeights.input(seed: 9, batch: 2, height: 67, width: 45)
            let a = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend())(input)
            let b = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())(input)
            #expect(a.shape == b.shape)
            #expect(a.maxAbsoluteDifference(to: b) <= 1e-4, "pooling \(String(describing: pooling))")
        }
    }

    @Test("one executor used from several threads at once gives the same results")
    func concurrentUse() async throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 64, includeTop: false, pooling: .avg)
        let weights = try FormulaWeights.weights(for: configuration, seed: 3)
        let model = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(threads: 1))
        let inputs = (0..<8).map { FormulaWeights.input(seed: 100 + $0, batch: 1 + $0 % 3, height: 64, width: 64) }
        let expected = try inputs.map { try model($0) }
        try await withThrowingTaskGroup(of: (Int, Tensor).self) { group in
            for round in 0..<3 {
                for (i, input) in inputs.enumerated() {
                    group.addTask { (i, try model(input)) }
                    _ = round
                }
            }
            for try await (i, output) in group {
                #expect(output == expected[i])
            }
        }
    }

    @Test("a stand-alone BatchNorm (unfolded graph) is rejected with a typed error")
    func unsupportedOperation() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: .avg)
        let weights = try FormulaWeights.weights(for: configuration, seed: 1)
        let graph = try MobileNetV2.makeGraph(configuration: configuration, weights: weights, foldBatchNorm: false)
        #expect {
            _ = try OneDNNBackend().makeExecutor(for: graph)
        } throws: { error in
            guard case OneDNNError.unsupportedOperation = error else { return false }
            return true
        }
    }

    @Test("the reference-implementation guard: forced plain layouts select a 'ref' kernel, which is refused")
    func referenceGuard() throws {
        // A dense convolution with plain NHWC activations and OIHW weights forced: oneDNN 2.6 on
        // AVX2 has no optimised kernel for that combination and silently picks `ref:any`.
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: .avg)
        let weights = try FormulaWeights.weights(for: configuration, seed: 1)
        var thrown: OneDNNError?
        do {
            _ = try MobileNetV2(configuration: configuration, weights: weights, backend: OneDNNBackend(layoutPolicy: .plain))
        } catch let error as OneDNNError {
            thrown = error
        }
        print("onednn guard: \(thrown.map(\.description) ?? "no error")")
        guard case .referenceImplementation(_, let implementation)? = thrown else {
            Issue.record("expected OneDNNError.referenceImplementation, got \(String(describing: thrown))")
            return
        }
        #expect(implementation.contains("ref"))
    }
}

/// The shared ImageNet weights on the 31 reference photos.
@Suite("oneDNN backend: shared ImageNet weights", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct OneDNNSharedWeightsTests {
    @Test("probabilities and features equal Keras within 1e-4, top-5 identical, batch 31 and batch 1, 1 and 2 threads")
    func sharedWeights() throws {
        let ids = TestData.referenceIDs()
        #expect(ids.count == 31)
        func load(_ suffix: String) throws -> Tensor {
            try Tensor.concatenatingBatches(ids.map { try NPY.read(contentsOf: TestData.shared("data/reference/\($0).\(suffix).npy")) })
        }
        let input = try load("input"), probabilities = try load("probs"), features = try load("features")
        let weights = try KerasWeightFile.read(contentsOf: TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5")).weights
        for threads in [1, 2] {
            let model = try MobileNetV2(configuration: MobileNetV2Configuration(), weights: weights, backend: OneDNNBackend(threads: threads))
            let output = try model(input)
            let diff = output.maxAbsoluteDifference(to: probabilities)
            print("onednn shared weights, threads \(threads): probabilities max |diff| vs Keras = \(diff)")
            #expect(diff <= 1e-4)
            for (row, (ours, keras)) in zip(output.rows, probabilities.rows).enumerated() {
                #expect(ImageNetClasses.topK(ours, k: 5).map(\.index) == ImageNetClasses.topK(keras, k: 5).map(\.index), "top-5 of \(ids[row])")
            }
            // Batch 1, image by image, through the same model.
            var single: Float = 0
            for (i, row) in input.rows.enumerated().prefix(threads == 1 ? 31 : 4) {
                let one = try model(Tensor(shape: [1, 224, 224, 3], scalars: row))
                single = max(single, one.maxAbsoluteDifference(to: Tensor(shape: [1, 1000], scalars: probabilities.rows[i])))
            }
            print("onednn shared weights, threads \(threads), batch 1: probabilities max |diff| vs Keras = \(single)")
            #expect(single <= 1e-4)
        }
        let embedding = try MobileNetV2(configuration: MobileNetV2Configuration(includeTop: false, pooling: .avg),
                                        weights: weights.droppingClassifier(), backend: OneDNNBackend())
        let f = try embedding(input)
        let diff = f.maxAbsoluteDifference(to: features)
        print("onednn shared weights: features max |diff| vs Keras = \(diff)")
        #expect(diff <= 1e-4)
    }
}

@Suite("the dense layer in column slices")
struct DenseSlicesTests {
    @Test("the same bits at 1, 2, 3 and 4 threads, and the plain sum within float rounding, for slice-aligned and ragged widths")
    func sameBitsAtEveryThreadCount() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
        }
        for (batch, inputs, outputs) in [(1, 1280, 1000), (3, 1280, 1000), (1, 64, 5), (2, 100, 257), (1, 17, 512)] {
            let x = (0..<(batch * inputs)).map { _ in next() }
            let kernel = (0..<(inputs * outputs)).map { _ in next() }
            let bias = (0..<outputs).map { _ in next() }
            var results: [[Float]] = []
            for threads in [1, 2, 3, 4] {
                var out = (0..<batch).flatMap { _ in bias }
                let failure = x.withUnsafeBufferPointer { xb in
                    kernel.withUnsafeBufferPointer { kb in
                        out.withUnsafeMutableBufferPointer { ob in
                            DenseSlices.run(source: xb.baseAddress!, kernel: kb.baseAddress!, destination: ob.baseAddress!,
                                            batch: batch, inputs: inputs, outputs: outputs, threads: threads)
                        }
                    }
                }
                #expect(failure == nil)
                results.append(out)
            }
            for (i, r) in results.enumerated().dropFirst() {
                #expect(r.map(\.bitPattern) == results[0].map(\.bitPattern), "\(batch)x\(inputs)x\(outputs): \(i + 1) threads differ from 1")
            }
            var worst = 0.0
            for n in 0..<batch {
                for o in 0..<outputs {
                    var sum = Double(bias[o])
                    for i in 0..<inputs { sum += Double(x[n * inputs + i]) * Double(kernel[i * outputs + o]) }
                    worst = max(worst, abs(sum - Double(results[0][n * outputs + o])))
                }
            }
            #expect(worst <= 1e-3, "\(batch)x\(inputs)x\(outputs): max |diff| vs the double sum \(worst)")
        }
    }
}
