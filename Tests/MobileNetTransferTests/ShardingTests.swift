import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// `--shard I/N` and `--files-from`: the partition, the path-list reader, the streaming run.
@Suite("Sharding and path lists")
struct ShardingTests {
    @Test("FNV-1a 64 matches the published test vectors")
    func fnvVectors() {
        // From the FNV reference (Fowler/Noll/Vo, test vectors of fnv-1a 64).
        #expect(Shard.fnv1a64([UInt8]()) == 0xcbf2_9ce4_8422_2325)
        #expect(Shard.fnv1a64(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
        #expect(Shard.fnv1a64(Array("foobar".utf8)) == 0x8594_4171_f739_67e8)
        // Hashing in pieces gives the same value (how long lines are hashed).
        #expect(Shard.fnv1a64(Array("bar".utf8), continuing: Shard.fnv1a64(Array("foo".utf8))) == 0x8594_4171_f739_67e8)
    }

    @Test("the assignment of a few paths is the committed one (stable across runs and machines)")
    func committedAssignment() throws {
        // Computed independently with Python (scripts in docs/distributed.md): fnv1a64(path.encode()) % N.
        let expected: [(String, mod3: Int, mod7: Int, mod1000: Int)] = [
            ("a", 1, 5, 996),
            ("photos/cat.jpg", 1, 0, 258),
            ("photos/dog.png", 2, 1, 140),
            ("/data/images/000001.jpg", 0, 1, 164),
            ("caf\u{e9}.jpg", 2, 3, 424),
        ]
        for (path, mod3, mod7, mod1000) in expected {
            #expect(Shard.assignment(of: path, count: 3) == mod3, "\(path)")
            #expect(Shard.assignment(of: path, count: 7) == mod7, "\(path)")
            #expect(Shard.assignment(of: path, count: 1000) == mod1000, "\(path)")
            #expect(try Shard(index: mod3, count: 3).contains(path))
        }
    }

    @Test("shards 0/N ... N-1/N are disjoint and cover every path exactly once")
    func partitionIsExact() throws {
        let paths = (0..<3000).map { "dir\($0 % 17)/image-\($0).jpg" } + ["", " ", "日本.png"]
        for n in [1, 2, 3, 8] {
            let shards = try (0..<n).map { try Shard(index: $0, count: n) }
            var seen: [String: Int] = [:]
            for shard in shards {
                for path in paths where shard.contains(path) { seen[path, default: 0] += 1 }
            }
            #expect(seen.count == paths.count && seen.values.allSatisfy { $0 == 1 }, "N = \(n)")
        }
        // Roughly balanced: every one of 3 shards gets between 25% and 42% of 3000 paths.
        for i in 0..<3 {
            let shard = try Shard(index: i, count: 3)
            let share = paths.filter { shard.contains($0) }.count
            #expect((750...1260).contains(share), "shard \(i): \(share)")
        }
    }

