import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// `mobilenet train --fine-tune-at` end to end on generated images with the committed alpha 0.35
/// fixture base at 32x32 (fast), and its bad inputs.
@Suite("mobilenet train --fine-tune-at", .serialized)
struct FineTuneCommandTests {
    static let weights = TestData.fixtures.appendingPathComponent("keras-transfer/transfer_a035_96.h5").path
    static let common = ["--weights", weights, "--alpha", "0.35", "--input-size", "32", "--no-cache", "--train-batch-size", "4", "--epochs", "3"]

    @Test func trainFineTunesPredictAndEvaluateUseIt() throws {
        let data = try TestImages.twoClassFolders(count: 3, validation: 2)
        let model = data.appendingPathComponent("model.json").path
        let report = data.appendingPathComponent("report.html").path
        let train = try CLI.run(["train", data.appendingPathComponent("train").path, "--validation-dir", data.appendingPathComponent("val").path,
                                 "--fine-tune-at", "140", "--fine-tune-epochs", "2", "--fine-tune-optimizer", "adam", "--fine-tune-rotation", "0.1", "--keep-fine-tuned", "-o", model, "--report", report] + Self.common)
        #expect(train.status == 0, "\(train.stderr)")
        #expect(train.stderr.contains("fine-tuning: layers 140...153 of 154 trainable"), "\(train.stderr)")
        #expect(train.stderr.contains("fine-tune epoch 1/2 - loss: "))
        #expect(train.stderr.contains("fine-tune epoch 2/2 - loss: "))
        #expect(train.stderr.contains("with the head only") && train.stderr.contains("writing the fine-tuned model"), "\(train.stderr)")
        let saved = try ClassifierModel.read(contentsOf: URL(fileURLWithPath: model))
        #expect(saved.fineTuning?.fineTuneAt == 140)
        #expect(saved.fineTuning?.optimizer == .adam(learningRate: 1e-5))  // the Keras guides' rate by default
        #expect(saved.fineTuning?.settings.augmentation == "RandomFlip(\"horizontal\") + RandomRotation(-36...36 degrees, fill_mode=\"reflect\")")
        let html = try String(contentsOfFile: report, encoding: .utf8)
        #expect(html.contains("Misclassified validation images") && html.contains("fine-tuning: epochs 4–"))

        let predict = try CLI.run(["predict", "--model", model, data.appendingPathComponent("val").path, "--recursive", "--json", "--no-cache"])
        #expect(predict.status == 0, "\(predict.stderr)")
        #expect(predict.stdout.contains("\"results\""))
        let evaluate = try CLI.run(["evaluate", "--model", model, data.appendingPathComponent("val").path, "--json", "--no-cache"])
        #expect(evaluate.status == 0, "\(evaluate.stderr)")
        let metrics = try JSONDecoder().decode(EvaluationReport.self, from: Data(evaluate.stdout.utf8))
        // evaluate recomputes the fine-tuned network's validation metrics from the file alone.
        #expect(abs(metrics.accuracy - (saved.validation?.accuracy ?? -1)) < 1e-9)
        #expect(abs(metrics.loss - (saved.validation?.loss ?? -1)) < 1e-4)
    }

