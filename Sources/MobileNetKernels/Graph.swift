import Foundation

/// Explicit zero padding of the two spatial dimensions, in pixels.
///
/// TensorFlow's `SAME` padding and Keras's `ZeroPadding2D` both become one of these, so that
/// kernels never guess: see ``Padding/same(inputHeight:inputWidth:kernelSize:stride:)``.
public struct Padding: Sendable, Hashable, Codable {
    /// Rows of zeros above, below, and columns left and right of the input.
    public var top: Int, bottom: Int, left: Int, right: Int

    /// Creates a padding from its four sides, each at least 0.
    public init(top: Int, bottom: Int, left: Int, right: Int) {
        precondition(top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "negative padding")
        (self.top, self.bottom, self.left, self.right) = (top, bottom, left, right)
    }

    /// No padding (`padding="valid"`).
    public static let valid = Padding(top: 0, bottom: 0, left: 0, right: 0)

    /// TensorFlow's `SAME` padding for one spatial dimension: the output has
    /// `ceil(input / stride)` positions and the total padding
    /// `max((output - 1) * stride + kernel - input, 0)` is split with the smaller half first.
    public static func same(inputHeight: Int, inputWidth: Int, kernelSize: Int, stride: Int) -> Padding {
        func split(_ size: Int) -> (Int, Int) {
            let output = (size + stride - 1) / stride
            let total = max((output - 1) * stride + kernelSize - size, 0)
            return (total / 2, total - total / 2)
        }
        let (t, b) = split(inputHeight), (l, r) = split(inputWidth)
        return Padding(top: t, bottom: b, left: l, right: r)
    }
}

/// An element-wise activation fused into the preceding operation.
public enum FusedActivation: String, Sendable, Hashable, Codable {
    /// Identity (a linear layer, such as a `*_project` convolution or logits).
    case none
    /// `min(max(x, 0), 6)`: Keras `ReLU(6.0)`, the nonlinearity of MobileNetV2 (paper section 3.2).
    case relu6
}

/// A convolution over NHWC activations: `Conv2D` (dense) or `DepthwiseConv2D` (one filter per
/// channel, depth multiplier 1).
public struct ConvolutionParameters: Sendable, Equatable {
    /// Dense: `[kernelHeight, kernelWidth, inputChannels, outputChannels]` (HWIO, Keras layout).
    /// Depthwise: `[kernelHeight, kernelWidth, channels, 1]` (Keras layout).
    public var kernel: Tensor
    /// One bias per output channel (after BatchNorm folding it holds the folded shift).
    public var bias: [Float]
    /// Step between output positions, the same in both spatial dimensions.
    public var stride: Int
    /// Explicit zero padding applied before a `valid` convolution.
    public var padding: Padding
    /// The activation applied to the result.
    public var activation: FusedActivation

    /// Creates convolution parameters; shapes are checked by ``Graph/validate()``.
    public init(kernel: Tensor, bias: [Float], stride: Int, padding: Padding, activation: FusedActivation) {
        self.kernel = kernel
        self.bias = bias
        self.stride = stride
        self.padding = padding
        self.activation = activation
    }
}

/// Inference-mode BatchNormalization, kept unfolded: `gamma * (x - mean) / sqrt(variance + epsilon) + beta`
/// per channel (Keras `BatchNormalization` with `training=False`).
public struct BatchNormParameters: Sendable, Equatable {
    /// Per-channel scale, shift, moving mean and moving variance.
    public var gamma: [Float], beta: [Float], movingMean: [Float], movingVariance: [Float]
    /// Added to the variance; Keras MobileNetV2 uses 1e-3.
    public var epsilon: Float

    /// Creates BatchNorm parameters; all four arrays have one value per channel.
    public init(gamma: [Float], beta: [Float], movingMean: [Float], movingVariance: [Float], epsilon: Float) {
        self.gamma = gamma
        self.beta = beta
        self.movingMean = movingMean
        self.movingVariance = movingVariance
        self.epsilon = epsilon
    }
}

/// A fully connected layer: `y = x · kernel + bias`, `kernel` of shape `[inputFeatures, outputFeatures]`.
public struct DenseParameters: Sendable, Equatable {
    /// `[inputFeatures, outputFeatures]`, the Keras `Dense` layout.
    public var kernel: Tensor
    /// `[outputFeatures]`.
    public var bias: [Float]

    /// Creates dense parameters; shapes are checked by ``Graph/validate()``.
    public init(kernel: Tensor, bias: [Float]) {
        self.kernel = kernel
        self.bias = bias
    }
}

