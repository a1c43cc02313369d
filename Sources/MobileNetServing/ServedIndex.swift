import Foundation
import MobileNetANN
import MobileNetIO
import MobileNetKernels
import MobileNetPipeline
import MobileNetSearch
import MobileNetStore

/// An `--index NAME=DB` specification: a served name and an image index database
/// (`mobilenet index add`), optionally with an approximate-search file (`--ann NAME=FILE`).
public struct IndexSpecification: Sendable, Hashable, CustomStringConvertible {
    /// The served name (the rules of ``ModelSpecification/name``).
    public var name: String
    /// The SQLite index file.
    public var path: String
    /// A FAISS index file built from this index's embeddings (`mobilenet index build-ann`, or
    /// Python `faiss.write_index` over the same rows); nil: exact search.
    public var annPath: String?

    /// A specification from its parts.
    public init(name: String, path: String, annPath: String? = nil) {
        (self.name, self.path, self.annPath) = (name, path, annPath)
    }

    /// Parses `NAME=DB` (the first `=` separates them).
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)`` naming the text.
    public init(parsing text: String) throws(ServingError) {
        let spec: ModelSpecification
        do { spec = try ModelSpecification(parsing: text) } catch {
            throw .invalidSpecification(error.description.replacingOccurrences(of: "NAME=PATH", with: "NAME=DB")
                .replacingOccurrences(of: "imagenet=mobilenet_v2_weights.h5", with: "photos=photos.db"))
        }
        (name, path, annPath) = (spec.name, spec.path, nil)
    }

    public var description: String { "\(name)=\(path)" + (annPath.map { " (ann \($0))" } ?? "") }

    /// Attaches `--ann NAME=FILE` texts to the indexes of the same name.
    ///
    /// - Parameters:
    ///   - annTexts: `NAME=FILE` texts (the first `=` separates them).
    ///   - indexes: the `--index` specifications.
    /// - Returns: `indexes` with ``annPath`` set where a text names them.
    /// - Throws: ``ServingError/invalidSpecification(_:)`` for a malformed text, a name no
    ///   `--index` has, or two files for one index.
    public static func attachingANN(_ annTexts: [String], to indexes: [IndexSpecification]) throws(ServingError) -> [IndexSpecification] {
        var result = indexes
        var attached = Set<String>()
        for text in annTexts {
            let spec: ModelSpecification
            do { spec = try ModelSpecification(parsing: text) } catch {
                throw .invalidSpecification(error.description.replacingOccurrences(of: "NAME=PATH", with: "NAME=FILE")
                    .replacingOccurrences(of: "imagenet=mobilenet_v2_weights.h5", with: "photos=photos.faiss"))
            }
            guard let position = result.firstIndex(where: { $0.name == spec.name }) else {
                let served = indexes.map(\.name)
                throw .invalidSpecification("--ann \(text): no --index is named '\(spec.name)'" + (served.isEmpty ? " (no index is served)" : " (indexes: \(served.joined(separator: ", ")))"))
            }
            guard attached.insert(spec.name).inserted else { throw .invalidSpecification("two --ann files for index '\(spec.name)'") }
            result[position].annPath = spec.path
        }
        return result
    }
}

/// An image index served for similarity search: its embeddings held in memory, and the
/// backbone it was built with as an embedder for the queries.
public final class ServedIndex: Sendable {
    /// The served name.
    public let name: String
    /// The index database.
    public let source: URL
    /// The indexed embeddings (one per image, identified by its path).
    public let search: EmbeddingIndex
    /// The approximate-search index queries go through (checked at load to hold ``search``'s
    /// vectors, row for row); nil: exact search.
    public let ann: ANNIndex?
    /// The ANN file, named in errors.
    public let annSource: URL?
    /// The index's backbone as an embedder (``ServedModelKind/embedder``), with the preprocessing
    /// the queries get (the one the index was built with).
    public let embedder: ServedModel
    /// The indexed paths and the SHA-256 of their bytes when indexed: the only files, and the
    /// only contents, ``image(file:maxBytes:)`` serves.
    private let files: [String: String]

