import Foundation
import MobileNetTestSupport
import Testing

/// `--model DIR` with a SavedModel folder: the committed Keras 3 export in TF Serving's layout.
@Suite("mobilenet with SavedModel folders")
struct SavedModelCLITests {
    static let base = TestData.fixtures.appendingPathComponent("savedmodel/keras3-export").path
    static let photo = TestData.repositoryRoot.appendingPathComponent("Examples/chelsea.png").path

    @Test func classifyWithABaseFolderAndItsVersions() throws {
        let latest = try CLI.run(["classify", "--model", Self.base, Self.photo, "--top-k", "5"])
        #expect(latest.status == 0, "\(latest.stderr)")
        #expect(latest.stdout.contains("class0") && latest.stdout.contains("class4"))
        let one = try CLI.run(["classify", "--model", Self.base, "--model-version", "1", Self.photo, "--top-k", "5"])
        #expect(one.status == 0 && one.stdout == latest.stdout, "\(one.stderr)")
        let missing = try CLI.run(["classify", "--model", Self.base, "--model-version", "2", Self.photo])
        #expect(missing.status == 1 && missing.stderr.contains("no version 2 (versions: 1)"), "\(missing.stderr)")
        let noModel = try CLI.run(["classify", "--model-version", "2", Self.photo])
        #expect(noModel.status == 64 && noModel.stderr.contains("--model-version 2 needs --model"), "\(noModel.stderr)")
        let labels = try TestData.temporaryDirectory().appendingPathComponent("labels.txt")
        try Data("daisy\ndandelion\nroses\nsunflowers\ntulips\n".utf8).write(to: labels)
        let named = try CLI.run(["classify", "--model", Self.base, "--labels", labels.path, Self.photo, "--top-k", "5"])
        #expect(named.status == 0 && named.stdout.contains("tulips"), "\(named.stderr)")
    }
}
