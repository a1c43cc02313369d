import Foundation
import MobileNetKernels
import MobileNetModel

/// How the values of a `.tflite` file are stored.
public enum TFLiteQuantizationKind: String, Sendable, Hashable, Codable {
    /// Float32 weights and activations.
    case float32 = "float32"
    /// Float16 weights, dequantized to float32 by the graph (TFLiteConverter's float16 option).
    case float16Weights = "float16-weights"
    /// Int8 weights with float activations (post-training dynamic-range quantization).
    case dynamicRange = "dynamic-range"
    /// Integer weights and activations (TF-slim's quantization-aware uint8 models, TF2
    /// full-integer post-training quantization): the integer kernels run it.
    case fullInteger = "full-integer"
}

/// A `.tflite` file recognised as MobileNetV2 (paper arXiv:1801.04381, Table 2, at any width
/// multiplier and input size): the convolutions of its graph matched one for one, in order, to
/// the Keras layers of ``/MobileNetModel/MobileNetV2Architecture`` (TF-slim's `expanded_conv_N`
/// scopes are Keras's `block_N` layers), and its head read as Dense layers.
///
/// Recognised graphs: [QUANTIZE] → the 52 convolutions and 10 residual ADDs (with PAD before a
/// VALID stride-2 depthwise convolution, or SAME padding, which is the same here) → global
/// average pooling (TF-slim's `AVERAGE_POOL_2D` over the whole map, or Keras's `MEAN` over
/// height and width) → [RESHAPE/SQUEEZE] → zero or more 1x1 `CONV_2D` or `FULLY_CONNECTED`
/// layers (linear or ReLU) → [SOFTMAX] → [DEQUANTIZE or QUANTIZE]. Float16 weights behind DEQUANTIZE and
/// int8 weights of dynamic-range files are dequantized.
public struct TFLiteMobileNetV2: Sendable {
    /// The file.
    public let model: TFLiteModel
    /// Alpha and input size (`includeTop` false, average pooling: the head is ``head``).
    public let configuration: MobileNetV2Configuration
    /// The backbone's weights by Keras layer name, dequantized to Float32, BatchNorm already
    /// folded into the convolutions by the converter (each BatchNorm layer is the identity with
    /// the convolution's bias as `beta`: `gamma` 1, `moving_mean` 0, `moving_variance` 1 - epsilon,
    /// so folding it again changes no bit).
    public let backboneWeights: KerasWeightSet
    /// The head's Dense layers (TF-slim's 1x1 logits convolution is one), dequantized; the last
    /// ends with softmax whether or not the file applies it (probabilities); nil for a feature-vector file.
    public let head: DenseHead?
    /// Whether the file itself ends with SOFTMAX (otherwise it gives logits).
    public let hasSoftmax: Bool
    /// How its values are stored.
    public let quantizationKind: TFLiteQuantizationKind
    /// Keras layer (graph node) names → the TFLite tensor holding that layer's output. For the
    /// head's Dense layers, the Dense output; `<last>_softmax` is the SOFTMAX output when the file has one.
    public let layerTensors: [String: Int]
    /// The tensor the network's images enter: the file's input, or, behind a QUANTIZE, its output.
    public let imageTensor: Int

