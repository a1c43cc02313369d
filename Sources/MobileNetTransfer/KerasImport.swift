import Foundation
import MobileNetPipeline
import MobileNetIO
import MobileNetModel

/// Errors importing a Keras transfer model. Each names the file.
public enum KerasImportError: Error, Equatable, CustomStringConvertible {
    /// No Dense layer outside the MobileNetV2 base.
    case noHead(path: String)
    /// A Dense layer's arrays are not `[kernel [in, out], bias [out]]`, the layers do not chain,
    /// or the config asks for something this head does not compute (another activation).
    case unsupportedHead(path: String, message: String)
    /// The archive's `config.json` is missing, not JSON, or disagrees with the weights.
    case invalidConfig(path: String, message: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .noHead(let path): return "\(path): no Dense layer outside the MobileNetV2 base; not a transfer-learning classifier"
        case .unsupportedHead(let path, let message): return "\(path): unsupported classifier head (\(message))"
        case .invalidConfig(let path, let message): return "\(path): invalid Keras model config (\(message))"
        }
    }
}

/// A Keras transfer-learning classifier read from a `.keras` archive or a whole-model `.h5`:
/// `Input → MobileNetV2 (include_top=False, possibly fine-tuned) → GlobalAveragePooling2D →
/// Dropout → [Dense(relu) → Dropout →] Dense(classes, softmax)`, as the Keras guide builds it.
///
/// The model's input must be the preprocessed image (`x / 127.5 − 1`), as in the guide when
/// `preprocess_input` is applied outside the model. A hidden Dense is assumed to use ReLU.
public struct KerasTransferModel: Sendable {
    /// The MobileNetV2 base weights (as trained: a fine-tuned base is used as is).
    public var backboneWeights: KerasWeightSet
    /// Width multiplier of the base, read from its layer widths
    /// (``/MobileNetModel/KerasWeightSet/widthMultiplier()``; 1.0 when no official alpha fits,
    /// and then building the network names the first mismatching shape).
    public var alpha: Double { backboneWeights.widthMultiplier() ?? 1.0 }
    /// Input height and width from the model's config (`config.json` of a `.keras` archive, the
    /// `model_config` attribute of a whole-model `.h5`); nil when it records none or a dynamic one.
    public var inputSize: (height: Int, width: Int)?
    /// The Dense head (dropout is the identity at inference).
    public var head: ClassifierHead

    /// Reads the file.
    ///
    /// - Throws: ``/MobileNetIO/WeightFileError`` for an unreadable file, ``/MobileNetModel/ModelError`` when there is no
    ///   MobileNetV2 base, ``KerasImportError`` for a missing or unsupported head.
    public static func read(contentsOf url: URL) throws -> KerasTransferModel {
        let (weights, _) = try KerasWeightFile.read(contentsOf: url)
        return try read(weights: weights, path: url.path, config: try KerasWeightFile.modelConfig(contentsOf: url))
    }

    /// A transfer model from weights already read and the model's config.
    ///
    /// - Parameters:
    ///   - weights: every layer of the file.
    ///   - path: the file, for messages.
    ///   - config: the architecture JSON (``/MobileNetIO/KerasWeightFile/modelConfig(contentsOf:)``);
    ///     when present, the head must agree with it (units, `relu`/`softmax`, average pooling) and
    ///     its input size is used. A `.keras` archive always has one; a whole-model `.h5` too.
    /// - Throws: ``/MobileNetModel/ModelError`` when there is no MobileNetV2 base, ``KerasImportError``.
    public static func read(weights: KerasWeightSet, path: String, config: Data?) throws -> KerasTransferModel {
        let base = try weights.mobileNetV2Part()
        var layers: [HeadLayer] = []
        for layer in weights.layersOutsideMobileNetV2() {
            guard layer.arrays.count == 2, layer.arrays[0].shape.count == 2, layer.arrays[1].shape.count == 1,
                  layer.arrays[0].shape[1] == layer.arrays[1].shape[0] else {
                throw KerasImportError.unsupportedHead(path: path, message: "layer '\(layer.name)' has arrays \(layer.arrays.map(\.shape)); expected a Dense kernel [in, out] and bias [out]")
            }
            let (inputs, outputs) = (layer.arrays[0].shape[0], layer.arrays[0].shape[1])
            if case .dense(let previous)? = layers.last(where: { if case .dense = $0 { return true } else { return false } }), previous.outputs != inputs {
                throw KerasImportError.unsupportedHead(path: path, message: "layer '\(layer.name)' takes \(inputs) inputs after a layer of \(previous.outputs) outputs")
            }
            if !layers.isEmpty { layers.append(.relu) }
            layers.append(.dense(DenseLayer(inputs: inputs, outputs: outputs, kernel: layer.arrays[0].values.map(Double.init), bias: layer.arrays[1].values.map(Double.init))))
        }
        guard !layers.isEmpty else { throw KerasImportError.noHead(path: path) }
        var inputSize: (height: Int, width: Int)?
        if let data = config {
            // The architecture is recorded: honour it, or refuse what this head cannot do.
            guard let config = try? JSONSerialization.jsonObject(with: data) else {
                throw KerasImportError.invalidConfig(path: path, message: "the model config (config.json or the model_config attribute) is not JSON")
            }
            try checkHead(config: config, dense: layers.compactMap { if case .dense(let d) = $0 { d } else { nil } }, path: path)
            inputSize = inputShape(in: config)
        }
        return KerasTransferModel(backboneWeights: base, inputSize: inputSize, head: ClassifierHead(layers: layers))
    }

