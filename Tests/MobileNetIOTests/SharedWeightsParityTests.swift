import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// Parity with Keras on the shared ImageNet weights, for every layout of the weight file, on
/// the exact preprocessed inputs Keras got (`data/reference/<id>.input.npy`).
@Suite("Shared ImageNet weights: Keras parity on real photos", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct SharedWeightsParityTests {
    struct Reference {
        let ids: [String]
        let input: Tensor
        let probabilities: Tensor
        let features: Tensor
    }

    static let reference: Reference? = {
        let ids = TestData.referenceIDs()
        guard !ids.isEmpty else { return nil }
        func load(_ suffix: String) -> Tensor? {
            var parts: [Tensor] = []
            for id in ids {
                guard let t = try? NPY.read(contentsOf: TestData.shared("data/reference/\(id).\(suffix).npy")) else { return nil }
                parts.append(t)
            }
            return Tensor.concatenatingBatches(parts)
        }
        guard let input = load("input"), let probabilities = load("probs"), let features = load("features") else { return nil }
        return Reference(ids: ids, input: input, probabilities: probabilities, features: features)
    }()

    @Test("probabilities and 1280-d features match Keras within 1e-4; top-5 identical",
          arguments: TestData.sharedWeightFiles.map(\.name))
    func parity(file: String) throws {
        let reference = try #require(Self.reference, "reference outputs missing in \(TestData.shared("data/reference").path)")
        #expect(reference.ids.count == 31)
        let (weights, format) = try KerasWeightFile.read(contentsOf: TestData.shared("data/weights/\(file)"))
        let hasTop = weights.hasClassifier
        #expect(hasTop == TestData.sharedWeightFiles.first { $0.name == file }!.includeTop)
        print("\(file): \(format.rawValue), \(weights.layers.count) layers with weights")

        if hasTop {
            let model = try MobileNetV2(configuration: MobileNetV2Configuration(), weights: weights)
            let probabilities = try model(reference.input)
            let diff = probabilities.maxAbsoluteDifference(to: reference.probabilities)
            print("\(file): probabilities max |diff| = \(diff)")
            #expect(diff <= 1e-4)
            for (row, (ours, keras)) in zip(probabilities.rows, reference.probabilities.rows).enumerated() {
                let a = ImageNetClasses.topK(ours, k: 5).map(\.index)
                let b = ImageNetClasses.topK(keras, k: 5).map(\.index)
                #expect(a == b, "top-5 of \(reference.ids[row])")
            }
        }
        let embedding = try MobileNetV2(
            configuration: MobileNetV2Configuration(includeTop: false, pooling: .avg),
            weights: weights.droppingClassifier())
        let features = try embedding(reference.input)
        #expect(features.shape == [reference.ids.count, 1280])
        let diff = features.maxAbsoluteDifference(to: reference.features)
        print("\(file): features max |diff| = \(diff)")
        #expect(diff <= 1e-4)
    }
}
