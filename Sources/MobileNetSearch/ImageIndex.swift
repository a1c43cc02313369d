import Foundation
import MobileNetStore

/// Errors of an ``ImageIndex`` beyond the database's own ``/MobileNetStore/StoreError``.
public enum ImageIndexError: Error, Equatable, CustomStringConvertible {
    /// The index was built with another backbone (network, input size, pooling or weights):
    /// its embeddings cannot be compared with this one's.
    case backboneMismatch(path: String, index: String, requested: String)
    /// The index holds embeddings of several backbones and cannot tell which one to search.
    case ambiguousBackbone(path: String, backbones: [String])
    /// The index has no images yet.
    case empty(path: String)
    /// The index has images, but none embedded with the requested preprocessing.
    case noEmbeddings(path: String, images: Int, preprocessing: String)

    public var description: String {
        switch self {
        case .backboneMismatch(let path, let index, let requested):
            "\(path): the index was built with backbone \(index), not \(requested); its embeddings are not comparable — use the same --model (or --alpha, --input-size and --weights), or another --index file"
        case .ambiguousBackbone(let path, let backbones):
            "\(path): the database holds embeddings of \(backbones.count) backbones (\(backbones.joined(separator: ", "))); an index needs exactly one"
        case .empty(path: let path):
            "\(path): the index holds no images; add some with `mobilenet index add DIR --index \(path)`"
        case .noEmbeddings(let path, let images, let preprocessing):
            "\(path): the index holds \(images) images, but none embedded with preprocessing \(preprocessing); use the image options the index was built with (or add the images again with these)"
        }
    }
}

/// A persistent image index: an ``/MobileNetStore/EmbeddingStore`` file (SQLite) whose `files`
/// table lists the indexed images (path, content hash, size, modification time) and whose
/// embeddings all come from one backbone. The same storage layer as the transfer-learning
/// embedding cache; an index file is simply a store used for one backbone.
///
/// Searching loads the embeddings into an ``EmbeddingIndex`` (contiguous, L2-normalised),
/// which is immutable and safe to share between threads.
public final class ImageIndex {
    /// The database.
    public let store: EmbeddingStore

    /// Opens (or, unless `readOnly`, creates) the index file.
    ///
    /// - Throws: ``/MobileNetStore/StoreError`` naming the file (missing when read-only, not
    ///   SQLite, corrupt, locked, another application's database).
    public init(url: URL, readOnly: Bool = false) throws(StoreError) {
        store = try EmbeddingStore(url: url, readOnly: readOnly)
    }

    /// Opens (or, unless `readOnly`, creates) the index file at a path.
    ///
    /// - Throws: ``/MobileNetStore/StoreError/emptyPath`` for `""`,
    ///   ``/MobileNetStore/StoreError/noSuchFile(path:)`` for a missing file opened read-only,
    ///   and the other store errors of ``init(url:readOnly:)``.
    public init(path: String, readOnly: Bool = false) throws(StoreError) {
        store = try EmbeddingStore(path: path, readOnly: readOnly)
    }

    /// The backbone the index was built with, or nil for a new index.
    ///
    /// - Throws: ``ImageIndexError/ambiguousBackbone(path:backbones:)`` or a store error.
    public func backbone() throws -> BackboneIdentity? {
        let backbones = try store.backbones()
        if backbones.count > 1 { throw ImageIndexError.ambiguousBackbone(path: store.url.path, backbones: backbones.map(\.key)) }
        return backbones.first
    }

    /// Checks that `backbone` may add to or query this index: the index is new or was built
    /// with exactly this backbone.
    ///
    /// - Throws: ``ImageIndexError/backboneMismatch(path:index:requested:)``.
    public func checkCompatible(_ backbone: BackboneIdentity) throws {
        if let existing = try self.backbone(), existing != backbone {
            throw ImageIndexError.backboneMismatch(path: store.url.path, index: existing.key, requested: backbone.key)
        }
    }

    /// The indexed files, by path.
    public func files() throws(StoreError) -> [FileRecord] { try store.allFiles() }

    /// Forgets indexed files that no longer exist on disk.
    ///
    /// - Returns: the paths removed.
    public func sync() throws(StoreError) -> [String] {
        let missing = try store.allFiles().map(\.path).filter { !FileManager.default.fileExists(atPath: $0) }
        try store.removeFiles(atPaths: missing)
        return missing
    }

    /// Loads every indexed file's embedding into a search index (rows in path order).
    ///
    /// - Parameters:
    ///   - preprocessing: the preprocessing the embeddings were made with.
    ///   - precision: float32, or float16 to halve the memory.
    /// - Returns: the search index and the files without a stored embedding (normally none).
    /// - Throws: ``ImageIndexError/empty(path:)`` for an index without images, store errors.
    public func searchIndex(preprocessing: PreprocessingIdentity, precision: VectorPrecision = .float32) throws -> (index: EmbeddingIndex, missing: [String]) {
        guard let backbone = try backbone() else { throw ImageIndexError.empty(path: store.url.path) }
        let files = try store.allFiles()
        guard !files.isEmpty else { throw ImageIndexError.empty(path: store.url.path) }
        let vectors = try store.embeddings(for: files.map(\.contentSHA256), backbone: backbone, preprocessing: preprocessing)
        var identifiers: [String] = []
        var flat: [Float] = []
        var missing: [String] = []
        var dimension = 0
        for file in files {
            guard let vector = vectors[file.contentSHA256] else {
                missing.append(file.path)
                continue
            }
            if dimension == 0 { dimension = vector.count }
            guard vector.count == dimension else {
                throw StoreError.invalidRow(path: store.url.path, message: "\(file.path): \(vector.count)-d embedding among \(dimension)-d ones")
            }
            identifiers.append(file.path)
            flat += vector
        }
        guard !identifiers.isEmpty else {
            throw ImageIndexError.noEmbeddings(path: store.url.path, images: files.count, preprocessing: preprocessing.key)
        }
        return (try EmbeddingIndex(identifiers: identifiers, vectors: flat, dimension: dimension, precision: precision), missing)
    }
}

extension ImageIndexError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
