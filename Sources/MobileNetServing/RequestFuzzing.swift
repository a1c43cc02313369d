import Foundation

/// The request decoders as a fuzz target sees them (`mobilenet-fuzz request`): hostile bytes
/// decoded as a TensorFlow Serving predict body and as a KServe v2 infer body for a small model
/// (8x8 inputs in -1...1, 4 images per request), without loading a network.
@_spi(Fuzzing)
public enum RequestDecodingFuzz {
    static let context = RequestJSON.Context(height: 8, width: 8, range: -1...1, modelName: "fuzz", outputName: ServedModel.probabilitiesOutputName,
                                             limits: ServingLimits(maxImagesPerRequest: 4))

    /// Decodes `body` both ways. Either decoding throws a ``ServingError`` (anything else is a
    /// finding, as is a crash or a hang) or gives 1 to 4 images, each a tensor of 8x8x3 finite
    /// values within the range's slack or encoded bytes.
    ///
    /// - Returns: how many of the two decoders took the body.
    @discardableResult
    public static func run(_ body: Data) -> Int {
        let images: [[RequestImage]] = [
            (try? RequestJSON.decode(TFServing.PredictDocument.self, from: body, context: context))?.request.images,
            (try? RequestJSON.decode(KServe.InferDocument.self, from: body, context: context))?.request.images,
        ].compactMap { $0 }
        let slack = context.slack
        for request in images {
            precondition((1...context.limits.maxImagesPerRequest).contains(request.count), "an image count outside the limits was accepted")
            for image in request {
                if case .tensor(let values) = image {
                    precondition(values.count == 8 * 8 * 3, "a tensor of the wrong size was accepted")
                    precondition(values.allSatisfy { $0.isFinite && $0 >= -1 - slack && $0 <= 1 + slack }, "a value outside the input range was accepted")
                }
            }
        }
        return images.count
    }
}
