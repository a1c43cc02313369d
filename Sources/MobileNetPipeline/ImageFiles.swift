import Foundation
import MobileNetIO

/// Image file extensions: a file found in a directory with one of them is treated as an image
/// even when it fails to decode (so a broken photo is reported, not silently skipped).
public let imageFileExtensions: Set<String> = ["jpg", "jpeg", "jpe", "png", "gif", "bmp", "webp", "tif", "tiff"]

/// Something noticed while expanding paths into image files.
public struct ImageFileProblem: Sendable, Hashable, CustomStringConvertible {
    /// What kind of problem.
    public enum Kind: Sendable, Hashable {
        /// The path does not exist (an error: the run should exit non-zero).
        case missing
        /// A file in a directory that is neither named nor shaped like an image (skipped, a warning).
        case notAnImage
        /// A directory without image files but with sub-directories (a hint to descend).
        case onlySubdirectories(count: Int)
        /// A directory entry whose name is not valid UTF-8 (an error: it cannot be processed).
        case undecodableName
        /// A line of a path list (`--files-from`) that names a directory: a list names files
        /// (an error: listing a folder would make one line stand for many files across shards).
        case listedDirectory
        /// A line of a path list that is not a usable path (an error); `reason` says why, with
        /// the list's name and the line number (``PathListError/badLine(list:line:problem:)``).
        case badListLine(reason: String)
        /// The path exists but cannot be reached (an error): a loop of symbolic links, a
        /// directory on the way without search permission; `reason` says which
        /// (``/MobileNetIO/FileKind/unreachableReason(_:)``).
        case unreachable(reason: String)
    }
    /// The path concerned.
    public var path: String
    /// What kind of problem.
    public var kind: Kind
    /// Whether it is an error (a missing path, a directory of sub-folders only) rather than a
    /// warning (a skipped file).
    public var isError: Bool { kind != .notAnImage }

    /// A problem with `path`.
    public init(path: String, kind: Kind) {
        self.path = path
        self.kind = kind
    }

    /// A file name's bytes as text: printable ASCII as is, every other byte as `\xNN` (how
    /// ``Kind/undecodableName`` problems show a name that is not valid UTF-8).
    public static func escaped(_ bytes: [UInt8]) -> String {
        bytes.map { $0 < 0x80 && $0 >= 0x20 ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }.joined()
    }

    public var description: String {
        switch kind {
        case .missing: "\(path): no such file or directory"
        case .unreachable(let reason): "\(path): \(reason)"
        case .notAnImage: "skipping \(path): not an image"
        case .undecodableName:
            "\(path): a file name that is not valid UTF-8 (shown with its bytes escaped); rename it to process it"
        case .listedDirectory:
            "\(path): a directory in the file list; a list names image files, one per line"
        case .badListLine(let reason):
            reason
        case .onlySubdirectories(let count):
            "\(path) holds \(count) sub-folder\(count == 1 ? "" : "s") (such as class folders) but no image files of its own"
        }
    }
}

/// The image files named by a list of paths: files as given, directories expanded to the regular
/// files they contain (sorted by path; recursively when asked; named relative to the argument
/// as spelled), hidden files skipped, non-image files skipped with a warning (a file counts as an image when its extension is one of
/// ``imageFileExtensions`` or its first bytes are an image signature).
public struct ImageFileList: Sendable {
    /// At most `count` of `files`, spread evenly over the list and in its order (file `i *
    /// files.count / count` for `i` in `0..<count`), so that a sorted folder of class subfolders
    /// gives every class its share: a calibration or sample set that does not depend on chance.
    ///
    /// - Parameters:
    ///   - files: the files, in their order.
    ///   - count: how many to keep (all when `count >= files.count`; none when `count <= 0`).
    public static func evenlySpaced(_ files: [URL], count: Int) -> [URL] {
        guard count < files.count else { return files }
        guard count > 0 else { return [] }
        return (0..<count).map { files[$0 * files.count / count] }
    }

    /// The files, in argument order, each directory's files sorted by path.
    public var files: [URL]
    /// Missing paths (errors), skipped files and directories with only sub-folders (warnings).
    public var problems: [ImageFileProblem]

