import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// Runs the built `mobilenet` executable.
enum CLI {
    typealias Result = Subprocess.Result

    /// The executable next to the test bundle (the build's products directory).
    static let executable: URL = {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("mobilenet")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return TestData.repositoryRoot.appendingPathComponent(".build/release/mobilenet")
    }()

    /// Runs `mobilenet` with no weights configured, an empty cache, an unreachable download
    /// server and a fresh HOME, plus `environment`.
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        var env = ProcessInfo.processInfo.environment
        env["MOBILENET_WEIGHTS"] = nil
        env["MOBILENET_CACHE_DIR"] = FileManager.default.temporaryDirectory.appendingPathComponent("mobilenet-cli-empty-cache").path
        env["MOBILENET_WEIGHTS_BASE_URL"] = "http://127.0.0.1:9/"
        env["HOME"] = FileManager.default.temporaryDirectory.appendingPathComponent("mobilenet-cli-home").path
        for (k, v) in environment { env[k] = v }
        return try Subprocess.run(executable, arguments, environment: env)
    }

    static let topWeights = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5").path
    static let noTopWeights = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5").path
    static let example = TestData.repositoryRoot.appendingPathComponent("Examples/chelsea.png").path
    static let exampleJPEG = TestData.repositoryRoot.appendingPathComponent("Examples/coffee.jpg").path
}

@Suite("the test harness that runs executables")
struct SubprocessHarnessTests {
    /// A child that writes 1.3 MB to standard error (twenty times the 64 KiB a pipe holds) and
    /// some lines to standard output, interleaved: a harness reading stdout to the end before
    /// stderr deadlocks here. A watchdog process SIGKILLs the child after 60 s, so a deadlock
    /// fails the test (killed, stderr cut short) instead of hanging the suite. (Not
    /// `timeout(1)`: children of the test process were seen to inherit SIGALRM and SIGTERM
    /// blocked, so `timeout` never fired; SIGKILL cannot be blocked. The watchdog polls in
    /// 0.1 s steps rather than sleeping 60 s: a long `sleep` kept the harness waiting, probably
    /// because the pipe's write end leaks into the shell's children as an extra descriptor.)
    @Test("a child filling the stderr pipe while writing stdout does not deadlock; both streams arrive whole")
    func largeStderrDoesNotDeadlock() throws {
        let script = """
            (i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done; kill -9 $$) >/dev/null 2>&1 </dev/null &
            watchdog=$!
            line=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde
            i=0
            while [ $i -lt 20000 ]; do
                echo "$line" >&2
                if [ $((i % 1000)) -eq 0 ]; then echo "out $i"; fi
                i=$((i + 1))
            done
            echo finished
            kill -9 $watchdog
            exit 3
            """
        let start = Date()
        let result = try Subprocess.run(URL(fileURLWithPath: "/bin/sh"), ["-c", script])
        let seconds = Date().timeIntervalSince(start)
        #expect(result.status == 3, "status \(result.status) after \(seconds) s (9: killed by the watchdog, the harness deadlocked)")
        #expect(result.stderr.utf8.count == 20000 * 64)
        #expect(result.stderr.split(separator: "\n").allSatisfy { $0 == "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde" })
        #expect(result.stdout == (0..<20).map { "out \($0 * 1000)\n" }.joined() + "finished\n")
    }

    @Test("a missing executable is an error naming it")
    func missingExecutable() {
        #expect(throws: Subprocess.MissingExecutable.self) { try Subprocess.run(URL(fileURLWithPath: "/nonexistent/tool"), []) }
    }
}

