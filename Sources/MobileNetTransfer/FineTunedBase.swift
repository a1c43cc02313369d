import Foundation
import MobileNetModel
import MobileNetStore
import MobileNetTraining

/// One weight array of a model file, stored compactly: the values as little-endian IEEE 754
/// float32, base64-encoded, with the SHA-256 of those bytes.
public struct EncodedWeightArray: Sendable, Equatable, Codable {
    /// The Keras variable name (`kernel`, `depthwise_kernel`, `gamma`, `moving_mean`, ...).
    public var name: String
    /// The Keras shape (row-major, Keras layout).
    public var shape: [Int]
    /// Base64 of `shape.product * 4` bytes, little-endian float32.
    public var float32LE: String
    /// SHA-256 (hex) of the decoded bytes.
    public var sha256: String

    /// The most values one array may hold (2^28, as for weight files).
    public static let maximumCount = 1 << 28

    /// Encodes an array.
    public init(_ array: WeightArray) {
        var bytes = Data(capacity: array.values.count * 4)
        for value in array.values { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        name = array.name
        shape = array.shape
        float32LE = bytes.base64EncodedString()
        sha256 = SHA256.hex(bytes)
    }

    /// The decoded bytes, checked (size, hash).
    func bytes(layer: String) throws(FineTunedBaseError) -> Data {
        guard shape.allSatisfy({ $0 >= 0 && $0 <= Self.maximumCount }),
              let count = shape.reduce(Optional(1), { acc, d in acc.flatMap { $0.multipliedReportingOverflow(by: d).overflow ? nil : $0 * d } }),
              count <= Self.maximumCount else {
            throw .invalidArray(layer: layer, variable: name, problem: "shape \(shape) is too large")
        }
        guard let data = Data(base64Encoded: float32LE) else { throw .invalidArray(layer: layer, variable: name, problem: "float32LE is not base64") }
        guard data.count == count * 4 else {
            throw .invalidArray(layer: layer, variable: name, problem: "\(data.count) bytes for shape \(shape) (\(count * 4) expected)")
        }
        guard SHA256.hex(data) == sha256.lowercased() else { throw .invalidArray(layer: layer, variable: name, problem: "SHA-256 does not match the values") }
        return data
    }

    /// The decoded array.
    ///
    /// - Throws: ``FineTunedBaseError/invalidArray(layer:variable:problem:)`` for bad base64, a
    ///   size that does not fit the shape, a wrong hash or a NaN or infinite value.
    public func decoded(layer: String) throws(FineTunedBaseError) -> WeightArray {
        let data = try bytes(layer: layer)
        var values = [Float](repeating: 0, count: data.count / 4)
        data.withUnsafeBytes { raw in
            for i in values.indices { values[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))) }
        }
        guard values.allSatisfy(\.isFinite) else { throw .invalidArray(layer: layer, variable: name, problem: "NaN or infinite values") }
        return WeightArray(name: name, shape: shape, values: values)
    }
}

/// One fine-tuned layer's arrays, in Keras's variable order.
public struct EncodedLayer: Sendable, Equatable, Codable {
    /// The Keras layer name.
    public var name: String
    /// Its arrays.
    public var arrays: [EncodedWeightArray]
}

