import Foundation
import MobileNetStore
import MobileNetTestSupport
import Testing

@Suite struct SHA256Tests {
    @Test func fipsVectors() {
        #expect(SHA256.hex(Data()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // One million 'a' (FIPS 180-2 appendix B.3), fed in uneven pieces through both update paths.
        var hasher = SHA256()
        hasher.update(Data(repeating: 0x61, count: 333_333))
        hasher.update([UInt8](repeating: 0x61, count: 1))
        hasher.update(Data(repeating: 0x61, count: 666_666))
        #expect(hasher.hexDigest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        #expect(SHA256.hex(Data(repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func fileHashMatchesSha256sum() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // 2.5 MiB + 3 bytes: several of the 1 MiB reads of `hex(contentsOf:)`, the last one partial.
        let url = dir.appendingPathComponent("x.bin")
        let count = (5 << 19) + 3
        try Data((0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }).write(to: url)
        let output = try Tool.run(Tool.sha256sum, [url.path])
        #expect(output.status == 0, "\(output.stderr)")
        let expected = String(output.stdout.prefix { $0 != " " })
        #expect(expected.count == 64, "unexpected sha256sum output: \(output.stdout)")
        #expect(try SHA256.hex(contentsOf: url) == expected)
        // The empty file, and a file of exactly one read (1 MiB).
        let empty = dir.appendingPathComponent("empty.bin")
        try Data().write(to: empty)
        #expect(try SHA256.hex(contentsOf: empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let exact = dir.appendingPathComponent("one-mib.bin")
        try Data(repeating: 0x61, count: 1 << 20).write(to: exact)
        let exactOutput = try Tool.run(Tool.sha256sum, [exact.path])
        #expect(try SHA256.hex(contentsOf: exact) == String(exactOutput.stdout.prefix { $0 != " " }))
    }
}

/// External tools the store tests compare with. `scripts/setup.sh` installs them (sqlite3) or
/// they are part of every Debian system (coreutils' sha256sum): a missing one is a failure.
enum Tool {
    static let sqlite3 = "/usr/bin/sqlite3"
    static let sha256sum = "/usr/bin/sha256sum"

    /// Runs `executable`; a missing tool is recorded as a failure saying how to install it.
    static func run(_ executable: String, _ arguments: [String]) throws -> Subprocess.Result {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            let package = executable.hasSuffix("sqlite3") ? "sqlite3" : "coreutils"
            Issue.record("\(executable) is missing: scripts/setup.sh installs it (Debian package \(package)); run scripts/setup.sh")
            throw Subprocess.MissingExecutable(path: executable)
        }
        return try Subprocess.run(URL(fileURLWithPath: executable), arguments)
    }

    /// Runs sqlite3 on `database` with `sql`; a non-zero exit status is a test failure.
    static func sqlite(_ database: String, _ sql: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let result = try run(sqlite3, [database, sql])
        #expect(result.status == 0, "sqlite3 \(sql): \(result.stderr)", sourceLocation: sourceLocation)
        return result.stdout
    }
}

@Suite struct EmbeddingStoreTests {
    let backbone = BackboneIdentity(alpha: 1.0, inputHeight: 224, inputWidth: 224, weightsSHA256: String(repeating: "a", count: 64))

    @Test func roundTripAndIdentityKeys() throws {
        let dir = try TestData.temporaryDirectory()
        let url = dir.appendingPathComponent("cache.sqlite")
        let vector: [Float] = [0, 1.5, -2.25, .greatestFiniteMagnitude, 1e-30]
        do {
            let store = try EmbeddingStore(url: url)
            try store.register(backbone)
            try store.insert([EmbeddingRecord(contentSHA256: "h1", backbone: backbone.key, preprocessing: PreprocessingIdentity.testDefault.key, vector: vector)])
        }
        let store = try EmbeddingStore(url: url)
        #expect(try store.embeddings(for: ["h1", "h2"], backbone: backbone, preprocessing: .testDefault) == ["h1": vector])
        // Another weight file, another input size or another preprocessing never match.
        var other = backbone
        other.weightsSHA256 = String(repeating: "b", count: 64)
        #expect(try store.embeddings(for: ["h1"], backbone: other, preprocessing: .testDefault).isEmpty)
        other = backbone
        other.inputHeight = 160
        #expect(try store.embeddings(for: ["h1"], backbone: other, preprocessing: .testDefault).isEmpty)
        #expect(try store.embeddings(for: ["h1"], backbone: backbone, preprocessing: PreprocessingIdentity.testDefault.setting("crop", "center-0.875")).isEmpty)
        #expect(try store.embeddings(for: ["h1"], backbone: backbone, preprocessing: .testDefault, view: "aug:1").isEmpty)
        #expect(try store.backbones() == [backbone])
        #expect(try store.count() == 1)
        #expect(backbone.key == "mobilenetv2;alpha=1.0;input=224x224;pooling=avg;weights=sha256:" + String(repeating: "a", count: 64))
    }

