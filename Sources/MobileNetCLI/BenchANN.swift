import ArgumentParser
import Foundation
import MobileNet

extension Index {
    /// `mobilenet index bench-ann`: recall@k and latency of FAISS indexes against exact search on
    /// synthetic embeddings clustered around real ones (for scripts/bench/ann_bench.py).
    struct BenchANN: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-ann",
            abstract: "Measure approximate search (FAISS) against exact BLAS search on synthetic embeddings.",
            discussion: """
                Makes --count synthetic embeddings around the real ones of --real (a [N, D] .npy from \
                `mobilenet embed`; see ANNBenchmark.syntheticEmbeddings), adds the real ones, and \
                loads all into the exact index. Queries: --queries fresh synthetic vectors and up to \
                100 of the real ones. For each --factory it builds the FAISS index (time, memory) and \
                measures recall@--k against exact search and single-query latency for each \
                --nprobe (IVF) or --ef-search (HNSW) value. Prints a report (JSON with --json).
                """)
        @Option(name: .long, help: ArgumentHelp("Real embeddings, float32 [N, D] .npy.", valueName: "path"))
        var real: String
        @Option(name: .long, help: "Synthetic vectors.")
        var count: Int = 1_000_000
        @Option(name: .long, help: "Synthetic query vectors (not in the index).")
        var queries: Int = 200
        @Option(name: .long, help: "Neighbours per query.")
        var k: Int = 10
        @Option(name: .long, help: "FAISS factory string (repeatable; default: the one build-ann picks).")
        var factory: [String] = []
        @Option(name: .long, help: "Comma-separated nprobe values for IVF indexes.")
        var nprobe: String = "4,8,16,32,64"
        @Option(name: .long, help: "Comma-separated efSearch values for HNSW indexes.")
        var efSearch: String = "16,32,64,128"
        @Option(name: .long, help: "Exact-search queries timed (all queries get exact ground truth).")
        var exactTimed: Int = 30
        @Flag(name: .long, help: "Print JSON.")
        var json = false

        struct Built: Encodable {
            let factory: String, buildSeconds: Double, residentGrowthMegabytes: Double, peakRSSMegabytes: Double, fileMegabytes: Double
            let results: [ANNBenchmark.Result]
        }
        struct Report: Encodable {
            let vectors: Int, dimension: Int, realVectors: Int, queries: Int, k: Int
            let medianPairCosineSynthetic: Float, medianPairCosineReal: Float
            let generateSeconds: Double, exactLoadSeconds: Double
            let exactP50Milliseconds: Double, exactP99Milliseconds: Double, exactMeanMilliseconds: Double
            let indexes: [Built]
        }

        func values(_ text: String) throws -> [Int] {
            let list = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !list.isEmpty, list.allSatisfy({ ($0 ?? 0) >= 1 }) else { throw ValidationError("give comma-separated positive numbers, got '\(text)'") }
            return list.compactMap { $0 }
        }

        func validate() throws {
            guard count >= 1, queries >= 1, k >= 1, exactTimed >= 1 else { throw ValidationError("--count, --queries, --k and --exact-timed must be positive") }
            _ = try values(nprobe)
            _ = try values(efSearch)
        }

        func run() throws {
            do {
                let realTensor = try NPY.read(contentsOf: URL(fileURLWithPath: real))
                guard realTensor.shape.count == 2, realTensor.shape[0] >= 2 else { throw ValidationError("\(real): need a [N, D] array with N >= 2") }
                let (n, d) = (realTensor.shape[0], realTensor.shape[1])
                let realRows = realTensor.scalars
                var clock = Date()
                var synthetic = ANNBenchmark.syntheticEmbeddings(real: realRows, dimension: d, count: count, appending: realRows)
                let queryVectors = ANNBenchmark.syntheticEmbeddings(real: realRows, dimension: d, count: queries, seed: 2)
                let generateSeconds = Date().timeIntervalSince(clock)
                clock = Date()
                let identifiers = (0..<count).map { "synthetic\($0)" } + (0..<n).map { "real\($0)" }
                let exact = try EmbeddingIndex(identifiers: identifiers, vectors: synthetic, dimension: d)
                synthetic = []
                let exactLoadSeconds = Date().timeIntervalSince(clock)
                let realIndex = try EmbeddingIndex(identifiers: (0..<n).map { "real\($0)" }, vectors: realRows, dimension: d)
                var queryList = (0..<queries).map { Array(queryVectors[($0 * d)..<(($0 + 1) * d)]) }
                queryList += (0..<min(100, n)).map { Array(realRows[($0 * d)..<(($0 + 1) * d)]) }
                printError("bench-ann: \(exact.count) vectors of \(d) in \(String(format: "%.1f", generateSeconds + exactLoadSeconds)) s; exact ground truth for \(queryList.count) queries...")
                let (truth, exactLatencies) = try ANNBenchmark.exactNeighbours(exact, queries: queryList, k: k)
                let exactSummary = ANNBenchmark.summary(Array(exactLatencies.prefix(exactTimed)))
                var built: [Built] = []
                for description in factory.isEmpty ? [ANNIndex.defaultFactory(count: exact.count)] : factory {
                    let before = ANNBenchmark.memory()
                    clock = Date()
                    let ann = try ANNIndex.build(from: exact, factory: description)
                    let buildSeconds = Date().timeIntervalSince(clock)
                    let after = ANNBenchmark.memory()
                    let fileBytes = try ann.serialized().count
                    printError(String(format: "bench-ann: %@ built in %.1f s", description, buildSeconds))
                    let sweep: [ANNSearchParameters] = switch ann.kind {
                    case .ivfFlat: try values(nprobe).map { ANNSearchParameters(nprobe: $0) }
                    case .hnswFlat: try values(efSearch).map { ANNSearchParameters(efSearch: $0) }
                    case .flat: [ANNSearchParameters()]
                    }
                    let results = try sweep.map { try ANNBenchmark.measure(ann, queries: queryList, truth: truth, k: k, parameters: $0) }
                    built.append(Built(factory: description, buildSeconds: buildSeconds, residentGrowthMegabytes: Double(after.resident - before.resident) / 1e6,
                                       peakRSSMegabytes: Double(after.peak) / 1e6, fileMegabytes: Double(fileBytes) / 1e6, results: results))
                }
                let report = Report(vectors: exact.count, dimension: d, realVectors: n, queries: queryList.count, k: k,
                                    medianPairCosineSynthetic: ANNBenchmark.medianPairCosine(exact), medianPairCosineReal: ANNBenchmark.medianPairCosine(realIndex),
                                    generateSeconds: generateSeconds, exactLoadSeconds: exactLoadSeconds,
                                    exactP50Milliseconds: exactSummary.p50, exactP99Milliseconds: exactSummary.p99, exactMeanMilliseconds: exactSummary.mean,
                                    indexes: built)
                if json {
                    print(try jsonText(report))
                } else {
                    print(String(format: "%d vectors x %d (%d real), %d queries, recall@%d; median pair cosine synthetic %.2f, real %.2f",
                                 report.vectors, d, n, report.queries, k, report.medianPairCosineSynthetic, report.medianPairCosineReal))
                    print(String(format: "exact (BLAS sgemv): p50 %.2f ms, p99 %.2f ms", exactSummary.p50, exactSummary.p99))
                    for b in built {
                        print(String(format: "%@: build %.1f s, +%.0f MB resident (peak RSS %.0f MB), file %.0f MB", b.factory, b.buildSeconds, b.residentGrowthMegabytes, b.peakRSSMegabytes, b.fileMegabytes))
                        for r in b.results {
                            print(String(format: "  parameter %4d: recall %.4f, p50 %.2f ms, p99 %.2f ms", r.parameter ?? 0, r.recall, r.p50Milliseconds, r.p99Milliseconds))
                        }
                    }
                }
            } catch let error as ValidationError {
                printError("error: \(errorMessage(error))")
                throw ExitCode(1)
            }
        }
    }
}