@Suite("mobilenet summary")
struct SummaryCommandTests {
    @Test func parameterCountsEqualKeras() throws {
        let top = try CLI.run(["summary"])
        #expect(top.status == 0)
        #expect(top.stdout.contains("Model: \"mobilenetv2_1.00_224\""))
        #expect(top.stdout.contains("Total params: 3,538,984"))
        #expect(top.stdout.contains("predictions (Dense)"))
        let noTop = try CLI.run(["summary", "--no-top"])
        #expect(noTop.stdout.contains("Total params: 2,257,984"))
        let bad = try CLI.run(["summary", "--input-size", "16"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("at least 32x32"))
    }
}

@Suite("mobilenet classify and embed", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct ClassifyEmbedCommandTests {
    @Test("classify prints the top-k table and JSON")
    func classify() throws {
        let table = try CLI.run(["classify", CLI.example, CLI.exampleJPEG, "--weights", CLI.topWeights])
        #expect(table.status == 0, "\(table.stderr)")
        let lines = table.stdout.split(separator: "\n")
        #expect(lines.count == 12)
        #expect(lines[1].contains("n02124075") && lines[1].contains("Egyptian_cat"))
        #expect(lines[7].contains("espresso"))

        let json = try CLI.run(["classify", CLI.example, "--weights", CLI.topWeights, "--json", "--top-k", "3"])
        #expect(json.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let results = object?["results"] as? [[String: Any]]
        let predictions = results?.first?["predictions"] as? [[String: Any]]
        #expect(predictions?.count == 3)
        #expect(predictions?.first?["synset"] as? String == "n02124075")
        // The CLI's probabilities are the library's.
        let model = try MobileNetV2(configuration: MobileNetV2Configuration(), weights: KerasWeightFile.read(contentsOf: URL(fileURLWithPath: CLI.topWeights)).weights)
        let row = try model(ImagePreprocessor(height: 224, width: 224).tensor(contentsOf: URL(fileURLWithPath: CLI.example))).scalars
        let probability = (predictions?.first?["probability"] as? Double).map(Float.init) ?? -1
        #expect(abs(probability - row[285]) < 1e-6)
    }

    @Test("a bad file among good ones: an error line naming it, the others processed, exit status 1")
    func badFilesInBatch() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(atPath: CLI.example, toPath: dir.appendingPathComponent("a.png").path)
        try Data().write(to: dir.appendingPathComponent("b-empty.jpg"))
        let jpeg = try Data(contentsOf: URL(fileURLWithPath: CLI.exampleJPEG))
        try jpeg.prefix(300).write(to: dir.appendingPathComponent("c-truncated.jpg"))
        try Data("plain text".utf8).write(to: dir.appendingPathComponent("d-notes.txt"))
        try FileManager.default.copyItem(atPath: CLI.exampleJPEG, toPath: dir.appendingPathComponent("e.jpg").path)

        let result = try CLI.run(["classify", dir.path, dir.appendingPathComponent("missing.png").path, "--weights", CLI.topWeights])
        #expect(result.status == 1)
        #expect(result.stdout.contains("a.png") && result.stdout.contains("e.jpg"))
        for name in ["b-empty.jpg", "c-truncated.jpg", "d-notes.txt", "missing.png"] {
            #expect(result.stderr.contains(name), "no error line for \(name): \(result.stderr)")
        }
    }

    @Test("embed writes .npy with names in order, .csv and .jsonl; never overwrites")
    func embedOutputs() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.example, toPath: images.appendingPathComponent("2-cat.png").path)
        try FileManager.default.copyItem(atPath: CLI.exampleJPEG, toPath: images.appendingPathComponent("1-coffee.jpg").path)
        try Data("x".utf8).write(to: images.appendingPathComponent("3-broken.jpg"))

        let npy = dir.appendingPathComponent("out.npy")
        let result = try CLI.run(["embed", images.path, "--weights", CLI.noTopWeights, "--output", npy.path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("3-broken.jpg"))
        let tensor = try NPY.read(contentsOf: npy)
        #expect(tensor.shape == [2, 1280])
        let names = try String(contentsOf: URL(fileURLWithPath: npy.path + ".files.txt"), encoding: .utf8).split(separator: "\n")
        #expect(names.map { URL(fileURLWithPath: String($0)).lastPathComponent } == ["1-coffee.jpg", "2-cat.png"])

        // Same numbers as the library, and a top file gives the same embedding.
        let weights = try KerasWeightFile.read(contentsOf: URL(fileURLWithPath: CLI.noTopWeights)).weights
        let model = try MobileNetV2(configuration: MobileNetV2Configuration(includeTop: false, pooling: .avg), weights: weights)
        let expected = try model(ImagePreprocessor(height: 224, width: 224).tensor(contentsOf: URL(fileURLWithPath: CLI.example)))
        #expect(Tensor(shape: [1, 1280], scalars: tensor.rows[1]).maxAbsoluteDifference(to: expected) == 0)

        let before = try Data(contentsOf: npy)
        let again = try CLI.run(["embed", images.appendingPathComponent("2-cat.png").path, "--weights", CLI.topWeights, "--output", npy.path])
        #expect(again.status != 0)
        #expect(again.stderr.contains("already exists"))
        #expect(try Data(contentsOf: npy) == before)

        let csv = dir.appendingPathComponent("out.csv")
        let csvRun = try CLI.run(["embed", images.appendingPathComponent("2-cat.png").path, "--weights", CLI.topWeights, "-o", csv.path])
        #expect(csvRun.status == 0, "\(csvRun.stderr)")
        let csvLines = try String(contentsOf: csv, encoding: .utf8).split(separator: "\n")
        #expect(csvLines.count == 2)
        #expect(csvLines[0].hasPrefix("file,e0,e1,"))
        let csvValues = csvLines[1].split(separator: ",").dropFirst().compactMap { Float($0) }
        #expect(Tensor(shape: [1, 1280], scalars: csvValues).maxAbsoluteDifference(to: expected) == 0)

        let jsonl = try CLI.run(["embed", images.appendingPathComponent("2-cat.png").path, "--weights", CLI.topWeights])
        #expect(jsonl.status == 0)
        let line = try JSONSerialization.jsonObject(with: Data(jsonl.stdout.utf8)) as? [String: Any]
        #expect((line?["embedding"] as? [Double])?.count == 1280)
        // Stable text: "file" first, the same bytes on every run.
        #expect(jsonl.stdout.hasPrefix("{\"file\":\""))
        let rerun = try CLI.run(["embed", images.appendingPathComponent("2-cat.png").path, "--weights", CLI.topWeights])
        #expect(rerun.stdout == jsonl.stdout)
    }

