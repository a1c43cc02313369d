import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// `mobilenet train / evaluate / predict` end to end on a tiny copy of the shared flowers
/// (3 classes × 4 photos, 64x64 input to keep it fast), plus the bad inputs of issue 5.
@Suite("mobilenet train, evaluate, predict", .serialized, .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct TransferCommandTests {
    /// A data folder with `counts[class]` flower photos per class (copied from the shared set).
    static func makeData(_ counts: [String: Int]) throws -> URL {
        let root = try TestData.temporaryDirectory().appendingPathComponent("data")
        for (name, count) in counts {
            let dir = root.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let source = TestData.shared("data/flowers/train/\(name)")
            let files = try FileManager.default.contentsOfDirectory(atPath: source.path).sorted().prefix(count)
            for file in files { try FileManager.default.copyItem(at: source.appendingPathComponent(file), to: dir.appendingPathComponent(file)) }
        }
        return root
    }

    static let common = ["--weights", CLI.noTopWeights, "--input-size", "64"]

    @Test func trainPredictEvaluateAndCache() throws {
        let data = try Self.makeData(["daisy": 4, "roses": 4, "tulips": 4])
        try Data("notes".utf8).write(to: data.appendingPathComponent("daisy/notes.txt"))
        try Data([0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]).write(to: data.appendingPathComponent("roses/broken.jpg"))
        let work = data.deletingLastPathComponent()
        let cache = work.appendingPathComponent("cache.sqlite").path
        let model = work.appendingPathComponent("model.json").path
        let args = ["train", data.path, "--cache", cache, "-o", model, "--validation-split", "0.25", "--epochs", "40", "--patience", "0", "--learning-rate", "0.01"] + Self.common
        let first = try CLI.run(args + ["--report", work.appendingPathComponent("r.html").path])
        // broken.jpg is reported and skipped; the model is still trained, and the exit status is 1
        // as for evaluate and predict.
        #expect(first.status == 1, "\(first.stderr)")
        #expect(first.stderr.contains("skipping") && first.stderr.contains("notes.txt"))
        #expect(first.stderr.contains("broken.jpg"))
        #expect(first.stderr.contains("0 from the cache, 12 computed"))
        #expect(first.stderr.contains("epoch 1/40 - loss: "))
        #expect(first.stdout.contains("confusion matrix"))
        let html = try String(contentsOfFile: work.appendingPathComponent("r.html").path, encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("val_loss") && !html.contains("<script"))
        let saved = try ClassifierModel.read(contentsOf: URL(fileURLWithPath: model))
        #expect(saved.classNames == ["daisy", "roses", "tulips"])
        #expect(saved.backbone.inputHeight == 64)

        // Without --overwrite the model file is never replaced.
        let refused = try CLI.run(args)
        #expect(refused.status == 64)
        #expect(refused.stderr.contains("already exists"))

        // Second run: everything from the cache, and the same seed gives the same head bit for bit.
        let second = try CLI.run(args + ["--overwrite"])
        #expect(second.status == 1 && second.stderr.contains("broken.jpg"), "\(second.stderr)")
        #expect(second.stderr.contains("12 from the cache, 0 computed"))
        #expect(try ClassifierModel.read(contentsOf: URL(fileURLWithPath: model)).head == saved.head)

        // A different backbone (input size) never reuses the cache.
        let other = try CLI.run(["train", data.path, "--cache", cache, "-o", work.appendingPathComponent("other.json").path, "--epochs", "1", "--weights", CLI.noTopWeights, "--input-size", "72"])
        #expect(other.stderr.contains("0 from the cache, 12 computed"), "\(other.stderr)")

        let predict = try CLI.run(["predict", "--model", model, data.appendingPathComponent("tulips").path, "--cache", cache, "--json", "--top-k", "2"])
        struct Document: Decodable { struct R: Decodable { struct P: Decodable { let className: String; let probability: Double }; let file: String; let predictions: [P] }; let results: [R]; let errors: [String] }
        let document = try JSONDecoder().decode(Document.self, from: Data(predict.stdout.utf8))
        #expect(document.results.count == 4)
        #expect(document.results.allSatisfy { $0.predictions.count == 2 && ["daisy", "roses", "tulips"].contains($0.predictions[0].className) })
        let csv = try CLI.run(["predict", "--model", model, data.appendingPathComponent("tulips").path, "--cache", cache, "--csv", "--top-k", "1"])
        #expect(csv.stdout.hasPrefix("file,rank,class,probability\n"))

        let evaluate = try CLI.run(["evaluate", "--model", model, data.path, "--cache", cache, "--json"])
        #expect(evaluate.status == 1)  // broken.jpg is reported
        let report = try JSONDecoder().decode(EvaluationReport.self, from: Data(evaluate.stdout.utf8))
        #expect(report.count == 12)
        #expect(report.confusion.flatMap { $0 }.reduce(0, +) == 12)
        // 9 of the 12 photos were trained on for 40 epochs.
        #expect(report.accuracy >= 0.75, "accuracy \(report.accuracy)")
    }

    @Test func badInputs() throws {
        let single = try Self.makeData(["daisy": 2])
        let one = try CLI.run(["train", single.path, "--no-cache", "-o", single.appendingPathComponent("m.json").path] + Self.common)
        #expect(one.status == 1)
        #expect(one.stderr.contains("a classifier needs at least 2"))

        let empty = try Self.makeData(["daisy": 2, "roses": 2])
        try FileManager.default.createDirectory(at: empty.appendingPathComponent("tulips"), withIntermediateDirectories: true)
        let e = try CLI.run(["train", empty.path, "--no-cache", "-o", empty.appendingPathComponent("m.json").path] + Self.common)
        #expect(e.status == 1)
        #expect(e.stderr.contains("class folder 'tulips' contains no images"))

        // A class with one image trains (the image stays in training) with a warning.
        let small = try Self.makeData(["daisy": 3, "roses": 1])
        let s = try CLI.run(["train", small.path, "--no-cache", "--epochs", "2", "-o", small.deletingLastPathComponent().appendingPathComponent("m.json").path] + Self.common)
        #expect(s.status == 0, "\(s.stderr)")
        #expect(s.stderr.contains("class 'roses' has a single image"))

        // Every image of a class unreadable: a clear error, no model.
        let broken = try Self.makeData(["daisy": 2, "roses": 0])
        try Data("not a jpeg".utf8).write(to: broken.appendingPathComponent("roses/a.jpg"))
        try Data("not a jpeg".utf8).write(to: broken.appendingPathComponent("roses/b.jpg"))
        let modelPath = broken.deletingLastPathComponent().appendingPathComponent("m.json").path
        let b = try CLI.run(["train", broken.path, "--no-cache", "-o", modelPath] + Self.common)
        #expect(b.status == 1)
        #expect(b.stderr.contains("a.jpg") && b.stderr.contains("no usable training image"))
        #expect(!FileManager.default.fileExists(atPath: modelPath))

        // A cache file that is not SQLite: a typed error naming it; the file is left as it was.
        let data = try Self.makeData(["daisy": 2, "roses": 2])
        let cache = data.deletingLastPathComponent().appendingPathComponent("cache.sqlite")
        let garbage = Data((0..<4096).map { UInt8($0 % 251) })
        try garbage.write(to: cache)
        let c = try CLI.run(["train", data.path, "--cache", cache.path, "-o", data.deletingLastPathComponent().appendingPathComponent("m.json").path] + Self.common)
        #expect(c.status == 1)
        #expect(c.stderr.contains(cache.path) && c.stderr.contains("not an SQLite database"), "\(c.stderr)")
        #expect(try Data(contentsOf: cache) == garbage)
    }

    @Test func overlapWarningAndKerasModel() throws {
        // The same photos in training and validation are named in a warning.
        let train = try Self.makeData(["daisy": 2, "roses": 2])
        let val = train.deletingLastPathComponent().appendingPathComponent("val")
        try FileManager.default.copyItem(at: train, to: val)
        let out = train.deletingLastPathComponent().appendingPathComponent("m.json").path
        let result = try CLI.run(["train", train.path, "--validation-dir", val.path, "--no-cache", "--epochs", "1", "-o", out] + Self.common)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("(validation) has the same content as"))

        // A Keras transfer model (.keras) predicts with the given class names; a wrong count is refused.
        let keras = TestData.fixtures.appendingPathComponent("keras-transfer/transfer_a035_96.keras").path
        let photo = train.appendingPathComponent("daisy").path
        let predict = try CLI.run(["predict", "--model", keras, photo, "--no-cache", "--class-names", "a,b,c,d,e", "--csv", "--top-k", "1"])
        #expect(predict.status == 0, "\(predict.stderr)")
        #expect(predict.stdout.split(separator: "\n").count == 3)
        let wrong = try CLI.run(["predict", "--model", keras, photo, "--no-cache", "--class-names", "a,b"])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("the model has 5 classes but 2 class names were given"))
    }
}
