import Foundation
import MobileNetTFProtos
import SwiftProtobuf

/// Why a SavedModel folder cannot be read: every message names the file.
public enum SavedModelError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// Missing, not a regular file, or unreadable.
    case unreadable(path: String, reason: String)
    /// Larger than the reader's limit for this kind of file.
    case tooLarge(path: String, bytes: Int, limit: Int)
    /// Not well-formed: what is wrong and where.
    case damaged(path: String, reason: String)
    /// A well-formed SavedModel that is not a MobileNetV2 this library computes: why.
    case notAMobileNetV2(path: String, reason: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "\(path): cannot read the SavedModel file (\(reason))"
        case .tooLarge(let path, let bytes, let limit): "\(path): \(bytes) bytes; files over \(limit / (1 << 20)) MiB are refused"
        case .damaged(let path, let reason): "\(path): damaged SavedModel file: \(reason)"
        case .notAMobileNetV2(let path, let reason): "\(path): not a MobileNetV2 SavedModel this library runs: \(reason)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// TensorFlow's tensor bundle (a SavedModel's `variables/variables.index` and its
/// `variables.data-NNNNN-of-NNNNN` shards; TensorFlow's checkpoint format): the index is a
/// LevelDB-format sorted table mapping each tensor's checkpoint key to a `BundleEntryProto`
/// (type, shape, shard, offset, size, CRC-32C), the shards hold the raw little-endian bytes.
///
/// Hostile input: the table's footer, block handles, block trailers (type and CRC-32C), entry
/// lengths and restart arrays are checked against the file before use; entries are at most
/// 1,000,000 and keys 64 KiB; a tensor is read only when asked, after its shard, offset, size,
/// type and shape agree, and its bytes are checked against its CRC-32C.
public struct TensorBundle: Sendable {
    /// The index file.
    public let indexURL: URL
    /// The number of data shards.
    public let shardCount: Int
    /// Checkpoint key → entry.
    let entries: [String: Tensorflow_BundleEntryProto]

    /// The largest index file read: 64 MiB.
    public static let maximumIndexBytes = 64 << 20
    /// The largest tensor read: 1 GiB.
    public static let maximumTensorBytes = 1 << 30

    /// Reads the index `PREFIX.index` of a bundle whose shards are `PREFIX.data-*`.
    ///
    /// - Parameter indexURL: `.../variables/variables.index`.
    /// - Throws: ``SavedModelError``.
    public init(indexURL: URL) throws(SavedModelError) {
        try self.init(indexBytes: try readRegularFile(indexURL, limit: Self.maximumIndexBytes), indexURL: indexURL)
    }

    /// Parses an index already read (its shards are looked for beside `indexURL`).
    ///
    /// - Throws: ``SavedModelError/damaged(path:reason:)``.
    public init(indexBytes data: Data, indexURL: URL) throws(SavedModelError) {
        self.indexURL = indexURL
        let path = indexURL.path
        guard data.count <= Self.maximumIndexBytes else { throw .tooLarge(path: path, bytes: data.count, limit: Self.maximumIndexBytes) }
        let bytes = [UInt8](data)
        var table = SortedTable(bytes: bytes, path: path)
        let raw = try table.entries()
        var entries: [String: Tensorflow_BundleEntryProto] = [:]
        var header: Tensorflow_BundleHeaderProto?
        for (key, value) in raw {
            if key.isEmpty {
                do { header = try Tensorflow_BundleHeaderProto(serializedBytes: value) } catch {
                    throw .damaged(path: path, reason: "the bundle header does not parse: \(error)")
                }
                continue
            }
            guard let name = String(bytes: key, encoding: .utf8) else { throw .damaged(path: path, reason: "a tensor name is not UTF-8") }
            do { entries[name] = try Tensorflow_BundleEntryProto(serializedBytes: value) } catch {
                throw .damaged(path: path, reason: "the entry of \(name) does not parse: \(error)")
            }
        }
        guard let header else { throw .damaged(path: path, reason: "no bundle header (the entry with the empty key)") }
        guard header.endianness == .little else { throw .damaged(path: path, reason: "a big-endian bundle") }
        guard (1...100_000).contains(header.numShards) else { throw .damaged(path: path, reason: "\(header.numShards) data shards") }
        shardCount = Int(header.numShards)
        self.entries = entries
    }

    /// The checkpoint keys, sorted.
    public var keys: [String] { entries.keys.sorted() }

    /// The shape of a tensor, or nil when the bundle has no such key.
    public func shape(of key: String) -> [Int]? {
        entries[key].map { $0.shape.dim.map { Int($0.size) } }
    }

    /// The shard file of shard `id`: `PREFIX.data-0000I-of-0000N`.
    func shardURL(_ id: Int) -> URL {
        let prefix = indexURL.deletingPathExtension().lastPathComponent
        let name = String(format: "%@.data-%05d-of-%05d", prefix, id, shardCount)
        return indexURL.deletingLastPathComponent().appendingPathComponent(name)
    }

    /// The raw bytes of a tensor, checked against its entry's size and (but for strings, whose
    /// checksum covers another encoding of their lengths) its CRC-32C.
    func bytes(of key: String) throws(SavedModelError) -> (entry: Tensorflow_BundleEntryProto, bytes: [UInt8]) {
        guard let entry = entries[key] else { throw .damaged(path: indexURL.path, reason: "no tensor \(key)") }
        guard entry.slices.isEmpty else { throw .damaged(path: indexURL.path, reason: "\(key) is saved in slices (partitioned variables are not supported)") }
        guard entry.shardID >= 0, Int(entry.shardID) < shardCount else {
            throw .damaged(path: indexURL.path, reason: "\(key) names shard \(entry.shardID) of \(shardCount)")
        }
        guard entry.offset >= 0, entry.size >= 0, entry.size <= Self.maximumTensorBytes else {
            throw .damaged(path: indexURL.path, reason: "\(key): offset \(entry.offset), size \(entry.size)")
        }
        let shard = shardURL(Int(entry.shardID))
        let bytes = try readRange(shard, offset: Int(entry.offset), count: Int(entry.size))
        if entry.dtype != .dtString {
            try check(CRC32C.checksum(bytes), against: entry, key: key, shard: shard)
        }
        return (entry, bytes)
    }

    /// TensorFlow stores the checksum masked.
    func check(_ crc: UInt32, against entry: Tensorflow_BundleEntryProto, key: String, shard: URL) throws(SavedModelError) {
        guard crc == entry.crc32C || CRC32C.unmask(entry.crc32C) == crc else {
            throw .damaged(path: shard.path, reason: "the bytes of \(key) do not match their CRC-32C")
        }
    }

    /// A float32 tensor's values (`DT_FLOAT`; `DT_HALF` and `DT_DOUBLE` converted), with its shape.
    ///
    /// - Throws: ``SavedModelError/damaged(path:reason:)`` for another type, a size that does
    ///   not fit the shape, non-finite values, bad bytes.
    public func floats(_ key: String) throws(SavedModelError) -> (shape: [Int], values: [Float]) {
        let (entry, bytes) = try self.bytes(of: key)
        let shape = entry.shape.dim.map { Int($0.size) }
        guard shape.allSatisfy({ $0 >= 0 && $0 <= 1 << 28 }) else { throw .damaged(path: indexURL.path, reason: "\(key) has shape \(shape)") }
        let count = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        let width: Int
        switch entry.dtype {
        case .dtFloat: width = 4
        case .dtHalf: width = 2
        case .dtDouble: width = 8
        default: throw .damaged(path: indexURL.path, reason: "\(key) is \(entry.dtype), not a float tensor")
        }
        guard count < Int.max / 8, bytes.count == count * width else {
            throw .damaged(path: indexURL.path, reason: "\(key): \(bytes.count) bytes for shape \(shape) of \(entry.dtype)")
        }
        let values: [Float] = bytes.withUnsafeBytes { raw in
            switch width {
            case 2: return (0..<count).map { Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self).littleEndian)) }
            case 8: return (0..<count).map { Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self).littleEndian)) }
            default: return (0..<count).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian) }
            }
        }
        guard values.allSatisfy(\.isFinite) else { throw .damaged(path: indexURL.path, reason: "\(key) holds non-finite values") }
        return (shape, values)
    }

    /// A scalar string tensor (`DT_STRING`, such as `_CHECKPOINTABLE_OBJECT_GRAPH`): the bundle
    /// stores the length as a varint, the masked CRC-32C of the lengths, then the bytes; the
    /// entry's CRC-32C covers the length as 4 little-endian bytes, the stored checksum and the
    /// bytes.
    public func string(_ key: String) throws(SavedModelError) -> [UInt8] {
        let (entry, bytes) = try self.bytes(of: key)
        guard entry.dtype == .dtString, entry.shape.dim.isEmpty else {
            throw .damaged(path: indexURL.path, reason: "\(key) is not a scalar string")
        }
        var reader = ByteReader(bytes: bytes, path: indexURL.path)
        let length = try reader.varint()
        let lengthChecksum = try reader.take(4)
        guard length == UInt64(reader.remaining) else { throw .damaged(path: indexURL.path, reason: "\(key): string of \(length) bytes in \(bytes.count)") }
        let string = Array(try reader.take(Int(length)))
        // The length enters the checksum as 4 little-endian bytes (8 above 2^32 - 1).
        let lengthBytes = (0..<(length <= UInt64(UInt32.max) ? 4 : 8)).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) }
        try check(CRC32C.checksum(lengthBytes + Array(lengthChecksum) + string), against: entry, key: key, shard: shardURL(Int(entry.shardID)))
        return string
    }
}

