import CSQLite
import Foundation

/// One stored embedding.
public struct EmbeddingRecord: Sendable, Equatable {
    /// SHA-256 (hex) of the image file's bytes.
    public var contentSHA256: String
    /// ``BackboneIdentity/key`` of the network that made it.
    public var backbone: String
    /// ``PreprocessingIdentity/key`` of the input pipeline.
    public var preprocessing: String
    /// `""` for the image itself; otherwise an augmented view's id (e.g. `aug:v1:seed=7:3`).
    public var view: String
    /// The embedding (for MobileNetV2 at alpha ≤ 1, 1280 values).
    public var vector: [Float]

    /// Creates a record.
    public init(contentSHA256: String, backbone: String, preprocessing: String, view: String = "", vector: [Float]) {
        self.contentSHA256 = contentSHA256
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.view = view
        self.vector = vector
    }
}

/// What the store knows about a file path: its content hash, size and modification time, so an
/// unchanged file need not be hashed again.
public struct FileRecord: Sendable, Equatable {
    /// The path as given (absolute paths are recommended).
    public var path: String
    /// SHA-256 (hex) of the file's bytes when it was recorded.
    public var contentSHA256: String
    /// Size in bytes.
    public var size: Int64
    /// Modification time, seconds since 1970.
    public var modificationTime: Double

    /// Creates a record.
    public init(path: String, contentSHA256: String, size: Int64, modificationTime: Double) {
        self.path = path
        self.contentSHA256 = contentSHA256
        self.size = size
        self.modificationTime = modificationTime
    }
}

/// The on-disk embedding cache, shared by transfer learning (`mobilenet train`) and similarity
/// search: an SQLite database, in WAL mode while a writer has it open and in rollback-journal
/// (`DELETE`) mode once closed, so a closed store is a single file.
///
/// Schema (version ``schemaVersion``; `PRAGMA application_id` = ``applicationID``, `PRAGMA user_version` = schema version):
/// ```sql
/// CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
///   -- 'format' = 'swift-mobilenet-embeddings', 'schema_version' = '1'
/// CREATE TABLE backbones (key TEXT PRIMARY KEY, architecture TEXT, alpha REAL,
///   input_height INTEGER, input_width INTEGER, pooling TEXT, weights_sha256 TEXT, created REAL);
/// CREATE TABLE embeddings (
///   content_sha256 TEXT NOT NULL,  -- hex SHA-256 of the image file bytes
///   backbone TEXT NOT NULL,        -- BackboneIdentity.key
///   preprocessing TEXT NOT NULL,   -- PreprocessingIdentity.key
///   view TEXT NOT NULL,            -- '' = the image itself, else an augmented view id
///   dimension INTEGER NOT NULL,
///   vector BLOB NOT NULL,          -- dimension float32, little-endian (raw, not normalised)
///   created REAL NOT NULL,         -- seconds since 1970
///   PRIMARY KEY (content_sha256, backbone, preprocessing, view)) WITHOUT ROWID;
/// CREATE TABLE files (path TEXT PRIMARY KEY, content_sha256 TEXT NOT NULL,
///   size INTEGER NOT NULL, mtime REAL NOT NULL, seen REAL NOT NULL);
/// CREATE INDEX files_by_content ON files(content_sha256);
/// ```
/// Embeddings are keyed by content, not path: a renamed or copied photo reuses its embedding,
/// an edited one gets a new one. Writers use transactions; ``insert(_:)`` commits a batch
/// at a time so an interrupted run keeps everything committed before it.
///
/// Errors: a file that is not an SQLite database or is damaged gives ``StoreError/corrupt(path:message:)``;
/// the file is never deleted or rewritten. Not thread-safe: one store per thread.
public final class EmbeddingStore {
    /// The schema version this build writes and reads.
    public static let schemaVersion = 1
    /// `PRAGMA application_id` of an embedding store (`'MNV2'`).
    public static let applicationID: Int32 = 0x4D4E_5632
    /// The database file.
    public let url: URL
    let connection: SQLiteConnection

