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
    }
    /// The path concerned.
    public var path: String
    /// What kind of problem.
    public var kind: Kind
    /// Whether it is an error (a missing path, a directory of sub-folders only) rather than a
    /// warning (a skipped file).
    public var isError: Bool { kind != .notAnImage }

    public var description: String {
        switch kind {
        case .missing: "\(path): no such file or directory"
        case .notAnImage: "skipping \(path): not an image"
        case .onlySubdirectories(let count):
            "\(path) holds no image files but \(count) sub-folder\(count == 1 ? "" : "s") (such as class folders); descend into them with --recursive"
        }
    }
}

/// The image files named by a list of paths: files as given, directories expanded to the regular
/// files they contain (sorted by path; recursively when asked; named relative to the argument
/// as spelled), hidden files skipped, non-image files skipped with a warning (a file counts as an image when its extension is one of
/// ``imageFileExtensions`` or its first bytes are an image signature).
public struct ImageFileList: Sendable {
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
            if recursive {
                // Paths keep the spelling of the argument (relative stays relative), as without --recursive.
                let rootPath = root.standardizedFileURL.path
                let enumerator = manager.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey], options: [.skipsHiddenFiles])
                while let url = enumerator?.nextObject() as? URL {
                    guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true else { continue }
                    let path = url.standardizedFileURL.path
                    if path.hasPrefix(rootPath + "/") {
                        found.append(root.appendingPathComponent(String(path.dropFirst(rootPath.count + 1))))
                    } else {
                        found.append(url)
                    }
                }
            } else {
                let names = (try? manager.contentsOfDirectory(atPath: root.path)) ?? []
                for name in names where !name.hasPrefix(".") {
                    let url = root.appendingPathComponent(name)
                    var childIsDirectory: ObjCBool = false
                    guard manager.fileExists(atPath: url.path, isDirectory: &childIsDirectory) else { continue }
                    if childIsDirectory.boolValue { subdirectories += 1 } else { found.append(url) }
                }
            }
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

    /// Whether a file found in a directory should be processed: an image extension, or bytes
    /// that start like an image (a PNG named `.JPEG`, a JPEG without extension).
    public static func looksLikeImage(_ url: URL) -> Bool {
        if imageFileExtensions.contains(url.pathExtension.lowercased()) { return true }
        guard let handle = try? FileHandle(forReadingFrom: url) else { return true }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 16)) ?? Data()
        return ImageFormat.detect(head) != nil
    }
}
