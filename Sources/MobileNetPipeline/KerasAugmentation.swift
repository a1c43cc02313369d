import Foundation
import MobileNetIO
import MobileNetKernels

/// What ``KerasAugmentation`` rejects.
public enum KerasAugmentationError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A rotation factor bound that is not a finite number in -1...1 (fractions of a full turn).
    case rotationFactorOutOfRange(lower: Double, upper: Double)

    /// A sentence naming the problem.
    public var description: String {
        switch self {
        case .rotationFactorOutOfRange(let lower, let upper):
            "rotation factor (\(lower), \(upper)) is not within -1...1 (fractions of a full turn, as Keras RandomRotation takes it)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// On-the-fly augmentation with the semantics of the Keras transfer-learning guide's
/// `Sequential([RandomFlip("horizontal"), RandomRotation(factor)])`, computed exactly as
/// Keras 3.15.1 with the TensorFlow backend does (`random_flip.py`, `random_rotation.py`,
/// `BaseImagePreprocessingLayer._compute_affine_matrix`, and TensorFlow's
/// `ImageProjectiveTransformV3` kernel, `tensorflow/core/kernels/image/image_ops.h`):
///
/// 1. Horizontal flip (when the view says so): `out[y][x] = in[y][width − 1 − x]`. Keras flips
///    when its uniform draw is ≤ 0.5, i.e. with probability ½.
/// 2. Rotation by `θ` degrees, `θ` uniform in `[lower·360, upper·360]` (the factor is a
///    fraction of 2π; positive is counter-clockwise as Keras documents it), about the centre
///    `((width − 1)/2, (height − 1)/2)` in pixel-index coordinates (Keras's centre 0.5, 0.5
///    times `size − 1`). Each output pixel `(x, y)` (integer indices, no half-pixel offset) samples
///    the input at `x' = cos θ·x − sin θ·y + a₂`, `y' = sin θ·x + cos θ·y + b₂` with
///    `a₂ = cx − cx·cos θ + cy·sin θ`, `b₂ = cy − cx·sin θ − cy·cos θ`, all in `Float` as
///    TensorFlow computes them.
/// 3. Fill mode ``FillMode/reflect`` (Keras's default): the coordinate is reflected about the
///    edge of the last pixel, `d c b a | a b c d | d c b a` (half-sample symmetric: index −1
///    reads pixel 0, −2 reads pixel 1; period 2·size), then clamped to `0...size − 1`; with
///    ``FillMode/constant(_:)`` coordinates are not mapped and pixels outside read the value.
/// 4. Bilinear interpolation of the four neighbours `floor`, `floor + 1` of the mapped
///    coordinate; a neighbour outside the image reads the fill value (Keras `fill_value`,
///    default 0; with reflect it only ever gets weight 0).
///
/// Layout and range: one image, `[height, width, channels]` (HWC, channels last, the NHWC
/// batch of Keras without the batch axis) of `Float` pixels in 0...255, the resized image
/// before `preprocess_input`, which is where the guide augments. Use
/// ``/MobileNetIO/ImagePreprocessor/resizedPixels(for:)``, then ``apply(_:to:height:width:)``,
/// then the preprocessor's ``/MobileNetIO/PixelScaling`` (or
/// `ImagePreprocessor.tensor(for:augmentation:view:)` for all three). Values
/// stay within the input's range (bilinear weights are a convex combination; constant fill adds
/// its value).
///
/// Seeding: ``view(seed:epoch:index:)`` derives the view of image `index` in epoch `epoch` from
/// the three numbers alone (a SplitMix64 hash, ``SeededRandom``), so the same seed gives the same
/// views in any order and on any thread, and every epoch a new one. The flip is drawn before the
/// angle, so turning the flip off leaves the angles unchanged. (Keras draws from a stateful
/// generator per batch; its views cannot be reproduced, only its distribution and its
/// transformation of a given view, which the tests check against Keras itself.)
///
/// A value type, `Sendable`: share one between worker threads and call
/// ``augment(_:height:width:seed:epoch:index:)`` per image.
public struct KerasAugmentation: Sendable, Hashable, Codable {
    /// Where a rotated image samples outside the input (Keras `fill_mode`).
    public enum FillMode: Sendable, Hashable, Codable {
        /// Keras `"reflect"`: `d c b a | a b c d | d c b a`, about the edge of the last pixel.
        case reflect
        /// Keras `"constant"` with `fill_value`: every pixel outside reads this value (0...255).
        case constant(Float)
    }

    /// One augmented view: what Keras's two layers draw for one image.
    public struct View: Sendable, Hashable, Codable {
        /// Flip horizontally (before rotating).
        public var flip: Bool
        /// Rotation in degrees (counter-clockwise positive, as Keras's `angle`), finite.
        public var angleDegrees: Float

        /// A view with the given flip and angle.
        public init(flip: Bool, angleDegrees: Float) {
            self.flip = flip
            self.angleDegrees = angleDegrees
        }

        /// No flip, no rotation: the input unchanged.
        public static let identity = View(flip: false, angleDegrees: 0)
    }

    /// `RandomFlip("horizontal")`: flip with probability ½. False: never flip.
    public var horizontalFlip: Bool
    /// Lower bound of the rotation, a fraction of a full turn (−0.2: −72°).
    public private(set) var lowerRotationFactor: Double
    /// Upper bound of the rotation, a fraction of a full turn.
    public private(set) var upperRotationFactor: Double
    /// Keras `fill_mode` / `fill_value` (default reflect, Keras's default).
    public var fillMode: FillMode

    /// `RandomFlip("horizontal")` (if `horizontalFlip`) then `RandomRotation(rotationFactor)`:
    /// a single factor `f` means `(−|f|, |f|)`, as in Keras.
    ///
    /// - Parameters:
    ///   - horizontalFlip: flip with probability ½ (default true).
    ///   - rotationFactor: fraction of a full turn in −1...1 (default 0.2, the TF tutorial's; the
    ///     Keras guide uses 0.1); 0 disables rotation.
    ///   - fillMode: default ``FillMode/reflect``.
    /// - Throws: ``KerasAugmentationError/rotationFactorOutOfRange(lower:upper:)`` for a factor
    ///   outside −1...1 or not finite (Keras raises `ValueError`).
    public init(horizontalFlip: Bool = true, rotationFactor: Double = 0.2, fillMode: FillMode = .reflect) throws(KerasAugmentationError) {
        try self.init(horizontalFlip: horizontalFlip, rotationFactor: (-abs(rotationFactor), abs(rotationFactor)), fillMode: fillMode)
    }

    /// `RandomRotation(factor=(lower, upper))`: angles uniform in `[lower·360°, upper·360°]`
    /// (the bounds are sorted, as Keras sorts them; `(a, a)` gives exactly `a·360°`).
    ///
    /// - Throws: ``KerasAugmentationError/rotationFactorOutOfRange(lower:upper:)`` when a bound is
    ///   outside −1...1 or not finite (stricter than Keras, which checks only that the range
    ///   meets −1...1).
    public init(horizontalFlip: Bool = true, rotationFactor: (lower: Double, upper: Double), fillMode: FillMode = .reflect) throws(KerasAugmentationError) {
        let (a, b) = rotationFactor
        guard a.isFinite, b.isFinite, (-1...1).contains(a), (-1...1).contains(b) else {
            throw .rotationFactorOutOfRange(lower: a, upper: b)
        }
        self.horizontalFlip = horizontalFlip
        self.lowerRotationFactor = min(a, b)
        self.upperRotationFactor = max(a, b)
        self.fillMode = fillMode
    }

    /// The angle range in degrees, `lower·360 ... upper·360`.
    public var angleRangeDegrees: ClosedRange<Double> { lowerRotationFactor * 360...upperRotationFactor * 360 }

    /// The view of training image `index` in epoch `epoch` under `seed`: a function of the three
    /// numbers only (not of batch order or thread).
    ///
    /// - Parameters:
    ///   - seed: the training seed.
    ///   - epoch: the epoch (any numbering; a different epoch gives an independent view).
    ///   - index: the image's stable index in the training set (not its position in the
    ///     shuffled epoch), so an image's views do not depend on the shuffle.
    /// - Returns: flip with probability ½ (uniform ≤ 0.5, as Keras; never if ``horizontalFlip`` is
    ///   false), angle uniform in ``angleRangeDegrees``, rounded to `Float`.
    public func view(seed: UInt64, epoch: Int, index: Int) -> View {
        var random = SeededRandom(seed: Self.viewSeed(seed: seed, epoch: epoch, index: index))
        let flipDraw = random.uniform()
        let u = random.uniform()
        let factor = lowerRotationFactor + (upperRotationFactor - lowerRotationFactor) * u
        return View(flip: horizontalFlip && flipDraw <= 0.5, angleDegrees: Float(factor * 360))
    }

    /// The generator seed of one view: SplitMix64's finaliser over seed, epoch and index in turn.
    public static func viewSeed(seed: UInt64, epoch: Int, index: Int) -> UInt64 {
        func mix(_ value: UInt64) -> UInt64 {
            var z = value &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        return mix(mix(mix(seed ^ 0x4B65_7261_7341_7567) ^ UInt64(bitPattern: Int64(epoch))) ^ UInt64(bitPattern: Int64(index)))
    }

    /// ``apply(_:to:height:width:)`` with the view ``view(seed:epoch:index:)``.
    ///
    /// - Parameters:
    ///   - pixels: `[height, width, channels]` (HWC) floats, 0...255.
    ///   - height: the image height in pixels.
    ///   - width: the image width in pixels.
    ///   - seed: as in ``view(seed:epoch:index:)``.
    ///   - epoch: as in ``view(seed:epoch:index:)``.
    ///   - index: as in ``view(seed:epoch:index:)``.
    /// - Returns: a new `[height, width, channels]` image.
    public func augment(_ pixels: [Float], height: Int, width: Int, seed: UInt64, epoch: Int, index: Int) -> [Float] {
        apply(view(seed: seed, epoch: epoch, index: index), to: pixels, height: height, width: width)
    }

    /// Flip (if `view.flip`), then rotate by `view.angleDegrees` with ``fillMode``, as Keras.
    ///
    /// - Parameters:
    ///   - view: the flip and angle (finite).
    ///   - pixels: `[height, width, channels]` (HWC) floats, 0...255; `pixels.count` must be a
    ///     multiple of `height · width` (a programmer error otherwise).
    ///   - height: the image height in pixels.
    ///   - width: the image width in pixels.
    /// - Returns: a new `[height, width, channels]` image of the same size.
    /// - Complexity: O(height · width · channels), one pass per step.
    public func apply(_ view: View, to pixels: [Float], height: Int, width: Int) -> [Float] {
        let flipped = view.flip ? Self.flippedHorizontally(pixels, height: height, width: width) : pixels
        return Self.rotated(flipped, height: height, width: width, degrees: view.angleDegrees, fillMode: fillMode)
    }

    /// Keras `RandomFlip("horizontal")` of one image: `out[y][x] = in[y][width − 1 − x]`.
    ///
    /// - Parameters:
    ///   - pixels: `[height, width, channels]` (HWC); its count a multiple of `height · width`.
    ///   - height: the image height in pixels.
    ///   - width: the image width in pixels.
    /// - Returns: the mirrored image, same layout.
    public static func flippedHorizontally(_ pixels: [Float], height: Int, width: Int) -> [Float] {
        let channels = Self.channels(pixels, height: height, width: width)
        guard channels > 0 else { return pixels }
        var out = pixels
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<height {
                    let row = y * width * channels
                    for x in 0..<width {
                        let from = row + (width - 1 - x) * channels, to = row + x * channels
                        for c in 0..<channels { dst[to + c] = src[from + c] }
                    }
                }
            }
        }
        return out
    }

    /// The affine map of Keras `RandomRotation` by `degrees` for a `height` x `width` image, as
    /// `BaseImagePreprocessingLayer._compute_affine_matrix` builds it (scale 1, no shear, no
    /// translation): `[a0, a1, a2, b0, b1, b2]`, mapping output pixel `(x, y)` to input
    /// `(a0·x + a1·y + a2, b0·x + b1·y + b2)`, computed in `Float` like Keras (radians =
    /// degrees · Float(π/180)).
    public static func rotationTransform(degrees: Float, height: Int, width: Int) -> [Float] {
        let radians = degrees * Float(Double.pi / 180)
        let (cosT, sinT) = (Foundation.cos(radians), Foundation.sin(radians))
        let cx: Float = 0.5 * (Float(width) - 1)
        let cy: Float = 0.5 * (Float(height) - 1)
        let a0 = cosT, a1 = -sinT
        let a2 = cx - cx * a0 - cy * a1
        let b0 = sinT, b1 = cosT
        let b2 = cy - cx * b0 - cy * b1
        return [a0, a1, a2, b0, b1, b2]
    }

    /// Keras `RandomRotation` of one image by a given angle: TensorFlow's
    /// `ImageProjectiveTransformV3` with ``rotationTransform(degrees:height:width:)``, bilinear,
    /// the given fill mode.
    ///
    /// - Parameters:
    ///   - pixels: `[height, width, channels]` (HWC) floats; count a multiple of `height · width`.
    ///   - height: the image height in pixels.
    ///   - width: the image width in pixels.
    ///   - degrees: the angle, finite (a programmer error otherwise).
    ///   - fillMode: reflect or constant.
    /// - Returns: the rotated image, same size and layout.
    public static func rotated(_ pixels: [Float], height: Int, width: Int, degrees: Float, fillMode: FillMode) -> [Float] {
        precondition(degrees.isFinite, "KerasAugmentation.rotated: angle \(degrees) is not finite")
        let channels = Self.channels(pixels, height: height, width: width)
        guard channels > 0 else { return pixels }
        let t = rotationTransform(degrees: degrees, height: height, width: width)
        var fill: Float = 0
        var reflect = true
        if case .constant(let value) = fillMode { (fill, reflect) = (value, false) }
        var out = [Float](repeating: 0, count: pixels.count)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                @inline(__always) func read(_ y: Int, _ x: Int, _ c: Int) -> Float {
                    (0 <= y && y < height && 0 <= x && x < width) ? src[(y * width + x) * channels + c] : fill
                }
                for oy in 0..<height {
                    let fy = Float(oy)
                    for ox in 0..<width {
                        let fx = Float(ox)
                        let inX = t[0] * fx + t[1] * fy + t[2]
                        let inY = t[3] * fx + t[4] * fy + t[5]
                        let x = reflect ? reflectCoordinate(inX, size: width) : inX
                        let y = reflect ? reflectCoordinate(inY, size: height) : inY
                        let xFloor = x.rounded(.down), yFloor = y.rounded(.down)
                        let xCeil = xFloor + 1, yCeil = yFloor + 1
                        let x0 = Int(xFloor), y0 = Int(yFloor)
                        for c in 0..<channels {
                            let top = (xCeil - x) * read(y0, x0, c) + (x - xFloor) * read(y0, x0 + 1, c)
                            let bottom = (xCeil - x) * read(y0 + 1, x0, c) + (x - xFloor) * read(y0 + 1, x0 + 1, c)
                            dst[(oy * width + ox) * channels + c] = (yCeil - y) * top + (y - yFloor) * bottom
                        }
                    }
                }
            }
        }
        return out
    }

    /// TensorFlow's `MapCoordinate<FILL_REFLECT>`: reflects `coordinate` into `0...size − 1` about
    /// the edge of the last pixel (`d c b a | a b c d | d c b a`), with the same `Float` and
    /// integer steps, then clamps.
    public static func reflectCoordinate(_ coordinate: Float, size: Int) -> Float {
        guard coordinate.isFinite else { return 0 }
        var c = coordinate
        let len = Float(size)
        if c < 0 {
            if size <= 1 {
                c = 0
            } else {
                let period = 2 * size
                if c < Float(period) { c = Float(period * Int(-c / Float(period))) + c }
                c = c < -len ? c + Float(period) : -c - 1
            }
        } else if c > len - 1 {
            if size <= 1 {
                c = 0
            } else {
                let period = 2 * size
                c -= Float(period * Int(c / Float(period)))
                if c >= len { c = Float(period) - c - 1 }
            }
        }
        return min(max(c, 0), len - 1)
    }

    private static func channels(_ pixels: [Float], height: Int, width: Int) -> Int {
        precondition(height >= 0 && width >= 0, "KerasAugmentation: negative size \(height)x\(width)")
        guard height > 0, width > 0 else { return 0 }
        precondition(pixels.count % (height * width) == 0,
                     "KerasAugmentation: \(pixels.count) values are not a \(height)x\(width) image")
        return pixels.count / (height * width)
    }
}

extension ImagePreprocessor {
    /// The model input for one augmented view of `image`: resize (``/MobileNetIO/ImagePreprocessor/resizedPixels(for:)``,
    /// 0...255), ``KerasAugmentation/apply(_:to:height:width:)``, then ``/MobileNetIO/ImagePreprocessor/scaling`` — the order
    /// of the Keras guide (augmentation layers before `preprocess_input`).
    ///
    /// - Returns: `[1, height, width, 3]` (NHWC), values as ``/MobileNetIO/ImagePreprocessor/scaling`` gives them (-1...1 by default).
    public func tensor(for image: RGBImage, augmentation: KerasAugmentation, view: KerasAugmentation.View) -> Tensor {
        let augmented = augmentation.apply(view, to: resizedPixels(for: image), height: height, width: width)
        return Tensor(shape: [1, height, width, 3], scalars: scaling.apply(augmented))
    }
}
