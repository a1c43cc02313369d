import Foundation
import MobileNetPipeline
import MobileNetIO
import MobileNetModel
import ZIPFoundation

/// Errors importing a Keras transfer model. Each names the file.
public enum KerasImportError: Error, Equatable, CustomStringConvertible {
    /// No Dense layer outside the MobileNetV2 base.
    case noHead(path: String)
    /// A Dense layer's arrays are not `[kernel [in, out], bias [out]]`, or the layers do not chain.
    case unsupportedHead(path: String, message: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .noHead(let path): return "\(path): no Dense layer outside the MobileNetV2 base; not a transfer-learning classifier"
        case .unsupportedHead(let path, let message): return "\(path): unsupported classifier head (\(message))"
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
    /// Width multiplier of the base, found from its weight shapes.
    public var alpha: Double
    /// Input height and width from the archive's `config.json` (nil for `.h5`).
    public var inputSize: (height: Int, width: Int)?
    /// The Dense head (dropout is the identity at inference).
    public var head: ClassifierHead

    /// Reads the file.
    ///
    /// - Throws: ``/MobileNetIO/WeightFileError`` for an unreadable file, ``/MobileNetModel/ModelError`` when there is no
    ///   MobileNetV2 base, ``KerasImportError`` for a missing or unsupported head.
    public static func read(contentsOf url: URL) throws -> KerasTransferModel {
        let weights = try KerasWeightFile.read(contentsOf: url).weights
        let base = try weights.mobileNetV2Part()
        var alpha = 1.0
        do {
            _ = try MobileNetV2.makeGraph(configuration: MobileNetV2Configuration(alpha: 1.0, inputHeight: 32, inputWidth: 32, includeTop: false),
                                          weights: base.droppingClassifier(), foldBatchNorm: false)
        } catch {
            let modelError: ModelError = error
            guard case .alphaMismatch(_, let found, _) = modelError else { throw modelError }
            alpha = found
        }
        var layers: [HeadLayer] = []
        for layer in weights.layersOutsideMobileNetV2() {
            guard layer.arrays.count == 2, layer.arrays[0].shape.count == 2, layer.arrays[1].shape.count == 1,
                  layer.arrays[0].shape[1] == layer.arrays[1].shape[0] else {
                throw KerasImportError.unsupportedHead(path: url.path, message: "layer '\(layer.name)' has arrays \(layer.arrays.map(\.shape)); expected a Dense kernel [in, out] and bias [out]")
            }
            let (inputs, outputs) = (layer.arrays[0].shape[0], layer.arrays[0].shape[1])
            if case .dense(let previous)? = layers.last(where: { if case .dense = $0 { return true } else { return false } }), previous.outputs != inputs {
                throw KerasImportError.unsupportedHead(path: url.path, message: "layer '\(layer.name)' takes \(inputs) inputs after a layer of \(previous.outputs) outputs")
            }
            if !layers.isEmpty { layers.append(.relu) }
            layers.append(.dense(DenseLayer(inputs: inputs, outputs: outputs, kernel: layer.arrays[0].values.map(Double.init), bias: layer.arrays[1].values.map(Double.init))))
        }
        guard !layers.isEmpty else { throw KerasImportError.noHead(path: url.path) }
        return KerasTransferModel(backboneWeights: base, alpha: alpha, inputSize: try? archiveInputSize(url), head: ClassifierHead(layers: layers))
    }

    /// The input height and width recorded in a `.keras` archive's `config.json` (the first
    /// `batch_shape` `[null, H, W, 3]`), or nil.
    static func archiveInputSize(_ url: URL) throws -> (height: Int, width: Int)? {
        let archive = try Archive(url: url, accessMode: .read)
        guard let entry = archive["config.json"] else { return nil }
        var data = Data()
        _ = try archive.extract(entry) { data.append($0) }
        func search(_ value: Any) -> [Any]? {
            if let dict = value as? [String: Any] {
                if let shape = dict["batch_shape"] as? [Any], shape.count == 4 { return shape }
                for key in dict.keys.sorted() { if let found = search(dict[key] as Any) { return found } }
            } else if let array = value as? [Any] {
                for item in array { if let found = search(item) { return found } }
            }
            return nil
        }
        guard let shape = search(try JSONSerialization.jsonObject(with: data)),
              let h = (shape[1] as? NSNumber)?.intValue, let w = (shape[2] as? NSNumber)?.intValue else { return nil }
        return (h, w)
    }
}

extension KerasImportError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