/// One operation of an inference graph.
public enum Operation: Sendable, Equatable {
    /// Dense 2-D convolution, NHWC in and out.
    case conv2D(ConvolutionParameters)
    /// Depthwise 2-D convolution (depth multiplier 1), NHWC in and out.
    case depthwiseConv2D(ConvolutionParameters)
    /// Unfolded inference BatchNorm over the last (channel) dimension.
    case batchNorm(BatchNormParameters)
    /// Stand-alone `min(max(x, 0), 6)`.
    case relu6
    /// Element-wise sum of two inputs of the same shape (residual connection).
    case add
    /// Mean over height and width: `[N, H, W, C]` to `[N, C]` (Keras `GlobalAveragePooling2D`).
    case globalAveragePool
    /// Maximum over height and width: `[N, H, W, C]` to `[N, C]` (Keras `GlobalMaxPooling2D`).
    case globalMaxPool
    /// `[N, inputFeatures]` to `[N, outputFeatures]`.
    case dense(DenseParameters)
    /// Softmax over the last dimension, computed as `exp(x - max) / sum` like Keras.
    case softmax
    /// `max(x, 0)`: Keras `Dense(..., activation="relu")` of a classifier head's hidden layer.
    case relu
}

/// A node of a ``Graph``: an operation, its inputs, and the Keras layer name it implements
/// (for a fused node, the name of its main layer, such as `block_1_depthwise`).
public struct Node: Sendable, Equatable {
    /// The Keras layer name, used in error messages and summaries.
    public var name: String
    /// What the node computes.
    public var operation: Operation
    /// Indices of earlier nodes whose outputs feed this one; ``Graph/inputIndex`` is the
    /// graph's input.
    public var inputs: [Int]

    /// Creates a node.
    public init(name: String, operation: Operation, inputs: [Int]) {
        self.name = name
        self.operation = operation
        self.inputs = inputs
    }
}

/// A feed-forward inference graph over NHWC tensors, in topological order, with one or more
/// outputs. The graph is the seam between a model and a backend: models build graphs, backends
/// execute them (see ``InferenceBackend``).
public struct Graph: Sendable, Equatable {
    /// The index that denotes the graph input in ``Node/inputs``.
    public static let inputIndex = -1

    /// The shape of one input example, `[height, width, channels]`; the batch size is free.
    public var inputShape: [Int]
    /// The nodes in topological order.
    public var nodes: [Node]
    /// The nodes whose values an executor returns, in this order (``Graph/inputIndex`` returns
    /// the input itself). By default the last node.
    public var outputs: [Int]

    /// Creates a graph.
    ///
    /// - Parameters:
    ///   - inputShape: the shape of one input example, `[height, width, channels]` (no batch
    ///     dimension).
    ///   - nodes: the nodes in topological order; ``Graph/inputIndex`` in ``Node/inputs``
    ///     denotes the graph input.
    ///   - outputs: the nodes returned by executors, in order; `nil` for the last node (the
    ///     input itself when `nodes` is empty).
    public init(inputShape: [Int], nodes: [Node], outputs: [Int]? = nil) {
        self.inputShape = inputShape
        self.nodes = nodes
        self.outputs = outputs ?? (nodes.isEmpty ? [Graph.inputIndex] : [nodes.count - 1])
    }

    /// The smallest graph that computes `outputs` (node indices of this graph): the nodes they
    /// depend on, in the same order, renumbered. Outputs are returned in the given order.
    ///
    /// - Throws: ``GraphError/invalidInput(node:input:)`` when an index is not a node of this graph.
    public func subgraph(outputs: [Int]) throws(GraphError) -> Graph {
        let needed = Set(try nodesNeeded(by: outputs))
        var renumbered = [Int](repeating: Graph.inputIndex, count: nodes.count)
        var kept: [Node] = []
        for (index, node) in nodes.enumerated() where needed.contains(index) {
            var copy = node
            copy.inputs = node.inputs.map { $0 >= 0 ? renumbered[$0] : $0 }
            renumbered[index] = kept.count
            kept.append(copy)
        }
        return Graph(inputShape: inputShape, nodes: kept, outputs: outputs.map { $0 >= 0 ? renumbered[$0] : $0 })
    }

    /// The indices of the nodes `outputs` depend on (themselves included), in order: the nodes
    /// ``subgraph(outputs:)`` keeps, node `i` of the subgraph being the `i`-th of them.
    ///
    /// - Throws: ``GraphError/invalidInput(node:input:)`` when an index is not a node of this graph.
    public func nodesNeeded(by outputs: [Int]) throws(GraphError) -> [Int] {
        var needed = [Bool](repeating: false, count: nodes.count)
        var stack: [Int] = []
        for output in outputs {
            guard output == Graph.inputIndex || nodes.indices.contains(output) else { throw .invalidInput(node: "output", input: output) }
            if output >= 0 { stack.append(output) }
        }
        while let index = stack.popLast() {
            guard !needed[index] else { continue }
            needed[index] = true
            for input in nodes[index].inputs where input >= 0 { stack.append(input) }
        }
        return nodes.indices.filter { needed[$0] }
    }

    /// The output shape of every node for one example (no batch dimension).
    ///
    /// - Throws: ``GraphError`` when an input index is out of order or shapes do not fit.
    public func validate() throws(GraphError) -> [[Int]] {
        guard !outputs.isEmpty else { throw .invalidInput(node: "outputs", input: Graph.inputIndex) }
        for output in outputs where !(output == Graph.inputIndex || nodes.indices.contains(output)) {
            throw .invalidInput(node: "outputs", input: output)
        }
        var shapes: [[Int]] = []
        for (index, node) in nodes.enumerated() {
            var inputs: [[Int]] = []
            for i in node.inputs {
                guard i == Graph.inputIndex || (i >= 0 && i < index) else {
                    throw .invalidInput(node: node.name, input: i)
                }
                inputs.append(i == Graph.inputIndex ? inputShape : shapes[i])
            }
            shapes.append(try Self.outputShape(of: node, inputs: inputs))
        }
        return shapes
    }