    /// Recognises `model` as MobileNetV2.
    ///
    /// - Throws: ``TFLiteError/notAnImageModel(path:reason:)`` naming the first operator or
    ///   tensor that does not fit (for the width multiplier that fitted longest);
    ///   ``TFLiteError/unsupportedOperator(path:index:name:reason:)`` for an operator outside the
    ///   recognised set.
    public init(model: TFLiteModel) throws(TFLiteError) {
        self.model = model
        let path = model.path
        guard model.inputs.count == 1, model.outputs.count == 1 else {
            throw .notAnImageModel(path: path, reason: "it has \(model.inputs.count) inputs and \(model.outputs.count) outputs; an image classifier or embedder has one of each")
        }
        let input = model.tensors[model.inputs[0]]
        guard input.shape.count == 4, input.shape[0] == 1, input.shape[3] == 3, input.shape[1] >= 32, input.shape[2] >= 32 else {
            throw .notAnImageModel(path: path, reason: "its input \(input.name) has shape \(input.shape); an image model takes [1, height, width, 3] (at least 32x32)")
        }
        guard [.float32, .uint8, .int8].contains(input.type) else {
            throw .notAnImageModel(path: path, reason: "its input has type \(input.type.name); images enter as FLOAT32, UINT8 or INT8")
        }
        var ops = model.operators
        // DEQUANTIZE of a constant (float16 weights) is folded into the constant.
        let producers = Dictionary(model.operators.flatMap { op in op.outputs.map { ($0, op) } }, uniquingKeysWith: { a, _ in a })
        ops.removeAll { $0.builtinCode == 6 && model.input($0, 0)?.data != nil }
        var image = input.index
        if let first = ops.first, first.builtinCode == 114, first.inputs.first == input.index {
            image = first.outputs[0]
            ops.removeFirst()
        }
        imageTensor = image
        let matcher = Matcher(model: model, ops: ops, producers: producers, image: image)
        var best: (TFLiteError, Int)?
        var found: Matcher.Result?
        let conv1Filters = ops.first.flatMap { model.input($0, 1)?.shape.first }
        for alpha in MobileNetV2Configuration.officialAlphas {
            let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: input.shape[1], inputWidth: input.shape[2], includeTop: false, pooling: .avg)
            do {
                found = try matcher.match(configuration)
                break
            } catch {
                if case .mismatch(let error, let matched) = error {
                    let preferred = conv1Filters == MobileNetV2Architecture.stemChannels(alpha: alpha) && (best?.1 ?? -1) < matched
                    if best == nil || preferred || matched > best!.1 { best = (error, matched) }
                } else if case .fatal(let error) = error {
                    throw error
                }
            }
        }
        guard let found else { throw best?.0 ?? .notAnImageModel(path: path, reason: "no operators") }
        configuration = found.configuration
        backboneWeights = found.weights
        head = found.head
        hasSoftmax = found.hasSoftmax
        layerTensors = found.layerTensors
        let convolutionWeights = model.operators.filter { [3, 4, 9].contains($0.builtinCode) }.compactMap { model.input($0, 1) }
        let activationsQuantized = model.tensors[image].type != .float32
        if activationsQuantized {
            quantizationKind = .fullInteger
        } else if convolutionWeights.contains(where: { $0.type == .int8 || $0.type == .uint8 }) {
            quantizationKind = .dynamicRange
        } else if model.operators.contains(where: { $0.builtinCode == 6 && model.input($0, 0)?.type == .float16 }) {
            quantizationKind = .float16Weights
        } else {
            quantizationKind = .float32
        }
    }

    /// The number of classes of the head, 0 for a feature-vector file.
    public var classes: Int { head?.classes ?? 0 }
}

/// Matches the operators to the Keras layers of one configuration.
private struct Matcher {
    let model: TFLiteModel
    let ops: [TFLiteOperator]
    let producers: [Int: TFLiteOperator]
    let image: Int

    enum Failure: Error {
        /// Did not fit this configuration after `matched` operators.
        case mismatch(TFLiteError, Int)
        /// Does not fit any configuration (an unsupported operator, a damaged constant).
        case fatal(TFLiteError)
    }

    struct Result {
        var configuration: MobileNetV2Configuration
        var weights: KerasWeightSet
        var head: DenseHead?
        var hasSoftmax: Bool
        var layerTensors: [String: Int]
    }

