import Foundation

/// What a path names, from `stat(2)` (symbolic links followed): reading a FIFO blocks forever,
/// a device such as `/dev/zero` never ends, so inputs are checked before they are opened.
public enum FileKind: Sendable, Hashable, CustomStringConvertible {
    /// Nothing there (or a dangling link).
    case missing
    /// A regular file of this many bytes.
    case regular(bytes: Int64)
    /// A directory.
    case directory
    /// A FIFO (named pipe).
    case fifo
    /// A character or block device.
    case device
    /// A socket.
    case socket
    /// Something else.
    case other

    /// The kind of the file at `path`.
    public init(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { self = .missing; return }
        switch info.st_mode & S_IFMT {
        case S_IFREG: self = .regular(bytes: Int64(info.st_size))
        case S_IFDIR: self = .directory
        case S_IFIFO: self = .fifo
        case S_IFCHR, S_IFBLK: self = .device
        case S_IFSOCK: self = .socket
        default: self = .other
        }
    }

    /// Why `path` cannot be reached when something is there but `stat` fails for another reason
    /// than its absence: `a loop of symbolic links`, `permission denied` (on a directory on the
    /// way), ...; nil when the path is reachable or simply does not exist (`ENOENT`, `ENOTDIR`).
    public static func unreachableReason(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) != 0 else { return nil }
        let code = errno
        switch code {
        case ENOENT, ENOTDIR: return nil
        case ELOOP: return "a loop of symbolic links (too many levels to follow)"
        case EACCES: return "permission denied on a directory on the way"
        case ENAMETOOLONG: return "the path is too long"
        default: return String(cString: strerror(code))
        }
    }

    /// `it is a directory`, `it is a FIFO (named pipe), not a regular file`, ...
    public var description: String {
        switch self {
        case .missing: "no such file"
        case .regular(let bytes): "a regular file of \(bytes) bytes"
        case .directory: "it is a directory"
        case .fifo: "it is a FIFO (named pipe), not a regular file"
        case .device: "it is a device, not a regular file"
        case .socket: "it is a socket, not a regular file"
        case .other: "it is not a regular file"
        }
    }
}

/// What a model file's first bytes say it is: the one check every opener uses (weights,
/// model configs, `ModelFile` in MobileNetTransfer), so they cannot disagree.
public enum ModelContainer: Sendable, Equatable {
    /// An HDF5 file (`\x89HDF\r\n\x1a\n`): legacy `.h5`, whole-model `.h5`, Keras 3 `.weights.h5`.
    case hdf5
    /// A ZIP archive (`PK\x03\x04`): a Keras 3 `.keras` file.
    case zip
    /// A TensorFlow Lite flatbuffer: the file identifier `TFL3` at bytes 4...7.
    case tflite
    /// Text whose first non-blank character (after an optional UTF-8 byte-order mark) is `{`.
    case json
    /// Anything else: the first bytes, for the message.
    case unknown(head: Data)

    /// The signature of an HDF5 file.
    public static let hdf5Signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
    /// The signature of a ZIP archive's first local header.
    public static let zipSignature: [UInt8] = [0x50, 0x4B, 0x03, 0x04]

    /// Reads the first bytes of the file at `url`, which must be a regular file (a FIFO or a
    /// device would block or never end).
    ///
    /// - Throws: ``WeightFileError/notFound(path:)``, ``WeightFileError/unreadable(path:reason:)``
    ///   for a directory, a special file or a read error, ``WeightFileError/empty(path:)``.
    public init(contentsOf url: URL) throws(WeightFileError) {
        let path = url.path
        switch FileKind(path: path) {
        case .missing: throw .notFound(path: path)
        case .regular: break
        case let other: throw .unreadable(path: path, reason: other.description)
        }
        let head: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            head = try handle.read(upToCount: 64) ?? Data()
        } catch {
            throw .unreadable(path: path, reason: error.localizedDescription)
        }
        if head.isEmpty { throw .empty(path: path) }
        if head.starts(with: Self.hdf5Signature) { self = .hdf5; return }
        if head.starts(with: Self.zipSignature) { self = .zip; return }
        if head.count >= 8, head.dropFirst(4).prefix(4).elementsEqual("TFL3".utf8) { self = .tflite; return }
        let body = head.starts(with: [0xEF, 0xBB, 0xBF]) ? head.dropFirst(3) : head[...]
        self = body.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{") ? .json : .unknown(head: head)
    }
}
