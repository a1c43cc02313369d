import CZip
import Foundation

/// A ZIP archive that cannot be read or written.
public struct ZipArchiveError: Error, Equatable, CustomStringConvertible {
    /// The archive's path.
    public var path: String
    /// What went wrong, in libzip's words where it has them ("CRC error", "Not a zip archive").
    public var reason: String
    /// Whether the failure was a CRC-32 mismatch: the member's bytes were damaged.
    public var isChecksumMismatch: Bool

    public var description: String { "\(path): \(reason)" }
}

/// ZIP archives through libzip (Debian `libzip-dev`): the container of Keras 3 `.keras` files.
///
/// Reading is safe on hostile files: the archive is opened with libzip's strict consistency
/// checks, a member is streamed in chunks and stops at a caller's limit (a ZIP bomb is never
/// held whole), each member's CRC-32 is verified as its last byte is read, and reads are bounded
/// by the recorded compressed size (a truncated deflate stream is an error, not a loop).
public final class ZipArchive {
    /// One member as the central directory records it.
    public struct Member: Equatable, Sendable {
        /// The member's path in the archive (`model.weights.h5`).
        public var name: String
        /// The recorded uncompressed size, in bytes (what the member claims; checked when read).
        public var size: UInt64
        /// Whether it is deflated (Keras stores its members uncompressed).
        public var isCompressed: Bool
    }

    private let handle: OpaquePointer
    /// The archive's path, for messages.
    public let path: String

    /// Opens the archive at `url` for reading.
    ///
    /// - Throws: ``ZipArchiveError`` naming the file: not a ZIP archive, inconsistent (libzip's
    ///   `ZIP_CHECKCONS` checks), unreadable.
    public init(contentsOf url: URL) throws(ZipArchiveError) {
        path = url.path
        var code: Int32 = 0
        guard let handle = zip_open(url.path, ZIP_RDONLY | ZIP_CHECKCONS, &code) else {
            var error = zip_error_t()
            zip_error_init_with_code(&error, code)
            defer { zip_error_fini(&error) }
            throw ZipArchiveError(path: url.path, reason: Self.openFailure(code: code, libzip: String(cString: zip_error_strerror(&error))), isChecksumMismatch: code == ZIP_ER_CRC)
        }
        self.handle = handle
    }

    deinit { zip_discard(handle) }

    /// What an error of `zip_open` means for a file from the internet, in plain words.
    static func openFailure(code: Int32, libzip: String) -> String {
        switch code {
        case ZIP_ER_NOZIP: "not a ZIP archive, or a truncated one (its end-of-archive record is missing)"
        case ZIP_ER_INCONS: "a damaged ZIP archive (its directory is inconsistent with its entries)"
        case ZIP_ER_EXISTS: "a ZIP archive with two members of the same name"
        case ZIP_ER_NOPASSWD, ZIP_ER_ENCRNOTSUPP, ZIP_ER_WRONGPASSWD: "an encrypted ZIP archive (not supported)"
        case ZIP_ER_READ, ZIP_ER_SEEK, ZIP_ER_EOF: "a truncated or unreadable ZIP archive (libzip: \(libzip))"
        default: "not a readable ZIP archive (libzip: \(libzip))"
        }
    }

    /// The members in archive order.
    public var members: [Member] {
        let count = zip_get_num_entries(handle, 0)
        guard count > 0 else { return [] }
        return (0..<UInt64(count)).compactMap { index in
            var info = zip_stat_t()
            zip_stat_init(&info)
            guard zip_stat_index(handle, index, 0, &info) == 0, let name = info.name else { return nil }
            return Member(name: String(cString: name), size: info.size, isCompressed: Int32(info.comp_method) != ZIP_CM_STORE)
        }
    }

    /// The recorded entry of member `name`, or nil when there is none.
    public func member(named name: String) -> Member? {
        let index = zip_name_locate(handle, name, 0)
        guard index >= 0 else { return nil }
        var info = zip_stat_t()
        zip_stat_init(&info)
        guard zip_stat_index(handle, UInt64(index), 0, &info) == 0 else { return nil }
        return Member(name: name, size: info.size, isCompressed: Int32(info.comp_method) != ZIP_CM_STORE)
    }

