import CBLAS
import CMobileNetProcess
import Foundation

/// How an ``EmbeddingIndex`` holds its vectors in memory.
public enum VectorPrecision: String, Sendable, Codable, CaseIterable {
    /// 4 bytes per value; scores are exact dot products in `Float`.
    case float32
    /// 2 bytes per value (half the memory); vectors are rounded to `Float16` (about 3 significant
    /// digits), which changes cosine similarities by about 1e-3 at most.
    case float16
}

/// One search result.
public struct SimilarityMatch: Sendable, Hashable, Codable {
    /// Row of the match in the index.
    public var index: Int
    /// The identifier stored with the vector (usually the image path).
    public var identifier: String
    /// Cosine similarity between the query and the match, in -1...1: 1 means the same
    /// direction. MobileNetV2 pooled embeddings are outputs of ReLU6 (non-negative), so between
    /// two of them it lies in 0...1; near-duplicate photos score above about 0.9.
    public var similarity: Float

    /// A match (for other search paths, such as approximate search, that produce them).
    public init(index: Int, identifier: String, similarity: Float) {
        self.index = index
        self.identifier = identifier
        self.similarity = similarity
    }
}

/// Errors of ``EmbeddingIndex``.
public enum SearchError: Error, Equatable, CustomStringConvertible {
    /// A vector does not have the index's dimension.
    case dimensionMismatch(expected: Int, found: Int, identifier: String)
    /// The numbers of identifiers and vectors differ.
    case countMismatch(identifiers: Int, vectors: Int)
    /// A vector has a non-finite value or is all zeros (it has no direction).
    case invalidVector(identifier: String, reason: String)

    public var description: String {
        switch self {
        case .dimensionMismatch(let expected, let found, let identifier):
            "\(identifier): embedding has \(found) values, the index holds \(expected)-d embeddings (another backbone?)"
        case .countMismatch(let identifiers, let vectors):
            "\(identifiers) identifiers for \(vectors) vectors"
        case .invalidVector(let identifier, let reason):
            "\(identifier): \(reason)"
        }
    }
}

/// Exact nearest-neighbour search over L2-normalised embeddings held contiguously in memory
/// (row-major `[count, dimension]`), with scores computed by BLAS (OpenBLAS `sgemv`/`sgemm`),
/// never a scalar loop.
///
/// The index is immutable after creation and safe to query from several threads at once.
public final class EmbeddingIndex: Sendable {
    /// Values per vector (1280 for MobileNetV2 at alpha <= 1).
    public let dimension: Int
    /// The identifier of each row (usually the image path), in row order.
    public let identifiers: [String]
    /// How vectors are stored.
    public let precision: VectorPrecision
    private let vectors32: [Float]
    private let vectors16: [Float16]

    /// Number of stored vectors.
    public var count: Int { identifiers.count }

    /// Bytes used by the vectors.
    public var vectorBytes: Int { precision == .float32 ? vectors32.count * 4 : vectors16.count * 2 }

    /// Builds an index from raw embeddings; each row is L2-normalised.
    ///
    /// - Parameters:
    ///   - identifiers: one identifier per vector.
    ///   - vectors: row-major `[identifiers.count, dimension]` values.
    ///   - dimension: values per vector.
    ///   - precision: float32 (default) or float16 storage.
    /// - Throws: ``SearchError`` for a count mismatch or a zero / non-finite vector.
    /// - Complexity: O(count × dimension).
    public init(identifiers: [String], vectors: [Float], dimension: Int, precision: VectorPrecision = .float32) throws(SearchError) {
        guard dimension > 0, vectors.count == identifiers.count * dimension else {
            throw .countMismatch(identifiers: identifiers.count, vectors: dimension > 0 ? vectors.count / dimension : 0)
        }
        var normalised = vectors
        for row in 0..<identifiers.count {
            let start = row * dimension
            var sum: Double = 0
            for i in start..<(start + dimension) {
                let v = Double(normalised[i])
                guard v.isFinite else { throw .invalidVector(identifier: identifiers[row], reason: "embedding has a non-finite value") }
                sum += v * v
            }
            guard sum > 0 else { throw .invalidVector(identifier: identifiers[row], reason: "embedding is all zeros") }
            let scale = Float(1 / sum.squareRoot())
            for i in start..<(start + dimension) { normalised[i] *= scale }
        }
        self.dimension = dimension
        self.identifiers = identifiers
        self.precision = precision
        if precision == .float32 {
            vectors32 = normalised
            vectors16 = []
        } else {
            vectors32 = []
            vectors16 = normalised.map { Float16($0) }
        }
    }

