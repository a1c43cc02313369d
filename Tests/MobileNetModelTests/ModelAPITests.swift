import Foundation
import MobileNetKernels
import MobileNetModel
import MobileNetIO
import MobileNetOneDNN
import MobileNetTestSupport
import Testing

/// The model API: one pass for features, embedding and classifier; named taps against Keras's
/// intermediate outputs; replacing the top without reading weights again. Runs on the reference
/// backend (the model module needs no other) and checks oneDNN gives the same.
@Suite("Model API: forward, taps, replacing the top")
struct ModelAPITests {
    static let fixture = KerasRandomFixture.all.first { $0.name == "a035_96_top" }

    @Test("named taps equal Keras's intermediate outputs (Conv1_relu, block_2_add), both backends")
    func tapsMatchKeras() throws {
        let fixture = try #require(Self.fixture, "fixture a035_96_top missing from Tests/Fixtures/keras-random")
        let configuration = fixture.configuration
        let weights = try FormulaWeights.weights(for: configuration, seed: fixture.seed)
        let input = FormulaWeights.input(seed: fixture.seed, batch: fixture.batch, height: configuration.inputHeight, width: configuration.inputWidth)
        for backend in [ReferenceBackend() as any InferenceBackend, OneDNNBackend(threads: 1)] {
            let model = try MobileNetV2(configuration: configuration, weights: weights, backend: backend)
            let taps = try model.activations(input, layers: ["Conv1_relu", "block_2_add"])
            for layer in ["Conv1_relu", "block_2_add"] {
                let expected = try NPY.read(contentsOf: TestData.fixtures.appendingPathComponent("keras-random/a035_96_top.\(layer).npy"))
                let value = try #require(taps[layer])
                #expect(value.shape == expected.shape, "\(layer) on \(backend.name)")
                let diff = value.maxAbsoluteDifference(to: expected)
                print("tap \(layer) (\(backend.name)): max |diff| = \(diff)")
                #expect(diff <= 1e-4, "\(layer) on \(backend.name): max |diff| \(diff)")
            }
        }
    }