    @Test("weight problems are reported clearly: missing file, wrong alpha, no top, truncated")
    func weightErrors() throws {
        let missing = try CLI.run(["classify", CLI.example, "--weights", "/nonexistent/w.h5"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("/nonexistent/w.h5"))

        let alpha = try CLI.run(["classify", CLI.example, "--weights", CLI.topWeights, "--alpha", "0.5"])
        #expect(alpha.status == 1)
        #expect(alpha.stderr.contains("built for alpha 1.0"), "\(alpha.stderr)")

        let noTop = try CLI.run(["classify", CLI.example, "--weights", CLI.noTopWeights])
        #expect(noTop.status == 1)
        #expect(noTop.stderr.contains("include_top=False"))

        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let truncated = dir.appendingPathComponent("truncated.h5")
        try Data(contentsOf: URL(fileURLWithPath: CLI.topWeights)).prefix(5_000_000).write(to: truncated)
        let cut = try CLI.run(["classify", CLI.example, "--weights", truncated.path])
        #expect(cut.status == 1)
        #expect(cut.stderr.contains(truncated.path), "\(cut.stderr)")

        let offline = try CLI.run(["classify", CLI.example])
        #expect(offline.status == 1)
        #expect(offline.stderr.contains("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"), "\(offline.stderr)")
    }
}

@Suite("mobilenet index, similar, duplicates", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct SearchCommandTests {
    @Test("index add, stats, similar, duplicates, sync, export; refusals and bad queries")
    func workflow() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let photos = dir.appendingPathComponent("photos")
        try FileManager.default.createDirectory(at: photos, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: CLI.example, toPath: photos.appendingPathComponent("cat.png").path)
        try FileManager.default.copyItem(atPath: CLI.exampleJPEG, toPath: photos.appendingPathComponent("coffee.jpg").path)
        // A near-duplicate: the same photo under another name (a re-encode would do as well).
        try FileManager.default.copyItem(atPath: CLI.example, toPath: photos.appendingPathComponent("cat-copy.png").path)
        let db = dir.appendingPathComponent("photos.db").path
        let weights = ["--weights", CLI.noTopWeights]

        let add = try CLI.run(["index", "add", photos.path, "--index", db] + weights)
        #expect(add.status == 0, "\(add.stderr)")
        let again = try CLI.run(["index", "add", photos.path, "--index", db] + weights)
        #expect(again.stderr.contains("0 computed"), "\(again.stderr)")

        let stats = try CLI.run(["index", "stats", "--index", db, "--json"])
        let statsObject = try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any]
        #expect(statsObject?["images"] as? Int == 3)
        #expect(statsObject?["distinctContents"] as? Int == 2)

        let similar = try CLI.run(["similar", CLI.example, "--index", db, "--top", "2", "--json"] + weights)
        #expect(similar.status == 0, "\(similar.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(similar.stdout.utf8)) as? [String: Any]
        let matches = ((report?["results"] as? [[String: Any]])?.first?["matches"] as? [[String: Any]]) ?? []
        #expect(matches.count == 2)
        #expect(matches.allSatisfy { ($0["identifier"] as? String)?.contains("cat") == true })
        #expect(abs((matches.first?["similarity"] as? Double ?? 0) - 1) < 1e-4)

        let duplicates = try CLI.run(["duplicates", "--index", db, "--json"])
        let groups = (try JSONSerialization.jsonObject(with: Data(duplicates.stdout.utf8)) as? [String: Any])?["groups"] as? [[[String: Any]]]
        #expect(groups?.count == 1)
        #expect(groups?.first?.count == 2)

        // A query that does not decode: an error naming it, exit status 1.
        let broken = dir.appendingPathComponent("broken.jpg")
        try Data("nope".utf8).write(to: broken)
        let bad = try CLI.run(["similar", broken.path, "--index", db] + weights)
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("broken.jpg"))

