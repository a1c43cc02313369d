import Foundation
import MobileNetIO
import MobileNetPipeline
import MobileNetSearch
import MobileNetStore

extension EmbeddingIndex {
    /// The `top` most similar stored vectors, best first: exact (``/MobileNetSearch/EmbeddingIndex/search(_:top:minimumSimilarity:)``,
    /// BLAS) without `ann`, approximate with it. The one search call a server can route every
    /// query through, with the ANN index of the `.faiss` file that belongs to this index or nil.
    ///
    /// - Parameters:
    ///   - query: an embedding of the index's dimension (normalised here).
    ///   - top: how many matches at most.
    ///   - minimumSimilarity: drop matches below this cosine similarity (less
    ///     ``/MobileNetSearch/EmbeddingIndex/thresholdRoundingAllowance``, so 1 keeps exact copies).
    ///   - ann: an index built from this one (ids = rows); its dimension and count are checked.
    ///   - parameters: nprobe / efSearch for this query.
    ///   - annPath: the ANN file, named in errors.
    /// - Throws: ``/MobileNetSearch/SearchError`` for a query of the wrong dimension or with no
    ///   direction; ``ANNError`` (a file of another index, FAISS failures).
    public func search(_ query: [Float], top: Int, minimumSimilarity: Float? = nil, ann: ANNIndex?,
                       parameters: ANNSearchParameters = ANNSearchParameters(), annPath: String = "ANN index") throws -> [SimilarityMatch] {
        guard let ann else { return try search(query, top: top, minimumSimilarity: minimumSimilarity) }
        try ann.check(matches: self, path: annPath)
        guard query.count == dimension else { throw SearchError.dimensionMismatch(expected: dimension, found: query.count, identifier: "query") }
        let sum = query.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard sum > 0, sum.isFinite else { throw SearchError.invalidVector(identifier: "query", reason: "query embedding is all zeros or not finite") }
        guard top > 0 else { return [] }
        let neighbours = try ann.search(query, k: min(top, count), parameters: parameters)[0]
        return neighbours.compactMap { n -> SimilarityMatch? in
            if let minimumSimilarity, n.score < minimumSimilarity - thresholdRoundingAllowance { return nil }
            return SimilarityMatch(index: n.row, identifier: identifiers[n.row], similarity: n.score)
        }
    }
}

extension ImageIndex {
    /// Builds an ANN index over this index's embeddings (rows in the index's path order, as
    /// ``/MobileNetSearch/ImageIndex/searchIndex(preprocessing:precision:)`` loads them): the one
    /// call behind `mobilenet index build-ann`.
    ///
    /// - Parameters:
    ///   - preprocessing: the preprocessing the embeddings were made with.
    ///   - factory: a FAISS factory string, default ``ANNIndex/defaultFactory(count:)``.
    ///   - searchParameter: the stored IVF `nprobe` / HNSW `efSearch` (default: the module's),
    ///     checked before any training.
    ///   - progress: (vectors added, total).
    /// - Returns: the ANN index and the embedding index it belongs to.
    /// - Throws: ``/MobileNetSearch/ImageIndexError``, store errors, ``ANNError`` (``ANNError/invalidArgument(_:)``
    ///   for a factory of impossible sizes or a search parameter the structure does not take).
    public func buildANN(preprocessing: PreprocessingIdentity, factory: String? = nil, searchParameter: Int? = nil,
                         progress: ((Int, Int) -> Void)? = nil) throws -> (ann: ANNIndex, index: EmbeddingIndex) {
        // Impossible sizes are refused before the embeddings are read (a large database takes a
        // while): against the number of indexed files, which bounds the vectors there will be
        // (one per file with an embedding; not the stored embeddings, which copies share). The
        // exact count is checked again when the index is built.
        if let factory { try ANNIndex.checkSizes(factory: factory, count: max(1, try store.fileCount())) }
        let (search, _) = try searchIndex(preprocessing: preprocessing)
        return (try ANNIndex.build(from: search, factory: factory, searchParameter: searchParameter, progress: progress), search)
    }

    /// ``/MobileNetPipeline/MobileNetSearch/ImageIndex/similar(to:top:minimumSimilarity:precision:backbone:preprocessor:runtime:)``
    /// through an ANN index read from `annFile` (which must have been built from this index's
    /// current embeddings): the call behind `mobilenet similar --ann FILE`.
    ///
    /// - Throws: as the exact search, plus ``ANNError`` for the file (damaged, of another index)
    ///   and ``ANNError/invalidArgument(_:)`` for `parameters` the file's structure does not take
    ///   (``ANNSearchParameters/problem(for:)``), before any query is embedded.
    public func similar(to queries: [URL], top: Int, minimumSimilarity: Float? = nil, annFile: URL,
                        parameters: ANNSearchParameters = ANNSearchParameters(), backbone: Backbone,
                        preprocessor: ImagePreprocessor, runtime: RuntimeOptions) throws
        -> (results: [(query: URL, matches: [SimilarityMatch])], failures: [EmbeddingFailure]) {
        try checkCompatible(backbone.identity)
        let (search, _) = try searchIndex(preprocessing: PreprocessingIdentity(preprocessor))
        let ann = try ANNIndex(contentsOf: annFile)
        try ann.verify(matches: search, path: annFile.path)
        // A parameter the file's structure does not take is the caller's mistake: said before
        // any query is embedded.
        if let (_, problem) = parameters.problem(for: ann.kind) { throw ANNError.invalidArgument("\(annFile.path): \(problem)") }
        let embedder = try CachedEmbedder(backbone: backbone, preprocessor: preprocessor, store: nil, runtime: runtime)
        let embedded = try embedder.embed(queries)
        var results: [(query: URL, matches: [SimilarityMatch])] = []
        for url in queries {
            guard let embedding = embedded.embeddings[url] else { continue }
            results.append((url, try search.search(embedding.vector, top: top, minimumSimilarity: minimumSimilarity, ann: ann,
                                                   parameters: parameters, annPath: annFile.path)))
        }
        return (results, embedded.failures)
    }
}
