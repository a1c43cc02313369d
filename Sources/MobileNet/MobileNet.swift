// The umbrella module: `import MobileNet` gives the tensors and kernels, the MobileNetV2 model,
// file and image input/output, the batch pipeline, transfer learning and similarity search,
// and chooses the default inference backend (oneDNN).
@_exported import MobileNetANN
@_exported import MobileNetIO
@_exported import MobileNetKernels
@_exported import MobileNetModel
@_exported import MobileNetOneDNN
@_exported import MobileNetPipeline
@_exported import MobileNetProcess
@_exported import MobileNetSavedModel
@_exported import MobileNetSearch
@_exported import MobileNetStore
@_exported import MobileNetTFLite
@_exported import MobileNetTraining
@_exported import MobileNetTransfer

extension MobileNetV2 {
    /// Builds the network on the default backend: oneDNN (``/MobileNetOneDNN/OneDNNBackend``) with
    /// all cores. See ``/MobileNetModel/MobileNetV2/init(configuration:weights:backend:foldBatchNorm:)``
    /// for the parameters and errors; pass `backend: ReferenceBackend()` for the plain-Swift kernels.
    ///
    /// - Throws: ``/MobileNetModel/ModelError`` for weights that do not fit, `OneDNNError` when oneDNN
    ///   cannot prepare the graph.
    public convenience init(configuration: MobileNetV2Configuration, weights: KerasWeightSet) throws {
        try self.init(configuration: configuration, weights: weights, backend: OneDNNBackend())
    }
}

extension RuntimeOptions {
    /// The default runtime: oneDNN on all cores, micro-batches of 1 side by side, decoding on half the cores,
    /// batches of 16.
    public static var `default`: RuntimeOptions { RuntimeOptions(backend: OneDNNBackend()) }
}
