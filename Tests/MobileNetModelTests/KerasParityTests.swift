import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

typealias KerasFixture = KerasRandomFixture

@Suite("Keras parity on random-weight fixtures (Keras 3.15.1 / TF 2.21.0)")
struct KerasParityTests {
    @Test("the fixture manifest is present")
    func manifestLoads() {
        #expect(KerasFixture.all.count >= 8)
    }

    @Test("architecture matches Keras layer by layer: names, types, output shapes, parameters", arguments: KerasFixture.all)
    func architecture(fixture: KerasFixture) throws {
        let model = ModelSummary(modelName: fixture.configuration.kerasModelName, layers: try MobileNetV2Architecture.layers(for: fixture.configuration))
        #expect(model.modelName == fixture.model_name)
        #expect(model.totalParameters == fixture.count_params)
        #expect(model.rows.count == fixture.layers.count)
        for (ours, keras) in zip(model.rows, fixture.layers) {
            #expect(ours.name == keras.name)
            #expect(ours.type == keras.type, "\(ours.name)")
            #expect(ours.outputShape == keras.outputShape, "\(ours.name)")
            #expect(ours.parameters == keras.parameters, "\(ours.name)")
        }
    }

    @Test("outputs equal Keras within 1e-4 (BatchNorm with random statistics)", arguments: KerasFixture.all)
    func outputs(fixture: KerasFixture) throws {
        let configuration = fixture.configuration
        let weights = try FormulaWeights.weights(for: configuration, seed: fixture.seed)
        // The reference backend is the oracle; the oneDNN backend is checked against it in MobileNetOneDNNTests.
        let model = try MobileNetV2(configuration: configuration, weights: weights, backend: ReferenceBackend())
        let input = FormulaWeights.input(seed: fixture.seed, batch: fixture.batch, height: configuration.inputHeight, width: configuration.inputWidth)
        let expected = try NPY.read(contentsOf: TestData.fixtures.appendingPathComponent("keras-random/\(fixture.file)"))
        let output = try model(input)
        #expect(output.shape == fixture.output_shape)
        let diff = output.maxAbsoluteDifference(to: expected)
        print("parity \(fixture.name): max |diff| = \(diff)")
        #expect(diff <= 1e-4, "\(fixture.name): max |diff| \(diff)")
    }

    @Test("folded BatchNorm equals the unfolded layer-by-layer graph")
    func foldingEqualsUnfolded() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 48, includeTop: false, pooling: .avg)
        let weights = try FormulaWeights.weights(for: configuration, seed: 11)
        let folded = try MobileNetV2.makeGraph(configuration: configuration, weights: weights, foldBatchNorm: true)
        let unfolded = try MobileNetV2.makeGraph(configuration: configuration, weights: weights, foldBatchNorm: false)
        #expect(unfolded.nodes.count > folded.nodes.count)
        let input = FormulaWeights.input(seed: 11, batch: 2, height: 64, width: 48)
        let a = try ReferenceBackend().makeExecutor(for: folded).run(input)[0]
        let b = try ReferenceBackend().makeExecutor(for: unfolded).run(input)[0]
        #expect(a.maxAbsoluteDifference(to: b) <= 1e-5)
    }
}
