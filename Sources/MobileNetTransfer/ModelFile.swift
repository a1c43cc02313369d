import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetPipeline
import MobileNetSavedModel
import MobileNetStore
import MobileNetTFLite

/// The kinds of model file ``ModelFile/open(_:options:backend:resolver:)`` recognises, each
/// detected from the file's bytes, never from its name.
public enum ModelFileKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// Keras Applications weights with the top (`include_top=True`: legacy `.h5`,
    /// `.weights.h5`): the ImageNet classifier (or as many classes as `predictions` has).
    case kerasWeights = "keras-weights"
    /// Keras Applications weights without the top: the pooled embedding, no classes.
    case kerasWeightsNoTop = "keras-weights-no-top"
    /// A Keras transfer model, `.keras` archive or whole-model `.h5` (`model.save`):
    /// MobileNetV2 base → GlobalAveragePooling2D → Dropout → [Dense(relu) → Dropout →]
    /// Dense(softmax), its architecture read from `config.json` / the `model_config` attribute.
    case kerasModel = "keras-model"
    /// A `mobilenet train` model file (JSON, format versions 1 and 2): a head on the recorded
    /// backbone, possibly with fine-tuned layers.
    case trainedModel = "trained-model"
    /// A TensorFlow Lite flatbuffer (`.tflite`) recognised as MobileNetV2: float32, float16
    /// weights, dynamic-range or fully quantized (uint8 TF-slim / Coral, int8 post-training); a
    /// fully quantized file runs in integer arithmetic (``/MobileNetTFLite/TFLiteIntegerBackend``).
    case tflite = "tflite"
    /// A SavedModel folder recognised as MobileNetV2 (Keras 3 `model.export`), or a TF Serving
    /// base folder of version folders (the highest version): the Keras-named variables and the
    /// Dense head (``/MobileNetSavedModel/SavedModelMobileNetV2``).
    case savedModel = "saved-model"

    /// Whether models of this kind give class probabilities (all but ``kerasWeightsNoTop``).
    public var isClassifier: Bool { self != .kerasWeightsNoTop }
}

/// What the caller asks of a model file beyond what the file records. Each setting the file
/// records itself must agree with it: a conflict is a ``ModelFileError/conflictingOption(path:option:recorded:given:)``,
/// never a silent override.
public struct ModelOpenOptions: Sendable {
    /// The input size in pixels for files that record none (weight files, a Keras model with a
    /// dynamic input); default 224x224. Nil: the file's, else the default. With
    /// ``embeddingOnly``, a Keras model's base runs at this size whatever its config records
    /// (base weights fit any input size, as in Keras); a classifier must keep the recorded one.
    public var inputSize: (height: Int, width: Int)?
    /// The expected width multiplier; nil accepts the file's (read from the weights).
    public var alpha: Double?
    /// The pooling of the embedding of a weight file without the top (Keras `pooling=`).
    public var pooling: Pooling
    /// For a `mobilenet train` model file: the backbone weight file (else the recorded path,
    /// else ``/MobileNetIO/WeightsResolver``'s search); its SHA-256 must be the recorded one.
    public var backboneWeightsPath: String?
    /// Class names for a file that records none (Keras models and weight files of another class
    /// count), one per output unit; default `class0`, `class1`, ... (ImageNet's for 1000 classes).
    public var classNames: [String]?
    /// The preprocessing for files that record none (weight files, Keras models); default
    /// ``/MobileNetIO/PreprocessingConfiguration/standard`` (`tf.image.resize` bilinear, `x / 127.5 - 1`).
    /// A `mobilenet train` model file keeps its own (override it per call with
    /// ``RunnableModel/preprocessor(override:maxPixels:)``).
    public var preprocessing: PreprocessingConfiguration?
    /// Open only the embedding network (the pooled backbone, ``pooling``), leaving any head
    /// out: what `embed`, `index` and `train` run. The model is then not a classifier.
    public var embeddingOnly: Bool
    /// For a TF Serving base folder (`BASE/1/`, `BASE/2/`, ...): the version to open; nil opens
    /// the highest (TF Serving's default). Refused for anything else.
    public var modelVersion: Int?

    /// Creates options; every argument defaults to "what the file says".
    public init(inputSize: (height: Int, width: Int)? = nil, alpha: Double? = nil, pooling: Pooling = .avg, backboneWeightsPath: String? = nil,
                classNames: [String]? = nil, preprocessing: PreprocessingConfiguration? = nil, embeddingOnly: Bool = false) {
        self.embeddingOnly = embeddingOnly
        self.inputSize = inputSize
        self.alpha = alpha
        self.pooling = pooling
        self.backboneWeightsPath = backboneWeightsPath
        self.classNames = classNames
        self.preprocessing = preprocessing
    }
}

