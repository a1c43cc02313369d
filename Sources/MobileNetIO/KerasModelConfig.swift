import Foundation

extension KerasWeightFile {
    /// The model's architecture as Keras recorded it in the file, as JSON bytes: `config.json`
    /// of a `.keras` archive, or the root `model_config` attribute of a whole-model `.h5`
    /// (`model.save("x.h5")`, tf.keras and Keras 3's legacy writer). Weight-only files
    /// (`save_weights`, the Keras Applications downloads) record none.
    ///
    /// libhdf5 and the archive reader run in a child process, as for the weights; the JSON may
    /// be at most ``KerasArchive/maximumJSONBytes``.
    ///
    /// - Parameter url: a local Keras file (detected from its first bytes, not its name).
    /// - Returns: the JSON bytes, or nil when an HDF5 file records no architecture.
    /// - Throws: ``WeightFileError`` naming the file: unreadable, damaged, a `.keras` archive without
    ///   `config.json`, or a config over the limit.
    public static func modelConfig(contentsOf url: URL) throws(WeightFileError) -> Data? {
        let path = url.path
        switch try ModelContainer(contentsOf: url) {
        case .zip:
            // Every `.keras` archive records its architecture.
            guard let config = try KerasArchive.member("config.json", of: url, limit: KerasArchive.maximumJSONBytes) else {
                throw .corruptArchive(path: path, reason: "it has no config.json member")
            }
            return config
        case .hdf5: break
        case .json, .tflite, .unknown: throw .unknownFormat(path: path)
        }
        // Child's answer: [0] no attribute, [1] + JSON, [2] too large, [3] not HDF5.
        let limit = Int(KerasArchive.maximumJSONBytes)
        let output = try runInChild(path: path, timeout: 60) {
            guard let root = HDF5Group.open(path: path) else { return Data([3]) }
            guard let text = root.stringsAttribute("model_config")?.first else { return Data([0]) }
            let bytes = Data(text.utf8)
            return bytes.count > limit ? Data([2]) : Data([1]) + bytes
        }
        switch output.first {
        case 0: return nil
        case 1: return Data(output.dropFirst())
        case 2: throw .unreadable(path: path, reason: "its model_config attribute is larger than \(limit >> 20) MiB")
        case 3: throw .corruptHDF5(path: path)
        default: throw .parserCrashed(path: path, reason: "the reader process ended without a result (out of memory?)")
        }
    }
}
