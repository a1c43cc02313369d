import Foundation
import MobileNetKernels

/// Errors raised while building a MobileNetV2 or matching weights to it. Every case names what
/// was received and what was expected; ``description`` is a complete sentence for users.
public enum ModelError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A configuration value Keras would also reject.
    case invalidConfiguration(String)
    /// A layer of the architecture has no weights in the file.
    case missingLayer(layer: String, source: String)
    /// The model has a classifier but the file was saved without one (`include_top=False`).
    case missingClassifier(source: String)
    /// The file has a classifier (`predictions`) but the model was built without the top.
    case unexpectedClassifier(classes: Int, source: String)
    /// The classifier in the file has a different number of classes.
    case classCountMismatch(expected: Int, found: Int, source: String)
    /// The file's layer widths match another width multiplier.
    case alphaMismatch(expected: Double, found: Double, source: String)
    /// A weight has a different shape than the architecture needs.
    case shapeMismatch(layer: String, variable: String, expected: [Int], found: [Int], source: String)
    /// A layer has a different number of weight variables (for example a bias where Keras has none).
    case variableCountMismatch(layer: String, expected: [String], found: [String], source: String)
    /// A weight holds a NaN or infinite value, or a BatchNorm moving variance is negative.
    case invalidWeights(layer: String, variable: String, reason: String, source: String)
    /// The file holds layers the model does not use (strict loading: every weight is used once).
    case unusedLayers([String], source: String)
    /// The same layer name appears twice in the weights.
    case duplicateLayer(String, source: String)
    /// The graph built from the weights could not be executed.
    case graph(GraphError)
    /// The name is not a Keras layer of this network.
    case unknownLayer(String)
    /// The layer exists but its output is not computed on its own (folded into another layer).
    case layerNotTappable(layer: String, reason: String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let message):
            return "invalid MobileNetV2 configuration: \(message)"
        case .missingLayer(let layer, let source):
            return "\(source): no weights for layer '\(layer)'; is this a MobileNetV2 weight file?"
        case .missingClassifier(let source):
            return "\(source): the file has no classifier layer 'predictions' (it was saved with include_top=False); "
                + "build the model without the top (embeddings), or use a weight file with the top"
        case .unexpectedClassifier(let classes, let source):
            return "\(source): the file includes the classifier 'predictions' (\(classes) classes) but the model was built "
                + "without the top; build it with the top, or drop the classifier from the weights first"
        case .classCountMismatch(let expected, let found, let source):
            return "\(source): the classifier 'predictions' has \(found) classes, the model was built for \(expected)"
        case .alphaMismatch(let expected, let found, let source):
            return "\(source): the file was built for alpha \(formatAlpha(found)) (its layer widths match that width "
                + "multiplier), but the model was built with alpha \(formatAlpha(expected))"
        case .shapeMismatch(let layer, let variable, let expected, let found, let source):
            return "\(source): layer '\(layer)' weight '\(variable)' has shape \(found), the model expects \(expected)"
        case .variableCountMismatch(let layer, let expected, let found, let source):
            return "\(source): layer '\(layer)' has weights \(found), the model expects \(expected)"
        case .invalidWeights(let layer, let variable, let reason, let source):
            return "\(source): layer '\(layer)' weight '\(variable)': \(reason); the file is damaged"
        case .unusedLayers(let layers, let source):
            let shown = layers.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            return "\(source): \(layers.count) layer(s) in the file are not part of this model: \(shown)\(layers.count > 5 ? ", ..." : "")"
        case .duplicateLayer(let layer, let source):
            return "\(source): layer '\(layer)' appears more than once"
        case .graph(let error):
            return "cannot execute the network: \(error.description)"
        case .unknownLayer(let name):
            return "'\(name)' is not a layer of this MobileNetV2 (Keras names such as Conv1_relu, block_13_expand_relu, block_2_add, out_relu)"
        case .layerNotTappable(let layer, let reason):
            return "layer '\(layer)' cannot be tapped: \(reason)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}
