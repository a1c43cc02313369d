import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// Python's faiss (faiss-cpu 1.7.3, the library's version, pinned in scripts/requirements-test.txt,
/// installed into .venv-test by scripts/setup-test-tools.sh) against the library's FAISS 1.7.3
/// (Debian), through scripts/faiss_interop.py.
@Suite("ANN index: files interchangeable with Python's faiss")
struct PythonInteropTests {
    static let python = TestData.repositoryRoot.appendingPathComponent(".venv-test/bin/python")
    static let script = TestData.repositoryRoot.appendingPathComponent("scripts/faiss_interop.py")

    /// Whether the tool runs; required (a failure) when MOBILENET_REQUIRE_SHARED=1.
    static var available: Bool {
        if ProcessInfo.processInfo.environment["MOBILENET_REQUIRE_SHARED"] == "1" { return true }
        guard FileManager.default.isExecutableFile(atPath: python.path),
              let result = try? Subprocess.run(python, ["-c", "import faiss, numpy"]) else { return false }
        return result.status == 0
    }

    static let missing: Comment = "Python faiss not found at \(python.path): run scripts/setup-test-tools.sh (set MOBILENET_REQUIRE_SHARED=1 to make this a failure)"

    struct Answer: Decodable { let ids: [[Int]]; let scores: [[Float]]; let ntotal: Int; let d: Int }

    static func query(_ file: URL, queries: [Float], dimension: Int, k: Int, extra: [String] = [], in dir: URL) throws -> Answer {
        let npy = dir.appendingPathComponent("queries.npy")
        try NPY.encode(Tensor(shape: [queries.count / dimension, dimension], scalars: queries)).write(to: npy)
        let result = try Subprocess.run(python, [script.path, "query", file.path, npy.path, String(k)] + extra)
        try #require(result.status == 0, "faiss_interop.py query failed: \(result.stderr)")
        return try JSONDecoder().decode(Answer.self, from: Data(result.stdout.utf8))
    }

    @Test("a file written here is read and searched by Python with the same top-10", .enabled(if: available, missing),
          arguments: ["IVF16,Flat", "HNSW16,Flat", "Flat"])
    func pythonReadsOurs(factory: String) throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let exact = try ANNIndexTests.embeddingIndex(count: 2000, dimension: 24)
        let ann = try ANNIndex.build(from: exact, factory: factory)
        let file = dir.appendingPathComponent("ours.faiss")
        try ann.write(to: file, overwrite: false)
        let raw = ANNIndexTests.clustered(count: 8, dimension: 24, clusters: 20, seed: 3)
        let normalised = try EmbeddingIndex(identifiers: (0..<8).map { "q\($0)" }, vectors: raw, dimension: 24)
        let queries = (0..<8).flatMap { normalised.vector(at: $0) }
        let extra = factory.hasPrefix("IVF") ? ["--nprobe", "4"] : factory.hasPrefix("HNSW") ? ["--ef-search", "40"] : []
        let answer = try Self.query(file, queries: queries, dimension: 24, k: 10, extra: extra + ["--normalised"], in: dir)
        #expect(answer.ntotal == 2000 && answer.d == 24)
        let parameters = factory.hasPrefix("IVF") ? ANNSearchParameters(nprobe: 4) : factory.hasPrefix("HNSW") ? ANNSearchParameters(efSearch: 40) : ANNSearchParameters()
        let ours = try ann.search(queries, k: 10, parameters: parameters, normalise: false)
        for q in 0..<8 {
            #expect(ours[q].map(\.row) == answer.ids[q], "query \(q)")
            for (a, b) in zip(ours[q].map(\.score), answer.scores[q]) { #expect(abs(a - b) < 1e-5) }
        }
    }

    @Test("a file Python wrote is read here and searched with Python's results", .enabled(if: available, missing),
          arguments: ["IVF16,Flat", "HNSW16,Flat"])
    func weReadPythons(factory: String) throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let exact = try ANNIndexTests.embeddingIndex(count: 2000, dimension: 24)
        let vectors = dir.appendingPathComponent("vectors.npy")
        try NPY.encode(Tensor(shape: [exact.count, 24], scalars: (0..<exact.count).flatMap { exact.vector(at: $0) })).write(to: vectors)
        let file = dir.appendingPathComponent("python.faiss")
        let built = try Subprocess.run(Self.python, [Self.script.path, "build", vectors.path, factory, file.path])
        try #require(built.status == 0, "faiss_interop.py build failed: \(built.stderr)")
        let ann = try ANNIndex(contentsOf: file)
        try ann.verify(matches: exact, path: file.path)  // Python stored the same vectors, row for row
        // Queries normalised once, here: both sides search the same float32 bytes (an HNSW
        // search at the stored efSearch 16 can take another path on a 1-ulp difference).
        let raw = ANNIndexTests.clustered(count: 8, dimension: 24, clusters: 20, seed: 4)
        let normalised = try EmbeddingIndex(identifiers: (0..<8).map { "q\($0)" }, vectors: raw, dimension: 24)
        let queries = (0..<8).flatMap { normalised.vector(at: $0) }
        // At the stored search parameter and, for HNSW, at another efSearch (FAISS 1.7.3 ignores
        // SearchParametersHNSW.efSearch when sizing its queue; the shim sets the index's own).
        let settings: [(extra: [String], parameters: ANNSearchParameters)] = factory.hasPrefix("HNSW")
            ? [([], ANNSearchParameters()), (["--ef-search", "200"], ANNSearchParameters(efSearch: 200))]
            : [([], ANNSearchParameters()), (["--nprobe", "3"], ANNSearchParameters(nprobe: 3))]
        for setting in settings {
            let answer = try Self.query(file, queries: queries, dimension: 24, k: 10, extra: setting.extra + ["--normalised"], in: dir)
            let ours = try ann.search(queries, k: 10, parameters: setting.parameters, normalise: false)
            for q in 0..<8 {
                #expect(ours[q].map(\.row) == answer.ids[q], "query \(q), \(setting.extra)")
                for (a, b) in zip(ours[q].map(\.score), answer.scores[q]) { #expect(abs(a - b) < 1e-5) }
            }
        }
        let ours = try ann.search(queries, k: 10, normalise: false)
        // Through the search entry point: identifiers of the embedding index, scores as cosines.
        let matches = try exact.search(Array(queries[0..<24]), top: 10, ann: ann)
        #expect(matches.map(\.identifier) == ours[0].map { "img\($0.row)" })
    }
}
