import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetPipeline
import MobileNetStore
import MobileNetTFLite

/// One class a classifier outputs.
public struct ModelClass: Sendable, Hashable, Codable {
    /// The class name (`Egyptian_cat`, or a trained model's folder name).
    public var name: String
    /// The WordNet synset id of an ImageNet class (`n02124075`); nil for other classes.
    public var synset: String?

    /// Creates a class.
    public init(name: String, synset: String?) {
        self.name = name
        self.synset = synset
    }
}

/// One class and its probability.
public struct ClassScore: Sendable, Hashable, Codable {
    /// The class name.
    public var className: String
    /// Its probability, 0...1.
    public var probability: Double

    /// Creates a score.
    public init(className: String, probability: Double) {
        self.className = className
        self.probability = probability
    }
}

/// Why a trained classifier's head cannot run on its backbone. Each case names the file.
public enum TrainedClassifierError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The head takes embeddings of another width than the backbone gives.
    case embeddingWidthMismatch(path: String, head: Int, backbone: Int)

    public var description: String {
        switch self {
        case .embeddingWidthMismatch(let path, let head, let backbone):
            "\(path): the head takes \(head)-d embeddings but the backbone gives \(backbone)-d ones"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The outputs of one network run over a batch of `N` images.
public struct ModelOutputs: Sendable, Equatable {
    /// `N` pooled embeddings (1280 values each for alpha <= 1, values 0...6).
    public var embeddings: [[Float]]
    /// For a classifier, `N` rows of class probabilities (0...1, each row sums to 1); nil for an embedder.
    public var probabilities: [[Float]]?

    /// Creates outputs.
    public init(embeddings: [[Float]], probabilities: [[Float]]?) {
        self.embeddings = embeddings
        self.probabilities = probabilities
    }
}

/// A model ready to run, whatever file it came from (``ModelFile/open(_:options:backend:resolver:)``):
/// the MobileNetV2 backbone and its head as one graph of Keras-named nodes, the classes, the
/// preprocessing its images get, and where it came from. Immutable and safe to share between threads.
///
/// Input tensors are NHWC `[N, inputHeight, inputWidth, 3]`, preprocessed as
/// ``preprocessingConfiguration`` says (`x / 127.5 - 1`, -1...1, by default).
public final class RunnableModel: Sendable {
    /// What kind of file it is.
    public let kind: ModelFileKind
    /// The file it was opened from.
    public let source: URL
    /// The network: backbone, global pooling and, for a classifier, the head (the last node
    /// gives the probabilities); for an embedder, the pooled embedding.
    public let network: MobileNetV2
    /// The classifier head at inference (Float32), also in ``network``; nil for an embedder.
    public let head: DenseHead?
    /// The identity of the embedding network (configuration and weights hash): the cache key
    /// of its embeddings.
    public let identity: BackboneIdentity
    /// The weight file of the backbone (the model file itself for Keras files).
    public let weightsURL: URL
    /// The classes in output order; empty for an embedder.
    public let classes: [ModelClass]
    /// The preprocessing settings the images get (recorded by a `mobilenet train` model file,
    /// the default or the caller's for other files); nil for an old model file that recorded
    /// only a non-default identity.
    public let preprocessingConfiguration: PreprocessingConfiguration?
    /// The cache identity of that preprocessing: embeddings made otherwise are refused unless
    /// the caller allows it.
    public let preprocessing: PreprocessingIdentity
    /// The contents of a `mobilenet train` model file (for `export`); nil for other kinds.
    public let trainedModel: ClassifierModel?
    /// The pooling of the embedding (`.avg` but for an embedder opened with `.max`).
    public let pooling: Pooling

    init(kind: ModelFileKind, source: URL, network: MobileNetV2, head: DenseHead?, identity: BackboneIdentity, weightsURL: URL,
         classes: [ModelClass], preprocessingConfiguration: PreprocessingConfiguration?, preprocessing: PreprocessingIdentity,
         trainedModel: ClassifierModel?, pooling: Pooling) {
        self.kind = kind
        self.source = source
        self.network = network
        self.head = head
        self.identity = identity
        self.weightsURL = weightsURL
        self.classes = classes
        self.preprocessingConfiguration = preprocessingConfiguration
        self.preprocessing = preprocessing
        self.trainedModel = trainedModel
        self.pooling = pooling
    }

    /// An embedder from a backbone already built (an image index's): no head, no classes.
    ///
    /// - Parameters:
    ///   - backbone: the pooled embedding network and its identity.
    ///   - preprocessing: the preprocessing its images get.
    public convenience init(embedder backbone: Backbone, preprocessing: PreprocessingConfiguration) {
        let c = backbone.network.configuration
        self.init(kind: .kerasWeightsNoTop, source: backbone.weightsURL, network: backbone.network, head: nil, identity: backbone.identity,
                  weightsURL: backbone.weightsURL, classes: [], preprocessingConfiguration: preprocessing,
                  preprocessing: PreprocessingIdentity(preprocessing, height: c.inputHeight, width: c.inputWidth),
                  trainedModel: nil, pooling: c.pooling ?? .avg)
    }

    /// The same model with other class names (a Keras model records none): the network is shared.
    ///
    /// - Parameter names: one name per output, none empty, no repeats.
    /// - Throws: ``ModelFileError/classNames(path:reason:)`` for another count, an empty or a repeated name.
    public func withClassNames(_ names: [String]) throws -> RunnableModel {
        RunnableModel(kind: kind, source: source, network: network, head: head, identity: identity, weightsURL: weightsURL,
                      classes: try ModelFile.classNames(names, count: classes.count, path: source.path),
                      preprocessingConfiguration: preprocessingConfiguration, preprocessing: preprocessing, trainedModel: trainedModel, pooling: pooling)
    }

    /// The same model with the class names of a folder of labelled images, its subfolders in
    /// sorted order (``ImageFolder``): how a Keras model, which records no names, is evaluated on
    /// a folder (as `image_dataset_from_directory` labels it).
    ///
    /// - Throws: ``ModelFileError/classNames(path:reason:)`` when the folder has another number
    ///   of classes than the model's outputs; ``DatasetError`` for the folder.
    public func withClassNames(ofFolder root: URL) throws -> RunnableModel {
        let names = try ImageFolder(root: root).classNames
        guard names.count == classes.count else {
            throw ModelFileError.classNames(path: source.path, reason: "the model has \(classes.count) classes; \(root.path) has \(names.count) class folders (\(names.prefix(20).joined(separator: ", ")))")
        }
        return try withClassNames(names)
    }

    /// Whether the model gives class probabilities.
    public var isClassifier: Bool { head != nil }
    /// The network's configuration (alpha, input size).
    public var configuration: MobileNetV2Configuration { network.configuration }
    /// The class names, in output order (empty for an embedder).
    public var classNames: [String] { classes.map(\.name) }
    /// The pooled embedding width (1280 for alpha up to 1.0).
    public var embeddingWidth: Int { network.embeddingWidth }

    /// The embedding network alone (`include_top=False`, pooled), for the embedding cache and
    /// search: the same weights, built on the same backend. An embedder is its own.
    ///
    /// - Throws: the backend's errors.
    public func backbone() throws -> Backbone {
        let embedder = network.configuration.includeTop ? try network.withoutClassifier(pooling: pooling) : network
        return Backbone(network: embedder, identity: identity, weightsURL: weightsURL)
    }

    /// The preprocessor for this model's images: the recorded or default preprocessing (or
    /// `override`) at the network's input size.
    ///
    /// - Parameters:
    ///   - override: settings to use instead (the caller warns about the differences).
    ///   - maxPixels: refuse images with more pixels (decompression bombs).
    public func preprocessor(override: PreprocessingConfiguration? = nil, maxPixels: Int = 100_000_000) -> ImagePreprocessor {
        ImagePreprocessor(configuration: override ?? preprocessingConfiguration ?? .standard, height: configuration.inputHeight,
                          width: configuration.inputWidth, maxPixels: maxPixels)
    }

    /// Runs the network on a batch: one pass gives the embeddings and, for a classifier, the
    /// probabilities.
    ///
    /// - Parameter input: `[N, inputHeight, inputWidth, 3]`, preprocessed.
    /// - Throws: the network's error (a wrongly shaped input, a backend failure).
    public func run(_ input: Tensor) throws -> ModelOutputs {
        let out = try network.forward(input)
        return ModelOutputs(embeddings: out.embedding.rows, probabilities: head == nil ? nil : out.probabilities?.rows)
    }

    /// The head on embeddings already computed (the embedding cache): the same Float32 weights
    /// and kernels as the graph's head.
    ///
    /// - Parameter embeddings: `N` rows of ``embeddingWidth`` values.
    /// - Returns: `N` rows of class probabilities; empty rows for an embedder.
    /// - Throws: ``/MobileNetModel/ModelError`` for rows of another width.
    public func probabilities(embeddings: [[Float]]) throws -> [[Float]] {
        guard let head, !embeddings.isEmpty else { return embeddings.map { _ in [] } }
        let width = head.inputWidth
        guard embeddings.allSatisfy({ $0.count == width }) else {
            throw ModelError.invalidConfiguration("the head takes \(width)-d embeddings")
        }
        return try head.probabilities(embeddings: Tensor(shape: [embeddings.count, width], scalars: embeddings.flatMap { $0 })).rows
    }

    /// The `k` most likely classes of one probability row, best first, ties by class order
    /// (Keras `decode_predictions`), with the model's class names and ImageNet synsets.
    ///
    /// - Parameters:
    ///   - probabilities: one row of ``ModelOutputs/probabilities`` (one value per class).
    ///   - k: how many (clamped to the class count).
    public func topK(_ probabilities: [Float], k: Int) -> [ClassPrediction] {
        ClassRanking.topK(probabilities, k: k).map { i in
            let c = i < classes.count ? classes[i] : ModelClass(name: "class\(i)", synset: nil)
            return ClassPrediction(index: i, synset: c.synset ?? "", name: c.name, score: probabilities[i])
        }
    }

    /// Whether the head gives the network's own probabilities from cached embeddings. False for
    /// a fully quantized `.tflite`: its head runs in integer arithmetic, so its probabilities
    /// come from a full pass (as `classify` and LiteRT give them), not from the dequantized
    /// embedding through a float head.
    public var headRunsOnEmbeddings: Bool { !(network.backend is TFLiteIntegerBackend) }

    /// The class probabilities of image files: through the embedding cache and the head when
    /// ``headRunsOnEmbeddings``, else from full network passes (no cache). Behind ``predict(_:k:preprocessor:allowOtherPreprocessing:store:runtime:progress:)``
    /// and `evaluate`.
    ///
    /// - Returns: one row per file that worked (keyed by the file); the failures.
    /// - Throws: ``ModelFileError/notAClassifier(path:)``; ``/MobileNetPipeline/PreprocessingMismatch``;
    ///   store and network errors.
    public func classProbabilities(_ files: [URL], preprocessor: ImagePreprocessor? = nil, allowOtherPreprocessing: Bool = false,
                                   store: EmbeddingStore?, runtime: RuntimeOptions,
                                   progress: ((Int, Int) -> Void)? = nil) throws -> (rows: [URL: [Float]], failures: [EmbeddingFailure]) {
        guard isClassifier else { throw ModelFileError.notAClassifier(path: source.path) }
        let preprocessor = preprocessor ?? self.preprocessor()
        if !headRunsOnEmbeddings {
            var rows: [URL: [Float]] = [:]
            var failures: [EmbeddingFailure] = []
            try ImageBatchPipeline(model: network, preprocessor: preprocessor, runtime: runtime).run(files) { batch in
                for (file, row) in zip(batch.files, batch.outputs) { rows[file] = row }
                failures += batch.failures
                progress?(batch.processed, batch.total)
            }
            return (rows, failures)
        }
        let embedder = try CachedEmbedder(backbone: try backbone(), preprocessor: preprocessor,
                                          expectedPreprocessing: allowOtherPreprocessing ? nil : preprocessing, store: store, runtime: runtime)
        let result = try embedder.embed(files, progress: progress)
        let embedded = files.compactMap { file in result.embeddings[file].map { (file, $0.vector) } }
        let probabilityRows = try probabilities(embeddings: embedded.map(\.1))
        var rows: [URL: [Float]] = [:]
        for (item, row) in zip(embedded, probabilityRows) { rows[item.0] = row }
        return (rows, result.failures)
    }

    /// The predictions for image files, through the embedding cache (see
    /// ``classProbabilities(_:preprocessor:allowOtherPreprocessing:store:runtime:progress:)``): the one call behind
    /// `mobilenet predict`.
    ///
    /// - Parameters:
    ///   - files: images; a file that fails is reported in the result, the others go on.
    ///   - k: how many classes to return per file (all when larger than the class count).
    ///   - preprocessor: by default ``preprocessor(override:maxPixels:)`` (the recorded one).
    ///   - allowOtherPreprocessing: accept a `preprocessor` whose identity differs from the
    ///     recorded preprocessing (default false: such a preprocessor is an error).
    ///   - store: the embedding cache, or nil.
    ///   - runtime: network batch size and decoding threads (the backend is the network's).
    ///   - progress: (images handled, images to compute) after each batch.
    /// - Returns: per file that worked, in input order, its top-`k` classes; the failures.
    /// - Throws: ``ModelFileError/notAClassifier(path:)`` for an embedder;
    ///   ``/MobileNetPipeline/PreprocessingMismatch``; store and network errors.
    public func predict(_ files: [URL], k: Int, preprocessor: ImagePreprocessor? = nil, allowOtherPreprocessing: Bool = false,
                        store: EmbeddingStore?, runtime: RuntimeOptions,
                        progress: ((Int, Int) -> Void)? = nil) throws -> (predictions: [(file: URL, classes: [ClassScore])], failures: [EmbeddingFailure]) {
        let (rows, failures) = try classProbabilities(files, preprocessor: preprocessor, allowOtherPreprocessing: allowOtherPreprocessing,
                                                      store: store, runtime: runtime, progress: progress)
        var predictions: [(file: URL, classes: [ClassScore])] = []
        for file in files {
            guard let row = rows[file] else { continue }
            predictions.append((file, topK(row, k: k).map { ClassScore(className: $0.name, probability: Double($0.score)) }))
        }
        return (predictions, failures)
    }
}
