import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetSavedModel
import MobileNetStore
import MobileNetTFLite

/// The frozen embedding network of transfer learning and search: MobileNetV2 without the top,
/// globally pooled, with its identity (configuration and weight-file hash, the cache key of its
/// embeddings) and the weight file it came from.
public struct Backbone: Sendable {
    /// The embedding network (`include_top=False`, pooled): `[N, H, W, 3]` in -1...1 to `[N, C]`, 0...6.
    public let network: MobileNetV2
    /// Identity of the network and its weights.
    public let identity: BackboneIdentity
    /// The weight file.
    public let weightsURL: URL

    /// Creates a backbone from its parts.
    public init(network: MobileNetV2, identity: BackboneIdentity, weightsURL: URL) {
        self.network = network
        self.identity = identity
        self.weightsURL = weightsURL
    }

    /// Resolves the weight file (a file without the top is looked for first; either works) and
    /// builds the pooled embedding network of `alpha` at `inputHeight` x `inputWidth`.
    ///
    /// - Parameters:
    ///   - weightsPath: an explicit weight file; nil for ``/MobileNetIO/WeightsResolver``'s search
    ///     (a non-official size uses the 224 file).
    ///   - alpha: the width multiplier (default 1.0).
    ///   - inputHeight: network input height in pixels (default 224).
    ///   - inputWidth: network input width in pixels (default 224).
    ///   - pooling: `.avg` (Keras `pooling="avg"`, the usual embedding) or `.max`.
    ///   - backend: the kernels that run the network.
    ///   - resolver: where to look when `weightsPath` is nil (default: the environment, the
    ///     cache, the official download).
    /// - Throws: ``/MobileNetIO/WeightsResolutionError``, ``/MobileNetIO/WeightFileError``,
    ///   ``/MobileNetModel/ModelError``, the backend's errors, and the file-system error when the
    ///   weight file cannot be hashed.
    public static func load(weightsPath: String? = nil, alpha: Double = 1.0, inputHeight: Int = 224, inputWidth: Int = 224,
                            pooling: Pooling = .avg, backend: any InferenceBackend,
                            resolver: WeightsResolver = WeightsResolver()) async throws -> Backbone {
        let url = try await resolver.resolve(alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, includeTop: false, explicitPath: weightsPath)
        return try load(contentsOf: url, alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, pooling: pooling, backend: backend)
    }

