import Foundation
import MobileNetStore

/// Why shard indexes cannot be merged.
public enum IndexMergeError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// Two inputs (or an input and the destination) were made by different backbones.
    case mixedBackbones(first: String, firstBackbone: String, other: String, otherBackbone: String)
    /// Two inputs (or an input and the destination) were made with different preprocessing,
    /// or one input holds several.
    case mixedPreprocessing(first: String, firstPreprocessing: String, other: String, otherPreprocessing: String)
    /// An input is the destination itself.
    case inputIsDestination(path: String)
    /// A stored embedding that cannot be searched: NaN or infinite values, or another width
    /// than the other rows (a damaged or foreign shard). Nothing is merged.
    case invalidRow(path: String, content: String, problem: String)
    /// The merged index could not be renamed over the destination (it is left as it was).
    case cannotReplace(path: String, reason: String)

    public var description: String {
        switch self {
        case .mixedBackbones(let first, let a, let other, let b):
            "cannot merge: \(first) was embedded with backbone \(a) but \(other) with \(b); embeddings of different backbones are not comparable"
        case .mixedPreprocessing(let first, let a, let other, let b):
            "cannot merge: \(first) was embedded with preprocessing \(a) but \(other) with \(b); use the same image options in every shard"
        case .inputIsDestination(let path):
            "cannot merge \(path) into itself"
        case .invalidRow(let path, let content, let problem):
            "cannot merge \(path): the embedding of content \(content) \(problem); nothing was merged"
        case .cannotReplace(let path, let reason):
            "cannot put the merged index in place at \(path) (\(reason)); it is unchanged"
        }
    }

    public var errorDescription: String? { description }
}

/// What ``ImageIndex/merge(_:)`` did.
public struct IndexMergeResult: Sendable, Equatable {
    /// Distinct files the inputs record (a path in several inputs counts once: the last input's record is kept).
    public var files: Int
    /// Embedding rows copied (equal keys replace each other: the same content embedded by two
    /// shards with one backbone and preprocessing is stored once).
    public var embeddings: Int
    /// The backbone of the merged index (nil when every input was empty).
    public var backbone: String?
    /// The preprocessing of the merged index (nil when every input was empty).
    public var preprocessing: String?
}

extension ImageIndex {
    /// Joins shard indexes (each made by `mobilenet index add --shard I/N`) into this index:
    /// every file record and embedding of every input, checked first so that nothing is
    /// written unless all inputs and this index hold exactly one backbone and one
    /// preprocessing, the same everywhere (empty inputs are allowed). Inputs are opened
    /// read-only and copied in chunks (bounded memory). Each input's rows are written in one
    /// transaction per chunk; a merge that fails half-way leaves a valid index that a re-run
    /// completes (rows are keyed, so copying twice changes nothing).
    ///
    /// - Throws: ``IndexMergeError`` for mixed backbones or preprocessing, or an input that is
    ///   this index; ``ImageIndexError/ambiguousBackbone(path:backbones:)``; store errors
    ///   naming the file.
    public func merge(_ inputs: [URL]) throws -> IndexMergeResult {
        try merge(inputs, destination: store.url)
    }