        // Through an ANN file; a search parameter its structure does not take is a usage error (64).
        let faiss = dir.appendingPathComponent("photos.faiss").path
        let built = try CLI.run(["index", "build-ann", "--index", db, "-o", faiss, "--factory", "Flat"])
        #expect(built.status == 0, "\(built.stderr)")
        // build-ann usage errors exit 64 before anything is built or written: a search parameter
        // Flat does not store, one above an IVF index's lists, impossible sizes, an unknown factory.
        let unbuilt = dir.appendingPathComponent("unbuilt.faiss").path
        for (arguments, says) in [(["--factory", "Flat", "--search-parameter", "8"], "searched exactly"),
                                  (["--factory", "IVF2,Flat", "--search-parameter", "3"], "at most the 2 lists"),
                                  (["--factory", "IVF64,Flat"], "64 IVF lists for 3 vectors"),
                                  (["--factory", "NoSuchIndex"], "NoSuchIndex")] {
            let refused = try CLI.run(["index", "build-ann", "--index", db, "-o", unbuilt] + arguments)
            #expect(refused.status == 64 && refused.stderr.contains(says), "\(arguments): \(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: unbuilt))
        }
        // As many lists as indexed files is allowed, though two of the files are copies that share
        // one stored embedding (the early size check counts files, not stored embeddings).
        let asMany = try CLI.run(["index", "build-ann", "--index", db, "-o", unbuilt, "--factory", "IVF3,Flat"])
        #expect(asMany.status == 0, "\(asMany.stderr)")
        try? FileManager.default.removeItem(atPath: unbuilt)
        let ivf = try CLI.run(["index", "build-ann", "--index", db, "-o", unbuilt, "--factory", "IVF2,Flat", "--search-parameter", "2"])
        #expect(ivf.status == 0 && ivf.stderr.contains("nprobe 2"), "\(ivf.stderr)")
        let approximate = try CLI.run(["similar", CLI.example, "--index", db, "--ann", faiss, "--top", "2", "--json"] + weights)
        #expect(approximate.status == 0, "\(approximate.stderr)")
        let approximateReport = try JSONSerialization.jsonObject(with: Data(approximate.stdout.utf8)) as? [String: Any]
        let approximateMatches = ((approximateReport?["results"] as? [[String: Any]])?.first?["matches"] as? [[String: Any]]) ?? []
        // (the two copies of the photo tie, so compare them as a set)
        #expect(Set(approximateMatches.compactMap { $0["identifier"] as? String }) == Set(matches.compactMap { $0["identifier"] as? String }))
        let wrongStructure = try CLI.run(["similar", CLI.example, "--index", db, "--ann", faiss, "--nprobe", "2"] + weights)
        #expect(wrongStructure.status == 64 && wrongStructure.stderr.contains("applies to an IVF index"), "\(wrongStructure.stderr)")