    @Test func walModeAndSchemaVersion() throws {
        let dir = try TestData.temporaryDirectory()
        let url = dir.appendingPathComponent("cache.sqlite")
        do {
            let store = try EmbeddingStore(url: url)
            defer { withExtendedLifetime(store) {} }
            // While a writer has it open the store is in WAL mode...
            #expect(try Tool.sqlite(url.path, "PRAGMA journal_mode;") == "wal\n")
        }
        // ...and once closed, in rollback-journal mode: a single file.
        let output = try Tool.sqlite(url.path, "PRAGMA journal_mode; PRAGMA user_version; PRAGMA application_id; SELECT value FROM meta WHERE key='format';")
        #expect(output == "delete\n1\n\(EmbeddingStore.applicationID)\nswift-mobilenet-embeddings\n")
    }

    @Test("a database that cannot be created says why, with the system's reason, not SQLite's 'unable to open database file'")
    func uncreatableDatabase() throws {
        // /sys refuses new files even to root (a read-only folder tested as root would not be);
        // a missing folder is the other common case.
        for path in ["/sys/index.db", "/nonexistent-folder/index.db"] {
            do {
                _ = try EmbeddingStore(url: URL(fileURLWithPath: path))
                Issue.record("\(path) was created")
            } catch {
                #expect(error.description.contains("cannot create the database in") && !error.description.contains("unable to open"), "\(error)")
            }
        }
    }

