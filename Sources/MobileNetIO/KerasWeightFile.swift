import Foundation
import MobileNetModel

/// A weight file that cannot be read. Every case names the file; ``description`` is the
/// sentence shown to users.
public enum WeightFileError: Error, Equatable, CustomStringConvertible, Codable {
    /// No file at the path.
    case notFound(path: String)
    /// The file exists but cannot be read (permissions, a directory, an I/O error).
    case unreadable(path: String, reason: String)
    /// The file is empty.
    case empty(path: String)
    /// The bytes are neither HDF5 nor a ZIP archive (`.keras`).
    case unknownFormat(path: String)
    /// The file starts like HDF5 but the library cannot open it (typically truncated).
    case corruptHDF5(path: String)
    /// A `.keras` archive that is damaged or lacks `model.weights.h5`.
    case corruptArchive(path: String, reason: String)
    /// HDF5 that holds no Keras weights layout this package knows.
    case unrecognisedLayout(path: String, reason: String)
    /// A dataset that cannot be read (its data lies past the end of a truncated file, say).
    case unreadableDataset(path: String, dataset: String)
    /// A dataset refused before its data is read: data from other files (an external link,
    /// external storage, a virtual dataset) or a declared size the file cannot hold.
    case unsafeDataset(path: String, dataset: String, reason: String)
    /// The process reading the file died (libhdf5 crashed on it, ran out of memory or time).
    case parserCrashed(path: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let path): "\(path): no such file"
        case .unreadable(let path, let reason): "\(path): cannot read the file (\(reason))"
        case .empty(let path): "\(path): the file is empty"
        case .unknownFormat(let path): "\(path): not a Keras weight file (neither HDF5 .h5/.weights.h5 nor a .keras ZIP archive)"
        case .corruptHDF5(let path): "\(path): the HDF5 file cannot be opened; it is probably truncated or damaged"
        case .corruptArchive(let path, let reason): "\(path): damaged .keras archive: \(reason)"
        case .unrecognisedLayout(let path, let reason): "\(path): not a Keras weights layout: \(reason)"
        case .unreadableDataset(let path, let dataset): "\(path): cannot read dataset '\(dataset)'; the file is probably truncated"
        case .unsafeDataset(let path, let dataset, let reason): "\(path): refusing dataset '\(dataset)': \(reason)"
        case .parserCrashed(let path, let reason): "\(path): cannot read the weight file: \(reason); the file is damaged"
        }
    }
}

/// Which Keras file layout a weight file uses.
public enum KerasWeightFileFormat: String, Sendable, Codable {
    /// Keras 2 `save_weights("x.h5")`, the official Keras Applications downloads: root
    /// attribute `layer_names`, datasets at `/<layer>/<weight_name>`.
    case legacyWeights = "legacy .h5 weights"
    /// Keras 2 (or Keras 3 legacy) `model.save("x.h5")`: the same, under `/model_weights`.
    case legacyModel = "legacy .h5 model"
    /// Keras 3 `save_weights("x.weights.h5")`: `/layers/<class>_<n>/vars/<i>`, Keras layer
    /// name in the `name` attribute of `vars`.
    case keras3Weights = "Keras 3 .weights.h5"
    /// Keras 3 `model.save("x.keras")`: a ZIP with `config.json`, `metadata.json` and a
    /// Keras 3 `model.weights.h5`.
    case kerasArchive = ".keras archive"
}

/// Reads every Keras weight file layout users have: legacy `.h5` weights (with or without the
/// top), legacy whole-model `.h5`, Keras 3 `.weights.h5` and `.keras` archives, including a
/// MobileNetV2 nested inside a larger functional model.
public enum KerasWeightFile {
    /// Reads all layer weights of a file, detecting the layout from its bytes (not its name).
    /// libhdf5 runs in a child process (``WeightFileIsolation/default``): a file that crashes
    /// the library is an error, not the end of this process.
    ///
    /// - Parameter url: a local file.
    /// - Returns: the weights, with `source` set to the path, and the detected format.
    /// - Throws: ``WeightFileError`` naming the file and the problem.
    public static func read(contentsOf url: URL) throws(WeightFileError) -> (weights: KerasWeightSet, format: KerasWeightFileFormat) {
        try read(contentsOf: url, isolation: .default)
    }

    /// The parser itself, in this process.
    static func readInProcess(_ url: URL) throws(WeightFileError) -> (weights: KerasWeightSet, format: KerasWeightFileFormat) {
        let (root, archive) = try openRoot(url)
        return try read(root: root, path: url.path, archive: archive)
    }

    /// Opens the HDF5 weights of a file, detecting the layout from its first bytes: an HDF5
    /// file itself, or the `model.weights.h5` member of a `.keras` ZIP archive.
    ///
    /// - Returns: the root group and whether it came from a `.keras` archive.
    /// - Throws: ``WeightFileError`` naming the file.
    static func openRoot(_ url: URL) throws(WeightFileError) -> (root: HDF5Group, archive: Bool) {
        let path = url.path
        switch try ModelContainer(contentsOf: url) {
        case .hdf5:
            guard let root = HDF5Group.open(path: path) else { throw .corruptHDF5(path: path) }
            return (root, false)
        case .zip:
            let image = try archiveWeights(url: url)
            guard let root = HDF5Group.open(image: image) else {
                throw .corruptArchive(path: path, reason: "model.weights.h5 is not a readable HDF5 file")
            }
            return (root, true)
        case .json, .tflite, .unknown:
            throw .unknownFormat(path: path)
        }
    }

