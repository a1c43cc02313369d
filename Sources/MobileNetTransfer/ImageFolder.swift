import Foundation
import MobileNetPipeline
import MobileNetIO

/// Errors about a training or evaluation data folder. Each names the folder or file.
public enum DatasetError: Error, Equatable, CustomStringConvertible {
    /// The folder does not exist or is not a directory.
    case notADirectory(path: String)
    /// The folder has fewer than two class subfolders (a classifier needs at least two classes).
    case tooFewClasses(path: String, found: [String])
    /// A class folder holds no image files.
    case emptyClass(path: String, className: String)
    /// Validation folder classes differ from the training classes.
    case classMismatch(path: String, expected: [String], found: [String])
    /// A validation fraction outside 0..<1.
    case invalidValidationSplit(Double)
    /// No validation images: the split left none and no validation folder was given.
    case noValidationImages(path: String)
    /// A class folder whose name is not valid UTF-8, shown with its bytes escaped
    /// (``/MobileNetPipeline/ImageFileProblem/escaped(_:)``, e.g. `DIR/\xe9t\xe9`): it cannot be
    /// a class name, and dropping it silently would train on fewer classes.
    case undecodableClassName(path: String)

    /// A one-line message naming the folder.
    public var description: String {
        switch self {
        case .notADirectory(let path):
            return FileManager.default.fileExists(atPath: path) ? "\(path): not a directory (give a folder with one sub-folder of images per class)" : "\(path): no such directory"
        case .tooFewClasses(let path, let found):
            return "\(path): found \(found.count) class folder(s) \(found); a classifier needs at least 2 (one subfolder of images per class)"
        case .emptyClass(let path, let name): return "\(path): class folder '\(name)' contains no images"
        case .classMismatch(let path, let expected, let found):
            // A 1000-class model's names would fill the screen: the differences, and counts.
            func list(_ names: [String]) -> String { names.count <= 12 ? "\(names)" : "\(Array(names.prefix(10))) and \(names.count - 10) more" }
            let missing = expected.filter { !found.contains($0) }, extra = found.filter { !expected.contains($0) }
            return "\(path): validation classes \(list(found)) differ from the training classes \(list(expected))"
                + (expected.count > 12 || found.count > 12 ? " (\(extra.count) not among the training classes: \(list(extra)); \(missing.count) training classes missing)" : "")
        case .invalidValidationSplit(let value): return "the validation split must be in 0..<1, got \(value)"
        case .undecodableClassName(let path):
            return "\(path): a class folder whose name is not valid UTF-8 (shown with its bytes escaped); rename it to use it"
        case .noValidationImages(let path): return "\(path): no validation images (every class is too small to hold one out); give --validation-dir"
        }
    }
}

/// One labelled image file.
public struct LabelledImage: Sendable, Hashable, Codable {
    /// The file.
    public var url: URL
    /// Index into the data set's class names.
    public var label: Int

    /// Creates a labelled image.
    public init(url: URL, label: Int) {
        self.url = url
        self.label = label
    }
}

/// A folder of images with one subfolder per class, read like Keras
/// `image_dataset_from_directory(labels="inferred")`: class names are the subfolder names sorted
/// (byte order, like Python's `sorted`), images are found recursively inside each class folder
/// and sorted by path; hidden files are ignored; other files that are not images (by extension
/// or by their first bytes) are skipped with a warning.
public struct ImageFolder: Sendable {
    /// The folder.
    public var root: URL
    /// Class names, sorted.
    public var classNames: [String]
    /// All images with their labels, grouped by class in class order, sorted by path within a class.
    public var images: [LabelledImage]
    /// Warnings (skipped non-image files, classes with a single image).
    public var warnings: [String]

    /// File extensions treated as images (Keras: bmp, gif, jpeg, jpg, png).
    public static let imageExtensions: Set<String> = imageFileExtensions

