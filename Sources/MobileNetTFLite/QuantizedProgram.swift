import Foundation

/// A fully quantized TFLite graph ready to run in integer arithmetic: every operator checked
/// and its constants decoded once (weights minus their zero points, biases, the requantization
/// multipliers of each output channel, the activation bounds), run by the plain-Swift integer
/// kernels (``run(_:keep:)``) with TFLite's semantics (per-channel scales, zero points,
/// the rounding of ``QuantizedArithmetic``, ReLU6 as a clamp in the quantized domain, ADD's
/// rescaling, average pooling's rounded division, the softmax of LiteRT's uint8/int8 kernel).
///
/// Operators: CONV_2D, DEPTHWISE_CONV_2D (depth multiplier 1), ADD, AVERAGE_POOL_2D, MEAN
/// (over height and width), FULLY_CONNECTED, RESHAPE, SQUEEZE, SOFTMAX, PAD, QUANTIZE and
/// DEQUANTIZE, on uint8 (TF-slim's quantization-aware models) or int8 (TF2 post-training
/// quantization) activations; anything else is refused naming the operator and its index.
public struct QuantizedProgram: Sendable {
    /// A tensor's element type and quantization as the kernels see it.
    public struct TensorInfo: Sendable, Equatable {
        /// The shape (batch 1).
        public var shape: [Int]
        /// `uint8`, `int8`, `int32` or `float32`.
        public var type: TFLiteTensorType
        /// Per-tensor scale and zero point (activations are per tensor); 1 and 0 for float.
        public var scale: Float
        public var zeroPoint: Int32

        /// The values a `type` element can hold.
        var range: ClosedRange<Int32> { type == .uint8 ? 0...255 : type == .int8 ? -128...127 : Int32.min...Int32.max }
        /// The number of elements.
        var count: Int { shape.reduce(1, *) }
    }

    /// The model it was compiled from.
    public let path: String
    /// Every tensor of the graph by index (constants too; only activations are run).
    public let tensors: [TensorInfo]
    /// The graph input: a float32 tensor followed by QUANTIZE, or a uint8/int8 one.
    public let input: Int
    /// The steps in execution order.
    let steps: [Step]

    enum Kind: Sendable {
        case convolution(Convolution)
        case add(Add)
        case averagePool(Pool)
        case mean(Mean)
        case fullyConnected(Convolution)
        case copy
        case softmax(Softmax)
        case pad(Pad)
        case quantize(QuantizedArithmetic.Multiplier?)
        case dequantize
    }

    struct Step: Sendable {
        var index: Int
        var kind: Kind
        var inputs: [Int]
        var output: Int
    }

    /// Dense, depthwise and fully connected layers: `acc = bias + Σ (w - wZero)(x - xZero)`, then
    /// requantized per output channel and clamped.
    struct Convolution: Sendable {
        var depthwise: Bool
        /// Weights minus their zero points: OHWI (dense), HWC (depthwise), `[out, in]` (fully connected).
        var weights: [Int32]
        var bias: [Int32]
        var kernelH: Int, kernelW: Int
        var strideH: Int, strideW: Int
        var dilationH: Int, dilationW: Int
        var padTop: Int, padLeft: Int
        var inputChannels: Int, outputChannels: Int
        var multipliers: [QuantizedArithmetic.Multiplier]
        var inputZero: Int32, outputZero: Int32
        var bounds: ClosedRange<Int32>
    }

    struct Add: Sendable {
        var zero1: Int32, zero2: Int32, outputZero: Int32
        var multiplier1: QuantizedArithmetic.Multiplier, multiplier2: QuantizedArithmetic.Multiplier, outputMultiplier: QuantizedArithmetic.Multiplier
        var bounds: ClosedRange<Int32>
    }

    struct Pool: Sendable {
        var filterH: Int, filterW: Int, strideH: Int, strideW: Int, padTop: Int, padLeft: Int
        var bounds: ClosedRange<Int32>
        var signed: Bool
    }

    struct Mean: Sendable {
        var multiplier: QuantizedArithmetic.Multiplier
        var inputZero: Int32, outputZero: Int32
        var bounds: ClosedRange<Int32>
    }

    struct Softmax: Sendable {
        /// `exp(-inputScale * beta * d)` for `d` = 0 ... 255, as LiteRT's lookup table.
        var table: [Float]
        var outputScale: Float
        var outputZero: Int32
        var bounds: ClosedRange<Int32>
    }

