import Foundation
import MobileNetKernels

/// How the network is run over many files: the backend (and with it the inference threads),
/// the network batch size and the decoding threads. The umbrella module `MobileNet` adds
/// `RuntimeOptions.default` (oneDNN on all cores).
public struct RuntimeOptions: Sendable {
    /// The kernels that run the network.
    public var backend: any InferenceBackend
    /// Images per network batch (at least 1; default 16).
    public var batchSize: Int
    /// Threads that decode and resize images while the network runs; nil for
    /// ``ImageBatchPipeline/defaultDecodeThreads``, 0 to decode in line.
    public var decodeThreads: Int?

    /// Creates runtime options.
    public init(backend: any InferenceBackend, batchSize: Int = 16, decodeThreads: Int? = nil) {
        self.backend = backend
        self.batchSize = max(1, batchSize)
        self.decodeThreads = decodeThreads.map { max(0, $0) }
    }
}
