import Foundation

/// A file that could not be written; the destination is left as it was.
public enum AtomicFileError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// Something (a file, a directory, a link, even a dangling one) is at the destination and
    /// replacing was not allowed; checked at the moment of the rename, not before the work.
    case exists(path: String)
    /// The file system refused (permissions, a full disk, a missing folder).
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case .exists(let path): "\(path) already exists; pass --overwrite to replace it"
        case .io(let path, let reason): "\(path): cannot write (\(reason))"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// Writes files so that readers never see a partial file and nothing the user has is lost: the
/// data goes to a temporary file in the destination's folder, flushed to disk, then moved into
/// place in one step — `rename(2)` when replacing is allowed, a hard link (which fails if
/// anything appeared at the destination meanwhile) when it is not. A destination that is not a
/// regular file — a FIFO, `/dev/stdout`, `/dev/null` — is written through, never replaced by a
/// regular file; so is a path under `/dev` or `/proc` (`-o /dev/stdout` when the shell
/// redirected standard output to a file). A symbolic link is kept and its target written. On any
/// failure the temporary file is removed.
public enum AtomicFile {
    /// Writes `data` to `url`.
    ///
    /// - Parameters:
    ///   - data: the complete contents.
    ///   - url: the destination.
    ///   - overwrite: replace an existing regular file (default); `false` refuses anything at
    ///     the destination, checked atomically when the file is put in place.
    /// - Throws: ``AtomicFileError``; the destination is then untouched.
    public static func write(_ data: Data, to url: URL, overwrite: Bool = true) throws(AtomicFileError) {
        var path = url.path
        var info = stat()
        let exists = lstat(path, &info) == 0
        if exists, !overwrite { throw .exists(path: path) }
        // /dev/stdout, /dev/fd/N, /proc/self/fd/N: a stream, whatever is behind it (a pipe, a
        // terminal, a file the shell redirected to): written through, never renamed over.
        if isStreamPath(path) {
            try writeThrough(data, path: path)
            return
        }
        // A symbolic link is kept: its target is what gets written (or replaced).
        if exists, (info.st_mode & S_IFMT) == S_IFLNK, let resolved = realpath(path, nil) {
            path = String(cString: resolved)
            free(resolved)
        }
        let url = URL(fileURLWithPath: path)
        switch FileKind(path: path) {
        case .fifo, .device, .socket:
            guard overwrite else { throw .exists(path: path) }
            try writeThrough(data, path: path)
            return
        case .directory:
            throw .io(path: path, reason: "it is a directory")
        default:
            break
        }
        let folder = url.deletingLastPathComponent().path
        let prefix = ".\(url.lastPathComponent).tmp-"
        removeStaleTemporaries(in: folder, prefix: prefix)
        var template = Array("\(folder)/\(prefix)\(getpid())-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        let temporary = String(cString: template)
        var moved = false
        defer { if !moved { unlink(temporary) } }
        do throws(AtomicFileError) {
            try writeAll(data, fd: fd, path: path)
            guard fsync(fd) == 0 else { throw AtomicFileError.io(path: path, reason: String(cString: strerror(errno))) }
            close(fd)
        } catch {
            close(fd)
            throw error
        }
        // mkstemp makes the file 0600; give it the usual mode for new files.
        let mask = umask(0)
        umask(mask)
        chmod(temporary, 0o666 & ~mask)
        if overwrite {
            guard rename(temporary, path) == 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        } else {
            guard link(temporary, path) == 0 else {
                if errno == EEXIST { throw .exists(path: path) }
                throw .io(path: path, reason: String(cString: strerror(errno)))
            }
        }
        moved = overwrite
        if !overwrite { unlink(temporary); moved = true }
    }

    /// Whether `path` names a stream of this process rather than a file: `/dev/...`, `/proc/...`.
    /// Side files (`x.npy.files.txt`) cannot be put next to such a path.
    public static func isStreamPath(_ path: String) -> Bool {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let standardized = URL(fileURLWithPath: absolute).standardizedFileURL.path
        return standardized.hasPrefix("/dev/") || standardized.hasPrefix("/proc/")
    }

    /// Removes what a killed writer left: entries of `folder` named `<prefix><pid>-...` whose
    /// process no longer exists (files, or folders with their contents).
    public static func removeStaleTemporaries(in folder: String, prefix: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]), pid > 0 else { continue }
            if kill(pid, 0) != 0, errno == ESRCH {
                try? FileManager.default.removeItem(atPath: folder + "/" + name)
            }
        }
    }

    private static func writeAll(_ data: Data, fd: Int32, path: String) throws(AtomicFileError) {
        var failure: AtomicFileError?
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = .io(path: path, reason: String(cString: strerror(errno)))
                    return
                }
                offset += n
            }
        }
        if let failure { throw failure }
    }

    private static func writeThrough(_ data: Data, path: String) throws(AtomicFileError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        try writeAll(data, fd: fd, path: path)
    }
}