    @Test func corruptFileIsATypedErrorAndLeftUntouched() throws {
        let dir = try TestData.temporaryDirectory()
        let url = dir.appendingPathComponent("broken.sqlite")
        let garbage = Data((0..<8192).map { UInt8(($0 * 7 + 3) % 256) })
        try garbage.write(to: url)
        #expect {
            _ = try EmbeddingStore(url: url)
        } throws: { error in
            guard let error = error as? StoreError, case .notSQLite(let path) = error else { return false }
            return path == url.path && error.description.contains("broken.sqlite")
        }
        #expect(try Data(contentsOf: url) == garbage)
    }

    @Test("a damaged store with a valid header is refused without writing a byte or creating a -wal/-shm file")
    func damagedStoreIsNotModified() throws {
        let dir = try TestData.temporaryDirectory()
        let url = dir.appendingPathComponent("index.db")
        do {
            let store = try EmbeddingStore(url: url)
            try store.insert((0..<50).map { EmbeddingRecord(contentSHA256: "h\($0)", backbone: backbone.key, preprocessing: "p", vector: [Float](repeating: 1, count: 1280)) })
        }
        _ = try Tool.sqlite(url.path, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: url.path + suffix) }
        var damaged = try Data(contentsOf: url)
        for i in 4096..<(damaged.count - 1024) { damaged[i] = UInt8((i * 31) % 256) }
        try damaged.write(to: url)
        #expect(throws: StoreError.self) { _ = try EmbeddingStore(url: url) }
        #expect(try Data(contentsOf: url) == damaged)
        #expect(!FileManager.default.fileExists(atPath: url.path + "-wal") && !FileManager.default.fileExists(atPath: url.path + "-shm"))
        // Another application's (empty) SQLite database is not written to either.
        let foreign = dir.appendingPathComponent("foreign.db")
        _ = try Tool.sqlite(foreign.path, "PRAGMA user_version = 0; CREATE TABLE t(x); DROP TABLE t; VACUUM;")
        let before = try Data(contentsOf: foreign)
        #expect(throws: StoreError.notAnEmbeddingStore(path: foreign.path)) { _ = try EmbeddingStore(url: foreign) }
        #expect(try Data(contentsOf: foreign) == before)
    }

    @Test func truncatedStoreIsReported() throws {
        let dir = try TestData.temporaryDirectory()
        let url = dir.appendingPathComponent("cache.sqlite")
        do {
            let store = try EmbeddingStore(url: url)
            try store.insert((0..<200).map { EmbeddingRecord(contentSHA256: "h\($0)", backbone: backbone.key, preprocessing: "p", vector: [Float](repeating: Float($0), count: 1280)) })
        }
        _ = try Tool.sqlite(url.path, "PRAGMA wal_checkpoint(TRUNCATE);")
        let data = try Data(contentsOf: url)
        // Overwrite the middle pages with garbage, keeping the header.
        var damaged = data
        for i in 4096..<(data.count - 4096) { damaged[i] = UInt8(i % 256) }
        try damaged.write(to: url)
        try? FileManager.default.removeItem(at: URL(fileURLWithPath: url.path + "-wal"))
        #expect(throws: StoreError.self) {
            let store = try EmbeddingStore(url: url)
            _ = try store.embeddings(for: (0..<200).map { "h\($0)" }, backbone: backbone, preprocessing: PreprocessingIdentity(settings: [:]))
        }
    }

    @Test func foreignSQLiteDatabaseIsRefused() throws {
        let dir = try TestData.temporaryDirectory()
        let url = dir.appendingPathComponent("other.db")
        _ = try Tool.sqlite(url.path, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        #expect(throws: StoreError.notAnEmbeddingStore(path: url.path)) { _ = try EmbeddingStore(url: url) }
    }

    /// The files in `dir`, by name.
    static func names(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    /// Runs chattr (`+i` / `-i`) on `path`; a failure is a test failure.
    static func chattr(_ flag: String, _ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try Subprocess.run(URL(fileURLWithPath: "/usr/bin/chattr"), [flag, path])
        #expect(result.status == 0, "chattr \(flag) \(path): \(result.stderr)", sourceLocation: sourceLocation)
    }

    @Test("readers leave nothing beside the database (also a chattr +i one), and read a store in a read-only folder, also one left in WAL mode")
    func readersLeaveNothingBehind() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("index.sqlite")
        let record = EmbeddingRecord(contentSHA256: "h1", backbone: backbone.key, preprocessing: "p", vector: [1, 2, 3])
        do {
            let store = try EmbeddingStore(url: url)
            try store.insert([record])
        }
        #expect(try Self.names(dir) == ["index.sqlite"])
        do {
            let reader = try EmbeddingStore(url: url, readOnly: true)
            #expect(try reader.count() == 1)
        }
        #expect(try Self.names(dir) == ["index.sqlite"], "a reader left files behind")
        // An immutable database file (its folder writable).
        try Self.chattr("+i", url.path)
        do {
            defer { try? Self.chattr("-i", url.path) }
            let reader = try EmbeddingStore(url: url, readOnly: true)
            #expect(try reader.count() == 1)
        }
        #expect(try Self.names(dir) == ["index.sqlite"], "a reader of a chattr +i database left files behind")
        // A read-only folder: the store is read, nothing is created.
        try Self.chattr("+i", dir.path)
        do {
            defer { try? Self.chattr("-i", dir.path) }
            let reader = try EmbeddingStore(url: url, readOnly: true)
            #expect(try reader.embeddings(for: ["h1"], backbone: backbone, preprocessing: PreprocessingIdentity(settings: [:])).isEmpty)
            #expect(try reader.count() == 1)
        }
        #expect(try Self.names(dir) == ["index.sqlite"])
        // A store an older build left in WAL mode (no -wal or -shm beside it), in a read-only folder.
        let legacy = dir.appendingPathComponent("legacy.sqlite")
        try FileManager.default.copyItem(at: url, to: legacy)
        #expect(try Tool.sqlite(legacy.path, "PRAGMA journal_mode=WAL;") == "wal\n")
        #expect(try Self.names(dir) == ["index.sqlite", "legacy.sqlite"])
        try Self.chattr("+i", dir.path)
        do {
            defer { try? Self.chattr("-i", dir.path) }
            let reader = try EmbeddingStore(url: legacy, readOnly: true)
            #expect(try reader.count() == 1)
        }
        #expect(try Self.names(dir) == ["index.sqlite", "legacy.sqlite"])
    }

    @Test("a reader and a writer open at once both work; once both are closed only the database file is left")
    func concurrentReaderAndWriter() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("index.sqlite")
        func records(_ range: Range<Int>) -> [EmbeddingRecord] {
            range.map { EmbeddingRecord(contentSHA256: "h\($0)", backbone: backbone.key, preprocessing: "p", vector: [Float($0)]) }
        }
        do {
            let writer = try EmbeddingStore(url: url)
            try writer.insert(records(0..<10))
            let reader = try EmbeddingStore(url: url, readOnly: true)
            #expect(try reader.count() == 10)
            let second = try EmbeddingStore(url: url)
            try second.insert(records(10..<20))
            try writer.insert(records(20..<30))
            #expect(try reader.count() == 30)
        }
        #expect(try Self.names(dir) == ["index.sqlite"])
        #expect(try Tool.sqlite(url.path, "PRAGMA journal_mode; SELECT count(*) FROM embeddings;") == "delete\n30\n")
    }

    @Test("many connections creating the same new database at once all succeed, 20 times over")
    func concurrentCreation() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for round in 0..<20 {
            let url = dir.appendingPathComponent("r\(round).sqlite")
            let creators = 4
            let errors = Errors()
            let start = DispatchSemaphore(value: 0)
            let group = DispatchGroup()
            for _ in 0..<creators {
                group.enter()
                Thread {
                    start.wait()
                    do {
                        let store = try EmbeddingStore(url: url)
                        try store.register(backbone)
                    } catch {
                        errors.append("\(error)")
                    }
                    group.leave()
                }.start()
            }
            for _ in 0..<creators { start.signal() }
            group.wait()
            #expect(errors.all.isEmpty, "round \(round): \(errors.all)")
            let reader = try EmbeddingStore(url: url, readOnly: true)
            #expect(try reader.backbones() == [backbone])
        }
    }

    @Test("missing, empty, non-SQLite files and an empty path are typed errors that say what is wrong")
    func openingErrorsSayWhatIsWrong() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("missing.sqlite")
        #expect(throws: StoreError.noSuchFile(path: missing.path)) { _ = try EmbeddingStore(url: missing, readOnly: true) }
        #expect(StoreError.noSuchFile(path: missing.path).description.contains("no such index file"))
        #expect(!FileManager.default.fileExists(atPath: missing.path))
        // /proc/version has a size of 0 but bytes that are not SQLite's.
        #expect(throws: StoreError.notSQLite(path: "/proc/version")) { _ = try EmbeddingStore(url: URL(fileURLWithPath: "/proc/version"), readOnly: true) }
        #expect(throws: StoreError.notSQLite(path: "/proc/version")) { _ = try EmbeddingStore(url: URL(fileURLWithPath: "/proc/version")) }
        #expect(StoreError.notSQLite(path: "/proc/version").description.contains("not an SQLite database"))
        let empty = dir.appendingPathComponent("empty.sqlite")
        try Data().write(to: empty)
        #expect(throws: StoreError.emptyDatabase(path: empty.path)) { _ = try EmbeddingStore(url: empty, readOnly: true) }
        // A writer makes an empty file a store.
        _ = try EmbeddingStore(url: empty)
        #expect(try EmbeddingStore(url: empty, readOnly: true).count() == 0)
        #expect(throws: StoreError.emptyPath) { _ = try EmbeddingStore(path: "", readOnly: true) }
        #expect(throws: StoreError.emptyPath) { _ = try EmbeddingStore(path: "") }
    }

    @Test func fileRecordsReuseHashes() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try EmbeddingStore(url: dir.appendingPathComponent("c.sqlite"))
        let file = dir.appendingPathComponent("a.jpg")
        try Data("hello".utf8).write(to: file)
        let stamp = Date(timeIntervalSince1970: 1_700_000_000)
        try FileManager.default.setAttributes([.modificationDate: stamp], ofItemAtPath: file.path)
        let record = try store.hashFile(at: file)
        // sha256sum of "hello" (no newline).
        #expect(record.contentSHA256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        #expect(record.size == 5 && record.modificationTime == stamp.timeIntervalSince1970)
        try store.recordFiles([record])
        #expect(try store.file(atPath: file.path) == record)
        #expect(try store.allFiles() == [record])
        // Same size and modification time: the recorded hash is reused without reading the file
        // (shown by changing the bytes behind its back).
        try Data("jello".utf8).write(to: file)
        try FileManager.default.setAttributes([.modificationDate: stamp], ofItemAtPath: file.path)
        #expect(try store.hashFile(at: file) == record)
        // Another modification time: hashed again.
        try FileManager.default.setAttributes([.modificationDate: stamp.addingTimeInterval(60)], ofItemAtPath: file.path)
        #expect(try store.hashFile(at: file).contentSHA256 == SHA256.hex(Data("jello".utf8)))
        try store.removeFiles(atPaths: [file.path])
        #expect(try store.allFiles().isEmpty)
    }
}

/// Error messages collected from several threads.
final class Errors: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func append(_ message: String) { lock.lock(); messages.append(message); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return messages }
}
