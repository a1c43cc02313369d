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
