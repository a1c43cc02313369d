import Foundation
import MobileNetKernels
import MobileNetModel

extension MobileNetV2 {
    /// Finds the weight file, reads it and builds the network: the one call behind
    /// `mobilenet classify` and `embed`.
    ///
    /// The file is `weightsPath` when given, else what ``WeightsResolver`` finds for the
    /// configuration (`$MOBILENET_WEIGHTS`, the cache, the official download; a non-official
    /// input size uses the 224 file, see ``WeightsResolver/weightFileInputSize(height:width:)``).
    /// A file with or without the top works for a model without the top (the classifier is
    /// dropped); a MobileNetV2 nested in a larger Keras model is found. The raw weights are
    /// released once the model is built (the model keeps its own folded copy).
    ///
    /// - Parameters:
    ///   - configuration: the network to build.
    ///   - weightsPath: an explicit weight file (`.h5`, `.weights.h5`, `.keras`).
    ///   - backend: the kernels that run it.
    ///   - resolver: where to look when no file is given.
    /// - Returns: the network and the weight file it was built from.
    /// - Throws: ``WeightsResolutionError`` (no file), ``WeightFileError`` (unreadable file),
    ///   ``/MobileNetModel/ModelError`` (weights that do not fit), the backend's errors.
    public static func load(configuration: MobileNetV2Configuration, weightsPath: String? = nil, backend: any InferenceBackend,
                            resolver: WeightsResolver = WeightsResolver()) async throws -> (model: MobileNetV2, weightsFile: URL) {
        let url = try await resolver.resolve(alpha: configuration.alpha, inputHeight: configuration.inputHeight, inputWidth: configuration.inputWidth,
                                             includeTop: configuration.includeTop, explicitPath: weightsPath)
        return (try load(configuration: configuration, contentsOf: url, backend: backend), url)
    }

    /// Reads the weight file at `url` and builds the network (see ``load(configuration:weightsPath:backend:resolver:)``).
    ///
    /// - Throws: ``WeightFileError``, ``/MobileNetModel/ModelError``, the backend's errors.
    public static func load(configuration: MobileNetV2Configuration, contentsOf url: URL, backend: any InferenceBackend) throws -> MobileNetV2 {
        var weights = try KerasWeightFile.read(contentsOf: url).weights.mobileNetV2Part()
        if !configuration.includeTop { weights = weights.droppingClassifier() }
        return try MobileNetV2(configuration: configuration, weights: weights, backend: backend)
    }
}
