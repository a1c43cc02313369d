import CMobileNetShims
import Foundation
import MobileNetKernels

/// An 8-bit RGB image, row-major and interleaved (`[height, width, 3]`, HWC), values 0...255.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels.
    public let width: Int
    /// Height in pixels.
    public let height: Int
    /// `height * width * 3` bytes: R, G, B of the top-left pixel first.
    public let pixels: [UInt8]

    /// Creates an image.
    ///
    /// - Precondition: `pixels.count == width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGB image \(width)x\(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Image container formats, detected from the file's first bytes (never from its extension).
public enum ImageFormat: String, Sendable, Codable {
    case jpeg, png, gif, bmp, webp, tiff

    /// The format the bytes start with, if known.
    public static func detect(_ bytes: some Collection<UInt8>) -> ImageFormat? {
        let b = Array(bytes.prefix(12))
        if b.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if b.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if b.starts(with: Array("GIF8".utf8)) { return .gif }
        if b.starts(with: Array("BM".utf8)) { return .bmp }
        if b.count >= 12, b.starts(with: Array("RIFF".utf8)), Array(b[8..<12]) == Array("WEBP".utf8) { return .webp }
        if b.starts(with: [0x49, 0x49, 0x2A, 0x00]) || b.starts(with: [0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        return nil
    }
}

/// An image file that cannot be used. Every case names the file; ``description`` is the line
/// the CLI prints.
public enum ImageError: Error, Equatable, CustomStringConvertible {
    /// No file at the path.
    case notFound(path: String)
    /// The file cannot be read (permissions, a directory, an I/O error).
    case unreadable(path: String, reason: String)
    /// The file is empty.
    case empty(path: String)
    /// The bytes are not an image format the decoder supports (`detected` names a known but
    /// unsupported format, such as TIFF).
    case unsupportedFormat(path: String, detected: String?)
    /// The decoder rejected the data: truncated or corrupt.
    case corrupt(path: String, reason: String)
    /// The image has more pixels than the configured limit (decompression-bomb guard).
    case tooLarge(path: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let path): "\(path): no such file"
        case .unreadable(let path, let reason): "\(path): cannot read the file (\(reason))"
        case .empty(let path): "\(path): the file is empty"
        case .unsupportedFormat(let path, let detected):
            if let detected { "\(path): \(detected.uppercased()) images are not supported (JPEG, PNG, WebP, GIF and BMP are)" }
            else { "\(path): not an image (the bytes are not JPEG, PNG, WebP, GIF or BMP)" }
        case .corrupt(let path, let reason): "\(path): cannot decode the image: \(reason)"
        case .tooLarge(let path, let reason): "\(path): \(reason)"
        }
    }

    /// The file the error is about.
    public var path: String {
        switch self {
        case .notFound(let p), .unreadable(let p, _), .empty(let p), .unsupportedFormat(let p, _), .corrupt(let p, _), .tooLarge(let p, _): p
        }
    }
}

/// What the caller will do with a decoded image, so that a decoder may take shortcuts that do
/// not change the result much (JPEG DCT-domain downscaling). Sizes are in displayed
/// orientation (after EXIF rotation).
public struct DecodeTarget: Sendable, Hashable {
    /// The model input height in pixels.
    public var height: Int
    /// The model input width in pixels.
    public var width: Int
    /// With a torchvision-style crop: the length the shorter side is resized to first.
    public var shorterSide: Int?

    /// Creates a target.
    public init(height: Int, width: Int, shorterSide: Int? = nil) {
        self.height = height
        self.width = width
        self.shorterSide = shorterSide
    }

    /// Whether an image of `width` x `height` pixels (displayed orientation), reduced to
    /// `ceil(width / factor)` x `ceil(height / factor)`, is still at least as large as what the
    /// resize needs, so the pipeline still downscales afterwards.
    public func allowsReduction(by factor: Int, width: Int, height: Int) -> Bool {
        let w = (width + factor - 1) / factor, h = (height + factor - 1) / factor
        if let shorterSide { return min(w, h) >= shorterSide }
        return w >= self.width && h >= self.height
    }
}

