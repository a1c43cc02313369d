import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

@Suite("Weight loader: layouts and strictness")
struct WeightLoaderTests {
    static let transferDirectory = TestData.fixtures.appendingPathComponent("keras-transfer")

    @Test("a MobileNetV2 nested in a Keras transfer model loads from .h5 and .keras, matching Keras", arguments: ["transfer_a035_96.h5", "transfer_a035_96.keras"])
    func nestedModel(file: String) throws {
        let (weights, format) = try KerasWeightFile.read(contentsOf: Self.transferDirectory.appendingPathComponent(file))
        #expect(format == (file.hasSuffix(".h5") ? .legacyModel : .kerasArchive))
        let backbone = try weights.mobileNetV2Part()
        let head = weights.layersOutsideMobileNetV2()
        #expect(head.map(\.name) == ["dense"])
        #expect(head.first?.arrays.map(\.shape) == [[1280, 5], [5]])
        let model = try MobileNetV2(configuration: MobileNetV2Configuration(alpha: 0.35, inputHeight: 96, inputWidth: 96, includeTop: false, pooling: .avg),
                                    weights: backbone)
        let input = FormulaWeights.input(seed: 100, batch: 2, height: 96, width: 96)
        let features = try model(input)
        let expected = try NPY.read(contentsOf: Self.transferDirectory.appendingPathComponent("transfer_a035_96.features.npy"))
        let diff = features.maxAbsoluteDifference(to: expected)
        print("\(file): nested backbone features max |diff| = \(diff)")
        #expect(diff <= 1e-4)
    }

    @Test("wrong alpha is reported as such")
    func wrongAlpha() throws {
        let weights = try FormulaWeights.weights(for: MobileNetV2Configuration(alpha: 0.5, includeTop: false), seed: 1)
        #expect(throws: ModelError.alphaMismatch(expected: 1.0, found: 0.5, source: weights.source)) {
            try MobileNetV2(configuration: MobileNetV2Configuration(includeTop: false), weights: weights)
        }
    }

    @Test("a file without the top cannot build a classifier, and vice versa")
    func topMismatch() throws {
        let noTop = try FormulaWeights.weights(for: MobileNetV2Configuration(alpha: 0.35, includeTop: false), seed: 1)
        #expect(throws: ModelError.missingClassifier(source: noTop.source)) {
            try MobileNetV2(configuration: MobileNetV2Configuration(alpha: 0.35), weights: noTop)
        }
        let top = try FormulaWeights.weights(for: MobileNetV2Configuration(alpha: 0.35), seed: 1)
        #expect(throws: ModelError.unexpectedClassifier(classes: 1000, source: top.source)) {
            try MobileNetV2(configuration: MobileNetV2Configuration(alpha: 0.35, includeTop: false, pooling: .avg), weights: top)
        }
        #expect(throws: ModelError.classCountMismatch(expected: 10, found: 1000, source: top.source)) {
            try MobileNetV2(configuration: MobileNetV2Configuration(alpha: 0.35, classes: 10), weights: top)
        }
    }

    @Test("shape mismatches name the layer and both shapes; extra and missing layers are errors")
    func strictness() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, includeTop: false)
        var weights = try FormulaWeights.weights(for: configuration, seed: 1)
        let index = weights.layers.firstIndex { $0.name == "block_5_project" }!
        let original = weights.layers[index]
        weights.layers[index].arrays[0] = WeightArray(name: "kernel", shape: [1, 1, 7, 16], values: [Float](repeating: 0, count: 7 * 16))
        #expect(throws: ModelError.shapeMismatch(layer: "block_5_project", variable: "kernel", expected: original.arrays[0].shape, found: [1, 1, 7, 16], source: weights.source)) {
            try MobileNetV2(configuration: configuration, weights: weights)
        }
        weights.layers[index] = original
        weights.layers.append(KerasLayerWeights(name: "stray", arrays: [WeightArray(name: "kernel", shape: [1], values: [0])]))
        #expect(throws: ModelError.unusedLayers(["stray"], source: weights.source)) {
            try MobileNetV2(configuration: configuration, weights: weights)
        }
        weights.layers.removeLast()
        weights.layers.remove(at: index)
        #expect(throws: ModelError.missingLayer(layer: "block_5_project", source: weights.source)) {
            try MobileNetV2(configuration: configuration, weights: weights)
        }
    }

    @Test("missing, empty, non-HDF5 and truncated files give typed errors naming the file")
    func badFiles() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("missing.h5")
        #expect(throws: WeightFileError.notFound(path: missing.path)) { try KerasWeightFile.read(contentsOf: missing) }
        let empty = dir.appendingPathComponent("empty.h5")
        try Data().write(to: empty)
        #expect(throws: WeightFileError.empty(path: empty.path)) { try KerasWeightFile.read(contentsOf: empty) }
        let text = dir.appendingPathComponent("text.h5")
        try Data("hello".utf8).write(to: text)
        #expect(throws: WeightFileError.unknownFormat(path: text.path)) { try KerasWeightFile.read(contentsOf: text) }
        let source = try Data(contentsOf: Self.transferDirectory.appendingPathComponent("transfer_a035_96.h5"))
        for fraction in [0.02, 0.5, 0.98] {
            let truncated = dir.appendingPathComponent("truncated-\(fraction).h5")
            try source.prefix(Int(Double(source.count) * fraction)).write(to: truncated)
            do {
                let (weights, _) = try KerasWeightFile.read(contentsOf: truncated)
                Issue.record("a truncated file (\(fraction)) loaded \(weights.layers.count) layers")
            } catch {
                #expect(error.description.hasPrefix(truncated.path), "\(error)")
            }
        }
        let keras = try Data(contentsOf: Self.transferDirectory.appendingPathComponent("transfer_a035_96.keras"))
        let brokenArchive = dir.appendingPathComponent("broken.keras")
        try keras.prefix(keras.count / 2).write(to: brokenArchive)
        #expect(throws: WeightFileError.self) { try KerasWeightFile.read(contentsOf: brokenArchive) }
    }
}


@Suite("Weight loader: concurrent reads", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct ConcurrentWeightReadTests {
    /// Two different `.keras` archives read at the same time must not see each other's bytes
    /// (HDF5 identifies in-memory file images by name; each open now gets its own name).
    @Test func concurrentArchivesStayApart() async throws {
        let small = WeightLoaderTests.transferDirectory.appendingPathComponent("transfer_a035_96.keras")
        let large = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.keras")
        let expectedSmall = try KerasWeightFile.read(contentsOf: small).weights.layers
        let expectedLarge = try KerasWeightFile.read(contentsOf: large).weights.layers
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<12 {
                group.addTask {
                    let url = i % 2 == 0 ? small : large
                    return try KerasWeightFile.read(contentsOf: url).weights.layers == (i % 2 == 0 ? expectedSmall : expectedLarge)
                }
            }
            for try await same in group { #expect(same) }
        }
    }
}