// MARK: - The sorted table (LevelDB's format)

/// A LevelDB-format table: the footer's index handle, the index block's data-block handles, each
/// data block's prefix-compressed entries.
private struct SortedTable {
    let bytes: [UInt8]
    let path: String

    static let magic: UInt64 = 0xdb47_7524_8b80_fb57
    static let maximumEntries = 1_000_000

    mutating func entries() throws(SavedModelError) -> [([UInt8], [UInt8])] {
        guard bytes.count >= 48 else { throw .damaged(path: path, reason: "the index is shorter than a table footer (48 bytes)") }
        var magic: UInt64 = 0
        for i in 0..<8 { magic |= UInt64(bytes[bytes.count - 8 + i]) << (8 * UInt64(i)) }
        guard magic == Self.magic else { throw .damaged(path: path, reason: "no table magic number at the end (not a tensor bundle index)") }
        var footer = ByteReader(bytes: Array(bytes[(bytes.count - 48)...]), path: path)
        _ = try footer.blockHandle() // metaindex
        let index = try footer.blockHandle()
        var result: [([UInt8], [UInt8])] = []
        for (_, handle) in try block(index) {
            var reader = ByteReader(bytes: handle, path: path)
            let data = try reader.blockHandle()
            result += try block(data)
            guard result.count <= Self.maximumEntries else { throw .damaged(path: path, reason: "more than \(Self.maximumEntries) entries") }
        }
        return result
    }

