import Foundation
import MobileNetKernels

/// Resizing of RGB images to the model's input size.
public enum ImageResizer {
    /// Bilinear resize with half-pixel centres and no antialiasing: exactly
    /// `tf.image.resize(images, size, method="bilinear")` (TF 2.x `ResizeBilinear` with
    /// `half_pixel_centers=True`), the resize of Keras's `image_dataset_from_directory`.
    ///
    /// Computed in `Float` like TensorFlow: source coordinate `(x + 0.5) * (in / out) - 0.5`,
    /// clamped neighbours, horizontal then vertical interpolation.
    ///
    /// - Returns: `[height, width, 3]` floats in 0...255 (not rounded, as TensorFlow returns them).
    public static func bilinear(_ image: RGBImage, height: Int, width: Int) -> [Float] {
        struct Weight { var lower: Int, upper: Int, lerp: Float }
        func weights(out: Int, in size: Int) -> [Weight] {
            let scale = Float(size) / Float(out)
            return (0..<out).map { i in
                let position = (Float(i) + 0.5) * scale - 0.5
                let floor = position.rounded(.down)
                return Weight(lower: max(Int(floor), 0), upper: min(Int(position.rounded(.up)), size - 1), lerp: position - floor)
            }
        }
        let ys = weights(out: height, in: image.height), xs = weights(out: width, in: image.width)
        var output = [Float](repeating: 0, count: height * width * 3)
        let rowStride = image.width * 3
        image.pixels.withUnsafeBufferPointer { p in
            for (oy, y) in ys.enumerated() {
                let top = y.lower * rowStride, bottom = y.upper * rowStride
                for (ox, x) in xs.enumerated() {
                    for c in 0..<3 {
                        let tl = Float(p[top + x.lower * 3 + c]), tr = Float(p[top + x.upper * 3 + c])
                        let bl = Float(p[bottom + x.lower * 3 + c]), br = Float(p[bottom + x.upper * 3 + c])
                        let t = tl + (tr - tl) * x.lerp
                        let b = bl + (br - bl) * x.lerp
                        output[(oy * width + ox) * 3 + c] = t + (b - t) * y.lerp
                    }
                }
            }
        }
        return output
    }
}

/// Turns image files into model input: decode, resize to the model size, scale pixels.
///
/// The default matches a Keras/TensorFlow pipeline for MobileNetV2: `tf.image.resize`
/// bilinear (half-pixel centres, no antialiasing) to the model size, then
/// `keras.applications.mobilenet_v2.preprocess_input`: `x / 127.5 - 1`, mapping 0...255 to -1...1.
public struct ImagePreprocessor: Sendable {
    /// The decoder (JPEG and PNG by default).
    public var decoder: any ImageDecoding
    /// Model input height in pixels.
    public var height: Int
    /// Model input width in pixels.
    public var width: Int

    /// Creates a preprocessor for a `height` x `width` model.
    public init(height: Int, width: Int, decoder: any ImageDecoding = StandardImageDecoder()) {
        self.decoder = decoder
        self.height = height
        self.width = width
    }

    /// `x / 127.5 - 1` element-wise (Keras "tf" mode): 0...255 to -1...1. Returns a new array.
    public static func scaleToMinusOneOne(_ pixels: [Float]) -> [Float] {
        pixels.map { $0 / 127.5 - 1 }
    }

    /// The model input for one image.
    ///
    /// - Returns: `[1, height, width, 3]` in -1...1 (NHWC).
    public func tensor(for image: RGBImage) -> Tensor {
        Tensor(shape: [1, height, width, 3], scalars: Self.scaleToMinusOneOne(ImageResizer.bilinear(image, height: height, width: width)))
    }

    /// Reads, decodes and preprocesses the file at `url`.
    ///
    /// - Returns: `[1, height, width, 3]` in -1...1 (NHWC).
    /// - Throws: ``ImageError`` naming the file.
    public func tensor(contentsOf url: URL) throws(ImageError) -> Tensor {
        tensor(for: try decoder.decode(contentsOf: url))
    }
}
