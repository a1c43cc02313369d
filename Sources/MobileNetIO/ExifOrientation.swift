import Foundation

/// The EXIF orientation tag (0x0112): how the stored pixels must be turned to look right.
///
/// Read from a JPEG's first `APP1` "Exif" segment, a PNG `eXIf` chunk or a WebP `EXIF` chunk by a
/// small bounds-checked TIFF reader (only IFD0 is read). Values outside 1...8 (0 is common),
/// a tag of the wrong type or count, and truncated or malformed EXIF all count as
/// ``up`` (1), as `PIL.ImageOps.exif_transpose` treats them: the pixels are fine, only the hint is
/// broken, so the image is still used.
public enum ExifOrientation: Int, Sendable, CaseIterable {
    /// 1: stored as displayed.
    case up = 1
    /// 2: mirrored left-right (Pillow `FLIP_LEFT_RIGHT`).
    case upMirrored = 2
    /// 3: rotated 180 degrees (`ROTATE_180`).
    case down = 3
    /// 4: mirrored top-bottom (`FLIP_TOP_BOTTOM`).
    case downMirrored = 4
    /// 5: transposed across the main diagonal (`TRANSPOSE`).
    case leftMirrored = 5
    /// 6: needs a 90-degree clockwise turn (`ROTATE_270` in Pillow's counter-clockwise terms).
    case right = 6
    /// 7: transposed across the anti-diagonal (`TRANSVERSE`).
    case rightMirrored = 7
    /// 8: needs a 90-degree counter-clockwise turn (`ROTATE_90`).
    case left = 8

    /// Whether width and height trade places (values 5...8).
    public var swapsAxes: Bool { rawValue >= 5 }

    /// The orientation stored in an encoded image, ``up`` when absent or invalid.
    public static func read(from data: Data, format: ImageFormat?) -> ExifOrientation {
        let bytes = [UInt8](data.prefix(4 << 20))
        guard let tiff = tiffBlock(in: bytes, format: format ?? ImageFormat.detect(bytes)) else { return .up }
        return orientation(inTIFF: Array(bytes[tiff])) ?? .up
    }

    /// Where the TIFF structure (starting "II*\0" or "MM\0*") of the EXIF block is.
    static func tiffBlock(in b: [UInt8], format: ImageFormat?) -> Range<Int>? {
        func be16(_ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }
        func be32(_ i: Int) -> Int { Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3]) }
        func le32(_ i: Int) -> Int { Int(b[i + 3]) << 24 | Int(b[i + 2]) << 16 | Int(b[i + 1]) << 8 | Int(b[i]) }
        let exifHeader: [UInt8] = Array("Exif".utf8) + [0, 0]
        func stripExifHeader(_ r: Range<Int>) -> Range<Int> {
            r.count >= 6 && Array(b[r.lowerBound..<r.lowerBound + 6]) == exifHeader ? r.lowerBound + 6..<r.upperBound : r
        }
        switch format {
        case .jpeg:
            var i = 2
            while i + 4 <= b.count {
                guard b[i] == 0xFF else { return nil }
                let marker = b[i + 1]
                if marker == 0xFF { i += 1; continue }  // fill bytes
                if marker == 0xD8 || (0xD0...0xD7).contains(marker) || marker == 0x01 { i += 2; continue }
                if marker == 0xDA || marker == 0xD9 { return nil }  // start of scan: no EXIF before it
                let length = be16(i + 2)
                guard length >= 2, i + 2 + length <= b.count else { return nil }
                let body = i + 4..<i + 2 + length
                if marker == 0xE1, body.count > 6, Array(b[body.lowerBound..<body.lowerBound + 6]) == exifHeader {
                    return body.lowerBound + 6..<body.upperBound
                }
                i += 2 + length
            }
            return nil
        case .png:
            var i = 8
            while i + 12 <= b.count {
                let length = be32(i)
                let type = String(decoding: b[i + 4..<i + 8], as: UTF8.self)
                guard length >= 0, length <= b.count - i - 12 else { return nil }
                if type == "eXIf" { return stripExifHeader(i + 8..<i + 8 + length) }
                if type == "IEND" { return nil }
                i += 12 + length
            }
            return nil
        case .webp:
            var i = 12
            while i + 8 <= b.count {
                let type = String(decoding: b[i..<i + 4], as: UTF8.self)
                let length = le32(i + 4)
                guard length >= 0, length <= b.count - i - 8 else { return nil }
                if type == "EXIF" { return stripExifHeader(i + 8..<i + 8 + length) }
                i += 8 + length + (length & 1)
            }
            return nil
        default:
            return nil
        }
    }

    /// The orientation tag of IFD0 in a TIFF block (the EXIF payload after "Exif\0\0"), nil
    /// when absent, out of range or unreadable. Bounds-checked: never reads outside `t`.
    public static func orientation(inTIFF t: [UInt8]) -> ExifOrientation? {
        guard t.count >= 8 else { return nil }
        let little: Bool
        switch (t[0], t[1]) {
        case (0x49, 0x49): little = true
        case (0x4D, 0x4D): little = false
        default: return nil
        }
        func u16(_ i: Int) -> Int? {
            guard i >= 0, i + 2 <= t.count else { return nil }
            return little ? Int(t[i]) | Int(t[i + 1]) << 8 : Int(t[i]) << 8 | Int(t[i + 1])
        }
        func u32(_ i: Int) -> Int? {
            guard let a = u16(i), let b = u16(i + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
        // An IFD that claims more entries than the block holds is broken: Pillow then reads no
        // tags at all, and so do we.
        guard ifd + 2 + count * 12 <= t.count else { return nil }
        for entry in 0..<count {
            let e = ifd + 2 + entry * 12
            guard let tag = u16(e), let type = u16(e + 2), let n = u32(e + 4) else { return nil }
            guard tag == 0x0112 else { continue }
            guard n == 1 else { return nil }
            let value: Int?
            switch type {
            case 3: value = u16(e + 8)  // SHORT, stored in the first two bytes of the value field
            case 4: value = u32(e + 8)  // LONG
            default: value = nil
            }
            return value.flatMap(ExifOrientation.init(rawValue:))
        }
        return nil
    }

    /// The image turned as this orientation says (a new image; `image` is not changed).
    public func apply(to image: RGBImage) -> RGBImage {
        if self == .up { return image }
        let w = image.width, h = image.height
        let (ow, oh) = swapsAxes ? (h, w) : (w, h)
        var out = [UInt8](repeating: 0, count: ow * oh * 3)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<oh {
                    for x in 0..<ow {
                        // The source pixel shown at (x, y).
                        let (sx, sy): (Int, Int)
                        switch self {
                        case .up: (sx, sy) = (x, y)
                        case .upMirrored: (sx, sy) = (w - 1 - x, y)
                        case .down: (sx, sy) = (w - 1 - x, h - 1 - y)
                        case .downMirrored: (sx, sy) = (x, h - 1 - y)
                        case .leftMirrored: (sx, sy) = (y, x)
                        case .right: (sx, sy) = (y, h - 1 - x)
                        case .rightMirrored: (sx, sy) = (w - 1 - y, h - 1 - x)
                        case .left: (sx, sy) = (w - 1 - y, x)
                        }
                        let s = (sy * w + sx) * 3, d = (y * ow + x) * 3
                        dst[d] = src[s]
                        dst[d + 1] = src[s + 1]
                        dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}
