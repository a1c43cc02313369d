import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// `mobilenet export`: the trained classifier as a Keras 3 `.keras` transfer model. Real Keras
/// loading is checked by `scripts/transfer/check_keras_export.py` (CI has no TensorFlow); here the
/// archive is compared with one Keras 3.15.1 wrote for the same model, and read back.
@Suite struct KerasExportTests {
    static let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 96, inputWidth: 96, includeTop: false)
    static let fixture = TestData.fixtures.appendingPathComponent("keras-transfer/transfer_a035_96.keras")

    static func head(hidden: Int?) -> ClassifierHead {
        var random = SeededRandom(seed: 7)
        return ClassifierHead(inputs: 1280, classes: 5, hidden: hidden, dropout: 0.2, random: &random).roundedToFloat32()
    }

    static func export(hidden: Int?, to url: URL) throws -> (KerasTransferExport, KerasWeightSet, ClassifierHead) {
        let backbone = try FormulaWeights.weights(for: configuration, seed: 100)
        let head = head(hidden: hidden)
        let export = try KerasTransferExport(head: head, backbone: backbone, configuration: configuration, destination: url)
        try export.writeArchive(to: url, overwrite: false)
        return (export, backbone, head)
    }

    /// Exported, read back by our own loader, the network and head give identical probabilities.
    @Test(arguments: [nil, 16] as [Int?])
    func exportReadsBackWithIdenticalPredictions(hidden: Int?) throws {
        let url = try TestData.temporaryDirectory().appendingPathComponent("classifier.keras")
        let (_, backbone, head) = try Self.export(hidden: hidden, to: url)

        let (read, format) = try KerasWeightFile.read(contentsOf: url)
        #expect(format == .kerasArchive)
        let base = try read.mobileNetV2Part()
        #expect(base.layers.map(\.name).sorted() == backbone.layers.map(\.name).sorted())
        for layer in backbone.layers {
            #expect(base.layer(named: layer.name)?.arrays.map(\.values) == layer.arrays.map(\.values), "layer \(layer.name)")
        }
        let outside = read.layersOutsideMobileNetV2()
        #expect(outside.map(\.name) == (hidden == nil ? ["dense"] : ["dense", "dense_1"]))
        #expect(outside.map { $0.arrays.map(\.values) } == head.denseLayers.map { [$0.kernel.map(Float.init), $0.bias.map(Float.init)] })

        let imported = try KerasTransferModel.read(contentsOf: url)
        #expect(imported.alpha == 0.35)
        #expect(imported.inputSize?.height == 96 && imported.inputSize?.width == 96)
        let pooled = MobileNetV2Configuration(alpha: 0.35, inputHeight: 96, inputWidth: 96, includeTop: false, pooling: .avg)
        let input = FormulaWeights.input(seed: 100, batch: 2, height: 96, width: 96)
        let ours = try MobileNetV2(configuration: pooled, weights: backbone)(input)
        let theirs = try MobileNetV2(configuration: pooled, weights: imported.backboneWeights)(input)
        #expect(ours.scalars == theirs.scalars)
        let expected = head.probabilities(Matrix(stacking: ours.rows))
        let got = imported.head.probabilities(Matrix(stacking: theirs.rows))
        let diff = zip(expected.values, got.values).map { abs($0 - $1) }.max() ?? 1
        print("export round trip (hidden \(hidden.map(String.init) ?? "none")): max |diff| = \(diff)")
        #expect(diff == 0)
    }

    /// The archive has Keras's members, its `model.weights.h5` has exactly the groups, `name`
    /// attributes and dataset shapes of the file Keras 3.15.1 wrote for the same model (Keras
    /// loads by these paths), and its `config.json` equals Keras's apart from object ids and
    /// the base's `trainable` flag (ours is frozen, as in the Keras guide).
    @Test func archiveMatchesKerasWrittenFile() throws {
        let url = try TestData.temporaryDirectory().appendingPathComponent("classifier.keras")
        let (export, _, _) = try Self.export(hidden: nil, to: url)
        let members = try KerasTransferExport.archiveMembers(of: url)
        #expect(members.map(\.name) == ["metadata.json", "config.json", "model.weights.h5"])
        #expect(members.allSatisfy { $0.stored })
        let metadata = try #require(try JSONSerialization.jsonObject(with: members[0].data) as? [String: Any])
        #expect(metadata["keras_version"] as? String == "3.15.1")

        // Weights layout: identical to the Keras-written fixture.
        let ours = try KerasWeightFile.layout(contentsOf: url)
        let keras = try KerasWeightFile.layout(contentsOf: Self.fixture)
        #expect(ours.count == keras.count)
        #expect(Set(ours).symmetricDifference(keras).sorted() == [])
        #expect(ours.contains("/layers/functional/layers/batch_normalization_12/vars [group name=block_4_expand_BN]"))
        #expect(ours.contains("/layers/functional/vars [group name=mobilenetv2_0.35_96]"))

        // Config: layer classes and count, then the whole document against Keras's.
        let config = try #require(try JSONSerialization.jsonObject(with: members[1].data) as? [String: Any])
        let outer = try #require((config["config"] as? [String: Any])?["layers"] as? [[String: Any]])
        #expect(outer.map { $0["class_name"] as? String } == ["InputLayer", "Functional", "GlobalAveragePooling2D", "Dropout", "Dense"])
        #expect(export.outerLayerCount == 5 && export.baseModelName == "mobilenetv2_0.35_96")
        let inner = try #require((outer[1]["config"] as? [String: Any])?["layers"] as? [[String: Any]])
        let specs = try MobileNetV2Architecture.layers(for: Self.configuration)
        #expect(inner.count == specs.count && inner.count == 154)
        #expect(inner.map { $0["class_name"] as? String } == specs.map { $0.kind.kerasClassName })
        #expect(inner.map { $0["name"] as? String } == specs.map(\.name))

        let fixtureMembers = try KerasTransferExport.archiveMembers(of: Self.fixture)
        let kerasConfig = try JSONSerialization.jsonObject(with: try #require(fixtureMembers.first { $0.name == "config.json" }).data)
        let differences = Self.differences(Self.normalised(config), Self.normalised(kerasConfig))
        #expect(differences == [], "config.json differs from Keras's:\n\(differences.prefix(20).joined(separator: "\n"))")
    }

    /// An existing file is never replaced without `overwrite`, and a head with a ReLU that does
    /// not follow a Dense is refused, naming the file.
    @Test func refusesExistingFileAndUnsupportedHead() throws {
        let url = try TestData.temporaryDirectory().appendingPathComponent("classifier.keras")
        try Data("keep".utf8).write(to: url)
        let backbone = try FormulaWeights.weights(for: Self.configuration, seed: 100)
        let export = try KerasTransferExport(head: Self.head(hidden: nil), backbone: backbone, configuration: Self.configuration, destination: url)
        #expect(throws: KerasExportError.exists(path: url.path)) { try export.writeArchive(to: url, overwrite: false) }
        #expect(try Data(contentsOf: url) == Data("keep".utf8))
        try export.writeArchive(to: url, overwrite: true)
        #expect(try KerasWeightFile.read(contentsOf: url).format == .kerasArchive)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path)
        #expect(leftovers == ["classifier.keras"])

        var bad = Self.head(hidden: nil)
        bad.layers.insert(.relu, at: 0)
        #expect(throws: KerasExportError.unsupportedHead(path: url.path, message: "layer 0: ReLU not directly after a Dense")) {
            try KerasTransferExport(head: bad, backbone: backbone, configuration: Self.configuration, destination: url)
        }
        var missing = backbone
        missing.layers.removeAll { $0.name == "block_3_project" }
        #expect(throws: KerasExportError.backboneWeights(path: backbone.source, message: "no weights for layer 'block_3_project'")) {
            try KerasTransferExport(head: Self.head(hidden: nil), backbone: missing, configuration: Self.configuration, destination: url)
        }
    }

    /// Drops what legitimately differs: `shared_object_id` (Python object ids) and `trainable`.
    static func normalised(_ value: Any) -> Any {
        if let dict = value as? [String: Any] {
            var out: [String: Any] = [:]
            for (key, item) in dict where key != "shared_object_id" && key != "trainable" { out[key] = normalised(item) }
            return out
        }
        if let array = value as? [Any] { return array.map(normalised) }
        return value
    }

    static func differences(_ a: Any, _ b: Any, path: String = "") -> [String] {
        if let x = a as? [String: Any], let y = b as? [String: Any] {
            return Set(x.keys).union(y.keys).sorted().flatMap { key -> [String] in
                guard let xv = x[key] else { return ["\(path)/\(key): missing in export"] }
                guard let yv = y[key] else { return ["\(path)/\(key): extra in export"] }
                return differences(xv, yv, path: "\(path)/\(key)")
            }
        }
        if let x = a as? [Any], let y = b as? [Any] {
            if x.count != y.count { return ["\(path): \(x.count) items, Keras has \(y.count)"] }
            return zip(x, y).enumerated().flatMap { differences($1.0, $1.1, path: "\(path)[\($0)]") }
        }
        if let x = a as? NSObject, let y = b as? NSObject, x.isEqual(y) { return [] }
        if a is NSNull && b is NSNull { return [] }
        return ["\(path): export \(a) != Keras \(b)"]
    }
}
