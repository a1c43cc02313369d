import MobileNetKernels

/// One row of Table 2 of the MobileNetV2 paper (Sandler et al., "MobileNetV2: Inverted
/// Residuals and Linear Bottlenecks", arXiv:1801.04381): a stage of `repeats` inverted-residual
/// blocks.
public struct InvertedResidualStage: Sendable, Hashable {
    /// Expansion ratio `t`: the expanded width is `t` times the block's input channels.
    public var expansion: Int
    /// Output channels `c` at alpha 1.0 (before the width multiplier).
    public var channels: Int
    /// Number of blocks `n` in the stage.
    public var repeats: Int
    /// Stride `s` of the stage's first block; the others have stride 1.
    public var stride: Int
}

/// A weight variable of a Keras layer: its Keras name (`kernel`, `depthwise_kernel`, `bias`,
/// `gamma`, `beta`, `moving_mean`, `moving_variance`) and its shape in Keras's layout.
public struct WeightSpec: Sendable, Hashable {
    /// The Keras variable name.
    public var name: String
    /// The shape in Keras's layout (HWIO kernels, `[in, out]` Dense kernels).
    public var shape: [Int]
    /// Whether training updates it (BatchNorm moving statistics are not trainable).
    public var trainable: Bool
}

/// What a Keras layer of the network does, with its hyper-parameters.
public enum LayerKind: Sendable, Hashable {
    /// The model input (`InputLayer`).
    case input
    /// `Conv2D(filters, kernelSize, strides=stride, padding="same", use_bias=False)`.
    case conv2D(filters: Int, kernelSize: Int, stride: Int)
    /// `DepthwiseConv2D(kernelSize, strides=stride, use_bias=False)` with `padding="same"`
    /// (stride 1) or `padding="valid"` after an explicit `ZeroPadding2D` (stride 2).
    case depthwiseConv2D(kernelSize: Int, stride: Int, samePadding: Bool)
    /// `BatchNormalization(epsilon=1e-3, momentum=0.999)`.
    case batchNorm(epsilon: Float)
    /// `ReLU(6.0)`.
    case relu6
    /// `ZeroPadding2D(padding)`, the Keras `correct_pad` before a stride-2 depthwise layer.
    case zeroPadding(Padding)
    /// `Add()` of the block input (a residual connection, paper section 3.3) and this path.
    case add
    /// `GlobalAveragePooling2D()`.
    case globalAveragePool
    /// `GlobalMaxPooling2D()`.
    case globalMaxPool
    /// `Dense(units, activation)`: the `predictions` classifier.
    case dense(units: Int, activation: ClassifierActivation)

    /// The Keras class name, as `model.summary()` prints it.
    public var kerasClassName: String {
        switch self {
        case .input: "InputLayer"
        case .conv2D: "Conv2D"
        case .depthwiseConv2D: "DepthwiseConv2D"
        case .batchNorm: "BatchNormalization"
        case .relu6: "ReLU"
        case .zeroPadding: "ZeroPadding2D"
        case .add: "Add"
        case .globalAveragePool: "GlobalAveragePooling2D"
        case .globalMaxPool: "GlobalMaxPooling2D"
        case .dense: "Dense"
        }
    }
}

/// One Keras layer of the network: name, kind, inputs, output shape and weights.
public struct LayerSpec: Sendable, Hashable {
    /// The Keras layer name: the key of the weight files.
    public var name: String
    /// What the layer computes.
    public var kind: LayerKind
    /// Names of the layers feeding this one (empty for the input).
    public var inputs: [String]
    /// Output shape of one example: `[H, W, C]` for maps, `[C]` after pooling or Dense.
    public var outputShape: [Int]
    /// Weight variables in Keras's order.
    public var weights: [WeightSpec]

    /// Number of scalars in all weights (trainable or not), as `model.summary()` counts them.
    public var parameterCount: Int { weights.reduce(0) { $0 + $1.shape.reduce(1, *) } }
}