/// Why a model file cannot be opened as asked. Each case names the file.
public enum ModelFileError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// Missing, a directory, a FIFO or a device, or unreadable.
    case unreadable(path: String, reason: String)
    /// Not a model file of any kind this library reads.
    case unknownKind(path: String, reason: String)
    /// An option disagrees with what the file records (its alpha or input size).
    case conflictingOption(path: String, option: String, recorded: String, given: String)
    /// The class names given do not match the model's outputs, or repeat a name.
    case classNames(path: String, reason: String)
    /// A classifier was asked for and the file has no top (weights saved without `predictions`).
    case notAClassifier(path: String)
    /// A `mobilenet train` model file's backbone cannot be loaded (not found, damaged, another alpha).
    case backbone(path: String, reason: String)
    /// A label file (`--labels`) is missing, not a regular file, unreadable or too large.
    case labelFile(path: String, reason: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "\(path): cannot read the model file (\(reason))"
        case .unknownKind(let path, let reason): "\(path): not a model file this tool reads (\(reason))"
        case .conflictingOption(let path, let option, let recorded, let given):
            "\(path): the model records \(option) \(recorded); \(given) was given (leave the option out)"
        case .classNames(let path, let reason): "\(path): \(reason)"
        case .backbone(let path, let reason): "\(path): its backbone cannot be loaded: \(reason)"
        case .labelFile(let path, let reason): "\(path): cannot read the label file (\(reason))"
        case .notAClassifier(let path):
            "\(path): the weights have no top (include_top=False): they give embeddings, not classes; use a file with the top or a trained model"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The one place a model file is opened: detects its kind from the bytes, reads everything it
/// records (architecture, input size, head and activations, class names, preprocessing), and
/// returns one ``RunnableModel`` that every command and the server run.
///
/// ```swift
/// let model = try await ModelFile.open(URL(fileURLWithPath: "flowers.keras"), backend: OneDNNBackend())
/// let outputs = try model.run(input)                   // embeddings and probabilities, one pass
/// let top = model.topK(outputs.probabilities![0], k: 3) // class names (and synsets) of the model
/// ```
public enum ModelFile {
    /// The kind of the file at `url`, from its first bytes and, for HDF5, its layers: JSON →
    /// ``ModelFileKind/trainedModel``; ZIP or HDF5 with Dense layers outside the MobileNetV2
    /// base → ``ModelFileKind/kerasModel``; with a `predictions` layer → ``ModelFileKind/kerasWeights``;
    /// otherwise ``ModelFileKind/kerasWeightsNoTop``.
    ///
    /// - Throws: ``ModelFileError`` for a missing, special or unrecognised file;
    ///   ``/MobileNetIO/WeightFileError`` for a damaged Keras file.
    public static func kind(of url: URL) throws -> ModelFileKind {
        if SavedModelFolder.isFolder(url) {
            do {
                _ = try SavedModelFolder.resolve(url)
            } catch {
                throw ModelFileError.unknownKind(path: url.path, reason: "a folder, but neither a SavedModel (no saved_model.pb) nor a TF Serving base folder (no numeric version folder holding one)")
            }
            return .savedModel
        }
        switch try sniff(url) {
        case .json: return .trainedModel
        case .tflite: return .tflite
        case .keras: return try classify(KerasWeightFile.read(contentsOf: url).weights)
        }
    }

    /// Opens the model file at `url`.
    ///
    /// - Parameters:
    ///   - url: a Keras weight file (with or without the top), a `.keras` archive, a whole-model
    ///     `.h5` transfer model, or a `mobilenet train` model file.
    ///   - options: what the file does not record (input size of weight files, class names of
    ///     Keras models, the backbone of a trained model); see ``ModelOpenOptions``.
    ///   - backend: the kernels that run the network.
    ///   - resolver: for a trained model file, where to look for its backbone weights.
    /// - Returns: the runnable model.
    /// - Throws: ``ModelFileError``; ``ClassifierModelError`` and ``/MobileNetPipeline/BackboneMismatch``
    ///   for a trained model file; ``KerasImportError`` for a Keras model whose head this library
    ///   does not compute; ``/MobileNetIO/WeightFileError`` and ``/MobileNetModel/ModelError`` for
    ///   damaged or mismatching weights (non-finite head weights included); the backend's errors.
    public static func open(_ url: URL, options: ModelOpenOptions = ModelOpenOptions(), backend: any InferenceBackend,
                            resolver: WeightsResolver = WeightsResolver()) async throws -> RunnableModel {
        if SavedModelFolder.isFolder(url) { return try openSavedModel(url, options: options, backend: backend) }
        if let version = options.modelVersion {
            throw ModelFileError.conflictingOption(path: url.path, option: "model version", recorded: "none (not a TF Serving base folder)", given: "\(version)")
        }
        switch try sniff(url) {
        case .json:
            return try await openTrainedModel(url, options: options, backend: backend, resolver: resolver)
        case .tflite:
            return try openTFLite(url, options: options, backend: backend)
        case .keras:
            let (weights, format) = try KerasWeightFile.read(contentsOf: url)
            switch try classify(weights) {
            case .kerasModel: return try openKerasModel(url, weights: weights, options: options, backend: backend)
            case let kind: return try openWeights(url, weights: weights, format: format, kind: kind, options: options, backend: backend)
            }
        }
    }

    /// Opens the default weights: `options`' explicit file (`weightsPath`), else
    /// `$MOBILENET_WEIGHTS`, the cache, the official Keras download (``/MobileNetIO/WeightsResolver``).
    ///
    /// - Parameters:
    ///   - weightsPath: an explicit file (any kind ``open(_:options:backend:resolver:)`` takes).
    ///   - includeTop: look for the file with the top (the ImageNet classifier) or without it.
    ///   - options: as for ``open(_:options:backend:resolver:)``; its alpha and input size choose
    ///     the official file (default 1.0 and 224).
    ///   - backend: the inference backend the network runs on.
    ///   - resolver: where a file is looked for (the cache folder, the download).
    /// - Throws: ``/MobileNetIO/WeightsResolutionError`` when no file is found; ``ModelFileError/notAClassifier(path:)``
    ///   when `includeTop` and the file has no top; as ``open(_:options:backend:resolver:)``.
    public static func openDefault(weightsPath: String?, includeTop: Bool, options: ModelOpenOptions = ModelOpenOptions(),
                                   backend: any InferenceBackend, resolver: WeightsResolver = WeightsResolver()) async throws -> RunnableModel {
        let (h, w) = options.inputSize ?? (224, 224)
        let url = try await resolver.resolve(alpha: options.alpha ?? 1.0, inputHeight: h, inputWidth: w, includeTop: includeTop, explicitPath: weightsPath)
        let model = try await open(url, options: options, backend: backend, resolver: resolver)
        if includeTop && !model.isClassifier { throw ModelFileError.notAClassifier(path: url.path) }
        return model
    }

    // MARK: - Detection

    private enum Container { case json, keras, tflite }

    /// Only regular files are opened (a FIFO or device would block or never end); JSON is told
    /// from Keras's ZIP and HDF5 by the first bytes.
    private static func sniff(_ url: URL) throws(ModelFileError) -> Container {
        let container: ModelContainer
        do {
            container = try ModelContainer(contentsOf: url)
        } catch {
            switch error {
            case .notFound: throw .unreadable(path: url.path, reason: "no such file")
            case .empty: throw .unknownKind(path: url.path, reason: "the file is empty")
            case .unreadable(_, let reason): throw .unreadable(path: url.path, reason: reason)
            default: throw .unreadable(path: url.path, reason: error.description)
            }
        }
        switch container {
        case .hdf5, .zip: return .keras
        case .json: return .json
        case .tflite: return .tflite
        case .unknown:
            throw .unknownKind(path: url.path, reason: "expected a Keras .h5/.weights.h5/.keras file, a TFLite .tflite file or a mobilenet train model file (JSON)")
        }
    }

    private static func classify(_ weights: KerasWeightSet) throws -> ModelFileKind {
        if !weights.layersOutsideMobileNetV2().isEmpty { return .kerasModel }
        return try weights.mobileNetV2Part().layer(named: "predictions") != nil ? .kerasWeights : .kerasWeightsNoTop
    }

    // MARK: - Kinds

    private static func alpha(of weights: KerasWeightSet, path: String, options: ModelOpenOptions) throws -> Double {
        // No official alpha fits: build at the requested one (or 1.0), which names the first bad shape.
        let found = weights.widthMultiplier() ?? options.alpha ?? 1.0
        if let given = options.alpha, given != found {
            throw ModelError.alphaMismatch(expected: given, found: found, source: path)
        }
        return found
    }

    /// The input size to run at: a classifier keeps the size its config records (refusing
    /// another one given); the embedding network alone runs at the given size (base weights fit
    /// any input size, as Keras loads them), else the recorded one; else 224x224.
    private static func inputSize(recorded: (height: Int, width: Int)?, options: ModelOpenOptions, path: String) throws -> (height: Int, width: Int) {
        if !options.embeddingOnly, let recorded, let given = options.inputSize, recorded != given {
            throw ModelFileError.conflictingOption(path: path, option: "input size", recorded: "\(recorded.height)x\(recorded.width)",
                                                   given: "\(given.height)x\(given.width)")
        }
        return (options.embeddingOnly ? options.inputSize ?? recorded : recorded ?? options.inputSize) ?? (224, 224)
    }

    private static func openWeights(_ url: URL, weights: KerasWeightSet, format: KerasWeightFileFormat, kind: ModelFileKind, options: ModelOpenOptions,
                                    backend: any InferenceBackend) throws -> RunnableModel {
        let base = try weights.mobileNetV2Part()
        let alpha = try alpha(of: base, path: url.path, options: options)
        // A whole model saved by Keras (`model.save`: a `.keras` archive, a whole-model `.h5`)
        // records its input size; weight files (`save_weights`, the downloads) do not.
        var recorded: (height: Int, width: Int)?
        if format == .kerasArchive || format == .legacyModel, let data = try KerasWeightFile.modelConfig(contentsOf: url),
           let config = try? JSONSerialization.jsonObject(with: data) {
            recorded = KerasTransferModel.inputShape(in: config)
        }
        let (h, w) = try inputSize(recorded: recorded, options: options, path: url.path)
        let classifier = kind == .kerasWeights && !options.embeddingOnly
        var configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: h, inputWidth: w, includeTop: classifier,
                                                     pooling: classifier ? nil : options.pooling)
        if classifier, let bias = base.layer(named: "predictions")?.arrays.first(where: { $0.shape.count == 1 }) {
            configuration.classes = bias.shape[0]
        }
        if recorded != nil {
            do {
                try configuration.validate()
            } catch {
                throw KerasImportError.invalidConfig(path: url.path, message: "\(error)")
            }
        }
        let network = try MobileNetV2(configuration: configuration, weights: classifier ? base : base.droppingClassifier(), backend: backend)
        var identityConfiguration = configuration
        identityConfiguration.includeTop = false
        identityConfiguration.pooling = classifier ? .avg : options.pooling
        let identity = try BackboneIdentity(configuration: identityConfiguration, weightsFile: url)
        let preprocessing = options.preprocessing ?? .standard
        let classes = classifier ? try classNames(options.classNames, count: configuration.classes, path: url.path) : []
        return RunnableModel(kind: kind, source: url, network: network, head: network.head, identity: identity, weightsURL: url, classes: classes,
                             preprocessingConfiguration: preprocessing, preprocessing: PreprocessingIdentity(preprocessing, height: h, width: w),
                             trainedModel: nil, pooling: identityConfiguration.pooling ?? .avg)
    }

    private static func openKerasModel(_ url: URL, weights: KerasWeightSet, options: ModelOpenOptions, backend: any InferenceBackend) throws -> RunnableModel {
        let imported = try KerasTransferModel.read(weights: weights, path: url.path, config: try KerasWeightFile.modelConfig(contentsOf: url))
        let alpha = try alpha(of: imported.backboneWeights, path: url.path, options: options)
        let (h, w) = try inputSize(recorded: imported.inputSize, options: options, path: url.path)
        let pooling = options.embeddingOnly ? options.pooling : .avg
        let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: h, inputWidth: w, includeTop: false, pooling: pooling)
        // A configuration the file's config declares (a 100000x100000 input) is the file's fault.
        do {
            try configuration.validate()
        } catch {
            throw KerasImportError.invalidConfig(path: url.path, message: "\(error)")
        }
        let head = try imported.head.denseHead(source: url.path)
        let base = try MobileNetV2(configuration: configuration, weights: imported.backboneWeights.droppingClassifier(), backend: backend)
        let names = options.embeddingOnly ? [] : try classNames(options.classNames, count: head.classes, path: url.path)
        let preprocessing = options.preprocessing ?? .standard
        return RunnableModel(kind: .kerasModel, source: url, network: options.embeddingOnly ? base : try base.withHead(head),
                             head: options.embeddingOnly ? nil : head,
                             identity: try BackboneIdentity(configuration: configuration, weightsFile: url), weightsURL: url, classes: names,
                             preprocessingConfiguration: preprocessing, preprocessing: PreprocessingIdentity(preprocessing, height: h, width: w),
                             trainedModel: nil, pooling: pooling)
    }

    /// A `.tflite` file: the graph recognised as MobileNetV2 (``/MobileNetTFLite/TFLiteMobileNetV2``),
    /// its weights dequantized into the Keras-named network; a fully quantized file runs on
    /// ``/MobileNetTFLite/TFLiteIntegerBackend`` (its own integer operators), the others on `backend`.
    /// The input size is the file's; the preprocessing `options.preprocessing`, else the
    /// metadata's normalisation, else the default; class names are `options.classNames`, else TFLite
    /// metadata's label file, else ImageNet's for 1000 classes or background + ImageNet's for
    /// TF-slim's 1001 (each with its synset), else `class0`, ...
    private static func openTFLite(_ url: URL, options: ModelOpenOptions, backend: any InferenceBackend) throws -> RunnableModel {
        let file = try TFLiteModel(contentsOf: url)
        let recognised = try TFLiteMobileNetV2(model: file)
        let recorded = (recognised.configuration.inputHeight, recognised.configuration.inputWidth)
        if let given = options.inputSize, given != recorded {
            throw ModelFileError.conflictingOption(path: url.path, option: "input size", recorded: "\(recorded.0)x\(recorded.1)",
                                                   given: "\(given.height)x\(given.width)")
        }
        if let given = options.alpha, given != recognised.configuration.alpha {
            throw ModelError.alphaMismatch(expected: given, found: recognised.configuration.alpha, source: url.path)
        }
        // The preprocessing: the caller's, else the normalisation the file's metadata records
        // (TFLite Support's NormalizationOptions), else the default (x / 127.5 - 1).
        var preprocessing = options.preprocessing ?? .standard
        if options.preprocessing == nil, let metadata = try file.supportMetadata(), let mean = metadata.mean, let std = metadata.std,
           let scaling = PixelScaling(normalizationMean: mean, std: std) {
            preprocessing.scaling = scaling
        }
        let runOn = try recognised.backend(float: backend, normalization: preprocessing.scaling.pixelMeanStd)
        let pooling = options.embeddingOnly ? options.pooling : .avg
        let base = try recognised.embeddingNetwork(pooling: pooling, backend: runOn)
        let configuration = base.configuration
        let head = options.embeddingOnly ? nil : recognised.head
        var classes: [ModelClass] = []
        if let head {
            let names = try options.classNames ?? tfliteLabels(file, url: url)
            classes = try tfliteClassNames(names, path: url.path, count: head.classes)
        }
        var identity = try BackboneIdentity(configuration: configuration, weightsFile: url)
        identity.architecture = TFLiteMobileNetV2.architectureName(backend: runOn)
        return RunnableModel(kind: .tflite, source: url, network: head == nil ? base : try base.withHead(head!), head: head,
                             identity: identity, weightsURL: url, classes: classes,
                             preprocessingConfiguration: preprocessing,
                             preprocessing: PreprocessingIdentity(preprocessing, height: recorded.0, width: recorded.1),
                             trainedModel: nil, pooling: pooling)
    }

    /// A SavedModel folder, or a TF Serving base folder (its highest version): MobileNetV2 from
    /// the Keras-named or TF-slim-named variables, the head from its Dense layers or TF-slim's
    /// logits (``/MobileNetSavedModel/SavedModelMobileNetV2``), the input size of the serving
    /// signature (a module taking any size runs at `options.inputSize`, else 224x224).
    ///
    /// The pixel scaling follows the graph: a graph that scales its own input (a Keras
    /// `Rescaling` layer, TF Hub's `hub_input` on its 0...1 contract) gets pixels scaled to what
    /// its first convolution receives, whatever `options.preprocessing` says of the scaling (its
    /// other settings apply); a graph that takes its input as it is gets `options.preprocessing`,
    /// else the default (`x / 127.5 - 1`, Keras's `preprocess_input`). A 1001-class TF-slim
    /// classifier gets `background` and ImageNet's classes, as TFLite files do. The identity's
    /// hash is the variables index's (it holds every tensor's CRC-32C).
    private static func openSavedModel(_ url: URL, options: ModelOpenOptions, backend: any InferenceBackend) throws -> RunnableModel {
        let (folderURL, _) = try SavedModelFolder.resolve(url, version: options.modelVersion)
        let recognised = try SavedModelMobileNetV2(folder: try SavedModelFolder(contentsOf: folderURL))
        let weights = recognised.backboneWeights
        let alpha = try alpha(of: weights, path: folderURL.path, options: options)
        let (h, w) = try inputSize(recorded: recognised.inputSize, options: options, path: folderURL.path)
        let head = options.embeddingOnly ? nil : recognised.head
        let pooling = options.embeddingOnly ? options.pooling : .avg
        let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: h, inputWidth: w, includeTop: false, pooling: pooling)
        do {
            try configuration.validate()
        } catch {
            throw SavedModelError.notAMobileNetV2(path: folderURL.path, reason: "\(error)")
        }
        let base = try MobileNetV2(configuration: configuration, weights: weights, backend: backend)
        let classes = try head.map { head in
            recognised.isTFSlimModule ? try tfliteClassNames(options.classNames, path: folderURL.path, count: head.classes)
                : try classNames(options.classNames, count: head.classes, path: folderURL.path)
        } ?? []
        var preprocessing = options.preprocessing ?? .standard
        if recognised.isTFSlimModule || !recognised.inputScaling.isIdentity {
            guard let scaling = pixelScaling(recognised.inputScaling, unitRangeInput: recognised.isTFSlimModule) else {
                throw SavedModelError.notAMobileNetV2(path: folderURL.path, reason: "the graph's input scaling \(recognised.inputScaling) cannot be applied to pixels")
            }
            // The graph decides; a scaling given that disagrees (other than the default) is
            // refused rather than applied on top of the graph's own, or silently dropped.
            if let given = options.preprocessing?.scaling, given != .minusOneToOne, given != scaling {
                throw ModelFileError.conflictingOption(path: folderURL.path, option: "the pixel scaling",
                                                       recorded: "\(Self.describe(scaling)) (the graph scales its own input: \(recognised.isTFSlimModule ? "TF Hub's 0...1 then " : "")\(recognised.inputScaling))",
                                                       given: Self.describe(given))
            }
            preprocessing.scaling = scaling
        }
        let index = folderURL.appendingPathComponent("variables/variables.index")
        return RunnableModel(kind: .savedModel, source: folderURL, network: try head.map { try base.withHead($0) } ?? base, head: head,
                             identity: try BackboneIdentity(configuration: configuration, weightsFile: index), weightsURL: folderURL, classes: classes,
                             preprocessingConfiguration: preprocessing, preprocessing: PreprocessingIdentity(preprocessing, height: h, width: w),
                             trainedModel: nil, pooling: pooling)
    }

    /// A pixel scaling as a formula (`x / 127.5 - 1`).
    static func describe(_ scaling: PixelScaling) -> String {
        switch scaling {
        case .minusOneToOne: "x / 127.5 - 1"
        case .zeroToOne: "x / 255"
        case .none: "x (0...255)"
        case .meanStd(let mean, let std): "(x / 255 - \(mean)) / \(std)"
        }
    }

    /// The pixel scaling that gives what a graph's first convolution receives: pixels `p`
    /// (0...255) as the signature takes them (`p / 255` for TF Hub's 0...1 contract, else `p`),
    /// then the graph's own `scale * x + offset`. The common cases come out as themselves
    /// (`x / 127.5 - 1` is ``/MobileNetIO/PixelScaling/minusOneToOne``); nil for a zero or
    /// non-finite factor.
    public static func pixelScaling(_ scaling: SavedModelInputScaling, unitRangeInput: Bool) -> PixelScaling? {
        let input: Float = unitRangeInput ? 1 / 255 : 1
        var mean: [Float] = [], std: [Float] = []
        for c in 0..<3 {
            let a = scaling.scale[c] * input, b = scaling.offset[c]
            guard a != 0, a.isFinite, b.isFinite else { return nil }
            std.append(1 / a)
            mean.append(-b / a)
        }
        // Float rounding of the composition (2 * (1 / 255) is not exactly 1 / 127.5).
        func snap(_ values: [Float]) -> [Float] {
            values.map { v in [0, 1, 127.5, 255].first { abs(v - $0) <= 1e-4 * max(1, abs($0)) } ?? v }
        }
        return PixelScaling(normalizationMean: snap(mean), std: snap(std))
    }

    /// The label file TFLite Support's metadata names for the first output, read from the ZIP
    /// appended to the model (in a child process, at most 4 MiB): one class per line, a trailing
    /// empty line and carriage returns dropped. Nil when the file has no such metadata.
    ///
    /// - Throws: ``/MobileNetTFLite/TFLiteError/damaged(path:reason:)`` for damaged metadata or
    ///   a label file that is named but missing.
    static func tfliteLabels(_ file: TFLiteModel, url: URL) throws -> [String]? {
        guard let name = try file.supportMetadata()?.labelsFile else { return nil }
        let data: Data?
        do {
            data = try KerasArchive.member(name, of: url, limit: 4 << 20)
        } catch {
            let reason = error.description.replacingOccurrences(of: url.path + ": ", with: "").replacingOccurrences(of: "damaged .keras archive: ", with: "")
            throw TFLiteError.damaged(path: url.path, reason: "its metadata names the label file \(name), which cannot be read from the ZIP archive appended to the model (\(reason)); give the class names with --labels")
        }
        guard let data else { throw TFLiteError.damaged(path: url.path, reason: "its metadata names the label file \(name), which it does not hold") }
        return labelLines(data)
    }

    /// The largest label file read: 4 MiB (ImageNet's 1001 names take 22 KB).
    public static let maximumLabelFileBytes = 4 << 20

    /// Reads a label file: one class name per line, in output order (TFLite's label files,
    /// `--labels`). A UTF-8 byte-order mark, carriage returns and trailing empty lines are
    /// dropped; the names are checked against the model's outputs when it is opened
    /// (``ModelOpenOptions/classNames``).
    ///
    /// - Throws: ``ModelFileError/labelFile(path:reason:)`` for a missing, special, unreadable
    ///   or oversized file; ``ModelFileError/classNames(path:reason:)`` for one with no names.
    public static func labels(contentsOf url: URL) throws(ModelFileError) -> [String] {
        switch FileKind(path: url.path) {
        case .regular: break
        case .missing: throw .labelFile(path: url.path, reason: "no such file")
        case let other: throw .labelFile(path: url.path, reason: other.description)
        }
        let data: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            data = try handle.read(upToCount: maximumLabelFileBytes + 1) ?? Data()
        } catch {
            throw .labelFile(path: url.path, reason: error.localizedDescription)
        }
        guard data.count <= maximumLabelFileBytes else {
            throw .labelFile(path: url.path, reason: "more than \(maximumLabelFileBytes >> 20) MiB")
        }
        let lines = labelLines(data)
        guard !lines.isEmpty else { throw .classNames(path: url.path, reason: "the label file holds no names") }
        return lines
    }

    static func labelLines(_ data: Data) -> [String] {
        // Split the bytes, not the characters: Swift reads "\r\n" as one Character, so a
        // Windows label file would be one line.
        let body = data.starts(with: [0xEF, 0xBB, 0xBF]) ? data.dropFirst(3) : data[...]
        var lines = body.split(separator: 0x0A, omittingEmptySubsequences: false).map { line in
            String(decoding: line.last == 0x0D ? line.dropLast() : line, as: UTF8.self)
        }
        while lines.last == "" { lines.removeLast() }
        return lines
    }

    /// Class names of a TFLite classifier with `count` outputs (see ``openTFLite``); a 1001-way
    /// file whose first class is TF-slim's `background` gets ImageNet's synsets from class 1 on.
    static func tfliteClassNames(_ given: [String]?, path: String, count: Int) throws(ModelFileError) -> [ModelClass] {
        let imageNet = ImageNetClasses.all
        if given == nil, count == imageNet.count + 1 {
            return [ModelClass(name: "background", synset: nil)] + imageNet.map { ModelClass(name: $0.name, synset: $0.synset) }
        }
        // An ImageNet-sized label list gets synsets, which tell its repeated names apart.
        var classes = try classNames(given, count: count, path: path, allowRepeats: count == imageNet.count || count == imageNet.count + 1)
        // Synsets only for ImageNet's own labels in ImageNet's order (9 in 10 names the same as
        // Keras's, compared lower-cased, `_` as space, up to the first comma: "tabby, tabby cat").
        func key(_ name: String) -> String {
            String(name.split(separator: ",").first ?? "").replacingOccurrences(of: "_", with: " ").trimmingCharacters(in: .whitespaces).lowercased()
        }
        func isImageNet(_ names: ArraySlice<ModelClass>) -> Bool {
            zip(names, imageNet).filter { key($0.name) == key($1.name) }.count * 10 >= imageNet.count * 9
        }
        if given != nil, count == imageNet.count + 1, classes[0].name.lowercased() == "background", isImageNet(classes[1...]) {
            for i in 1..<count { classes[i].synset = imageNet[i - 1].synset }
        } else if given != nil, count == imageNet.count, isImageNet(classes[...]) {
            for i in 0..<count { classes[i].synset = imageNet[i].synset }
        }
        return classes
    }

    private static func openTrainedModel(_ url: URL, options: ModelOpenOptions, backend: any InferenceBackend, resolver: WeightsResolver) async throws -> RunnableModel {
        let saved = try ClassifierModel.read(contentsOf: url)
        if let given = options.classNames, given != saved.classNames {
            throw ModelFileError.conflictingOption(path: url.path, option: "class names", recorded: saved.classNames.joined(separator: ","),
                                                   given: given.joined(separator: ","))
        }
        let recorded = saved.backbone
        // A recorded configuration the machine cannot run is the file's fault: named as such.
        do {
            try MobileNetV2Configuration(alpha: recorded.alpha, inputHeight: recorded.inputHeight, inputWidth: recorded.inputWidth, includeTop: false).validate()
        } catch {
            throw ClassifierModelError.invalid(path: url.path, message: "its backbone: \(error.description)")
        }
        if let given = options.alpha, given != recorded.alpha {
            throw ModelFileError.conflictingOption(path: url.path, option: "alpha", recorded: "\(recorded.alpha)", given: "\(given)")
        }
        if let given = options.inputSize, given != (recorded.inputHeight, recorded.inputWidth) {
            throw ModelFileError.conflictingOption(path: url.path, option: "input size", recorded: "\(recorded.inputHeight)x\(recorded.inputWidth)",
                                                   given: "\(given.height)x\(given.width)")
        }
        var backbone: Backbone
        do {
            backbone = try await Backbone.load(matching: recorded, weightsPath: options.backboneWeightsPath, recordedPath: saved.backboneWeightsPath,
                                               source: url.path, backend: backend, resolver: resolver)
        } catch let error as BackboneMismatch {
            throw error  // names the model file already
        } catch let error as BackboneWeightsMissing {
            throw error
        } catch {
            throw ModelFileError.backbone(path: url.path, reason: (error as? LocalizedError)?.errorDescription ?? "\(error)")
        }
        if let fineTuning = saved.fineTuning {
            backbone = try fineTunedBackbone(fineTuning, base: backbone, source: url.path, backend: backend)
        }
        let head = try saved.head.denseHead(source: url.path)
        guard head.inputWidth == backbone.network.embeddingWidth else {
            throw TrainedClassifierError.embeddingWidthMismatch(path: url.path, head: head.inputWidth, backbone: backbone.network.embeddingWidth)
        }
        let classes = options.embeddingOnly ? [] : try classNames(saved.classNames, count: head.classes, path: url.path)
        return RunnableModel(kind: .trainedModel, source: url, network: options.embeddingOnly ? backbone.network : try backbone.network.withHead(head),
                             head: options.embeddingOnly ? nil : head, identity: backbone.identity,
                             weightsURL: backbone.weightsURL, classes: classes, preprocessingConfiguration: saved.recordedPreprocessing,
                             preprocessing: saved.preprocessing, trainedModel: saved, pooling: .avg)
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

    /// The classes of a model: `names` when given (one per output, no repeats), ImageNet's
    /// (with synsets) for 1000 outputs, else `class0`, `class1`, ...
    ///
    /// `allowRepeats` accepts a name twice: ImageNet's own label files name two classes `crane`
    /// (the bird and the machine) and two `maillot`, told apart by their synsets.
    static func classNames(_ names: [String]?, count: Int, path: String, allowRepeats: Bool = false) throws(ModelFileError) -> [ModelClass] {
        guard let names else {
            if count == ImageNetClasses.all.count { return ImageNetClasses.all.map { ModelClass(name: $0.name, synset: $0.synset) } }
            return (0..<count).map { ModelClass(name: "class\($0)", synset: nil) }
        }
        guard names.count == count else {
            throw .classNames(path: path, reason: "the model has \(count) classes but \(names.count) class names were given (\(names.prefix(5).map { "'\($0)'" }.joined(separator: ", "))\(names.count > 5 ? ", ..." : ""))")
        }
        var seen = Set<String>()
        for (index, name) in names.enumerated() {
            guard !name.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw .classNames(path: path, reason: "class name \(index) is empty")
            }
            guard seen.insert(name).inserted || allowRepeats else { throw .classNames(path: path, reason: "the class name '\(name)' appears twice") }
        }
        return names.map { ModelClass(name: $0, synset: nil) }
    }
}