/// Decodes encoded image bytes to 8-bit RGB: the seam behind which codecs live.
public protocol ImageDecoding: Sendable {
    /// Decodes `data`; `source` (usually the path) names the file in errors.
    ///
    /// - Returns: the image as 8-bit RGB (`[height, width, 3]`, values 0...255).
    /// - Throws: ``ImageError``.
    func decode(_ data: Data, source: String) throws(ImageError) -> RGBImage

    /// Decodes `data` for a known use: a decoder may return a smaller image when `target`
    /// allows (see ``StandardImageDecoder/dctScaling``). The default ignores `target`.
    ///
    /// - Throws: ``ImageError``.
    func decode(_ data: Data, source: String, target: DecodeTarget?) throws(ImageError) -> RGBImage
}

/// The largest image file read (1 GiB): a bigger file is refused before it is read.
public let maximumImageFileBytes: Int64 = 1 << 30

extension ImageDecoding {
    /// Calls ``decode(_:source:)``, ignoring `target`.
    public func decode(_ data: Data, source: String, target: DecodeTarget?) throws(ImageError) -> RGBImage {
        try decode(data, source: source)
    }

    /// Reads and decodes the file at `url` (see ``decode(_:source:target:)``).
    ///
    /// - Throws: ``ImageError`` naming the file.
    public func decode(contentsOf url: URL, target: DecodeTarget? = nil) throws(ImageError) -> RGBImage {
        let path = url.path
        switch FileKind(path: path) {
        case .missing: throw .notFound(path: path)
        case .regular(let bytes):
            guard bytes <= maximumImageFileBytes else {
                throw .tooLarge(path: path, reason: "the file has \(bytes) bytes, more than the \(maximumImageFileBytes >> 20) MiB an image file may have")
            }
        case let other: throw .unreadable(path: path, reason: other.description)
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw .unreadable(path: path, reason: error.localizedDescription) }
        return try decode(data, source: path, target: target)
    }
}

/// An 8-bit RGB colour, for compositing transparent images.
public struct RGBColor: Sendable, Hashable, Codable {
    /// Red, green, blue, 0...255.
    public var red: UInt8, green: UInt8, blue: UInt8

    /// Creates a colour.
    public init(red: UInt8, green: UInt8, blue: UInt8) {
        self.red = red
        self.green = green
        self.blue = blue
    }

    /// Parses `RRGGBB` or `#RRGGBB` (hexadecimal), or the names `white` and `black`.
    public init?(parsing text: String) {
        switch text.lowercased() {
        case "white": self.init(red: 255, green: 255, blue: 255); return
        case "black": self.init(red: 0, green: 0, blue: 0); return
        default: break
        }
        let hex = text.hasPrefix("#") ? String(text.dropFirst()) : text
        guard hex.count == 6, let value = UInt32(hex, radix: 16) else { return nil }
        self.init(red: UInt8(value >> 16 & 0xFF), green: UInt8(value >> 8 & 0xFF), blue: UInt8(value & 0xFF))
    }
}

/// Decodes JPEG (libjpeg-turbo), PNG (libpng), WebP (libwebp; first frame of an animation), GIF
/// (giflib, first frame) and BMP (stb_image) to 8-bit RGB, with the format detected from the bytes (never the extension).
///
/// What Pillow (and so `keras.utils.load_img`) gives, by default:
/// - JPEG: accurate integer inverse DCT (Pillow's); grayscale becomes R=G=B; CMYK and YCCK are
///   read with Adobe's inverted convention and converted as Pillow's `cmyk2rgb` does.
/// - PNG: palette, gray, gray+alpha, RGB(A), interlaced; 16-bit samples keep their high byte
///   (Pillow does so for 16-bit RGB(A) and gray+alpha; for 16-bit *grayscale* Pillow's
///   `convert("RGB")` saturates at 255 instead, which we do not copy). Gamma is not applied.
/// - Alpha is dropped as `convert("RGB")` does, unless ``alpha`` is ``AlphaHandling/composite(over:)``.
/// - EXIF orientation (JPEG APP1, PNG `eXIf`, WebP `EXIF`) is applied by default, as
///   `PIL.ImageOps.exif_transpose` does; Keras and `tf.io.decode_image` ignore it, so set
///   ``orientation`` to ``OrientationHandling/ignore`` for bit-exact Keras parity.
///
/// Every failure is an ``ImageError`` naming the file; no input crashes the decoder.
public struct StandardImageDecoder: ImageDecoding {
    /// JPEG inverse DCT method.
    public enum DCTMethod: String, Sendable, Hashable, CaseIterable, Codable {
        /// Accurate integer (libjpeg `JDCT_ISLOW`): Pillow's and libjpeg's default.
        case accurateInteger = "islow"
        /// Fast integer (libjpeg `JDCT_IFAST`): the default of `tf.io.decode_jpeg`
        /// (`dct_method=""` means `INTEGER_FAST`), for parity with TF pipelines.
        case fastInteger = "ifast"
    }

