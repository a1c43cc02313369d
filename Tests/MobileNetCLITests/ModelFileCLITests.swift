import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// Every command opens model files through `ModelFile.open` (issue 28): `classify --model`
/// runs any of them with its own classes, and what the file records is honoured.
@Suite("classify --model and the flags the CLI derives")
struct ModelFileCLITests {
    static let transfer = TestData.fixtures.appendingPathComponent("keras-transfer")

    struct Report: Decodable {
        struct Prediction: Decodable { let name: String; let synset: String?; let probability: Float }
        struct Result: Decodable { let file: String; let predictions: [Prediction] }
        let kind: String
        let model: String
        let results: [Result]
    }

    /// The Keras transfer model in both layouts: run at the 96x96 its config records (the .h5
    /// ran at 224 before), the same classes and probabilities from both, names from --class-names.
    @Test func classifyRunsKerasTransferModels() throws {
        var reports: [Report] = []
        for file in ["transfer_a035_96.keras", "transfer_a035_96.h5"] {
            let result = try CLI.run(["classify", "--model", Self.transfer.appendingPathComponent(file).path, CLI.example, "--json", "--top-k", "5",
                                      "--class-names", "daisy,dandelion,roses,sunflowers,tulips"])
            #expect(result.status == 0, "\(result.stderr)")
            let report = try JSONDecoder().decode(Report.self, from: Data(result.stdout.utf8))
            #expect(report.kind == "keras-model")
            #expect(report.model.contains("96x96"), "\(report.model)")
            #expect(report.results.first?.predictions.count == 5 && report.results.first?.predictions.allSatisfy { $0.synset == nil } == true)
            reports.append(report)
        }
        let a = reports[0].results[0].predictions, b = reports[1].results[0].predictions
        #expect(a.map(\.name) == b.map(\.name))
        #expect(zip(a, b).map { abs($0.probability - $1.probability) }.max() ?? 1 <= 1e-6)
        // An explicit input size that disagrees with the recorded one is refused, naming the file.
        let conflict = try CLI.run(["classify", "--model", Self.transfer.appendingPathComponent("transfer_a035_96.h5").path, CLI.example, "--input-size", "224"])
        #expect(conflict.status == 1 && conflict.stderr.contains("records input size 96x96"), "\(conflict.stderr)")
        // A file name holding an escape sequence is shown escaped in the table, not sent to the
        // terminal (issue 32: `similar` printed them raw); the same in classify, predict, duplicates.
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let evil = dir.appendingPathComponent("evil\u{1b}[2J.png")
        try FileManager.default.copyItem(atPath: CLI.example, toPath: evil.path)
        let shown = try CLI.run(["classify", "--model", Self.transfer.appendingPathComponent("transfer_a035_96.keras").path, evil.path, "--top-k", "1"])
        #expect(shown.status == 0 && !shown.stdout.contains("\u{1b}") && shown.stdout.contains("evil\\x1b[2J.png"), "\(shown.stdout)")
        // Repeated class names are refused.
        let repeated = try CLI.run(["classify", "--model", Self.transfer.appendingPathComponent("transfer_a035_96.keras").path, CLI.example,
                                    "--class-names", "a,b,a,c,d"])
        #expect(repeated.status == 1 && repeated.stderr.contains("appears twice"), "\(repeated.stderr)")
    }

    @Test(.enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func classifyModelOnImageNetWeightsKeepsTodaysOutput() throws {
        let viaModel = try CLI.run(["classify", "--model", CLI.topWeights, CLI.example, "--top-k", "3"])
        let viaWeights = try CLI.run(["classify", "--weights", CLI.topWeights, CLI.example, "--top-k", "3"])
        #expect(viaModel.status == 0 && viaWeights.status == 0, "\(viaModel.stderr) \(viaWeights.stderr)")
        #expect(viaModel.stdout == viaWeights.stdout)
        #expect(viaModel.stdout.contains("n02124075  Egyptian_cat"), "\(viaModel.stdout)")
        // Weights without the top give embeddings, not classes: said so.
        let noTop = try CLI.run(["classify", "--model", CLI.noTopWeights, CLI.example])
        #expect(noTop.status == 1 && noTop.stderr.contains("include_top=False"), "\(noTop.stderr)")
    }

    /// Every flag is known as one (the list is derived from the commands): a word after
    /// `--no-fuse-depthwise` that reads as a negative number is not glued to it as its value
    /// (the hand-kept list lacked it: `--no-fuse-depthwise=-1.jpg`), as after every other flag.
    @Test func flagsAreDerivedFromTheCommands() throws {
        for flag in ["--no-fuse-depthwise", "--recursive", "--json", "--no-jpeg-dct-scaling"] {
            let result = try CLI.run(["classify", flag, "-1.jpg"])
            #expect(result.status == 64, "\(flag): \(result.status) \(result.stderr)")
            #expect(!result.stderr.contains("\(flag)=") && result.stderr.contains("Missing expected argument"), "\(flag): \(result.stderr)")
        }
        // Help and usage errors keep ArgumentParser's handling through the one error path.
        let help = try CLI.run(["classify", "--help"])
        #expect(help.status == 0 && help.stdout.contains("OVERVIEW") && help.stdout.contains("--model"), "\(help.stderr)")
        let usage = try CLI.run(["classify"])
        #expect(usage.status == 64 && usage.stderr.contains("Missing expected argument"), "\(usage.stderr)")
        // A value option still takes its negative number.
        let value = try CLI.run(["similar", CLI.example, "--index", "/nonexistent/x.db", "--min-similarity", "-0.5"])
        #expect(!value.stderr.contains("Missing value"), "\(value.stderr)")
    }
}