        // serve with an ANN file that cannot be used: exit 1, the file named once, and the
        // server stopped gracefully (no CancellationError from its accept loop in the log).
        let garbage = dir.appendingPathComponent("garbage.faiss")
        try Data("not a faiss file".utf8).write(to: garbage)
        let serve = try CLI.run(["serve", "--port", "0", "--model", "emb=\(CLI.noTopWeights)", "--index", "photos=\(db)", "--ann", "photos=\(garbage.path)"])
        #expect(serve.status == 1, "\(serve.stderr)")
        #expect(serve.stderr.components(separatedBy: garbage.path).count == 2 && !serve.stderr.contains("CancellationError"), "\(serve.stderr)")
        // A missing file (a model, an index, an ANN file, or a directory given as one): refused
        // before the port is bound, so nothing is ever listening.
        let missing = dir.appendingPathComponent("missing.faiss").path
        for (arguments, named) in [(["--index", "photos=\(db)", "--ann", "photos=\(missing)"], "\(missing): no such file"),
                                   (["--index", "photos=\(dir.path)/none.sqlite"], "none.sqlite: no such file"),
                                   (["--index", "photos=\(dir.path)"], "a directory, not a file")] {
            let early = try CLI.run(["serve", "--port", "0", "--model", "emb=\(CLI.noTopWeights)"] + arguments)
            #expect(early.status == 1 && early.stderr.contains(named) && !early.stderr.contains("listening"), "\(arguments): \(early.stderr)")
        }
        let noModel = try CLI.run(["serve", "--port", "0", "--model", "emb=\(dir.path)/none.h5"])
        #expect(noModel.status == 1 && noModel.stderr.contains("none.h5: no such file") && !noModel.stderr.contains("listening"), "\(noModel.stderr)")
        // A version policy the command line cannot mean: a usage error naming the accepted forms.
        for (policy, named) in [("newest", "specific:V,V"), ("latest:0", "1 to 16"), ("specific:1,x", "non-negative integers")] {
            let bad = try CLI.run(["serve", "--port", "0", "--model-version-policy", policy])
            #expect(bad.status == 64 && bad.stderr.contains(named), "\(policy): \(bad.status) \(bad.stderr)")
        }

        // A query folder of sub-folders only: similar has no --recursive, so none is suggested.
        let nested = dir.appendingPathComponent("nested")
        try FileManager.default.createDirectory(at: nested.appendingPathComponent("cats"), withIntermediateDirectories: true)
        let folder = try CLI.run(["similar", nested.path, "--index", db] + weights)
        #expect(folder.status == 1)
        #expect(folder.stderr.contains("1 sub-folder") && !folder.stderr.contains("--recursive"), "\(folder.stderr)")

        // Another backbone is refused, and the index is unchanged.
        let other = try CLI.run(["similar", CLI.example, "--index", db, "--input-size", "160"] + weights)
        #expect(other.status == 1)
        #expect(other.stderr.contains("not comparable"), "\(other.stderr)")

        try FileManager.default.removeItem(at: photos.appendingPathComponent("coffee.jpg"))
        let sync = try CLI.run(["index", "sync", "--index", db])
        #expect(sync.stdout.contains("coffee.jpg"))

        let npy = dir.appendingPathComponent("vectors.npy")
        let export = try CLI.run(["index", "export", "--index", db, "-o", npy.path])
        #expect(export.status == 0, "\(export.stderr)")
        let vectors = try NPY.read(contentsOf: npy)
        #expect(vectors.shape == [2, 1280])
        let norms = vectors.rows.map { $0.reduce(0) { $0 + $1 * $1 } }
        #expect(norms.allSatisfy { abs($0 - 1) < 1e-4 })

        let missingIndex = try CLI.run(["similar", CLI.example, "--index", dir.appendingPathComponent("none.db").path] + weights)
        #expect(missingIndex.status == 1)
        #expect(missingIndex.stderr.contains("no such index file"), "\(missingIndex.stderr)")

        let corrupt = dir.appendingPathComponent("corrupt.db")
        try Data(repeating: 7, count: 4096).write(to: corrupt)
        let corruptRun = try CLI.run(["index", "stats", "--index", corrupt.path])
        #expect(corruptRun.status == 1)
        #expect(corruptRun.stderr.contains(corrupt.path))
    }
}

@Suite("index commands: messages for missing, foreign and empty index paths; read-only runs leave nothing behind")
struct IndexPathMessageTests {
    @Test("a missing index, a file that is not SQLite and an empty --index say so")
    func messages() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("missing.sqlite").path
        for arguments in [["index", "stats", "--index", missing], ["similar", CLI.example, "--index", missing],
                          ["duplicates", "--index", missing], ["index", "export", "--index", missing, "-o", dir.appendingPathComponent("v.npy").path]] {
            let run = try CLI.run(arguments)
            #expect(run.status == 1, "\(arguments): \(run.stderr)")
            #expect(run.stderr.contains("\(missing): no such index file"), "\(arguments): \(run.stderr)")
            #expect(!run.stderr.contains("holds no images") && !run.stderr.contains("not a swift-mobilenet"), "\(arguments): \(run.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        let proc = try CLI.run(["index", "stats", "--index", "/proc/version"])
        #expect(proc.status == 1)
        #expect(proc.stderr.contains("/proc/version: not an SQLite database"), "\(proc.stderr)")
        for arguments in [["index", "stats", "--index", ""], ["index", "add", CLI.example, "--index", ""],
                          ["similar", CLI.example, "--index", ""], ["duplicates", "--index", ""], ["index", "sync", "--index", ""]] {
            let run = try CLI.run(arguments)
            #expect(run.status == 64, "\(arguments): status \(run.status): \(run.stderr)")
            #expect(run.stderr.contains("--index: the path is empty"), "\(arguments): \(run.stderr)")
        }
    }

