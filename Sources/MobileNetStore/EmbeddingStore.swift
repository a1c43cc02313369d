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
/// search: an SQLite database in WAL mode.
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

    /// Opens the store at `url`, creating it (and the schema) when the file does not exist.
    ///
    /// - Parameters:
    ///   - url: the SQLite database file.
    ///   - readOnly: open without write access (the file must exist; default false).
    /// - Throws: ``StoreError`` naming the file: `.corrupt` for a damaged or non-SQLite file,
    ///   `.notAnEmbeddingStore` for another application's database, `.unsupportedSchemaVersion`.
    public init(url: URL, readOnly: Bool = false) throws(StoreError) {
        self.url = url
        let path = url.path
        // An existing file is checked through a read-only connection first, so a damaged or
        // foreign database is never written to (not even a journal-mode change).
        var info = stat()
        let existing: Bool
        if stat(path, &info) != 0 {
            existing = false
        } else if (info.st_mode & S_IFMT) == S_IFREG {
            existing = info.st_size > 0
            if existing { try Self.validate(path: path) }
        } else {
            throw .sqlite(path: path, code: SQLITE_CANTOPEN, message: "not a regular file")
        }
        if !existing {
            guard !readOnly else { throw .notAnEmbeddingStore(path: path) }
            // Create the (empty) file ourselves, so that a read-only mount, a missing folder or
            // a permission is reported with the system's reason instead of SQLite's "unable to
            // open database file" (access(2) does not tell: root passes it on a read-only folder).
            let folder = url.deletingLastPathComponent().path
            if stat(path, &info) != 0 {
                let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o666)
                guard fd >= 0 else {
                    throw .sqlite(path: path, code: SQLITE_CANTOPEN, message: "cannot create the database in \(folder) (\(String(cString: strerror(errno))))")
                }
                close(fd)
            }
        } else if !readOnly, access(path, W_OK) != 0 {
            throw .sqlite(path: path, code: SQLITE_READONLY, message: "the database is not writable (\(String(cString: strerror(errno)))); open it read-only or copy it")
        } else if !readOnly, access(url.deletingLastPathComponent().path, W_OK) != 0 {
            // Writing needs the write-ahead log beside the file.
            throw .sqlite(path: path, code: SQLITE_READONLY, message: "its folder is not writable (\(String(cString: strerror(errno)))), and writing needs the -wal file beside it; open it read-only or copy it")
        }
        connection = try SQLiteConnection(path: path, readOnly: readOnly)
        if !existing {
            try connection.execute("PRAGMA journal_mode=WAL")
            try connection.execute(Self.schemaSQL)
            return
        }
        if !readOnly { try connection.execute("PRAGMA journal_mode=WAL") }
    }

    /// Checks an existing database without writing to it: an SQLite file, this application's
    /// id, a schema version this build reads, and tables that can be read.
    private static func validate(path: String) throws(StoreError) {
        let connection = try SQLiteConnection(path: path, readOnly: true)
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
        BEGIN;
        PRAGMA application_id = \(applicationID);
        PRAGMA user_version = \(schemaVersion);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('format', 'swift-mobilenet-embeddings'), ('schema_version', '\(schemaVersion)');
        CREATE TABLE backbones (key TEXT PRIMARY KEY, architecture TEXT, alpha REAL, input_height INTEGER,
            input_width INTEGER, pooling TEXT, weights_sha256 TEXT, created REAL);
        CREATE TABLE embeddings (content_sha256 TEXT NOT NULL, backbone TEXT NOT NULL, preprocessing TEXT NOT NULL,
            view TEXT NOT NULL, dimension INTEGER NOT NULL, vector BLOB NOT NULL, created REAL NOT NULL,
            PRIMARY KEY (content_sha256, backbone, preprocessing, view)) WITHOUT ROWID;
        CREATE TABLE files (path TEXT PRIMARY KEY, content_sha256 TEXT NOT NULL, size INTEGER NOT NULL,
            mtime REAL NOT NULL, seen REAL NOT NULL);
        CREATE INDEX files_by_content ON files(content_sha256);
        COMMIT;
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

    /// Every embedding of one backbone, preprocessing and view, ordered by content hash
    /// (bulk load for similarity search).
    public func allEmbeddings(backbone: BackboneIdentity, preprocessing: PreprocessingIdentity, view: String = "") throws(StoreError) -> [(contentSHA256: String, vector: [Float])] {
        let statement = try connection.prepare("SELECT content_sha256, vector FROM embeddings WHERE backbone = ? AND preprocessing = ? AND view = ? ORDER BY content_sha256")
        try statement.bind([.text(backbone.key), .text(preprocessing.key), .text(view)])
        var result: [(String, [Float])] = []
        while try statement.step() { result.append((statement.text(0) ?? "", Self.decode(statement.blob(1)))) }
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
