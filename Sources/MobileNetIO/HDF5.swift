import CMobileNetShims
import Foundation

/// The HDF5 C library is not thread-safe in Debian's serial build: every call goes through this lock.
let hdf5Lock = NSLock()

/// A read-only HDF5 object (file or group) used to read Keras weight files.
///
/// This is a thin wrapper over the HDF5 C library (Debian `libhdf5-dev`); it reads groups,
/// string attributes and numeric datasets, converting every dataset to `Float`.
final class HDF5Group: @unchecked Sendable {
    let id: Int64
    /// The path of this group inside the file, `/` for the root.
    let path: String
    /// Keeps the file open as long as one of its groups is alive.
    private let parent: HDF5Group?

    /// The bytes of the file (or in-memory image): no dataset may declare more data than that.
    let byteLimit: UInt64

    private init(id: Int64, path: String, parent: HDF5Group?, byteLimit: UInt64) {
        self.id = id
        self.path = path
        self.parent = parent
        self.byteLimit = byteLimit
    }

    deinit {
        hdf5Lock.lock()
        mn_h5_close(id)
        hdf5Lock.unlock()
    }

    /// Opens an HDF5 file read-only.
    static func open(path: String) -> HDF5Group? {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        var id: Int64 = -1
        guard mn_h5_open_file(path, &id) == 0 else { return nil }
        var info = stat()
        let size = stat(path, &info) == 0 ? UInt64(max(0, info.st_size)) : 0
        return HDF5Group(id: id, path: "/", parent: nil, byteLimit: size)
    }

    /// Opens an HDF5 file image held in memory (for example a `.keras` archive member).
    static func open(image: Data) -> HDF5Group? {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        var id: Int64 = -1
        let status = image.withUnsafeBytes { raw in mn_h5_open_image(raw.baseAddress, raw.count, &id) }
        guard status == 0 else { return nil }
        return HDF5Group(id: id, path: "/", parent: nil, byteLimit: UInt64(image.count))
    }

