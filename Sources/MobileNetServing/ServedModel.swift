import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetPipeline
import MobileNetStore
import MobileNetTransfer

/// What a served model computes, detected from its file.
public enum ServedModelKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// A Keras Applications weight file with the top (`include_top=True`): probabilities of the
    /// 1000 ImageNet classes (or of the classes the `predictions` layer has).
    case imageNetClassifier = "imagenet-classifier"
    /// A weight file without the top: the pooled embedding (1280-d for alpha up to 1.0, values 0...6).
    case embedder
    /// A `mobilenet train` model file: probabilities of its own classes.
    case trainedClassifier = "trained-classifier"
    /// A Keras transfer model (`.keras` archive or whole-model `.h5`: MobileNetV2 base, pooling,
    /// Dense softmax head): probabilities of its classes.
    case kerasClassifier = "keras-classifier"

    /// Whether the model gives class probabilities (every kind but ``embedder``).
    public var isClassifier: Bool { self != .embedder }
}

/// One class a served classifier can output.
public struct ServedClass: Sendable, Hashable, Codable {
    /// The class name (`Egyptian_cat`, or a trained model's folder name).
    public var name: String
    /// The WordNet synset id of an ImageNet class (`n02124075`); nil for other classes.
    public var synset: String?
}

/// The outputs of one network run over a batch of `N` images.
public struct ServedOutputs: Sendable, Equatable {
    /// `N` pooled embeddings of ``ServedModel/embeddingWidth`` values each (0...6).
    public var embeddings: [[Float]]
    /// For a classifier, `N` rows of class probabilities (0...1, each row sums to 1); nil for an embedder.
    public var probabilities: [[Float]]?

    /// Creates outputs.
    public init(embeddings: [[Float]], probabilities: [[Float]]?) {
        self.embeddings = embeddings
        self.probabilities = probabilities
    }

    /// The number of images.
    public var count: Int { embeddings.count }

    /// The model's primary output: the probabilities of a classifier, else the embeddings.
    public var primary: [[Float]] { probabilities ?? embeddings }

    /// The outputs of the images in `range` (positions in this batch).
    public func rows(_ range: Range<Int>) -> ServedOutputs {
        ServedOutputs(embeddings: Array(embeddings[range]), probabilities: probabilities.map { Array($0[range]) })
    }
}

/// A model ready to serve: the network, what it computes, its input size, its classes and the
/// preprocessing its images get. Immutable and safe to share between threads; the network is
/// run by the model's ``DynamicBatcher``.
///
/// Input tensors are NHWC `[N, inputHeight, inputWidth, 3]`, already preprocessed as
/// ``preprocessing`` says (for the Keras weights `x / 127.5 - 1`, so -1...1), as a Keras
/// SavedModel of the network would take them.
public final class ServedModel: Sendable {
    /// The name clients use (`imagenet` in `/v1/models/imagenet:predict`).
    public let name: String
    /// What it computes.
    public let kind: ServedModelKind
    /// The file it was loaded from.
    public let source: URL
    /// The network's configuration (alpha, input size, top).
    public let configuration: MobileNetV2Configuration
    /// How encoded images become input: the model file's recorded preprocessing, the default
    /// (`tf.image.resize` bilinear, `x / 127.5 - 1`) for weight files, or what the server was told.
    public let preprocessing: PreprocessingConfiguration
    /// The classes of a classifier, in output order; empty for an embedder.
    public let classes: [ServedClass]
    /// The pooled embedding width (1280 for alpha up to 1.0).
    public let embeddingWidth: Int
    private let engine: Engine

    /// The single version every served model has (TensorFlow Serving and KServe address versions).
    public static let version = "1"
    /// The name of the input tensor in the signatures (`input_1`, as Keras names a model's first input).
    public static let inputName = "input_1"
    /// The name of a classifier's output tensor (`predictions`, the Keras layer name).
    public static let probabilitiesOutputName = "predictions"
    /// The name of an embedder's output tensor.
    public static let embeddingOutputName = "embedding"

    private enum Engine: Sendable {
        /// A MobileNetV2 network, with or without its top.
        case network(MobileNetV2)
        /// A frozen backbone with a trained head.
        case trained(TrainedClassifier)
    }

    private init(name: String, kind: ServedModelKind, source: URL, engine: Engine, preprocessing: PreprocessingConfiguration, classes: [ServedClass]) {
        self.name = name
        self.kind = kind
        self.source = source
        self.engine = engine
        self.preprocessing = preprocessing
        self.classes = classes
        switch engine {
        case .network(let network):
            configuration = network.configuration
            embeddingWidth = network.embeddingWidth
        case .trained(let classifier):
            configuration = classifier.backbone.network.configuration
            embeddingWidth = classifier.backbone.network.embeddingWidth
        }
    }

    /// The embedder of an image index: its backbone, with the preprocessing of its queries.
    convenience init(name: String, backbone: Backbone, preprocessing: PreprocessingConfiguration) {
        self.init(name: name, kind: .embedder, source: backbone.weightsURL, engine: .network(backbone.network), preprocessing: preprocessing, classes: [])
    }