/// One inverted-residual bottleneck block (paper section 3.3, Figure 3b; Keras
/// `_inverted_res_block`): a 1x1 pointwise *expansion* to `expansion * inputChannels` channels
/// (absent in block 0, as in Keras), ReLU6, a 3x3 *depthwise* convolution with the block's
/// stride (after explicit `correct_pad` zero padding when the stride is 2), ReLU6, a linear 1x1
/// *projection* to ``outputChannels``, each convolution followed by BatchNorm, and a residual
/// `Add` when the input and output shapes agree (stride 1, same channel count).
///
/// A value of this type emits its Keras layers, with their Keras names, into any
/// ``NetworkBuilder``: the layer list of ``MobileNetV2Architecture/layers(for:)`` and the
/// inference graph of ``MobileNetV2`` are both built by ``build(_:into:)``.
public struct InvertedResidual: Sendable, Hashable {
    /// The Keras `block_id`: 0 ... 16.
    public var id: Int
    /// Expansion ratio `t` (paper Table 2).
    public var expansion: Int
    /// Channels entering the block.
    public var inputChannels: Int
    /// Channels leaving the block: `_make_divisible(int(c * alpha), 8)` of the Table 2 row.
    public var outputChannels: Int
    /// Stride of the depthwise convolution: 1 or 2.
    public var stride: Int

    /// Keras's layer-name prefix: `expanded_conv_` for block 0, `block_<id>_` for the others.
    public var prefix: String { id == 0 ? "expanded_conv_" : "block_\(id)_" }
    /// Whether the block starts with the 1x1 expansion (Keras: `if block_id:`; block 0 has none).
    public var hasExpansion: Bool { id > 0 }
    /// Width of the depthwise stage: `expansion * inputChannels` (unrounded, as Keras).
    public var expandedChannels: Int { hasExpansion ? expansion * inputChannels : inputChannels }
    /// Whether the block ends with the residual `Add` (stride 1 and unchanged channel count).
    public var hasResidual: Bool { stride == 1 && inputChannels == outputChannels }

    /// Emits the block's layers, in Keras's order, reading `input`.
    ///
    /// - Returns: the block's output value.
    /// - Throws: what the builder throws (``ModelError``).
    public func build<Builder: NetworkBuilder>(_ input: Builder.Value, into b: inout Builder) throws(ModelError) -> Builder.Value {
        var x = input
        if hasExpansion {
            x = try b.conv2D(prefix + "expand", x, filters: expandedChannels, kernelSize: 1, stride: 1)
            x = try b.batchNorm(prefix + "expand_BN", x)
            x = try b.relu6(prefix + "expand_relu", x)
        }
        if stride == 2 {
            let shape = b.shape(of: x)
            x = try b.zeroPadding(prefix + "pad", x, MobileNetV2Architecture.correctPad(height: shape[0], width: shape[1]))
        }
        x = try b.depthwiseConv2D(prefix + "depthwise", x, kernelSize: 3, stride: stride, samePadding: stride == 1)
        x = try b.batchNorm(prefix + "depthwise_BN", x)
        x = try b.relu6(prefix + "depthwise_relu", x)
        x = try b.conv2D(prefix + "project", x, filters: outputChannels, kernelSize: 1, stride: 1)
        x = try b.batchNorm(prefix + "project_BN", x)
        if hasResidual {
            x = try b.add(prefix + "add", input, x)
        }
        return x
    }
}