    /// The names of the children, in name order.
    func childNames() -> [String] {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        let count = mn_h5_child_count(id)
        guard count > 0 else { return [] }
        var names: [String] = []
        var buffer = [CChar](repeating: 0, count: 1024)
        for i in 0..<UInt64(count) {
            var length = mn_h5_child_name(id, i, &buffer, buffer.count)
            if length >= buffer.count {
                buffer = [CChar](repeating: 0, count: Int(length) + 1)
                length = mn_h5_child_name(id, i, &buffer, buffer.count)
            }
            if length >= 0 { names.append(String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        }
        return names
    }

    /// Whether `name` is a group (`true`), a dataset (`false`), or absent (`nil`).
    func isGroup(_ name: String) -> Bool? {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        switch mn_h5_child_kind(id, name) {
        case 1: return true
        case 2: return false
        default: return nil
        }
    }

    /// Opens the child group `name` (which may be a path such as `a/b`: each component is
    /// opened in turn, so no external link — a link into another file — is ever followed).
    func group(_ name: String) -> HDF5Group? {
        let components = name.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard !components.isEmpty else { return nil }
        var current = self
        for component in components {
            hdf5Lock.lock()
            var child: Int64 = -1
            let status = mn_h5_group_open(current.id, component, &child)
            hdf5Lock.unlock()
            guard status == 0 else { return nil }
            current = HDF5Group(id: child, path: current.path == "/" ? "/" + component : current.path + "/" + component, parent: current, byteLimit: byteLimit)
        }
        return current
    }

    /// The group holding dataset `name` (a path such as `block_1/kernel:0`) and its last component.
    private func container(of name: String) -> (group: HDF5Group, name: String)? {
        guard let slash = name.lastIndex(of: "/") else { return (self, name) }
        guard let group = group(String(name[..<slash])) else { return nil }
        return (group, String(name[name.index(after: slash)...]))
    }

    /// Why a dataset is refused before its data is read.
    enum DatasetProblem: Error, Equatable {
        /// Not a numeric dataset (or not there).
        case notNumeric
        /// An external link, external raw-data files or a virtual dataset: data from other files.
        case external(String)
        /// The declared size cannot be: more elements than fit, or more bytes than the file holds.
        case implausibleSize(String)
        /// HDF5 could not read the data (truncated or damaged file).
        case unreadable
    }

    /// Reads numeric dataset `name` as `Float` after checking what it declares: no data from
    /// other files, an element count that does not overflow and whose bytes fit the file
    /// (contiguous data) or the file times the best compression ratio (filtered data), and at
    /// most 2^28 elements (1 GiB as float32; MobileNetV2's largest weight has 1.6 million).
    func readDataset(_ name: String) -> Result<(shape: [Int], values: [Float]), DatasetProblem> {
        guard let (group, leaf) = container(of: name) else { return .failure(.notNumeric) }
        var dims = [UInt64](repeating: 0, count: 8)
        var info = mn_h5_dataset_info_t()
        hdf5Lock.lock()
        let status = mn_h5_dataset_info(group.id, leaf, &dims, 8, &info)
        hdf5Lock.unlock()
        if status == -3 { return .failure(.external("\(name) is an external link into another file")) }
        guard status == 0, info.is_numeric == 1 else { return .failure(.notNumeric) }
        if info.external_files != 0 { return .failure(.external("\(name) keeps its data in \(info.external_files) external file(s)")) }
        if info.is_virtual != 0 { return .failure(.external("\(name) is a virtual dataset (data in other files)")) }
        var count: UInt64 = 1
        for d in dims.prefix(Int(info.rank)) {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { return .failure(.implausibleSize("\(name) declares shape \(dims.prefix(Int(info.rank)).map { $0 }), too many elements")) }
            count = product
        }
        let maximumElements: UInt64 = 1 << 28
        guard count <= maximumElements else {
            return .failure(.implausibleSize("\(name) declares \(count) elements, more than the \(maximumElements) a weight may have"))
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: max(info.element_size, 1))
        // Deflate cannot compress better than about 1032:1.
        let fileBound = info.filters > 0 ? byteLimit.multipliedReportingOverflow(by: 1032).partialValue : byteLimit
        guard !overflow, bytes <= max(fileBound, 1 << 16) else {
            return .failure(.implausibleSize("\(name) declares \(count) elements of \(info.element_size) bytes, more than the \(byteLimit)-byte file can hold"))
        }
        var values = [Float](repeating: 0, count: Int(count))
        hdf5Lock.lock()
        let read = values.withUnsafeMutableBufferPointer { mn_h5_dataset_read_float(group.id, leaf, $0.baseAddress, Int(count)) }
        hdf5Lock.unlock()
        guard read == 0 else { return .failure(.unreadable) }
        return .success((dims.prefix(Int(info.rank)).map { Int($0) }, values))
    }

    /// Whether this object has the attribute `name`.
    func hasAttribute(_ name: String) -> Bool {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        return mn_h5_attr_exists(id, name) == 1
    }

    /// A string or string-array attribute; an empty numeric array reads as `[]`; `nil` when
    /// absent or not a string type.
    func stringsAttribute(_ name: String) -> [String]? {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        guard mn_h5_attr_exists(id, name) == 1 else { return nil }
        var buffer: UnsafeMutablePointer<CChar>?
        var total = 0, count = 0
        guard mn_h5_attr_read_strings(id, name, &buffer, &total, &count) == 0 else { return nil }
        defer { mn_free(buffer) }
        guard let buffer, count > 0 else { return [] }
        var strings: [String] = []
        var offset = 0
        for _ in 0..<count {
            let s = String(cString: buffer + offset)
            strings.append(s)
            offset += strlen(buffer + offset) + 1
        }
        return strings
    }

    /// A Keras string-list attribute that may be split into `name0`, `name1`, ... when large
    /// (Keras's `save_attributes_to_hdf5_group` does that over 64 KiB).
    func chunkedStringsAttribute(_ name: String) -> [String]? {
        if let whole = stringsAttribute(name) { return whole }
        var result: [String] = []
        var chunk = 0
        while let part = stringsAttribute("\(name)\(chunk)") {
            result += part
            chunk += 1
        }
        return chunk > 0 ? result : nil
    }

    /// The shape of dataset `name`, or `nil` when it is not a numeric dataset.
    func datasetShape(_ name: String) -> [Int]? {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        guard mn_h5_dataset_is_numeric(id, name) == 1 else { return nil }
        var dims = [UInt64](repeating: 0, count: 8)
        let rank = mn_h5_dataset_shape(id, name, &dims, 8)
        guard rank >= 0 else { return nil }
        return dims.prefix(Int(rank)).map { Int($0) }
    }
}