    /// Opens the store at `url`, creating it (and the schema) when the file does not exist or
    /// is empty (0 bytes).
    ///
    /// A writer keeps the database in WAL mode while it is open and switches it back to
    /// `journal_mode=DELETE` when it closes (best effort: not while another connection has it
    /// open), so a closed store is one file. A reader opens it with `mode=ro` and, when its
    /// folder is not writable (no writer can be at work there) and no write-ahead log is
    /// beside it, with `immutable=1`, so it reads a store in a read-only folder and leaves no
    /// -wal or -shm file behind. Creation is atomic for other processes: the schema is made
    /// in one `BEGIN IMMEDIATE` transaction, and a process that finds an empty database
    /// waits for that lock and looks again, so concurrent creators all succeed.
    ///
    /// - Parameters:
    ///   - url: the SQLite database file.
    ///   - readOnly: open without write access (the file must exist; default false).
    /// - Throws: ``StoreError`` naming the file: `.emptyPath` for `""`, `.noSuchFile` (read-only,
    ///   missing file), `.emptyDatabase` (read-only, 0-byte file), `.notSQLite` for a file that
    ///   is not SQLite at all, `.corrupt` for a damaged one, `.notAnEmbeddingStore` for another
    ///   application's database, `.unsupportedSchemaVersion`, `.busy`, `.sqlite` (cannot create,
    ///   not writable).
    public init(url: URL, readOnly: Bool = false) throws(StoreError) {
        self.url = url
        let path = url.path
        guard !path.isEmpty else { throw .emptyPath }
        self.readOnly = readOnly
        // An existing file is checked through a read-only connection first, so a damaged or
        // foreign database is never written to (not even a journal-mode change).
        var info = stat()
        if stat(path, &info) != 0 {
            guard !readOnly else {
                if errno == ENOENT { throw .noSuchFile(path: path) }
                throw .sqlite(path: path, code: SQLITE_CANTOPEN, message: String(cString: strerror(errno)))
            }
        } else if (info.st_mode & S_IFMT) != S_IFREG {
            throw .sqlite(path: path, code: SQLITE_CANTOPEN, message: "not a regular file")
        }
        let folder = url.deletingLastPathComponent().path
        let header = try Self.header(path: path)
        if readOnly {
            guard let header, !header.isEmpty else { throw .emptyDatabase(path: path) }
            guard Self.isSQLiteHeader(header) else { throw .notSQLite(path: path) }
            // No writer can work in a folder that refuses its -wal file; then (and only when no
            // log is left there to read) the database is immutable and needs no -shm file.
            let walSize = Self.fileSize(path + "-wal")
            let immutable = access(folder, W_OK) != 0 && (walSize ?? 0) == 0
            connection = try Self.retryingWhileBusy { () throws(StoreError) in
                let connection = try SQLiteConnection(path: path, readOnly: true, immutable: immutable)
                try Self.validate(connection)
                return connection
            }
            return
        }
        if let header, !header.isEmpty {
            guard Self.isSQLiteHeader(header) else { throw .notSQLite(path: path) }
            if access(path, W_OK) != 0 {
                throw .sqlite(path: path, code: SQLITE_READONLY, message: "the database is not writable (\(String(cString: strerror(errno)))); open it read-only or copy it")
            } else if access(folder, W_OK) != 0 {
                // Writing needs the write-ahead log beside the file.
                throw .sqlite(path: path, code: SQLITE_READONLY, message: "its folder is not writable (\(String(cString: strerror(errno)))), and writing needs the -wal file beside it; open it read-only or copy it")
            }
            // A store being created by another process is 0 bytes until that process commits
            // its schema (one transaction in rollback-journal mode, under its lock), so a
            // non-empty file is a finished store or a foreign or damaged database, refused
            // here before any write (another application's empty database included).
            try Self.retryingWhileBusy { () throws(StoreError) in try Self.validate(SQLiteConnection(path: path, readOnly: true)) }
        } else if header == nil {
            // Create the (empty) file ourselves, so that a read-only mount, a missing folder or
            // a permission is reported with the system's reason instead of SQLite's "unable to
            // open database file" (access(2) does not tell: root passes it on a read-only folder).
            let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o666)
            if fd >= 0 {
                close(fd)
            } else if errno != EEXIST {
                throw .sqlite(path: path, code: SQLITE_CANTOPEN, message: "cannot create the database in \(folder) (\(String(cString: strerror(errno))))")
            }
        }
        let connection = try SQLiteConnection(path: path, readOnly: false)
        self.connection = connection
        // Lock upgrades of several connections at once (one switching to WAL mode while
        // another starts its transaction) can end in SQLITE_BUSY without waiting: try again.
        try Self.retryingWhileBusy { () throws(StoreError) in try Self.createSchemaIfNeeded(connection, path: path) }
        try Self.retryingWhileBusy { () throws(StoreError) in try connection.execute("PRAGMA journal_mode=WAL") }
    }

    /// Runs `body` until it does not fail with ``StoreError/busy(path:)``, for up to 15 s,
    /// sleeping a few random milliseconds between tries.
    private static func retryingWhileBusy<T>(_ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        let deadline = Date().addingTimeInterval(15)
        while true {
            do throws(StoreError) {
                return try body()
            } catch .busy(let path) {
                guard Date() < deadline else { throw .busy(path: path) }
                usleep(UInt32.random(in: 2_000...20_000))
            }
        }
    }

    /// Opens the store at a file path, as ``init(url:readOnly:)`` does; the path is checked
    /// first, since `URL(fileURLWithPath: "")` would name the current folder.
    ///
    /// - Throws: ``StoreError/emptyPath`` for `""`; otherwise as ``init(url:readOnly:)``.
    public convenience init(path: String, readOnly: Bool = false) throws(StoreError) {
        guard !path.isEmpty else { throw .emptyPath }
        try self.init(url: URL(fileURLWithPath: path), readOnly: readOnly)
    }

    /// Whether this store was opened read-only.
    let readOnly: Bool

    deinit {
        // A closed store is one file: leave WAL mode (the last connection checkpoints and
        // removes -wal and -shm). Another connection still open makes this fail with
        // SQLITE_BUSY; then it is left to the last writer to close.
        guard !readOnly else { return }
        connection.setBusyTimeout(0)
        try? connection.execute("PRAGMA journal_mode=DELETE")
    }

    /// The first 16 bytes of `path` (fewer for a shorter file, empty for an empty one), or nil
    /// when there is no such file. Read with read(2), not the size, so a /proc file whose
    /// size is 0 still shows its bytes.
    private static func header(path: String) throws(StoreError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw .sqlite(path: path, code: SQLITE_CANTOPEN, message: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 16)
        var count = 0
        while count < 16 {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, 16 - count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            count += n
        }
        return Array(bytes.prefix(count))
    }

    private static func isSQLiteHeader(_ header: [UInt8]) -> Bool {
        header.count == 16 && header == Array("SQLite format 3\0".utf8)
    }

    private static func fileSize(_ path: String) -> Int64? {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : nil
    }

    /// Makes the schema in a blank database, atomically for other processes: under
    /// `BEGIN IMMEDIATE` (which waits for another creator), the application id is looked at
    /// again; a store made meanwhile is validated, a foreign database refused.
    private static func createSchemaIfNeeded(_ connection: SQLiteConnection, path: String) throws(StoreError) {
        try connection.execute("BEGIN IMMEDIATE")
        do throws(StoreError) {
            let appID = try scalarInt(connection, "PRAGMA application_id")
            if appID == Int(applicationID) {
                try connection.execute("COMMIT")
                try validate(connection)
                return
            }
            guard appID == 0, try scalarInt(connection, "SELECT count(*) FROM sqlite_master") == 0 else {
                throw StoreError.notAnEmbeddingStore(path: path)
            }
            try connection.execute(schemaSQL)
            try connection.execute("COMMIT")
        } catch {
            try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// Checks an opened database without writing to it: this application's id, a schema
    /// version this build reads, and tables that can be read.
    private static func validate(_ connection: SQLiteConnection) throws(StoreError) {
        let path = connection.path
        let appID = try scalarInt(connection, "PRAGMA application_id")
        let version = try scalarInt(connection, "PRAGMA user_version")
        guard appID == Int(applicationID) else { throw .notAnEmbeddingStore(path: path) }
        guard version <= schemaVersion else {
            throw .unsupportedSchemaVersion(path: path, found: version, supported: schemaVersion)
        }
        // A cheap structural check: reading the tables fails on a damaged file.
        _ = try scalarInt(connection, "SELECT count(*) FROM embeddings")
        _ = try scalarInt(connection, "SELECT count(*) FROM files")
    }

    static let schemaSQL = """
        PRAGMA application_id = \(applicationID);
        PRAGMA user_version = \(schemaVersion);
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT OR REPLACE INTO meta VALUES ('format', 'swift-mobilenet-embeddings'), ('schema_version', '\(schemaVersion)');
        CREATE TABLE IF NOT EXISTS backbones (key TEXT PRIMARY KEY, architecture TEXT, alpha REAL, input_height INTEGER,
            input_width INTEGER, pooling TEXT, weights_sha256 TEXT, created REAL);
        CREATE TABLE IF NOT EXISTS embeddings (content_sha256 TEXT NOT NULL, backbone TEXT NOT NULL, preprocessing TEXT NOT NULL,
            view TEXT NOT NULL, dimension INTEGER NOT NULL, vector BLOB NOT NULL, created REAL NOT NULL,
            PRIMARY KEY (content_sha256, backbone, preprocessing, view)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, content_sha256 TEXT NOT NULL, size INTEGER NOT NULL,
            mtime REAL NOT NULL, seen REAL NOT NULL);
        CREATE INDEX IF NOT EXISTS files_by_content ON files(content_sha256);
        """

    static func scalarInt(_ connection: SQLiteConnection, _ sql: String) throws(StoreError) -> Int {
        let statement = try connection.prepare(sql)
        guard try statement.step() else { return 0 }
        return Int(statement.integer(0))
    }

    /// Records a backbone (idempotent), so the store can list what made its embeddings.
    public func register(_ backbone: BackboneIdentity) throws(StoreError) {
        let statement = try connection.prepare("INSERT OR IGNORE INTO backbones VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        try statement.run([.text(backbone.key), .text(backbone.architecture), .real(backbone.alpha),
                           .integer(Int64(backbone.inputHeight)), .integer(Int64(backbone.inputWidth)),
                           .text(backbone.pooling), .text(backbone.weightsSHA256), .real(Date().timeIntervalSince1970)])
    }

    /// The backbones registered in the store.
    public func backbones() throws(StoreError) -> [BackboneIdentity] {
        let statement = try connection.prepare("SELECT architecture, alpha, input_height, input_width, pooling, weights_sha256 FROM backbones ORDER BY created")
        var result: [BackboneIdentity] = []
        while try statement.step() {
            result.append(BackboneIdentity(architecture: statement.text(0) ?? "", alpha: statement.real(1),
                                           inputHeight: Int(statement.integer(2)), inputWidth: Int(statement.integer(3)),
                                           pooling: statement.text(4) ?? "", weightsSHA256: statement.text(5) ?? ""))
        }
        return result
    }

    /// The stored embeddings among `contentHashes` for exactly this backbone, preprocessing and view.
    ///
    /// - Returns: content hash → vector, for the hashes found.
    public func embeddings(for contentHashes: [String], backbone: BackboneIdentity, preprocessing: PreprocessingIdentity, view: String = "") throws(StoreError) -> [String: [Float]] {
        let statement = try connection.prepare("SELECT vector, dimension FROM embeddings WHERE content_sha256 = ? AND backbone = ? AND preprocessing = ? AND view = ?")
        var result: [String: [Float]] = [:]
        for hash in Set(contentHashes) {
            try statement.bind([.text(hash), .text(backbone.key), .text(preprocessing.key), .text(view)])
            if try statement.step() {
                let vector = Self.decode(statement.blob(0))
                guard vector.count == Int(statement.integer(1)) else {
                    throw .invalidRow(path: url.path, message: "vector of \(vector.count) values, dimension \(statement.integer(1)) for \(hash)")
                }
                result[hash] = vector
            }
        }
        return result
    }

    /// The distinct preprocessing identity keys (``PreprocessingIdentity/key``) of the stored
    /// embeddings, sorted: one for a store built with one set of image options.
    public func preprocessingKeys() throws(StoreError) -> [String] {
        let statement = try connection.prepare("SELECT DISTINCT preprocessing FROM embeddings ORDER BY preprocessing")
        var result: [String] = []
        while try statement.step() { result.append(statement.text(0) ?? "") }
        return result
    }

    /// Every stored embedding (all backbones, preprocessings and views), delivered in chunks of
    /// at most `chunk` records ordered by key, so a large store can be copied in bounded memory.
    ///
    /// - Throws: store errors, and what `body` throws.
    public func forEachEmbeddingChunk(chunk: Int = 512, _ body: ([EmbeddingRecord]) throws -> Void) throws {
        let statement = try connection.prepare("SELECT content_sha256, backbone, preprocessing, view, dimension, vector FROM embeddings ORDER BY content_sha256, backbone, preprocessing, view")
        var records: [EmbeddingRecord] = []
        while try statement.step() {
            let vector = Self.decode(statement.blob(5))
            guard vector.count == Int(statement.integer(4)) else {
                throw StoreError.invalidRow(path: url.path, message: "vector of \(vector.count) values, dimension \(statement.integer(4)) for \(statement.text(0) ?? "")")
            }
            records.append(EmbeddingRecord(contentSHA256: statement.text(0) ?? "", backbone: statement.text(1) ?? "", preprocessing: statement.text(2) ?? "",
                                           view: statement.text(3) ?? "", vector: vector))
            if records.count >= max(1, chunk) {
                try body(records)
                records.removeAll(keepingCapacity: true)
            }
        }
        if !records.isEmpty { try body(records) }
    }

    /// A consistent copy of the whole database in a new file at `url` (SQLite `VACUUM INTO`),
    /// from a read-only store too; `url` must not exist.
    ///
    /// - Throws: ``StoreError`` naming this store's file.
    public func copy(to url: URL) throws(StoreError) {
        let statement = try connection.prepare("VACUUM INTO ?")
        try statement.bind([.text(url.path)])
        _ = try statement.step()
    }

    /// The distinct embedding widths stored, sorted (one for a store made by one backbone).
    public func dimensions() throws(StoreError) -> [Int] {
        let statement = try connection.prepare("SELECT DISTINCT dimension FROM embeddings ORDER BY dimension")
        var result: [Int] = []
        while try statement.step() { result.append(Int(statement.integer(0))) }
        return result
    }

    /// Stores `records` in one transaction (all or nothing), replacing equal keys.
    public func insert(_ records: [EmbeddingRecord]) throws(StoreError) {
        guard !records.isEmpty else { return }
        do {
            try connection.transaction {
                let statement = try connection.prepare("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?)")
                let now = Date().timeIntervalSince1970
                for record in records {
                    try statement.run([.text(record.contentSHA256), .text(record.backbone), .text(record.preprocessing),
                                       .text(record.view), .integer(Int64(record.vector.count)), .blob(Self.encode(record.vector)), .real(now)])
                }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw .sqlite(path: url.path, code: -1, message: "\(error)")
        }
    }

    /// Number of stored embeddings (all backbones).
    public func count() throws(StoreError) -> Int {
        try Self.scalarInt(connection, "SELECT count(*) FROM embeddings")
    }

    /// The record of `path`, if any.
    public func file(atPath path: String) throws(StoreError) -> FileRecord? {
        let statement = try connection.prepare("SELECT content_sha256, size, mtime FROM files WHERE path = ?")
        try statement.bind([.text(path)])
        guard try statement.step() else { return nil }
        return FileRecord(path: path, contentSHA256: statement.text(0) ?? "", size: statement.integer(1), modificationTime: statement.real(2))
    }

    /// Records (or updates) file paths with their content hashes, in one transaction.
    public func recordFiles(_ files: [FileRecord]) throws(StoreError) {
        guard !files.isEmpty else { return }
        do {
            try connection.transaction {
                let statement = try connection.prepare("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)")
                let now = Date().timeIntervalSince1970
                for file in files {
                    try statement.run([.text(file.path), .text(file.contentSHA256), .integer(file.size), .real(file.modificationTime), .real(now)])
                }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw .sqlite(path: url.path, code: -1, message: "\(error)")
        }
    }

    /// Number of recorded files (one row each in ``allFiles()``), without reading them.
    public func fileCount() throws(StoreError) -> Int {
        try Self.scalarInt(connection, "SELECT count(*) FROM files")
    }

    /// Every recorded file, ordered by path.
    public func allFiles() throws(StoreError) -> [FileRecord] {
        let statement = try connection.prepare("SELECT path, content_sha256, size, mtime FROM files ORDER BY path")
        var result: [FileRecord] = []
        while try statement.step() {
            result.append(FileRecord(path: statement.text(0) ?? "", contentSHA256: statement.text(1) ?? "", size: statement.integer(2), modificationTime: statement.real(3)))
        }
        return result
    }

    /// Forgets the given paths (their embeddings stay, keyed by content).
    public func removeFiles(atPaths paths: [String]) throws(StoreError) {
        do {
            try connection.transaction {
                let statement = try connection.prepare("DELETE FROM files WHERE path = ?")
                for path in paths { try statement.run([.text(path)]) }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw .sqlite(path: url.path, code: -1, message: "\(error)")
        }
    }

    /// The content hash of the file at `url`, reusing the recorded hash when the size and
    /// modification time are unchanged (the new hash is not recorded; see ``recordFiles(_:)``).
    ///
    /// - Returns: the record describing the file now.
    /// - Throws: the file-system error when the file cannot be read.
    public func hashFile(at fileURL: URL) throws -> FileRecord {
        let attributes = try FileManager.default.attributesOfItem(atPath: fileURL.path)
        let size = (attributes[.size] as? NSNumber)?.int64Value ?? -1
        let mtime = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        if let known = try file(atPath: fileURL.path), known.size == size, known.modificationTime == mtime {
            return known
        }
        return FileRecord(path: fileURL.path, contentSHA256: try SHA256.hex(contentsOf: fileURL), size: size, modificationTime: mtime)
    }

    static func encode(_ vector: [Float]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(vector.count * 4)
        for value in vector {
            let bits = value.bitPattern.littleEndian
            bytes += [UInt8(bits & 0xff), UInt8((bits >> 8) & 0xff), UInt8((bits >> 16) & 0xff), UInt8(bits >> 24)]
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [Float] {
        stride(from: 0, to: bytes.count - bytes.count % 4, by: 4).map { i in
            Float(bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
        }
    }
}