    /// The bytes of member `name`, streamed; nil when the archive has no such member.
    ///
    /// - Parameters:
    ///   - name: the member's path in the archive.
    ///   - limit: the most bytes it may inflate to; reading stops one chunk past it.
    ///   - prefix: bytes the member must start with (a file signature), checked on the first
    ///     chunk, so a member of the wrong kind is refused before it is inflated whole.
    /// - Throws: ``ZipArchiveError``: a recorded or actual size over `limit` (the reason says
    ///   which), more bytes than recorded, a wrong prefix, a CRC-32 mismatch
    ///   (``ZipArchiveError/isChecksumMismatch``), a damaged stream.
    public func read(_ name: String, limit: Int64, prefix: [UInt8] = []) throws(ZipArchiveError) -> Data? {
        let index = zip_name_locate(handle, name, 0)
        guard index >= 0 else { return nil }
        var info = zip_stat_t()
        zip_stat_init(&info)
        guard zip_stat_index(handle, UInt64(index), 0, &info) == 0 else { throw failure() }
        let limitText = limit >= 1 << 20 ? "\(limit >> 20) MiB" : "\(limit) bytes"
        guard info.size <= UInt64(max(0, limit)) else {
            throw ZipArchiveError(path: path, reason: "\(name) declares \(info.size) bytes, more than the \(limitText) such a member may have", isChecksumMismatch: false)
        }
        guard let file = zip_fopen_index(handle, UInt64(index), 0) else { throw failure() }
        defer { zip_fclose(file) }
        var data = Data()
        data.reserveCapacity(Int(info.size))
        let chunkSize = 1 << 16
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        while true {
            let count = chunk.withUnsafeMutableBytes { zip_fread(file, $0.baseAddress, UInt64(chunkSize)) }
            if count < 0 {
                let error = zip_file_get_error(file)
                let code = zip_error_code_zip(error)
                throw ZipArchiveError(path: path, reason: "\(name) cannot be read (\(String(cString: zip_error_strerror(error))))", isChecksumMismatch: code == ZIP_ER_CRC)
            }
            if count == 0 { break }
            guard Int64(data.count) + count <= limit else {
                throw ZipArchiveError(path: path, reason: "\(name) inflates to more than the \(limitText) such a member may have", isChecksumMismatch: false)
            }
            guard UInt64(data.count) + UInt64(count) <= info.size else {
                throw ZipArchiveError(path: path, reason: "\(name) inflates to more than the \(info.size) bytes the archive records", isChecksumMismatch: false)
            }
            let wasEmpty = data.isEmpty
            data.append(contentsOf: chunk[0..<Int(count)])
            if wasEmpty, !prefix.isEmpty, !data.starts(with: prefix.prefix(data.count)) {
                throw ZipArchiveError(path: path, reason: "\(name) does not start with the signature of its format", isChecksumMismatch: false)
            }
        }
        guard UInt64(data.count) == info.size else {
            throw ZipArchiveError(path: path, reason: "\(name) has \(data.count) bytes, the archive records \(info.size)", isChecksumMismatch: false)
        }
        return data
    }

    private func failure() -> ZipArchiveError {
        let error = zip_get_error(handle)
        return ZipArchiveError(path: path, reason: String(cString: zip_error_strerror(error)), isChecksumMismatch: zip_error_code_zip(error) == ZIP_ER_CRC)
    }

    /// What goes into an archive written by ``write(_:to:modificationDate:)``.
    public enum Content {
        /// These bytes.
        case data(Data)
        /// The contents of this file, read when the archive is written.
        case file(URL)
    }

    /// Writes a new archive at `url` (which must not exist) holding `members` in order.
    ///
    /// - Parameters:
    ///   - members: each member's name, contents, and whether to deflate it (Keras stores
    ///     `.keras` members uncompressed).
    ///   - url: the archive to create; an existing file is refused (`ZIP_EXCL`).
    ///   - modificationDate: every member's modification time.
    /// - Throws: ``ZipArchiveError`` naming the archive; a partial archive is removed.
    public static func write(_ members: [(name: String, content: Content, deflate: Bool)], to url: URL, modificationDate: Date) throws(ZipArchiveError) {
        var code: Int32 = 0
        guard let archive = zip_open(url.path, ZIP_CREATE | ZIP_EXCL, &code) else {
            var error = zip_error_t()
            zip_error_init_with_code(&error, code)
            defer { zip_error_fini(&error) }
            throw ZipArchiveError(path: url.path, reason: String(cString: zip_error_strerror(&error)), isChecksumMismatch: false)
        }
        func fail(_ what: String) -> ZipArchiveError {
            let reason = "\(what): \(String(cString: zip_strerror(archive)))"
            zip_discard(archive)
            unlink(url.path)
            return ZipArchiveError(path: url.path, reason: reason, isChecksumMismatch: false)
        }
        for member in members {
            let source: OpaquePointer?
            switch member.content {
            case .data(let data):
                // libzip reads the buffer when the archive is closed and frees it then.
                let buffer = malloc(max(1, data.count))!
                data.copyBytes(to: buffer.assumingMemoryBound(to: UInt8.self), count: data.count)
                source = zip_source_buffer(archive, buffer, UInt64(data.count), 1)
                if source == nil { free(buffer) }
            case .file(let file):
                source = zip_source_file(archive, file.path, 0, -1)
            }
            guard let source else { throw fail("cannot add \(member.name)") }
            let index = zip_file_add(archive, member.name, source, ZIP_FL_ENC_UTF_8)
            guard index >= 0 else {
                zip_source_free(source)
                throw fail("cannot add \(member.name)")
            }
            guard zip_set_file_compression(archive, UInt64(index), member.deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) == 0,
                  zip_file_set_mtime(archive, UInt64(index), time_t(modificationDate.timeIntervalSince1970), 0) == 0 else {
                throw fail("cannot add \(member.name)")
            }
        }
        guard zip_close(archive) == 0 else { throw fail("cannot write the archive") }
    }
}
