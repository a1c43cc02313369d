import Foundation
import MobileNetSearch
import MobileNetStore
import MobileNetTestSupport
import Testing

@Suite("Image index over the embedding store")
struct ImageIndexTests {
    static let backbone = BackboneIdentity(alpha: 1.0, inputHeight: 224, inputWidth: 224, weightsSHA256: String(repeating: "ab", count: 32))

    /// An index with three files whose embeddings are known.
    static func makeIndex(in dir: URL) throws -> (ImageIndex, [URL]) {
        let index = try ImageIndex(url: dir.appendingPathComponent("photos.db"))
        try index.checkCompatible(backbone)
        try index.store.register(backbone)
        var files: [URL] = []
        var records: [EmbeddingRecord] = []
        var fileRecords: [FileRecord] = []
        for (i, vector) in [[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1]].enumerated() {
            let url = dir.appendingPathComponent("img\(i).jpg")
            try Data("image \(i)".utf8).write(to: url)
            files.append(url)
            let record = try index.store.hashFile(at: url)
            fileRecords.append(record)
            records.append(EmbeddingRecord(contentSHA256: record.contentSHA256, backbone: backbone.key,
                                           preprocessing: PreprocessingIdentity.testDefault.key, vector: vector.map(Float.init)))
        }
        try index.store.insert(records)
        try index.store.recordFiles(fileRecords)
        return (index, files)
    }

    @Test("search, duplicates and sync over stored embeddings")
    func searchAndSync() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (index, files) = try Self.makeIndex(in: dir)
        let (search, missing) = try index.searchIndex(preprocessing: .testDefault)
        #expect(missing.isEmpty)
        #expect(search.identifiers == files.map(\.path))
        let matches = try search.search([1, 0, 0], top: 2)
        #expect(matches.map(\.identifier) == [files[0].path, files[1].path])
        #expect(abs(matches[1].similarity - Float(0.9 / (0.81 + 0.01).squareRoot())) < 1e-6)
        #expect(search.nearDuplicateGroups(threshold: 0.95) == [[0, 1]])

        try FileManager.default.removeItem(at: files[2])
        #expect(try index.sync() == [files[2].path])
        #expect(try index.searchIndex(preprocessing: .testDefault).index.count == 2)
    }

    @Test("another backbone is refused; an empty index says so")
    func refusals() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (index, _) = try Self.makeIndex(in: dir)
        var other = Self.backbone
        other.inputHeight = 160
        other.inputWidth = 160
        #expect(throws: ImageIndexError.backboneMismatch(path: index.store.url.path, index: Self.backbone.key, requested: other.key)) {
            try index.checkCompatible(other)
        }
        let empty = try ImageIndex(url: dir.appendingPathComponent("empty.db"))
        #expect(throws: ImageIndexError.empty(path: dir.appendingPathComponent("empty.db").path)) {
            try empty.searchIndex(preprocessing: .testDefault)
        }
    }

    @Test("a corrupt database file is reported and left untouched")
    func corruptFile() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("broken.db")
        let bytes = Data(repeating: 0x42, count: 8192)
        try bytes.write(to: url)
        #expect(throws: StoreError.self) { try ImageIndex(url: url) }
        #expect(try Data(contentsOf: url) == bytes)
    }
}
