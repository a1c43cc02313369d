import CMobileNetFaiss
import Foundation
import MobileNetIO
import MobileNetSearch

/// Errors of ``ANNIndex``: each names the file or the FAISS operation concerned.
public enum ANNError: Error, Equatable, CustomStringConvertible {
    /// FAISS refused an operation (`factory`, `train`, `add`, `search`, `write`): a bad factory
    /// string, a wrong dimension, too few training vectors...
    case faiss(operation: String, message: String)
    /// The file does not exist.
    case notFound(path: String)
    /// The file cannot be read (not a regular file, permissions).
    case unreadable(path: String, reason: String)
    /// The file is not a consistent FAISS index: truncated, damaged (the reader failed, crashed
    /// or ran out of its memory limit in the isolated process), or with sizes or links out of range.
    case damaged(path: String, reason: String)
    /// A valid FAISS file of a kind this module does not search: another index type than Flat,
    /// IVF<n>,Flat or HNSW<M>,Flat, or a metric other than inner product.
    case unsupported(path: String, reason: String)
    /// The file does not belong to the embedding index it is used with (dimension or count).
    case mismatch(path: String, reason: String)
    /// A parameter out of range (k, nprobe, efSearch, a query of the wrong size).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .faiss(let operation, let message): "FAISS \(operation) failed: \(message)"
        case .notFound(let path): "\(path): no such file"
        case .unreadable(let path, let reason): "\(path): cannot read (\(reason))"
        case .damaged(let path, let reason): "\(path): not a valid FAISS index file (\(reason))"
        case .unsupported(let path, let reason): "\(path): unsupported FAISS index (\(reason))"
        case .mismatch(let path, let reason): "\(path): does not belong to this embedding index (\(reason)); rebuild it with `mobilenet index build-ann`"
        case .invalidArgument(let message): message
        }
    }
}

extension ANNError: LocalizedError {
    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The structure of an ``ANNIndex``.
public enum ANNIndexKind: Sendable, Hashable, CustomStringConvertible {
    /// `IndexFlatIP`: exact search (for reference and tiny collections).
    case flat
    /// `IndexIVFFlat`: `lists` k-means cells; a search scans the `nprobe` nearest cells.
    case ivfFlat(lists: Int)
    /// `IndexHNSWFlat`: a hierarchical navigable small-world graph of `neighbours` links per
    /// vector and level (FAISS's `M`; twice that on level 0); a search keeps `efSearch` candidates.
    case hnswFlat(neighbours: Int)

    /// Whether this is an IVF index (whose searches take `nprobe`).
    public var isIVF: Bool { if case .ivfFlat = self { true } else { false } }
    /// Whether this is an HNSW index (whose searches take `efSearch`).
    public var isHNSW: Bool { if case .hnswFlat = self { true } else { false } }

    /// The FAISS factory string of the structure: `Flat`, `IVF1024,Flat`, `HNSW32,Flat`.
    public var description: String {
        switch self {
        case .flat: "Flat"
        case .ivfFlat(let lists): "IVF\(lists),Flat"
        case .hnswFlat(let neighbours): "HNSW\(neighbours),Flat"
        }
    }
}

/// Per-search parameters; nil keeps the value stored in the index file.
public struct ANNSearchParameters: Sendable, Hashable {
    /// IVF: how many of the nearest cells are scanned (1...lists). More is slower and closer to exact.
    public var nprobe: Int?
    /// HNSW: the size of the candidate list (at least k). More is slower and closer to exact.
    public var efSearch: Int?

    /// Parameters; nil keeps the index's stored value.
    public init(nprobe: Int? = nil, efSearch: Int? = nil) {
        self.nprobe = nprobe
        self.efSearch = efSearch
    }

    /// One of the parameters (the HTTP API calls them `nprobe` and `ef_search`).
    public enum Parameter: String, Sendable, Hashable {
        case nprobe, efSearch
    }

    /// The largest `efSearch` accepted (FAISS stores it as a 32-bit int; the candidate list of
    /// a million is far beyond any useful setting).
    public static let maximumEfSearch = 1 << 20