/// Receives the network's Keras layers in order. The architecture is written once, against this
/// protocol (``MobileNetV2Architecture/build(_:into:)``); one builder lists the layers with their
/// shapes and weights, another turns them into an inference graph. Values are NHWC feature maps
/// (or `[C]` vectors after pooling); shapes are per example, without the batch dimension.
public protocol NetworkBuilder {
    /// A value flowing between layers.
    associatedtype Value
    /// The network input, `[height, width, 3]`.
    var input: Value { get }
    /// The per-example shape of `value`: `[H, W, C]` or `[C]`.
    func shape(of value: Value) -> [Int]
    /// `Conv2D(filters, kernelSize, strides=stride, padding="same", use_bias=False)`.
    mutating func conv2D(_ name: String, _ x: Value, filters: Int, kernelSize: Int, stride: Int) throws(ModelError) -> Value
    /// `DepthwiseConv2D(kernelSize, strides=stride, use_bias=False)`, padding `same` or `valid`.
    mutating func depthwiseConv2D(_ name: String, _ x: Value, kernelSize: Int, stride: Int, samePadding: Bool) throws(ModelError) -> Value
    /// `BatchNormalization(epsilon=1e-3)` in inference mode.
    mutating func batchNorm(_ name: String, _ x: Value) throws(ModelError) -> Value
    /// `ReLU(6.0)`.
    mutating func relu6(_ name: String, _ x: Value) throws(ModelError) -> Value
    /// `ZeroPadding2D(padding)`.
    mutating func zeroPadding(_ name: String, _ x: Value, _ padding: Padding) throws(ModelError) -> Value
    /// `Add()([a, b])`.
    mutating func add(_ name: String, _ a: Value, _ b: Value) throws(ModelError) -> Value
    /// `GlobalAveragePooling2D()` or `GlobalMaxPooling2D()`: `[H, W, C]` to `[C]`.
    mutating func globalPool(_ name: String, _ x: Value, _ pooling: Pooling) throws(ModelError) -> Value
    /// `Dense(units, activation)`.
    mutating func dense(_ name: String, _ x: Value, units: Int, activation: ClassifierActivation) throws(ModelError) -> Value
}

/// The MobileNetV2 architecture exactly as Keras Applications builds it
/// (`keras/src/applications/mobilenet_v2.py`): channel arithmetic, `correct_pad`, layer names.
public enum MobileNetV2Architecture {
    /// The paper's Table 2 body: 17 bottleneck blocks in 7 stages.
    public static let stages: [InvertedResidualStage] = [
        .init(expansion: 1, channels: 16, repeats: 1, stride: 1),
        .init(expansion: 6, channels: 24, repeats: 2, stride: 2),
        .init(expansion: 6, channels: 32, repeats: 3, stride: 2),
        .init(expansion: 6, channels: 64, repeats: 4, stride: 2),
        .init(expansion: 6, channels: 96, repeats: 3, stride: 1),
        .init(expansion: 6, channels: 160, repeats: 3, stride: 2),
        .init(expansion: 6, channels: 320, repeats: 1, stride: 1),
    ]

    /// BatchNorm epsilon used by every BatchNormalization layer of Keras's MobileNetV2.
    public static let batchNormEpsilon: Float = 1e-3

    /// The name of the last ReLU6, whose output is the spatial feature map (`[N, h, w, C]`).
    public static let featuresLayer = "out_relu"

    /// Keras `_make_divisible(v, divisor)`: round to the nearest multiple of `divisor` (at least
    /// `divisor`), adding one more `divisor` if rounding went more than 10% below `v`.
    public static func makeDivisible(_ value: Double, divisor: Int = 8) -> Int {
        let d = Double(divisor)
        var rounded = max(divisor, Int(value + d / 2) / divisor * divisor)
        if Double(rounded) < 0.9 * value { rounded += divisor }
        return rounded
    }

    /// Keras `imagenet_utils.correct_pad` for a 3x3 kernel: `((0, 1), (0, 1))` for even sizes,
    /// `((1, 1), (1, 1))` for odd ones, per dimension.
    public static func correctPad(height: Int, width: Int, kernelSize: Int = 3) -> Padding {
        let half = kernelSize / 2
        let adjustH = 1 - height % 2, adjustW = 1 - width % 2
        return Padding(top: half - adjustH, bottom: half, left: half - adjustW, right: half)
    }

    /// Channels of the stem convolution `Conv1`: `_make_divisible(32 * alpha, 8)`.
    public static func stemChannels(alpha: Double) -> Int { makeDivisible(32 * alpha) }

    /// Channels of the last convolution `Conv_1`: 1280, growing with alpha only above 1.
    public static func lastChannels(alpha: Double) -> Int { alpha > 1.0 ? makeDivisible(1280 * alpha) : 1280 }

