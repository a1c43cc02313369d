import Foundation
import MobileNetKernels

/// What one pass of ``MobileNetV2`` computes (``MobileNetV2/forward(_:)``), for a batch of `N`
/// images. The same pass serves classification and embedding, as timm's `forward_features` /
/// `forward_head` do.
public struct MobileNetV2Output: Sendable {
    /// The output of the last ReLU6 (`out_relu`), `[N, ceil(H/32), ceil(W/32), C]` NHWC, values
    /// in 0...6; `C` = 1280 for alpha <= 1.
    public var features: Tensor
    /// The pooled embedding `[N, C]`, values in 0...6: the configuration's pooling when it has
    /// one (Keras `pooling="avg"` or `"max"`), otherwise the global average of ``features``
    /// (what the top's `GlobalAveragePooling2D` computes).
    public var embedding: Tensor
    /// `[N, classes]` pre-activation scores of the `predictions` layer; nil without the top.
    public var logits: Tensor?
    /// `[N, classes]` softmax of ``logits`` (each row sums to 1); nil without the top.
    public var probabilities: Tensor?
    /// The configuration's output: what ``MobileNetV2/callAsFunction(_:)`` returns.
    public var output: Tensor
}

/// MobileNetV2 (Sandler et al., arXiv:1801.04381) with Keras Applications semantics:
/// the same architecture, layer names and numbers as `keras.applications.MobileNetV2`.
///
/// Input: a batch `[N, H, W, 3]` (NHWC, RGB) preprocessed the Keras "tf" way, pixel values
/// 0...255 mapped to -1...1 by `x / 127.5 - 1`. Output of ``callAsFunction(_:)`` per example,
/// depending on the configuration:
/// - with the top: `[classes]` probabilities (softmax; each row sums to 1) or logits;
/// - without the top and with pooling: the `[C]` embedding (`C` = 1280 for alpha <= 1),
///   the output of the last ReLU6 pooled, values in 0...6;
/// - without either: the `[ceil(H/32), ceil(W/32), C]` feature map.
///
/// One instance gives all of these from one pass (``forward(_:)``, ``features(_:)``,
/// ``embedding(_:)``), the output of any Keras layer by name (``activations(_:layers:)``), and
/// models with another top without reading weights again (``withClassifier(kernel:bias:activation:)``,
/// ``withClassifier(classes:seed:activation:)``, ``withoutClassifier(pooling:)``).
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
    /// The inference graph (BatchNorm folded, activations fused). Its outputs are the feature
    /// map, then the pooled embedding, the logits and the probabilities when the network has them.
    public let graph: Graph
    /// The backend that executes the graph.
    public let backend: any InferenceBackend
    /// The backend's name (`onednn`, `reference`).
    public var backendName: String { backend.name }
    /// Whether BatchNorm was folded into the convolutions.
    public let foldsBatchNorm: Bool

    /// Positions in ``graph``'s outputs.
    private let slots: Slots
    /// Keras layer name → graph node producing that layer's output.
    private let layerNodes: [String: Int]
    /// Keras layer name → why it cannot be tapped.
    private let unavailableLayers: [String: String]
    private let executor: any GraphExecutor
    private let taps = TapCache()

    struct Slots: Sendable {
        var features: Int
        var embedding: Int?
        var logits: Int?
        var probabilities: Int?
        var output: Int
    }

    /// Builds the network and loads `weights` strictly: every layer with weights must be
    /// present with exactly the Keras shapes, and every layer of `weights` must be used.
    ///
    /// - Parameters:
    ///   - configuration: alpha, input size, top, pooling, classes, classifier activation.
    ///   - weights: the MobileNetV2 layers (use ``KerasWeightSet/mobileNetV2Part()`` for a
    ///     model nested in a larger one).
    ///   - backend: the kernels that run the graph: ``/MobileNetKernels/ReferenceBackend`` (the
    ///     plain-Swift oracle) or a fast one such as `OneDNNBackend`; the umbrella module
    ///     `MobileNet` adds an initialiser that chooses oneDNN.
    ///   - foldBatchNorm: fold BatchNorm into the convolutions and fuse ReLU6 (the default);
    ///     `false` keeps one node per Keras layer, so every layer can be tapped (the reference
    ///     backend runs such graphs, oneDNN does not).
    /// - Throws: ``ModelError``: an invalid configuration, a missing or unused layer, a shape
    ///   mismatch (naming the layer and both shapes), weights built for another alpha or with a
    ///   different top, ``ModelError/graph(_:)`` for a graph the backend finds invalid; the
    ///   backend's own error (such as `OneDNNError`) when it cannot prepare the graph.
    public convenience init(configuration: MobileNetV2Configuration, weights: KerasWeightSet, backend: any InferenceBackend, foldBatchNorm: Bool = true) throws {
        let layers = try MobileNetV2Architecture.layers(for: configuration)
        let matched = try WeightMatcher(configuration: configuration, layers: layers, weights: weights).match()
        var builder = GraphBuilder(inputShape: [configuration.inputHeight, configuration.inputWidth, 3], matched: matched,
                                   foldBatchNorm: foldBatchNorm, source: weights.source)
        let (features, output) = try MobileNetV2Architecture.build(configuration, into: &builder)
        try self.init(configuration: configuration, layers: layers, nodes: builder.nodes, features: features.node, output: output.node,
                      layerNodes: builder.layerNodes, unavailableLayers: builder.unavailableLayers, backend: backend, foldBatchNorm: foldBatchNorm)
    }

    /// Assembles a model from built nodes: the outputs are found from the node kinds after the
    /// feature map (pooling, dense, softmax).
    private init(configuration: MobileNetV2Configuration, layers: [LayerSpec], nodes: [Node], features: Int, output: Int,
                 layerNodes: [String: Int], unavailableLayers: [String: String], backend: any InferenceBackend, foldBatchNorm: Bool) throws {
        var outputs = [features]
        var slots = Slots(features: 0, output: 0)
        for index in nodes.indices where index > features {
            switch nodes[index].operation {
            case .globalAveragePool, .globalMaxPool: slots.embedding = outputs.count
            case .dense: slots.logits = outputs.count
            case .softmax: slots.probabilities = outputs.count
            default: continue
            }
            outputs.append(index)
        }
        slots.output = outputs.lastIndex(of: output) ?? 0
        let graph = Graph(inputShape: [configuration.inputHeight, configuration.inputWidth, 3], nodes: nodes, outputs: outputs)
        do {
            _ = try graph.validate()
            self.executor = try backend.makeExecutor(for: graph)
        } catch let error as GraphError {
            throw ModelError.graph(error)
        }
        self.configuration = configuration
        self.layers = layers
        self.graph = graph
        self.backend = backend
        self.foldsBatchNorm = foldBatchNorm
        self.slots = slots
        self.layerNodes = layerNodes
        self.unavailableLayers = unavailableLayers
    }

    // MARK: - Running

    /// Runs the network on a batch and returns the configuration's output.
    ///
    /// - Parameter input: `[N, inputHeight, inputWidth, 3]`, NHWC, preprocessed to -1...1.
    /// - Returns: `[N, classes]`, `[N, C]` or `[N, h, w, C]` (see the type's discussion).
    /// - Throws: ``/MobileNetKernels/GraphError/inputShape(expected:got:)`` for a wrongly shaped
    ///   input, or the backend's error.
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try executor.run(input)[slots.output]
    }

    /// Runs the network once and returns the feature map, the embedding and, with the top, the
    /// logits and probabilities (see ``MobileNetV2Output``).
    ///
    /// - Parameter input: `[N, inputHeight, inputWidth, 3]`, NHWC, -1...1.
    /// - Throws: as ``callAsFunction(_:)``.
    public func forward(_ input: Tensor) throws -> MobileNetV2Output {
        let values = try executor.run(input)
        let features = values[slots.features]
        let embedding = slots.embedding.map { values[$0] } ?? ReferenceKernels.globalAveragePool(features)
        let logits = slots.logits.map { values[$0] }
        var probabilities = slots.probabilities.map { values[$0] }
        if configuration.includeTop, configuration.classifierActivation == .none, let l = logits {
            probabilities = ReferenceKernels.softmax(l)
        }
        return MobileNetV2Output(features: features, embedding: embedding, logits: logits, probabilities: probabilities, output: values[slots.output])
    }

    /// The spatial feature map: the output of `out_relu`, `[N, ceil(H/32), ceil(W/32), C]`, 0...6
    /// (timm's `forward_features`).
    ///
    /// - Throws: as ``callAsFunction(_:)``.
    public func features(_ input: Tensor) throws -> Tensor { try executor.run(input)[slots.features] }

    /// The pooled embedding `[N, C]`, 0...6 (see ``MobileNetV2Output/embedding``).
    ///
    /// - Throws: as ``callAsFunction(_:)``.
    public func embedding(_ input: Tensor) throws -> Tensor { try forward(input).embedding }

    /// The embedding width `C`: 1280 for alpha <= 1, `_make_divisible(1280 * alpha, 8)` above.
    public var embeddingWidth: Int { MobileNetV2Architecture.lastChannels(alpha: configuration.alpha) }

    // MARK: - Named taps

    /// The Keras layers whose outputs ``activations(_:layers:)`` can return, in Keras order.
    /// With BatchNorm folded, a convolution and its BatchNorm are part of the node of the ReLU6
    /// after them (tap `block_3_expand_relu`, not `block_3_expand`); `block_N_project_BN` and the
    /// `add` layers are tappable.
    public var tappableLayers: [String] { layers.map(\.name).filter { layerNodes[$0] != nil } }

    /// The outputs of Keras layers by name (such as `Conv1_relu`, `block_13_expand_relu`,
    /// `block_2_add`, `out_relu`), for one batch: the values Keras gives for
    /// `keras.Model(model.input, model.get_layer(name).output)`.
    ///
    /// Builds an executor for the part of the graph that the layers need (kept for the next
    /// call with the same layers).
    ///
    /// - Parameters:
    ///   - input: `[N, inputHeight, inputWidth, 3]`, NHWC, -1...1.
    ///   - names: Keras layer names (see ``tappableLayers``).
    /// - Returns: per name, the layer's output, `[N, H, W, C]` NHWC or `[N, C]`.
    /// - Throws: ``ModelError/unknownLayer(_:)`` for a name that is not a layer of this network,
    ///   ``ModelError/layerNotTappable(layer:reason:)`` for a layer folded into another one; the
    ///   backend's errors.
    public func activations(_ input: Tensor, layers names: [String]) throws -> [String: Tensor] {
        var nodes: [Int] = []
        for name in names {
            if let node = layerNodes[name] {
                nodes.append(node)
            } else if let reason = unavailableLayers[name] {
                throw ModelError.layerNotTappable(layer: name, reason: reason)
            } else {
                throw ModelError.unknownLayer(name)
            }
        }
        let subgraph: Graph
        do {
            subgraph = try graph.subgraph(outputs: nodes)
        } catch {
            throw ModelError.graph(error)
        }
        let executor = try taps.executor(for: names) { try backend.makeExecutor(for: subgraph) }
        let values = try executor.run(input)
        var result: [String: Tensor] = [:]
        for (name, value) in zip(names, values) { result[name] = value }
        return result
    }

    // MARK: - Replacing the top

    /// The nodes up to and including the feature map.
    private var backboneNodes: [Node] { Array(graph.nodes.prefix(graph.outputs[slots.features] + 1)) }

    /// The same backbone with a new classifier: `GlobalAveragePooling2D` → `Dense(classes)` with
    /// the given weights, on the same backend. No weights are read again (timm's `reset_classifier`).
    ///
    /// - Parameters:
    ///   - kernel: `[C, classes]` (Keras Dense layout; `C` = ``embeddingWidth``).
    ///   - bias: `[classes]`.
    ///   - activation: softmax (probabilities) or none (logits).
    /// - Throws: ``ModelError/shapeMismatch(layer:variable:expected:found:source:)`` when the
    ///   kernel or bias does not fit; ``ModelError/invalidWeights(layer:variable:reason:source:)``
    ///   for non-finite values; the backend's errors.
    public func withClassifier(kernel: Tensor, bias: [Float], activation: ClassifierActivation = .softmax) throws -> MobileNetV2 {
        let width = embeddingWidth
        guard kernel.rank == 2, kernel.shape[0] == width, kernel.shape[1] >= 1 else {
            throw ModelError.shapeMismatch(layer: "predictions", variable: "kernel", expected: [width, kernel.shape.last ?? 1], found: kernel.shape, source: "withClassifier")
        }
        let classes = kernel.shape[1]
        guard bias.count == classes else {
            throw ModelError.shapeMismatch(layer: "predictions", variable: "bias", expected: [classes], found: [bias.count], source: "withClassifier")
        }
        let layer = DenseHead.Layer(name: "predictions", kernel: kernel, bias: bias, activation: activation == .softmax ? .softmax : .linear)
        return try withHead(DenseHead(layers: [layer], source: "withClassifier"))
    }

    /// The same backbone with `head` on top: `GlobalAveragePooling2D` → each Dense layer of the
    /// head (a hidden layer's ReLU and the last layer's softmax as their own nodes), on the same
    /// backend, in one graph. No weights are read again. The Dense nodes carry the head's Keras
    /// layer names; ``MobileNetV2Output/logits`` is the last Dense layer's output.
    ///
    /// - Parameter head: a head taking ``embeddingWidth`` inputs.
    /// - Throws: ``ModelError/shapeMismatch(layer:variable:expected:found:source:)`` when the head
    ///   takes another width; the backend's errors.
    public func withHead(_ head: DenseHead) throws -> MobileNetV2 {
        let width = embeddingWidth
        guard head.inputWidth == width else {
            let first = head.layers[0]
            throw ModelError.shapeMismatch(layer: first.name, variable: "kernel", expected: [width, first.units], found: first.kernel.shape, source: "withHead")
        }
        var configuration = self.configuration
        configuration.includeTop = true
        configuration.pooling = nil
        configuration.classes = head.classes
        configuration.classifierActivation = head.endsWithSoftmax ? .softmax : .none
        var nodes = backboneNodes
        let features = nodes.count - 1
        var layerNodes = self.layerNodes.filter { $0.value <= features }
        nodes.append(Node(name: "global_average_pooling2d", operation: .globalAveragePool, inputs: [features]))
        layerNodes["global_average_pooling2d"] = nodes.count - 1
        for layer in head.layers {
            nodes.append(Node(name: layer.name, operation: .dense(DenseParameters(kernel: layer.kernel, bias: layer.bias)), inputs: [nodes.count - 1]))
            switch layer.activation {
            case .linear: break
            case .relu: nodes.append(Node(name: layer.name + "_relu", operation: .relu, inputs: [nodes.count - 1]))
            case .softmax: nodes.append(Node(name: layer.name + "_softmax", operation: .softmax, inputs: [nodes.count - 1]))
            }
            // A Keras Dense layer's output includes its activation.
            layerNodes[layer.name] = nodes.count - 1
        }
        return try MobileNetV2(configuration: configuration, layers: try MobileNetV2Architecture.layers(for: configuration), nodes: nodes,
                               features: features, output: nodes.count - 1, layerNodes: layerNodes,
                               unavailableLayers: unavailableLayers, backend: backend, foldBatchNorm: foldsBatchNorm)
    }

    /// The same backbone with a new `classes`-way classifier initialised as Keras initialises a
    /// `Dense` layer: Glorot-uniform kernel (`limit = sqrt(6 / (C + classes))`), zero bias,
    /// from a seeded generator (the same seed gives the same weights).
    ///
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` for `classes < 1`; the backend's errors.
    public func withClassifier(classes: Int, seed: UInt64 = 0, activation: ClassifierActivation = .softmax) throws -> MobileNetV2 {
        guard classes >= 1 else { throw ModelError.invalidConfiguration("classes must be at least 1, got \(classes)") }
        let width = embeddingWidth
        let limit = (6 / Float(width + classes)).squareRoot()
        var random = SplitMix64(seed: seed)
        let kernel = (0..<width * classes).map { _ in (random.uniform() * 2 - 1) * limit }
        return try withClassifier(kernel: Tensor(shape: [width, classes], scalars: kernel), bias: [Float](repeating: 0, count: classes), activation: activation)
    }

    /// The same backbone without the classifier, on the same backend: the embedding network
    /// (`include_top=False`, `pooling=pooling`). No weights are read again.
    ///
    /// - Parameter pooling: `.avg` (the usual embedding), `.max`, or nil for the feature map.
    /// - Throws: the backend's errors.
    public func withoutClassifier(pooling: Pooling? = .avg) throws -> MobileNetV2 {
        var configuration = self.configuration
        configuration.includeTop = false
        configuration.pooling = pooling
        var nodes = backboneNodes
        let features = nodes.count - 1
        var layerNodes = self.layerNodes.filter { $0.value <= features }
        switch pooling {
        case .avg?:
            nodes.append(Node(name: "global_average_pooling2d", operation: .globalAveragePool, inputs: [features]))
            layerNodes["global_average_pooling2d"] = features + 1
        case .max?:
            nodes.append(Node(name: "global_max_pooling2d", operation: .globalMaxPool, inputs: [features]))
            layerNodes["global_max_pooling2d"] = features + 1
        case nil:
            break
        }
        return try MobileNetV2(configuration: configuration, layers: try MobileNetV2Architecture.layers(for: configuration), nodes: nodes,
                               features: features, output: nodes.count - 1, layerNodes: layerNodes,
                               unavailableLayers: unavailableLayers, backend: backend, foldBatchNorm: foldsBatchNorm)
    }

    /// The head on top of the pooled embedding, read back from the graph: the Dense layers after
    /// the global pooling with their activations (the ImageNet `predictions` layer, or what
    /// ``withHead(_:)`` added); nil without a top.
    public var head: DenseHead? {
        guard configuration.includeTop else { return nil }
        var layers: [DenseHead.Layer] = []
        for node in graph.nodes.dropFirst(graph.outputs[slots.features] + 1) {
            switch node.operation {
            case .dense(let p): layers.append(DenseHead.Layer(name: node.name, kernel: p.kernel, bias: p.bias, activation: .linear))
            case .relu where !layers.isEmpty: layers[layers.count - 1].activation = .relu
            case .softmax where !layers.isEmpty: layers[layers.count - 1].activation = .softmax
            default: continue
            }
        }
        return try? DenseHead(layers: layers, source: "graph")
    }

    /// The Keras-style summary: layer, type, output shape and parameter count.
    public var summary: ModelSummary { ModelSummary(modelName: configuration.kerasModelName, layers: layers) }

    // MARK: - Graph construction

    /// Builds the inference graph for `configuration` from `weights`, validating them strictly.
    /// The graph's one output is the network output.
    ///
    /// - Parameters:
    ///   - configuration: alpha, input size, top, pooling, classes, classifier activation.
    ///   - weights: the MobileNetV2 layers by Keras name, matched strictly against the
    ///     architecture.
    ///   - foldBatchNorm: fold every BatchNorm into its convolution
    ///     (`kernel * gamma / sqrt(var + eps)`, bias `beta - mean * gamma / sqrt(var + eps)`) and
    ///     fuse ReLU6; `false` keeps one graph node per Keras layer.
    /// - Throws: ``ModelError`` as ``init(configuration:weights:backend:foldBatchNorm:)`` describes.
    public static func makeGraph(configuration: MobileNetV2Configuration, weights: KerasWeightSet, foldBatchNorm: Bool) throws(ModelError) -> Graph {
        let layers = try MobileNetV2Architecture.layers(for: configuration)
        let matched = try WeightMatcher(configuration: configuration, layers: layers, weights: weights).match()
        var builder = GraphBuilder(inputShape: [configuration.inputHeight, configuration.inputWidth, 3], matched: matched,
                                   foldBatchNorm: foldBatchNorm, source: weights.source)
        _ = try MobileNetV2Architecture.build(configuration, into: &builder)
        let graph = Graph(inputShape: [configuration.inputHeight, configuration.inputWidth, 3], nodes: builder.nodes)
        do {
            _ = try graph.validate()
        } catch {
            throw .graph(error)
        }
        return graph
    }

    /// Folds inference BatchNorm into a convolution: per output channel `c`,
    /// `scale = gamma / sqrt(variance + epsilon)`, kernel `* scale`, bias `(bias - mean) * scale + beta`.
    static func fold(_ bn: BatchNormParameters, into operation: MobileNetKernels.Operation) -> MobileNetKernels.Operation? {
        func folded(_ p: ConvolutionParameters) -> ConvolutionParameters {
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
        case .conv2D(let p) where p.activation == .none && p.bias.count == bn.gamma.count: return .conv2D(folded(p))
        case .depthwiseConv2D(let p) where p.activation == .none && p.bias.count == bn.gamma.count: return .depthwiseConv2D(folded(p))
        default: return nil
        }
    }

    static func fuseReLU6(into operation: MobileNetKernels.Operation) -> MobileNetKernels.Operation? {
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

/// The executor of the last set of tapped layers, shared between threads under a lock.
private final class TapCache: @unchecked Sendable {
    private let lock = NSLock()
    private var layers: [String] = []
    private var executor: (any GraphExecutor)?

    func executor(for layers: [String], make: () throws -> any GraphExecutor) throws -> any GraphExecutor {
        lock.lock()
        defer { lock.unlock() }
        if let executor, self.layers == layers { return executor }
        let made = try make()
        (self.layers, executor) = (layers, made)
        return made
    }
}
