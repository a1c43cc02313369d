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
    /// A TFLite MobileNetV2 with a head (`.tflite`, float or quantized): probabilities of its
    /// classes (TF-slim's 1001 with `background` first). One without a head serves as ``embedder``.
    case tfliteClassifier = "tflite-classifier"

    /// Whether the model gives class probabilities (every kind but ``embedder``).
    public var isClassifier: Bool { self != .embedder }
}

/// One class a served classifier can output (the model's ``/MobileNetTransfer/ModelClass``).
public typealias ServedClass = ModelClass

/// The outputs of one network run over a batch of `N` images (the runnable model's).
public typealias ServedOutputs = ModelOutputs

extension ModelOutputs {
    /// The number of images.
    public var count: Int { embeddings.count }

    /// The model's primary output: the probabilities of a classifier, else the embeddings.
    public var primary: [[Float]] { probabilities ?? embeddings }

    /// The outputs of the images in `range` (positions in this batch).
    public func rows(_ range: Range<Int>) -> ModelOutputs {
        ModelOutputs(embeddings: Array(embeddings[range]), probabilities: probabilities.map { Array($0[range]) })
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
    public var embeddingWidth: Int { model.embeddingWidth }
    /// The runnable model behind it (``/MobileNetTransfer/ModelFile/open(_:options:backend:resolver:)``).
    public let model: RunnableModel

    /// The version TensorFlow Serving and KServe clients address: the version folder's number
    /// for a model from a TF Serving base folder (`BASE/3/` is 3), else 1.
    public let versionNumber: Int64
    /// ``versionNumber`` as the text the REST APIs use (`"3"`).
    public var version: String { String(versionNumber) }
    /// The name of the input tensor in the signatures (`input_1`, as Keras names a model's first input).
    public static let inputName = "input_1"
    /// The name of a classifier's output tensor (`predictions`, the Keras layer name).
    public static let probabilitiesOutputName = "predictions"
    /// The name of an embedder's output tensor.
    public static let embeddingOutputName = "embedding"

    /// A served model over an opened one.
    ///
    /// - Parameters:
    ///   - name: the name clients use.
    ///   - model: the opened model; its preprocessing is what encoded images get.
    ///   - version: the version clients address (the version folder's number; default 1).
    public init(name: String, model: RunnableModel, version: Int64 = 1) {
        self.name = name
        self.versionNumber = version
        self.model = model
        self.source = model.source
        self.configuration = model.configuration
        self.preprocessing = model.preprocessingConfiguration ?? .standard
        self.classes = model.classes
        switch model.kind {
        case .kerasWeights: kind = .imageNetClassifier
        case .kerasWeightsNoTop: kind = .embedder
        case .kerasModel: kind = .kerasClassifier
        case .trainedModel: kind = .trainedClassifier
        case .tflite: kind = model.isClassifier ? .tfliteClassifier : .embedder
        case .savedModel: kind = model.isClassifier ? .kerasClassifier : .embedder
        }
    }

    /// The embedder of an image index: its backbone, with the preprocessing of its queries.
    convenience init(name: String, backbone: Backbone, preprocessing: PreprocessingConfiguration) {
        self.init(name: name, model: RunnableModel(embedder: backbone, preprocessing: preprocessing))
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

    /// How far outside ``inputRange`` a sent value may be: a little slack for the rounding of
    /// clients that preprocess in another precision (0.1% of the range's width, at least 0.001).
    public var inputSlack: Float { Self.slack(for: inputRange) }

    /// The slack of ``inputSlack`` for an input range: 0.1% of its width, at least 0.001.
    static func slack(for range: ClosedRange<Float>) -> Float { 1e-3 * max(1, range.upperBound - range.lowerBound) }

    /// The position of the first value outside ``inputRange`` (give or take ``inputSlack``),
    /// NaN included; nil when every value is inside: a tensor a client sent as preprocessed input.
    public func firstValueOutsideInputRange(_ values: [Float]) -> Int? {
        Self.firstValue(outside: inputRange, slack: inputSlack, in: values)
    }

    /// The position of the first of `values` outside `range` widened by `slack` (NaN included).
    static func firstValue(outside range: ClosedRange<Float>, slack: Float, in values: [Float]) -> Int? {
        let low = range.lowerBound - slack, high = range.upperBound + slack
        return values.firstIndex { !($0 >= low && $0 <= high) }
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
        let out = try model.run(input)
        return ServedOutputs(embeddings: out.embeddings, probabilities: out.probabilities)
    }

    /// The `k` most likely classes of one probability row, best first (ties by class order).
    ///
    /// - Parameters:
    ///   - probabilities: one row of the ``ServedOutputs`` probabilities (``outputWidth`` values).
    ///   - k: how many (clamped to the class count).
    public func topK(_ probabilities: [Float], k: Int) -> [ClassPrediction] {
        model.topK(probabilities, k: k)
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
    ///   - inputHeight: the input height for a file that records none (default 224); another
    ///     than a model's recorded one is refused.
    ///   - inputWidth: the input width, as `inputHeight`.
    ///   - alpha: the width multiplier the file must have (nil: the file's).
    ///   - preprocessing: the preprocessing for a weight file (default: the Keras default); a
    ///     model file keeps the one it recorded.
    ///   - classNames: class names instead of the file's (a label file), one per output.
    ///   - backend: the kernels that run the network.
    ///   - resolver: for a `mobilenet train` model file, where to look for its backbone weights.
    ///   - version: for a TF Serving base folder, the version folder to load (nil: the highest);
    ///     it becomes the served ``versionNumber``.
    /// - Throws: ``ServingError/modelLoadFailed(name:path:reason:)`` with the library's reason
    ///   (an unreadable or damaged file, weights that do not fit, a missing backbone, class names
    ///   that do not fit).
    public static func load(name: String, contentsOf url: URL, inputHeight: Int? = nil, inputWidth: Int? = nil, alpha: Double? = nil,
                            preprocessing: PreprocessingConfiguration? = nil, classNames: [String]? = nil, backend: any InferenceBackend,
                            resolver: WeightsResolver = WeightsResolver(), version: Int? = nil) async throws(ServingError) -> ServedModel {
        do {
            let size = inputHeight.map { ($0, inputWidth ?? $0) }
            var options = ModelOpenOptions(inputSize: size, alpha: alpha, classNames: classNames, preprocessing: preprocessing)
            options.modelVersion = version
            let model = try await ModelFile.open(url, options: options, backend: backend, resolver: resolver)
            return ServedModel(name: name, model: model, version: Int64(version ?? 1))
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
        do {
            let options = ModelOpenOptions(inputSize: (inputHeight, inputWidth), alpha: alpha, preprocessing: preprocessing)
            let model = try await ModelFile.openDefault(weightsPath: weightsPath, includeTop: true, options: options, backend: backend, resolver: resolver)
            return ServedModel(name: name, model: model)
        } catch {
            throw .modelLoadFailed(name: name, path: weightsPath ?? "the default weights", reason: (error as? LocalizedError)?.errorDescription ?? String(describing: error))
        }
    }
}