    func match(_ configuration: MobileNetV2Configuration) throws(Failure) -> Result {
        let path = model.path
        let layers: [LayerSpec]
        do { layers = try MobileNetV2Architecture.layers(for: configuration) } catch { throw .fatal(.notAnImageModel(path: path, reason: error.description)) }
        var position = 0
        var tensorOf: [String: Int] = ["input_layer": image]
        var weights: [KerasLayerWeights] = []
        var pendingPad: Padding?
        func mismatch(_ reason: String) -> Failure { .mismatch(.notAnImageModel(path: path, reason: reason), position) }
        func describe(_ op: TFLiteOperator) -> String { "operator \(op.index) (\(op.name))" }
        func next() -> TFLiteOperator? { position < ops.count ? ops[position] : nil }
        var lastConvolution: (name: String, op: TFLiteOperator)?
        var pendingBias: [Float]?

        /// One Conv2D or DepthwiseConv2D layer: the next operator (after a PAD for a ZeroPadding2D).
        func convolution(_ spec: LayerSpec, depthwise: Bool, kernelSize k: Int, stride: Int) throws(Failure) {
            let alphaText = "MobileNetV2 alpha \(configuration.alpha)"
            var source = tensorOf[spec.inputs[0]]
            var viaPad = false
            if let pending = pendingPad, let pad = next(), pad.builtinCode == 34 {
                // PAD then a VALID depthwise convolution (Keras's ZeroPadding2D kept by the converter).
                guard pad.inputs.first == source, let amounts = model.input(pad, 1)?.data, amounts.count == 32 else {
                    throw mismatch("\(describe(pad)) does not pad the output of the layer before \(spec.name) by constant amounts")
                }
                let v = amounts.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }.map { Int($0) }
                guard v[0] == 0, v[1] == 0, v[6] == 0, v[7] == 0, v[2...5].allSatisfy({ $0 >= 0 }),
                      Padding(top: v[2], bottom: v[3], left: v[4], right: v[5]) == pending else {
                    throw mismatch("\(describe(pad)) pads \(v); \(spec.name) of \(alphaText) pads \(pending)")
                }
                source = pad.outputs[0]
                viaPad = true
                position += 1
            }
            let code: Int32 = depthwise ? 4 : 3
            guard let op = next(), op.builtinCode == code else {
                let got = next().map(describe) ?? "the end of the graph"
                throw mismatch("\(alphaText) has \(depthwise ? "DEPTHWISE_CONV_2D" : "CONV_2D") \(spec.name) where the file has \(got)")
            }
            guard let source, op.inputs.first == source else {
                throw mismatch("\(describe(op)) does not read the output of the layer before \(spec.name)")
            }
            if let pending = pendingPad, !viaPad {
                // SAME padding in place of ZeroPadding2D + VALID: the same amounts for these sizes.
                let inShape = model.tensors[source].shape
                let same = Padding.same(inputHeight: inShape[1], inputWidth: inShape[2], kernelSize: k, stride: stride)
                guard op.options.padding == .same, same == pending else {
                    throw mismatch("\(describe(op)) pads as \(op.options.padding) where \(spec.name) pads \(pending)")
                }
            } else if viaPad, op.options.padding != .valid, k > 1 {
                throw mismatch("\(describe(op)) pads again after a PAD")
            }
            pendingPad = nil
            guard let w = model.input(op, 1) else { throw mismatch("\(describe(op)) has no weights") }
            // Keras shapes: HWIO for Conv2D, [k, k, C, 1] for DepthwiseConv2D; TFLite: OHWI and [1, k, k, C].
            let kerasShape = spec.weights[0].shape
            let expected = depthwise ? [1, kerasShape[0], kerasShape[1], kerasShape[2]] : [kerasShape[3], kerasShape[0], kerasShape[1], kerasShape[2]]
            guard w.shape == expected else {
                throw mismatch("\(describe(op)) has weights \(w.shape); \(spec.name) of \(alphaText) has \(expected)")
            }
            guard op.options.dilationH == 1, op.options.dilationW == 1 else {
                throw mismatch("\(describe(op)) is dilated \(op.options.dilationW)x\(op.options.dilationH); \(spec.name) is not")
            }
            guard op.options.strideH == stride, op.options.strideW == stride else {
                throw mismatch("\(describe(op)) has stride \(op.options.strideW)x\(op.options.strideH); \(spec.name) has \(stride)")
            }
            let out = model.output(op)
            guard out.shape == [1] + spec.outputShape else {
                throw mismatch("\(describe(op)) gives \(out.shape); \(spec.name) gives \([1] + spec.outputShape)")
            }
            let kernel: [Float]
            do { kernel = try constant(w, role: "weights", op: op) } catch { throw .fatal(error) }
            // OHWI → HWIO; [1, k, k, C] is already [k, k, C, 1] in memory.
            var values = kernel
            if !depthwise {
                let (o, h, wd, i) = (expected[0], expected[1], expected[2], expected[3])
                for oc in 0..<o { for y in 0..<h { for x in 0..<wd { for ic in 0..<i {
                    values[((y * wd + x) * i + ic) * o + oc] = kernel[((oc * h + y) * wd + x) * i + ic]
                } } } }
            }
            let channels = depthwise ? expected[3] : expected[0]
            var bias = [Float](repeating: 0, count: channels)
            if let b = model.input(op, 2) {
                do { bias = try constant(b, role: "bias", op: op) } catch { throw .fatal(error) }
                guard bias.count == channels else { throw mismatch("\(describe(op)) has \(bias.count) biases for \(channels) channels") }
            }
            weights.append(KerasLayerWeights(name: spec.name, arrays: [WeightArray(name: spec.weights[0].name, shape: kerasShape, values: values)]))
            lastConvolution = (spec.name, op)
            pendingBias = bias
            tensorOf[spec.name] = out.index
            position += 1
        }

