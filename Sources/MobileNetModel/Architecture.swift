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

    /// Every Keras layer of the network for `configuration`, in Keras's order
    /// (`model.layers`), with output shapes and weight shapes.
    ///
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` for an invalid configuration.
    public static func layers(for configuration: MobileNetV2Configuration) throws(ModelError) -> [LayerSpec] {
        try configuration.validate()
        let alpha = configuration.alpha
        var layers: [LayerSpec] = []
        var shape = [configuration.inputHeight, configuration.inputWidth, 3]
        var last = "input_layer"
        layers.append(LayerSpec(name: last, kind: .input, inputs: [], outputShape: shape, weights: []))

        func append(_ name: String, _ kind: LayerKind, inputs: [String]? = nil, weights: [WeightSpec] = []) {
            let input = shape
            switch kind {
            case .conv2D(let filters, _, let stride):
                shape = [ceilDiv(input[0], stride), ceilDiv(input[1], stride), filters]
            case .depthwiseConv2D(let k, let stride, let same):
                shape = same
                    ? [ceilDiv(input[0], stride), ceilDiv(input[1], stride), input[2]]
                    : [(input[0] - k) / stride + 1, (input[1] - k) / stride + 1, input[2]]
            case .zeroPadding(let p):
                shape = [input[0] + p.top + p.bottom, input[1] + p.left + p.right, input[2]]
            case .globalAveragePool, .globalMaxPool:
                shape = [input[2]]
            case .dense(let units, _):
                shape = [units]
            case .input, .batchNorm, .relu6, .add:
                break
            }
            layers.append(LayerSpec(name: name, kind: kind, inputs: inputs ?? [last], outputShape: shape, weights: weights))
            last = name
        }
        func conv(_ name: String, filters: Int, kernelSize: Int, stride: Int) {
            let cin = shape[2]
            append(name, .conv2D(filters: filters, kernelSize: kernelSize, stride: stride),
                   weights: [WeightSpec(name: "kernel", shape: [kernelSize, kernelSize, cin, filters], trainable: true)])
        }
        func batchNorm(_ name: String) {
            let c = shape[2]
            append(name, .batchNorm(epsilon: batchNormEpsilon), weights: [
                WeightSpec(name: "gamma", shape: [c], trainable: true),
                WeightSpec(name: "beta", shape: [c], trainable: true),
                WeightSpec(name: "moving_mean", shape: [c], trainable: false),
                WeightSpec(name: "moving_variance", shape: [c], trainable: false),
            ])
        }

        // Stem.
        conv("Conv1", filters: makeDivisible(32 * alpha), kernelSize: 3, stride: 2)
        batchNorm("bn_Conv1")
        append("Conv1_relu", .relu6)

        // Body: the inverted-residual blocks (`_inverted_res_block`).
        var blockID = 0
        for stage in stages {
            for r in 0..<stage.repeats {
                let stride = r == 0 ? stage.stride : 1
                let blockInput = last
                let inChannels = shape[2]
                let pointwiseFilters = makeDivisible(Double(Int(Double(stage.channels) * alpha)))
                var prefix = "block_\(blockID)_"
                if blockID > 0 {
                    conv(prefix + "expand", filters: stage.expansion * inChannels, kernelSize: 1, stride: 1)
                    batchNorm(prefix + "expand_BN")
                    append(prefix + "expand_relu", .relu6)
                } else {
                    prefix = "expanded_conv_"
                }
                if stride == 2 {
                    append(prefix + "pad", .zeroPadding(correctPad(height: shape[0], width: shape[1])))
                }
                let channels = shape[2]
                append(prefix + "depthwise", .depthwiseConv2D(kernelSize: 3, stride: stride, samePadding: stride == 1),
                       weights: [WeightSpec(name: "depthwise_kernel", shape: [3, 3, channels, 1], trainable: true)])
                batchNorm(prefix + "depthwise_BN")
                append(prefix + "depthwise_relu", .relu6)
                conv(prefix + "project", filters: pointwiseFilters, kernelSize: 1, stride: 1)
                batchNorm(prefix + "project_BN")
                if inChannels == pointwiseFilters && stride == 1 {
                    append(prefix + "add", .add, inputs: [blockInput, last])
                }
                blockID += 1
            }
        }

        // Head: the last 1x1 convolution grows with alpha only above 1.
        let lastFilters = alpha > 1.0 ? makeDivisible(1280 * alpha) : 1280
        conv("Conv_1", filters: lastFilters, kernelSize: 1, stride: 1)
        batchNorm("Conv_1_bn")
        append("out_relu", .relu6)

        if configuration.includeTop {
            append("global_average_pooling2d", .globalAveragePool)
            let features = shape[0]
            append("predictions", .dense(units: configuration.classes, activation: configuration.classifierActivation), weights: [
                WeightSpec(name: "kernel", shape: [features, configuration.classes], trainable: true),
                WeightSpec(name: "bias", shape: [configuration.classes], trainable: true),
            ])
        } else if configuration.pooling == .avg {
            append("global_average_pooling2d", .globalAveragePool)
        } else if configuration.pooling == .max {
            append("global_max_pooling2d", .globalMaxPool)
        }
        return layers
    }

    static func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
}
