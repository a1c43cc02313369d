import MobileNetKernels
import MobileNetOneDNN

/// MobileNetV2 (Sandler et al., arXiv:1801.04381) with Keras Applications semantics:
/// the same architecture, layer names and numbers as `keras.applications.MobileNetV2`.
///
/// Input: a batch `[N, H, W, 3]` (NHWC, RGB) preprocessed the Keras "tf" way, pixel values
/// 0...255 mapped to -1...1 by `x / 127.5 - 1`. Output per example, depending on the
/// configuration:
/// - with the top: `[classes]` probabilities (softmax; each row sums to 1) or logits;
/// - without the top and with pooling: the `[C]` embedding (`C` = 1280 for alpha <= 1),
///   the output of the last ReLU6 pooled, values in 0...6;
/// - without either: the `[ceil(H/32), ceil(W/32), C]` feature map.
///
/// BatchNorm is folded into the preceding convolution when the model is built, and ReLU6 is
/// fused into it; ``makeGraph(configuration:weights:foldBatchNorm:)`` can also build the
/// unfolded, layer-by-layer graph for checks. The model is immutable and safe to share between
/// threads.
public final class MobileNetV2: Sendable {
    /// The hyper-parameters.
    public let configuration: MobileNetV2Configuration
    /// The Keras layers, in order.
    public let layers: [LayerSpec]
    /// The inference graph (BatchNorm folded, activations fused).
    public let graph: Graph
    /// The backend that executes the graph.
    public let backendName: String
    private let executor: any GraphExecutor

    /// Builds the network and loads `weights` strictly: every layer with weights must be
    /// present with exactly the Keras shapes, and every layer of `weights` must be used.
    ///
    /// - Parameters:
    ///   - configuration: alpha, input size, top, pooling, classes, classifier activation.
    ///   - weights: the MobileNetV2 layers (use ``KerasWeightSet/mobileNetV2Part()`` for a
    ///     model nested in a larger one).
    ///   - backend: the kernels that run the graph: oneDNN (``MobileNetOneDNN/OneDNNBackend``, all
    ///     cores) by default; pass ``ReferenceBackend`` for the plain-Swift oracle kernels.
    /// - Throws: ``ModelError``: an invalid configuration, a missing or unused layer, a shape
    ///   mismatch (naming the layer and both shapes), weights built for another alpha or with a
    ///   different top; the backend's own error (such as ``MobileNetOneDNN/OneDNNError``) when it
    ///   cannot prepare the graph.
    public init(configuration: MobileNetV2Configuration, weights: KerasWeightSet, backend: any InferenceBackend = OneDNNBackend()) throws {
        self.configuration = configuration
        self.layers = try MobileNetV2Architecture.layers(for: configuration)
        self.graph = try Self.makeGraph(configuration: configuration, weights: weights, foldBatchNorm: true)
        self.backendName = backend.name
        do {
            self.executor = try backend.makeExecutor(for: graph)
        } catch let error as GraphError {
            throw ModelError.graph(error.description)
        }
    }

