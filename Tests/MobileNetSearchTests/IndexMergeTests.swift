import Foundation
import MobileNetSearch
import MobileNetStore
import MobileNetTestSupport
import Testing

/// `mobilenet index merge`: joining shard indexes, refusing mixed backbones or preprocessing.
@Suite("Merging shard indexes")
struct IndexMergeTests {
    static let backbone = BackboneIdentity(alpha: 1.0, inputHeight: 224, inputWidth: 224, weightsSHA256: String(repeating: "ab", count: 32))
    static let otherBackbone = BackboneIdentity(alpha: 0.5, inputHeight: 224, inputWidth: 224, weightsSHA256: String(repeating: "cd", count: 32))

    /// A shard index holding `names` (files with distinct contents) with 3-d vectors.
    static func shard(_ url: URL, names: [String], backbone: BackboneIdentity = backbone,
                      preprocessing: PreprocessingIdentity = .testDefault) throws -> [URL] {
        let index = try ImageIndex(url: url)
        try index.store.register(backbone)
        var files: [URL] = []
        var records: [EmbeddingRecord] = []
        var fileRecords: [FileRecord] = []
        for (i, name) in names.enumerated() {
            let file = url.deletingLastPathComponent().appendingPathComponent(name)
            try Data("image \(name)".utf8).write(to: file)
            files.append(file)
            let record = try index.store.hashFile(at: file)
            fileRecords.append(record)
            records.append(EmbeddingRecord(contentSHA256: record.contentSHA256, backbone: backbone.key, preprocessing: preprocessing.key,
                                           vector: [Float(i), 1, Float(name.count)]))
        }
        try index.store.insert(records)
        try index.store.recordFiles(fileRecords)
        return files
    }

    @Test("the merge of three shards holds every file and embedding of each, searchable")
    func mergesShards() throws {
        let dir = try TestData.temporaryDirectory()
        let a = dir.appendingPathComponent("shard-0.db"), b = dir.appendingPathComponent("shard-1.db"), c = dir.appendingPathComponent("shard-2.db")
        let files = try Self.shard(a, names: ["a1.jpg", "a2.jpg"]) + Self.shard(b, names: ["b1.jpg"]) + Self.shard(c, names: [])
        let merged = try ImageIndex(url: dir.appendingPathComponent("all.db"))
        let result = try merged.merge([a, b, c])
        #expect(result.files == 3 && result.embeddings == 3)
        #expect(result.backbone == Self.backbone.key && result.preprocessing == PreprocessingIdentity.testDefault.key)
        #expect(try merged.files().map(\.path) == files.map(\.path).sorted())
        let (search, missing) = try merged.searchIndex(preprocessing: .testDefault)
        #expect(missing.isEmpty && search.count == 3)
        // Merging again changes nothing (keyed rows): a half-done merge is completed by a re-run.
        _ = try merged.merge([a, b])
        #expect(try merged.store.count() == 3 && merged.files().count == 3)
        // One shard given twice: its 2 files are counted once (was 4, issue 32).
        #expect(try merged.merge([a, a]).files == 2)
    }

