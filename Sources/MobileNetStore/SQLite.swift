import CSQLite
import Foundation

/// Errors of the SQLite embedding store. Every case names the database file.
public enum StoreError: Error, Equatable, CustomStringConvertible {
    /// The file exists but is not an SQLite database, or SQLite found it damaged
    /// (`SQLITE_NOTADB`, `SQLITE_CORRUPT`). The file is left untouched: move it away or delete it.
    case corrupt(path: String, message: String)
    /// The file is an SQLite database but not an embedding store of this project.
    case notAnEmbeddingStore(path: String)
    /// The store was written by a newer schema version than this build understands.
    case unsupportedSchemaVersion(path: String, found: Int, supported: Int)
    /// The database is locked by another writer for longer than the busy timeout.
    case busy(path: String)
    /// The path names no file: a read-only open needs an existing database.
    case noSuchFile(path: String)
    /// The file exists and has bytes, but does not start with the SQLite header: it is not an
    /// SQLite database at all. It is left untouched.
    case notSQLite(path: String)
    /// The file exists but is empty (0 bytes): no embedding store has been written to it yet.
    /// Only a read-only open reports this; a writer makes an empty file a new store.
    case emptyDatabase(path: String)
    /// The path is the empty string.
    case emptyPath
    /// Any other SQLite failure, with SQLite's message and result code.
    case sqlite(path: String, code: Int32, message: String)
    /// A stored row does not have the expected layout (for example a vector of the wrong length).
    case invalidRow(path: String, message: String)

    /// The database path this error is about.
    public var path: String {
        switch self {
        case .corrupt(let path, _), .notAnEmbeddingStore(let path), .unsupportedSchemaVersion(let path, _, _),
             .busy(let path), .sqlite(let path, _, _), .invalidRow(let path, _), .noSuchFile(let path),
             .notSQLite(let path), .emptyDatabase(let path):
            return path
        case .emptyPath:
            return ""
        }
    }

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .corrupt(let path, let message):
            return "\(path): the embedding cache database is corrupt or not an SQLite file (\(message)); it was left untouched — move it away or delete it to rebuild the cache"
        case .notAnEmbeddingStore(let path):
            return "\(path): an SQLite database, but not a swift-mobilenet embedding store; refusing to modify it"
        case .unsupportedSchemaVersion(let path, let found, let supported):
            return "\(path): embedding store schema version \(found) is newer than this build supports (\(supported))"
        case .busy(let path):
            return "\(path): the database is locked by another process"
        case .noSuchFile(let path):
            return "\(path): no such index file"
        case .notSQLite(let path):
            return "\(path): not an SQLite database (the file does not start with the SQLite header); it was left untouched — move it away or give another file"
        case .emptyDatabase(let path):
            return "\(path): an empty file, not yet an embedding store (nothing has been added to it)"
        case .emptyPath:
            return "the database path is empty"
        case .sqlite(let path, let code, let message):
            return "\(path): SQLite error \(code): \(message)"
        case .invalidRow(let path, let message):
            return "\(path): invalid stored row: \(message)"
        }
    }
}

/// A minimal SQLite connection: prepared statements with positional bindings. Not thread-safe;
/// use one connection per thread (SQLite in WAL mode allows concurrent readers).
final class SQLiteConnection {
    let path: String
    private var handle: OpaquePointer?

    /// Opens `path`. A read-only connection is opened by URI with `mode=ro`, and with
    /// `immutable=1` when `immutable` (SQLite then takes no locks and creates no -shm file:
    /// only for a database that nothing can be writing, such as one in a read-only folder).
    init(path: String, readOnly: Bool = false, immutable: Bool = false) throws(StoreError) {
        self.path = path
        var db: OpaquePointer?
        let rc: Int32
        if readOnly {
            rc = sqlite3_open_v2(Self.uri(path, immutable: immutable), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, nil)
        } else {
            rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        }
        handle = db
        if rc != SQLITE_OK {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(db)
            handle = nil
            throw Self.error(path: path, code: rc, message: message)
        }
        sqlite3_busy_timeout(db, 5000)
        sqlite3_extended_result_codes(db, 0)
    }