    private init(name: String, source: URL, search: EmbeddingIndex, ann: ANNIndex?, annSource: URL?, embedder: ServedModel, files: [String: String]) {
        self.name = name
        self.source = source
        self.search = search
        self.ann = ann
        self.annSource = annSource
        self.embedder = embedder
        self.files = files
    }

    /// The encoded bytes of an indexed image, to show a match (the thumbnails of the page at `/`).
    ///
    /// Only paths the index holds are read, only regular files (checked on the opened file, so a
    /// path replaced by a FIFO or a device after the check is not read), at most `maxBytes`, and
    /// only when the bytes are the ones indexed (their SHA-256 is the one the index recorded: a
    /// path re-pointed by a symbolic link, or a file replaced since, is refused) and an image
    /// format browsers show (JPEG, PNG, GIF, BMP, WebP, detected from the bytes).
    ///
    /// - Parameters:
    ///   - file: the path as a similarity match names it (``SimilarityEntry/file``).
    ///   - maxBytes: the largest file returned.
    /// - Returns: the bytes and their media type (`image/jpeg`, ...).
    /// - Throws: ``ServingError/imageNotFound(index:file:reason:)``: not in the index, gone,
    ///   not a regular file, larger than `maxBytes`, or not an image.
    public func image(file: String, maxBytes: Int) throws(ServingError) -> IndexedImage {
        guard let indexedHash = files[file] else { throw .imageNotFound(index: name, file: file, reason: "the index holds no such path") }
        let fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw .imageNotFound(index: name, file: file, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw .imageNotFound(index: name, file: file, reason: "not a regular file")
        }
        guard info.st_size <= maxBytes else {
            throw .imageNotFound(index: name, file: file, reason: "\(info.st_size) bytes, more than the \(maxBytes) shown")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var filled = 0
        while filled < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            filled += n
        }
        bytes.removeSubrange(filled...)
        guard SHA256.hex(Data(bytes)) == indexedHash else {
            throw .imageNotFound(index: name, file: file, reason: "the file has changed since it was indexed (run mobilenet index sync)")
        }
        let types: [ImageFormat: String] = [.jpeg: "image/jpeg", .png: "image/png", .gif: "image/gif", .bmp: "image/bmp", .webp: "image/webp"]
        guard let format = ImageFormat.detect(bytes), let type = types[format] else {
            throw .imageNotFound(index: name, file: file, reason: "not a JPEG, PNG, GIF, BMP or WebP file")
        }
        return IndexedImage(bytes: Data(bytes), mediaType: type)
    }

    /// The `top` indexed images most similar to an embedding: through ``ann`` when one is loaded
    /// (`parameters` then set nprobe / efSearch for this query), else exact.
    ///
    /// - Parameters:
    ///   - embedding: a query embedding of the index's dimension (normalised here).
    ///   - top: how many matches at most.
    ///   - parameters: ANN search parameters (nil fields: the file's stored values); ignored by exact search.
    /// - Throws: ``/MobileNetSearch/SearchError`` (wrong dimension, zero query),
    ///   ``/MobileNetANN/ANNError`` (parameters out of range, FAISS failures).
    public func matches(for embedding: [Float], top: Int, parameters: ANNSearchParameters = ANNSearchParameters()) throws -> [SimilarityMatch] {
        try search.search(embedding, top: top, ann: ann, parameters: parameters, annPath: annSource?.path ?? "ANN index")
    }