    /// Expands `paths`.
    public init(_ paths: [String], recursive: Bool) {
        files = []
        problems = []
        let manager = FileManager.default
        for argument in paths {
            var isDirectory: ObjCBool = false
            guard manager.fileExists(atPath: argument, isDirectory: &isDirectory) else {
                problems.append(ImageFileProblem(path: argument, kind: .missing))
                continue
            }
            guard isDirectory.boolValue else {
                files.append(URL(fileURLWithPath: argument))
                continue
            }
            let root = URL(fileURLWithPath: argument, isDirectory: true)
            var found: [URL] = []
            var subdirectories = 0
            Self.walk(root, recursive: recursive, found: &found, subdirectories: &subdirectories, problems: &problems)
            var images = 0
            for url in found.sorted(by: { $0.path < $1.path }) {
                if Self.looksLikeImage(url) {
                    files.append(url)
                    images += 1
                } else {
                    problems.append(ImageFileProblem(path: url.relativePath, kind: .notAnImage))
                }
            }
            if images == 0, subdirectories > 0 {
                problems.append(ImageFileProblem(path: argument, kind: .onlySubdirectories(count: subdirectories)))
            }
        }
    }

    /// The image files of a path list (`--files-from`), keeping the lines of `shard`: each line
    /// is one file, taken as written (relative paths from the current directory), in list
    /// order. A missing path, a directory and a bad line (too long, not UTF-8, NUL) are
    /// problems (errors); a listed file is never skipped for its name or content, so a broken
    /// photo is reported by the network pipeline.
    ///
    /// The whole shard's list is held in memory (one URL per path); for unbounded lists, read
    /// a ``PathListReader`` line by line instead.
    ///
    /// - Throws: ``PathListError/unreadable(list:message:)`` when the list cannot be read.
    public init(listedIn reader: PathListReader, shard: Shard = .all) throws(PathListError) {
        files = []
        problems = []
        while let line = try reader.next() {
            guard shard.contains(hash: line.hash) else { continue }
            switch line.path {
            case .failure(let error):
                problems.append(ImageFileProblem(path: reader.name, kind: .badListLine(reason: error.description)))
            case .success(let path):
                switch FileKind(path: path) {
                case .missing: problems.append(ImageFileProblem(path: path, kind: FileKind.unreachableReason(path).map { .unreachable(reason: $0) } ?? .missing))
                case .directory: problems.append(ImageFileProblem(path: path, kind: .listedDirectory))
                default: files.append(URL(fileURLWithPath: path))
                }
            }
        }
    }

    /// Lists `directory` with `readdir(3)` (so names that are not UTF-8 are reported, not lost):
    /// regular files (links to files followed) into `found`, hidden entries skipped; with
    /// `recursive`, real sub-directories are descended into (links to directories are not, so
    /// a link loop cannot recurse), otherwise counted in `subdirectories`.
    static func walk(_ directory: URL, recursive: Bool, found: inout [URL], subdirectories: inout Int, problems: inout [ImageFileProblem]) {
        guard let handle = opendir(directory.path) else { return }
        defer { closedir(handle) }
        var children: [String] = []
        while let entry = readdir(handle) {
            let bytes = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            guard let name = String(validating: bytes, as: UTF8.self) else {
                problems.append(ImageFileProblem(path: directory.appendingPathComponent(ImageFileProblem.escaped(bytes)).relativePath, kind: .undecodableName))
                continue
            }
            if name.hasPrefix(".") { continue }
            children.append(name)
        }
        for name in children.sorted() {
            let url = directory.appendingPathComponent(name)
            switch FileKind(path: url.path) {
            case .regular:
                found.append(url)
            case .directory:
                var info = stat()
                let isLink = lstat(url.path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK
                if recursive {
                    if !isLink { walk(url, recursive: true, found: &found, subdirectories: &subdirectories, problems: &problems) }
                } else {
                    subdirectories += 1
                }
            default:
                continue
            }
        }
    }

    /// Whether a file found in a directory should be processed: an image extension, or bytes
    /// that start like an image (a PNG named `.JPEG`, a JPEG without extension).
    ///
    /// - Parameters:
    ///   - url: the file.
    ///   - unreadable: the answer for a file that cannot be opened (true: process it, so
    ///     its error is reported; false: skip it).
    public static func looksLikeImage(_ url: URL, unreadable: Bool = true) -> Bool {
        if imageFileExtensions.contains(url.pathExtension.lowercased()) { return true }
        guard let handle = try? FileHandle(forReadingFrom: url) else { return unreadable }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 16)) ?? Data()
        return ImageFormat.detect(head) != nil
    }
}