    deinit { sqlite3_close(handle) }

    /// A `file:` URI for `path` (`%`, `?` and `#` escaped) with `mode=ro`, and `immutable=1` when asked.
    static func uri(_ path: String, immutable: Bool) -> String {
        // Non-ASCII bytes: percent-encode them too, so the URI is ASCII and decodes to the same bytes.
        var escaped = ""
        for byte in path.utf8 {
            if byte >= 0x80 || byte == UInt8(ascii: "%") || byte == UInt8(ascii: "?") || byte == UInt8(ascii: "#") {
                escaped += String(format: "%%%02X", byte)
            } else {
                escaped.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        let prefix = path.hasPrefix("/") ? "file://" : "file:"
        return prefix + escaped + "?mode=ro" + (immutable ? "&immutable=1" : "")
    }

    /// Sets the busy timeout in milliseconds.
    func setBusyTimeout(_ milliseconds: Int32) { sqlite3_busy_timeout(handle, milliseconds) }

    static func error(path: String, code: Int32, message: String) -> StoreError {
        switch code & 0xff {
        case SQLITE_NOTADB, SQLITE_CORRUPT: return .corrupt(path: path, message: message)
        case SQLITE_BUSY, SQLITE_LOCKED: return .busy(path: path)
        default: return .sqlite(path: path, code: code, message: message)
        }
    }

    func check(_ rc: Int32) throws(StoreError) {
        guard rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE else {
            throw Self.error(path: path, code: rc, message: handle.map { String(cString: sqlite3_errmsg($0)) } ?? "")
        }
    }

    /// Runs one or more statements without results.
    func execute(_ sql: String) throws(StoreError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? ""
            sqlite3_free(message)
            throw Self.error(path: path, code: rc, message: text)
        }
    }

    func prepare(_ sql: String) throws(StoreError) -> Statement {
        var statement: OpaquePointer?
        try check(sqlite3_prepare_v2(handle, sql, -1, &statement, nil))
        return Statement(connection: self, handle: statement)
    }

    /// Runs `body` in a transaction (`BEGIN IMMEDIATE`), committing on success, rolling back on error.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// One prepared statement.
    final class Statement {
        let connection: SQLiteConnection
        let handle: OpaquePointer?

        init(connection: SQLiteConnection, handle: OpaquePointer?) {
            self.connection = connection
            self.handle = handle
        }

        deinit { sqlite3_finalize(handle) }

        enum Value {
            case text(String), integer(Int64), real(Double), blob([UInt8]), null
        }

        func bind(_ values: [Value]) throws(StoreError) {
            try connection.check(sqlite3_reset(handle))
            try connection.check(sqlite3_clear_bindings(handle))
            for (offset, value) in values.enumerated() {
                let index = Int32(offset + 1)
                let rc: Int32
                switch value {
                case .text(let s): rc = sqlite3_bind_text(handle, index, s, -1, csqlite_transient())
                case .integer(let i): rc = sqlite3_bind_int64(handle, index, i)
                case .real(let d): rc = sqlite3_bind_double(handle, index, d)
                case .blob(let bytes):
                    rc = bytes.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), csqlite_transient()) }
                case .null: rc = sqlite3_bind_null(handle, index)
                }
                try connection.check(rc)
            }
        }

        /// Steps once; returns whether a row is available.
        func step() throws(StoreError) -> Bool {
            let rc = sqlite3_step(handle)
            try connection.check(rc)
            return rc == SQLITE_ROW
        }

        /// Binds, then steps to completion (for statements without results).
        func run(_ values: [Value]) throws(StoreError) {
            try bind(values)
            while try step() {}
        }

        func text(_ column: Int32) -> String? {
            guard let p = sqlite3_column_text(handle, column) else { return nil }
            return String(cString: p)
        }

        func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

        func real(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }

        func blob(_ column: Int32) -> [UInt8] {
            let count = Int(sqlite3_column_bytes(handle, column))
            guard count > 0, let p = sqlite3_column_blob(handle, column) else { return [] }
            return Array(UnsafeRawBufferPointer(start: p, count: count))
        }
    }
}

extension StoreError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