    /// One block's entries: checked against the file, its trailer's type (0: uncompressed) and
    /// CRC-32C, its restart array.
    func block(_ handle: (offset: Int, size: Int)) throws(SavedModelError) -> [([UInt8], [UInt8])] {
        let (offset, size) = handle
        guard offset >= 0, size >= 4, offset <= bytes.count - 48, size <= bytes.count - 48 - offset - 5 else {
            throw .damaged(path: path, reason: "a block (offset \(offset), size \(size)) lies outside the index")
        }
        let contents = Array(bytes[offset..<(offset + size)])
        let type = bytes[offset + size]
        guard type == 0 else { throw .damaged(path: path, reason: "a compressed block (type \(type)); TensorFlow writes bundle indexes uncompressed") }
        var stored: UInt32 = 0
        for i in 0..<4 { stored |= UInt32(bytes[offset + size + 1 + i]) << (8 * UInt32(i)) }
        guard CRC32C.unmask(stored) == CRC32C.checksum(contents + [type]) else {
            throw .damaged(path: path, reason: "a block's CRC-32C does not match (offset \(offset))")
        }
        var restartsCount: UInt32 = 0
        for i in 0..<4 { restartsCount |= UInt32(contents[size - 4 + i]) << (8 * UInt32(i)) }
        guard Int(restartsCount) <= (size - 4) / 4 else { throw .damaged(path: path, reason: "a block's restart array is larger than the block") }
        let end = size - 4 - Int(restartsCount) * 4
        var reader = ByteReader(bytes: Array(contents[..<end]), path: path)
        var entries: [([UInt8], [UInt8])] = []
        var key: [UInt8] = []
        while reader.remaining > 0 {
            let shared = try reader.varint(), unshared = try reader.varint(), valueLength = try reader.varint()
            guard shared <= UInt64(key.count), unshared <= 65_536, valueLength <= UInt64(reader.remaining) else {
                throw .damaged(path: path, reason: "a table entry's lengths do not fit its block")
            }
            key = Array(key[..<Int(shared)]) + (try reader.take(Int(unshared)))
            entries.append((key, Array(try reader.take(Int(valueLength)))))
            guard entries.count <= Self.maximumEntries else { throw .damaged(path: path, reason: "more than \(Self.maximumEntries) entries") }
        }
        return entries
    }
}

