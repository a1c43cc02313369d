import Foundation

/// How an image is resized to the model input. Each mode reproduces one library's algorithm,
/// so that a model sees what it saw in training.
///
/// | mode | equals | output |
/// |---|---|---|
/// | ``bilinear`` | `tf.image.resize(method="bilinear")` (half-pixel centres, no antialiasing); Keras `image_dataset_from_directory`'s default | floats |
/// | ``nearest`` | Pillow `NEAREST`; `keras.utils.load_img(target_size=)`'s default | integers |
/// | ``pilBilinear`` | Pillow `BILINEAR` (filter support widened when downscaling, 8-bit fixed point); `load_img(interpolation="bilinear")` | integers |
/// | ``pilBicubic`` | Pillow `BICUBIC` (same machinery, cubic kernel a = -0.5); `PIL.Image.resize`'s default, `load_img(interpolation="bicubic")` | integers |
/// | ``tfAntialias`` | `tf.image.resize(method="bilinear", antialias=True)` | floats |
/// | ``area`` | `tf.image.resize(method="area")` | floats |
public enum ResizeMethod: String, Sendable, Hashable, CaseIterable, Codable {
    /// `tf.image.resize` bilinear: half-pixel centres, 2x2 neighbours, no antialiasing.
    case bilinear
    /// Pillow's nearest neighbour (`Image.resize(size, NEAREST)`).
    case nearest
    /// Pillow's antialiased bilinear (`Image.resize(size, BILINEAR)`), fixed-point as Pillow.
    case pilBilinear = "pil-bilinear"
    /// Pillow's antialiased bicubic (`Image.resize(size, BICUBIC)`, the default of
    /// `PIL.Image.resize` and `keras.utils.load_img(interpolation="bicubic")`), fixed-point as
    /// Pillow; whole numbers in 0...255.
    case pilBicubic = "pil-bicubic"
    /// `tf.image.resize(..., antialias=True)` with the bilinear (triangle) kernel.
    case tfAntialias = "tf-antialias"
    /// `tf.image.resize(method="area")`: the average over each output pixel's footprint.
    case area

    /// Whether the mode is Pillow's (works on 8-bit pixels and takes a crop box).
    public var isPillow: Bool { self == .nearest || self == .pilBilinear || self == .pilBicubic }
}

/// Cropping done with the resize.
public enum CropMode: Sendable, Hashable, Codable {
    /// No crop: the whole image is resized to the target, changing its aspect ratio if needed.
    case none
    /// Centre crop to the target's aspect ratio, then resize. For TF modes exactly Keras
    /// `ops.image.resize(..., crop_to_aspect_ratio=True)` / `image_dataset_from_directory(crop_to_aspect_ratio=True)`
    /// (float32 box arithmetic, then a slice); for Pillow modes exactly
    /// `keras.utils.load_img(..., keep_aspect_ratio=True)` (integer box, passed to Pillow's
    /// `resize(box=)`, whose filter may read pixels just outside the box).
    case aspectRatio
    /// torchvision's `Resize(shorterSide)` then `CenterCrop((height, width))`: the shorter side
    /// becomes `shorterSide` (the longer `int(shorterSide * long / short)`), then the centre
    /// is cut out with offsets `round((size - crop) / 2)` (round half to even, as Python).
    /// `nil` means `round(max(height, width) / 0.875)` (256 for 224). A value below the target
    /// size is raised to it.
    case resizeShorterSide(Int?)

    /// The shorter-side length used for a `height` x `width` target, nil for the other modes.
    public func shorterSide(height: Int, width: Int) -> Int? {
        guard case .resizeShorterSide(let s) = self else { return nil }
        let target = max(height, width)
        return max(s ?? Int((Double(target) / 0.875).rounded()), target)
    }
}