    /// The stored (normalised) vector of row `index`, as `Float`.
    public func vector(at index: Int) -> [Float] {
        let range = (index * dimension)..<((index + 1) * dimension)
        return precision == .float32 ? Array(vectors32[range]) : vectors16[range].map { Float($0) }
    }

    /// Calls `body` with the stored (L2-normalised) vectors of `rows`, row-major
    /// `[rows.count, dimension]` `Float`s: a view of the storage for float32, a converted copy for
    /// float16. For handing the vectors to another library (FAISS) block by block.
    ///
    /// - Precondition: `rows` lies within `0..<count`.
    public func withVectors<R>(rows: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= count, "rows \(rows) outside 0..<\(count)")
        let range = (rows.lowerBound * dimension)..<(rows.upperBound * dimension)
        if precision == .float32 {
            return try vectors32.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[range])) }
        }
        let converted = vectors16[range].map { Float($0) }
        return try converted.withUnsafeBufferPointer(body)
    }

    /// Rows per block when float16 vectors are converted for BLAS.
    static let blockRows = 2048

    /// Cosine similarity of `query` (any length; normalised here) to every stored vector.
    ///
    /// - Throws: ``SearchError`` when the query has the wrong dimension or no direction.
    /// - Complexity: O(count × dimension), one BLAS matrix-vector product.
    public func similarities(to query: [Float]) throws(SearchError) -> [Float] {
        let q = try normalisedQuery(query)
        var scores = [Float](repeating: 0, count: count)
        guard count > 0 else { return scores }
        if precision == .float32 {
            vectors32.withUnsafeBufferPointer { a in
                q.withUnsafeBufferPointer { x in
                    scores.withUnsafeMutableBufferPointer { y in
                        mn_blas_enter()  // no fork while OpenBLAS runs (CMobileNetProcess)
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(count), Int32(dimension), 1, a.baseAddress, Int32(dimension),
                                    x.baseAddress, 1, 0, y.baseAddress, 1)
                        mn_blas_leave()
                    }
                }
            }
        } else {
            var block = [Float](repeating: 0, count: Self.blockRows * dimension)
            var start = 0
            while start < count {
                let rows = min(Self.blockRows, count - start)
                vectors16.withUnsafeBufferPointer { half in
                    block.withUnsafeMutableBufferPointer { b in
                        let base = start * dimension
                        for i in 0..<(rows * dimension) { b[i] = Float(half[base + i]) }
                    }
                }
                block.withUnsafeBufferPointer { a in
                    q.withUnsafeBufferPointer { x in
                        scores.withUnsafeMutableBufferPointer { y in
                            mn_blas_enter()  // no fork while OpenBLAS runs (CMobileNetProcess)
                            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(dimension), 1, a.baseAddress, Int32(dimension),
                                        x.baseAddress, 1, 0, y.baseAddress! + start, 1)
                            mn_blas_leave()
                        }
                    }
                }
                start += rows
            }
        }
        return scores
    }

    /// The `top` most similar stored vectors, best first (ties by lower row).
    ///
    /// - Parameters:
    ///   - query: an embedding of the index's dimension.
    ///   - top: how many matches at most.
    ///   - minimumSimilarity: drop matches below this cosine similarity (a score within
    ///     ``thresholdRoundingAllowance`` below it is kept, so 1 keeps exact copies).
    /// - Throws: ``SearchError`` for a query of the wrong dimension or with no direction.
    public func search(_ query: [Float], top: Int, minimumSimilarity: Float? = nil) throws(SearchError) -> [SimilarityMatch] {
        let scores = try similarities(to: query)
        return Self.best(scores, top: top, minimum: minimumSimilarity.map { $0 - thresholdRoundingAllowance }).map {
            SimilarityMatch(index: $0, identifier: identifiers[$0], similarity: Self.clamped(scores[$0]))
        }
    }

    /// Cosine similarity of stored rows `i` and `j`, in -1...1.
    public func similarity(_ i: Int, _ j: Int) -> Float {
        Self.clamped(zip(vector(at: i), vector(at: j)).reduce(0) { $0 + $1.0 * $1.1 })
    }

    /// A float cosine clamped to -1...1 (rounding can give 1.0000004 for identical vectors).
    static func clamped(_ cosine: Float) -> Float { min(1, max(-1, cosine)) }

    /// How far below a similarity threshold a score may fall and still meet it: a cosine is a
    /// float dot product of two unit vectors, and identical 1280-d embeddings can score 0.9999995,
    /// so a threshold of 1 ("identical only") would otherwise drop an exact copy. With
    /// ``VectorPrecision/float32`` storage the rounding error of such a product is about 1e-6
    /// (sqrt(dimension) × float epsilon) and the allowance 1e-5; with ``VectorPrecision/float16``
    /// the stored vectors are rounded to about 3 digits (an exact copy scored 0.99995) and the
    /// allowance is 1e-3, the documented size of that change.
    public var thresholdRoundingAllowance: Float { Self.thresholdRoundingAllowance(for: precision) }

    /// ``thresholdRoundingAllowance`` for vectors stored at `precision`: 1e-5 for float32, 1e-3
    /// for float16.
    public static func thresholdRoundingAllowance(for precision: VectorPrecision) -> Float {
        precision == .float32 ? 1e-5 : 1e-3
    }

    /// Groups of near-duplicates: connected components of the graph whose edges join vectors
    /// with cosine similarity of at least `threshold` (less ``thresholdRoundingAllowance``, so 1
    /// groups exact copies). Only groups of two or more are returned,
    /// each sorted by row, groups ordered by their first row.
    ///
    /// - Complexity: O(count² × dimension) in BLAS matrix products over row blocks.
    public func nearDuplicateGroups(threshold: Float) -> [[Int]] {
        guard count > 1 else { return [] }
        var parent = Array(0..<count)
        func find(_ i: Int) -> Int {
            var i = i
            while parent[i] != i {
                parent[i] = parent[parent[i]]
                i = parent[i]
            }
            return i
        }
        let all = precision == .float32 ? vectors32 : vectors16.map { Float($0) }
        let blockRows = 512
        var products = [Float](repeating: 0, count: blockRows * count)
        var start = 0
        while start < count {
            let rows = min(blockRows, count - start)
            all.withUnsafeBufferPointer { a in
                products.withUnsafeMutableBufferPointer { c in
                    // C[rows, count] = A[start..<start+rows] · Aᵀ
                    mn_blas_enter()  // no fork while OpenBLAS runs (CMobileNetProcess)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(count), Int32(dimension), 1,
                                a.baseAddress! + start * dimension, Int32(dimension), a.baseAddress, Int32(dimension), 0,
                                c.baseAddress, Int32(count))
                    mn_blas_leave()
                }
            }
            for r in 0..<rows {
                let i = start + r
                for j in (i + 1)..<count where products[r * count + j] >= threshold - thresholdRoundingAllowance {
                    let (a, b) = (find(i), find(j))
                    if a != b { parent[max(a, b)] = min(a, b) }
                }
            }
            start += rows
        }
        var groups: [Int: [Int]] = [:]
        for i in 0..<count { groups[find(i), default: []].append(i) }
        return groups.values.filter { $0.count > 1 }.sorted { $0[0] < $1[0] }
    }

    private func normalisedQuery(_ query: [Float]) throws(SearchError) -> [Float] {
        guard query.count == dimension else { throw .dimensionMismatch(expected: dimension, found: query.count, identifier: "query") }
        let sum = query.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard sum > 0, sum.isFinite else { throw .invalidVector(identifier: "query", reason: "query embedding is all zeros or not finite") }
        let scale = Float(1 / sum.squareRoot())
        return query.map { $0 * scale }
    }

    /// Indices of the `top` highest scores at or above `minimum`, best first, ties by index.
    static func best(_ scores: [Float], top: Int, minimum: Float?) -> [Int] {
        guard top > 0 else { return [] }
        let top = min(top, scores.count)
        // A bounded selection: keep the current best `top` in a sorted array.
        var kept: [Int] = []
        kept.reserveCapacity(top + 1)
        func better(_ a: Int, _ b: Int) -> Bool { scores[a] > scores[b] || (scores[a] == scores[b] && a < b) }
        for i in scores.indices {
            if let minimum, scores[i] < minimum { continue }
            if kept.count == top, let last = kept.last, !better(i, last) { continue }
            var low = 0, high = kept.count
            while low < high {
                let mid = (low + high) / 2
                if better(kept[mid], i) { low = mid + 1 } else { high = mid }
            }
            kept.insert(i, at: low)
            if kept.count > top { kept.removeLast() }
        }
        return kept
    }
}

extension SearchError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
