import Foundation

extension KerasWeightFile {
    /// The HDF5 layout of a weight file (for a `.keras` archive, of its `model.weights.h5`), like
    /// `h5ls -r`: one line per group and dataset, sorted by path — `/layers/dense/vars [group name=dense]`,
    /// `/layers/dense/vars/0 [dataset 1280x5]`. Only the `name` attribute is shown. For
    /// diagnostics and to compare a written file with one Keras wrote.
    ///
    /// - Throws: ``WeightFileError`` naming the file.
    public static func layout(contentsOf url: URL) throws(WeightFileError) -> [String] {
        let root = try openRoot(url).root
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
