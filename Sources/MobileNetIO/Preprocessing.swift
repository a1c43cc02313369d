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

/// How resized pixels (0...255) become model input values.
public enum PixelScaling: Sendable, Hashable, Codable {
    /// Keras "tf" mode, `keras.applications.mobilenet_v2.preprocess_input`: `x / 127.5 - 1`,
    /// 0...255 to -1...1. MobileNetV2's.
    case minusOneToOne
    /// TF Hub image models: `x / 255`, 0...255 to 0...1.
    case zeroToOne
    /// torchvision `ToTensor()` then `Normalize(mean, std)`: `(x / 255 - mean[c]) / std[c]` per
    /// channel (R, G, B).
    case meanStd(mean: [Float], std: [Float])
    /// No scaling: 0...255 as floats.
    case none

    /// Whether the scaling can be applied as stated: three means and three finite, non-zero
    /// deviations for ``meanStd(mean:std:)``; always true for the other cases.
    public var isValid: Bool {
        guard case .meanStd(let mean, let std) = self else { return true }
        return mean.count == 3 && std.count == 3 && !std.contains(0) && (mean + std).allSatisfy(\.isFinite)
    }

    /// torchvision's ImageNet statistics: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    public static let imageNetMeanStd = PixelScaling.meanStd(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])

    /// The scaling as `value = (pixel - mean[c]) / std[c]` on pixels 0...255, channel `c` (R, G, B):
    /// (127.5, 127.5) for ``minusOneToOne``, (0, 255) for ``zeroToOne``, (0, 1) for ``none``.
    public var pixelMeanStd: (mean: [Float], std: [Float]) {
        switch self {
        case .minusOneToOne: return ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5])
        case .zeroToOne: return ([0, 0, 0], [255, 255, 255])
        case .none: return ([0, 0, 0], [1, 1, 1])
        case .meanStd(let mean, let std):
            guard isValid else { return ([0, 0, 0], [255, 255, 255]) }
            return (mean.map { $0 * 255 }, std.map { $0 * 255 })
        }
    }

    /// The scaling TFLite Support's `NormalizationOptions` describe, `(pixel - mean) / std` on
    /// pixels 0...255 with one value or one per channel: the named cases when they match exactly,
    /// else ``meanStd(mean:std:)``; nil for values that are not one or three finite numbers
    /// with non-zero deviations.
    public init?(normalizationMean mean: [Float], std: [Float]) {
        guard [1, 3].contains(mean.count), [1, 3].contains(std.count), (mean + std).allSatisfy(\.isFinite), !std.contains(0) else { return nil }
        let m = mean.count == 1 ? [mean[0], mean[0], mean[0]] : mean, d = std.count == 1 ? [std[0], std[0], std[0]] : std
        if m.allSatisfy({ $0 == 127.5 }) && d.allSatisfy({ $0 == 127.5 }) { self = .minusOneToOne }
        else if m.allSatisfy({ $0 == 0 }) && d.allSatisfy({ $0 == 255 }) { self = .zeroToOne }
        else if m.allSatisfy({ $0 == 0 }) && d.allSatisfy({ $0 == 1 }) { self = .none }
        else { self = .meanStd(mean: m.map { $0 / 255 }, std: d.map { $0 / 255 }) }
    }

    /// The scaled copy of interleaved RGB `pixels` (0...255); the input is not changed.
    ///
    /// For ``meanStd(mean:std:)`` with other than three means and three non-zero deviations
    /// (see ``isValid``), the pixels are only divided by 255.
    public func apply(_ pixels: [Float]) -> [Float] {
        switch self {
        case .minusOneToOne: return pixels.map { $0 / 127.5 - 1 }
        case .zeroToOne: return pixels.map { $0 / 255 }
        case .none: return pixels
        case .meanStd(let mean, let std):
            guard isValid else { return pixels.map { $0 / 255 } }
            var out = pixels
            for i in out.indices { out[i] = (pixels[i] / 255 - mean[i % 3]) / std[i % 3] }
            return out
        }
    }
}

/// Turns image files into model input: decode, resize (and crop) to the model size, scale pixels.
///
/// The default matches a Keras/TensorFlow pipeline for MobileNetV2: `tf.image.resize`
/// bilinear (half-pixel centres, no antialiasing) to the model size without crop, then
/// `keras.applications.mobilenet_v2.preprocess_input`: `x / 127.5 - 1`, mapping 0...255 to -1...1.
/// For the exact input of `keras.utils.load_img(path, target_size=(224, 224),
/// interpolation="bilinear")` use ``ResizeMethod/pilBilinear`` and a decoder with
/// ``StandardImageDecoder/OrientationHandling/ignore``.
public struct ImagePreprocessor: Sendable {
    /// The decoder (``StandardImageDecoder`` by default: EXIF orientation applied).
    public var decoder: any ImageDecoding
    /// Model input height in pixels.
    public var height: Int
    /// Model input width in pixels.
    public var width: Int
    /// The resize algorithm (default ``ResizeMethod/bilinear``, `tf.image.resize`).
    public var resize: ResizeMethod
    /// The crop done with the resize (default ``CropMode/none``).
    public var crop: CropMode
    /// How pixels are scaled (default ``PixelScaling/minusOneToOne``).
    public var scaling: PixelScaling

    /// Creates a preprocessor for a `height` x `width` model.
    public init(height: Int, width: Int, decoder: any ImageDecoding = StandardImageDecoder(),
                resize: ResizeMethod = .bilinear, crop: CropMode = .none, scaling: PixelScaling = .minusOneToOne) {
        self.decoder = decoder
        self.height = height
        self.width = width
        self.resize = resize
        self.crop = crop
        self.scaling = scaling
    }

    /// The resized (and cropped) pixels of `image`, before scaling.
    ///
    /// - Returns: `[height, width, 3]` floats in 0...255.
    public func resizedPixels(for image: RGBImage) -> [Float] {
        ImageResizer.resize(image, height: height, width: width, method: resize, crop: crop)
    }

    /// The model input for one image (`image` is not changed).
    ///
    /// - Returns: `[1, height, width, 3]` (NHWC), values as ``scaling`` gives them (-1...1 by default).
    public func tensor(for image: RGBImage) -> Tensor {
        Tensor(shape: [1, height, width, 3], scalars: scaling.apply(resizedPixels(for: image)))
    }

    /// What the decoder may assume about the use of the image (for DCT-domain downscaling).
    public var decodeTarget: DecodeTarget {
        DecodeTarget(height: height, width: width, shorterSide: crop.shorterSide(height: height, width: width))
    }

    /// Reads, decodes and preprocesses the file at `url`.
    ///
    /// - Returns: `[1, height, width, 3]` (NHWC), -1...1 by default.
    /// - Throws: ``ImageError`` naming the file.
    public func tensor(contentsOf url: URL) throws(ImageError) -> Tensor {
        let image = try decoder.decode(contentsOf: url, target: decodeTarget)
        guard image.width > 0, image.height > 0 else { throw .corrupt(path: url.path, reason: "the image has no pixels") }
        return tensor(for: image)
    }
}
