import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetPipeline
import MobileNetStore

/// Why a trained classifier cannot be used. Each case names the file.
public enum TrainedClassifierError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The head's layers do not fit together.
    case inconsistentHead(path: String, problem: String)
    /// The head takes embeddings of another width than the backbone gives.
    case embeddingWidthMismatch(path: String, head: Int, backbone: Int)
    /// The number of class names given differs from the model's classes.
    case classNameCount(path: String, classes: Int, names: [String])

    public var description: String {
        switch self {
        case .inconsistentHead(let path, let problem): "\(path): inconsistent head: \(problem)"
        case .embeddingWidthMismatch(let path, let head, let backbone):
            "\(path): the head takes \(head)-d embeddings but the backbone gives \(backbone)-d ones"
        case .classNameCount(let path, let classes, let names):
            "\(path): the model has \(classes) classes but \(names.count) class names were given (\(names.joined(separator: ", ")))"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// One class and its probability.
public struct ClassScore: Sendable, Hashable, Codable {
    /// The class name.
    public var className: String
    /// Its probability, 0...1.
    public var probability: Double
}

/// A classifier ready to predict: the frozen backbone, the trained head, the class names and the
/// preprocessing it was trained with. Loaded from a `mobilenet train` model file or a Keras
/// transfer model (`.keras` / whole-model `.h5`: input → MobileNetV2 → pooling → Dropout →
/// Dense(softmax)).
public struct TrainedClassifier: Sendable {
    /// The embedding network.
    public let backbone: Backbone
    /// The classifier head (embedding `[C]` to class probabilities).
    public let head: ClassifierHead
    /// Class names, in output order.
    public let classNames: [String]
    /// The cache identity of the preprocessing the head was trained with.
    public let preprocessing: PreprocessingIdentity
    /// The preprocessing settings the head was trained with, when known (nil for a model file
    /// that recorded only a non-default identity).
    public let preprocessingConfiguration: PreprocessingConfiguration?
    /// The saved model file, for a `mobilenet train` model (nil for a Keras model).
    public let model: ClassifierModel?

    /// Loads a classifier.
    ///
    /// For a model file, the backbone weight file is `weightsPath` when given, else the path
    /// recorded at training, else the normal resolution; its SHA-256 must equal the recorded one.
    /// For a Keras model, the base and head come from the file itself (Keras models record no
    /// preprocessing: the default, `x / 127.5 - 1` after `tf.image.resize`, is assumed); class
    /// names are `classNames`, else the sorted sub-folders of `classNamesFrom`, else `class0`,
    /// `class1`, ...
    ///
    /// - Parameters:
    ///   - url: a `mobilenet train` model file, or a Keras `.keras` or `.h5` model (recognised by
    ///     its zip or HDF5 signature).
    ///   - weightsPath: for a model file, an explicit backbone weight file (ignored for a Keras model).
    ///   - classNames: for a Keras model, the class names, one per output unit.
    ///   - root: for a Keras model without `classNames`, a folder whose sorted sub-folders give
    ///     the class names (the `classNamesFrom` argument).
    ///   - inputSize: the input size for a Keras model that does not record one (default 224x224).
    ///   - backend: the kernels that run the network.
    ///   - resolver: for a model file, where to look for the backbone weights when neither
    ///     `weightsPath` nor the recorded path gives a file.
    /// - Throws: ``ClassifierModelError``, ``KerasImportError``, ``TrainedClassifierError``,
    ///   ``/MobileNetPipeline/BackboneMismatch``, weight-file and model errors, ``DatasetError``
    ///   for an unreadable `classNamesFrom`.
    public static func load(contentsOf url: URL, weightsPath: String? = nil, classNames: [String]? = nil, classNamesFrom root: URL? = nil,
                            inputSize: (height: Int, width: Int)? = nil, backend: any InferenceBackend,
                            resolver: WeightsResolver = WeightsResolver()) async throws -> TrainedClassifier {
        // A FIFO or device would block or never end: only regular files are opened.
        switch FileKind(path: url.path) {
        case .regular: break
        case .missing: throw ClassifierModelError.unreadable(path: url.path, message: "no such file")
        case let other: throw ClassifierModelError.unreadable(path: url.path, message: other.description)
        }
        let head = (try? FileHandle(forReadingFrom: url)).flatMap { handle in
            defer { try? handle.close() }
            return try? handle.read(upToCount: 8)
        } ?? Data()
        let isKeras = head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x89, 0x48, 0x44, 0x46])
        if isKeras {
            return try loadKeras(url: url, classNames: classNames, classNamesFrom: root, inputSize: inputSize, backend: backend)
        }
        let saved = try ClassifierModel.read(contentsOf: url)
        var backbone = try await Backbone.load(matching: saved.backbone, weightsPath: weightsPath, recordedPath: saved.backboneWeightsPath,
                                               source: url.path, backend: backend, resolver: resolver)
        if let fineTuning = saved.fineTuning {
            backbone = try fineTunedBackbone(fineTuning, base: backbone, source: url.path, backend: backend)
        }
        try check(head: saved.head, backbone: backbone, path: url.path)
        return TrainedClassifier(backbone: backbone, head: saved.head, classNames: saved.classNames, preprocessing: saved.preprocessing,
                                 preprocessingConfiguration: saved.recordedPreprocessing, model: saved)
    }

    private static func loadKeras(url: URL, classNames: [String]?, classNamesFrom root: URL?, inputSize: (height: Int, width: Int)?,
                                  backend: any InferenceBackend) throws -> TrainedClassifier {
        let imported = try KerasTransferModel.read(contentsOf: url)
        let (h, w) = imported.inputSize ?? inputSize ?? (224, 224)
        let configuration = MobileNetV2Configuration(alpha: imported.alpha, inputHeight: h, inputWidth: w, includeTop: false, pooling: .avg)
        // A configuration the file's config.json declares (a 100000x100000 input) is the file's
        // fault: the message names it.
        do {
            try configuration.validate()
        } catch {
            throw KerasImportError.invalidConfig(path: url.path, message: "\(error)")
        }
        let network = try MobileNetV2(configuration: configuration, weights: imported.backboneWeights.droppingClassifier(), backend: backend)
        let classes = imported.head.classes
        var names = classNames ?? (0..<classes).map { "class\($0)" }
        if classNames == nil, let root { names = try ImageFolder(root: root).classNames }
        guard names.count == classes else { throw TrainedClassifierError.classNameCount(path: url.path, classes: classes, names: names) }
        let backbone = Backbone(network: network, identity: try BackboneIdentity(configuration: configuration, weightsFile: url), weightsURL: url)
        try check(head: imported.head, backbone: backbone, path: url.path)
        let preprocessing = PreprocessingConfiguration.standard
        return TrainedClassifier(backbone: backbone, head: imported.head, classNames: names,
                                 preprocessing: PreprocessingIdentity(preprocessing, height: h, width: w),
                                 preprocessingConfiguration: preprocessing, model: nil)
    }

    /// The base network with the fine-tuned layers of a model file replaced: one network (BatchNorm
    /// folded, one fast pass), its identity covering the fine-tuned weights.
    ///
    /// - Throws: ``ClassifierModelError/invalid(path:message:)`` naming the model file when the
    ///   fine-tuned layers are damaged or do not fit the base; weight-file and model errors.
    public static func fineTunedBackbone(_ fineTuning: FineTunedBase, base: Backbone, source: String, backend: any InferenceBackend) throws -> Backbone {
        let weights = try ClassifierTraining.baseWeights(base)
        let replaced: KerasWeightSet
        do {
            replaced = try fineTuning.applied(to: weights)
        } catch {
            throw ClassifierModelError.invalid(path: source, message: error.description)
        }
        let network = try MobileNetV2(configuration: base.network.configuration, weights: replaced, backend: backend)
        return Backbone(network: network, identity: fineTuning.identity(base: base.identity), weightsURL: base.weightsURL)
    }

    /// The head must be consistent and take the backbone's embedding width (1280 for alpha <= 1).
    static func check(head: ClassifierHead, backbone: Backbone, path: String) throws(TrainedClassifierError) {
        if let problem = head.inconsistency { throw .inconsistentHead(path: path, problem: problem) }
        let width = backbone.network.embeddingWidth
        guard head.inputs == width else { throw .embeddingWidthMismatch(path: path, head: head.inputs, backbone: width) }
    }

    /// The preprocessor to run this classifier with: the recorded preprocessing (or `override`
    /// when given) at the backbone's input size.
    public func preprocessor(override: PreprocessingConfiguration? = nil, maxPixels: Int = 100_000_000) -> ImagePreprocessor {
        let configuration = override ?? preprocessingConfiguration ?? .standard
        let c = backbone.network.configuration
        return ImagePreprocessor(configuration: configuration, height: c.inputHeight, width: c.inputWidth, maxPixels: maxPixels)
    }

    /// Class probabilities of one embedding, most likely first (ties by class order).
    ///
    /// - Parameters:
    ///   - embedding: `[C]`, the backbone's pooled embedding.
    ///   - k: how many classes to return (all when larger than the class count).
    public func topK(_ embedding: [Float], k: Int) -> [ClassScore] {
        let row = Array(head.probabilities(Matrix(stacking: [embedding])).row(0))
        return ranked(row, k: k)
    }

    func ranked(_ row: [Double], k: Int) -> [ClassScore] {
        let order = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(max(0, k))
        return order.map { ClassScore(className: classNames[$0], probability: row[$0]) }
    }

    /// The predictions for image files, through the embedding cache: the one call behind
    /// `mobilenet predict`.
    ///
    /// - Parameters:
    ///   - files: images; a file that fails is reported in the result, the others go on.
    ///   - k: how many classes to return per file (all when larger than the class count).
    ///   - preprocessor: by default ``preprocessor(override:maxPixels:)`` (the recorded one).
    ///   - allowOtherPreprocessing: accept a `preprocessor` whose identity differs from the
    ///     recorded preprocessing (default false: such a preprocessor is an error).
    ///   - store: the embedding cache, or nil.
    ///   - runtime: network batch size and decoding threads (the backend is the backbone's).
    ///   - progress: (images handled, images to compute) after each batch.
    /// - Returns: per file that worked, in input order, its top-`k` classes; the failures.
    /// - Throws: ``/MobileNetPipeline/PreprocessingMismatch`` when `preprocessor` is not the
    ///   recorded preprocessing and `allowOtherPreprocessing` is false; store and network errors.
    public func predict(_ files: [URL], k: Int, preprocessor: ImagePreprocessor? = nil, allowOtherPreprocessing: Bool = false,
                        store: EmbeddingStore?, runtime: RuntimeOptions,
                        progress: ((Int, Int) -> Void)? = nil) throws -> (predictions: [(file: URL, classes: [ClassScore])], failures: [EmbeddingFailure]) {
        let embedder = try CachedEmbedder(backbone: backbone, preprocessor: preprocessor ?? self.preprocessor(),
                                          expectedPreprocessing: allowOtherPreprocessing ? nil : preprocessing, store: store, runtime: runtime)
        let result = try embedder.embed(files, progress: progress)
        let predictions = files.compactMap { file in result.embeddings[file].map { (file, topK($0.vector, k: k)) } }
        return (predictions, result.failures)
    }
}