    /// The 17 inverted-residual blocks for width multiplier `alpha`: Table 2's rows expanded,
    /// the first block of each row with the row's stride, with Keras's channel arithmetic.
    public static func blocks(alpha: Double) -> [InvertedResidual] {
        var blocks: [InvertedResidual] = []
        var channels = stemChannels(alpha: alpha)
        for stage in stages {
            let outputChannels = makeDivisible(Double(Int(Double(stage.channels) * alpha)))
            for r in 0..<stage.repeats {
                blocks.append(InvertedResidual(id: blocks.count, expansion: stage.expansion, inputChannels: channels,
                                               outputChannels: outputChannels, stride: r == 0 ? stage.stride : 1))
                channels = outputChannels
            }
        }
        return blocks
    }

    /// Emits the whole network for `configuration` into `b`, top to bottom as Keras's
    /// `MobileNetV2` function: stem, the 17 blocks, the last 1x1 convolution, then the
    /// classifier or the pooling.
    ///
    /// - Returns: the feature map (`out_relu`) and the network output (the same value when there
    ///   is neither top nor pooling).
    /// - Throws: ``ModelError`` from the configuration or the builder.
    public static func build<Builder: NetworkBuilder>(_ configuration: MobileNetV2Configuration, into b: inout Builder) throws(ModelError) -> (features: Builder.Value, output: Builder.Value) {
        try configuration.validate()
        let alpha = configuration.alpha
        // Stem.
        var x = try b.conv2D("Conv1", b.input, filters: stemChannels(alpha: alpha), kernelSize: 3, stride: 2)
        x = try b.batchNorm("bn_Conv1", x)
        x = try b.relu6("Conv1_relu", x)
        // Body.
        for block in blocks(alpha: alpha) {
            x = try block.build(x, into: &b)
        }
        // Head.
        x = try b.conv2D("Conv_1", x, filters: lastChannels(alpha: alpha), kernelSize: 1, stride: 1)
        x = try b.batchNorm("Conv_1_bn", x)
        let features = try b.relu6(featuresLayer, x)
        if configuration.includeTop {
            let pooled = try b.globalPool("global_average_pooling2d", features, .avg)
            return (features, try b.dense("predictions", pooled, units: configuration.classes, activation: configuration.classifierActivation))
        }
        switch configuration.pooling {
        case .avg: return (features, try b.globalPool("global_average_pooling2d", features, .avg))
        case .max: return (features, try b.globalPool("global_max_pooling2d", features, .max))
        case nil: return (features, features)
        }
    }

