import Foundation
import MobileNetSearch

/// Measuring an ``ANNIndex`` against exact search (``/MobileNetSearch/EmbeddingIndex``, BLAS) in
/// the same process: recall@k and per-query latency. Used by `mobilenet index bench-ann` and
/// `scripts/bench/ann_bench.py`; speed belongs in benchmarks, not unit tests.
public enum ANNBenchmark {
    /// Synthetic embeddings "clustered like real ones", row-major `[count, dimension]`:
    /// `subClusters` sub-centres, each a convex mix of two real embeddings (weight 0.5...1 on the
    /// first), and around each sub-centre points `max(0, centre + noise × σ ⊙ z)` with `z`
    /// approximately standard normal (sum of four uniforms) and `σ` the per-dimension standard
    /// deviation of the real embeddings. Non-negative like ReLU6 averages. Deterministic for a seed.
    ///
    /// - Parameters:
    ///   - real: real embeddings, row-major `[n, dimension]` (n ≥ 2).
    ///   - dimension: values per embedding.
    ///   - count: vectors to make.
    ///   - subClusters: sub-centres.
    ///   - noise: the noise scale relative to σ.
    ///   - seed: the random stream.
    ///   - tail: rows appended after the synthetic ones (the real embeddings themselves), without
    ///     a second copy of the result.
    public static func syntheticEmbeddings(real: [Float], dimension: Int, count: Int, subClusters: Int = 20_000,
                                           noise: Float = 0.5, seed: UInt64 = 1, appending tail: [Float] = []) -> [Float] {
        let n = real.count / dimension
        precondition(n >= 2 && real.count == n * dimension, "need at least two real embeddings")
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        @inline(__always) func next() -> UInt64 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
        @inline(__always) func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
        var mean = [Double](repeating: 0, count: dimension), square = [Double](repeating: 0, count: dimension)
        for r in 0..<n {
            for j in 0..<dimension {
                let v = Double(real[r * dimension + j])
                mean[j] += v
                square[j] += v * v
            }
        }
        let sigma = (0..<dimension).map { j in Float(max(0, square[j] / Double(n) - (mean[j] / Double(n)) * (mean[j] / Double(n))).squareRoot()) }
        var centres = [Float](repeating: 0, count: subClusters * dimension)
        for c in 0..<subClusters {
            let a = Int(next() % UInt64(n)), b = Int(next() % UInt64(n))
            let w = 0.5 + 0.5 * uniform()
            for j in 0..<dimension { centres[c * dimension + j] = w * real[a * dimension + j] + (1 - w) * real[b * dimension + j] }
        }
        var out = [Float](repeating: 0, count: count * dimension + tail.count)
        // sum of four U(0,1) has variance 1/3: scale by √3 for unit variance.
        let scale = noise * Float(3).squareRoot()
        out.withUnsafeMutableBufferPointer { o in
            for i in 0..<count {
                let c = Int(next() % UInt64(subClusters))
                for j in 0..<dimension {
                    let z = (uniform() + uniform() + uniform() + uniform() - 2) * scale
                    o[i * dimension + j] = max(0, centres[c * dimension + j] + z * sigma[j])
                }
            }
        }
        out.withUnsafeMutableBufferPointer { o in
            tail.withUnsafeBufferPointer { t in
                if let base = t.baseAddress { (o.baseAddress! + count * dimension).update(from: base, count: t.count) }
            }
        }
        return out
    }

    /// One measured configuration.
    public struct Result: Sendable, Codable {
        /// nprobe (IVF) or efSearch (HNSW) used, nil for Flat.
        public var parameter: Int?
        /// Mean share of the exact top-k found.
        public var recall: Double
        /// Single-query latency percentiles, milliseconds.
        public var p50Milliseconds: Double, p99Milliseconds: Double, meanMilliseconds: Double
    }

    /// The exact top-k rows of each query (the ground truth) and the exact search's latencies.
    ///
    /// - Throws: ``/MobileNetSearch/SearchError`` for a query of the wrong dimension.
    public static func exactNeighbours(_ index: EmbeddingIndex, queries: [[Float]], k: Int) throws -> (rows: [[Int]], latencies: [Double]) {
        var rows: [[Int]] = [], latencies: [Double] = []
        for q in queries {
            let start = DispatchTime.now().uptimeNanoseconds
            rows.append(try index.search(q, top: k).map(\.index))
            latencies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        return (rows, latencies)
    }

    /// Recall@k and latency of `ann` with `parameters`, one query at a time.
    ///
    /// - Throws: ``ANNError``.
    public static func measure(_ ann: ANNIndex, queries: [[Float]], truth: [[Int]], k: Int, parameters: ANNSearchParameters) throws(ANNError) -> Result {
        var latencies: [Double] = []
        var recall = 0.0
        for (q, exact) in zip(queries, truth) {
            let start = DispatchTime.now().uptimeNanoseconds
            let found = try ann.search(q, k: k, parameters: parameters)[0]
            latencies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            recall += Double(Set(found.map(\.row)).intersection(exact).count) / Double(max(1, exact.count))
        }
        let (p50, p99, mean) = summary(latencies)
        return Result(parameter: parameters.nprobe ?? parameters.efSearch, recall: recall / Double(max(1, queries.count)),
                      p50Milliseconds: p50, p99Milliseconds: p99, meanMilliseconds: mean)
    }

    /// (median, 99th percentile, mean) of `values` (nearest-rank percentiles).
    public static func summary(_ values: [Double]) -> (p50: Double, p99: Double, mean: Double) {
        guard !values.isEmpty else { return (0, 0, 0) }
        let sorted = values.sorted()
        func rank(_ p: Double) -> Double { sorted[min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))] }
        return (rank(0.5), rank(0.99), values.reduce(0, +) / Double(values.count))
    }

    /// The process's resident and peak resident memory in bytes (`/proc/self/status` VmRSS, VmHWM).
    public static func memory() -> (resident: Int, peak: Int) {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            // "VmHWM:\t 9916536 kB", or with no space once the number has eight digits.
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return (fields.count >= 2 ? Int(fields[1]) ?? 0 : 0) * 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// Median cosine similarity of `pairs` random pairs of rows (a check that synthetic vectors
    /// spread like real ones: about 0.31 for MobileNetV2 embeddings of different photos).
    public static func medianPairCosine(_ index: EmbeddingIndex, pairs: Int = 2000, seed: UInt64 = 7) -> Float {
        guard index.count > 1 else { return 0 }
        var state = seed
        var values: [Float] = []
        for _ in 0..<pairs {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let i = Int((state >> 33) % UInt64(index.count))
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let j = Int((state >> 33) % UInt64(index.count))
            if i != j { values.append(index.similarity(i, j)) }
        }
        return values.sorted()[values.count / 2]
    }
}