/// A damaged fine-tuned section of a model file.
public enum FineTunedBaseError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// An array does not decode.
    case invalidArray(layer: String, variable: String, problem: String)
    /// The layers do not fit the base (an unknown layer, another shape), or the hash of all
    /// layers does not match.
    case inconsistent(String)

    public var description: String {
        switch self {
        case .invalidArray(let layer, let variable, let problem): "fine-tuned layer '\(layer)' \(variable): \(problem)"
        case .inconsistent(let message): "fine-tuned layers: \(message)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// What phase 2 changed, as a model file stores it: the fine-tuned layers of the base
/// (`base_model.layers[fineTuneAt:]`, every variable, BatchNorm statistics included) — never
/// the frozen part, which stays in the base weight file the model file identifies by SHA-256 —
/// with the settings and history of the fine-tuning run. The head of the model file is the
/// fine-tuned head.
public struct FineTunedBase: Sendable, Equatable, Codable {
    /// Keras's fine-tune point: layers from this index on were trained.
    public var fineTuneAt: Int
    /// The name of the first trained layer (`layers[fineTuneAt]`; nil when only the head was).
    public var firstLayer: String?
    /// The settings.
    public var settings: FineTuningSettings
    /// The optimiser that was used (with its learning rate).
    public var optimizer: OptimizerSettings
    /// Per-epoch metrics of phase 2 (epochs numbered from 1).
    public var history: [EpochRecord]
    /// The phase-2 epoch whose weights were kept.
    public var bestEpoch: Int
    /// Validation metrics of the head alone, before fine-tuning.
    public var headOnlyValidation: EvaluationReport?
    /// The fine-tuned layers in Keras order.
    public var layers: [EncodedLayer]
    /// SHA-256 (hex) over every array's ``EncodedWeightArray/sha256`` in order: the identity of
    /// the fine-tuned weights (part of the embedding cache key).
    public var weightsSHA256: String

    /// Encodes the fine-tuned layers of `weights` (its `predictions` layer, the head, is left out).
    public init(fineTuneAt: Int, firstLayer: String?, settings: FineTuningSettings, optimizer: OptimizerSettings, history: [EpochRecord],
                bestEpoch: Int, headOnlyValidation: EvaluationReport?, weights: KerasWeightSet) {
        self.fineTuneAt = fineTuneAt
        self.firstLayer = firstLayer
        self.settings = settings
        self.optimizer = optimizer
        self.history = history
        self.bestEpoch = bestEpoch
        self.headOnlyValidation = headOnlyValidation
        layers = weights.layers.filter { $0.name != "predictions" }.map { EncodedLayer(name: $0.name, arrays: $0.arrays.map(EncodedWeightArray.init)) }
        weightsSHA256 = Self.digest(layers)
    }

    static func digest(_ layers: [EncodedLayer]) -> String {
        var hash = SHA256()
        for layer in layers {
            hash.update(Data("\(layer.name)\n".utf8))
            for array in layer.arrays { hash.update(Data("\(array.name) \(array.shape) \(array.sha256)\n".utf8)) }
        }
        return hash.hexDigest()
    }

    /// The base weights with the fine-tuned layers replaced (each replaced layer's arrays by
    /// Keras name in Keras's order).
    ///
    /// - Parameter base: the MobileNetV2 layers of the base weight file.
    /// - Throws: ``FineTunedBaseError`` for a damaged array, a layer the base does not have, or
    ///   a hash that does not match.
    public func applied(to base: KerasWeightSet) throws(FineTunedBaseError) -> KerasWeightSet {
        guard Self.digest(layers) == weightsSHA256 else { throw .inconsistent("weightsSHA256 does not match the layers") }
        try checkCoverage()
        var replaced = base
        for layer in layers {
            guard let index = replaced.layers.firstIndex(where: { $0.name == layer.name }) else {
                throw .inconsistent("the base has no layer '\(layer.name)'")
            }
            let arrays = try layer.arrays.map { array throws(FineTunedBaseError) in try array.decoded(layer: layer.name) }
            let old = replaced.layers[index]
            guard old.arrays.map(\.shape) == arrays.map(\.shape) else {
                throw .inconsistent("layer '\(layer.name)' has shapes \(arrays.map(\.shape)), the base \(old.arrays.map(\.shape))")
            }
            replaced.layers[index] = KerasLayerWeights(name: old.name, modelPath: old.modelPath, arrays: arrays)
        }
        replaced.source = "\(base.source) with \(layers.count) fine-tuned layers"
        return replaced
    }

    /// The layers must be exactly the base's layers with weights from ``fineTuneAt`` on, each
    /// once, and ``firstLayer`` the name of `layers[fineTuneAt]`: a file with a layer left out
    /// (which would silently keep the base's weights for it), a layer twice or another fine-tune
    /// point is refused. Layer names and which layers have weights are the same at every alpha
    /// and input size, so the standard architecture gives them.
    func checkCoverage() throws(FineTunedBaseError) {
        let architecture: [LayerSpec]
        do {
            architecture = try MobileNetV2Architecture.layers(for: MobileNetV2Configuration(alpha: 1.0, inputHeight: 224, inputWidth: 224,
                                                                                           includeTop: false, pooling: nil))
        } catch {
            throw .inconsistent("the MobileNetV2 layer list: \(error)")
        }
        guard (0...architecture.count).contains(fineTuneAt) else {
            throw .inconsistent("fineTuneAt \(fineTuneAt) is not in 0...\(architecture.count)")
        }
        let first = fineTuneAt < architecture.count ? architecture[fineTuneAt].name : nil
        guard firstLayer == first else {
            throw .inconsistent("firstLayer is \(firstLayer.map { "'\($0)'" } ?? "missing"), but layer \(fineTuneAt) is \(first.map { "'\($0)'" } ?? "none")")
        }
        let expected = architecture[fineTuneAt...].filter { !$0.weights.isEmpty }.map(\.name)
        let names = layers.map(\.name)
        if let duplicate = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw .inconsistent("layer '\(duplicate)' is given more than once")
        }
        let missing = expected.filter { !names.contains($0) }
        guard missing.isEmpty else {
            throw .inconsistent("fine-tuned from layer \(fineTuneAt), but \(missing.count) of its layers with weights are missing (\(missing.prefix(3).map { "'\($0)'" }.joined(separator: ", ")))")
        }
        if let extra = names.first(where: { !expected.contains($0) }) {
            throw .inconsistent("layer '\(extra)' is below the fine-tune point \(fineTuneAt) or not a MobileNetV2 layer with weights")
        }
    }

    /// The identity of the fine-tuned base: the base identity with a weights hash that covers
    /// the fine-tuned layers too (so cached embeddings of the plain base are never reused).
    public func identity(base: BackboneIdentity) -> BackboneIdentity {
        var identity = base
        identity.weightsSHA256 = SHA256.hex(Data("\(base.weightsSHA256)+finetuned:\(weightsSHA256)".utf8))
        return identity
    }
}
