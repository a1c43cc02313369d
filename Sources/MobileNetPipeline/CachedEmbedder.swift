import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetStore

extension BackboneIdentity {
    /// The identity of a MobileNetV2 embedding network: its configuration and the SHA-256 of the
    /// weight file it was built from.
    ///
    /// - Throws: the file-system error when the weight file cannot be read.
    public init(configuration: MobileNetV2Configuration, weightsFile: URL) throws {
        self.init(alpha: configuration.alpha, inputHeight: configuration.inputHeight, inputWidth: configuration.inputWidth,
                  pooling: configuration.pooling?.rawValue ?? "none", weightsSHA256: try SHA256.hex(contentsOf: weightsFile))
    }
}

/// One image's embedding with its content hash.
public struct ImageEmbedding: Sendable, Equatable {
    /// SHA-256 (hex) of the file bytes.
    public var contentSHA256: String
    /// The pooled embedding (1280 values for alpha ≤ 1).
    public var vector: [Float]

    /// Creates an embedding.
    public init(contentSHA256: String, vector: [Float]) {
        self.contentSHA256 = contentSHA256
        self.vector = vector
    }
}

/// An image that could not be embedded, with the reason (naming the file).
public struct EmbeddingFailure: Sendable, Equatable, CustomStringConvertible {
    /// The file.
    public var url: URL
    /// Why (decoder or file-system message, naming the file).
    public var message: String
    /// The decoder's typed error, when decoding failed (nil for a file that could not be read).
    public var error: ImageError?
    /// The message.
    public var description: String { message }

    /// A failure with a message naming the file.
    public init(url: URL, message: String) {
        self.url = url
        self.message = message
    }

    /// A decoding failure.
    public init(url: URL, error: ImageError) {
        self.url = url
        self.message = error.description
        self.error = error
    }
}

/// What ``CachedEmbedder/embed(_:progress:)`` returns.
public struct EmbeddingResult: Sendable {
    /// An embedding for every file that worked, keyed by URL.
    public var embeddings: [URL: ImageEmbedding]
    /// The files that failed, with their reasons, in input order.
    public var failures: [EmbeddingFailure]
    /// How many distinct contents came from the cache.
    public var cached: Int
    /// How many distinct contents went through the network.
    public var computed: Int
}

