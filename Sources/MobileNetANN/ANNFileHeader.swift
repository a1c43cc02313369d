import Foundation

/// The header of a FAISS index file, parsed without FAISS (faiss/impl/index_write.cpp,
/// `write_index_header`): a four-character type code, then `d` (int32), `ntotal` (int64), two
/// unused int64, `is_trained` (uint8) and `metric_type` (int32), little-endian. Checked before
/// FAISS's reader, which trusts these sizes, sees the file.
public struct ANNFileHeader: Sendable, Hashable {
    /// The four-character type code: `IxFI` (IndexFlatIP), `IxF2` (IndexFlatL2), `IxFl`
    /// (IndexFlat), `IwFl` (IndexIVFFlat), `IHNf` (IndexHNSWFlat).
    public let fourcc: String
    /// Values per vector, 1...65536.
    public let dimension: Int
    /// Number of vectors.
    public let count: Int
    /// FAISS metric: 0 inner product, 1 L2.
    public let metric: Int
    /// Size of the file in bytes.
    public let fileSize: Int

    /// The type codes accepted: flat-storage indexes of float vectors.
    public static let supportedTypes: Set<String> = ["IxFI", "IxF2", "IxFl", "IwFl", "IHNf"]

    /// Bytes of the header.
    public static let size = 4 + 4 + 8 + 8 + 8 + 1 + 4

    /// Reads and checks the header of `url`.
    ///
    /// - Throws: ``ANNError/notFound(path:)``, ``ANNError/unreadable(path:reason:)``,
    ///   ``ANNError/unsupported(path:reason:)`` for another type code, ``ANNError/damaged(path:reason:)``
    ///   for a short file, sizes out of range, or vectors that cannot fit in the file.
    public init(contentsOf url: URL) throws(ANNError) {
        let path = url.path
        let fd = try Self.openForReading(path)
        defer { close(fd) }
        try self.init(fileDescriptor: fd, path: path)
    }

    /// Opens `path` read-only for the header and FAISS's reader: `O_NONBLOCK`, so a FIFO at the
    /// path cannot hang the open (``init(fileDescriptor:path:)`` then refuses anything but a
    /// regular file), and `O_CLOEXEC`. The caller closes the descriptor.
    ///
    /// - Throws: ``ANNError/notFound(path:)``, ``ANNError/unreadable(path:reason:)`` (permissions...).
    static func openForReading(_ path: String) throws(ANNError) -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw .notFound(path: path) }
            throw .unreadable(path: path, reason: String(cString: strerror(code)))
        }
        return fd
    }

    /// Parses the header of an open file (`path` names it in errors); the descriptor's offset
    /// is not used or moved.
    ///
    /// - Throws: as ``init(contentsOf:)``.
    init(fileDescriptor fd: Int32, path: String) throws(ANNError) {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: path, reason: "not a regular file") }
        var bytes = [UInt8](repeating: 0, count: Self.size)
        var filled = 0
        while filled < Self.size {
            let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, Self.size - filled, off_t(filled)) }
            if got < 0, errno == EINTR { continue }
            guard got >= 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
            if got == 0 { break }
            filled += got
        }
        try self.init(bytes: Data(bytes.prefix(filled)), fileSize: Int(info.st_size), path: path)
    }

    /// Parses a header from the first bytes of a file of `fileSize` bytes.
    ///
    /// - Throws: as ``init(contentsOf:)``.
    public init(bytes: Data, fileSize: Int, path: String) throws(ANNError) {
        let b = [UInt8](bytes.prefix(Self.size))
        guard b.count >= 4 else { throw .damaged(path: path, reason: "the file has \(fileSize) bytes, shorter than a FAISS header") }
        let code = String(decoding: b[0..<4], as: UTF8.self)
        guard Self.supportedTypes.contains(code) else {
            let printable = b[0..<4].allSatisfy { $0 >= 0x20 && $0 < 0x7f }
            throw .unsupported(path: path, reason: printable
                ? "index type code \"\(code)\"; supported: Flat, IVF<n>,Flat, HNSW<M>,Flat (\(Self.supportedTypes.sorted().joined(separator: ", ")))"
                : "no FAISS index type code at the start: not a FAISS file")
        }
        guard b.count == Self.size else { throw .damaged(path: path, reason: "the file has \(fileSize) bytes, shorter than a FAISS header") }
        func integer(_ offset: Int, _ width: Int) -> Int64 {
            var v: UInt64 = 0
            for i in 0..<width { v |= UInt64(b[offset + i]) << (8 * UInt64(i)) }
            return width == 4 ? Int64(Int32(truncatingIfNeeded: v)) : Int64(bitPattern: v)
        }
        let d = integer(4, 4), n = integer(8, 8), metric = integer(33, 4)
        guard (1...65_536).contains(d) else { throw .damaged(path: path, reason: "dimension \(d) is out of range") }
        guard n >= 0, n <= Int64(Int32.max) else { throw .damaged(path: path, reason: "vector count \(n) is out of range") }
        // Every supported type stores the vectors as float32: they must fit in the file.
        let (vectorBytes, overflow) = (n * d).multipliedReportingOverflow(by: 4)
        guard !overflow, Int64(Self.size) + vectorBytes <= Int64(fileSize) else {
            throw .damaged(path: path, reason: "the header announces \(n) vectors of \(d) values (\(vectorBytes) bytes), but the file has \(fileSize) bytes (truncated?)")
        }
        fourcc = code
        dimension = Int(d)
        count = Int(n)
        self.metric = Int(metric)
        self.fileSize = fileSize
    }
}