    /// What to do with the EXIF orientation tag.
    public enum OrientationHandling: String, Sendable, Hashable, CaseIterable, Codable {
        /// Rotate/flip the pixels as the tag says (`PIL.ImageOps.exif_transpose`): what a
        /// person sees in a viewer. Values other than 1...8 and unreadable EXIF count as 1.
        case apply
        /// Keep the stored pixel order, as Keras `load_img` and `tf.io.decode_image` do.
        case ignore
    }

    /// What to do with an alpha channel (PNG, WebP, GIF transparency, BMP with alpha).
    public enum AlphaHandling: Sendable, Hashable {
        /// Keep the colour values and discard alpha: Pillow's `convert("RGB")`, what Keras gives.
        case drop
        /// Blend over a solid colour: `round((c * a + background * (255 - a)) / 255)`.
        case composite(over: RGBColor)
    }

    /// Images with more pixels than this (before any DCT scaling) are refused before their
    /// pixel data is decoded, with ``ImageError/tooLarge(path:reason:)``. Default 100 megapixels
    /// (Pillow warns at 89 MP and refuses at 179 MP).
    public var maxPixels: Int
    /// The JPEG inverse DCT.
    public var dctMethod: DCTMethod
    /// EXIF orientation handling (default ``OrientationHandling/apply``).
    public var orientation: OrientationHandling
    /// Alpha handling (default ``AlphaHandling/drop``).
    public var alpha: AlphaHandling
    /// Speed mode (default off): when a ``DecodeTarget`` is given, JPEGs are decoded at 1/2, 1/4
    /// or 1/8 scale in the DCT domain (libjpeg `scale_denom`) when the reduced image is still at
    /// least as large as the resize needs. Much faster for large photos; the pixels differ
    /// from a full decode plus resize (see the README for the measured effect on accuracy).
    public var dctScaling: Bool
    /// Whether a JPEG whose data ends early is decoded with the missing part grey (libjpeg's
    /// behaviour, Pillow's `LOAD_TRUNCATED_IMAGES = True`) instead of being an error (default
    /// false, like Pillow).
    public var allowTruncatedJPEG: Bool

    /// Creates a decoder.
    public init(maxPixels: Int = 100_000_000, dctMethod: DCTMethod = .accurateInteger,
                orientation: OrientationHandling = .apply, alpha: AlphaHandling = .drop,
                dctScaling: Bool = false, allowTruncatedJPEG: Bool = false) {
        self.maxPixels = maxPixels
        self.dctMethod = dctMethod
        self.orientation = orientation
        self.alpha = alpha
        self.dctScaling = dctScaling
        self.allowTruncatedJPEG = allowTruncatedJPEG
    }

    /// Decodes `data` at full size.
    ///
    /// - Returns: 8-bit RGB, values 0...255, in displayed orientation unless ``orientation`` is
    ///   ``OrientationHandling/ignore``.
    /// - Throws: ``ImageError``: `.empty`, `.unsupportedFormat`, `.corrupt` (truncated or
    ///   invalid data), `.tooLarge` (over ``maxPixels``), each naming `source`.
    public func decode(_ data: Data, source: String) throws(ImageError) -> RGBImage {
        try decode(data, source: source, target: nil)
    }

