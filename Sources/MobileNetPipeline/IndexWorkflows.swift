import Foundation
import MobileNetIO
import MobileNetSearch
import MobileNetStore

extension ImageIndex {
    /// Embeds new or changed images into the index (unchanged ones are recognised by path, size,
    /// modification time and content hash): the one call behind `mobilenet index add`.
    ///
    /// - Parameters:
    ///   - files: image files (absolute paths are stored as given; pass standardised URLs).
    ///   - backbone: must be the index's backbone (``/MobileNetSearch/ImageIndex/checkCompatible(_:)``).
    ///   - preprocessor: how images become input; its identity is stored with each embedding.
    ///   - runtime: network batch size and decoding threads (the backend is the backbone's).
    ///   - progress: (images handled, images to compute) after each batch.
    /// - Returns: the embeddings and failures (a bad image is reported, the others are added).
    /// - Throws: ``/MobileNetSearch/ImageIndexError/backboneMismatch(path:index:requested:)``, ``/MobileNetStore/StoreError``, network errors.
    public func add(_ files: [URL], backbone: Backbone, preprocessor: ImagePreprocessor, runtime: RuntimeOptions,
                    progress: ((Int, Int) -> Void)? = nil) throws -> EmbeddingResult {
        try checkCompatible(backbone.identity)
        let embedder = try CachedEmbedder(backbone: backbone, preprocessor: preprocessor, store: store, runtime: runtime)
        return try embedder.embed(files, progress: progress)
    }

    /// The indexed images most similar to each query image, by cosine similarity: the one call
    /// behind `mobilenet similar`. Queries are embedded with `backbone` and `preprocessor`, which
    /// must be those the index was built with.
    ///
    /// - Returns: per query that could be embedded, in input order, its matches (best first);
    ///   the queries that failed.
    /// - Throws: ``/MobileNetSearch/ImageIndexError`` (empty index, other backbone), ``/MobileNetSearch/SearchError``, store and network errors.
    public func similar(to queries: [URL], top: Int, minimumSimilarity: Float? = nil, precision: VectorPrecision = .float32,
                        backbone: Backbone, preprocessor: ImagePreprocessor, runtime: RuntimeOptions) throws
        -> (results: [(query: URL, matches: [SimilarityMatch])], failures: [EmbeddingFailure]) {
        try checkCompatible(backbone.identity)
        let (search, _) = try searchIndex(preprocessing: PreprocessingIdentity(preprocessor), precision: precision)
        let embedder = try CachedEmbedder(backbone: backbone, preprocessor: preprocessor, store: nil, runtime: runtime)
        let embedded = try embedder.embed(queries)
        var results: [(query: URL, matches: [SimilarityMatch])] = []
        for url in queries {
            guard let embedding = embedded.embeddings[url] else { continue }
            results.append((url, try search.search(embedding.vector, top: top, minimumSimilarity: minimumSimilarity)))
        }
        return (results, embedded.failures)
    }
}

/// One member of a near-duplicate group.
public struct DuplicateMember: Sendable, Hashable, Codable {
    /// The image (its index identifier: the path).
    public var file: String
    /// Cosine similarity to the group's first member, in -1...1 (1 for the first).
    public var similarityToFirst: Float
}

/// Near-duplicate detection (re-encodes, resizes, small crops of one photo): the one call behind
/// `mobilenet duplicates`.
public enum NearDuplicates {
    /// The default cosine threshold, chosen from measurements on the near-duplicate benchmark
    /// (docs/similarity.md: pair precision 1.00, recall 0.94).
    public static let defaultThreshold: Float = 0.88

    /// Groups of near-duplicates in `index`: connected components of "cosine similarity at least
    /// `threshold`", each with the similarity of its members to the first.
    public static func groups(in index: EmbeddingIndex, threshold: Float = defaultThreshold) -> [[DuplicateMember]] {
        index.nearDuplicateGroups(threshold: threshold).map { rows in
            rows.map { DuplicateMember(file: index.identifiers[$0], similarityToFirst: index.similarity(rows[0], $0)) }
        }
    }

    /// Embeds `files` (without storing them) and returns the in-memory index of those that
    /// worked, identified by their relative paths, with the failures.
    ///
    /// - Throws: ``/MobileNetSearch/ImageIndexError/empty(path:)`` when no file could be embedded; network errors.
    public static func embed(_ files: [URL], backbone: Backbone, preprocessor: ImagePreprocessor, runtime: RuntimeOptions,
                             progress: ((Int, Int) -> Void)? = nil) throws -> (index: EmbeddingIndex, failures: [EmbeddingFailure]) {
        let embedder = try CachedEmbedder(backbone: backbone, preprocessor: preprocessor, store: nil, runtime: runtime)
        let result = try embedder.embed(files, progress: progress)
        let kept = files.filter { result.embeddings[$0] != nil }
        guard let first = kept.first, let dimension = result.embeddings[first]?.vector.count else {
            throw ImageIndexError.empty(path: files.map(\.relativePath).joined(separator: " "))
        }
        let index = try EmbeddingIndex(identifiers: kept.map(\.relativePath), vectors: kept.flatMap { result.embeddings[$0]?.vector ?? [] }, dimension: dimension)
        return (index, result.failures)
    }
}