    static func outputShape(of node: Node, inputs: [[Int]]) throws(GraphError) -> [Int] {
        func fail(_ reason: String) -> GraphError { .shapeMismatch(node: node.name, reason: reason) }
        switch node.operation {
        case .add:
            guard inputs.count == 2, inputs[0] == inputs[1] else { throw fail("add needs two inputs of one shape, got \(inputs)") }
            return inputs[0]
        default:
            guard inputs.count == 1 else { throw fail("expected one input, got \(inputs.count)") }
        }
        let x = inputs[0]
        switch node.operation {
        case .conv2D(let p), .depthwiseConv2D(let p):
            guard x.count == 3 else { throw fail("convolution needs [H, W, C] input, got \(x)") }
            let k = p.kernel.shape
            guard k.count == 4, p.stride >= 1 else { throw fail("kernel shape \(k), stride \(p.stride)") }
            let isDepthwise: Bool
            if case .depthwiseConv2D = node.operation { isDepthwise = true } else { isDepthwise = false }
            guard k[2] == x[2], !isDepthwise || k[3] == 1 else { throw fail("kernel \(k) does not fit input channels \(x[2])") }
            let outChannels = isDepthwise ? x[2] : k[3]
            guard p.bias.count == outChannels else { throw fail("bias has \(p.bias.count) values for \(outChannels) channels") }
            let h = x[0] + p.padding.top + p.padding.bottom - k[0]
            let w = x[1] + p.padding.left + p.padding.right - k[1]
            guard h >= 0, w >= 0 else { throw fail("input \(x) is smaller than the kernel \(k) after padding") }
            return [h / p.stride + 1, w / p.stride + 1, outChannels]
        case .batchNorm(let p):
            let c = x.last ?? 0
            guard p.gamma.count == c, p.beta.count == c, p.movingMean.count == c, p.movingVariance.count == c else {
                throw fail("BatchNorm parameters do not have \(c) channels")
            }
            return x
        case .relu6, .softmax, .relu:
            return x
        case .globalAveragePool, .globalMaxPool:
            guard x.count == 3 else { throw fail("pooling needs [H, W, C] input, got \(x)") }
            return [x[2]]
        case .dense(let p):
            guard x.count == 1, p.kernel.shape.count == 2, p.kernel.shape[0] == x[0], p.bias.count == p.kernel.shape[1] else {
                throw fail("dense kernel \(p.kernel.shape) and bias \(p.bias.count) do not fit input \(x)")
            }
            return [p.kernel.shape[1]]
        case .add:
            return x
        }
    }
}

/// A graph that cannot be executed as built.
public enum GraphError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A node refers to an input that is not an earlier node.
    case invalidInput(node: String, input: Int)
    /// A node's parameters or inputs have shapes that do not fit.
    case shapeMismatch(node: String, reason: String)
    /// A tensor fed to the graph has the wrong shape.
    case inputShape(expected: [Int], got: [Int])

    public var description: String {
        switch self {
        case .invalidInput(let node, let input): "node \(node): input \(input) is not an earlier node"
        case .shapeMismatch(let node, let reason): "node \(node): \(reason)"
        case .inputShape(let expected, let got): "input tensor has shape \(got), expected [N] + \(expected) (NHWC)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// Executes a prepared graph. Implementations are safe to call from several threads at once.
public protocol GraphExecutor: Sendable {
    /// Runs the graph on a batch.
    ///
    /// - Parameter input: `[N] + graph.inputShape`, `N >= 1` (NHWC for images).
    /// - Returns: one tensor per ``Graph/outputs``, in that order, each `[N] + outputShape`.
    /// - Throws: ``GraphError/inputShape(expected:got:)`` when `input` does not fit.
    func run(_ input: Tensor) throws -> [Tensor]
}

/// A way of executing graphs: the seam where the plain-Swift reference kernels and faster
/// backends plug in. A backend may reorder weights and plan buffers once in
/// ``makeExecutor(for:)``.
public protocol InferenceBackend: Sendable {
    /// A short name for logs and the CLI, such as `reference`.
    var name: String { get }
    /// Prepares `graph` for execution.
    ///
    /// - Throws: ``GraphError`` when the graph is invalid, or a backend-specific error.
    func makeExecutor(for graph: Graph) throws -> any GraphExecutor
    /// The threads it runs a graph on, when it has a pool of its own (oneDNN's); nil otherwise.
    /// A model file with its own kernels (a quantized `.tflite` on XNNPACK) sizes its pool by it.
    var threadCount: Int? { get }
}

extension InferenceBackend {
    /// No pool of its own (the reference backend runs on the calling thread).
    public var threadCount: Int? { nil }
}
