import Foundation
import MobileNetIO

/// Small PNG thumbnails for the HTML report, embedded as `data:` URLs.
///
/// The PNG is written by hand (RFC 2083: signature, `IHDR`, one `IDAT` whose zlib stream uses
/// stored deflate blocks, `IEND`, each chunk with its CRC-32): no encoder library is needed, and a
/// 64x64 thumbnail is about 12 KB (16 KB as base64).
enum Thumbnail {
    /// The largest side of a thumbnail in pixels.
    static let side = 64

    /// A `data:image/png;base64,...` URL of the image file fitted into `side` x `side`, or nil
    /// when the file does not decode.
    static func dataURL(contentsOf url: URL, side: Int = side, maxPixels: Int = 100_000_000) -> String? {
        guard let image = try? StandardImageDecoder(maxPixels: maxPixels).decode(contentsOf: url, target: nil) else { return nil }
        let scale = min(1, Double(side) / Double(max(image.width, image.height)))
        let w = max(1, Int((Double(image.width) * scale).rounded())), h = max(1, Int((Double(image.height) * scale).rounded()))
        let pixels = ImageResizer.bilinear(image, height: h, width: w).map { UInt8(min(max($0.rounded(), 0), 255)) }
        return "data:image/png;base64," + png(width: w, height: h, rgb: pixels).base64EncodedString()
    }

    /// An 8-bit RGB PNG of `rgb` (`height * width * 3` bytes, row-major).
    static func png(width: Int, height: Int, rgb: [UInt8]) -> Data {
        var raw: [UInt8] = []
        raw.reserveCapacity(height * (width * 3 + 1))
        for y in 0..<height {
            raw.append(0)  // filter: none
            raw += rgb[(y * width * 3)..<((y + 1) * width * 3)]
        }
        var zlib: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65_535, raw.count - offset)
            let final: UInt8 = offset + n == raw.count ? 1 : 0
            zlib += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            zlib += raw[offset..<(offset + n)]
            offset += n
        } while offset < raw.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in raw { a = (a + UInt32(byte)) % 65_521; b = (b + a) % 65_521 }
        zlib += bigEndian((b << 16) | a)
        var data = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        data += chunk("IHDR", bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, 2, 0, 0, 0])
        data += chunk("IDAT", zlib)
        data += chunk("IEND", [])
        return data
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)] }

    static func chunk(_ type: String, _ body: [UInt8]) -> Data {
        let typed = Array(type.utf8) + body
        return Data(bigEndian(UInt32(body.count)) + typed + bigEndian(crc32(typed)))
    }

    static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes { c = crcTable[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
