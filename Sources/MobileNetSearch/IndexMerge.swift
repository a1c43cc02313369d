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

    public var description: String {
        switch self {
        case .mixedBackbones(let first, let a, let other, let b):
            "cannot merge: \(first) was embedded with backbone \(a) but \(other) with \(b); embeddings of different backbones are not comparable"
        case .mixedPreprocessing(let first, let a, let other, let b):
            "cannot merge: \(first) was embedded with preprocessing \(a) but \(other) with \(b); use the same image options in every shard"
        case .inputIsDestination(let path):
            "cannot merge \(path) into itself"
        }
    }

    public var errorDescription: String? { description }
}

/// What ``ImageIndex/merge(_:)`` did.
public struct IndexMergeResult: Sendable, Equatable {
    /// Files recorded in the destination from the inputs (a path in several inputs counts once per input).
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
        let destination = store.url.standardizedFileURL.path
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
        for (_, index) in sources {
            try index.store.forEachEmbeddingChunk { records in
                try store.insert(records)
                result.embeddings += records.count
            }
            let files = try index.store.allFiles()
            try store.recordFiles(files)
            result.files += files.count
        }
        return result
    }
}