    /// Input height in pixels.
    public var inputHeight: Int { configuration.inputHeight }
    /// Input width in pixels.
    public var inputWidth: Int { configuration.inputWidth }
    /// Values in one input image: `inputHeight * inputWidth * 3`.
    public var inputScalarCount: Int { inputHeight * inputWidth * 3 }
    /// The name of the primary output: ``probabilitiesOutputName`` or ``embeddingOutputName``.
    public var outputName: String { kind.isClassifier ? Self.probabilitiesOutputName : Self.embeddingOutputName }
    /// The width of the primary output per image: the class count, or ``embeddingWidth``.
    public var outputWidth: Int { kind.isClassifier ? classes.count : embeddingWidth }

    /// The range preprocessed input values lie in, from the pixel scaling (-1...1 for the Keras
    /// `x / 127.5 - 1`); a tensor with values outside it was not preprocessed for this model.
    public var inputRange: ClosedRange<Float> {
        switch preprocessing.scaling {
        case .minusOneToOne: return -1...1
        case .zeroToOne: return 0...1
        case .none: return 0...255
        case .meanStd(let mean, let std):
            guard preprocessing.scaling.isValid else { return 0...1 }
            let lows = (0..<3).map { (0 - mean[$0]) / std[$0] }, highs = (0..<3).map { (1 - mean[$0]) / std[$0] }
            return (zip(lows, highs).map { min($0, $1) }.min() ?? 0)...(zip(lows, highs).map { max($0, $1) }.max() ?? 1)
        }
    }

    /// The preprocessor for encoded images sent to this model.
    ///
    /// - Parameter maxPixels: refuse images with more pixels (decompression bombs).
    public func preprocessor(maxPixels: Int) -> ImagePreprocessor {
        ImagePreprocessor(configuration: preprocessing, height: inputHeight, width: inputWidth, maxPixels: maxPixels)
    }

    /// Runs the network on a batch: one pass gives the embeddings and, for a classifier, the
    /// probabilities.
    ///
    /// - Parameter input: `[N, inputHeight, inputWidth, 3]`, preprocessed (see ``inputRange``).
    /// - Returns: `N` rows of each output.
    /// - Throws: the network's error (a wrongly shaped input, a backend failure).
    public func run(_ input: Tensor) throws -> ServedOutputs {
        switch engine {
        case .network(let network):
            let out = try network.forward(input)
            return ServedOutputs(embeddings: out.embedding.rows, probabilities: out.probabilities?.rows)
        case .trained(let classifier):
            let embeddings = try classifier.backbone.network.embedding(input).rows
            let probabilities = classifier.head.probabilities(Matrix(stacking: embeddings))
            let rows = (0..<embeddings.count).map { probabilities.row($0).map { Float($0) } }
            return ServedOutputs(embeddings: embeddings, probabilities: rows)
        }
    }

    /// The `k` most likely classes of one probability row, best first (ties by class order).
    ///
    /// - Parameters:
    ///   - probabilities: one row of ``ServedOutputs/probabilities`` (``outputWidth`` values).
    ///   - k: how many (clamped to the class count).
    public func topK(_ probabilities: [Float], k: Int) -> [ClassPrediction] {
        let imageNet = classes.count == ImageNetClasses.all.count && classes.allSatisfy { $0.synset != nil }
        return ImageNetClasses.topK(probabilities, k: k, labels: imageNet ? nil : classes.map(\.name))
    }

    // MARK: - Loading