    /// Builds the backbone from the weight file at `url` (any Keras layout, a nested MobileNetV2 included).
    ///
    /// - Throws: as ``load(weightsPath:alpha:inputHeight:inputWidth:pooling:backend:resolver:)``.
    public static func load(contentsOf url: URL, alpha: Double, inputHeight: Int, inputWidth: Int, pooling: Pooling = .avg,
                            backend: any InferenceBackend) throws -> Backbone {
        if SavedModelFolder.isFolder(url) {
            // A SavedModel folder (an index or model made with `--model DIR`): its Keras-named variables.
            let (folder, _) = try SavedModelFolder.resolve(url)
            let recognised = try SavedModelMobileNetV2(folder: try SavedModelFolder(contentsOf: folder))
            let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, includeTop: false, pooling: pooling)
            let network = try MobileNetV2(configuration: configuration, weights: recognised.backboneWeights.droppingClassifier(), backend: backend)
            let index = folder.appendingPathComponent("variables/variables.index")
            return Backbone(network: network, identity: try BackboneIdentity(configuration: configuration, weightsFile: index), weightsURL: folder)
        }
        if case .tflite = try ModelContainer(contentsOf: url) {
            // A `.tflite` MobileNetV2 (an index or model made with `--model x.tflite`): its own
            // backend for a quantized file, the images preprocessed as the default (`x / 127.5 - 1`).
            let recognised = try TFLiteMobileNetV2(model: TFLiteModel(contentsOf: url))
            let c = recognised.configuration
            guard c.alpha == alpha, c.inputHeight == inputHeight, c.inputWidth == inputWidth else {
                throw ModelError.invalidConfiguration("\(url.path) is MobileNetV2 alpha \(c.alpha) at \(c.inputHeight)x\(c.inputWidth), not alpha \(alpha) at \(inputHeight)x\(inputWidth)")
            }
            let runOn = try recognised.backend(float: backend, normalization: PixelScaling.minusOneToOne.pixelMeanStd)
            let network = try recognised.embeddingNetwork(pooling: pooling, backend: runOn)
            var identity = try BackboneIdentity(configuration: network.configuration, weightsFile: url)
            identity.architecture = TFLiteMobileNetV2.architectureName(backend: runOn)
            return Backbone(network: network, identity: identity, weightsURL: url)
        }
        let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, includeTop: false, pooling: pooling)
        let network = try MobileNetV2.load(configuration: configuration, contentsOf: url, backend: backend)
        return Backbone(network: network, identity: try BackboneIdentity(configuration: configuration, weightsFile: url), weightsURL: url)
    }

    /// Loads the backbone an identity describes (for a saved classifier or an index): the file
    /// `weightsPath` when given, else `recordedPath` when it still exists, else the resolver's
    /// search; its SHA-256 must be the identity's.
    ///
    /// - Parameters:
    ///   - identity: the recorded backbone (configuration and weight-file SHA-256).
    ///   - weightsPath: an explicit weight file, tried first.
    ///   - recordedPath: the weight file the identity was recorded with, used when it still exists.
    ///   - source: what recorded the identity (a model file or index path), for messages.
    ///   - backend: the kernels that run the network.
    ///   - resolver: where to look when neither file is used (default: the environment, the
    ///     cache, the official download).
    /// - Throws: ``BackboneMismatch`` when the file found is another backbone; otherwise as
    ///   ``load(weightsPath:alpha:inputHeight:inputWidth:pooling:backend:resolver:)``.
    public static func load(matching identity: BackboneIdentity, weightsPath: String? = nil, recordedPath: String? = nil, source: String,
                            backend: any InferenceBackend, resolver: WeightsResolver = WeightsResolver()) async throws -> Backbone {
        var path = weightsPath
        var recordedMissing: String?
        if path == nil, let recordedPath {
            if FileManager.default.fileExists(atPath: recordedPath) { path = recordedPath } else { recordedMissing = recordedPath }
        }
        let backbone: Backbone
        do {
            backbone = try await load(weightsPath: path, alpha: identity.alpha, inputHeight: identity.inputHeight, inputWidth: identity.inputWidth,
                                      pooling: Pooling(rawValue: identity.pooling) ?? .avg, backend: backend, resolver: resolver)
        } catch let error as WeightsResolutionError where recordedMissing != nil {
            throw BackboneWeightsMissing(source: source, recordedPath: recordedMissing ?? "", reason: error.description)
        }
        guard backbone.identity == identity else {
            throw BackboneMismatch(source: source, expected: identity, found: backbone.identity, weightsFile: backbone.weightsURL.path,
                                   recordedPath: recordedMissing)
        }
        return backbone
    }
}

/// A weight file that is not the backbone a model file or index was made with.
public struct BackboneMismatch: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The model file or index that recorded the backbone.
    public var source: String
    /// The recorded backbone.
    public var expected: BackboneIdentity
    /// The backbone of the weight file found.
    public var found: BackboneIdentity
    /// The weight file found.
    public var weightsFile: String
    /// The recorded weight file, when it no longer exists (the file found replaced it).
    public var recordedPath: String?

    /// Creates the error.
    public init(source: String, expected: BackboneIdentity, found: BackboneIdentity, weightsFile: String, recordedPath: String? = nil) {
        (self.source, self.expected, self.found, self.weightsFile, self.recordedPath) = (source, expected, found, weightsFile, recordedPath)
    }

    public var description: String {
        let missing = recordedPath.map { " (the recorded weight file \($0) no longer exists)" } ?? ""
        return "\(source): made with backbone \(expected.key), but the weight file \(weightsFile) gives \(found.key)\(missing); pass the weight file it was made with (--weights)"
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The weight file a model file or index recorded no longer exists, and none could be found instead.
public struct BackboneWeightsMissing: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The model file or index that recorded the path.
    public var source: String
    /// The recorded weight file.
    public var recordedPath: String
    /// Why the usual search failed.
    public var reason: String

    public var description: String {
        "\(source): the weight file it was made with, \(recordedPath), no longer exists, and no other was found (\(reason)); pass it with --weights"
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}