    @Test("shards of different backbones are refused before anything is written")
    func refusesMixedBackbones() throws {
        let dir = try TestData.temporaryDirectory()
        let a = dir.appendingPathComponent("a.db"), b = dir.appendingPathComponent("b.db")
        _ = try Self.shard(a, names: ["a.jpg"])
        _ = try Self.shard(b, names: ["b.jpg"], backbone: Self.otherBackbone)
        let merged = try ImageIndex(url: dir.appendingPathComponent("all.db"))
        #expect {
            try merged.merge([a, b])
        } throws: { error in
            guard case .mixedBackbones(let first, _, let other, _) = error as? IndexMergeError else { return false }
            return first == a.path && other == b.path && "\(error)".contains("not comparable")
        }
        #expect(try merged.store.count() == 0 && merged.files().isEmpty)
    }

    @Test("shards of different preprocessing, or a destination of another preprocessing, are refused")
    func refusesMixedPreprocessing() throws {
        let dir = try TestData.temporaryDirectory()
        let a = dir.appendingPathComponent("a.db"), b = dir.appendingPathComponent("b.db")
        _ = try Self.shard(a, names: ["a.jpg"])
        _ = try Self.shard(b, names: ["b.jpg"], preprocessing: PreprocessingIdentity.testDefault.setting("resize", "nearest"))
        let merged = try ImageIndex(url: dir.appendingPathComponent("all.db"))
        #expect(throws: IndexMergeError.self) { try merged.merge([a, b]) }
        #expect(try merged.store.count() == 0)
        // The destination itself counts: it holds a's preprocessing, b's is refused.
        _ = try merged.merge([a])
        #expect {
            try merged.merge([b])
        } throws: { error in
            guard case .mixedPreprocessing(let first, _, let other, _) = error as? IndexMergeError else { return false }
            return first == merged.store.url.path && other == b.path
        }
        #expect(throws: IndexMergeError.inputIsDestination(path: merged.store.url.path)) { try merged.merge([merged.store.url]) }
    }
}

/// Issue 32 item 7: a shard with a NaN row or a row of another width is refused and nothing is
/// merged; the merge goes to a temporary database renamed into place, so a failure half-way
/// leaves the destination as it was.
@Suite("Merging shard indexes: rows checked, all or nothing")
struct AtomicIndexMergeTests {
    static func shard(_ url: URL, rows: [(name: String, vector: [Float])]) throws {
        let index = try ImageIndex(url: url)
        try index.store.register(IndexMergeTests.backbone)
        var records: [EmbeddingRecord] = [], files: [FileRecord] = []
        for row in rows {
            let file = url.deletingLastPathComponent().appendingPathComponent(row.name)
            try Data("image \(row.name)".utf8).write(to: file)
            let record = try index.store.hashFile(at: file)
            files.append(record)
            records.append(EmbeddingRecord(contentSHA256: record.contentSHA256, backbone: IndexMergeTests.backbone.key,
                                           preprocessing: PreprocessingIdentity.testDefault.key, vector: row.vector))
        }
        try index.store.insert(records)
        try index.store.recordFiles(files)
    }

    @Test func badRowsAreRefusedAndNothingIsWritten() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.db"), nan = dir.appendingPathComponent("nan.db"), narrow = dir.appendingPathComponent("narrow.db")
        try Self.shard(good, rows: [("g1.jpg", [1, 2, 3]), ("g2.jpg", [3, 2, 1])])
        try Self.shard(nan, rows: [("n1.jpg", [1, .nan, 3])])
        try Self.shard(narrow, rows: [("w1.jpg", [1, 2])])
        let all = dir.appendingPathComponent("all.db")
        // A fresh destination: the good shard first, then a bad one: no all.db at all.
        #expect(throws: IndexMergeError.self) { _ = try ImageIndex.merge([good, nan], into: all) }
        #expect(!FileManager.default.fileExists(atPath: all.path))
        // An existing destination keeps exactly what it had.
        _ = try ImageIndex.merge([good], into: all)
        let before = try Data(contentsOf: all)
        do {
            _ = try ImageIndex.merge([narrow], into: all)
            Issue.record("a row of 2 values was merged into an index of 3")
        } catch let error as IndexMergeError {
            #expect(error.description.contains("has 2 values where the index has 3") && error.description.contains(narrow.path), "\(error)")
        }
        #expect(try Data(contentsOf: all) == before)
        #expect(try ImageIndex(url: all, readOnly: true).store.count() == 2)
        // No temporary database is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".merge-") }.isEmpty)
        // A symbolic link at the destination is replaced, not written through.
        let victim = dir.appendingPathComponent("victim.txt"), link = dir.appendingPathComponent("link.db")
        try Data("victim".utf8).write(to: victim)
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: victim)
        _ = try ImageIndex.merge([good], into: link)
        #expect(try String(contentsOf: victim, encoding: .utf8) == "victim")
    }
}