    /// Reads the folder structure (no image is decoded here).
    ///
    /// - Parameters:
    ///   - root: the folder with one subfolder of images per class (hidden entries ignored).
    ///   - expected: when given (for a validation or evaluation folder), the folder's classes
    ///     must be exactly these, in sorted order.
    /// - Throws: ``DatasetError`` naming the folder: not a directory, a class folder whose name is
    ///   not valid UTF-8, fewer than two classes, an empty class folder, classes different from `expected`.
    public init(root: URL, classNames expected: [String]? = nil) throws(DatasetError) {
        self.root = root
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: root.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .notADirectory(path: root.path)
        }
        if let bytes = Self.undecodableSubfolder(of: root) {
            throw .undecodableClassName(path: root.appendingPathComponent(ImageFileProblem.escaped(bytes)).relativePath)
        }
        let entries = (try? manager.contentsOfDirectory(atPath: root.path)) ?? []
        let classes = entries.filter { name in
            var dir: ObjCBool = false
            return !name.hasPrefix(".") && manager.fileExists(atPath: root.appendingPathComponent(name).path, isDirectory: &dir) && dir.boolValue
        }.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        if let expected, classes != expected {
            throw .classMismatch(path: root.path, expected: expected, found: classes)
        }
        guard classes.count >= 2 else { throw .tooFewClasses(path: root.path, found: classes) }
        classNames = classes
        var images: [LabelledImage] = []
        var warnings: [String] = []
        for (label, name) in classes.enumerated() {
            let folder = root.appendingPathComponent(name, isDirectory: true)
            var files: [URL] = []
            let enumerator = manager.enumerator(at: folder, includingPropertiesForKeys: [.isRegularFileKey], options: [.skipsHiddenFiles])
            while let url = enumerator?.nextObject() as? URL {
                // Regular files, links to regular files followed (as `classify` and `index add`
                // read them; a class folder of links into a photo library is common).
                guard case .regular = FileKind(path: url.path) else { continue }
                if Self.looksLikeImage(url) {
                    files.append(url)
                } else {
                    warnings.append("skipping \(url.path): not an image")
                }
            }
            guard !files.isEmpty else { throw .emptyClass(path: folder.path, className: name) }
            if files.count == 1 {
                warnings.append("class '\(name)' has a single image (\(files[0].lastPathComponent)); it can only be used for training")
            }
            images += files.sorted { $0.path < $1.path }.map { LabelledImage(url: $0, label: label) }
        }
        self.images = images
        self.warnings = warnings
    }

    /// The name (bytes) of the first non-hidden sub-folder of `root`, in byte order, whose name is
    /// not valid UTF-8 (FileManager leaves such entries out), listed with `readdir(3)`.
    static func undecodableSubfolder(of root: URL) -> [UInt8]? {
        guard let handle = opendir(root.path) else { return nil }
        defer { closedir(handle) }
        var found: [[UInt8]] = []
        while let entry = readdir(handle) {
            let bytes = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            guard bytes.first != UInt8(ascii: "."), String(validating: bytes, as: UTF8.self) == nil else { continue }
            var info = stat()
            let path = Array(root.path.utf8) + [UInt8(ascii: "/")] + bytes + [0]
            let isDirectory = path.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { stat($0.baseAddress!, &info) == 0 }
            } && (info.st_mode & S_IFMT) == S_IFDIR
            if isDirectory { found.append(bytes) }
        }
        return found.min { $0.lexicographicallyPrecedes($1) }
    }

    /// Whether a file should be treated as an image: an image extension, or bytes that start like
    /// a JPEG or PNG. A file with an image extension that fails to decode is reported later, not skipped.
    public static func looksLikeImage(_ url: URL) -> Bool {
        ImageFileList.looksLikeImage(url, unreadable: false)
    }

    /// Number of images per class, in class order.
    public var classCounts: [Int] {
        var counts = [Int](repeating: 0, count: classNames.count)
        for image in images { counts[image.label] += 1 }
        return counts
    }

    /// A seeded, stratified split: within each class, the images (sorted by path) are shuffled
    /// with `seed` and `round(fraction × n)` of them are held out, at least one when the class has
    /// two or more images and the fraction is positive, and never the last one. So every class
    /// is represented in both parts and the held-out images are spread over the whole class
    /// (unlike Keras's `validation_split`, which cuts one contiguous chunk of the shuffled list).
    ///
    /// - Returns: training and validation images, each in class order then path order.
    /// - Throws: ``DatasetError/invalidValidationSplit(_:)``, ``DatasetError/noValidationImages(path:)``.
    public func split(validationFraction fraction: Double, seed: UInt64) throws(DatasetError) -> (train: [LabelledImage], validation: [LabelledImage]) {
        guard fraction >= 0, fraction < 1 else { throw .invalidValidationSplit(fraction) }
        var train: [LabelledImage] = []
        var validation: [LabelledImage] = []
        for label in classNames.indices {
            let members = images.filter { $0.label == label }
            var order = Array(members.indices)
            var random = SeededRandom(seed: seed &+ UInt64(label) &* 0x9E37_79B9)
            random.shuffle(&order)
            var held = Int((fraction * Double(members.count)).rounded())
            if fraction > 0, members.count >= 2 { held = max(held, 1) }
            held = min(held, members.count - 1)
            let heldOut = Set(order.prefix(held))
            for (index, image) in members.enumerated() {
                if heldOut.contains(index) { validation.append(image) } else { train.append(image) }
            }
        }
        if fraction > 0, validation.isEmpty { throw .noValidationImages(path: root.path) }
        return (train, validation)
    }
}

extension DatasetError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
