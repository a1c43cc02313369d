import Foundation

/// Small generated images for fast end-to-end tests.
public enum TestImages {
    /// A 24-bit BMP of `width` x `height` pixels, `pixel(x, y)` giving (r, g, b).
    public static func bmp(width: Int, height: Int, pixel: (Int, Int) -> (UInt8, UInt8, UInt8)) -> Data {
        let rowBytes = (width * 3 + 3) / 4 * 4
        let size = 54 + rowBytes * height
        func le32(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8((v >> 24) & 0xFF)] }
        var bytes: [UInt8] = [0x42, 0x4D] + le32(size) + [0, 0, 0, 0] + le32(54)
        bytes += le32(40) + le32(width) + le32(height) + [1, 0, 24, 0] + le32(0) + le32(rowBytes * height) + le32(2835) + le32(2835) + le32(0) + le32(0)
        for y in (0..<height).reversed() {
            var row: [UInt8] = []
            for x in 0..<width { let (r, g, b) = pixel(x, y); row += [b, g, r] }
            row += [UInt8](repeating: 0, count: rowBytes - width * 3)
            bytes += row
        }
        return Data(bytes)
    }

    /// `root/train` and `root/val` with two classes, `bars` (vertical stripes) and `rings`
    /// (concentric), `count` training and `validation` validation 40x40 BMPs per class, of
    /// varied colour and phase.
    public static func twoClassFolders(count: Int = 4, validation: Int = 2) throws -> URL {
        let root = try TestData.temporaryDirectory()
        for (split, n) in [("train", count), ("val", validation)] {
            for name in ["bars", "rings"] {
                let dir = root.appendingPathComponent("\(split)/\(name)")
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                for i in 0..<n {
                    let phase = Double(i) * 1.7 + (split == "val" ? 0.9 : 0)
                    let data = bmp(width: 40, height: 40) { x, y in
                        let v: Double
                        if name == "bars" {
                            v = sin(Double(x) * 0.8 + phase)
                        } else {
                            let dx = Double(x) - 20, dy = Double(y) - 20
                            v = sin((dx * dx + dy * dy).squareRoot() * 0.9 + phase)
                        }
                        let level = UInt8(127.5 + 120 * v)
                        return (level, UInt8((Int(level) + 40 * i) % 256), 255 - level)
                    }
                    try data.write(to: dir.appendingPathComponent("\(i).bmp"))
                }
            }
        }
        return root
    }
}