    /// Opens the index read-only, loads its embeddings and the backbone it was built with.
    ///
    /// The backbone's weight file is the first of `candidateWeights` (for example the files of
    /// the served models) whose SHA-256 is the one the index recorded, else what `resolver`
    /// finds; it must be the index's backbone.
    ///
    /// - Parameters:
    ///   - name: the served name.
    ///   - url: the index database.
    ///   - preprocessing: the preprocessing the index was built with (default: the Keras default).
    ///   - candidateWeights: weight files to try first.
    ///   - backend: the kernels that run the backbone.
    ///   - resolver: where to look for the backbone's weights otherwise.
    ///   - annFile: a FAISS file built from this index's embeddings; it is read in a forked,
    ///     memory-limited child first (``/MobileNetANN/ANNFileIsolation/default``), then checked
    ///     against the loaded embeddings, vector by vector (``/MobileNetANN/ANNIndex/verify(matches:path:tolerance:)``).
    /// - Throws: ``ServingError/indexLoadFailed(name:path:reason:)``: no such file, an empty
    ///   index, no embeddings made with this preprocessing, no matching weight file, or an ANN
    ///   file that is damaged or was built from other embeddings (named as the path then).
    public static func load(name: String, contentsOf url: URL, preprocessing: PreprocessingConfiguration? = nil, candidateWeights: [URL] = [],
                            backend: any InferenceBackend, resolver: WeightsResolver = WeightsResolver(),
                            annFile: URL? = nil) async throws(ServingError) -> ServedIndex {
        do {
            guard FileKind(path: url.path) != .missing else { throw LoadFailure(message: "no such file") }
            let index = try ImageIndex(url: url, readOnly: true)
            guard let identity = try index.backbone() else { throw LoadFailure(message: "the index holds no images") }
            let matching = candidateWeights.first { (try? SHA256.hex(contentsOf: $0)) == identity.weightsSHA256 }
            let backbone = try await Backbone.load(matching: identity, weightsPath: matching?.path, source: url.path, backend: backend, resolver: resolver)
            let configuration = preprocessing ?? .standard
            let (search, _) = try index.searchIndex(preprocessing: PreprocessingIdentity(configuration, height: identity.inputHeight, width: identity.inputWidth))
            let embedder = ServedModel(name: name, backbone: backbone, preprocessing: configuration)
            let files = Dictionary(try index.files().map { ($0.path, $0.contentSHA256) }, uniquingKeysWith: { first, _ in first })
            var ann: ANNIndex?
            if let annFile {
                do {
                    let loaded = try ANNIndex(contentsOf: annFile)
                    try loaded.verify(matches: search, path: annFile.path)
                    ann = loaded
                } catch {
                    throw ServingError.indexLoadFailed(name: name, path: annFile.path, reason: error.description)
                }
            }
            return ServedIndex(name: name, source: url, search: search, ann: ann, annSource: annFile, embedder: embedder, files: files)
        } catch let error as ServingError {
            throw error
        } catch {
            throw .indexLoadFailed(name: name, path: url.path, reason: (error as? LocalizedError)?.errorDescription ?? String(describing: error))
        }
    }
}

private struct LoadFailure: Error, LocalizedError {
    var message: String
    var errorDescription: String? { message }
}

/// An indexed image's encoded bytes, as ``ServedIndex/image(file:maxBytes:)`` read them.
public struct IndexedImage: Sendable, Hashable {
    /// The file's bytes, unchanged.
    public var bytes: Data
    /// The media type of the bytes (`image/jpeg`, `image/png`, `image/gif`, `image/bmp`, `image/webp`).
    public var mediaType: String
}

/// One match of a similarity search.
public struct SimilarityEntry: Sendable, Hashable, Codable {
    /// 1 for the most similar image.
    public var rank: Int
    /// The indexed image's path, as the index stored it.
    public var file: String
    /// The cosine similarity, -1...1 (0...1 for these embeddings; near-duplicates about 0.9 and above).
    public var similarity: Float
}

/// The result of a similarity search for one image.
public struct SimilarityResponse: Sendable, Hashable, Codable {
    /// The index's name.
    public var index: String
    /// The most similar indexed images, best first.
    public var matches: [SimilarityEntry]
}
