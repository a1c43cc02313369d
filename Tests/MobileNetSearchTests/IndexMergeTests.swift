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