extension RGBImage {
    /// The pixels of the `width` x `height` rectangle at (`x`, `y`) (clamped to the image), as a
    /// new image.
    public func cropped(x: Int, y: Int, width: Int, height: Int) -> RGBImage {
        let x0 = min(max(x, 0), self.width), y0 = min(max(y, 0), self.height)
        let w = max(0, min(width, self.width - x0)), h = max(0, min(height, self.height - y0))
        var out = [UInt8](repeating: 0, count: w * h * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for row in 0..<h {
                    let s = ((y0 + row) * self.width + x0) * 3
                    for i in 0..<w * 3 { dst[row * w * 3 + i] = src[s + i] }
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }
}

extension ImageResizer {
    /// Resizes (and crops) `image` to `height` x `width` with `method`.
    ///
    /// - Returns: `[height, width, 3]` floats in 0...255 (whole numbers for Pillow modes).
    /// - Precondition: `height` and `width` are positive; the image is not empty.
    public static func resize(_ image: RGBImage, height: Int, width: Int, method: ResizeMethod, crop: CropMode = .none) -> [Float] {
        precondition(height > 0 && width > 0 && image.width > 0 && image.height > 0, "resize needs non-empty sizes")
        switch crop {
        case .none:
            return resize(image, height: height, width: width, method: method, box: nil)
        case .aspectRatio:
            if method.isPillow {
                // keras.utils.load_img(keep_aspect_ratio=True): integer arithmetic, Pillow box.
                let cropHeight = min(image.height, (image.width * height) / width)
                let cropWidth = min(image.width, (image.height * width) / height)
                let x0 = (image.width - cropWidth) / 2, y0 = (image.height - cropHeight) / 2
                return resize(image, height: height, width: width, method: method,
                              box: (Double(x0), Double(y0), Double(x0 + cropWidth), Double(y0 + cropHeight)))
            }
            // keras ops.image.resize(crop_to_aspect_ratio=True): float32 arithmetic, then a slice.
            let cropHeight = max(min(image.height, Int(Float(image.width * height) / Float(width))), 1)
            let cropWidth = max(min(image.width, Int(Float(image.height * width) / Float(height))), 1)
            let y0 = Int(Float(image.height - cropHeight) / 2), x0 = Int(Float(image.width - cropWidth) / 2)
            let region = image.cropped(x: x0, y: y0, width: cropWidth, height: cropHeight)
            return resize(region, height: height, width: width, method: method, box: nil)
        case .resizeShorterSide:
            let shorter = crop.shorterSide(height: height, width: width) ?? max(height, width)
            let (newHeight, newWidth): (Int, Int)
            if image.width <= image.height {
                (newWidth, newHeight) = (shorter, Int(Double(shorter) * Double(image.height) / Double(image.width)))
            } else {
                (newHeight, newWidth) = (shorter, Int(Double(shorter) * Double(image.width) / Double(image.height)))
            }
            let resized = resize(image, height: newHeight, width: newWidth, method: method, box: nil)
            let top = Int((Double(newHeight - height) / 2).rounded(.toNearestOrEven))
            let left = Int((Double(newWidth - width) / 2).rounded(.toNearestOrEven))
            var out = [Float](repeating: 0, count: height * width * 3)
            for y in 0..<height {
                let s = ((top + y) * newWidth + left) * 3
                for i in 0..<width * 3 { out[y * width * 3 + i] = resized[s + i] }
            }
            return out
        }
    }

    static func resize(_ image: RGBImage, height: Int, width: Int, method: ResizeMethod,
                       box: (Double, Double, Double, Double)?) -> [Float] {
        switch method {
        case .bilinear: return bilinear(image, height: height, width: width)
        case .nearest: return pillowNearest(image, height: height, width: width, box: box).pixels.map(Float.init)
        case .pilBilinear: return pillowBilinear(image, height: height, width: width, box: box).pixels.map(Float.init)
        case .pilBicubic: return pillowBicubic(image, height: height, width: width, box: box).pixels.map(Float.init)
        case .tfAntialias: return bilinearAntialiased(image, height: height, width: width)
        case .area: return area(image, height: height, width: width)
        }
    }

    // MARK: Pillow

    /// Pillow's `Image.resize(size, NEAREST, box)`: the affine nearest-neighbour scaler
    /// (`ImagingScaleAffine`): source column `int(box.x0 + (x + 0.5) * sx)` accumulated in
    /// double precision exactly as Pillow steps it.
    ///
    /// - Parameters:
    ///   - image: the 8-bit RGB source image (values 0...255).
    ///   - height: output height in pixels.
    ///   - width: output width in pixels.
    ///   - box: the source rectangle `(x0, y0, x1, y1)`; the whole image when nil.
    /// - Returns: a new 8-bit image of `width` x `height` (`image` itself when `box` is nil and
    ///   the size is unchanged).
    public static func pillowNearest(_ image: RGBImage, height: Int, width: Int, box: (Double, Double, Double, Double)? = nil) -> RGBImage {
        let b = box ?? (0, 0, Double(image.width), Double(image.height))
        if box == nil, width == image.width, height == image.height { return image }
        let a0 = (b.2 - b.0) / Double(width), a4 = (b.3 - b.1) / Double(height)
        func coord(_ v: Double) -> Int { v < 0 ? -1 : Int(v) }
        var xs = [Int](repeating: -1, count: width)
        var xo = b.0 + a0 * 0.5
        for x in 0..<width {
            let xin = coord(xo)
            if xin >= 0 && xin < image.width { xs[x] = xin }
            xo += a0
        }
        var out = [UInt8](repeating: 0, count: width * height * 3)
        var yo = b.1 + a4 * 0.5
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<height {
                    let yi = coord(yo)
                    yo += a4
                    guard yi >= 0 && yi < image.height else { continue }
                    for x in 0..<width where xs[x] >= 0 {
                        let s = (yi * image.width + xs[x]) * 3, d = (y * width + x) * 3
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// One separable filter of Pillow's `ImagingResample` (`src/libImaging/Resample.c`): the
    /// kernel and its support (half-width in source pixels at scale 1, widened by the scale
    /// factor when downscaling).
    struct PillowFilter: Sendable {
        /// Half-width of the kernel in source pixels at scale 1.
        let support: Double
        /// The kernel, evaluated in `Double` in the same operation order as Pillow.
        let kernel: @Sendable (Double) -> Double

        /// Pillow's `BILINEAR`: the triangle `1 - |x|` on (-1, 1).
        static let bilinear = PillowFilter(support: 1) { x in
            let a = abs(x)
            return a < 1 ? 1 - a : 0
        }

        /// Pillow's `BICUBIC`: the Keys cubic convolution kernel with a = -0.5 on (-2, 2).
        static let bicubic = PillowFilter(support: 2) { x in
            let a = -0.5, t = abs(x)
            // Same grouping of operations as Pillow, so the Double results are identical.
            if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
            if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
            return 0
        }
    }

    /// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS = 32 - 8 - 2`).
    static let pillowPrecisionBits = 22

    /// Pillow's `precompute_coeffs` then `normalize_coeffs_8bpc` for one axis.
    static func pillowCoefficients(inSize: Int, in0: Double, in1: Double, outSize: Int,
                                   filter: PillowFilter) -> (ksize: Int, bounds: [Int], kk: [Int32]) {
        let scale = (in1 - in0) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = filter.support * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds = [Int](repeating: 0, count: outSize * 2)
        var kk = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        for xx in 0..<outSize {
            let center = in0 + (Double(xx) + 0.5) * scale
            var ww = 0.0
            let ss = 1.0 / filterScale
            let xmin = max(Int(center - support + 0.5), 0)   // C truncation toward zero, as Pillow
            let xmax = min(Int(center + support + 0.5), inSize) - xmin
            for x in 0..<ksize { k[x] = 0 }
            if xmax > 0 {
                for x in 0..<xmax {
                    let w = filter.kernel((Double(x + xmin) - center + 0.5) * ss)
                    k[x] = w
                    ww += w
                }
                for x in 0..<xmax where ww != 0 { k[x] /= ww }
            }
            for x in 0..<ksize {
                let v = k[x] * Double(1 << pillowPrecisionBits)
                kk[xx * ksize + x] = Int32(k[x] < 0 ? (-0.5 + v).rounded(.towardZero) : (0.5 + v).rounded(.towardZero))
            }
            bounds[2 * xx] = xmin
            bounds[2 * xx + 1] = max(xmax, 0)
        }
        return (ksize, bounds, kk)
    }

    /// Pillow's `clip8`: drops the fixed-point fraction and clamps to 0...255 (the bicubic
    /// kernel's negative lobes can push sums outside it).
    @inline(__always) static func pillowClip8(_ v: Int) -> UInt8 {
        let shifted = v >> pillowPrecisionBits
        return shifted < 0 ? 0 : shifted > 255 ? 255 : UInt8(shifted)
    }

    /// Pillow's `Image.resize(size, BILINEAR, box)` (`ImagingResample`), what
    /// `keras.utils.load_img(interpolation="bilinear")` gives: a separable triangle filter whose
    /// support grows with the scale factor when downscaling (antialiasing), coefficients in
    /// 22-bit fixed point, a horizontal pass then a vertical pass, each rounded and clipped to
    /// 8 bits as Pillow does.
    ///
    /// - Parameters:
    ///   - image: the 8-bit RGB source image (values 0...255).
    ///   - height: output height in pixels.
    ///   - width: output width in pixels.
    ///   - box: the source rectangle `(x0, y0, x1, y1)`; the whole image when nil.
    /// - Returns: a new 8-bit image of `width` x `height` (values 0...255).
    public static func pillowBilinear(_ image: RGBImage, height: Int, width: Int, box: (Double, Double, Double, Double)? = nil) -> RGBImage {
        pillowResample(image, height: height, width: width, box: box, filter: .bilinear)
    }

    /// Pillow's `Image.resize(size, BICUBIC, box)` (`ImagingResample`): the default of
    /// `PIL.Image.resize`, and what `keras.utils.load_img(interpolation="bicubic")` gives. The
    /// same machinery as ``pillowBilinear(_:height:width:box:)`` with the cubic convolution
    /// kernel (a = -0.5, support 2 source pixels, widened by the scale factor when downscaling),
    /// coefficients normalised and in 22-bit fixed point, each pass rounded and clipped to 8 bits.
    ///
    /// - Parameters:
    ///   - image: the 8-bit RGB source image (values 0...255).
    ///   - height: output height in pixels.
    ///   - width: output width in pixels.
    ///   - box: the source rectangle `(x0, y0, x1, y1)`; the whole image when nil.
    /// - Returns: a new 8-bit image of `width` x `height` (values 0...255).
    public static func pillowBicubic(_ image: RGBImage, height: Int, width: Int, box: (Double, Double, Double, Double)? = nil) -> RGBImage {
        pillowResample(image, height: height, width: width, box: box, filter: .bicubic)
    }

    /// Pillow's `ImagingResample` for 8-bit RGB with `filter`: box handling and pass order.
    static func pillowResample(_ image: RGBImage, height: Int, width: Int, box: (Double, Double, Double, Double)?,
                               filter: PillowFilter) -> RGBImage {
        // Pillow passes the box to C as `float box[4]`.
        let b0 = box ?? (0, 0, Double(image.width), Double(image.height))
        let b = (Double(Float(b0.0)), Double(Float(b0.1)), Double(Float(b0.2)), Double(Float(b0.3)))
        let needHorizontal = width != image.width || b.0 != 0 || b.2 != Double(width)
        let needVertical = height != image.height || b.1 != 0 || b.3 != Double(height)
        if !needHorizontal && !needVertical { return image }
        // Pillow 13.0.0 (`ImagingResampleInner`) runs the vertical pass first when the height
        // shrinks by more than twice as many pixels as the width does; horizontal first otherwise.
        // Each pass rounds to 8 bits, so the order changes results by up to one level.
        let verticalFirst = image.height - height > 0 && image.height - height > (image.width - width) * 2
        if needVertical && needHorizontal && verticalFirst {
            return transpose(pillowPasses(transpose(image), outWidth: height, outHeight: width, box: (b.1, b.0, b.3, b.2),
                                          filter: filter, needHorizontal: true, needVertical: true))
        }
        return pillowPasses(image, outWidth: width, outHeight: height, box: b, filter: filter,
                            needHorizontal: needHorizontal, needVertical: needVertical)
    }

    /// The image with rows and columns swapped.
    static func transpose(_ image: RGBImage) -> RGBImage {
        var out = [UInt8](repeating: 0, count: image.pixels.count)
        for y in 0..<image.height {
            for x in 0..<image.width {
                let s = (y * image.width + x) * 3, d = (x * image.height + y) * 3
                out[d] = image.pixels[s]; out[d + 1] = image.pixels[s + 1]; out[d + 2] = image.pixels[s + 2]
            }
        }
        return RGBImage(width: image.height, height: image.width, pixels: out)
    }

    /// Pillow's `ImagingResampleInner`: horizontal pass (rows the vertical pass needs), then vertical.
    static func pillowPasses(_ image: RGBImage, outWidth width: Int, outHeight height: Int,
                             box b: (Double, Double, Double, Double), filter: PillowFilter,
                             needHorizontal: Bool, needVertical: Bool) -> RGBImage {
        let horizontal = pillowCoefficients(inSize: image.width, in0: b.0, in1: b.2, outSize: width, filter: filter)
        var vertical = pillowCoefficients(inSize: image.height, in0: b.1, in1: b.3, outSize: height, filter: filter)
        let half = 1 << (pillowPrecisionBits - 1)
        var current = image
        if needHorizontal {
            // Only the rows the vertical pass will read, as Pillow does.
            let first = needVertical ? vertical.bounds[0] : 0
            let last = needVertical ? vertical.bounds[2 * height - 2] + vertical.bounds[2 * height - 1] : image.height
            let rows = max(last - first, 0)
            if needVertical { for i in 0..<height { vertical.bounds[2 * i] -= first } }
            var out = [UInt8](repeating: 0, count: width * rows * 3)
            let (ksize, bounds, kk) = horizontal
            image.pixels.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    kk.withUnsafeBufferPointer { kk in
                        for y in 0..<rows {
                            let row = (y + first) * image.width * 3
                            for x in 0..<width {
                                let xmin = bounds[2 * x], count = bounds[2 * x + 1]
                                var s0 = half, s1 = half, s2 = half
                                for i in 0..<count {
                                    let k = Int(kk[x * ksize + i]), p = row + (xmin + i) * 3
                                    s0 += Int(src[p]) * k; s1 += Int(src[p + 1]) * k; s2 += Int(src[p + 2]) * k
                                }
                                let d = (y * width + x) * 3
                                dst[d] = pillowClip8(s0); dst[d + 1] = pillowClip8(s1); dst[d + 2] = pillowClip8(s2)
                            }
                        }
                    }
                }
            }
            current = RGBImage(width: width, height: rows, pixels: out)
        }
        guard needVertical else { return current }
        var out = [UInt8](repeating: 0, count: width * height * 3)
        let (ksize, bounds, kk) = vertical
        let rowStride = current.width * 3
        current.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                kk.withUnsafeBufferPointer { kk in
                    for y in 0..<height {
                        let ymin = bounds[2 * y], count = bounds[2 * y + 1]
                        for i in 0..<rowStride {
                            var s = half
                            for j in 0..<count { s += Int(src[(ymin + j) * rowStride + i]) * Int(kk[y * ksize + j]) }
                            dst[y * rowStride + i] = pillowClip8(s)
                        }
                    }
                }
            }
        }
        return RGBImage(width: current.width, height: height, pixels: out)
    }

    // MARK: TensorFlow

    /// `tf.image.resize(images, size, method="bilinear", antialias=True)`: TensorFlow's
    /// `ScaleAndTranslate` with the triangle kernel widened by the scale factor when
    /// downscaling, weights normalised per output pixel, a vertical pass then a horizontal
    /// pass, all in `Float` as TensorFlow computes them.
    ///
    /// - Returns: `[height, width, 3]` floats in 0...255 (not rounded).
    public static func bilinearAntialiased(_ image: RGBImage, height: Int, width: Int) -> [Float] {
        struct Spans { var size: Int; var starts: [Int]; var weights: [Float] }
        func spans(out: Int, in input: Int) -> Spans {
            let scale = Float(out) / Float(input)
            let invScale = Float(1.0 / Double(scale))
            let kernelScale = max(invScale, 1)
            let radius: Float = 1
            let spanSize = min(2 * Int((radius * kernelScale).rounded(.up)) + 1, input)
            var starts = [Int](repeating: 0, count: out)
            var weights = [Float](repeating: 0, count: out * spanSize)
            let oneOverKernelScale = 1 / kernelScale
            for x in 0..<out {
                let sample = (Float(x) + 0.5) * invScale
                if sample < 0 || sample > Float(input) { continue }
                var start = Int((sample - radius * kernelScale - 0.5).rounded(.up))
                var end = Int((sample + radius * kernelScale - 0.5).rounded(.down))
                start = min(max(start, 0), input - 1)
                end = min(max(end, 0), input - 1) + 1
                var total: Float = 0
                var temp: [Float] = []
                for source in start..<end {
                    let position = Float(source) + 0.5 - sample
                    let a = abs(position * oneOverKernelScale)
                    let w: Float = a < 1 ? 1 - a : 0
                    total += w
                    temp.append(w)
                }
                if abs(total) >= 1000 * Float.leastNormalMagnitude {
                    let inverse = 1 / total
                    for (i, w) in temp.enumerated() where i < spanSize { weights[x * spanSize + i] = w * inverse }
                }
                starts[x] = start
            }
            return Spans(size: spanSize, starts: starts, weights: weights)
        }
        let rows = spans(out: height, in: image.height), cols = spans(out: width, in: image.width)
        let inRow = image.width * 3
        var intermediate = [Float](repeating: 0, count: height * inRow)
        image.pixels.withUnsafeBufferPointer { src in
            intermediate.withUnsafeMutableBufferPointer { mid in
                for y in 0..<height {
                    let start = rows.starts[y]
                    let real = min(start + rows.size, image.height) - start
                    for j in 0..<real {
                        let w = rows.weights[y * rows.size + j]
                        let base = (start + j) * inRow
                        for i in 0..<inRow { mid[y * inRow + i] += w * Float(src[base + i]) }
                    }
                }
            }
        }
        var output = [Float](repeating: 0, count: height * width * 3)
        for y in 0..<height {
            for x in 0..<width {
                let start = cols.starts[x]
                let real = min(start + cols.size, image.width) - start
                var c0: Float = 0, c1: Float = 0, c2: Float = 0
                for j in 0..<real {
                    let w = cols.weights[x * cols.size + j]
                    let p = y * inRow + (start + j) * 3
                    c0 += w * intermediate[p]; c1 += w * intermediate[p + 1]; c2 += w * intermediate[p + 2]
                }
                let d = (y * width + x) * 3
                output[d] = c0; output[d + 1] = c1; output[d + 2] = c2
            }
        }
        return output
    }

    /// `tf.image.resize(images, size, method="area")` (TensorFlow's `ResizeArea`,
    /// `align_corners=False`): each output pixel averages the input pixels its footprint covers,
    /// partially covered pixels weighted by the covered fraction, in `Float` as TensorFlow.
    ///
    /// - Returns: `[height, width, 3]` floats in 0...255 (not rounded).
    public static func area(_ image: RGBImage, height: Int, width: Int) -> [Float] {
        struct Interval { var start: Int; var end: Int; var startScale: Float; var endMinusOneScale: Float }
        let heightScale = Float(image.height) / Float(height), widthScale = Float(image.width) / Float(width)
        func scaleFor(_ v: Int, _ lo: Float, _ hi: Float, _ full: Float) -> Float {
            Float(v) < lo ? (Float(v + 1) > hi ? full : Float(v + 1) - lo) : (Float(v + 1) > hi ? hi - Float(v) : 1)
        }
        let xs: [Interval] = (0..<width).map { x in
            let lo = Float(x) * widthScale, hi = Float(x + 1) * widthScale
            let start = Int(lo.rounded(.down)), end = Int(hi.rounded(.up))
            return Interval(start: start, end: end, startScale: scaleFor(start, lo, hi, widthScale),
                            endMinusOneScale: scaleFor(end - 1, lo, hi, widthScale))
        }
        let scale = Float(1.0 / Double(heightScale * widthScale))
        var output = [Float](repeating: 0, count: height * width * 3)
        image.pixels.withUnsafeBufferPointer { src in
            for y in 0..<height {
                let lo = Float(y) * heightScale, hi = Float(y + 1) * heightScale
                let yStart = Int(lo.rounded(.down)), yEnd = Int(hi.rounded(.up))
                var rows: [(offset: Int, scale: Float)] = []
                for i in yStart..<yEnd {
                    rows.append((min(max(i, 0), image.height - 1) * image.width * 3, scaleFor(i, lo, hi, heightScale)))
                }
                for x in 0..<width {
                    let xp = xs[x]
                    func column(_ v: Int) -> Int { min(max(v, 0), image.width - 1) * 3 }
                    for c in 0..<3 {
                        var sum: Float = 0
                        for row in rows {
                            var sumY = Float(src[row.offset + column(xp.start) + c]) * xp.startScale
                            if xp.start + 1 != xp.end {
                                var v = xp.start + 1
                                while v < xp.end - 1 {
                                    sumY += Float(src[row.offset + column(v) + c])
                                    v += 1
                                }
                                sumY += Float(src[row.offset + column(xp.end - 1) + c]) * xp.endMinusOneScale
                            }
                            sum += sumY * row.scale
                        }
                        output[(y * width + x) * 3 + c] = sum * scale
                    }
                }
            }
        }
        return output
    }
}