    @Test("forward gives features, embedding, logits and probabilities from one pass, equal to the separate models")
    func forwardEqualsSeparateModels() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 48, includeTop: true, classes: 7)
        let weights = try FormulaWeights.weights(for: configuration, seed: 3)
        let input = FormulaWeights.input(seed: 3, batch: 2, height: 64, width: 48)
        let model = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())
        let out = try model.forward(input)
        #expect(out.features.shape == [2, 2, 2, 1280])
        #expect(out.embedding.shape == [2, 1280])
        #expect(out.probabilities?.shape == [2, 7] && out.logits?.shape == [2, 7])
        #expect(out.output.scalars == out.probabilities?.scalars)
        #expect(try model(input).scalars == out.output.scalars)
        // Against independently built models.
        let embedder = try MobileNetV2(configuration: MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 48, includeTop: false, pooling: .avg),
                                       weights: weights.droppingClassifier(), backend: ReferenceBackend())
        #expect(try embedder(input).maxAbsoluteDifference(to: out.embedding) <= 1e-6)
        let logitsModel = try MobileNetV2(configuration: MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 48, classes: 7, classifierActivation: .none),
                                          weights: weights, backend: ReferenceBackend())
        let logits = try logitsModel(input)
        #expect(logits.maxAbsoluteDifference(to: try #require(out.logits)) <= 1e-6)
        // The embedding is the mean of the feature map; probabilities are the softmax of the logits.
        #expect(ReferenceKernels.globalAveragePool(out.features).maxAbsoluteDifference(to: out.embedding) <= 1e-6)
        #expect(ReferenceKernels.softmax(logits).maxAbsoluteDifference(to: try #require(out.probabilities)) <= 1e-6)
        // A logits model still gives probabilities from forward.
        #expect(try logitsModel.forward(input).probabilities?.maxAbsoluteDifference(to: try #require(out.probabilities)) ?? 1 <= 1e-6)
    }

    @Test("withoutClassifier and withClassifier reuse the backbone: same embedding, new head as given")
    func replacingTheTop() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 64, includeTop: true, classes: 5)
        let weights = try FormulaWeights.weights(for: configuration, seed: 5)
        let input = FormulaWeights.input(seed: 5, batch: 3, height: 64, width: 64)
        for backend in [ReferenceBackend() as any InferenceBackend, OneDNNBackend(threads: 1)] {
            let model = try MobileNetV2(configuration: configuration, weights: weights, backend: backend)
            let embedding = try model.forward(input).embedding
            let headless = try model.withoutClassifier()
            #expect(headless.configuration.includeTop == false && headless.configuration.pooling == .avg)
            #expect(try headless(input).maxAbsoluteDifference(to: embedding) <= 1e-5)
            let maxPooled = try model.withoutClassifier(pooling: .max)
            #expect(try maxPooled(input).maxAbsoluteDifference(to: ReferenceKernels.globalMaxPool(try model.features(input))) <= 1e-5)
            // A new 3-class head: probabilities = softmax(embedding · kernel + bias).
            let kernel = Tensor(shape: [1280, 3], scalars: (0..<3840).map { Float(($0 * 7919) % 200 - 100) / 10_000 })
            let bias: [Float] = [0.1, -0.2, 0.3]
            let reheaded = try model.withClassifier(kernel: kernel, bias: bias)
            #expect(reheaded.configuration.classes == 3)
            let expected = ReferenceKernels.softmax(ReferenceKernels.dense(embedding, DenseParameters(kernel: kernel, bias: bias)))
            #expect(try reheaded(input).maxAbsoluteDifference(to: expected) <= 1e-5)
            #expect(reheaded.summary.totalParameters == (try model.withoutClassifier(pooling: nil)).summary.totalParameters + 1280 * 3 + 3)
            // Seeded re-initialisation: Glorot uniform bounds, same seed same weights.
            let a = try model.withClassifier(classes: 4, seed: 9), b = try model.withClassifier(classes: 4, seed: 9)
            #expect(try a(input).scalars == b(input).scalars)
            #expect(throws: ModelError.self) { try model.withClassifier(kernel: Tensor(shape: [100, 3], scalars: [Float](repeating: 0, count: 300)), bias: bias) }
        }
    }

    @Test("tap errors name the layer: unknown names, folded layers; unfolded reference models tap every layer")
    func tapErrors() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: .avg)
        let weights = try FormulaWeights.weights(for: configuration, seed: 2)
        let input = FormulaWeights.input(seed: 2, batch: 1, height: 32, width: 32)
        let model = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())
        #expect(throws: ModelError.unknownLayer("block_99_add")) { _ = try model.activations(input, layers: ["block_99_add"]) }
        do {
            _ = try model.activations(input, layers: ["block_3_expand_BN"])
            Issue.record("a folded BatchNorm was tapped")
        } catch let error as ModelError {
            guard case .layerNotTappable(let layer, let reason) = error else { Issue.record("\(error)"); return }
            #expect(layer == "block_3_expand_BN" && reason.contains("block_3_expand_relu"))
        }
        #expect(model.tappableLayers.contains("block_13_expand_relu") && !model.tappableLayers.contains("block_13_expand"))
        let unfolded = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend(), foldBatchNorm: false)
        let both = try unfolded.activations(input, layers: ["block_3_expand_BN", "block_3_expand_relu"])
        let folded = try model.activations(input, layers: ["block_3_expand_relu"])
        #expect(try #require(both["block_3_expand_relu"]).maxAbsoluteDifference(to: try #require(folded["block_3_expand_relu"])) <= 1e-5)
        // relu6 of the BatchNorm output is the relu output.
        let bn = try #require(both["block_3_expand_BN"])
        #expect(ReferenceKernels.relu6(bn).maxAbsoluteDifference(to: try #require(both["block_3_expand_relu"])) == 0)
        // Every layer but the ZeroPadding2D ones (applied inside the depthwise convolution).
        #expect(unfolded.tappableLayers == unfolded.layers.map(\.name).filter { !$0.hasSuffix("_pad") })
    }
}
