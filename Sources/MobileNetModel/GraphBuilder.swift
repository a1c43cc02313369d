import MobileNetKernels

/// Turns the Keras layers emitted by ``MobileNetV2Architecture/build(_:into:)`` into an inference
/// ``/MobileNetKernels/Graph``, with the weights already matched by ``WeightMatcher``.
///
/// With folding on, each BatchNorm is folded into the convolution it follows and each ReLU6 is
/// fused into the node that produces its input, so one node stands for conv + BN + ReLU6; a
/// `ZeroPadding2D` becomes the explicit padding of the depthwise convolution after it. The
/// builder records which Keras layer's output each node produces, for named taps.
struct GraphBuilder: NetworkBuilder {
    /// A value: the node that computes it, the shape of that node's output, a `ZeroPadding2D`
    /// still to apply (by the convolution that reads it), and the node's revision when the value
    /// was made (a fold or fusion changes what a node computes, so an older value of that node
    /// may no longer be read).
    struct Value {
        var node: Int
        var shape: [Int]
        var padding: Padding?
        var revision: Int
    }

    let matched: [String: [[Float]]]
    let foldBatchNorm: Bool
    let source: String
    private(set) var nodes: [Node] = []
    /// Per node, how many times a fold or fusion changed its output.
    private var revisions: [Int] = []
    /// Keras layer name → the node whose output is that layer's output (only while it is).
    private(set) var layerNodes: [String: Int] = ["input_layer": Graph.inputIndex]
    /// Keras layer name → why its output is not a node's output (folded, fused, padding).
    private(set) var unavailableLayers: [String: String] = [:]
    let input: Value

    init(inputShape: [Int], matched: [String: [[Float]]], foldBatchNorm: Bool, source: String) {
        self.matched = matched
        self.foldBatchNorm = foldBatchNorm
        self.source = source
        self.input = Value(node: Graph.inputIndex, shape: inputShape, padding: nil, revision: 0)
    }

    func shape(of value: Value) -> [Int] {
        guard let p = value.padding else { return value.shape }
        return [value.shape[0] + p.top + p.bottom, value.shape[1] + p.left + p.right, value.shape[2]]
    }

    private func weights(_ layer: String, count: Int) throws(ModelError) -> [[Float]] {
        guard let values = matched[layer] else { throw .missingLayer(layer: layer, source: source) }
        guard values.count == count else {
            throw .variableCountMismatch(layer: layer, expected: ["\(count) variables"], found: ["\(values.count) variables"], source: source)
        }
        return values
    }

    /// The node index a value reads, checking that the value is still what that node computes.
    private func read(_ value: Value, by layer: String) throws(ModelError) -> Int {
        if value.node >= 0, revisions[value.node] != value.revision {
            throw .graph(.invalidInput(node: layer, input: value.node))
        }
        return value.node
    }

    private mutating func append(_ name: String, _ operation: MobileNetKernels.Operation, _ inputs: [Int], shape: [Int]) -> Value {
        nodes.append(Node(name: name, operation: operation, inputs: inputs))
        revisions.append(0)
        layerNodes[name] = nodes.count - 1
        return Value(node: nodes.count - 1, shape: shape, padding: nil, revision: 0)
    }

    /// Replaces the operation of the node behind `x` (a fold or fusion) and records that layer
    /// `name` is now its output, the layers it absorbed no longer.
    private mutating func rewrite(_ x: Value, as name: String, _ operation: MobileNetKernels.Operation) -> Value {
        let node = x.node
        nodes[node].operation = operation
        revisions[node] += 1
        for (layer, index) in layerNodes where index == node {
            layerNodes[layer] = nil
            unavailableLayers[layer] = "its output is not kept: it is folded or fused into '\(name)' (build the model with foldBatchNorm: false on the reference backend to tap it)"
        }
        layerNodes[name] = node
        return Value(node: node, shape: x.shape, padding: nil, revision: revisions[node])
    }

    private mutating func convolution(_ name: String, _ x: Value, kernel: Tensor, stride: Int, padding: Padding, depthwise: Bool, shape: [Int]) throws(ModelError) -> Value {
        let source = try read(x, by: name)
        let parameters = ConvolutionParameters(kernel: kernel, bias: [Float](repeating: 0, count: shape[2]), stride: stride, padding: padding, activation: .none)
        return append(name, depthwise ? .depthwiseConv2D(parameters) : .conv2D(parameters), [source], shape: shape)
    }