        for spec in layers {
            let alphaText = "MobileNetV2 alpha \(configuration.alpha)"
            switch spec.kind {
            case .input:
                continue
            case .conv2D(_, let k, let stride):
                try convolution(spec, depthwise: false, kernelSize: k, stride: stride)
            case .depthwiseConv2D(let k, let stride, _):
                try convolution(spec, depthwise: true, kernelSize: k, stride: stride)
            case .batchNorm:
                guard let (convName, _) = lastConvolution, let bias = pendingBias else { throw mismatch("\(spec.name) follows no convolution") }
                let c = bias.count
                let epsilon = MobileNetV2Architecture.batchNormEpsilon
                weights.append(KerasLayerWeights(name: spec.name, arrays: [
                    WeightArray(name: "gamma", shape: [c], values: [Float](repeating: 1, count: c)),
                    WeightArray(name: "beta", shape: [c], values: bias),
                    WeightArray(name: "moving_mean", shape: [c], values: [Float](repeating: 0, count: c)),
                    WeightArray(name: "moving_variance", shape: [c], values: [Float](repeating: 1 - epsilon, count: c)),
                ]))
                pendingBias = nil
                tensorOf[spec.name] = tensorOf[convName]
                // The convolution's activation: ReLU6 exactly when the next Keras layer is ReLU6.
                let index = layers.firstIndex { $0.name == spec.name }!
                let followedByReLU6: Bool = { if index + 1 < layers.count, case .relu6 = layers[index + 1].kind { return true } else { return false } }()
                let activation = lastConvolution!.op.options.activation
                guard activation == (followedByReLU6 ? .relu6 : TFLiteOperatorOptions.Activation.none) else {
                    throw mismatch("\(describe(lastConvolution!.op)) has activation \(activation.map { "\($0)" } ?? "unknown"); \(convName) is \(followedByReLU6 ? "followed by ReLU6" : "linear")")
                }
            case .relu6:
                tensorOf[spec.name] = tensorOf[spec.inputs[0]]
            case .zeroPadding(let p):
                pendingPad = p
                tensorOf[spec.name] = tensorOf[spec.inputs[0]]
            case .add:
                guard let op = next(), op.builtinCode == 0 else {
                    throw mismatch("\(alphaText) has the residual ADD \(spec.name) where the file has \(next().map(describe) ?? "the end of the graph")")
                }
                let expected = Set(spec.inputs.compactMap { tensorOf[$0] })
                guard Set(op.inputs) == expected, op.inputs.count == 2, op.options.activation == TFLiteOperatorOptions.Activation.none else {
                    throw mismatch("\(describe(op)) does not add the input and output of \(spec.name.replacingOccurrences(of: "_add", with: "")) without activation")
                }
                tensorOf[spec.name] = op.outputs[0]
                position += 1
            case .globalAveragePool:
                guard let op = next() else { throw mismatch("the graph ends before the global average pooling") }
                let x = model.tensors[op.inputs.first ?? 0]
                guard op.inputs.first == tensorOf[spec.inputs[0]] else { throw mismatch("\(describe(op)) does not read the last convolution's output") }
                if op.builtinCode == 1 {
                    guard op.options.filterH == x.shape[1], op.options.filterW == x.shape[2], op.options.padding == .valid,
                          op.options.activation == TFLiteOperatorOptions.Activation.none else {
                        throw mismatch("\(describe(op)) is not an average over the whole \(x.shape[1])x\(x.shape[2]) map")
                    }
                } else if op.builtinCode == 40 {
                    let axes = model.input(op, 1)?.data.map { d in d.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } } ?? []
                    guard Set(axes) == [1, 2] else { throw mismatch("\(describe(op)) averages over axes \(axes), not height and width") }
                } else {
                    throw mismatch("\(alphaText) has global average pooling after \(spec.inputs[0]) where the file has \(describe(op))")
                }
                tensorOf[spec.name] = op.outputs[0]
                position += 1
            case .globalMaxPool, .dense:
                throw .fatal(.notAnImageModel(path: path, reason: "internal: unexpected layer \(spec.name)"))
            }
        }
        // The head: Dense layers (1x1 CONV_2D on the pooled 1x1 map or FULLY_CONNECTED), reshapes, softmax.
        var current = tensorOf["global_average_pooling2d"]!
        var denseLayers: [(op: TFLiteOperator, kernel: Tensor, bias: [Float], relu: Bool)] = []
        var softmax: TFLiteOperator?
        while let op = next() {
            guard op.inputs.first == current else { throw mismatch("\(describe(op)) does not continue the head from tensor \(current)") }
            switch op.builtinCode {
            case 22, 43: // RESHAPE, SQUEEZE
                guard model.output(op).elementCount == model.tensors[current].elementCount else { throw mismatch("\(describe(op)) changes the size") }
            case 3 where softmax == nil, 9 where softmax == nil:
                guard let w = model.input(op, 1) else { throw mismatch("\(describe(op)) has no weights") }
                let width = model.tensors[current].elementCount
                let units = w.shape.first ?? 0
                let ok = op.builtinCode == 9 ? w.shape == [units, width] : (w.shape == [units, 1, 1, width] && model.tensors[current].shape.count == 4)
                guard ok, units >= 1 else { throw mismatch("\(describe(op)) with weights \(w.shape) is not a Dense layer on \(width) values") }
                guard let activation = op.options.activation, activation == .none || activation == .relu else {
                    throw mismatch("\(describe(op)) has an activation other than none or ReLU")
                }
                let kernel: [Float], bias: [Float]
                do {
                    kernel = try constant(w, role: "weights", op: op)
                    bias = try model.input(op, 2).map { t throws(TFLiteError) in try constant(t, role: "bias", op: op) } ?? [Float](repeating: 0, count: units)
                } catch { throw .fatal(error) }
                guard bias.count == units else { throw mismatch("\(describe(op)) has \(bias.count) biases for \(units) units") }
                var transposed = [Float](repeating: 0, count: kernel.count)
                for u in 0..<units { for i in 0..<width { transposed[i * units + u] = kernel[u * width + i] } }
                denseLayers.append((op, Tensor(shape: [width, units], scalars: transposed), bias, activation == .relu))
            case 25 where softmax == nil && !denseLayers.isEmpty:
                guard op.options.beta == 1 else { throw mismatch("\(describe(op)) has beta \(op.options.beta); only 1 is supported") }
                softmax = op
            case 6 where position == ops.count - 1, 114 where position == ops.count - 1:
                break // DEQUANTIZE of the output, or QUANTIZE to its uint8/int8 output type
            default:
                throw .fatal(.unsupportedOperator(path: path, index: op.index, name: op.name,
                                                  reason: "after the pooling a MobileNetV2 model has Dense layers (1x1 CONV_2D or FULLY_CONNECTED), RESHAPE/SQUEEZE, SOFTMAX, and a last DEQUANTIZE or QUANTIZE only"))
            }
            current = op.outputs[0]
            position += 1
        }
        guard model.outputs == [current] else { throw mismatch("the model's output is tensor \(model.outputs), not the end of the head (tensor \(current))") }
        var head: DenseHead?
        var layerTensors = tensorOf
        if !denseLayers.isEmpty {
            let names = denseLayers.count == 1 ? ["predictions"] : denseLayers.indices.map { $0 == 0 ? "dense" : "dense_\($0)" }
            var headLayers: [DenseHead.Layer] = []
            for (i, layer) in denseLayers.enumerated() {
                let last = i == denseLayers.count - 1
                headLayers.append(DenseHead.Layer(name: names[i], kernel: layer.kernel, bias: layer.bias, activation: last ? .softmax : (layer.relu ? .relu : .linear)))
                layerTensors[names[i]] = layer.op.outputs[0]
                if layer.relu { layerTensors[names[i] + "_relu"] = layer.op.outputs[0] }
                if last, layer.relu { throw mismatch("the last Dense layer, \(describe(layer.op)), has ReLU; a classifier's last layer is linear") }
            }
            if let softmax {
                layerTensors[names[names.count - 1] + "_softmax"] = softmax.outputs[0]
                layerTensors.removeValue(forKey: names[names.count - 1]) // the graph's Dense node is the logits, before softmax
                layerTensors[names[names.count - 1] + "_logits"] = denseLayers[denseLayers.count - 1].op.outputs[0]
            }
            do { head = try DenseHead(layers: headLayers, source: path) } catch { throw .fatal(.notAnImageModel(path: path, reason: error.description)) }
        }
        return Result(configuration: configuration, weights: KerasWeightSet(source: path, layers: weights), head: head, hasSoftmax: softmax != nil,
                      layerTensors: layerTensors)
    }

    /// A constant's values as Float32: float32 as stored, float16 widened, integer values
    /// dequantized per channel, or the constant behind a DEQUANTIZE.
    func constant(_ t: TFLiteTensor, role: String, op: TFLiteOperator) throws(TFLiteError) -> [Float] {
        guard let data = t.data else {
            if let producer = producers[t.index], producer.builtinCode == 6, let source = model.input(producer, 0), source.data != nil {
                return try constant(source, role: role, op: op)
            }
            throw .unsupportedOperator(path: model.path, index: op.index, name: op.name, reason: "its \(role) (tensor \(t.index)) are not constant")
        }
        let values: [Float]
        switch t.type {
        case .float32: values = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        case .float16: values = data.withUnsafeBytes { $0.bindMemory(to: UInt16.self).map { Float(Float16(bitPattern: $0)) } }
        case .uint8, .int8, .int32:
            guard let q = t.quantization else {
                throw .unsupportedOperator(path: model.path, index: op.index, name: op.name, reason: "its \(role) (tensor \(t.index), \(t.type.name)) have no quantization")
            }
            let raw: [Int32] = data.withUnsafeBytes { bytes in
                switch t.type {
                case .uint8: bytes.bindMemory(to: UInt8.self).map { Int32($0) }
                case .int8: bytes.bindMemory(to: Int8.self).map { Int32($0) }
                default: Array(bytes.bindMemory(to: Int32.self))
                }
            }
            let count = raw.count
            let channels = q.scales.count
            let inner = q.isPerTensor ? count : t.shape[(q.dimension + 1)...].reduce(1, *)
            values = (0..<count).map { i in
                let c = q.isPerTensor ? 0 : (i / inner) % channels
                return q.scales[c] * Float(raw[i] - Int32(q.zeroPoints[c]))
            }
        default:
            throw .unsupportedOperator(path: model.path, index: op.index, name: op.name, reason: "its \(role) have type \(t.type.name)")
        }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw .damaged(path: model.path, reason: "the \(role) of operator \(op.index) (\(op.name)) hold \(values[bad]) at \(bad)")
        }
        return values
    }
}