    /// Decodes `data`; with ``dctScaling`` on and a `target`, a JPEG may come out reduced by 2,
    /// 4 or 8 (see ``DecodeTarget/allowsReduction(by:width:height:)``).
    ///
    /// - Throws: ``ImageError`` as ``decode(_:source:)``.
    public func decode(_ data: Data, source: String, target: DecodeTarget?) throws(ImageError) -> RGBImage {
        if data.isEmpty { throw .empty(path: source) }
        guard let format = ImageFormat.detect(data) else { throw .unsupportedFormat(path: source, detected: nil) }
        let limit = UInt64(max(maxPixels, 0))
        let exifOrientation = orientation == .apply ? ExifOrientation.read(from: data, format: format) : .up
        var error = [CChar](repeating: 0, count: 256)
        var out: UnsafeMutablePointer<UInt8>?
        var width: Int32 = 0, height: Int32 = 0, hadAlpha: Int32 = 0
        var status: Int32
        let channels: Int
        switch format {
        case .jpeg:
            channels = 3
            var denominator: Int32 = 1
            if dctScaling, let target {
                var w: Int32 = 0, h: Int32 = 0
                let ok = data.withUnsafeBytes { raw in
                    mn_jpeg_read_size(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &w, &h, &error, error.count)
                }
                if ok == 0 {
                    let (dw, dh) = exifOrientation.swapsAxes ? (Int(h), Int(w)) : (Int(w), Int(h))
                    for factor in [8, 4, 2] where target.allowsReduction(by: factor, width: dw, height: dh) {
                        denominator = Int32(factor)
                        break
                    }
                }
            }
            status = data.withUnsafeBytes { raw in
                mn_jpeg_decode_rgb_ex(raw.bindMemory(to: UInt8.self).baseAddress, raw.count,
                                      dctMethod == .fastInteger ? Int32(MN_DCT_IFAST) : Int32(MN_DCT_ISLOW), denominator, limit,
                                      allowTruncatedJPEG ? 1 : 0, &out, &width, &height, &error, error.count)
            }
        case .png, .webp, .gif, .bmp:
            channels = 4
            status = data.withUnsafeBytes { raw in
                let base = raw.bindMemory(to: UInt8.self).baseAddress
                switch format {
                case .png: return mn_png_decode_rgba(base, raw.count, limit, &out, &width, &height, &hadAlpha, &error, error.count)
                case .webp: return mn_webp_decode_rgba(base, raw.count, limit, &out, &width, &height, &hadAlpha, &error, error.count)
                case .gif: return mn_gif_decode_rgba(base, raw.count, limit, &out, &width, &height, &hadAlpha, &error, error.count)
                default: return mn_bmp_decode_rgba(base, raw.count, limit, &out, &width, &height, &hadAlpha, &error, error.count)
                }
            }
        case .tiff:
            throw .unsupportedFormat(path: source, detected: format.rawValue)
        }
        let message = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if status == -3 { if let out { mn_free(out) }; throw .tooLarge(path: source, reason: message) }
        guard status == 0, let buffer = out else {
            if let out { mn_free(out) }
            throw .corrupt(path: source, reason: message.isEmpty ? "decoder error \(status)" : message)
        }
        defer { mn_free(buffer) }
        let count = Int(width) * Int(height)
        var pixels = [UInt8](repeating: 0, count: count * 3)
        if channels == 3 {
            pixels.withUnsafeMutableBufferPointer { $0.baseAddress?.update(from: buffer, count: count * 3) }
        } else {
            pixels.withUnsafeMutableBufferPointer { dst in
                if hadAlpha != 0, case .composite(let bg) = alpha {
                    let background = [Int(bg.red), Int(bg.green), Int(bg.blue)]
                    for i in 0..<count {
                        let a = Int(buffer[4 * i + 3])
                        for c in 0..<3 {
                            dst[3 * i + c] = UInt8((Int(buffer[4 * i + c]) * a + background[c] * (255 - a) + 127) / 255)
                        }
                    }
                } else {
                    for i in 0..<count {
                        dst[3 * i] = buffer[4 * i]
                        dst[3 * i + 1] = buffer[4 * i + 1]
                        dst[3 * i + 2] = buffer[4 * i + 2]
                    }
                }
            }
        }
        let image = RGBImage(width: Int(width), height: Int(height), pixels: pixels)
        return exifOrientation.apply(to: image)
    }
}

extension ImageError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
