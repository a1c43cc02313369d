import Foundation
import MobileNetProcess
import MobileNetSearch
import Testing

@Suite("Embedding index: exact cosine search and near-duplicate groups")
struct EmbeddingIndexTests {
    /// Deterministic non-negative pseudo-embeddings.
    static func vectors(count: Int, dimension: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<(count * dimension)).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24)
        }
    }

    /// Cosine similarity in Double, the definition.
    static func cosine(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { dot += Double(x) * Double(y); na += Double(x) * Double(x); nb += Double(y) * Double(y) }
        return dot / (na.squareRoot() * nb.squareRoot())
    }

    @Test("scores equal the cosine definition; ranking and minimum similarity", arguments: VectorPrecision.allCases)
    func search(precision: VectorPrecision) throws {
        let (n, d) = (3000, 64)
        let data = Self.vectors(count: n, dimension: d, seed: 1)
        let index = try EmbeddingIndex(identifiers: (0..<n).map { "img\($0)" }, vectors: data, dimension: d, precision: precision)
        let query = Array(Self.vectors(count: 1, dimension: d, seed: 99))
        let scores = try index.similarities(to: query)
        var worst = 0.0
        for i in 0..<n {
            let exact = Self.cosine(data[(i * d)..<((i + 1) * d)], query[...])
            worst = max(worst, abs(exact - Double(scores[i])))
        }
        #expect(worst < (precision == .float32 ? 1e-5 : 2e-3), "max error \(worst)")
        let top = try index.search(query, top: 5)
        #expect(top.count == 5)
        let expectedOrder = scores.indices.sorted { scores[$0] > scores[$1] }.prefix(5)
        #expect(top.map(\.index) == Array(expectedOrder))
        #expect(zip(top, top.dropFirst()).allSatisfy { $0.similarity >= $1.similarity })
        let strict = try index.search(query, top: 50, minimumSimilarity: top[2].similarity)
        let atLeast = scores.filter { $0 >= top[2].similarity - index.thresholdRoundingAllowance }.count
        #expect(strict.count == atLeast && atLeast >= 3)
        #expect(index.vectorBytes == n * d * (precision == .float32 ? 4 : 2))
    }

    @Test("a threshold of 1 keeps exact copies whose float cosine rounds below 1, in search and in near-duplicate groups")
    func thresholdOfOneKeepsCopies() throws {
        let d = 1280
        // Vectors whose float self-similarity comes out below 1 in this index (as 0.9999995 did
        // for a real photo's embedding): found by trying seeds.
        let other = Self.vectors(count: 1, dimension: d, seed: 999)
        var found: (v: [Float], index: EmbeddingIndex)?
        for seed in 1...300 {
            let v = Self.vectors(count: 1, dimension: d, seed: UInt64(seed))
            let index = try EmbeddingIndex(identifiers: ["copy-a", "other", "copy-b"], vectors: v + other + v, dimension: d)
            let scores = try index.similarities(to: v)
            if scores[0] < 1 && scores[2] < 1 { found = (v, index); break }
        }
        let (v, index) = try #require(found, "no 1280-d vector with a float self-similarity below 1 in 300 seeds")
        // float16 storage rounds the stored copies too (the query stays float).
        let half = try EmbeddingIndex(identifiers: ["copy-a", "other", "copy-b"], vectors: v + other + v, dimension: d, precision: .float16)
        for (name, index) in [("float32", index), ("float16", half)] {
            let matches = try index.search(v, top: 5, minimumSimilarity: 1)
            #expect(matches.map(\.identifier) == ["copy-a", "copy-b"], "\(name): \(matches)")
            #expect(matches.allSatisfy { $0.similarity <= 1 })
            #expect(index.nearDuplicateGroups(threshold: 1) == [[0, 2]], "\(name)")
        }
    }

    @Test("ending OpenBLAS's idle threads (BLASThreads.releaseIdle) at any time: searches before, after and meanwhile give the same scores", .timeLimit(.minutes(1)))
    func releaseBLASThreads() async throws {
        let (n, d) = (20_000, 64)  // large enough for OpenBLAS to use its threads
        let index = try EmbeddingIndex(identifiers: (0..<n).map { "img\($0)" }, vectors: Self.vectors(count: n, dimension: d, seed: 7), dimension: d)
        let queries = Self.vectors(count: 8, dimension: d, seed: 8)
        let expected = try index.similarities(to: Array(queries[0..<d]))
        #expect(BLASThreads.releaseIdle(), "OpenBLAS is the BLAS this package links")
        #expect(BLASThreads.releaseIdle())  // again, with no pool: nothing to end
        #expect(try index.similarities(to: Array(queries[0..<d])) == expected)
        // Releases interleaved with searches on other threads: no hang, the same results.
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for q in 0..<8 {
                group.addTask {
                    let query = Array(queries[(q * d)..<((q + 1) * d)])
                    let first = try index.similarities(to: query)
                    for _ in 0..<20 { if try index.similarities(to: query) != first { return false } }
                    return true
                }
            }
            group.addTask {
                for _ in 0..<50 { BLASThreads.releaseIdle() }
                return true
            }
            for try await same in group { #expect(same) }
        }
        #expect(try index.similarities(to: Array(queries[0..<d])) == expected)
    }

    @Test("a stored vector finds itself first with similarity 1")
    func selfMatch() throws {
        let d = 32
        let data = Self.vectors(count: 100, dimension: d, seed: 3)
        let index = try EmbeddingIndex(identifiers: (0..<100).map(String.init), vectors: data, dimension: d)
        let hit = try index.search(Array(data[(42 * d)..<(43 * d)]).map { $0 * 3 }, top: 1)
        #expect(hit.first?.index == 42)
        #expect(abs((hit.first?.similarity ?? 0) - 1) < 1e-5)
    }

    @Test("near-duplicate groups are the connected components above the threshold")
    func duplicates() throws {
        let d = 16
        var data = Self.vectors(count: 10, dimension: d, seed: 5)
        // Rows 7 and 8 are slight variations of row 2; row 9 of row 4.
        for (copy, original) in [(7, 2), (8, 2), (9, 4)] {
            for k in 0..<d { data[copy * d + k] = data[original * d + k] * (1 + 0.001 * Float(k % 3)) }
        }
        let index = try EmbeddingIndex(identifiers: (0..<10).map(String.init), vectors: data, dimension: d)
        #expect(index.nearDuplicateGroups(threshold: 0.9999) == [[2, 7, 8], [4, 9]])
        #expect(index.nearDuplicateGroups(threshold: 1.01) == [])
        #expect(index.nearDuplicateGroups(threshold: -1).count == 1)
    }

    @Test("bad vectors and queries give typed errors")
    func errors() throws {
        #expect(throws: SearchError.countMismatch(identifiers: 2, vectors: 1)) {
            try EmbeddingIndex(identifiers: ["a", "b"], vectors: [1, 2, 3], dimension: 3)
        }
        #expect(throws: SearchError.invalidVector(identifier: "b", reason: "embedding is all zeros")) {
            try EmbeddingIndex(identifiers: ["a", "b"], vectors: [1, 2, 3, 0, 0, 0], dimension: 3)
        }
        let index = try EmbeddingIndex(identifiers: ["a"], vectors: [1, 2, 3], dimension: 3)
        #expect(throws: SearchError.dimensionMismatch(expected: 3, found: 2, identifier: "query")) { try index.search([1, 2], top: 1) }
        let empty = try EmbeddingIndex(identifiers: [], vectors: [], dimension: 3)
        #expect(try empty.search([1, 2, 3], top: 5).isEmpty)
    }
}
