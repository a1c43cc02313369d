import Foundation
import MobileNetKernels

/// A classifier head at inference, in Float32: the Dense layers after the pooled embedding, as
/// Keras builds a transfer model's top (`GlobalAveragePooling2D → Dropout → [Dense(relu) →
/// Dropout →] Dense(classes, softmax)`) or the ImageNet top (`predictions`, Dense(1000,
/// softmax)). Dropout is the identity at inference and is not kept.
///
/// One value feeds both places a head runs: appended to the backbone's graph
/// (``MobileNetV2/withHead(_:)``, one pass from pixels to probabilities on any backend) and on
/// embeddings already computed (``probabilities(embeddings:)``, the embedding cache), with the
/// same Float32 weights and the same kernels.
public struct DenseHead: Sendable, Equatable {
    /// What follows a Dense layer (Keras `activation=`).
    public enum Activation: String, Sendable, Hashable, Codable {
        /// No activation (`activation=None` / `"linear"`): logits, for the last layer.
        case linear
        /// `max(x, 0)` (`"relu"`), for a hidden layer.
        case relu
        /// Softmax over the units (`"softmax"`), for the last layer: probabilities.
        case softmax
    }

    /// One Keras `Dense` layer: `y = activation(x · kernel + bias)`.
    public struct Layer: Sendable, Equatable {
        /// The Keras layer name (`predictions`, `dense`, `dense_1`).
        public var name: String
        /// `[inputs, units]`, row-major (the Keras Dense kernel layout).
        public var kernel: Tensor
        /// `[units]`.
        public var bias: [Float]
        /// The activation after the affine map.
        public var activation: Activation

        /// Creates a layer; shapes and values are checked by ``DenseHead/init(layers:source:)``.
        public init(name: String, kernel: Tensor, bias: [Float], activation: Activation) {
            self.name = name
            self.kernel = kernel
            self.bias = bias
            self.activation = activation
        }

        /// Input features.
        public var inputs: Int { kernel.shape.first ?? 0 }
        /// Output units.
        public var units: Int { kernel.shape.last ?? 0 }
    }

    /// The layers, input first; the last one gives the logits (or, with softmax, the probabilities).
    public let layers: [Layer]

    /// A checked head.
    ///
    /// - Parameters:
    ///   - layers: at least one Dense layer; each takes the previous one's units; hidden layers
    ///     are `linear` or `relu`, the last is `linear` or `softmax`.
    ///   - source: the file the weights came from, for messages.
    /// - Throws: ``ModelError/invalidWeights(layer:variable:reason:source:)`` naming the layer:
    ///   a kernel that is not `[inputs, units]`, a bias of another length, layers that do not
    ///   chain, an activation in the wrong place, a NaN or infinite value, or finite weights whose
    ///   outputs can overflow Float for embeddings in 0...6 (either gives the same meaningless
    ///   answer for every image).
    public init(layers: [Layer], source: String) throws(ModelError) {
        guard !layers.isEmpty else { throw .invalidWeights(layer: "head", variable: "kernel", reason: "the head has no Dense layer", source: source) }
        var width: Int?
        for (index, layer) in layers.enumerated() {
            let shape = layer.kernel.shape
            guard shape.count == 2, shape[0] >= 1, shape[1] >= 1 else {
                throw .invalidWeights(layer: layer.name, variable: "kernel", reason: "shape \(shape) is not [inputs, units]", source: source)
            }
            guard layer.bias.count == shape[1] else {
                throw .invalidWeights(layer: layer.name, variable: "bias", reason: "\(layer.bias.count) values for \(shape[1]) units", source: source)
            }
            if let width, width != shape[0] {
                throw .invalidWeights(layer: layer.name, variable: "kernel", reason: "takes \(shape[0]) inputs after a layer of \(width) units", source: source)
            }
            let last = index == layers.count - 1
            if !last && layer.activation == .softmax || last && layer.activation == .relu {
                throw .invalidWeights(layer: layer.name, variable: "activation",
                                      reason: "\(layer.activation.rawValue) is not supported on \(last ? "the last" : "a hidden") layer", source: source)
            }
            if let bad = layer.kernel.scalars.firstIndex(where: { !$0.isFinite }) {
                throw .invalidWeights(layer: layer.name, variable: "kernel", reason: "value \(bad) is \(layer.kernel.scalars[bad])", source: source)
            }
            if let bad = layer.bias.firstIndex(where: { !$0.isFinite }) {
                throw .invalidWeights(layer: layer.name, variable: "bias", reason: "value \(bad) is \(layer.bias[bad])", source: source)
            }
            width = shape[1]
        }
        // Finite weights can still overflow: with every kernel value 3e38, a 1280-input layer's
        // sums pass Float's largest value, and every image gets the same NaN answer. Bound each
        // layer's outputs for inputs in 0...6 (MobileNetV2's pooled ReLU6 embedding), in Double.
        var magnitude = 6.0
        for layer in layers {
            let units = layer.units
            var sums = [Double](repeating: 0, count: units)
            layer.kernel.scalars.withUnsafeBufferPointer { kernel in
                for i in 0..<layer.inputs {
                    for j in 0..<units { sums[j] += Double(abs(kernel[i * units + j])) }
                }
            }
            var largest = 0.0
            for j in 0..<units { largest = max(largest, Double(abs(layer.bias[j])) + magnitude * sums[j]) }
            guard largest <= Double(Float.greatestFiniteMagnitude) else {
                throw .invalidWeights(layer: layer.name, variable: "kernel",
                                      reason: "its outputs can reach \(largest), beyond Float's range, for embeddings in 0...6", source: source)
            }
            magnitude = largest
        }
        self.layers = layers
    }

    /// The embedding width the head takes (1280 for MobileNetV2 at alpha <= 1).
    public var inputWidth: Int { layers[0].inputs }
    /// The number of classes: the last layer's units.
    public var classes: Int { layers[layers.count - 1].units }
    /// Whether the last layer applies softmax (Keras `classifier_activation="softmax"`).
    public var endsWithSoftmax: Bool { layers[layers.count - 1].activation == .softmax }
    /// The trainable parameters: every kernel and bias value.
    public var parameterCount: Int { layers.reduce(0) { $0 + $1.kernel.scalars.count + $1.bias.count } }

    /// Class probabilities of embeddings already computed, with the reference kernels the
    /// graph's nodes use on the reference backend.
    ///
    /// - Parameter embeddings: `[N, inputWidth]`, pooled embeddings (0...6 for MobileNetV2).
    /// - Returns: `[N, classes]`, each row in 0...1 summing to 1 (softmax of the logits when the
    ///   last layer is linear).
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` when `embeddings` is not `[N, inputWidth]`.
    public func probabilities(embeddings: Tensor) throws(ModelError) -> Tensor {
        guard embeddings.rank == 2, embeddings.shape[1] == inputWidth else {
            throw .invalidConfiguration("the head takes [N, \(inputWidth)] embeddings, got \(embeddings.shape)")
        }
        var x = embeddings
        for layer in layers {
            x = ReferenceKernels.dense(x, DenseParameters(kernel: layer.kernel, bias: layer.bias))
            if layer.activation == .relu { x = ReferenceKernels.relu(x) }
        }
        return ReferenceKernels.softmax(x)
    }
}
