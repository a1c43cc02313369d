import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// The CLI as a face of the library: one pass for classes and embeddings, presets on every image
/// command, the model file's recorded preprocessing, helpful empty-input errors.
@Suite("mobilenet: one pass, presets, recorded preprocessing", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct LibraryFacesCLITests {
    @Test("classify --embeddings writes the embeddings of the same pass; they equal embed's")
    func classifyWithEmbeddings() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let npy = dir.appendingPathComponent("e.npy").path
        let classified = try CLI.run(["classify", CLI.example, CLI.exampleJPEG, "--weights", CLI.topWeights, "--embeddings", npy, "--json"])
        #expect(classified.status == 0, "\(classified.stderr)")
        #expect(classified.stdout.contains("Egyptian_cat"))
        let fromClassify = try NPY.read(contentsOf: URL(fileURLWithPath: npy))
        #expect(fromClassify.shape == [2, 1280])
        let names = try String(contentsOfFile: npy + ".files.txt", encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(names == [CLI.example, CLI.exampleJPEG].map { URL(fileURLWithPath: $0).relativePath })
        let embedded = dir.appendingPathComponent("f.npy").path
        let embed = try CLI.run(["embed", CLI.example, CLI.exampleJPEG, "--weights", CLI.noTopWeights, "-o", embedded])
        #expect(embed.status == 0, "\(embed.stderr)")
        let diff = fromClassify.maxAbsoluteDifference(to: try NPY.read(contentsOf: URL(fileURLWithPath: embedded)))
        #expect(diff <= 1e-5, "max |diff| \(diff)")
        // Never replaced without --overwrite.
        let again = try CLI.run(["classify", CLI.example, "--weights", CLI.topWeights, "--embeddings", npy])
        #expect(again.status == 64 && again.stderr.contains("already exists"))
    }

    @Test("--preset tensorflow equals --exif ignore --jpeg-idct ifast; a single option overrides the preset")
    func presetOnTheCommandLine() throws {
        let base = ["embed", CLI.exampleJPEG, "--weights", CLI.noTopWeights, "--input-size", "96"]
        let preset = try CLI.run(base + ["--preset", "tensorflow"])
        let spelled = try CLI.run(base + ["--exif", "ignore", "--jpeg-idct", "ifast"])
        let standard = try CLI.run(base)
        #expect(preset.status == 0 && spelled.status == 0 && standard.status == 0, "\(preset.stderr)")
        #expect(preset.stdout == spelled.stdout)
        #expect(preset.stdout != standard.stdout)
        let overridden = try CLI.run(base + ["--preset", "tensorflow", "--jpeg-idct", "islow", "--exif", "apply"])
        #expect(overridden.stdout == standard.stdout)
    }

    @Test("a folder of class sub-folders without --recursive: a clear error, exit 1")
    func folderOfSubfolders() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["cats", "dogs"] {
            try FileManager.default.createDirectory(at: dir.appendingPathComponent(name), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: CLI.example, toPath: dir.appendingPathComponent("\(name)/a.png").path)
        }
        let out = dir.appendingPathComponent("x.npy").path
        let result = try CLI.run(["embed", dir.path, "--weights", CLI.noTopWeights, "-o", out])
        #expect(result.status == 1)
        #expect(result.stderr.contains("error:") && result.stderr.contains("2 sub-folders") && result.stderr.contains("--recursive"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let recursive = try CLI.run(["embed", dir.path, "--recursive", "--weights", CLI.noTopWeights, "--input-size", "96", "-o", out])
        #expect(recursive.status == 0, "\(recursive.stderr)")
        #expect(try NPY.read(contentsOf: URL(fileURLWithPath: out)).shape == [2, 1280])
    }

    @Test("a path argument that is not UTF-8 is reported by its bytes (not 'no such file'), and the other images still run")
    func undecodableArgument() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var raw = Array((dir.path + "/caf").utf8) + [0xE9] + Array(".png".utf8) + [0]
        let fd = raw.withUnsafeMutableBufferPointer { open(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o644) }
        #expect(fd >= 0)
        close(fd)
        let out = dir.appendingPathComponent("x.npy").path
        // Foundation cannot pass bytes that are not UTF-8 as an argument: the shell spells them.
        let script = "exec \"$0\" embed \"$1/caf$(printf '\\351').png\" \"$2\" --weights \"$3\" --input-size 96 -o \"$4\""
        let result = try Subprocess.run(URL(fileURLWithPath: "/bin/sh"), ["-c", script, CLI.executable.path, dir.path, CLI.example, CLI.noTopWeights, out])
        #expect(result.status == 1)
        #expect(result.stderr.contains("caf\\xe9.png") && result.stderr.contains("not valid UTF-8") && !result.stderr.contains("no such file"), "\(result.stderr)")
        #expect(try NPY.read(contentsOf: URL(fileURLWithPath: out)).shape == [1, 1280])
    }

    @Test("usage errors before any work: an output that is an input, a missing output folder, option values that are not UTF-8, malformed sizes and environment")
    func outputsAndValuesRefusedFirst() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let image = dir.appendingPathComponent("img.png")
        try FileManager.default.copyItem(atPath: CLI.example, toPath: image.path)
        let before = try Data(contentsOf: image)
        let same = try CLI.run(["embed", image.path, "-o", image.path, "--format", "csv", "--overwrite", "--weights", CLI.noTopWeights, "--input-size", "96"])
        #expect(same.status == 64 && same.stderr.contains("is the input"), "\(same.stderr)")
        #expect(try Data(contentsOf: image) == before)
        let folder = try CLI.run(["embed", image.path, "-o", dir.appendingPathComponent("missing/x.npy").path, "--weights", CLI.noTopWeights])
        #expect(folder.status == 64 && folder.stderr.contains("does not exist"), "\(folder.stderr)")
        for size in ["224x", "x224", "+224", "2 24"] {
            let result = try CLI.run(["embed", image.path, "--input-size", size, "--weights", CLI.noTopWeights])
            #expect(result.status == 64, "--input-size \(size): \(result.stderr)")
        }
        let micro = try CLI.run(["embed", image.path, "--weights", CLI.noTopWeights], environment: ["MOBILENET_MICRO_BATCH": "abc"])
        #expect(micro.status == 64 && micro.stderr.contains("MOBILENET_MICRO_BATCH"), "\(micro.stderr)")
        // Set but empty is unset; the reference backend ignores it.
        let empty = try CLI.run(["embed", image.path, "--weights", CLI.noTopWeights], environment: ["MOBILENET_MICRO_BATCH": ""])
        #expect(empty.status == 0, "\(empty.stderr)")
        let reference = try CLI.run(["embed", image.path, "--weights", CLI.noTopWeights, "--backend", "reference"], environment: ["MOBILENET_MICRO_BATCH": "abc"])
        #expect(reference.status == 0, "\(reference.stderr)")
        let script = "exec \"$0\" embed \"$1\" --weights \"$2\" -o \"$3/o$(printf '\\351').npy\""
        let option = try Subprocess.run(URL(fileURLWithPath: "/bin/sh"), ["-c", script, CLI.executable.path, image.path, CLI.noTopWeights, dir.path])
        #expect(option.status == 64 && option.stderr.contains("o\\xe9.npy") && option.stderr.contains("not valid UTF-8"), "\(option.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["img.png"])
    }

    @Test("predict uses the preprocessing recorded at training, and warns when options override it")
    func recordedPreprocessing() throws {
        let root = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let data = root.appendingPathComponent("data")
        let flowers = TestData.shared("data/flowers/train")
        for name in ["daisy", "roses"] {
            let target = data.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
            let files = try FileManager.default.contentsOfDirectory(atPath: flowers.appendingPathComponent(name).path).sorted().prefix(4)
            for file in files { try FileManager.default.copyItem(at: flowers.appendingPathComponent("\(name)/\(file)"), to: target.appendingPathComponent(file)) }
        }
        let model = root.appendingPathComponent("m.json").path
        let common = ["--weights", CLI.noTopWeights, "--input-size", "64", "--no-cache"]
        let train = try CLI.run(["train", data.path, "-o", model, "--epochs", "2", "--validation-split", "0.5", "--preset", "keras-load-img-bilinear"] + common)
        #expect(train.status == 0, "\(train.stderr)")
        let saved = try ClassifierModel.read(contentsOf: URL(fileURLWithPath: model))
        #expect(saved.preprocessingConfiguration == .preset(.kerasLoadImgBilinear))
        let photo = data.appendingPathComponent("daisy").path
        let plain = try CLI.run(["predict", "--model", model, photo, "--json"] + common)
        let explicit = try CLI.run(["predict", "--model", model, photo, "--json", "--preset", "keras-load-img-bilinear"] + common)
        #expect(plain.status == 0 && explicit.status == 0, "\(plain.stderr)")
        #expect(plain.stdout == explicit.stdout)
        #expect(!plain.stderr.contains("override"))
        let overridden = try CLI.run(["predict", "--model", model, photo, "--json", "--resize", "nearest"] + common)
        #expect(overridden.status == 0, "\(overridden.stderr)")
        #expect(overridden.stderr.contains("override") && overridden.stderr.contains("resize"), "\(overridden.stderr)")
        #expect(overridden.stdout != plain.stdout)
    }

    @Test("similar never prints a cosine above 1; --cache and --index name the same database")
    func similarityClamped() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("i.db").path
        let add = try CLI.run(["index", "add", CLI.example, CLI.exampleJPEG, "--cache", db, "--weights", CLI.noTopWeights, "--input-size", "96"])
        #expect(add.status == 0, "\(add.stderr)")
        let similar = try CLI.run(["similar", CLI.example, "--index", db, "--weights", CLI.noTopWeights, "--input-size", "96", "--json"])
        #expect(similar.status == 0, "\(similar.stderr)")
        struct Report: Decodable { struct R: Decodable { let matches: [SimilarityMatch] }; let results: [R] }
        let report = try JSONDecoder().decode(Report.self, from: Data(similar.stdout.utf8))
        let best = try #require(report.results.first?.matches.first)
        #expect(best.similarity <= 1 && best.similarity > 0.999)
    }
}

