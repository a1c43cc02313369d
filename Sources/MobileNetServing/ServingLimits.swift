/// The bounds that keep a hostile or careless request from taking the server down: every
/// request is checked against them before any work is done for it.
public struct ServingLimits: Sendable, Hashable {
    /// The largest request body in bytes (default 64 MiB: about 40 float tensors of
    /// 224x224x3 written as JSON, or a few dozen photos in base64).
    public var maxBodyBytes: Int
    /// The largest decoded image in pixels (width x height; default 100,000,000, the decoder's): a bigger
    /// image is refused before its pixels are allocated (decompression bombs).
    public var maxImagePixels: Int
    /// The most images (instances, or the batch dimension of a tensor) in one request
    /// (default 64).
    public var maxImagesPerRequest: Int
    /// The most classes a `top` parameter may ask for (default 1000).
    public var maxTopK: Int

    /// Creates limits; values below 1 are raised to 1.
    /// Checks the number of images a request gives against ``maxImagesPerRequest``: the one
    /// count check of every API (TF Serving REST and gRPC, KServe, the service itself).
    ///
    /// - Parameters:
    ///   - count: the images given (a batch dimension, a list's length; may be negative as sent).
    ///   - field: the request field that gives it (`instances`, `inputs[0].shape[0]`).
    ///   - noun: what the API calls them (`images`, `instances`).
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` naming `field` when `count` is
    ///   negative, zero, or more than ``maxImagesPerRequest``.
    public func checkImageCount(_ count: Int64, field: String, noun: String = "images") throws(ServingError) {
        guard count >= 0 else { throw .invalidInput(field: field, problem: "the batch dimension is negative (\(count))") }
        guard count > 0 else { throw .invalidInput(field: field, problem: "no \(noun) (the batch is empty)") }
        guard count <= Int64(maxImagesPerRequest) else {
            throw .invalidInput(field: field, problem: "\(count) \(noun), more than the \(maxImagesPerRequest) a request may have")
        }
    }

    public init(maxBodyBytes: Int = 64 << 20, maxImagePixels: Int = 100_000_000, maxImagesPerRequest: Int = 64, maxTopK: Int = 1000) {
        self.maxBodyBytes = max(1, maxBodyBytes)
        self.maxImagePixels = max(1, maxImagePixels)
        self.maxImagesPerRequest = max(1, maxImagesPerRequest)
        self.maxTopK = max(1, maxTopK)
    }
}