/// The input pipeline differs from the one a model was trained with.
public struct PreprocessingMismatch: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// What the model file records.
    public var expected: PreprocessingIdentity
    /// What this pipeline does.
    public var actual: PreprocessingIdentity

    public var description: String {
        let keys = Set(expected.settings.keys).union(actual.settings.keys).sorted().filter { expected.settings[$0] != actual.settings[$0] }
        let changes = keys.map { "\($0): trained \(expected.settings[$0] ?? "-"), here \(actual.settings[$0] ?? "-")" }.joined(separator: "; ")
        return "the model was trained with other preprocessing (\(changes)); predictions would not be comparable: use the image options it was trained with"
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// Embeds image files through an ``/MobileNetStore/EmbeddingStore``: files are hashed (SHA-256 of their bytes),
/// embeddings already stored for the same content, backbone and preprocessing are reused, and
/// only the others go through the network, in batches; each batch is committed as soon as it is
/// computed, so an interrupted run loses at most one batch and the next run resumes.
///
/// A file that cannot be read or decoded is reported and skipped; the others go on.
public final class CachedEmbedder {
    /// The embedding network (`includeTop: false`, pooled).
    public let model: MobileNetV2
    /// Identity of ``model`` and its weights: part of the cache key.
    public let backbone: BackboneIdentity
    /// Identity of ``preprocessor``: part of the cache key.
    public let preprocessing: PreprocessingIdentity
    /// Turns files into model input.
    public let preprocessor: ImagePreprocessor
    /// The cache, or nil to compute everything.
    public let store: EmbeddingStore?
    /// Images per network batch (and per committed transaction).
    public let batchSize: Int
    /// Decoding threads (see ``ImageBatchPipeline/decodeThreads``); nil for the default.
    public let decodeThreads: Int?

    /// Creates an embedder for a backbone.
    ///
    /// - Parameters:
    ///   - backbone: the frozen embedding network; its identity is part of the cache key.
    ///   - preprocessor: the input pipeline; by default `ImagePreprocessor` with its defaults at
    ///     the model's input size. Its ``/MobileNetStore/PreprocessingIdentity`` is part of the cache key.
    ///   - expectedPreprocessing: when given (for example from a saved model file), the
    ///     pipeline must have exactly this identity.
    ///   - store: the embedding cache (the backbone is registered in it), or nil to compute
    ///     everything.
    ///   - runtime: network batch size and decoding threads (the backend is the backbone's).
    /// - Throws: ``/MobileNetStore/StoreError`` when the backbone cannot be registered in the store;
    ///   ``PreprocessingMismatch`` when `expectedPreprocessing` differs from the pipeline's.
    public convenience init(backbone: Backbone, preprocessor: ImagePreprocessor? = nil, expectedPreprocessing: PreprocessingIdentity? = nil,
                            store: EmbeddingStore?, runtime: RuntimeOptions) throws {
        try self.init(model: backbone.network, backbone: backbone.identity, preprocessor: preprocessor, expectedPreprocessing: expectedPreprocessing,
                      store: store, batchSize: runtime.batchSize, decodeThreads: runtime.decodeThreads)
    }

    /// Creates an embedder from its parts (see ``init(backbone:preprocessor:expectedPreprocessing:store:runtime:)``).
    ///
    /// - Throws: as the other initialiser.
    public init(model: MobileNetV2, backbone: BackboneIdentity, preprocessor: ImagePreprocessor? = nil,
                expectedPreprocessing: PreprocessingIdentity? = nil, store: EmbeddingStore?, batchSize: Int = 16, decodeThreads: Int? = nil) throws {
        self.model = model
        self.backbone = backbone
        self.preprocessor = preprocessor ?? ImagePreprocessor(height: model.configuration.inputHeight, width: model.configuration.inputWidth)
        self.preprocessing = PreprocessingIdentity(self.preprocessor)
        if let expectedPreprocessing, expectedPreprocessing != self.preprocessing {
            throw PreprocessingMismatch(expected: expectedPreprocessing, actual: self.preprocessing)
        }
        self.store = store
        self.batchSize = max(1, batchSize)
        self.decodeThreads = decodeThreads
        try store?.register(backbone)
    }

    /// Embeds `files`.
    ///
    /// Files that are not cached are decoded on worker threads while the network runs
    /// (``ImageBatchPipeline``).
    ///
    /// - Parameters:
    ///   - files: the images to embed; files with the same content are computed once.
    ///   - progress: called after each batch with (images handled, images to compute),
    ///     where handled counts the batch's failures too, so it reaches the total at the end.
    /// - Returns: an embedding for every file that worked (keyed by URL), the failures, and how
    ///   many contents came from the cache and from the network.
    /// - Throws: ``/MobileNetStore/StoreError`` when the cache cannot be read or written (never for a bad image),
    ///   and errors of the network itself.
    public func embed(_ files: [URL], progress: ((Int, Int) -> Void)? = nil) throws -> EmbeddingResult {
        var failures: [EmbeddingFailure] = []
        var hashes: [URL: FileRecord] = [:]
        for url in files where hashes[url] == nil {
            do {
                if let store {
                    hashes[url] = try store.hashFile(at: url)
                } else {
                    hashes[url] = FileRecord(path: url.path, contentSHA256: try SHA256.hex(contentsOf: url), size: 0, modificationTime: 0)
                }
            } catch let error as StoreError {
                throw error
            } catch {
                failures.append(EmbeddingFailure(url: url, message: "\(url.path): cannot read (\(error.localizedDescription))"))
            }
        }
        var known = try store?.embeddings(for: hashes.values.map(\.contentSHA256), backbone: backbone, preprocessing: preprocessing) ?? [:]
        let cachedCount = known.count
        // Unique contents still to compute, in input order.
        var pending: [URL] = []
        var seen = Set(known.keys)
        for url in files {
            guard let record = hashes[url], !seen.contains(record.contentSHA256) else { continue }
            seen.insert(record.contentSHA256)
            pending.append(url)
        }
        var computed = 0
        let pipeline = ImageBatchPipeline(model: model, preprocessor: preprocessor, batchSize: batchSize, decodeThreads: decodeThreads)
        try pipeline.run(pending) { batch in
            failures += batch.failures
            var records: [EmbeddingRecord] = []
            for (url, row) in zip(batch.files, batch.outputs) {
                guard let hash = hashes[url]?.contentSHA256 else { continue }
                known[hash] = row
                records.append(EmbeddingRecord(contentSHA256: hash, backbone: backbone.key, preprocessing: preprocessing.key, vector: row))
            }
            try store?.insert(records)
            computed += records.count
            progress?(batch.processed, batch.total)
        }
        let failedURLs = Set(failures.map(\.url))
        try store?.recordFiles(files.compactMap { url in failedURLs.contains(url) ? nil : hashes[url] })
        var result: [URL: ImageEmbedding] = [:]
        for url in files {
            guard !failedURLs.contains(url), let hash = hashes[url]?.contentSHA256 else { continue }
            if let vector = known[hash] {
                result[url] = ImageEmbedding(contentSHA256: hash, vector: vector)
            } else if !failures.contains(where: { $0.url == url }) {
                // Same content as a file that failed to decode.
                failures.append(EmbeddingFailure(url: url, message: "\(url.path): not decodable (same content as another file that failed)"))
            }
        }
        return EmbeddingResult(embeddings: result, failures: failures, cached: cachedCount, computed: computed)
    }
}