    /// The first problem with these parameters for a search of structure `kind` (nil: an exact
    /// search, which takes neither), or nil when they can be used: a parameter the structure does
    /// not take (an error, never silently ignored), `nprobe` outside 1...lists, `efSearch` outside
    /// 1...``maximumEfSearch``. ``ANNIndex/search(_:k:parameters:normalise:)`` checks it; a server
    /// can check it before the work of embedding a query.
    public func problem(for kind: ANNIndexKind?) -> (parameter: Parameter, problem: String)? {
        let structure = kind.map { "this one is \($0)" } ?? "this one is searched exactly, without an ANN file"
        if let nprobe {
            guard kind?.isIVF == true else { return (.nprobe, "nprobe applies to an IVF index; \(structure)") }
            guard nprobe >= 1 else { return (.nprobe, "nprobe must be at least 1, got \(nprobe)") }
            if case .ivfFlat(let lists) = kind, nprobe > lists {
                return (.nprobe, "nprobe must be at most the \(lists) lists of this index, got \(nprobe)")
            }
        }
        if let efSearch {
            guard kind?.isHNSW == true else { return (.efSearch, "efSearch applies to an HNSW index; \(structure)") }
            guard (1...Self.maximumEfSearch).contains(efSearch) else { return (.efSearch, "efSearch must be in 1...\(Self.maximumEfSearch), got \(efSearch)") }
        }
        return nil
    }
}

/// How ``ANNIndex/init(contentsOf:isolation:)`` runs FAISS's reader on a file.
public enum ANNFileIsolation: Sendable, Hashable {
    /// First in a forked child process (address space limited to this process's plus twice the
    /// file size plus 1 GiB, killed after `timeout` seconds) that reads and checks the file; only
    /// when it succeeds is the file read in this process. FAISS's reader trusts the sizes in the
    /// file, so a damaged file could otherwise allocate without bound or crash the process.
    case childProcess(timeout: Double)
    /// Only in this process (the header and the structure are still checked): for files this
    /// program wrote.
    case inProcess

    /// A child process stopped after 10 minutes (reading a 5 GB index takes seconds).
    public static let `default` = ANNFileIsolation.childProcess(timeout: 600)
}

/// An approximate nearest-neighbour index of FAISS 1.7.3 over L2-normalised embeddings, with the
/// inner-product metric (`METRIC_INNER_PRODUCT`): on unit vectors the inner product is the
/// cosine similarity, so scores are the same as ``/MobileNetSearch/EmbeddingIndex``'s. The ids of
/// the vectors are the rows of the embedding index they were built from (0..<count, in its
/// order), so a file belongs to one embedding index; ``check(matches:path:)`` refuses another.
///
/// Files are FAISS's own format (`faiss.write_index`): Python's `faiss.read_index` opens what
/// ``write(to:overwrite:)`` writes and the reverse. Only flat-storage indexes (`Flat`,
/// `IVF<n>,Flat`, `HNSW<M>,Flat`) are accepted, whose scores are exact cosines of the vectors found.
///
/// Searching is safe from several threads at once (FAISS searches are `const`; IVF's `nprobe`
/// travels with each call; an HNSW search at another `efSearch` than the stored one sets the
/// index's own value for its duration under an exclusive lock, because FAISS 1.7.3 sizes the
/// candidate queue from it and ignores `SearchParametersHNSW.efSearch` there). Building is not.
public final class ANNIndex: @unchecked Sendable {
    let handle: OpaquePointer

    /// Values per vector.
    public let dimension: Int
    /// The index structure.
    public let kind: ANNIndexKind

    /// Number of vectors.
    public var count: Int { Int(mnf_ntotal(handle)) }

    /// The stored search parameter: IVF `nprobe` or HNSW `efSearch` (nil for Flat).
    public var defaultSearchParameter: Int? {
        let value = mnf_search_parameter(handle)
        return value > 0 ? Int(value) : nil
    }

    init(handle: OpaquePointer) {
        self.handle = handle
        dimension = Int(mnf_dimension(handle))
        kind = switch Int(mnf_kind(handle)) {
        case Int(MNF_KIND_IVF_FLAT): .ivfFlat(lists: Int(mnf_nlist(handle)))
        case Int(MNF_KIND_HNSW_FLAT): .hnswFlat(neighbours: Int(mnf_hnsw_neighbours(handle)))
        default: .flat
        }
    }

