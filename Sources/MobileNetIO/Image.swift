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
    /// unsupported format).
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
            if let detected { "\(path): \(detected.uppercased()) images are not supported yet (JPEG and PNG are)" }
            else { "\(path): not an image (the bytes are neither JPEG nor PNG)" }
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

/// Decodes encoded image bytes to 8-bit RGB: the seam behind which codecs live.
public protocol ImageDecoding: Sendable {
    /// Decodes `data`; `source` (usually the path) names the file in errors.
    ///
    /// - Throws: ``ImageError``.
    func decode(_ data: Data, source: String) throws(ImageError) -> RGBImage
}

extension ImageDecoding {
    /// Reads and decodes the file at `url`.
    ///
    /// - Throws: ``ImageError`` naming the file.
    public func decode(contentsOf url: URL) throws(ImageError) -> RGBImage {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw .notFound(path: path) }
        guard !isDirectory.boolValue else { throw .unreadable(path: path, reason: "it is a directory") }
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw .unreadable(path: path, reason: error.localizedDescription) }
        return try decode(data, source: path)
    }
}

/// JPEG (libjpeg-turbo) and PNG (libpng) decoding, with the format detected from the bytes.
///
/// JPEG uses the accurate integer inverse DCT by default, as Pillow does; grayscale and
/// CMYK/YCCK JPEGs become RGB. PNG alpha is dropped (Pillow's `convert("RGB")`), 16-bit samples
/// keep their high byte. EXIF orientation is not applied, as in Keras's `load_img` and
/// `tf.io.decode_image`.
public struct StandardImageDecoder: ImageDecoding {
    /// JPEG inverse DCT method.
    public enum DCTMethod: Sendable, Hashable {
        /// Accurate integer (libjpeg `JDCT_ISLOW`): Pillow's and libjpeg's default.
        case accurateInteger
        /// Fast integer (libjpeg `JDCT_IFAST`): the default of `tf.io.decode_jpeg`.
        case fastInteger
    }

    /// Images with more pixels than this are refused before decoding (default 100 megapixels).
    public var maxPixels: Int
    /// The JPEG inverse DCT.
    public var dctMethod: DCTMethod

    /// Creates a decoder.
    public init(maxPixels: Int = 100_000_000, dctMethod: DCTMethod = .accurateInteger) {
        self.maxPixels = maxPixels
        self.dctMethod = dctMethod
    }

    public func decode(_ data: Data, source: String) throws(ImageError) -> RGBImage {
        if data.isEmpty { throw .empty(path: source) }
        guard let format = ImageFormat.detect(data) else { throw .unsupportedFormat(path: source, detected: nil) }
        var error = [CChar](repeating: 0, count: 256)
        var out: UnsafeMutablePointer<UInt8>?
        var width: Int32 = 0, height: Int32 = 0
        let status: Int32
        switch format {
        case .jpeg:
            status = data.withUnsafeBytes { raw in
                mn_jpeg_decode_rgb(raw.bindMemory(to: UInt8.self).baseAddress, raw.count,
                                   dctMethod == .fastInteger ? Int32(MN_DCT_IFAST) : Int32(MN_DCT_ISLOW), 1, UInt64(maxPixels),
                                   &out, &width, &height, &error, error.count)
            }
        case .png:
            var alpha: Int32 = 0
            status = data.withUnsafeBytes { raw in
                mn_png_decode_rgba(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, UInt64(maxPixels),
                                   &out, &width, &height, &alpha, &error, error.count)
            }
            if status == 0, let rgba = out {
                defer { mn_free(rgba) }
                let count = Int(width) * Int(height)
                var pixels = [UInt8](repeating: 0, count: count * 3)
                for i in 0..<count {
                    pixels[3 * i] = rgba[4 * i]
                    pixels[3 * i + 1] = rgba[4 * i + 1]
                    pixels[3 * i + 2] = rgba[4 * i + 2]
                }
                return RGBImage(width: Int(width), height: Int(height), pixels: pixels)
            }
        default:
            throw .unsupportedFormat(path: source, detected: format.rawValue)
        }
        let message = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if status == -3 { throw .tooLarge(path: source, reason: message) }
        guard status == 0, let rgb = out else { throw .corrupt(path: source, reason: message.isEmpty ? "decoder error \(status)" : message) }
        defer { mn_free(rgb) }
        let pixels = Array(UnsafeBufferPointer(start: rgb, count: Int(width) * Int(height) * 3))
        return RGBImage(width: Int(width), height: Int(height), pixels: pixels)
    }
}