    @Test("I/N is parsed strictly", arguments: [
        ("0/3", true), ("2/3", true), ("007/10", true), ("0/1", true), ("999999/1000000", true),
        ("3/3", false), ("-1/3", false), ("+1/3", false), (" 1/3", false), ("1/3 ", false), ("1/0", false), ("0/0", false),
        ("1/", false), ("/3", false), ("1/3/4", false), ("a/b", false), ("1/2000000", false), ("\u{FF11}/3", false),
        ("", false), ("1", false), ("0x1/3", false), ("1.0/3", false), ("99999999999999999999/3", false),
    ])
    func parsing(text: String, valid: Bool) {
        let parsed = try? Shard(parsing: text)
        #expect((parsed != nil) == valid, "\(text)")
        if let parsed { #expect(parsed.description == "\(Int(text.split(separator: "/")[0])!)/\(Int(text.split(separator: "/")[1])!)") }
    }

    /// Writes `bytes` to a new temporary file.
    static func listFile(_ bytes: [UInt8]) throws -> URL {
        let url = try TestData.temporaryDirectory().appendingPathComponent("list.txt")
        try Data(bytes).write(to: url)
        return url
    }

    @Test("a hostile list: CRLF, empty lines, non-UTF-8, NUL, a 100 kB line, no final newline")
    func hostileList() throws {
        var bytes: [UInt8] = Array("one.jpg\r\n\r\n\ntwo words.png\n".utf8)
        bytes += [0x63, 0x61, 0x66, 0xE9, 0x2E, 0x6A, 0x70, 0x67, 0x0A]        // "caf\xe9.jpg": Latin-1, not UTF-8
        bytes += Array("nul".utf8) + [0] + Array("byte\n".utf8)
        bytes += [UInt8](repeating: UInt8(ascii: "x"), count: 100_000) + [0x0A]
        bytes += Array("trailing\rcr-inside.jpg\n".utf8)
        bytes += Array("last-without-newline.jpg\r".utf8)
        let reader = try PathListReader(path: try Self.listFile(bytes).path)
        var lines: [PathListLine] = []
        while let line = try reader.next() { lines.append(line) }
        #expect(lines.map(\.number) == [1, 4, 5, 6, 7, 8, 9])
        #expect(try lines[0].path.get() == "one.jpg")
        #expect(try lines[1].path.get() == "two words.png")
        #expect(try lines[5].path.get() == "trailing\rcr-inside.jpg")
        #expect(try lines[6].path.get() == "last-without-newline.jpg")
        guard case .failure(.badLine(_, 5, .notUTF8(let escaped))) = lines[2].path else { Issue.record("\(lines[2])"); return }
        #expect(escaped == "caf\\xe9.jpg")
        guard case .failure(.badLine(_, 6, .nulByte)) = lines[3].path else { Issue.record("\(lines[3])"); return }
        guard case .failure(.badLine(_, 7, .tooLong(100_000))) = lines[4].path else { Issue.record("\(lines[4])"); return }
        // Each line's hash is the FNV-1a of its bytes, the bad ones included.
        #expect(lines[0].hash == Shard.fnv1a64(Array("one.jpg".utf8)))
        #expect(lines[2].hash == Shard.fnv1a64([0x63, 0x61, 0x66, 0xE9, 0x2E, 0x6A, 0x70, 0x67]))
        #expect(lines[4].hash == Shard.fnv1a64([UInt8](repeating: UInt8(ascii: "x"), count: 100_000)))
        #expect(try reader.next() == nil)
    }

    /// Issue 32: a byte-order mark at the start of a list (Windows editors) became part of the
    /// first path (and of its shard hash); one byte at a time through a pipe too.
    @Test("a UTF-8 byte-order mark at the start of a list is not part of the first path")
    func byteOrderMark() throws {
        let reader = try PathListReader(path: try Self.listFile([0xEF, 0xBB, 0xBF] + Array("a.jpg\nb.jpg\n".utf8)).path)
        let first = try #require(try reader.next())
        #expect(try first.path.get() == "a.jpg" && first.hash == Shard.fnv1a64(Array("a.jpg".utf8)))
        #expect(try reader.next()?.path.get() == "b.jpg")
        // Only at the start: a mark inside the list is the path's own bytes.
        let inside = try PathListReader(path: try Self.listFile(Array("a.jpg\n".utf8) + [0xEF, 0xBB, 0xBF] + Array("b.jpg".utf8)).path)
        _ = try inside.next()
        #expect(try inside.next()?.path.get() == "\u{FEFF}b.jpg")
        let pipe = Pipe()
        Thread.detachNewThread {
            for byte in [0xEF, 0xBB, 0xBF] + Array("c.jpg\n".utf8) as [UInt8] {
                pipe.fileHandleForWriting.write(Data([byte]))
                usleep(2000)
            }
            try? pipe.fileHandleForWriting.close()
        }
        let piped = PathListReader(fileDescriptor: pipe.fileHandleForReading.fileDescriptor, name: "standard input")
        #expect(try piped.readAll().paths == ["c.jpg"])
        // A list shorter than a mark is read as it is.
        #expect(try PathListReader(path: try Self.listFile(Array("x".utf8)).path).readAll().paths == ["x"])
    }

    @Test("a list through a pipe (standard input) reads the same, line by line, across buffer boundaries")
    func pipeList() throws {
        let paths = (0..<20_000).map { "folder/\($0)-\(String(repeating: "p", count: $0 % 50)).jpg" }
        let pipe = Pipe()
        let text = Data(paths.map { $0 + "\n" }.joined().utf8)
        Thread.detachNewThread {
            pipe.fileHandleForWriting.write(text)
            try? pipe.fileHandleForWriting.close()
        }
        let reader = PathListReader(fileDescriptor: pipe.fileHandleForReading.fileDescriptor, name: "standard input")
        let shard = try Shard(index: 1, count: 3)
        let (kept, problems) = try reader.readAll(shard: shard)
        #expect(problems.isEmpty)
        #expect(kept == paths.filter { shard.contains($0) })
    }

    @Test("an unreadable list is a typed error naming it")
    func unreadableList() throws {
        let dir = try TestData.temporaryDirectory()
        #expect(throws: PathListError.self) { try PathListReader(path: dir.appendingPathComponent("nope.txt").path) }
        #expect(throws: PathListError.self) { try PathListReader(path: dir.path) }
    }

    @Test("ImageFileList from a list: files as listed, missing paths, directories and bad lines are problems")
    func imageFileListFromList() throws {
        let dir = try TestData.temporaryDirectory()
        let image = TestData.repositoryRoot.appendingPathComponent("Examples/chelsea.png").path
        let missing = dir.appendingPathComponent("missing.jpg").path
        let bytes = Array("\(image)\n\(missing)\n\(dir.path)\n".utf8) + [0xff, 0x0a] + Array("\(image)\r\n".utf8)
        let list = try ImageFileList(listedIn: try PathListReader(path: try Self.listFile(bytes).path))
        #expect(list.files.map(\.path) == [image, image])
        #expect(list.problems.map(\.kind) == [.missing, .listedDirectory, .badListLine(reason: list.problems.last.map { "\($0)" } ?? "")])
        #expect(list.problems.allSatisfy { $0.isError })
        #expect("\(list.problems[2])".contains("line 4"))

        // A loop of symbolic links is named as one, not as a missing file (issue 32).
        let loop = dir.appendingPathComponent("loop.jpg").path
        try FileManager.default.createSymbolicLink(atPath: loop, withDestinationPath: loop)
        let looped = try ImageFileList(listedIn: try PathListReader(path: try Self.listFile(Array("\(loop)\n".utf8)).path))
        #expect(looped.problems.map(\.kind) == [.unreachable(reason: "a loop of symbolic links (too many levels to follow)")])
        #expect("\(looped.problems[0])".contains("loop.jpg: a loop of symbolic links") && looped.problems[0].isError)
    }

    static let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: .avg)