extension TFLiteMobileNetV2 {
    /// The backend the file runs on: ``TFLiteIntegerBackend`` (its own integer operators, on
    /// XNNPACK, or on the plain-Swift kernels when `floatBackend` is the reference backend) for
    /// a fully quantized file, `floatBackend` for the others (weights dequantized).
    ///
    /// - Parameters:
    ///   - floatBackend: the backend of float, float16 and dynamic-range files (oneDNN by default in the CLI).
    ///   - normalization: how images are preprocessed, `(pixel - mean[c]) / std[c]` (see ``TFLiteIntegerBackend/InputMapping``).
    /// - Throws: ``TFLiteError`` for an operator the integer kernels do not run.
    public func backend(float floatBackend: any InferenceBackend, normalization: (mean: [Float], std: [Float])) throws(TFLiteError) -> any InferenceBackend {
        guard quantizationKind == .fullInteger else { return floatBackend }
        // The plain-Swift oracle asked for (`--backend reference`) means the integer oracle too.
        let kernels: TFLiteIntegerBackend.Kernels = floatBackend is ReferenceBackend ? .reference : .xnnpack
        return try TFLiteIntegerBackend(network: self, normalization: normalization, kernels: kernels,
                                        threads: floatBackend.threadCount ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The architecture name of the embedding identity (the embedding cache's key) on `backend`:
    /// `mobilenetv2` for float kernels; for integer kernels the kernels' name too
    /// (`mobilenetv2+tflite-xnnpack`), since XNNPACK's and the reference kernels' outputs differ
    /// by a quantization step now and then and must not share cached embeddings.
    public static func architectureName(backend: any InferenceBackend) -> String {
        backend is TFLiteIntegerBackend ? "mobilenetv2+\(backend.name)" : "mobilenetv2"
    }

    /// The pooled embedding network (`include_top=False`, `pooling`) of the file on `backend`.
    ///
    /// - Throws: ``/MobileNetModel/ModelError`` and the backend's errors.
    public func embeddingNetwork(pooling: Pooling, backend: any InferenceBackend) throws -> MobileNetV2 {
        var c = configuration
        c.pooling = pooling
        return try MobileNetV2(configuration: c, weights: backboneWeights, backend: backend)
    }
}