    /// Runs the network on a batch.
    ///
    /// - Parameter input: `[N, inputHeight, inputWidth, 3]`, NHWC, preprocessed to -1...1.
    /// - Returns: `[N, classes]`, `[N, C]` or `[N, h, w, C]` (see the type's discussion).
    /// - Throws: ``MobileNetKernels/GraphError/inputShape(expected:got:)`` for a wrongly shaped input.
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try executor.run(input)
    }

    /// The Keras-style summary: layer, type, output shape and parameter count.
    public var summary: ModelSummary { ModelSummary(modelName: configuration.kerasModelName, layers: layers) }

    /// Builds the inference graph for `configuration` from `weights`, validating them strictly.
    ///
    /// - Parameter foldBatchNorm: fold every BatchNorm into its convolution
    ///   (`kernel * gamma / sqrt(var + eps)`, bias `beta - mean * gamma / sqrt(var + eps)`) and
    ///   fuse ReLU6; `false` keeps one graph node per Keras layer.
    /// - Throws: ``ModelError`` as ``init(configuration:weights:backend:)`` describes.
    public static func makeGraph(configuration: MobileNetV2Configuration, weights: KerasWeightSet, foldBatchNorm: Bool) throws(ModelError) -> Graph {
        let layers = try MobileNetV2Architecture.layers(for: configuration)
        let matched = try WeightMatcher(configuration: configuration, layers: layers, weights: weights).match()

        var nodes: [Node] = []
        var index: [String: Int] = ["input_layer": Graph.inputIndex]
        var shapes: [String: [Int]] = [:]
        var pendingPadding: [String: (source: String, padding: Padding)] = [:]
        var consumers: [String: Int] = [:]
        for layer in layers { for i in layer.inputs { consumers[i, default: 0] += 1 } }

        func kernelTensor(_ layer: LayerSpec, _ i: Int) -> Tensor {
            Tensor(shape: layer.weights[i].shape, scalars: matched[layer.name]![i])
        }

        for layer in layers {
            shapes[layer.name] = layer.outputShape
            let input = layer.inputs.first ?? ""
            switch layer.kind {
            case .input:
                continue
            case .zeroPadding(let padding):
                pendingPadding[layer.name] = (input, padding)
                continue
            case .conv2D(_, let k, let stride), .depthwiseConv2D(let k, let stride, _):
                var source = input
                var padding: Padding
                if let pad = pendingPadding[input] {
                    source = pad.source
                    padding = pad.padding
                } else {
                    let inShape = shapes[input]!
                    padding = .valid
                    if case .depthwiseConv2D(_, _, false) = layer.kind {} else {
                        padding = .same(inputHeight: inShape[0], inputWidth: inShape[1], kernelSize: k, stride: stride)
                    }
                }
                let kernel = kernelTensor(layer, 0)
                let channels = layer.outputShape[2]
                let parameters = ConvolutionParameters(kernel: kernel, bias: [Float](repeating: 0, count: channels),
                                                       stride: stride, padding: padding, activation: .none)
                let isDepthwise: Bool
                if case .depthwiseConv2D = layer.kind { isDepthwise = true } else { isDepthwise = false }
                nodes.append(Node(name: layer.name, operation: isDepthwise ? .depthwiseConv2D(parameters) : .conv2D(parameters),
                                  inputs: [index[source]!]))
            case .batchNorm(let epsilon):
                let w = matched[layer.name]!
                let bn = BatchNormParameters(gamma: w[0], beta: w[1], movingMean: w[2], movingVariance: w[3], epsilon: epsilon)
                let producer = index[input]!
                if foldBatchNorm, producer >= 0, consumers[input] == 1, let folded = fold(bn, into: nodes[producer].operation) {
                    nodes[producer].operation = folded
                    index[layer.name] = producer
                    continue
                }
                nodes.append(Node(name: layer.name, operation: .batchNorm(bn), inputs: [producer]))
            case .relu6:
                let producer = index[input]!
                if foldBatchNorm, producer >= 0, consumers[input] == 1, let fused = fuseReLU6(into: nodes[producer].operation) {
                    nodes[producer].operation = fused
                    index[layer.name] = producer
                    continue
                }
                nodes.append(Node(name: layer.name, operation: .relu6, inputs: [producer]))
            case .add:
                nodes.append(Node(name: layer.name, operation: .add, inputs: layer.inputs.map { index[$0]! }))
            case .globalAveragePool:
                nodes.append(Node(name: layer.name, operation: .globalAveragePool, inputs: [index[input]!]))
            case .globalMaxPool:
                nodes.append(Node(name: layer.name, operation: .globalMaxPool, inputs: [index[input]!]))
            case .dense(_, let activation):
                let w = matched[layer.name]!
                nodes.append(Node(name: layer.name, operation: .dense(DenseParameters(kernel: kernelTensor(layer, 0), bias: w[1])),
                                  inputs: [index[input]!]))
                if activation == .softmax {
                    nodes.append(Node(name: layer.name + "_softmax", operation: .softmax, inputs: [nodes.count - 1]))
                }
            }
            index[layer.name] = nodes.count - 1
        }
        let graph = Graph(inputShape: [configuration.inputHeight, configuration.inputWidth, 3], nodes: nodes)
        do {
            _ = try graph.validate()
        } catch {
            throw .graph(error.description)
        }
        return graph
    }

    /// Folds inference BatchNorm into a convolution: per output channel `c`,
    /// `scale = gamma / sqrt(variance + epsilon)`, kernel `* scale`, bias `(bias - mean) * scale + beta`.
    static func fold(_ bn: BatchNormParameters, into operation: Operation) -> Operation? {
        func folded(_ p: ConvolutionParameters, depthwise: Bool) -> ConvolutionParameters {
            var p = p
            let channels = p.bias.count
            var scale = [Float](repeating: 0, count: channels)
            for c in 0..<channels {
                scale[c] = bn.gamma[c] / (bn.movingVariance[c] + bn.epsilon).squareRoot()
                p.bias[c] = (p.bias[c] - bn.movingMean[c]) * scale[c] + bn.beta[c]
            }
            // The output channel is the last kernel dimension for Conv2D and the third (with a
            // depth multiplier of 1) for DepthwiseConv2D; in both cases it is `index % channels`.
            for i in 0..<p.kernel.scalars.count { p.kernel.scalars[i] *= scale[i % channels] }
            return p
        }
        switch operation {
        case .conv2D(let p) where p.activation == .none: return .conv2D(folded(p, depthwise: false))
        case .depthwiseConv2D(let p) where p.activation == .none: return .depthwiseConv2D(folded(p, depthwise: true))
        default: return nil
        }
    }

    static func fuseReLU6(into operation: Operation) -> Operation? {
        switch operation {
        case .conv2D(var p) where p.activation == .none:
            p.activation = .relu6
            return .conv2D(p)
        case .depthwiseConv2D(var p) where p.activation == .none:
            p.activation = .relu6
            return .depthwiseConv2D(p)
        default:
            return nil
        }
    }
}
