import Foundation

extension KerasWeightFile {
    /// The HDF5 layout of a weight file (for a `.keras` archive, of its `model.weights.h5`), like
    /// `h5ls -r`: one line per group and dataset, sorted by path — `/layers/dense/vars [group name=dense]`,
    /// `/layers/dense/vars/0 [dataset 1280x5]`. Only the `name` attribute is shown. For
    /// diagnostics and to compare a written file with one Keras wrote.
    ///
    /// - Throws: ``WeightFileError`` naming the file.
    public static func layout(contentsOf url: URL) throws(WeightFileError) -> [String] {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else { throw .notFound(path: path) }
        let header: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            header = try handle.read(upToCount: 8) ?? Data()
        } catch {
            throw .unreadable(path: path, reason: error.localizedDescription)
        }
        let root: HDF5Group?
        if header.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            root = HDF5Group.open(image: try archiveWeights(url: url))
        } else if header.starts(with: [0x89, 0x48, 0x44, 0x46]) {
            root = HDF5Group.open(path: path)
        } else {
            throw header.isEmpty ? .empty(path: path) : .unknownFormat(path: path)
        }
        guard let root else { throw .corruptHDF5(path: path) }
        var lines: [String] = []
        func describe(_ group: HDF5Group, prefix: String) {
            for name in group.childNames() {
                let childPath = prefix + "/" + name
                if group.isGroup(name) == true, let child = group.group(name) {
                    let attribute = child.stringsAttribute("name")?.first.map { " name=\($0)" } ?? ""
                    lines.append("\(childPath) [group\(attribute)]")
                    describe(child, prefix: childPath)
                } else if let shape = group.datasetShape(name) {
                    lines.append("\(childPath) [dataset \(shape.map(String.init).joined(separator: "x"))]")
                } else {
                    lines.append("\(childPath) [other]")
                }
            }
        }
        describe(root, prefix: "")
        return lines.sorted()
    }
}