    @Test("index stats and duplicates --index leave no -wal/-shm file, beside a chattr +i database and in a read-only folder")
    func readOnlyRunsLeaveNothing() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("index.sqlite").path
        do {
            // A store as `index add` leaves it (written through the library, then closed).
            let store = try EmbeddingStore(url: URL(fileURLWithPath: db))
            try store.recordFiles([FileRecord(path: "/a.jpg", contentSHA256: "h", size: 1, modificationTime: 0)])
        }
        func names() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() }
        func chattr(_ flag: String, _ path: String) throws {
            let result = try Subprocess.run(URL(fileURLWithPath: "/usr/bin/chattr"), [flag, path])
            #expect(result.status == 0, "chattr \(flag) \(path): \(result.stderr)")
        }
        func stats() throws {
            let run = try CLI.run(["index", "stats", "--index", db, "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("\"images\" : 1"), "\(run.stdout)")
            let duplicates = try CLI.run(["duplicates", "--index", db])
            #expect(duplicates.status == 1)
            #expect(duplicates.stderr.contains("holds no images"), "\(duplicates.stderr)")
        }
        try stats()
        #expect(try names() == ["index.sqlite"])
        try chattr("+i", db)
        do {
            defer { try? chattr("-i", db) }
            try stats()
        }
        #expect(try names() == ["index.sqlite"])
        try chattr("+i", dir.path)
        do {
            defer { try? chattr("-i", dir.path) }
            try stats()
        }
        #expect(try names() == ["index.sqlite"])
    }
}

@Suite("progress bar and pipelined decoding", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct ProgressCLITests {
    static let daisies = TestData.shared("data/flowers/val/daisy").path

    @Test("on a terminal, embed draws count, rate and ETA on one redrawn line")
    func progressOnTerminal() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else {
            Issue.record("/usr/bin/script (util-linux) is needed to give the CLI a terminal")
            return
        }
        let output = try TestData.temporaryDirectory().appendingPathComponent("e.npy").path
        // script(1) runs the command on a pseudo-terminal; everything it prints comes back on stdout.
        let command = [CLI.executable.path, "embed", Self.daisies, "--weights", CLI.noTopWeights, "--input-size", "96",
                       "--batch-size", "2", "-o", output].map { "'\($0)'" }.joined(separator: " ")
        let result = try Subprocess.run(URL(fileURLWithPath: "/usr/bin/script"), ["-qec", command, "/dev/null"])
        let text = result.stdout
        #expect(result.status == 0, "\(text)\(result.stderr)")
        let total = try FileManager.default.contentsOfDirectory(atPath: Self.daisies).count
        #expect(text.contains("\r\u{1B}[K["), "no progress line drawn: \(text.debugDescription)")
        #expect(text.contains("\(total)/\(total) images"))
        #expect(text.contains(" images/s  ETA "))
        #expect(text.contains("wrote \(total) embeddings"))
    }

    @Test("without a terminal: no progress output, and --decode-threads does not change the embeddings")
    func quietWithoutTerminalAndThreadsInvariant() throws {
        let dir = try TestData.temporaryDirectory()
        var files: [Data] = []
        for threads in ["0", "1", "2"] {
            let output = dir.appendingPathComponent("e\(threads).npy").path
            let result = try CLI.run(["embed", Self.daisies, "--weights", CLI.noTopWeights, "--input-size", "96", "--batch-size", "3",
                                      "--decode-threads", threads, "-o", output])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(!result.stderr.contains("\u{1B}") && !result.stderr.contains("\r"), "\(result.stderr.debugDescription)")
            files.append(try Data(contentsOf: URL(fileURLWithPath: output)))
        }
        #expect(files[0] == files[1] && files[1] == files[2])
        let bad = try CLI.run(["embed", Self.daisies, "--weights", CLI.noTopWeights, "--decode-threads", "-1"])
        #expect(bad.status != 0 && bad.stderr.contains("--decode-threads"))
    }
}