    /// Loads the model in the file at `url`, its kind detected from the contents (never from
    /// the extension): a JSON `mobilenet train` model file; a Keras file whose Dense layers sit
    /// outside the MobileNetV2 base (a transfer model); a weight file with the `predictions`
    /// layer (a classifier, ImageNet's names for 1000 classes); a weight file without it (an
    /// embedder). The width multiplier is read from the weights.
    ///
    /// - Parameters:
    ///   - name: the served name.
    ///   - url: the model or weight file.
    ///   - inputHeight: the input height for a weight file (default 224; model files record their own).
    ///   - inputWidth: the input width for a weight file (default 224).
    ///   - preprocessing: the preprocessing for a weight file (default: the Keras default); a
    ///     model file keeps the one it recorded.
    ///   - backend: the kernels that run the network.
    ///   - resolver: for a `mobilenet train` model file, where to look for its backbone weights.
    /// - Throws: ``ServingError/modelLoadFailed(name:path:reason:)`` with the library's reason
    ///   (an unreadable or damaged file, weights that do not fit, a missing backbone).
    public static func load(name: String, contentsOf url: URL, inputHeight: Int = 224, inputWidth: Int = 224,
                            preprocessing: PreprocessingConfiguration? = nil, backend: any InferenceBackend,
                            resolver: WeightsResolver = WeightsResolver()) async throws(ServingError) -> ServedModel {
        do {
            switch try detectKind(url) {
            case .trainedClassifier, .kerasClassifier:
                let kind: ServedModelKind = try startsWithJSON(url) ? .trainedClassifier : .kerasClassifier
                let classifier = try await TrainedClassifier.load(contentsOf: url, inputSize: (inputHeight, inputWidth), backend: backend, resolver: resolver)
                return ServedModel(name: name, kind: kind, source: url, engine: .trained(classifier),
                                   preprocessing: classifier.preprocessingConfiguration ?? .standard,
                                   classes: classifier.classNames.map { ServedClass(name: $0, synset: nil) })
            case .imageNetClassifier(let alpha, let classes):
                let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, includeTop: true, classes: classes)
                let network = try MobileNetV2.load(configuration: configuration, contentsOf: url, backend: backend)
                return ServedModel(name: name, kind: .imageNetClassifier, source: url, engine: .network(network),
                                   preprocessing: preprocessing ?? .standard, classes: classNames(count: classes))
            case .embedder(let alpha):
                let backbone = try Backbone.load(contentsOf: url, alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, backend: backend)
                return ServedModel(name: name, kind: .embedder, source: url, engine: .network(backbone.network),
                                   preprocessing: preprocessing ?? .standard, classes: [])
            }
        } catch let error as ServingError {
            throw error
        } catch {
            throw .modelLoadFailed(name: name, path: url.path, reason: (error as? LocalizedError)?.errorDescription ?? String(describing: error))
        }
    }

    /// Loads the ImageNet classifier from the default weights: `weightsPath` when given, else
    /// `$MOBILENET_WEIGHTS`, the cache, the official download (``/MobileNetIO/WeightsResolver``).
    ///
    /// - Throws: ``ServingError/modelLoadFailed(name:path:reason:)``.
    public static func loadImageNet(name: String = "imagenet", weightsPath: String? = nil, alpha: Double = 1.0, inputHeight: Int = 224, inputWidth: Int = 224,
                                    preprocessing: PreprocessingConfiguration? = nil, backend: any InferenceBackend,
                                    resolver: WeightsResolver = WeightsResolver()) async throws(ServingError) -> ServedModel {
        let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, includeTop: true)
        do {
            let (network, url) = try await MobileNetV2.load(configuration: configuration, weightsPath: weightsPath, backend: backend, resolver: resolver)
            return ServedModel(name: name, kind: .imageNetClassifier, source: url, engine: .network(network),
                               preprocessing: preprocessing ?? .standard, classes: classNames(count: configuration.classes))
        } catch {
            throw .modelLoadFailed(name: name, path: weightsPath ?? "the default weights", reason: (error as? LocalizedError)?.errorDescription ?? String(describing: error))
        }
    }

    private static func classNames(count: Int) -> [ServedClass] {
        if count == ImageNetClasses.all.count { return ImageNetClasses.all.map { ServedClass(name: $0.name, synset: $0.synset) } }
        return (0..<count).map { ServedClass(name: "class_\($0)", synset: nil) }
    }

    private enum DetectedKind {
        case trainedClassifier, kerasClassifier
        case imageNetClassifier(alpha: Double, classes: Int)
        case embedder(alpha: Double)
    }

    /// Whether the file's first non-blank byte is `{` (a JSON model file).
    private static func startsWithJSON(_ url: URL) throws -> Bool {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        let head = try handle.read(upToCount: 256) ?? Data()
        return head.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{")
    }

    private static func detectKind(_ url: URL) throws -> DetectedKind {
        switch FileKind(path: url.path) {
        case .regular: break
        case .missing: throw LoadReason(message: "no such file")
        case let other: throw LoadReason(message: "not a regular file (\(other))")
        }
        if try startsWithJSON(url) { return .trainedClassifier }
        let weights = try KerasWeightFile.read(contentsOf: url).weights
        if !weights.layersOutsideMobileNetV2().isEmpty { return .kerasClassifier }
        let base = try weights.mobileNetV2Part()
        let alpha = try widthMultiplier(of: base)
        if let predictions = base.layer(named: "predictions") {
            guard let bias = predictions.arrays.first(where: { $0.shape.count == 1 }) else {
                throw ModelError.missingClassifier(source: base.source)
            }
            return .imageNetClassifier(alpha: alpha, classes: bias.shape[0])
        }
        return .embedder(alpha: alpha)
    }

    /// The width multiplier the weights were built for: the graph of alpha 1.0 is matched against
    /// them (at 32x32, unfolded: cheap), and a mismatch says which alpha they have.
    private static func widthMultiplier(of weights: KerasWeightSet) throws -> Double {
        do {
            _ = try MobileNetV2.makeGraph(configuration: MobileNetV2Configuration(alpha: 1.0, inputHeight: 32, inputWidth: 32, includeTop: false),
                                          weights: weights.droppingClassifier(), foldBatchNorm: false)
            return 1.0
        } catch {
            guard case .alphaMismatch(_, let found, _) = error else { throw error }
            return found
        }
    }
}

/// A detection failure's reason, reported through ``ServingError/modelLoadFailed(name:path:reason:)``.
private struct LoadReason: Error, LocalizedError {
    var message: String
    var errorDescription: String? { message }
}
