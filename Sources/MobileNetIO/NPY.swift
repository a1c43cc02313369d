import Foundation
import MobileNetKernels

/// A `.npy` file that cannot be read.
public enum NPYError: Error, Equatable, CustomStringConvertible {
    /// The file cannot be read.
    case unreadable(path: String, reason: String)
    /// The header is not a NumPy format header this reader supports.
    case badHeader(path: String, reason: String)
    /// The data is shorter than the header says.
    case truncated(path: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "\(path): cannot read (\(reason))"
        case .badHeader(let path, let reason): "\(path): not a supported .npy file (\(reason))"
        case .truncated(let path): "\(path): .npy data is shorter than its header says"
        }
    }
}

/// Reads and writes NumPy `.npy` files (format versions 1.0 to 3.0, little-endian `float32`
/// or `float64`, C order): the interchange format for embeddings and test references.
public enum NPY {
    /// Reads a `.npy` file of `<f4` or `<f8` values in C order into a `Float` tensor.
    ///
    /// - Throws: ``NPYError`` naming the file.
    public static func read(contentsOf url: URL) throws(NPYError) -> Tensor {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw .unreadable(path: url.path, reason: error.localizedDescription) }
        return try decode(data, path: url.path)
    }

    /// Decodes the bytes of a `.npy` file; `path` is used in error messages.
    public static func decode(_ data: Data, path: String) throws(NPYError) -> Tensor {
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw .badHeader(path: path, reason: "missing \\x93NUMPY magic")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        if major == 1 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        } else {
            guard bytes.count >= 12 else { throw .badHeader(path: path, reason: "short header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        }
        guard bytes.count >= headerStart + headerLength else { throw .truncated(path: path) }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        func value(of key: String) -> String? {
            guard let range = header.range(of: "'\(key)':") else { return nil }
            return String(header[range.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = value(of: "descr"), let fortran = value(of: "fortran_order"), let shapeText = value(of: "shape") else {
            throw .badHeader(path: path, reason: "header lacks descr, fortran_order or shape")
        }
        guard fortran.hasPrefix("False") else { throw .badHeader(path: path, reason: "Fortran order is not supported") }
        let itemSize: Int
        if descr.hasPrefix("'<f4'") { itemSize = 4 } else if descr.hasPrefix("'<f8'") { itemSize = 8 } else {
            throw .badHeader(path: path, reason: "dtype \(descr.prefix(6)) is not little-endian float32/float64")
        }
        guard let open = shapeText.firstIndex(of: "("), let close = shapeText.firstIndex(of: ")") else {
            throw .badHeader(path: path, reason: "malformed shape")
        }
        let shape = shapeText[shapeText.index(after: open)..<close].split(separator: ",").compactMap {
            Int($0.trimmingCharacters(in: .whitespaces))
        }
        let count = shape.reduce(1, *)
        let start = headerStart + headerLength
        guard bytes.count >= start + count * itemSize else { throw .truncated(path: path) }
        var scalars = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            for i in 0..<count {
                if itemSize == 4 {
                    scalars[i] = Float(bitPattern: raw.loadUnaligned(fromByteOffset: start + 4 * i, as: UInt32.self).littleEndian)
                } else {
                    scalars[i] = Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: start + 8 * i, as: UInt64.self).littleEndian))
                }
            }
        }
        return Tensor(shape: shape, scalars: scalars)
    }

    /// The bytes of a version 1.0 `.npy` file holding `tensor` as little-endian `float32`.
    public static func encode(_ tensor: Tensor) -> Data {
        let shape = tensor.shape.count == 1 ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.reserveCapacity(data.count + tensor.count * 4)
        for v in tensor.scalars {
            let bits = v.bitPattern.littleEndian
            data.append(contentsOf: [UInt8(bits & 0xFF), UInt8((bits >> 8) & 0xFF), UInt8((bits >> 16) & 0xFF), UInt8(bits >> 24)])
        }
        return data
    }
}

extension NPYError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