    /// Merges shard indexes into the index file at `destination` as one step: the existing index
    /// (if any) is copied to a temporary database beside it, the inputs are merged into the copy
    /// (every row checked: finite values, one width), and the copy is renamed over `destination`
    /// only when all of it worked. A failure, or a kill at any instant, leaves `destination` as
    /// it was (a symbolic link there is replaced, never written through).
    ///
    /// - Throws: as ``merge(_:)``, and ``IndexMergeError/invalidRow(path:content:problem:)``;
    ///   ``IndexMergeError/cannotReplace(path:reason:)`` when the copy cannot be put in place.
    public static func merge(_ inputs: [URL], into destination: URL) throws -> IndexMergeResult {
        let target = destination.standardizedFileURL
        for url in inputs where url.standardizedFileURL.path == target.path { throw IndexMergeError.inputIsDestination(path: url.path) }
        let folder = target.deletingLastPathComponent()
        let temporary = folder.appendingPathComponent(".\(target.lastPathComponent).merge-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { for suffix in ["", "-wal", "-shm", "-journal"] { unlink(temporary.path + suffix) } }
        var info = stat()
        if lstat(target.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
            try ImageIndex(url: target, readOnly: true).store.copy(to: temporary)
        }
        let result: IndexMergeResult
        do {
            // Closed (and back in one-file journal mode) when this scope ends, before the rename.
            let index = try ImageIndex(url: temporary)
            result = try index.merge(inputs, destination: target)
        }
        guard rename(temporary.path, target.path) == 0 else {
            throw IndexMergeError.cannotReplace(path: target.path, reason: String(cString: strerror(errno)))
        }
        return result
    }

    func merge(_ inputs: [URL], destination target: URL) throws -> IndexMergeResult {
        let destination = target.standardizedFileURL.path
        var sources: [(url: URL, index: ImageIndex)] = []
        for url in inputs {
            if url.standardizedFileURL.path == destination { throw IndexMergeError.inputIsDestination(path: url.path) }
            sources.append((url, try ImageIndex(url: url, readOnly: true)))
        }
        // The reference identities: this index's, else the first non-empty input's.
        var reference: (name: String, backbone: BackboneIdentity?, preprocessing: String?) = (store.url.path, try backbone(), nil)
        let own = try store.preprocessingKeys()
        if own.count > 1 {
            throw IndexMergeError.mixedPreprocessing(first: store.url.path, firstPreprocessing: own[0], other: store.url.path, otherPreprocessing: own[1])
        }
        reference.preprocessing = own.first
        var backboneOwner = store.url.path
        var preprocessingOwner = store.url.path
        for (url, index) in sources {
            let name = url.path
            let keys = try index.store.preprocessingKeys()
            if keys.count > 1 {
                throw IndexMergeError.mixedPreprocessing(first: name, firstPreprocessing: keys[0], other: name, otherPreprocessing: keys[1])
            }
            if let backbone = try index.backbone() {
                if let known = reference.backbone, known != backbone {
                    throw IndexMergeError.mixedBackbones(first: backboneOwner, firstBackbone: known.key, other: name, otherBackbone: backbone.key)
                }
                if reference.backbone == nil { backboneOwner = name }
                reference.backbone = backbone
            }
            if let key = keys.first {
                if let known = reference.preprocessing, known != key {
                    throw IndexMergeError.mixedPreprocessing(first: preprocessingOwner, firstPreprocessing: known, other: name, otherPreprocessing: key)
                }
                if reference.preprocessing == nil { preprocessingOwner = name }
                reference.preprocessing = key
            }
        }
        var result = IndexMergeResult(files: 0, embeddings: 0, backbone: reference.backbone?.key, preprocessing: reference.preprocessing)
        if let backbone = reference.backbone { try store.register(backbone) }
        // Every row must be searchable: finite, and of the one width of the index.
        var width = try store.dimensions().first
        var paths = Set<String>()
        for (url, index) in sources {
            try index.store.forEachEmbeddingChunk { records in
                for record in records {
                    if let bad = record.vector.firstIndex(where: { !$0.isFinite }) {
                        throw IndexMergeError.invalidRow(path: url.path, content: record.contentSHA256, problem: "has value \(record.vector[bad]) at \(bad)")
                    }
                    if let width, record.vector.count != width {
                        throw IndexMergeError.invalidRow(path: url.path, content: record.contentSHA256, problem: "has \(record.vector.count) values where the index has \(width)")
                    }
                    width = width ?? record.vector.count
                }
                try store.insert(records)
                result.embeddings += records.count
            }
            let files = try index.store.allFiles()
            try store.recordFiles(files)
            paths.formUnion(files.map(\.path))
        }
        result.files = paths.count
        return result
    }
}
