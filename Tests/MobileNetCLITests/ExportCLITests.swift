import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// `mobilenet export` end to end: train a tiny head (64x64 input), export it as `.keras`, and
/// predict with the exported file: the same probabilities as with the model file.
@Suite("mobilenet export", .serialized, .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct ExportCommandTests {
    struct Document: Decodable {
        struct Result: Decodable { let file: String; let predictions: [Prediction] }
        struct Prediction: Decodable { let className: String; let probability: Double }
        let results: [Result]
    }

    @Test func exportThenPredictWithTheKerasFile() throws {
        let work = try TestData.temporaryDirectory()
        let data = work.appendingPathComponent("data")
        for name in ["daisy", "roses", "tulips"] {
            let dir = data.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let source = TestData.shared("data/flowers/train/\(name)")
            for file in try FileManager.default.contentsOfDirectory(atPath: source.path).sorted().prefix(3) {
                try FileManager.default.copyItem(at: source.appendingPathComponent(file), to: dir.appendingPathComponent(file))
            }
        }
        let model = work.appendingPathComponent("model.json").path
        let keras = work.appendingPathComponent("model.keras").path
        let common = ["--weights", CLI.noTopWeights]
        let train = try CLI.run(["train", data.path, "--no-cache", "-o", model, "--validation-split", "0.34", "--epochs", "5",
                                 "--input-size", "64", "--hidden", "8"] + common)
        #expect(train.status == 0, "\(train.stderr)")

        let export = try CLI.run(["export", "--model", model, "-o", keras] + common)
        #expect(export.status == 0, "\(export.stderr)")
        #expect(export.stderr.contains("outputs in class order: daisy, roses, tulips"))
        let again = try CLI.run(["export", "--model", model, "-o", keras] + common)
        #expect(again.status == 64 && again.stderr.contains("already exists"))

        let photos = data.appendingPathComponent("roses").path
        let fromJSON = try CLI.run(["predict", "--model", model, photos, "--no-cache", "--json", "--top-k", "3"] + common)
        let fromKeras = try CLI.run(["predict", "--model", keras, photos, "--no-cache", "--json", "--top-k", "3", "--class-names", "daisy,roses,tulips"])
        #expect(fromJSON.status == 0 && fromKeras.status == 0, "\(fromJSON.stderr)\(fromKeras.stderr)")
        let a = try JSONDecoder().decode(Document.self, from: Data(fromJSON.stdout.utf8))
        let b = try JSONDecoder().decode(Document.self, from: Data(fromKeras.stdout.utf8))
        #expect(a.results.count == 3 && a.results.map(\.file) == b.results.map(\.file))
        var diff = 0.0
        for (x, y) in zip(a.results, b.results) {
            let px = Dictionary(uniqueKeysWithValues: x.predictions.map { ($0.className, $0.probability) })
            for p in y.predictions { diff = max(diff, abs((px[p.className] ?? -1) - p.probability)) }
        }
        print("mobilenet predict: model file vs exported .keras max |diff| = \(diff)")
        #expect(diff <= 1e-6)
    }
}