    /// Every Keras layer of the network for `configuration`, in Keras's order
    /// (`model.layers`), with output shapes and weight shapes.
    ///
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` for an invalid configuration.
    public static func layers(for configuration: MobileNetV2Configuration) throws(ModelError) -> [LayerSpec] {
        var builder = LayerListBuilder(inputShape: [configuration.inputHeight, configuration.inputWidth, 3])
        _ = try build(configuration, into: &builder)
        return builder.layers
    }

    static func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
}

/// Lists the Keras layers with their output and weight shapes (``MobileNetV2Architecture/layers(for:)``).
struct LayerListBuilder: NetworkBuilder {
    /// A layer's output: its name and per-example shape.
    struct Value {
        var name: String
        var shape: [Int]
    }

    private(set) var layers: [LayerSpec]
    let input: Value

    init(inputShape: [Int]) {
        input = Value(name: "input_layer", shape: inputShape)
        layers = [LayerSpec(name: "input_layer", kind: .input, inputs: [], outputShape: inputShape, weights: [])]
    }

    func shape(of value: Value) -> [Int] { value.shape }

    private mutating func append(_ name: String, _ kind: LayerKind, _ inputs: [Value], _ shape: [Int], _ weights: [WeightSpec] = []) -> Value {
        layers.append(LayerSpec(name: name, kind: kind, inputs: inputs.map(\.name), outputShape: shape, weights: weights))
        return Value(name: name, shape: shape)
    }

    mutating func conv2D(_ name: String, _ x: Value, filters: Int, kernelSize: Int, stride: Int) throws(ModelError) -> Value {
        let s = x.shape
        return append(name, .conv2D(filters: filters, kernelSize: kernelSize, stride: stride), [x],
                      [MobileNetV2Architecture.ceilDiv(s[0], stride), MobileNetV2Architecture.ceilDiv(s[1], stride), filters],
                      [WeightSpec(name: "kernel", shape: [kernelSize, kernelSize, s[2], filters], trainable: true)])
    }

    mutating func depthwiseConv2D(_ name: String, _ x: Value, kernelSize: Int, stride: Int, samePadding: Bool) throws(ModelError) -> Value {
        let s = x.shape
        let shape = samePadding
            ? [MobileNetV2Architecture.ceilDiv(s[0], stride), MobileNetV2Architecture.ceilDiv(s[1], stride), s[2]]
            : [(s[0] - kernelSize) / stride + 1, (s[1] - kernelSize) / stride + 1, s[2]]
        return append(name, .depthwiseConv2D(kernelSize: kernelSize, stride: stride, samePadding: samePadding), [x], shape,
                      [WeightSpec(name: "depthwise_kernel", shape: [kernelSize, kernelSize, s[2], 1], trainable: true)])
    }

    mutating func batchNorm(_ name: String, _ x: Value) throws(ModelError) -> Value {
        let c = x.shape[x.shape.count - 1]
        return append(name, .batchNorm(epsilon: MobileNetV2Architecture.batchNormEpsilon), [x], x.shape, [
            WeightSpec(name: "gamma", shape: [c], trainable: true),
            WeightSpec(name: "beta", shape: [c], trainable: true),
            WeightSpec(name: "moving_mean", shape: [c], trainable: false),
            WeightSpec(name: "moving_variance", shape: [c], trainable: false),
        ])
    }

    mutating func relu6(_ name: String, _ x: Value) throws(ModelError) -> Value { append(name, .relu6, [x], x.shape) }

    mutating func zeroPadding(_ name: String, _ x: Value, _ p: Padding) throws(ModelError) -> Value {
        append(name, .zeroPadding(p), [x], [x.shape[0] + p.top + p.bottom, x.shape[1] + p.left + p.right, x.shape[2]])
    }

    mutating func add(_ name: String, _ a: Value, _ b: Value) throws(ModelError) -> Value { append(name, .add, [a, b], b.shape) }

    mutating func globalPool(_ name: String, _ x: Value, _ pooling: Pooling) throws(ModelError) -> Value {
        append(name, pooling == .avg ? .globalAveragePool : .globalMaxPool, [x], [x.shape[2]])
    }

    mutating func dense(_ name: String, _ x: Value, units: Int, activation: ClassifierActivation) throws(ModelError) -> Value {
        append(name, .dense(units: units, activation: activation), [x], [units], [
            WeightSpec(name: "kernel", shape: [x.shape[0], units], trainable: true),
            WeightSpec(name: "bias", shape: [units], trainable: true),
        ])
    }
}

extension MobileNetV2Architecture {
    /// Whether the output of `layers[index]` is a value of the inference graph that
    /// ``MobileNetV2`` builds with BatchNorm folded (the default), so that
    /// ``MobileNetV2/activations(_:layers:)`` can return it.
    ///
    /// The rule is the folding of ``MobileNetV2/makeGraph(configuration:weights:foldBatchNorm:)``
    /// stated on the Keras layer list: a `BatchNormalization` directly after a convolution is folded
    /// into it, and a `ReLU` directly after that is fused into the same node, so that node's
    /// output is the last of the three layers:
    /// - `Conv2D` / `DepthwiseConv2D` followed by the `BatchNormalization` reading it: not tappable;
    /// - that `BatchNormalization` followed by a `ReLU` reading it: not tappable
    ///   (`block_N_expand_BN`, `block_N_depthwise_BN`, `bn_Conv1`, `Conv_1_bn`), else tappable
    ///   (`block_N_project_BN`);
    /// - `ZeroPadding2D`: never (it becomes the padding of the depthwise convolution after it);
    /// - the input, `ReLU`, `Add`, pooling and `Dense` layers: always.
    ///
    /// Without folding (`foldBatchNorm: false`) every layer but `ZeroPadding2D` is tappable.
    ///
    /// - Parameters:
    ///   - layers: the list of ``layers(for:)``.
    ///   - index: a position in `layers`.
    /// - Precondition: `index` is a valid position (a programmer error).
    public static func isTappableWithFoldedBatchNorm(_ layers: [LayerSpec], at index: Int) -> Bool {
        precondition(layers.indices.contains(index), "layer index \(index) is not in 0..<\(layers.count)")
        func isConvolution(_ i: Int) -> Bool {
            switch layers[i].kind {
            case .conv2D, .depthwiseConv2D: return true
            default: return false
            }
        }
        /// Whether `layers[i]` is read by the next layer alone, of the given kind test.
        func readByNext(_ i: Int, _ test: (LayerKind) -> Bool) -> Bool {
            i + 1 < layers.count && test(layers[i + 1].kind) && layers[i + 1].inputs == [layers[i].name]
        }
        let isBatchNorm: (LayerKind) -> Bool = { if case .batchNorm = $0 { return true } else { return false } }
        switch layers[index].kind {
        case .conv2D, .depthwiseConv2D:
            return !readByNext(index, isBatchNorm)
        case .batchNorm:
            let folded = index > 0 && isConvolution(index - 1) && layers[index].inputs == [layers[index - 1].name]
            return !(folded && readByNext(index, { $0 == .relu6 }))
        case .zeroPadding:
            return false
        case .input, .relu6, .add, .globalAveragePool, .globalMaxPool, .dense:
            return true
        }
    }

    /// The names of the layers of `layers` that ``isTappableWithFoldedBatchNorm(_:at:)``
    /// accepts, in Keras order (``MobileNetV2/tappableLayers`` of a model with BatchNorm folded).
    public static func tappableLayersWithFoldedBatchNorm(_ layers: [LayerSpec]) -> [String] {
        layers.indices.filter { isTappableWithFoldedBatchNorm(layers, at: $0) }.map { layers[$0].name }
    }

    /// Where the trainable part of a fine-tuned network (Keras `base_model.layers[index:]`
    /// trainable) takes over from an inference model with BatchNorm folded: the largest `i < index`
    /// such that `layers[i]` is tappable (``isTappableWithFoldedBatchNorm(_:at:)``) and no layer
    /// after `i` reads a layer before `i`, so that every later layer is computed from
    /// `layers[i]`'s output alone; 0 (the input) when there is none, including for `index` 0.
    ///
    /// A residual `Add` reads its block's input, so when `index` falls inside a residual block
    /// the entry is the block's input (the previous `block_N_project_BN` or `block_N_add`); in a
    /// block without a residual it is the last tappable layer (`block_N_expand_relu`,
    /// `block_N_depthwise_relu`, `Conv1_relu`). The layers between the entry and `index` are
    /// frozen and must be run by the fine-tuned network itself (forward only).
    ///
    /// - Precondition: `layers` starts with the input layer and `index` is in `0...layers.count`.
    public static func fineTuningEntry(_ layers: [LayerSpec], before index: Int) -> Int {
        precondition(index >= 0 && index <= layers.count && layers.first?.kind == .input, "fineTuningEntry: index \(index) of \(layers.count) layers")
        var position: [String: Int] = [:]
        for (i, layer) in layers.enumerated() { position[layer.name] = i }
        // earliestRead[i]: the smallest layer index read by any layer at i or after.
        var earliestRead = [Int](repeating: Int.max, count: layers.count + 1)
        for i in layers.indices.reversed() {
            let reads = layers[i].inputs.compactMap { position[$0] }.min() ?? Int.max
            earliestRead[i] = min(earliestRead[i + 1], reads)
        }
        var i = max(index - 1, 0)
        while i > 0 && !(isTappableWithFoldedBatchNorm(layers, at: i) && earliestRead[i + 1] >= i) { i -= 1 }
        return i
    }
}