    deinit { mnf_free(handle) }

    /// Error messages from the shim.
    static let errorSize = 1024

    /// Calls a shim function with an error buffer: its return code (`MNF_OK`...) and message.
    static func call(_ body: (UnsafeMutablePointer<CChar>, Int) -> Int32) -> (code: Int, message: String) {
        var buffer = [CChar](repeating: 0, count: errorSize)
        let code = Int(buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, errorSize) })
        let message = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return (code, message)
    }

    /// Sets the stored IVF `nprobe` or HNSW `efSearch`, written with the file (faiss writes both).
    ///
    /// - Throws: ``ANNError/invalidArgument(_:)`` for a Flat index (which stores neither), a value
    ///   below 1, (IVF) above the list count or (HNSW) above 1,048,576 (the largest efSearch a
    ///   search and the file reader accept) — ``storedParameterProblem(_:for:)``.
    public func setDefaultSearchParameter(_ value: Int) throws(ANNError) {
        if let problem = Self.storedParameterProblem(value, for: kind) { throw .invalidArgument(problem) }
        mnf_set_search_parameter(handle, Int64(value))
    }

    /// Why `value` cannot be the stored search parameter of an index of structure `kind` (IVF
    /// `nprobe` in 1...lists, HNSW `efSearch` in 1...``ANNSearchParameters/maximumEfSearch``; a
    /// Flat index stores none), or nil when it can. The message names the value and the structure.
    public static func storedParameterProblem(_ value: Int, for kind: ANNIndexKind) -> String? {
        let parameters: ANNSearchParameters
        switch kind {
        case .ivfFlat: parameters = ANNSearchParameters(nprobe: value)
        case .hnswFlat: parameters = ANNSearchParameters(efSearch: value)
        case .flat: return "search parameter \(value): \(kind) is searched exactly and stores none (nprobe is for IVF indexes, efSearch for HNSW)"
        }
        return parameters.problem(for: kind).map { "search parameter \(value) for \(kind): \($0.problem)" }
    }

    // MARK: Building

    /// The factory string used when none is given, for `count` vectors: `Flat` below 10,000
    /// vectors (exact; a search of 10,000 1280-d vectors takes a few milliseconds), else
    /// `IVF<n>,Flat` with `n` the power of two nearest to √count (1024 for a million), trained on
    /// a sample of ``trainingSampleSize(lists:count:)``. Not HNSW, which keeps its graph (2·M
    /// neighbour ids per vector and level) beside the vectors and takes longer to build; choose
    /// it with `HNSW<M>,Flat` for the lowest latency at high recall.
    public static func defaultFactory(count: Int) -> String {
        guard count >= 10_000 else { return "Flat" }
        let root = Double(count).squareRoot()
        let lists = 1 << Int((log2(root)).rounded())
        return "IVF\(lists),Flat"
    }

    /// Vectors an IVF index of `lists` cells is trained on: 64 per cell (FAISS warns below 39),
    /// at most all of them. k-means costs O(sample × lists × dimension) per iteration.
    public static func trainingSampleSize(lists: Int, count: Int) -> Int { min(count, 64 * lists) }

    /// The `efSearch` stored in HNSW indexes this module builds (FAISS's default, 16, loses recall
    /// on 1280-d embeddings).
    public static let defaultEfSearch = 64

    /// The `nprobe` stored in IVF indexes this module builds: lists/64, at least 8 (16 of 1024 for
    /// a million vectors; measured in docs/similarity.md).
    public static func defaultNprobe(lists: Int) -> Int { min(lists, max(8, lists / 64)) }

    /// Builds an index over all vectors of `index` (ids = its rows), with the inner-product metric.
    ///
    /// - Parameters:
    ///   - index: the embedding index (its rows are already L2-normalised).
    ///   - factory: a FAISS `index_factory` string (`"IVF1024,Flat"`, `"HNSW32,Flat"`, `"Flat"`),
    ///     default ``defaultFactory(count:)``.
    ///   - trainingSample: vectors to train on (IVF); default ``trainingSampleSize(lists:count:)``,
    ///     taken at evenly spaced rows.
    ///   - searchParameter: the stored IVF `nprobe` or HNSW `efSearch`, default
    ///     ``defaultNprobe(lists:)`` / ``defaultEfSearch``; checked (``storedParameterProblem(_:for:)``)
    ///   before any training or adding.
    ///   - progress: (vectors added, total) after each block.
    /// - Throws: ``ANNError/faiss(operation:message:)`` for a bad factory string or a FAISS
    ///   failure; ``ANNError/unsupported(path:reason:)`` for an index kind other than flat storage;
    ///   ``ANNError/invalidArgument(_:)`` for sizes that could not be built (`checkSizes(factory:count:)`)
    ///   or a `searchParameter` the structure does not take — all before k-means or adding.
    /// - Complexity: IVF: O(sample × lists × d) per k-means iteration and O(count × lists × d) to
    ///   add; HNSW: about O(count × log(count) × M × d).
    public static func build(from index: EmbeddingIndex, factory: String? = nil, searchParameter: Int? = nil, trainingSample: Int? = nil,
                             progress: ((Int, Int) -> Void)? = nil) throws(ANNError) -> ANNIndex {
        let description = factory ?? defaultFactory(count: index.count)
        try checkSizes(factory: description, count: index.count)
        var handle: OpaquePointer?
        let made = call { mnf_index_factory(Int32(index.dimension), description, 1, &handle, $0, $1) }
        guard made.code == Int(MNF_OK), let handle else {
            // FAISS's own text is an assertion or parser message ("Error: 'metric == METRIC_L2'
            // failed" for "LSH"); say what is supported as well.
            throw .faiss(operation: "index_factory(\"\(description)\")",
                         message: made.message + " (supported here: Flat, IVF<n>,Flat and HNSW<M>,Flat)")
        }
        let ann = ANNIndex(handle: handle)
        guard Int(mnf_kind(handle)) != Int(MNF_KIND_OTHER) else {
            throw .unsupported(path: description, reason: "only Flat, IVF<n>,Flat and HNSW<M>,Flat are supported (exact cosine scores)")
        }
        if let searchParameter, let problem = storedParameterProblem(searchParameter, for: ann.kind) { throw .invalidArgument(problem) }
        if mnf_is_trained(handle) == 0 {
            var lists = 1
            if case .ivfFlat(let n) = ann.kind { lists = n }
            let size = max(1, min(index.count, trainingSample ?? trainingSampleSize(lists: lists, count: index.count)))
            var sample = [Float]()
            sample.reserveCapacity(size * index.dimension)
            for i in 0..<size {
                let row = Int((Double(i) * Double(index.count) / Double(size)).rounded(.down))
                index.withVectors(rows: row..<(row + 1)) { sample.append(contentsOf: $0) }
            }
            let trained = sample.withUnsafeBufferPointer { x in call { mnf_train(handle, Int64(size), x.baseAddress, $0, $1) } }
            guard trained.code == Int(MNF_OK) else { throw .faiss(operation: "train", message: trained.message) }
        }
        let block = 65_536
        var start = 0
        while start < index.count {
            let rows = start..<min(index.count, start + block)
            let added = index.withVectors(rows: rows) { x in call { mnf_add(handle, Int64(rows.count), x.baseAddress, $0, $1) } }
            guard added.code == Int(MNF_OK) else { throw .faiss(operation: "add", message: added.message) }
            start = rows.upperBound
            progress?(start, index.count)
        }
        switch ann.kind {
        case .ivfFlat(let lists): mnf_set_search_parameter(handle, Int64(searchParameter ?? defaultNprobe(lists: lists)))
        case .hnswFlat: mnf_set_search_parameter(handle, Int64(searchParameter ?? defaultEfSearch))
        case .flat: break
        }
        return ann
    }

    /// The largest HNSW `M` accepted: FAISS keeps 2·M neighbour ids per vector on level 0, and
    /// values above 64 bring no recall on embeddings (FAISS's own guidance is 4...64).
    public static let maximumHNSWNeighbours = 512

    /// Refuses, before FAISS allocates anything, sizes in a factory string that would make it
    /// allocate without bound: `HNSW<M>` with M outside 2...``maximumHNSWNeighbours``, and
    /// `IVF<n>` with more lists than vectors to train them on (k-means needs at least one vector
    /// per list; FAISS allocates the n lists when the index is made).
    ///
    /// - Throws: ``ANNError/invalidArgument(_:)`` naming the size.
    static func checkSizes(factory: String, count: Int) throws(ANNError) {
        /// The number after `prefix`, saturated at `Int.max`, and its digits as written.
        func number(after prefix: String) -> (value: Int, text: Substring)? {
            guard let range = factory.range(of: prefix) else { return nil }
            let digits = factory[range.upperBound...].prefix { $0.isASCII && $0.isNumber }
            return digits.isEmpty ? nil : (Int(digits) ?? Int.max, digits)
        }
        if let m = number(after: "HNSW"), !(2...maximumHNSWNeighbours).contains(m.value) {
            throw .invalidArgument("\(factory): HNSW M must be in 2...\(maximumHNSWNeighbours), got \(m.text) (16 or 32 is usual)")
        }
        if let lists = number(after: "IVF"), lists.value < 1 || lists.value > max(1, count) {
            throw .invalidArgument("\(factory): \(lists.text) IVF lists for \(count) vector\(count == 1 ? "" : "s"); k-means needs at least one vector per list (the default for this many: \(defaultFactory(count: count)))")
        }
    }

    /// Adds vectors with explicit ids (`add_with_ids`; IVF indexes only — FAISS's Flat and HNSW
    /// indexes number vectors themselves and refuse). Rows are used as given: normalise them first.
    ///
    /// - Parameters:
    ///   - vectors: row-major `[ids.count, dimension]`.
    ///   - ids: one id per row.
    /// - Throws: ``ANNError/invalidArgument(_:)`` for sizes that do not fit, ``ANNError/faiss(operation:message:)``.
    public func add(_ vectors: [Float], ids: [Int]) throws(ANNError) {
        guard vectors.count == ids.count * dimension else {
            throw .invalidArgument("\(vectors.count) values for \(ids.count) ids of \(dimension)-d vectors")
        }
        let ids64 = ids.map { Int64($0) }
        let result = vectors.withUnsafeBufferPointer { x in
            ids64.withUnsafeBufferPointer { i in ANNIndex.call { mnf_add_with_ids(handle, Int64(ids.count), x.baseAddress, i.baseAddress, $0, $1) } }
        }
        guard result.code == Int(MNF_OK) else { throw .faiss(operation: "add_with_ids", message: result.message) }
    }

    // MARK: Search

    /// One neighbour: the row (id) and its inner product with the query — the cosine similarity
    /// for normalised vectors, in -1...1.
    public struct Neighbor: Sendable, Hashable {
        /// The vector's id: its row in the embedding index the file was built from.
        public var row: Int
        /// Inner product with the (normalised) query.
        public var score: Float
    }

    /// The `k` approximate nearest neighbours of each query, best first.
    ///
    /// - Parameters:
    ///   - queries: row-major `[n, dimension]`; each row is L2-normalised here unless
    ///     `normalise` is false.
    ///   - k: neighbours per query (fewer when the index holds fewer, or the IVF cells scanned do).
    ///   - parameters: nprobe / efSearch for this call.
    ///   - normalise: L2-normalise each query row first (default true; false for rows already normalised).
    /// - Throws: ``ANNError/invalidArgument(_:)`` for sizes, a zero query or parameters out of
    ///   range; ``ANNError/faiss(operation:message:)``.
    public func search(_ queries: [Float], k: Int, parameters: ANNSearchParameters = ANNSearchParameters(), normalise: Bool = true) throws(ANNError) -> [[Neighbor]] {
        guard dimension > 0, !queries.isEmpty, queries.count % dimension == 0 else {
            throw .invalidArgument("queries have \(queries.count) values, not a multiple of the dimension \(dimension)")
        }
        guard k >= 1, k <= 100_000 else { throw .invalidArgument("k must be in 1...100000, got \(k)") }
        if let (_, problem) = parameters.problem(for: kind) { throw .invalidArgument(problem) }
        let n = queries.count / dimension
        var x = queries
        if normalise {
            for q in 0..<n {
                let range = (q * dimension)..<((q + 1) * dimension)
                let sum = x[range].reduce(0.0) { $0 + Double($1) * Double($1) }
                guard sum > 0, sum.isFinite else { throw .invalidArgument("query \(q) is all zeros or not finite") }
                let scale = Float(1 / sum.squareRoot())
                for i in range { x[i] *= scale }
            }
        }
        var distances = [Float](repeating: 0, count: n * k)
        var labels = [Int64](repeating: -1, count: n * k)
        let nprobe = Int64(parameters.nprobe ?? 0), ef = Int64(max(parameters.efSearch ?? 0, parameters.efSearch != nil ? k : 0))
        let result = x.withUnsafeBufferPointer { xp in
            distances.withUnsafeMutableBufferPointer { dp in
                labels.withUnsafeMutableBufferPointer { lp in
                    ANNIndex.call { mnf_search(handle, Int64(n), xp.baseAddress, Int64(k), nprobe, ef, dp.baseAddress, lp.baseAddress, $0, $1) }
                }
            }
        }
        guard result.code == Int(MNF_OK) else { throw .faiss(operation: "search", message: result.message) }
        let total = count
        return (0..<n).map { q in
            (0..<k).compactMap { j in
                let label = labels[q * k + j]
                guard label >= 0, label < total else { return nil }
                return Neighbor(row: Int(label), score: min(1, max(-1, distances[q * k + j])))
            }
        }
    }

    /// Checks that this index was built from `index`: same dimension and vector count.
    ///
    /// - Parameters:
    ///   - index: the exact index the rows come from.
    ///   - path: the file, for the message.
    /// - Throws: ``ANNError/mismatch(path:reason:)``.
    public func check(matches index: EmbeddingIndex, path: String) throws(ANNError) {
        guard dimension == index.dimension else {
            throw .mismatch(path: path, reason: "it holds \(dimension)-d vectors, the index \(index.dimension)-d ones")
        }
        guard count == index.count else {
            throw .mismatch(path: path, reason: "it holds \(count) vectors, the index \(index.count) (images added or removed since it was built?)")
        }
    }

    /// Checks that this index holds exactly `index`'s vectors, row for row (within `tolerance`
    /// per value): a file built before images were added, removed or re-embedded can have the
    /// same count and dimension and still name other rows (every row after a replaced image
    /// shifts by one), which ``check(matches:path:)`` cannot see. Flat, IVF-Flat and HNSW-Flat
    /// files store the vectors themselves, so they are compared in blocks of 16,384 rows (for
    /// 1M 1280-d vectors a few seconds, small beside loading the embeddings). Call it once when
    /// a file is opened for an index, not per query.
    ///
    /// - Parameters:
    ///   - index: the embedding index the file should belong to.
    ///   - path: the file, for the message.
    ///   - tolerance: the largest difference per value (default 1e-4: vectors normalised again
    ///     by another program, such as Python writing the file, still match).
    /// - Throws: ``ANNError/mismatch(path:reason:)`` naming the first row that differs (and
    ///   its identifier), after the checks of ``check(matches:path:)``.
    public func verify(matches index: EmbeddingIndex, path: String, tolerance: Float = 1e-4) throws(ANNError) {
        try check(matches: index, path: path)
        let block = 16_384
        var stored = [Float](repeating: 0, count: min(block, max(count, 1)) * dimension)
        for start in stride(from: 0, to: count, by: block) {
            let rows = start..<min(count, start + block)
            let result = stored.withUnsafeMutableBufferPointer { out in
                ANNIndex.call { mnf_reconstruct_range(handle, Int64(rows.lowerBound), Int64(rows.count), out.baseAddress, $0, $1) }
            }
            guard result.code == Int(MNF_OK) else { throw .faiss(operation: "reconstruct", message: result.message) }
            let differing: Int? = index.withVectors(rows: rows) { expected in
                for r in 0..<rows.count {
                    let base = r * dimension
                    for j in 0..<dimension where !(abs(expected[base + j] - stored[base + j]) <= tolerance) { return rows.lowerBound + r }
                }
                return nil
            }
            if let row = differing {
                throw .mismatch(path: path, reason: "its vector \(row) is not the index's '\(index.identifiers[row])' (built before images were added, removed or re-embedded? build it again with mobilenet index build-ann)")
            }
        }
    }

    // MARK: Files

    /// The index in FAISS's file format (`faiss::write_index`), as `faiss.read_index` reads it.
    ///
    /// - Throws: ``ANNError/faiss(operation:message:)``.
    public func serialized() throws(ANNError) -> Data {
        var bytes: UnsafeMutablePointer<UInt8>?
        var size = 0
        let result = ANNIndex.call { mnf_serialize(handle, &bytes, &size, $0, $1) }
        guard result.code == Int(MNF_OK), let bytes else { throw .faiss(operation: "write_index", message: result.message) }
        return Data(bytesNoCopy: bytes, count: size, deallocator: .free)
    }

    /// Writes the index atomically (``/MobileNetIO/AtomicFile``): readers never see a partial file.
    ///
    /// - Parameters:
    ///   - url: the file to write.
    ///   - overwrite: replace an existing file.
    /// - Throws: ``/MobileNetIO/AtomicFileError`` (exists, I/O), ``ANNError``.
    public func write(to url: URL, overwrite: Bool) throws {
        try AtomicFile.write(try serialized(), to: url, overwrite: overwrite)
    }

    /// Reads a `.faiss` file (written by this module or by Python's `faiss.write_index`).
    ///
    /// The file is hostile input. Before FAISS sees it, its header is parsed here
    /// (``ANNFileHeader``): a known index type, a dimension in 1...65536, a vector count whose
    /// vectors fit in the file (size ≥ header + count × dimension × 4). Then, with
    /// ``ANNFileIsolation/childProcess(timeout:)``, a forked child with limited memory reads it
    /// with FAISS and checks its structure; a crash, a runaway allocation or a hang ends only the
    /// child. Finally this process reads it and checks the structure again: list sizes and ids in
    /// range (IVF), graph links and levels in range (HNSW), storage sizes matching the header.
    ///
    /// - Throws: ``ANNError`` naming the file: ``ANNError/notFound(path:)``,
    ///   ``ANNError/unreadable(path:reason:)``, ``ANNError/damaged(path:reason:)`` (truncated,
    ///   inconsistent, the reader failed or crashed), ``ANNError/unsupported(path:reason:)``
    ///   (another index type or metric).
    public convenience init(contentsOf url: URL, isolation: ANNFileIsolation = .default) throws(ANNError) {
        let path = url.path
        // Opened once: the header, the isolated child and this process read the same file, so
        // a file swapped in at the path after the check is never read.
        let fd = try ANNFileHeader.openForReading(path)
        defer { close(fd) }
        let header = try ANNFileHeader(fileDescriptor: fd, path: path)
        if case .childProcess(let timeout) = isolation {
            let allowance = UInt64(header.fileSize) * 2 + (1 << 30)
            let checked = ANNIndex.call { mnf_check_fd_isolated(fd, allowance, Int32(min(timeout, 86_400) * 1000), $0, $1) }
            try ANNIndex.raise(checked, path: path)
        }
        var handle: OpaquePointer?
        let read = ANNIndex.call { mnf_read_fd(fd, &handle, $0, $1) }
        try ANNIndex.raise(read, path: path)
        guard let handle else { throw .damaged(path: path, reason: "the reader returned no index") }
        self.init(handle: handle)
        guard mnf_metric(handle) == 0 else {
            throw .unsupported(path: path, reason: "metric \(mnf_metric(handle) == 1 ? "L2" : "type \(mnf_metric(handle))"); cosine search needs METRIC_INNER_PRODUCT on normalised vectors")
        }
        guard dimension == header.dimension, count == header.count else {
            throw .damaged(path: path, reason: "the header and the index read disagree")
        }
    }

    /// Turns a shim result into the file's error.
    static func raise(_ result: (code: Int, message: String), path: String) throws(ANNError) {
        switch result.code {
        case Int(MNF_OK): return
        case Int(MNF_INVALID) where result.message.hasPrefix("unsupported"): throw .unsupported(path: path, reason: result.message)
        case Int(MNF_SYSTEM): throw .unreadable(path: path, reason: result.message)
        default: throw .damaged(path: path, reason: result.message)
        }
    }
}