    struct Pad: Sendable {
        var top: Int, bottom: Int, left: Int, right: Int
        var value: Int32
    }

    /// Compiles `model`'s operators (all of them, in order).
    ///
    /// - Throws: ``TFLiteError/unsupportedOperator(path:index:name:reason:)`` for an operator
    ///   outside the set above or with options it does not handle (dilation, a depth multiplier
    ///   other than 1, float activations); ``TFLiteError/damaged(path:reason:)`` for shapes or
    ///   quantization that do not fit the operator.
    public init(model: TFLiteModel) throws(TFLiteError) {
        path = model.path
        tensors = model.tensors.map { t in
            TensorInfo(shape: t.shape, type: t.type, scale: t.quantization?.scales.first ?? 1,
                       zeroPoint: Int32(clamping: t.quantization?.zeroPoints.first ?? 0))
        }
        guard model.inputs.count == 1 else {
            throw .notAnImageModel(path: model.path, reason: "it has \(model.inputs.count) inputs; an image model has one")
        }
        input = model.inputs[0]
        var steps: [Step] = []
        for op in model.operators {
            steps.append(try Self.compile(op, model: model))
        }
        self.steps = steps
    }

    // MARK: - Compiling

    private static func compile(_ op: TFLiteOperator, model: TFLiteModel) throws(TFLiteError) -> Step {
        func unsupported(_ reason: String) -> TFLiteError { .unsupportedOperator(path: model.path, index: op.index, name: op.name, reason: reason) }
        func tensor(_ position: Int) throws(TFLiteError) -> TFLiteTensor {
            guard let t = model.input(op, position) else { throw unsupported("input \(position) is missing") }
            return t
        }
        func quantized(_ t: TFLiteTensor, role: String) throws(TFLiteError) -> TFLiteQuantization {
            guard t.type == .uint8 || t.type == .int8, let q = t.quantization, q.isPerTensor else {
                throw unsupported("its \(role) (tensor \(t.index), \(t.type.name)) is not a per-tensor quantized uint8 or int8 tensor")
            }
            return q
        }
        guard !op.options.hasCustomOptions else { throw unsupported("it has custom options or intermediate tensors") }
        /// A requantization scale the integer kernels can take (``QuantizedArithmetic/multiplierRange``).
        func multiplier(_ real: Double, _ what: String) throws(TFLiteError) -> QuantizedArithmetic.Multiplier {
            guard QuantizedArithmetic.multiplierRange.contains(real) else {
                throw unsupported("its requantization scale (\(what)) is \(real), outside 2^-32 ... 256: the tensors' quantization scales are not usable")
            }
            return QuantizedArithmetic.quantizeMultiplier(real)
        }
        let output = model.output(op)
        let step = { (kind: Kind, inputs: [Int]) in Step(index: op.index, kind: kind, inputs: inputs, output: output.index) }
        switch op.builtinCode {
        case 3, 4, 9: // CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED
            let x = try tensor(0), w = try tensor(1)
            let xq = try quantized(x, role: "input"), yq = try quantized(output, role: "output")
            guard let wData = w.data, let wq = w.quantization, w.type == .uint8 || w.type == .int8 else {
                throw unsupported("its weights (tensor \(w.index)) are not constant quantized uint8 or int8 values")
            }
            let kind = op.builtinCode
            let outChannels = kind == 4 ? (w.shape.last ?? 0) : (w.shape.first ?? 0)
            let perChannelDimension = kind == 4 ? w.shape.count - 1 : 0
            guard wq.isPerTensor || wq.dimension == perChannelDimension else {
                throw unsupported("its weights are quantized along dimension \(wq.dimension), not the output channels")
            }
            var bias = [Int32](repeating: 0, count: outChannels)
            if let b = model.input(op, 2) {
                guard b.type == .int32, let data = b.data, b.elementCount == outChannels else {
                    throw unsupported("its bias (tensor \(b.index)) is not a constant int32 vector of \(outChannels) values")
                }
                bias = data.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
            }
            var multipliers: [QuantizedArithmetic.Multiplier] = []
            var weights = [Int32](repeating: 0, count: w.elementCount)
            let raw: [Int32] = wData.withUnsafeBytes { bytes in
                w.type == .uint8 ? bytes.bindMemory(to: UInt8.self).map { Int32($0) } : bytes.bindMemory(to: Int8.self).map { Int32($0) }
            }
            for c in 0..<outChannels {
                // As LiteRT computes the effective scale: per tensor (GetQuantizedConvolutionMultipler)
                // the input and weight scales multiplied in Float, then divided in Double; per channel
                // (PopulateConvolutionQuantizationParams) all in Double. The Float product changes the
                // multiplier's last bits, and with them a rounding tie now and then.
                let real = wq.isPerTensor ? Double(xq.scales[0] * wq.scales[0]) / Double(yq.scales[0])
                    : Double(xq.scales[0]) * Double(wq.scales[c]) / Double(yq.scales[0])
                multipliers.append(try multiplier(real, "input scale x weight scale / output scale, channel \(c)"))
            }
            let perChannelStride = kind == 4 ? 1 : (w.elementCount / max(outChannels, 1))
            for i in 0..<raw.count {
                let c = kind == 4 ? i % max(outChannels, 1) : i / max(perChannelStride, 1)
                weights[i] = raw[i] - Int32(wq.zeroPoints[wq.isPerTensor ? 0 : c])
            }
            guard let activation = op.options.activation, [.none, .relu, .relu6, .reluN1To1].contains(activation) else {
                throw unsupported("its fused activation is not NONE, RELU, RELU_N1_TO_1 or RELU6")
            }
            let bounds = QuantizedArithmetic.activationRange(activation, scale: yq.scales[0], zeroPoint: yq.zeroPoints[0],
                                                             typeRange: output.type == .uint8 ? 0...255 : -128...127)
            if kind == 9 {
                guard w.shape.count == 2, op.options.weightsFormat == 0 else { throw unsupported("its weights are not a plain [out, in] matrix") }
                let inputs = w.shape[1]
                guard x.elementCount % inputs == 0, x.elementCount / inputs == 1 else {
                    throw unsupported("its input of shape \(x.shape) is not one row of \(inputs) values")
                }
                return step(.fullyConnected(Convolution(depthwise: false, weights: weights, bias: bias, kernelH: 1, kernelW: 1, strideH: 1, strideW: 1,
                                                        dilationH: 1, dilationW: 1, padTop: 0, padLeft: 0, inputChannels: inputs,
                                                        outputChannels: outChannels, multipliers: multipliers, inputZero: Int32(xq.zeroPoints[0]),
                                                        outputZero: Int32(yq.zeroPoints[0]), bounds: bounds)), [x.index])
            }
            guard x.shape.count == 4, output.shape.count == 4, w.shape.count == 4, x.shape[0] == 1 else {
                throw unsupported("its input, weights or output is not a 4-D NHWC tensor of batch 1")
            }
            guard op.options.dilationW == 1, op.options.dilationH == 1 else { throw unsupported("dilated convolutions are not supported") }
            guard op.options.strideW >= 1, op.options.strideH >= 1 else { throw unsupported("stride \(op.options.strideW)x\(op.options.strideH)") }
            let (kh, kw) = (w.shape[1], w.shape[2])
            let inChannels = x.shape[3]
            if kind == 4 {
                guard op.options.depthMultiplier == 1 || (op.options.depthMultiplier == 0 && outChannels == inChannels), outChannels == inChannels,
                      w.shape[0] == 1 else {
                    throw unsupported("only a depth multiplier of 1 is supported (weights \(w.shape), \(inChannels) input channels)")
                }
            } else {
                guard w.shape[3] == inChannels else { throw unsupported("its weights \(w.shape) do not take \(inChannels) input channels") }
            }
            let pad = try padding(op, input: x.shape, output: output.shape, kernel: (kh, kw), unsupported: unsupported)
            guard output.shape[3] == outChannels else { throw unsupported("its output \(output.shape) does not have \(outChannels) channels") }
            return step(.convolution(Convolution(depthwise: kind == 4, weights: weights, bias: bias, kernelH: kh, kernelW: kw,
                                                 strideH: op.options.strideH, strideW: op.options.strideW, dilationH: 1, dilationW: 1,
                                                 padTop: pad.top, padLeft: pad.left, inputChannels: inChannels, outputChannels: outChannels,
                                                 multipliers: multipliers, inputZero: Int32(xq.zeroPoints[0]), outputZero: Int32(yq.zeroPoints[0]),
                                                 bounds: bounds)), [x.index])
        case 0: // ADD
            let a = try tensor(0), b = try tensor(1)
            let aq = try quantized(a, role: "first input"), bq = try quantized(b, role: "second input"), yq = try quantized(output, role: "output")
            guard a.shape == b.shape, a.shape == output.shape, a.type == output.type, b.type == output.type else {
                throw unsupported("only element-wise sums of two tensors of one shape and type are supported (\(a.shape), \(b.shape))")
            }
            guard let activation = op.options.activation, [.none, .relu, .relu6, .reluN1To1].contains(activation) else {
                throw unsupported("its fused activation is not NONE, RELU, RELU_N1_TO_1 or RELU6")
            }
            // TFLite's quantized ADD (kernels/add.cc): inputs shifted left by 20 bits and rescaled to
            // twice the larger input scale, summed, and rescaled to the output; the scales combined in
            // the same mix of float and double as there.
            let leftShift = 20
            let twiceMax = Double(2 * max(aq.scales[0], bq.scales[0]))
            let m1 = Double(aq.scales[0]) / twiceMax, m2 = Double(bq.scales[0]) / twiceMax
            let mOut = twiceMax / Double(Float(1 << leftShift) * yq.scales[0])
            let bounds = QuantizedArithmetic.activationRange(activation, scale: yq.scales[0], zeroPoint: yq.zeroPoints[0],
                                                             typeRange: output.type == .uint8 ? 0...255 : -128...127)
            // (m1 and m2 are at most 1/2; the inputs' scales may not be 2^32 apart.)
            guard m1 >= 0x1p-32, m2 >= 0x1p-32, mOut.isFinite, mOut > 0, mOut < 256 else {
                throw unsupported("its input and output scales (\(aq.scales[0]), \(bq.scales[0]), \(yq.scales[0])) are too far apart for integer kernels")
            }
            return step(.add(Add(zero1: Int32(aq.zeroPoints[0]), zero2: Int32(bq.zeroPoints[0]), outputZero: Int32(yq.zeroPoints[0]),
                                 multiplier1: QuantizedArithmetic.quantizeMultiplier(m1), multiplier2: QuantizedArithmetic.quantizeMultiplier(m2),
                                 outputMultiplier: QuantizedArithmetic.quantizeMultiplier(mOut), bounds: bounds)), [a.index, b.index])
        case 1: // AVERAGE_POOL_2D
            let x = try tensor(0)
            let xq = try quantized(x, role: "input"), yq = try quantized(output, role: "output")
            guard xq == yq, x.type == output.type else { throw unsupported("its input and output quantization differ") }
            guard x.shape.count == 4, output.shape.count == 4, x.shape[0] == 1, x.shape[3] == output.shape[3] else {
                throw unsupported("its input \(x.shape) or output \(output.shape) is not NHWC of batch 1 with the same channels")
            }
            let o = op.options
            guard o.filterH >= 1, o.filterW >= 1, o.strideH >= 1, o.strideW >= 1 else {
                throw unsupported("window \(o.filterW)x\(o.filterH), stride \(o.strideW)x\(o.strideH)")
            }
            guard let activation = o.activation, [.none, .relu, .relu6, .reluN1To1].contains(activation) else {
                throw unsupported("its fused activation is not NONE, RELU, RELU_N1_TO_1 or RELU6")
            }
            let pad = try padding(op, input: x.shape, output: output.shape, kernel: (o.filterH, o.filterW), unsupported: unsupported)
            let bounds = QuantizedArithmetic.activationRange(activation, scale: yq.scales[0], zeroPoint: yq.zeroPoints[0],
                                                             typeRange: output.type == .uint8 ? 0...255 : -128...127)
            return step(.averagePool(Pool(filterH: o.filterH, filterW: o.filterW, strideH: o.strideH, strideW: o.strideW, padTop: pad.top,
                                          padLeft: pad.left, bounds: bounds, signed: x.type == .int8)), [x.index])
        case 40: // MEAN
            let x = try tensor(0), axes = try tensor(1)
            let xq = try quantized(x, role: "input"), yq = try quantized(output, role: "output")
            let axisValues: [Int32] = axes.data.map { d in d.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } } ?? []
            guard axes.type == .int32, Set(axisValues) == [1, 2], x.shape.count == 4, x.shape[0] == 1,
                  output.elementCount == x.shape[3], x.type == output.type else {
                throw unsupported("only the mean over height and width of an NHWC tensor of batch 1 is supported (axes \(axisValues))")
            }
            // LiteRT's integer MEAN over height and width: the sum of (q - inputZero) rescaled by
            // inputScale / (count * outputScale), plus outputZero (equal to its built-in kernel on
            // the tiny int8 fixture, where the variant with the zero point folded into a bias is not).
            let count = x.shape[1] * x.shape[2]
            let real = Double(xq.scales[0]) / (Double(count) * Double(yq.scales[0]))
            return step(.mean(Mean(multiplier: try multiplier(real, "input scale / (count x output scale)"), inputZero: Int32(xq.zeroPoints[0]),
                                   outputZero: Int32(yq.zeroPoints[0]), bounds: output.type == .uint8 ? 0...255 : -128...127)), [x.index])
        case 22, 43: // RESHAPE, SQUEEZE
            let x = try tensor(0)
            guard x.elementCount == output.elementCount, x.type == output.type, x.quantization == output.quantization else {
                throw unsupported("its input \(x.shape) and output \(output.shape) differ in size, type or quantization")
            }
            return step(.copy, [x.index])
        case 25: // SOFTMAX
            let x = try tensor(0)
            let xq = try quantized(x, role: "input"), yq = try quantized(output, role: "output")
            guard x.type == output.type, x.elementCount == output.elementCount, op.options.beta.isFinite, op.options.beta > 0 else {
                throw unsupported("only a softmax of one type in and out, with a positive beta, is supported")
            }
            let s = -xq.scales[0] * op.options.beta
            let table = (0...255).map { expf(s * Float($0)) }
            return step(.softmax(Softmax(table: table, outputScale: yq.scales[0], outputZero: Int32(yq.zeroPoints[0]),
                                         bounds: output.type == .uint8 ? 0...255 : -128...127)), [x.index])
        case 34: // PAD
            let x = try tensor(0), amounts = try tensor(1)
            _ = try quantized(x, role: "input")
            let values: [Int32] = amounts.data.map { d in d.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } } ?? []
            guard amounts.type == .int32, values.count == 8, values[0] == 0, values[1] == 0, values[6] == 0, values[7] == 0,
                  values.allSatisfy({ $0 >= 0 && $0 <= 64 }), x.shape.count == 4, x.quantization == output.quantization,
                  output.shape == [x.shape[0], x.shape[1] + Int(values[2] + values[3]), x.shape[2] + Int(values[4] + values[5]), x.shape[3]] else {
                throw unsupported("only zero padding of height and width (at most 64 each) is supported")
            }
            return step(.pad(Pad(top: Int(values[2]), bottom: Int(values[3]), left: Int(values[4]), right: Int(values[5]),
                                 value: Int32(x.quantization?.zeroPoints[0] ?? 0))), [x.index])
        case 114: // QUANTIZE
            let x = try tensor(0)
            let yq = try quantized(output, role: "output")
            guard x.elementCount == output.elementCount else { throw unsupported("its input and output differ in size") }
            if x.type == .float32 { return step(.quantize(nil), [x.index]) }
            let xq = try quantized(x, role: "input")
            return step(.quantize(try multiplier(Double(xq.scales[0]) / Double(yq.scales[0]), "input scale / output scale")), [x.index])
        case 6: // DEQUANTIZE
            let x = try tensor(0)
            _ = try quantized(x, role: "input")
            guard output.type == .float32, x.elementCount == output.elementCount else { throw unsupported("it does not give float32 values") }
            return step(.dequantize, [x.index])
        default:
            throw unsupported("the integer kernels run CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, MEAN, FULLY_CONNECTED, RESHAPE, SQUEEZE, SOFTMAX, PAD, QUANTIZE and DEQUANTIZE")
        }
    }

    /// TFLite's `ComputePaddingHeightWidth` for SAME (the smaller half before) and VALID, with
    /// the output size checked against the operator's output tensor.
    private static func padding(_ op: TFLiteOperator, input: [Int], output: [Int], kernel: (Int, Int),
                                unsupported: (String) -> TFLiteError) throws(TFLiteError) -> (top: Int, left: Int) {
        let (sh, sw) = (op.options.strideH, op.options.strideW)
        func one(_ size: Int, _ k: Int, _ s: Int) -> (out: Int, pad: Int) {
            if op.options.padding == .same {
                let out = (size + s - 1) / s
                return (out, max(0, ((out - 1) * s + k - size) / 2))
            }
            return (max(0, (size - k + s) / s), 0)
        }
        let h = one(input[1], kernel.0, sh), w = one(input[2], kernel.1, sw)
        guard output[1] == h.out, output[2] == w.out, h.out >= 1, w.out >= 1 else {
            throw unsupported("its output \(output) is not what \(op.options.padding == .same ? "SAME" : "VALID") padding gives for the input \(input)")
        }
        return (h.pad, w.pad)
    }
}
