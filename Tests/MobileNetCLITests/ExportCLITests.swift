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

    @Test func exportToTFLiteThenClassifyWithIt() throws {
        let work = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: work) }
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
        let common = ["--weights", CLI.noTopWeights]
        let train = try CLI.run(["train", data.path, "--no-cache", "-o", model, "--validation-split", "0.34", "--epochs", "5",
                                 "--input-size", "64", "--hidden", "8"] + common)
        #expect(train.status == 0, "\(train.stderr)")

        // int8 with uint8 ends, calibrated on the training folder; the report on the same folder.
        let int8 = work.appendingPathComponent("model-int8.tflite").path
        let export = try CLI.run(["export", "--model", model, "-o", int8, "--quantize", "int8", "--calibration", data.path,
                                  "--input-type", "uint8", "--output-type", "uint8", "--validation", data.path] + common)
        #expect(export.status == 0, "\(export.stderr)")
        #expect(export.stderr.contains("int8 (calibrated on 9 images; input uint8, output uint8)"), "\(export.stderr)")
        #expect(export.stderr.contains("warning: 9 calibration images"))
        #expect(export.stdout.contains("validation images       9") && export.stdout.contains("top-1 agreement"), "\(export.stdout)")
        let again = try CLI.run(["export", "--model", model, "-o", int8] + common)
        #expect(again.status == 64 && again.stderr.contains("already exists"))

        // The written file is a model like any other: its packed class names, no --weights.
        let photos = data.appendingPathComponent("roses").path
        let classify = try CLI.run(["classify", "--model", int8, photos, "--top-k", "3"])
        #expect(classify.status == 0, "\(classify.stderr)")
        #expect(classify.stdout.contains("roses") && classify.stdout.contains("daisy") && classify.stdout.contains("tulips"), "\(classify.stdout)")
        let float = work.appendingPathComponent("model.tflite").path
        let floatExport = try CLI.run(["export", "--model", model, "-o", float] + common)
        #expect(floatExport.status == 0 && floatExport.stderr.contains("float32"), "\(floatExport.stderr)")
        let fromJSON = try CLI.run(["predict", "--model", model, photos, "--no-cache", "--json", "--top-k", "3"] + common)
        let fromTFLite = try CLI.run(["predict", "--model", float, photos, "--no-cache", "--json", "--top-k", "3"])
        let a = try JSONDecoder().decode(Document.self, from: Data(fromJSON.stdout.utf8))
        let b = try JSONDecoder().decode(Document.self, from: Data(fromTFLite.stdout.utf8))
        #expect(a.results.map(\.file) == b.results.map(\.file))
        for (x, y) in zip(a.results, b.results) {
            #expect(x.predictions.map(\.className) == y.predictions.map(\.className))
            for (p, q) in zip(x.predictions, y.predictions) { #expect(abs(p.probability - q.probability) < 1e-5) }
        }

        // Options that do not fit are usage errors (64), before anything is opened.
        let out = work.appendingPathComponent("x.tflite").path
        for (arguments, message) in [(["--quantize", "int8"], "--quantize int8 needs --calibration"),
                                     (["--input-type", "uint8"], "need --quantize int8"),
                                     (["--calibration", data.path], "--calibration applies to --quantize int8"),
                                     (["--quantize", "int8", "--calibration", data.path, "--calibration-limit", "0"], "--calibration-limit must be")] {
            let r = try CLI.run(["export", "--model", model, "-o", out] + arguments + common)
            #expect(r.status == 64 && r.stderr.contains(message), "\(arguments): \(r.stderr)")
        }
        let keras = try CLI.run(["export", "--model", model, "-o", work.appendingPathComponent("x.keras").path, "--quantize", "int8"] + common)
        #expect(keras.status == 64 && keras.stderr.contains("--quantize applies to a .tflite export"), "\(keras.stderr)")
        let empty = work.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        for (arguments, message) in [(["--validation", work.appendingPathComponent("nope").path], "not a directory"),
                                     (["--format", "keras"], "does not fit the output"),
                                     (["--calibration-limit", "5"], "--calibration-limit applies to --quantize int8"),
                                     (["--quantize", "int8", "--calibration", work.appendingPathComponent("nope").path], "no such file or directory"),
                                     (["--quantize", "int8", "--calibration", empty.path], "no image files found")] {
            let r = try CLI.run(["export", "--model", model, "-o", out] + arguments + common)
            #expect(r.status == 64 && r.stderr.contains(message), "\(arguments): \(r.stderr)")
        }
        // A validation folder of other classes is found before anything is written.
        let other = work.appendingPathComponent("other")
        for name in ["cats", "dogs"] {
            try FileManager.default.createDirectory(at: other.appendingPathComponent(name), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: data.appendingPathComponent("roses").appendingPathComponent(try FileManager.default.contentsOfDirectory(atPath: data.appendingPathComponent("roses").path)[0]),
                                             to: other.appendingPathComponent(name).appendingPathComponent("a.jpg"))
        }
        let mismatch = try CLI.run(["export", "--model", model, "-o", out, "--validation", other.path] + common)
        #expect(mismatch.status == 1 && mismatch.stderr.contains("differ from the training classes"), "\(mismatch.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))

        // --overwrite onto a FIFO writes into it (a reader gets the archive); it never replaces
        // the FIFO with a regular file (a device such as /dev/null was replaced, issue 30's review).
        let fifo = work.appendingPathComponent("pipe.keras").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let received = ReceivedBytes()
        let reader = Thread {
            if let handle = FileHandle(forReadingAtPath: fifo) { received.set(handle.readDataToEndOfFile().count) }
        }
        reader.start()
        let intoFIFO = try CLI.run(["export", "--model", model, "-o", fifo, "--overwrite"] + common)
        #expect(intoFIFO.status == 0, "\(intoFIFO.stderr)")
        var info = stat()
        #expect(lstat(fifo, &info) == 0 && (info.st_mode & S_IFMT) == S_IFIFO, "the FIFO was replaced")
        for _ in 0..<100 where received.value == 0 { Thread.sleep(forTimeInterval: 0.05) }
        #expect(received.value > 100_000)
    }
}

/// Bytes a reader thread got, shared with the test.
private final class ReceivedBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
    func set(_ n: Int) { lock.lock(); count = n; lock.unlock() }
}