    mutating func conv2D(_ name: String, _ x: Value, filters: Int, kernelSize: Int, stride: Int) throws(ModelError) -> Value {
        let w = try weights(name, count: 1)
        let s = x.shape
        let padding = x.padding ?? .same(inputHeight: s[0], inputWidth: s[1], kernelSize: kernelSize, stride: stride)
        let output = [(s[0] + padding.top + padding.bottom - kernelSize) / stride + 1, (s[1] + padding.left + padding.right - kernelSize) / stride + 1, filters]
        return try convolution(name, x, kernel: Tensor(shape: [kernelSize, kernelSize, s[2], filters], scalars: w[0]),
                               stride: stride, padding: padding, depthwise: false, shape: output)
    }

    mutating func depthwiseConv2D(_ name: String, _ x: Value, kernelSize: Int, stride: Int, samePadding: Bool) throws(ModelError) -> Value {
        let w = try weights(name, count: 1)
        let s = x.shape
        let padding = x.padding ?? (samePadding ? .same(inputHeight: s[0], inputWidth: s[1], kernelSize: kernelSize, stride: stride) : .valid)
        let output = [(s[0] + padding.top + padding.bottom - kernelSize) / stride + 1, (s[1] + padding.left + padding.right - kernelSize) / stride + 1, s[2]]
        return try convolution(name, x, kernel: Tensor(shape: [kernelSize, kernelSize, s[2], 1], scalars: w[0]),
                               stride: stride, padding: padding, depthwise: true, shape: output)
    }

    mutating func batchNorm(_ name: String, _ x: Value) throws(ModelError) -> Value {
        let w = try weights(name, count: 4)
        let bn = BatchNormParameters(gamma: w[0], beta: w[1], movingMean: w[2], movingVariance: w[3], epsilon: MobileNetV2Architecture.batchNormEpsilon)
        let producer = try read(x, by: name)
        if foldBatchNorm, producer >= 0, producer == nodes.count - 1, let folded = MobileNetV2.fold(bn, into: nodes[producer].operation) {
            return rewrite(x, as: name, folded)
        }
        return append(name, .batchNorm(bn), [producer], shape: x.shape)
    }

    mutating func relu6(_ name: String, _ x: Value) throws(ModelError) -> Value {
        let producer = try read(x, by: name)
        if foldBatchNorm, producer >= 0, producer == nodes.count - 1, let fused = MobileNetV2.fuseReLU6(into: nodes[producer].operation) {
            return rewrite(x, as: name, fused)
        }
        return append(name, .relu6, [producer], shape: x.shape)
    }

    mutating func zeroPadding(_ name: String, _ x: Value, _ p: Padding) throws(ModelError) -> Value {
        guard x.padding == nil else { throw .graph(.shapeMismatch(node: name, reason: "two paddings in a row")) }
        unavailableLayers[name] = "ZeroPadding2D is applied inside the convolution after it"
        var padded = x
        padded.padding = p
        return padded
    }

    mutating func add(_ name: String, _ a: Value, _ b: Value) throws(ModelError) -> Value {
        append(name, .add, [try read(a, by: name), try read(b, by: name)], shape: b.shape)
    }

    mutating func globalPool(_ name: String, _ x: Value, _ pooling: Pooling) throws(ModelError) -> Value {
        append(name, pooling == .avg ? .globalAveragePool : .globalMaxPool, [try read(x, by: name)], shape: [x.shape[2]])
    }

    mutating func dense(_ name: String, _ x: Value, units: Int, activation: ClassifierActivation) throws(ModelError) -> Value {
        let w = try weights(name, count: 2)
        var value = append(name, .dense(DenseParameters(kernel: Tensor(shape: [x.shape[0], units], scalars: w[0]), bias: w[1])),
                           [try read(x, by: name)], shape: [units])
        if activation == .softmax {
            value = append(name + "_softmax", .softmax, [value.node], shape: [units])
            // Keras's `predictions` layer includes its activation: its output is the softmax.
            layerNodes[name] = value.node
        }
        return value
    }
}
