import CMobileNetShims
import Foundation

/// An HDF5 file that cannot be written. Every case names the file.
public enum HDF5WriteError: Error, Equatable, CustomStringConvertible {
    /// The file cannot be created (it exists, or the folder is not writable).
    case cannotCreate(path: String)
    /// A group, attribute or dataset cannot be written.
    case writeFailed(path: String, object: String)
    /// The values do not fill the shape.
    case shapeMismatch(path: String, object: String, shape: [Int], count: Int)
    /// The writer was already closed.
    case closed(path: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .cannotCreate(let path): "\(path): cannot create the HDF5 file (it exists or the folder is not writable)"
        case .writeFailed(let path, let object): "\(path): cannot write '\(object)'"
        case .shapeMismatch(let path, let object, let shape, let count): "\(path): '\(object)' has shape \(shape) but \(count) values"
        case .closed(let path): "\(path): the HDF5 file is already closed"
        }
    }
}

/// Writes an HDF5 file the way h5py writes a Keras 3 `model.weights.h5`: groups, scalar UTF-8
/// string attributes (`vars` `name`) and contiguous little-endian float32 datasets.
///
/// Paths are relative to the root (`layers/dense/vars/0`); parent groups are created as needed.
/// Call ``close()`` to finish the file; a writer that is not closed closes it when released.
public final class HDF5Writer {
    /// The file being written.
    public let url: URL
    private var file: Int64?
    private var groups: Set<String> = [""]

    /// Creates a new file at `url`.
    ///
    /// - Throws: ``HDF5WriteError/cannotCreate(path:)`` when the file exists or cannot be made.
    public init(creating url: URL) throws(HDF5WriteError) {
        self.url = url
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        var id: Int64 = -1
        guard mn_h5_create_file(url.path, &id) == 0 else { throw .cannotCreate(path: url.path) }
        file = id
    }

    deinit {
        if let file {
            hdf5Lock.lock()
            _ = mn_h5_close_file(file)
            hdf5Lock.unlock()
        }
    }

    private func openFile() throws(HDF5WriteError) -> Int64 {
        guard let file else { throw .closed(path: url.path) }
        return file
    }

    /// Creates the group at `path` and any missing parents (an existing group is kept).
    public func createGroup(_ path: String) throws(HDF5WriteError) {
        let file = try openFile()
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        var current = ""
        for component in path.split(separator: "/") {
            current = current.isEmpty ? String(component) : current + "/" + component
            if groups.contains(current) { continue }
            var group: Int64 = -1
            guard mn_h5_group_create(file, current, &group) == 0 else { throw .writeFailed(path: url.path, object: current) }
            mn_h5_close(group)
            groups.insert(current)
        }
    }

    /// Writes the scalar UTF-8 string attribute `name` on the group at `path` (created if needed).
    public func setStringAttribute(_ name: String, to value: String, onGroup path: String) throws(HDF5WriteError) {
        try createGroup(path)
        let file = try openFile()
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        var group: Int64 = -1
        guard mn_h5_group_open(file, path.isEmpty ? "/" : path, &group) == 0 else { throw .writeFailed(path: url.path, object: path) }
        defer { mn_h5_close(group) }
        guard mn_h5_attr_write_string(group, name, value) == 0 else { throw .writeFailed(path: url.path, object: "\(path)@\(name)") }
    }

    /// Writes a float32 dataset of `shape` (row-major `values`) at `path`; its group is created if needed.
    public func writeFloat32(_ path: String, shape: [Int], values: [Float]) throws(HDF5WriteError) {
        guard shape.allSatisfy({ $0 >= 0 }), shape.count <= 8, shape.reduce(1, *) == values.count else {
            throw .shapeMismatch(path: url.path, object: path, shape: shape, count: values.count)
        }
        if let slash = path.lastIndex(of: "/") { try createGroup(String(path[..<slash])) }
        let file = try openFile()
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        let dims = shape.map { UInt64($0) }
        let status = values.withUnsafeBufferPointer { v in
            dims.withUnsafeBufferPointer { d in mn_h5_dataset_write_float(file, path, d.baseAddress, Int32(shape.count), v.baseAddress) }
        }
        guard status == 0 else { throw .writeFailed(path: url.path, object: path) }
    }

    /// Flushes and closes the file.
    ///
    /// - Throws: ``HDF5WriteError/writeFailed(path:object:)`` when the final write fails.
    public func close() throws(HDF5WriteError) {
        guard let file else { return }
        self.file = nil
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        guard mn_h5_close_file(file) == 0 else { throw .writeFailed(path: url.path, object: "/") }
    }
}

extension HDF5WriteError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