    static func archiveWeights(url: URL) throws(WeightFileError) -> Data {
        // Already inside the reader's child process (see readInChild).
        guard let data = try KerasArchive.memberInProcess("model.weights.h5", of: url, limit: KerasArchive.maximumWeightsBytes,
                                                          prefix: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) else {
            throw .corruptArchive(path: url.path, reason: "it has no model.weights.h5 member")
        }
        return data
    }

    static func read(root: HDF5Group, path: String, archive: Bool) throws(WeightFileError) -> (weights: KerasWeightSet, format: KerasWeightFileFormat) {
        if root.hasAttribute("layer_names") || root.hasAttribute("layer_names0") {
            return (KerasWeightSet(source: path, layers: try readLegacy(root, path: path)), .legacyWeights)
        }
        if let modelWeights = root.group("model_weights"),
           modelWeights.hasAttribute("layer_names") || modelWeights.hasAttribute("layer_names0") {
            return (KerasWeightSet(source: path, layers: try readLegacy(modelWeights, path: path)), .legacyModel)
        }
        if root.isGroup("layers") == true {
            let layers = try readKeras3(root, modelPath: [], path: path)
            return (KerasWeightSet(source: path, layers: layers), archive ? .kerasArchive : .keras3Weights)
        }
        throw .unrecognisedLayout(path: path, reason: "no 'layer_names' attribute, '/model_weights' group or '/layers' group")
    }

    /// Legacy layout: `layer_names` lists the layers in order; each layer group's
    /// `weight_names` lists its datasets, relative to the group. A nested model is one group
    /// whose weight names carry the inner layer names (`Conv1/kernel:0`).
    static func readLegacy(_ group: HDF5Group, path: String) throws(WeightFileError) -> [KerasLayerWeights] {
        guard let layerNames = group.chunkedStringsAttribute("layer_names") else {
            throw .unrecognisedLayout(path: path, reason: "'layer_names' is not a list of strings")
        }
        var layers: [KerasLayerWeights] = []
        for layerName in layerNames {
            guard let layerGroup = group.group(layerName) else {
                throw .unrecognisedLayout(path: path, reason: "layer '\(layerName)' is listed in layer_names but has no group")
            }
            let weightNames = layerGroup.chunkedStringsAttribute("weight_names") ?? []
            var byLayer: [(name: String, arrays: [WeightArray])] = []
            for weightName in weightNames {
                let components = weightName.split(separator: "/").map(String.init)
                var variable = components.last ?? weightName
                if let colon = variable.firstIndex(of: ":") { variable = String(variable[..<colon]) }
                let owner = components.count >= 2 ? components[components.count - 2] : layerName
                let (shape, values) = try dataset(layerGroup, weightName, path: path,
                                                  notNumeric: "weight '\(weightName)' of layer '\(layerName)' is not a numeric dataset")
                // Keras 3's legacy writer lists a nested model's trainable weights first and
                // its BatchNorm moving statistics after them: gather by owner, in order.
                let array = WeightArray(name: variable, shape: shape, values: values)
                if let existing = byLayer.firstIndex(where: { $0.name == owner }) {
                    byLayer[existing].arrays.append(array)
                } else {
                    byLayer.append((owner, [array]))
                }
            }
            for entry in byLayer {
                // A group whose weights belong to other layer names is a nested model.
                let nested = !(byLayer.count == 1 && entry.name == layerName)
                layers.append(KerasLayerWeights(name: entry.name, modelPath: nested ? [layerName] : [], arrays: entry.arrays))
            }
        }
        return layers
    }

    /// Reads one weight dataset, mapping what ``HDF5Group/readDataset(_:)`` refuses to typed errors.
    static func dataset(_ group: HDF5Group, _ name: String, path: String, notNumeric: String) throws(WeightFileError) -> (shape: [Int], values: [Float]) {
        switch group.readDataset(name) {
        case .success(let read): return read
        case .failure(.notNumeric): throw .unrecognisedLayout(path: path, reason: notNumeric)
        case .failure(.external(let reason)), .failure(.implausibleSize(let reason)):
            throw .unsafeDataset(path: path, dataset: "\(group.path)/\(name)", reason: reason)
        case .failure(.unreadable): throw .unreadableDataset(path: path, dataset: "\(group.path)/\(name)")
        }
    }

    /// Keras 3 layout: `layers/<key>/vars/<i>` with the Keras layer name in the `name`
    /// attribute of `vars`; a nested model has its own `layers` group.
    static func readKeras3(_ group: HDF5Group, modelPath: [String], path: String) throws(WeightFileError) -> [KerasLayerWeights] {
        guard let layersGroup = group.group("layers") else { return [] }
        var layers: [KerasLayerWeights] = []
        for key in layersGroup.childNames() {
            guard let layer = layersGroup.group(key) else { continue }
            let vars = layer.group("vars")
            let name = vars?.stringsAttribute("name")?.first ?? layer.stringsAttribute("name")?.first ?? key
            if layer.isGroup("layers") == true {
                layers += try readKeras3(layer, modelPath: modelPath + [name], path: path)
            }
            guard let vars else { continue }
            let indices = vars.childNames().compactMap { Int($0) }.sorted()
            var arrays: [WeightArray] = []
            for i in indices {
                let (shape, values) = try dataset(vars, String(i), path: path, notNumeric: "\(vars.path)/\(i) is not a numeric dataset")
                arrays.append(WeightArray(name: String(i), shape: shape, values: values))
            }
            if !arrays.isEmpty { layers.append(KerasLayerWeights(name: name, modelPath: modelPath, arrays: arrays)) }
        }
        return layers
    }
}

extension WeightFileError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