    @Test func badInputsGetClearMessages() throws {
        let data = try TestImages.twoClassFolders(count: 1, validation: 1)
        let base = ["train", data.appendingPathComponent("train").path, "--validation-dir", data.appendingPathComponent("val").path,
                    "-o", data.appendingPathComponent("m.json").path]
        let range = try CLI.run(base + ["--fine-tune-at", "155"] + Self.common)
        #expect(range.status == 1)
        #expect(range.stderr.contains("fine-tune point 155 is out of range") && range.stderr.contains("0...154"), "\(range.stderr)")
        let name = try CLI.run(base + ["--fine-tune-from", "block_12_expnd"] + Self.common)
        #expect(name.status == 1)
        #expect(name.stderr.contains("'block_12_expnd' is not a layer") && name.stderr.contains("closest: block_12_expand"), "\(name.stderr)")
        let hidden = try CLI.run(base + ["--fine-tune-at", "100", "--hidden", "8"] + Self.common)
        #expect(hidden.status == 1)
        #expect(hidden.stderr.contains("--hidden") && hidden.stderr.contains("cannot be fine-tuned"), "\(hidden.stderr)")
        // These are refused before any image is embedded or the head trained (not after phase 1).
        for run in [range, name, hidden] {
            #expect(!run.stderr.contains("embeddings:") && !run.stderr.contains("epoch 1/"), "\(run.stderr)")
        }
        let both = try CLI.run(base + ["--fine-tune-at", "100", "--fine-tune-from", "block_12_expand"] + Self.common)
        #expect(both.status == 64 && both.stderr.contains("not both"))
        // Fine-tuning settings without a fine-tune point would be ignored: refused, naming them.
        let orphan = try CLI.run(base + ["--fine-tune-epochs", "5", "--fine-tune-rotation", "0.1"] + Self.common)
        #expect(orphan.status == 64 && orphan.stderr.contains("--fine-tune-epochs, --fine-tune-rotation only apply with --fine-tune-at"), "\(orphan.stderr)")
        // Range errors name the option.
        let epochs = try CLI.run(base + ["--fine-tune-at", "100", "--fine-tune-epochs", "0"] + Self.common)
        #expect(epochs.status == 64 && epochs.stderr.contains("--fine-tune-epochs must be in 1...100000"), "\(epochs.stderr)")
        let optimizer = try CLI.run(base + ["--fine-tune-at", "100", "--fine-tune-optimizer", "lbfgs"] + Self.common)
        #expect(optimizer.status == 64 && optimizer.stderr.contains("rmsprop, adam or sgd"))
        // The weight file is an input: never replaced by the model file, even with --overwrite.
        let copy = data.appendingPathComponent("base.h5")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: Self.weights), to: copy)
        let clobber = try CLI.run(["train", data.appendingPathComponent("train").path, "--validation-dir", data.appendingPathComponent("val").path,
                                   "-o", copy.path, "--overwrite", "--fine-tune-at", "100"] + Self.common.dropFirst(2) + ["--weights", copy.path])
        #expect(clobber.status == 64, "\(clobber.stderr)")
        #expect(try Data(contentsOf: copy) == Data(contentsOf: URL(fileURLWithPath: Self.weights)))
        // A Keras transfer model whose base has alpha 0.35, fine-tuned as alpha 1.0.
        let alpha = try CLI.run(base + ["--fine-tune-at", "100", "--weights", Self.weights, "--alpha", "1.0", "--input-size", "32", "--no-cache"])
        #expect(alpha.status == 1)
        #expect(alpha.stderr.contains(Self.weights) && alpha.stderr.contains("alpha"), "\(alpha.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data.appendingPathComponent("m.json").path))
    }

    @Test func anInterruptedRunWritesNothing() throws {
        let data = try TestImages.twoClassFolders(count: 2, validation: 1)
        let model = data.appendingPathComponent("model.json")
        let log = data.appendingPathComponent("stderr.txt")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = CLI.executable
        process.arguments = ["train", data.appendingPathComponent("train").path, "--validation-dir", data.appendingPathComponent("val").path,
                             "--fine-tune-at", "100", "--fine-tune-epochs", "100000", "--patience", "0", "-o", model.path] + Self.common
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        var started = false
        while Date() < deadline, process.isRunning {
            if let text = try? String(contentsOf: log, encoding: .utf8), text.contains("fine-tune epoch 2/") { started = true; break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        process.interrupt()
        process.waitUntilExit()
        #expect(started, "fine-tuning did not start: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        #expect(process.terminationStatus != 0)
        // Nothing half-written: no model file, no temporary file beside it.
        let left = try FileManager.default.contentsOfDirectory(atPath: data.path).sorted()
        #expect(left == ["stderr.txt", "train", "val"], "\(left)")
        #expect(!FileManager.default.fileExists(atPath: model.path))
    }
}