@Suite("Library inputs: file lists and model-file messages")
struct LibraryInputMessagesTests {
    @Test("ImageFileList: recursive paths keep the argument's spelling; a folder of sub-folders only is an error")
    func fileList() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("a/b"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.example, toPath: dir.appendingPathComponent("a/b/x.png").path)
        try Data("note".utf8).write(to: dir.appendingPathComponent("a/b/readme.txt"))
        let previous = FileManager.default.currentDirectoryPath
        _ = FileManager.default.changeCurrentDirectoryPath(dir.path)
        defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
        let recursive = ImageFileList(["a"], recursive: true)
        #expect(recursive.files.map(\.relativePath) == ["a/b/x.png"])
        #expect(recursive.problems.map(\.kind) == [.notAnImage] && !recursive.problems[0].isError)
        let flat = ImageFileList(["a", "missing"], recursive: false)
        #expect(flat.files.isEmpty)
        #expect(flat.problems.map(\.kind) == [.onlySubdirectories(count: 1), .missing])
        #expect(flat.problems.allSatisfy { $0.isError })
    }

    @Test("ImageFileList: names that are not UTF-8 are reported, links to files are followed in both listings, link loops do not recurse")
    func namesAndLinks() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let sub = dir.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.example, toPath: dir.appendingPathComponent("real.png").path)
        try FileManager.default.createSymbolicLink(atPath: sub.appendingPathComponent("link.png").path, withDestinationPath: dir.appendingPathComponent("real.png").path)
        try FileManager.default.createSymbolicLink(atPath: sub.appendingPathComponent("loop").path, withDestinationPath: dir.path)
        // A name with the byte 0xff (not UTF-8).
        var raw = Array((sub.path + "/bad-").utf8) + [0xFF] + Array(".png".utf8) + [0]
        let fd = raw.withUnsafeMutableBufferPointer { open(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o644) }
        #expect(fd >= 0)
        close(fd)
        let flat = ImageFileList([sub.path], recursive: false)
        #expect(flat.files.map(\.lastPathComponent) == ["link.png"])
        #expect(flat.problems.contains { $0.kind == .undecodableName && $0.path.contains("bad-\\xff.png") && $0.isError }, "\(flat.problems)")
        let recursive = ImageFileList([dir.path], recursive: true)
        #expect(recursive.files.map(\.lastPathComponent).sorted() == ["link.png", "real.png"], "\(recursive.files)")
    }

    @Test("model files: a directory, invalid JSON, another format, a missing key — each a one-line message naming the file")
    func modelFileMessages() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func message(_ text: String?) -> String {
            let url = dir.appendingPathComponent("m\(UUID().uuidString).json")
            if let text { try? Data(text.utf8).write(to: url) }
            do {
                _ = try ClassifierModel.read(contentsOf: text == nil ? dir : url)
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(message(nil).contains("is a directory"))
        #expect(message("{\"format\": ").contains("not valid JSON"))
        #expect(message("{\"format\": \"mobilenet-classifier\", \"version\": 1}").contains("expected 'swift-mobilenet-classifier'"))
        let noHead = message("{\"format\": \"swift-mobilenet-classifier\", \"version\": 1, \"classNames\": [\"a\"]}")
        #expect(noHead.contains("missing '") && !noHead.contains("DecodingError"), "\(noHead)")
    }

    @Test("predict: an explicit --input-size the model was not trained at is refused, not ignored", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func inputSizeMismatch() throws {
        let root = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let data = root.appendingPathComponent("data")
        for name in ["a", "b"] {
            try FileManager.default.createDirectory(at: data.appendingPathComponent(name), withIntermediateDirectories: true)
            for i in 0..<2 { try FileManager.default.copyItem(atPath: i == 0 ? CLI.example : CLI.exampleJPEG, toPath: data.appendingPathComponent("\(name)/\(i).img").path) }
        }
        let model = root.appendingPathComponent("m.json").path
        let train = try CLI.run(["train", data.path, "-o", model, "--epochs", "1", "--validation-split", "0.5", "--weights", CLI.noTopWeights, "--input-size", "64", "--no-cache"])
        #expect(train.status == 0, "\(train.stderr)")
        let wrong = try CLI.run(["predict", "--model", model, CLI.example, "--input-size", "224", "--weights", CLI.noTopWeights, "--no-cache"])
        #expect(wrong.status != 0 && wrong.stderr.contains("records input size 64x64; 224x224 was given"), "\(wrong.stderr)")
        let right = try CLI.run(["predict", "--model", model, CLI.example, "--weights", CLI.noTopWeights, "--no-cache"])
        #expect(right.status == 0, "\(right.stderr)")
    }
}

@Suite("Absurd numbers on the command line are usage errors naming the limit")
struct AbsurdNumbersCLITests {
    @Test("summary, classify, bench, similar, train", arguments: [
        ["summary", "--alpha", "1e9"],
        ["summary", "--input-size", "100000"],
        ["classify", "x.png", "--input-size", "2147483648"],
        ["bench", "--batch-size", "1000000"],
        ["bench", "--input-size", "4096", "--batch-size", "64"],
        ["similar", "x.png", "--index", "i.db", "--top", "1000000000000"],
        ["train", "data", "--hidden", "1000000000"],
        ["embed", "x.png", "--threads", "100000"],
        // A negative number after an option is its value (ArgumentParser alone says "Missing value").
        ["similar", "x.png", "--index", "i.db", "--ann", "i.faiss", "--ef-search", "-1"],
        ["similar", "x.png", "--index", "i.db", "--top", "-3"],
        ["bench", "--batch-size", "-1"],
        ["similar", "x.png", "--index", "i.db", "--min-similarity", "nan"],
        ["similar", "x.png", "--index", "i.db", "--min-similarity", "-inf"],
        ["similar", "x.png", "--index", "i.db", "--min-similarity", "-2"],
        ["similar", "x.png", "--index", "i.db", "--min-similarity", "1.5"],
    ])
    func refused(arguments: [String]) throws {
        let result = try CLI.run(arguments)
        #expect(result.status == 64, "\(arguments): status \(result.status), \(result.stderr)")
        #expect(result.stderr.contains("must be") || result.stderr.contains("at most"), "\(arguments): \(result.stderr)")
        #expect(!result.stderr.contains("Fatal error"))
    }
}

@Suite("Negative numbers on the command line")
struct NegativeNumbersCLITests {
    @Test("a negative number after a long option is its value; after a flag or `--` it stays a word")
    func joined() throws {
        // --min-similarity -0.5 was "Missing value"; now the run reaches the index (which is missing).
        let threshold = try CLI.run(["similar", CLI.example, "--index", "/nonexistent/i.db", "--min-similarity", "-0.5"])
        #expect(!threshold.stderr.contains("Missing value") && threshold.stderr.contains("/nonexistent/i.db"), "\(threshold.stderr)")
        // Values that are not plain numbers, and after the short -o: the option's own check speaks.
        let shard = try CLI.run(["embed", CLI.example, "--shard", "-1/2"])
        #expect(shard.status == 64 && !shard.stderr.contains("Missing value") && shard.stderr.contains("shard"), "\(shard.stderr)")
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let short = try CLI.run(["index", "export", "--index", dir.appendingPathComponent("none.db").path, "-o", "-1"])
        #expect(!short.stderr.contains("Missing value"), "\(short.stderr)")
        // After `--`, "-1" is an image path, not a value.
        let positional = try CLI.run(["classify", "--weights", CLI.topWeights, "--", "-1"])
        #expect(positional.status == 1 && positional.stderr.contains("-1: no such file"), "\(positional.stderr)")
    }
}

@Suite("Outputs refused before the work: same file twice, streams that need side files, FIFOs as model files")
struct OutputValidationCLITests {
    @Test func refusals() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let same = dir.appendingPathComponent("same.x").path
        let train = try CLI.run(["train", dir.path, "-o", same, "--report", same, "--overwrite"])
        #expect(train.status == 64 && train.stderr.contains("same file"), "\(train.stderr)")
        let npyStream = try CLI.run(["embed", CLI.example, "-o", "/dev/stdout", "--format", "npy", "--overwrite"])
        #expect(npyStream.status == 64 && npyStream.stderr.contains("stream"), "\(npyStream.stderr)")
        let fifo = dir.appendingPathComponent("model.json").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let start = Date()
        let predict = try CLI.run(["predict", "--model", fifo, CLI.example])
        #expect(predict.status == 1 && predict.stderr.contains("FIFO"), "\(predict.stderr)")
        #expect(Date().timeIntervalSince(start) < 10)
    }
}