    /// Every `Dense` layer config of a Keras `config.json`, in order of appearance (outside the
    /// MobileNetV2 base there is no other: the base is built without its top).
    static func denseConfigs(_ value: Any) -> [[String: Any]] {
        if let dict = value as? [String: Any] {
            if dict["class_name"] as? String == "Dense", let config = dict["config"] as? [String: Any] { return [config] }
            return dict.keys.sorted { a, b in
                // Keras keeps layers in a list; dictionary keys are visited in a stable order.
                a < b
            }.flatMap { denseConfigs(dict[$0] as Any) }
        }
        if let array = value as? [Any] { return array.flatMap(denseConfigs) }
        return []
    }

    /// The head's Dense layers must be the config's: the same units, `relu` between them and
    /// `softmax` at the end (what this head computes), and the pooling must be average pooling.
    ///
    /// - Parameters:
    ///   - config: the parsed `config.json`.
    ///   - dense: the head's Dense layers read from the weights, in order.
    ///   - path: the file, for messages.
    /// - Throws: ``KerasImportError`` naming the layer that disagrees.
    public static func checkHead(config: Any, dense: [DenseLayer], path: String) throws(KerasImportError) {
        // The embedding is global average pooling; a model that pools otherwise computes
        // something else.
        func classNames(_ value: Any) -> [String] {
            if let dict = value as? [String: Any] {
                return ((dict["class_name"] as? String).map { [$0] } ?? []) + dict.values.flatMap(classNames)
            }
            if let array = value as? [Any] { return array.flatMap(classNames) }
            return []
        }
        let used = Set(classNames(config))
        for unsupported in ["GlobalMaxPooling2D", "GlobalMaxPool2D", "Flatten"] where used.contains(unsupported) {
            throw .unsupportedHead(path: path, message: "the model uses \(unsupported); this classifier computes GlobalAveragePooling2D → Dropout → Dense")
        }
        let configs = denseConfigs(config)
        guard configs.count == dense.count else {
            throw .invalidConfig(path: path, message: "config.json has \(configs.count) Dense layers, the weights \(dense.count)")
        }
        for (index, (config, layer)) in zip(configs, dense).enumerated() {
            let name = config["name"] as? String ?? "Dense \(index)"
            guard let units = (config["units"] as? NSNumber)?.intValue, units == layer.outputs else {
                throw .invalidConfig(path: path, message: "layer '\(name)' declares \(config["units"].map { "\($0)" } ?? "no") units, its weights have \(layer.outputs) outputs")
            }
            let activation = config["activation"] as? String ?? "linear"
            let expected = index == dense.count - 1 ? "softmax" : "relu"
            guard activation == expected else {
                throw .unsupportedHead(path: path, message: "layer '\(name)' has activation '\(activation)'; this classifier supports \(expected) there")
            }
            if let useBias = config["use_bias"] as? Bool, !useBias {
                throw .unsupportedHead(path: path, message: "layer '\(name)' has use_bias false")
            }
        }
    }

    /// The input height and width recorded in a Keras model config (the first `batch_shape`,
    /// Keras 3, or `batch_input_shape`, tf.keras, of the form `[null, H, W, 3]`), or nil.
    public static func inputShape(in config: Any) -> (height: Int, width: Int)? {
        func search(_ value: Any) -> [Any]? {
            if let dict = value as? [String: Any] {
                for key in ["batch_shape", "batch_input_shape"] {
                    if let shape = dict[key] as? [Any], shape.count == 4 { return shape }
                }
                for key in dict.keys.sorted() { if let found = search(dict[key] as Any) { return found } }
            } else if let array = value as? [Any] {
                for item in array { if let found = search(item) { return found } }
            }
            return nil
        }
        guard let shape = search(config), let h = (shape[1] as? NSNumber)?.intValue, let w = (shape[2] as? NSNumber)?.intValue else { return nil }
        return (h, w)
    }
}

extension KerasImportError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
