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
/// redirected standard output to a file). A symbolic link at any destination is never written
/// through: it is replaced by the new file (with `overwrite`), or refused as existing (without),
/// so a link planted at an output's or a manifest's path cannot redirect the write to another
/// file (issue 32). On any failure the temporary file is removed.
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
        try writeGroup([(data, url)], overwrite: overwrite)
    }

    /// Writes a file and the side files that describe it (`x.npy` and `x.npy.files.txt`, an
    /// export and its `.json`) so that they can never be out of step: every file is written and
    /// flushed to a temporary first; then the files already at the destinations move aside (the
    /// first file first), the side files are moved into place, and the first file last. A
    /// reader, or a run killed at any instant, sees the old group, side files without a first
    /// file, or the new group — never a first file without its side files, or with those of
    /// another write.
    ///
    /// - Parameters:
    ///   - files: the first file, then its side files, each with its complete contents. A
    ///     destination that is a stream (`/dev/stdout`) or a FIFO is only allowed as the only
    ///     file of a group.
    ///   - overwrite: replace existing regular files; `false` refuses anything at any of the
    ///     destinations, checked atomically when each file is put in place (a file put in place
    ///     before the refusal is removed again).
    /// - Throws: ``AtomicFileError``; destinations are then as they were.
    public static func writeGroup(_ files: [(data: Data, url: URL)], overwrite: Bool) throws(AtomicFileError) {
        var staged: [Staged] = []
        defer { for file in staged where !file.placed { unlink(file.temporary) } }
        for file in files {
            // No symbolic link is followed: a link planted at `x.npy`, `x.npy.files.txt` or a
            // manifest's path is replaced, never written through.
            guard let stagedFile = try stage(file.data, to: file.url, overwrite: overwrite, alone: files.count == 1) else { return }
            staged.append(stagedFile)
        }
        guard !staged.isEmpty else { return }
        // The first file (a matrix) goes in last and comes out first, so at no instant is it on
        // disk without the side files that describe it (`kill -9` between two renames left a new
        // `x.npy` without its `x.npy.files.txt`, issue 32): a reader or a killed run sees the
        // old group, side files without a first file, or the new group.
        let order = Array(staged.indices.dropFirst()) + [0]
        if overwrite {
            // The old files move aside (renamed, not deleted), the first one first, and come back
            // if a new one cannot be placed: a failed write changes nothing.
            var asides: [(destination: String, aside: String)] = []
            var placed: [String] = []
            func restore() {
                for destination in placed where !asides.contains(where: { $0.destination == destination }) { unlink(destination) }
                for moved in asides.reversed() { rename(moved.aside, moved.destination) }
            }
            for index in [0] + staged.indices.dropFirst() {
                let file = staged[index]
                var info = stat()
                guard lstat(file.destination, &info) == 0 else { continue }
                let aside = file.temporary + "-old"
                guard rename(file.destination, aside) == 0 else {
                    let reason = String(cString: strerror(errno))
                    restore()
                    throw .io(path: file.destination, reason: reason)
                }
                asides.append((file.destination, aside))
            }
            for index in order {
                beforePlacing?(staged[index].destination)
                guard rename(staged[index].temporary, staged[index].destination) == 0 else {
                    let reason = String(cString: strerror(errno))
                    restore()
                    throw .io(path: staged[index].destination, reason: reason)
                }
                staged[index].placed = true
                placed.append(staged[index].destination)
            }
            for moved in asides { unlink(moved.aside) }
        } else {
            for (position, index) in order.enumerated() {
                beforePlacing?(staged[index].destination)
                guard link(staged[index].temporary, staged[index].destination) == 0 else {
                    let failure: AtomicFileError = errno == EEXIST
                        ? .exists(path: staged[index].destination)
                        : .io(path: staged[index].destination, reason: String(cString: strerror(errno)))
                    // What this call linked into place is removed again: nothing half-written stays.
                    for earlier in order[..<position] { unlink(staged[earlier].destination) }
                    throw failure
                }
            }
            for index in staged.indices {
                unlink(staged[index].temporary)
                staged[index].placed = true
            }
        }
    }

    /// Tests observe the destinations between the steps of a group write (as a killed process
    /// would leave them) through this hook, called before each file is moved into place.
    @_spi(Testing) nonisolated(unsafe) public static var beforePlacing: ((String) -> Void)?

    /// A file written to its temporary, ready to be moved to `destination`.
    private struct Staged {
        var temporary: String
        var destination: String
        var placed = false
    }

    /// The prefix of the temporary files written next to `name`: `.<name>.tmp-`, or for a name
    /// so long that the temporary's would pass the 255-byte limit of file names, a hash of it.
    static func temporaryPrefix(for name: String) -> String {
        guard name.utf8.count > 200 else { return ".\(name).tmp-" }
        var hash: UInt64 = 0xcbf29ce484222325  // FNV-1a
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
        return "." + String(hash, radix: 16) + ".tmp-"
    }

    /// Writes `data` next to `url` in a flushed temporary file; or, for a stream, FIFO or device
    /// target (only when `alone`), writes it through and returns nil. A symbolic link at `url`
    /// is replaced itself, never followed.
    private static func stage(_ data: Data, to url: URL, overwrite: Bool, alone: Bool) throws(AtomicFileError) -> Staged? {
        let path = url.path
        var info = stat()
        let exists = lstat(path, &info) == 0
        let isLink = exists && (info.st_mode & S_IFMT) == S_IFLNK
        // /dev/stdout, /dev/fd/N, /proc/self/fd/N: a stream, whatever is behind it (a pipe, a
        // terminal, a file the shell redirected to): written through, never renamed over, and
        // nothing is lost by writing it, so no --overwrite is needed.
        if isStreamPath(path) {
            guard alone else { throw .io(path: path, reason: "a stream cannot be written together with side files") }
            try writeThrough(data, path: path)
            return nil
        }
        if !isLink {
            switch FileKind(path: path) {
            case .fifo, .device, .socket:
                guard alone else { throw .io(path: path, reason: "it is not a regular file, and side files cannot be written beside it") }
                try writeThrough(data, path: path)
                return nil
            case .directory:
                throw .io(path: path, reason: "it is a directory")
            default:
                break
            }
        }
        if exists, !overwrite { throw .exists(path: url.path) }
        let destination = URL(fileURLWithPath: path)
        let folder = destination.deletingLastPathComponent().path
        let prefix = temporaryPrefix(for: destination.lastPathComponent)
        removeStaleTemporaries(in: folder, prefix: prefix)
        var template = Array("\(folder)/\(prefix)\(getpid())-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        let temporary = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        do throws(AtomicFileError) {
            try writeAll(data, fd: fd, path: path)
            guard fsync(fd) == 0 else { throw AtomicFileError.io(path: path, reason: String(cString: strerror(errno))) }
            close(fd)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        // mkstemp makes the file 0600; give it the usual mode for new files.
        let mask = umask(0)
        umask(mask)
        chmod(temporary, 0o666 & ~mask)
        return Staged(temporary: temporary, destination: path)
    }

    /// Whether `path` names a stream of this process rather than a file: `/dev/stdout`,
    /// `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N` (or another process's), `/dev/tty`,
    /// `/dev/null`. Side files (`x.npy.files.txt`) cannot be put next to such a path. Other
    /// paths under `/dev` (`/dev/shm/x.npy`) are ordinary files or devices.
    public static func isStreamPath(_ path: String) -> Bool {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let p = URL(fileURLWithPath: absolute).standardizedFileURL.path
        if ["/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty", "/dev/null"].contains(p) || p.hasPrefix("/dev/fd/") { return true }
        let parts = p.split(separator: "/")
        return parts.count == 4 && parts[0] == "proc" && (parts[1] == "self" || parts[1] == "thread-self" || Int(parts[1]) != nil) && parts[2] == "fd"
    }

    /// Removes what a killed writer left: entries of `folder` named `<prefix><pid>-...` whose
    /// process no longer exists — regular files only, unless `directories` (a staging folder
    /// made by the writer itself), so a user's folder that happens to match is never deleted.
    public static func removeStaleTemporaries(in folder: String, prefix: String, directories: Bool = false) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]), pid > 0 else { continue }
            guard kill(pid, 0) != 0, errno == ESRCH else { continue }
            let path = folder + "/" + name
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            switch info.st_mode & S_IFMT {
            case S_IFREG: unlink(path)
            case S_IFDIR where directories: try? FileManager.default.removeItem(atPath: path)
            default: break
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

    /// Writes into an existing stream, FIFO or device. A FIFO is opened without blocking first:
    /// with no process reading it, that is an error, not a wait forever.
    private static func writeThrough(_ data: Data, path: String) throws(AtomicFileError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0, errno == ENXIO { throw .io(path: path, reason: "it is a FIFO and no process is reading from it") }
        guard fd >= 0 else { throw .io(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        // Blocking writes from here (a pipe that is full waits for its reader).
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        try writeAll(data, fd: fd, path: path)
    }
}