/// Little-endian varints and byte runs, bounded by the buffer.
struct ByteReader {
    let bytes: [UInt8]
    let path: String
    var position = 0

    var remaining: Int { bytes.count - position }

    mutating func varint() throws(SavedModelError) -> UInt64 {
        var result: UInt64 = 0
        for shift in stride(from: UInt64(0), to: 64, by: 7) {
            guard position < bytes.count else { throw .damaged(path: path, reason: "a varint runs past its end") }
            let byte = bytes[position]
            position += 1
            result |= UInt64(byte & 0x7f) << shift
            if byte < 0x80 { return result }
        }
        throw .damaged(path: path, reason: "a varint longer than 10 bytes")
    }

    mutating func take(_ count: Int) throws(SavedModelError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw .damaged(path: path, reason: "\(count) bytes asked past the end") }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    mutating func blockHandle() throws(SavedModelError) -> (offset: Int, size: Int) {
        let offset = try varint(), size = try varint()
        guard offset < UInt64(Int.max / 2), size < UInt64(Int.max / 2) else { throw .damaged(path: path, reason: "a block handle out of range") }
        return (Int(offset), Int(size))
    }
}

/// CRC-32C (Castagnoli), the checksum of LevelDB tables and TensorFlow bundles, and LevelDB's
/// masking of stored checksums.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0x82f6_3b78 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xffff_ffff
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xffff_ffff
    }

    static func unmask(_ masked: UInt32) -> UInt32 {
        let rotated = masked &- 0xa282_ead8
        return (rotated >> 17) | (rotated << 15)
    }
}

// MARK: - Files

/// A regular file's bytes, at most `limit`.
func readRegularFile(_ url: URL, limit: Int) throws(SavedModelError) -> Data {
    var info = stat()
    guard stat(url.path, &info) == 0 else { throw .unreadable(path: url.path, reason: String(cString: strerror(errno))) }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: url.path, reason: "not a regular file") }
    guard Int(info.st_size) <= limit else { throw .tooLarge(path: url.path, bytes: Int(info.st_size), limit: limit) }
    do {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        let data = try handle.read(upToCount: limit + 1) ?? Data()
        guard data.count <= limit else { throw SavedModelError.tooLarge(path: url.path, bytes: data.count, limit: limit) }
        return data
    } catch let error as SavedModelError {
        throw error
    } catch {
        throw .unreadable(path: url.path, reason: error.localizedDescription)
    }
}

/// `count` bytes of a regular file from `offset`, checked against its size.
func readRange(_ url: URL, offset: Int, count: Int) throws(SavedModelError) -> [UInt8] {
    var info = stat()
    guard stat(url.path, &info) == 0 else { throw .unreadable(path: url.path, reason: String(cString: strerror(errno))) }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: url.path, reason: "not a regular file") }
    guard offset <= Int(info.st_size), count <= Int(info.st_size) - offset else {
        throw .damaged(path: url.path, reason: "\(count) bytes at \(offset) lie beyond the end (\(info.st_size) bytes)")
    }
    do {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        let data = try handle.read(upToCount: count) ?? Data()
        guard data.count == count else { throw SavedModelError.damaged(path: url.path, reason: "the file ended early") }
        return [UInt8](data)
    } catch let error as SavedModelError {
        throw error
    } catch {
        throw .unreadable(path: url.path, reason: error.localizedDescription)
    }
}