    @Test("stream: the same outputs, bit for bit, as a whole-list run; failures in the stream, in list order")
    func streamMatchesRun() throws {
        let model = try MobileNetV2(configuration: Self.configuration, weights: KerasWeightSet.random(for: Self.configuration, seed: 5))
        let decode = TestData.fixtures.appendingPathComponent("images/decode")
        let names = ["jpeg_420.jpg", "png_rgb.png", "webp_lossy.webp", "gif_plain.gif", "bmp_24.bmp", "exif_6.jpg"]
        let dir = try TestData.temporaryDirectory()
        let broken = dir.appendingPathComponent("broken.jpg")
        try Data("not an image".utf8).write(to: broken)
        let missing = dir.appendingPathComponent("missing.jpg").path
        // 40 paths cycling through the photos, with a broken file, a missing one and a bad line.
        var paths: [String] = []
        for i in 0..<40 { paths.append(decode.appendingPathComponent(names[i % names.count]).path) }
        paths.insert(broken.path, at: 7)
        paths.insert(missing, at: 20)
        let bytes = Array(paths.prefix(30).map { $0 + "\n" }.joined().utf8) + [0xfe, 0x0a] + Array(paths.dropFirst(30).map { $0 + "\n" }.joined().utf8)
        let listURL = try Self.listFile(bytes)
        let pipeline = ImageBatchPipeline(model: model, batchSize: 3, decodeThreads: 1)
        // The whole-list run over the listed files (missing left out, as ImageFileList does).
        let listed = try ImageFileList(listedIn: try PathListReader(path: listURL.path))
        var expected: [(path: String, row: [Float])] = []
        try pipeline.run(listed.files) { batch in
            for (url, row) in zip(batch.files, batch.outputs) { expected.append((url.path, row)) }
        }
        var results: [StreamedResult] = []
        var calls = 0
        try pipeline.stream(try PathListReader(path: listURL.path)) { batch in
            results += batch
            calls += 1
        }
        #expect(calls > 40 / 24)
        var outputs = 0
        var failures: [String] = []
        for result in results {
            switch result {
            case .output(let path, let values):
                // Same batches as the whole-list run, so the same bits, row for row.
                #expect(outputs < expected.count && path == expected[outputs].path && values == expected[outputs].row, "\(path)")
                outputs += 1
            case .failure(let path, let message):
                failures.append(path)
                #expect(message.contains(path) || message.contains("line 31"), "\(message)")
            }
        }
        #expect(outputs == 40)
        #expect(Set(failures) == [broken.path, missing, listURL.path])
        // Outputs come in list order.
        let order = results.compactMap { if case .output(let path, _) = $0 { return path } else { return nil } }
        #expect(order == paths.filter { $0 != broken.path && $0 != missing })
    }
}