extension ClassifierHead {
    /// The same head at inference, in Float32 (Dropout dropped: it is the identity there): each
    /// Dense layer followed by a ReLU is a `relu` layer, the last one `softmax`. Layers are named
    /// as Keras names them in a transfer model (`dense`, `dense_1`, ...).
    ///
    /// - Throws: ``/MobileNetModel/ModelError/invalidWeights(layer:variable:reason:source:)``
    ///   naming `source` for an inconsistent head or a value that is NaN, infinite, or beyond
    ///   Float32's range.
    public func denseHead(source: String) throws(ModelError) -> DenseHead {
        if let problem = inconsistency {
            throw .invalidWeights(layer: "head", variable: "kernel", reason: problem, source: source)
        }
        var result: [DenseHead.Layer] = []
        for layer in layers {
            switch layer {
            case .dropout: continue
            case .relu: if !result.isEmpty { result[result.count - 1].activation = .relu }
            case .dense(let d):
                let name = result.isEmpty ? "dense" : "dense_\(result.count)"
                result.append(DenseHead.Layer(name: name, kernel: Tensor(shape: [d.inputs, d.outputs], scalars: d.kernel.map { Float($0) }),
                                              bias: d.bias.map { Float($0) }, activation: .linear))
            }
        }
        if !result.isEmpty { result[result.count - 1].activation = .softmax }
        return try DenseHead(layers: result, source: source)
    }
}
