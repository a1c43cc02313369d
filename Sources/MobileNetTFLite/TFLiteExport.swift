import CMobileNetTFLite
import Foundation
import MobileNetKernels

/// Why a model could not be written as a `.tflite` file.
public enum TFLiteExportError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The graph holds something the exporter does not write (an unfolded BatchNorm, max pooling,
    /// padding that is neither SAME nor VALID), or the options do not fit the quantization.
    case unsupported(reason: String)
    /// The calibration is missing, empty, for another graph, or saw non-finite activations.
    case calibration(reason: String)

    /// A one-line message.
    public var description: String {
        switch self {
        case .unsupported(let reason): "cannot export to TFLite: \(reason)"
        case .calibration(let reason): "cannot quantize to int8: \(reason)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The element type of an exported model's input or output tensor (TFLiteConverter's
/// `inference_input_type` / `inference_output_type`).
public enum TFLiteIOType: String, Sendable, Hashable, Codable, CaseIterable {
    /// Float32 values: the preprocessed image in, probabilities out; the integer model quantizes
    /// and dequantizes at its ends (QUANTIZE, DEQUANTIZE).
    case float32
    /// uint8 values through the tensor's scale and zero point (Coral's and TF-slim's convention;
    /// an image input takes raw pixels 0...255 when the scaling is uniform).
    case uint8
    /// int8 values through the tensor's scale and zero point.
    case int8
}

/// How an exported model stores its weights and computes (TensorFlow's post-training
/// quantization modes).
public enum TFLiteExportQuantization: Sendable, Equatable {
    /// Float32 weights and arithmetic.
    case none
    /// int8 weights (symmetric, per output channel) for every convolution and dense kernel of at
    /// least 1,024 values, float activations: LiteRT's hybrid kernels quantize activations on the
    /// fly (TFLiteConverter with `optimizations = [DEFAULT]` and no representative dataset).
    case dynamicRange
    /// Integer weights and activations: int8 weights symmetric per output channel, int32 biases,
    /// int8 activations per tensor with the ranges seen on calibration images (TFLiteConverter
    /// with a representative dataset and `TFLITE_BUILTINS_INT8`).
    case fullInteger(TFLiteCalibration)
}

/// The TFLite Support metadata an exported model carries, so LiteRT's and TFLite Support's
/// image classifiers (and this project's `classify --model`) use it without extra arguments.
public struct TFLiteExportMetadata: Sendable, Equatable {
    /// The model's name.
    public var name: String
    /// The model's version string.
    public var version: String
    /// What the model does.
    public var description: String
    /// Who made it.
    public var author: String
    /// Its licence.
    public var license: String
    /// The class names in output order, packed into the file as `labels.txt` (TFLite Support's
    /// TENSOR_AXIS_LABELS associated file); nil for an embedder.
    public var classNames: [String]?
    /// The input normalisation `(pixel - mean) / std`, per RGB channel or one value for all
    /// (TFLite Support's NormalizationOptions; `mean 127.5, std 127.5` is Keras's
    /// `preprocess_input`, pixels 0...255 to -1...1).
    public var mean: [Float]
    /// See ``mean``.
    public var std: [Float]

    /// Creates metadata.
    public init(name: String, version: String = "1", description: String, author: String = "", license: String = "",
                classNames: [String]?, mean: [Float] = [127.5], std: [Float] = [127.5]) {
        self.name = name
        self.version = version
        self.description = description
        self.author = author
        self.license = license
        self.classNames = classNames
        self.mean = mean
        self.std = std
    }
}

/// What ``TFLiteExporter`` writes.
public struct TFLiteExportOptions: Sendable, Equatable {
    /// The weights and arithmetic.
    public var quantization: TFLiteExportQuantization
    /// The input tensor's type; other than float32 only with full-integer quantization.
    public var inputType: TFLiteIOType
    /// The output tensor's type; other than float32 only with full-integer quantization.
    public var outputType: TFLiteIOType
    /// The range of the preprocessed input values (-1...1 for Keras's `preprocess_input`): the
    /// quantization of an integer model's input covers it (the images' whole range, not only the
    /// calibration images').
    public var inputRange: ClosedRange<Float>
    /// TFLite Support metadata; nil writes none.
    public var metadata: TFLiteExportMetadata?

    /// Creates options.
    public init(quantization: TFLiteExportQuantization = .none, inputType: TFLiteIOType = .float32, outputType: TFLiteIOType = .float32,
                inputRange: ClosedRange<Float> = -1...1, metadata: TFLiteExportMetadata? = nil) {
        self.quantization = quantization
        self.inputType = inputType
        self.outputType = outputType
        self.inputRange = inputRange
        self.metadata = metadata
    }
}

/// The activation ranges of a graph on calibration images: per node, the smallest and largest
/// value of its output over every image seen (TensorFlow's calibration: min/max, no moving
/// average). Made by ``TFLiteCalibrator``.
public struct TFLiteCalibration: Sendable, Equatable {
    /// Per node of the calibrated graph, the range of its outputs.
    public var ranges: [ClosedRange<Float>]
    /// The number of images seen.
    public var images: Int

    /// Creates a calibration from ranges (one per graph node).
    public init(ranges: [ClosedRange<Float>], images: Int) {
        self.ranges = ranges
        self.images = images
    }
}

/// Runs a float graph on calibration batches and records the range of every node's output.
/// Not thread-safe: observe batches from one task.
public final class TFLiteCalibrator {
    private let executor: any GraphExecutor
    private let nodeCount: Int
    private var low: [Float]
    private var high: [Float]
    private var images = 0

    /// Prepares an executor that returns every node's output.
    ///
    /// - Parameters:
    ///   - graph: the float graph to be exported (BatchNorm folded).
    ///   - backend: the kernels that run it (oneDNN for speed; any backend gives the same ranges
    ///     within float rounding).
    /// - Throws: the backend's errors.
    public init(graph: Graph, backend: any InferenceBackend) throws {
        let all = Graph(inputShape: graph.inputShape, nodes: graph.nodes, outputs: Array(graph.nodes.indices))
        executor = try backend.makeExecutor(for: all)
        nodeCount = graph.nodes.count
        low = [Float](repeating: .infinity, count: nodeCount)
        high = [Float](repeating: -.infinity, count: nodeCount)
    }

    /// Runs one batch and widens every node's range.
    ///
    /// - Parameter batch: `[N, H, W, 3]` NHWC, preprocessed as the model's images are.
    /// - Throws: ``TFLiteExportError/calibration(reason:)`` when a node gives a non-finite value
    ///   (the float model itself is broken); the backend's errors.
    public func observe(_ batch: Tensor) throws {
        let outputs = try executor.run(batch)
        for (node, output) in outputs.enumerated() {
            var lo = low[node], hi = high[node]
            for v in output.scalars {
                guard v.isFinite else { throw TFLiteExportError.calibration(reason: "node \(node) gives a non-finite value on a calibration image") }
                lo = min(lo, v)
                hi = max(hi, v)
            }
            (low[node], high[node]) = (lo, hi)
        }
        images += batch.shape.first ?? 0
    }

    /// The ranges seen so far.
    ///
    /// - Throws: ``TFLiteExportError/calibration(reason:)`` before any image was observed.
    public func calibration() throws(TFLiteExportError) -> TFLiteCalibration {
        guard images > 0 else { throw .calibration(reason: "no calibration image was run") }
        return TFLiteCalibration(ranges: zip(low, high).map { $0...$1 }, images: images)
    }
}

/// Writes a float inference graph (``/MobileNetKernels/Graph``, BatchNorm folded, ReLU6 fused:
/// what ``/MobileNetModel/MobileNetV2`` builds) as a TFLite model file: one subgraph of LiteRT's
/// built-in operators (CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN, FULLY_CONNECTED, SOFTMAX,
/// QUANTIZE, DEQUANTIZE), the operator versions and quantization TensorFlow's converter
/// (TF 2.21) writes for the same Keras model, a "serving_default" signature, and optionally
/// TFLite Support metadata with the class names packed as `labels.txt`.
///
/// Layouts: convolution kernels OHWI `[out, kh, kw, in]`, depthwise `[1, kh, kw, C]`, dense
/// `[units, inputs]`; activations NHWC with batch 1 (batch dimension -1 in the shape signature).
/// Full-integer quantization follows TensorFlow's: weights int8 symmetric per output channel
/// (scale `max|w| / 127`), biases int32 at `input scale * weight scale`, activations int8 per
/// tensor with the calibrated range widened to hold 0 (scale `(max - min) / 255`, zero point
/// `round(-128 - min / scale)`), SOFTMAX's output at scale 1/256, zero point -128.
public enum TFLiteExporter {
    /// Writes `graph`'s last output as a `.tflite` file's bytes.
    ///
    /// - Parameters:
    ///   - graph: the float graph; its input `[H, W, 3]` is the preprocessed image.
    ///   - options: quantization, input and output types, metadata.
    /// - Returns: the model file (the flatbuffer, then the ZIP of packed files when the metadata
    ///   has class names).
    /// - Throws: ``TFLiteExportError``.
    public static func write(_ graph: Graph, options: TFLiteExportOptions) throws(TFLiteExportError) -> Data {
        var builder = try GraphWriter(graph: graph, options: options)
        return try builder.write()
    }
}

/// Quantization parameters of one int8 tensor.
private struct QuantizationParameters {
    var scale: Float
    var zeroPoint: Int

    /// TensorFlow's asymmetric int8 parameters for a real range: widened to hold 0, scale
    /// `(max - min) / 255`, zero point `-128 - min / scale` rounded half away from zero, clamped.
    init(range: ClosedRange<Float>) {
        var lo = min(range.lowerBound, 0), hi = max(range.upperBound, 0)
        if hi - lo < 1e-8 { (lo, hi) = (0, 1) }
        scale = (hi - lo) / 255
        zeroPoint = Int(max(-128, min(127, (-128 - lo / scale).rounded(.toNearestOrAwayFromZero))))
    }

    init(scale: Float, zeroPoint: Int) {
        self.scale = scale
        self.zeroPoint = zeroPoint
    }
}

private struct GraphWriter {
    let graph: Graph
    let options: TFLiteExportOptions
    let shapes: [[Int]]
    let file = TFLiteFileWriter()
    let calibration: TFLiteCalibration?
    var isInteger: Bool { calibration != nil }
    var isDynamicRange: Bool { options.quantization == .dynamicRange }

    /// Node index (or ``Graph/inputIndex``) → its tensor in the file (int8 in an integer model).
    var tensors: [Int: Int32] = [:]
    var parameters: [Int: QuantizationParameters] = [:]

    init(graph: Graph, options: TFLiteExportOptions) throws(TFLiteExportError) {
        guard let output = graph.outputs.last, output >= 0 else { throw .unsupported(reason: "the graph has no output node") }
        let pruned: Graph
        let kept: [Int]
        do {
            kept = try graph.nodesNeeded(by: [output])
            pruned = try graph.subgraph(outputs: [output])
            shapes = try pruned.validate()
        } catch {
            throw .unsupported(reason: "the graph is not valid: \(error)")
        }
        guard graph.inputShape.count == 3 else { throw .unsupported(reason: "the input is not an image [H, W, C] (\(graph.inputShape))") }
        if case .fullInteger(let c) = options.quantization {
            guard c.ranges.count == graph.nodes.count else {
                throw .calibration(reason: "the calibration has \(c.ranges.count) nodes; the graph has \(graph.nodes.count)")
            }
            // The ranges of the nodes the pruned graph kept, in its numbering.
            calibration = TFLiteCalibration(ranges: kept.map { c.ranges[$0] }, images: c.images)
        } else {
            calibration = nil
            guard options.inputType == .float32, options.outputType == .float32 else {
                throw .unsupported(reason: "integer input and output types need full-integer quantization (int8 with calibration images)")
            }
        }
        self.graph = pruned
        self.options = options
    }

    var inputShape: [Int] { [1] + graph.inputShape }

    func shape(of node: Int) -> [Int] { node == Graph.inputIndex ? inputShape : [1] + shapes[node] }

    mutating func write() throws(TFLiteExportError) -> Data {
        let input = try writeInput()
        var index = 0
        var last = Graph.inputIndex
        while index < graph.nodes.count {
            let node = graph.nodes[index]
            let x = node.inputs.first.flatMap { tensors[$0] } ?? input
            switch node.operation {
            case .conv2D(let p):
                try convolution(index, node, p, input: x, depthwise: false)
            case .depthwiseConv2D(let p):
                try convolution(index, node, p, input: x, depthwise: true)
            case .add:
                guard node.inputs.count == 2, let a = tensors[node.inputs[0]], let b = tensors[node.inputs[1]] else {
                    throw .unsupported(reason: "\(node.name): ADD needs two computed inputs")
                }
                let out = activation(index, name: node.name)
                file.addOperator(.add, version: isInteger ? 2 : 1, inputs: [a, b], outputs: [out])
            case .globalAveragePool:
                let axes = file.addTensor(name: "\(node.name)/reduction_indices", shape: [2], type: .int32,
                                          buffer: file.addBuffer(values: [Int32(1), Int32(2)]))
                let out = activation(index, name: node.name)
                file.addOperator(.mean, version: isInteger ? 2 : 1, inputs: [x, axes], outputs: [out]) { $0.keep_dims = 0 }
            case .dense(let p):
                // A ReLU right after the dense layer (and used by nothing else) is fused into it.
                var fusedReLU = false
                if index + 1 < graph.nodes.count, case .relu = graph.nodes[index + 1].operation, graph.nodes[index + 1].inputs == [index],
                   !graph.nodes.enumerated().contains(where: { $0.offset > index + 1 && $0.element.inputs.contains(index) }) {
                    fusedReLU = true
                }
                let end = fusedReLU ? index + 1 : index
                try dense(index, node, p, input: x, fusedReLU: fusedReLU, rangeNode: end)
                if fusedReLU {
                    tensors[index + 1] = tensors[index]
                    parameters[index + 1] = parameters[index]
                    index += 1
                }
            case .softmax:
                let out: Int32
                if isInteger {
                    parameters[index] = QuantizationParameters(scale: 1.0 / 256, zeroPoint: -128)
                    out = file.addTensor(name: node.name, shape: shape(of: index), type: .int8, dynamicBatch: true, scales: [1.0 / 256], zeroPoints: [-128])
                    tensors[index] = out
                } else {
                    out = activation(index, name: node.name)
                }
                file.addOperator(.softmax, version: isInteger ? 2 : 1, inputs: [x], outputs: [out]) { $0.beta = 1 }
            case .batchNorm, .relu6:
                throw .unsupported(reason: "\(node.name): BatchNorm or ReLU6 not folded into its convolution (open the model with BatchNorm folded)")
            case .relu:
                throw .unsupported(reason: "\(node.name): a ReLU that does not follow a dense layer")
            case .globalMaxPool:
                throw .unsupported(reason: "\(node.name): global max pooling (LiteRT's REDUCE_MAX) is not exported; use average pooling")
            }
            last = index
            index += 1
        }
        guard last >= 0, let result = tensors[last] else { throw .unsupported(reason: "the graph computes nothing") }
        let output = try writeOutput(result, node: last)
        let outputName: String
        switch graph.nodes[last].operation {
        case .softmax: outputName = "probabilities"
        case .dense: outputName = "logits"
        default: outputName = "embedding"
        }
        file.setIO(input: input, inputName: "image", output: output, outputName: outputName)
        file.setDescription("MobileNetV2 written by swift-mobilenet")
        var packed: [(name: String, data: Data)] = []
        if let metadata = options.metadata {
            let classes = metadata.classNames
            if let classes {
                let width = shape(of: last).last ?? 0
                guard classes.count == width else {
                    throw .unsupported(reason: "\(classes.count) class names for \(width) outputs")
                }
                guard !classes.contains(where: { $0.isEmpty || $0.contains("\n") || $0.contains("\r") }) else {
                    throw .unsupported(reason: "a class name is empty or holds a line break (the label file has one name per line)")
                }
                packed.append(("labels.txt", Data((classes.joined(separator: "\n") + "\n").utf8)))
            }
            let spec = TFLiteSupportMetadataSpec(
                name: metadata.name, version: metadata.version, description: metadata.description, author: metadata.author,
                license: metadata.license,
                inputDescription: "RGB image, \(graph.inputShape[0])x\(graph.inputShape[1]), normalised as (pixel - mean) / std",
                mean: metadata.mean, std: metadata.std, inputRange: options.inputRange,
                outputName: outputName,
                outputDescription: outputName == "embedding" ? "the pooled embedding" : "one score per class, in the label file's order",
                outputIsProbability: outputName == "probabilities", labelsFile: classes == nil ? nil : "labels.txt")
            file.addMetadata(name: "TFLITE_METADATA", buffer: file.addBuffer(Array(spec.serialised())))
        }
        let model = try file.finish()
        return packed.isEmpty ? model : AppendedZip.appending(packed, to: model)
    }

    // MARK: - Ends

    mutating func writeInput() throws(TFLiteExportError) -> Int32 {
        guard isInteger else {
            let t = file.addTensor(name: "image", shape: inputShape, type: .float32, dynamicBatch: true)
            tensors[Graph.inputIndex] = t
            return t
        }
        let q = QuantizationParameters(range: options.inputRange)
        parameters[Graph.inputIndex] = q
        switch options.inputType {
        case .int8:
            let t = file.addTensor(name: "image", shape: inputShape, type: .int8, dynamicBatch: true, scales: [q.scale], zeroPoints: [Int64(q.zeroPoint)])
            tensors[Graph.inputIndex] = t
            return t
        case .uint8, .float32:
            let input = options.inputType == .uint8
                ? file.addTensor(name: "image", shape: inputShape, type: .uint8, dynamicBatch: true, scales: [q.scale], zeroPoints: [Int64(q.zeroPoint + 128)])
                : file.addTensor(name: "image", shape: inputShape, type: .float32, dynamicBatch: true)
            let quantized = file.addTensor(name: "image/quantized", shape: inputShape, type: .int8, dynamicBatch: true,
                                           scales: [q.scale], zeroPoints: [Int64(q.zeroPoint)])
            file.addOperator(.quantize, version: 1, inputs: [input], outputs: [quantized])
            tensors[Graph.inputIndex] = quantized
            return input
        }
    }

    func writeOutput(_ tensor: Int32, node: Int) throws(TFLiteExportError) -> Int32 {
        guard isInteger, let q = parameters[node] else { return tensor }
        let name = graph.nodes[node].name + "/output"
        switch options.outputType {
        case .int8:
            return tensor
        case .uint8:
            let out = file.addTensor(name: name, shape: shape(of: node), type: .uint8, dynamicBatch: true, scales: [q.scale], zeroPoints: [Int64(q.zeroPoint + 128)])
            file.addOperator(.quantize, version: 1, inputs: [tensor], outputs: [out])
            return out
        case .float32:
            let out = file.addTensor(name: name, shape: shape(of: node), type: .float32, dynamicBatch: true)
            file.addOperator(.dequantize, version: 2, inputs: [tensor], outputs: [out])
            return out
        }
    }

    // MARK: - Layers

    /// A new activation tensor for a node: float, or int8 with the calibrated range.
    mutating func activation(_ node: Int, name: String, rangeNode: Int? = nil, clamp: ClosedRange<Float>? = nil) -> Int32 {
        let t: Int32
        if let calibration {
            var range = calibration.ranges[rangeNode ?? node]
            if let clamp { range = max(range.lowerBound, clamp.lowerBound)...min(max(range.upperBound, clamp.lowerBound), clamp.upperBound) }
            let q = QuantizationParameters(range: range)
            parameters[node] = q
            t = file.addTensor(name: name, shape: shape(of: node), type: .int8, dynamicBatch: true, scales: [q.scale], zeroPoints: [Int64(q.zeroPoint)])
        } else {
            t = file.addTensor(name: name, shape: shape(of: node), type: .float32, dynamicBatch: true)
        }
        tensors[node] = t
        return t
    }

    /// Symmetric int8 per-channel quantization of a kernel whose output channel is `channel(i)`
    /// for flat index `i`: scale `max|w| / 127` per channel (1/127 for an all-zero channel).
    func quantizeSymmetric(_ values: [Float], channels: Int, channel: (Int) -> Int) -> (values: [Int8], scales: [Float]) {
        var maxAbs = [Float](repeating: 0, count: channels)
        for (i, v) in values.enumerated() { maxAbs[channel(i)] = max(maxAbs[channel(i)], abs(v)) }
        let scales = maxAbs.map { $0 > 0 ? $0 / 127 : 1.0 / 127 }
        let q = values.enumerated().map { i, v in Int8(max(-127, min(127, (v / scales[channel(i)]).rounded(.toNearestOrAwayFromZero)))) }
        return (q, scales)
    }

    /// The weight tensor: float, or int8 per channel (full integer; dynamic range for at least
    /// 1,024 values, as TensorFlow's converter leaves smaller kernels float). Returns the tensor
    /// and the per-channel scales (nil for a float tensor).
    func weights(_ name: String, values: [Float], shape: [Int], channelDimension: Int) -> (tensor: Int32, scales: [Float]?) {
        let channels = shape[channelDimension]
        let inner = shape[(channelDimension + 1)...].reduce(1, *)
        if isInteger || (isDynamicRange && values.count >= 1024) {
            let (q, scales) = quantizeSymmetric(values, channels: channels) { ($0 / inner) % channels }
            let t = file.addTensor(name: name, shape: shape, type: .int8, buffer: file.addBuffer(values: q),
                                   scales: scales, zeroPoints: [Int64](repeating: 0, count: channels), quantizedDimension: channelDimension)
            return (t, scales)
        }
        return (file.addTensor(name: name, shape: shape, type: .float32, buffer: file.addBuffer(values: values)), nil)
    }

    /// The bias: float, or int32 at `input scale * weight scale` per channel (full integer).
    func bias(_ name: String, values: [Float], input: Int, weightScales: [Float]?) -> Int32 {
        guard isInteger, let weightScales, let s = parameters[input]?.scale else {
            return file.addTensor(name: name, shape: [values.count], type: .float32, buffer: file.addBuffer(values: values))
        }
        let scales = weightScales.map { $0 * s }
        let q = zip(values, scales).map { v, scale -> Int32 in
            let r = (Double(v) / Double(scale)).rounded(.toNearestOrAwayFromZero)
            return Int32(max(Double(Int32.min), min(Double(Int32.max), r)))
        }
        return file.addTensor(name: name, shape: [values.count], type: .int32, buffer: file.addBuffer(values: q),
                              scales: scales, zeroPoints: [Int64](repeating: 0, count: values.count))
    }

    mutating func convolution(_ index: Int, _ node: Node, _ p: ConvolutionParameters, input: Int32, depthwise: Bool) throws(TFLiteExportError) {
        let k = p.kernel.shape // Keras: [kh, kw, in, out] or [kh, kw, C, 1]
        let inputShape = node.inputs[0] == Graph.inputIndex ? graph.inputShape : shapes[node.inputs[0]]
        let padding: Int32
        if p.padding == Padding.same(inputHeight: inputShape[0], inputWidth: inputShape[1], kernelSize: k[0], stride: p.stride), k[0] == k[1] {
            padding = 0 // SAME
        } else if p.padding == .valid {
            padding = 1 // VALID
        } else {
            throw .unsupported(reason: "\(node.name): padding \(p.padding) is neither TensorFlow's SAME nor VALID")
        }
        let (kh, kw, cin, cout) = (k[0], k[1], k[2], k[3])
        let kernel: [Float]
        let shape: [Int]
        let channelDimension: Int
        if depthwise {
            kernel = p.kernel.scalars // [kh, kw, C, 1] is [1, kh, kw, C] in memory
            shape = [1, kh, kw, cin]
            channelDimension = 3
        } else {
            var ohwi = [Float](repeating: 0, count: p.kernel.scalars.count)
            for y in 0..<kh { for x in 0..<kw { for i in 0..<cin { for o in 0..<cout {
                ohwi[((o * kh + y) * kw + x) * cin + i] = p.kernel.scalars[((y * kw + x) * cin + i) * cout + o]
            } } } }
            kernel = ohwi
            shape = [cout, kh, kw, cin]
            channelDimension = 0
        }
        let (w, scales) = weights("\(node.name)/kernel", values: kernel, shape: shape, channelDimension: channelDimension)
        let b = bias("\(node.name)/bias", values: p.bias, input: node.inputs[0], weightScales: scales)
        let relu6 = p.activation == .relu6
        let out = activation(index, name: node.name, clamp: relu6 ? 0...6 : nil)
        let version: Int
        switch (isInteger, isDynamicRange, depthwise) {
        case (true, _, _): version = 3
        case (false, true, false): version = 5
        case (false, true, true): version = 6
        default: version = 1
        }
        file.addOperator(depthwise ? .depthwiseConv2D : .conv2D, version: version, inputs: [input, w, b], outputs: [out]) {
            $0.padding = padding
            $0.stride_w = Int32(p.stride)
            $0.stride_h = Int32(p.stride)
            $0.depth_multiplier = 1
            $0.activation = relu6 ? 3 : 0 // RELU6, NONE
        }
    }

    mutating func dense(_ index: Int, _ node: Node, _ p: DenseParameters, input: Int32, fusedReLU: Bool, rangeNode: Int) throws(TFLiteExportError) {
        let k = p.kernel.shape // Keras [inputs, units]
        guard k.count == 2 else { throw .unsupported(reason: "\(node.name): dense kernel of shape \(k)") }
        let (n, units) = (k[0], k[1])
        var transposed = [Float](repeating: 0, count: n * units)
        for i in 0..<n { for u in 0..<units { transposed[u * n + i] = p.kernel.scalars[i * units + u] } }
        let (w, scales) = weights("\(node.name)/kernel", values: transposed, shape: [units, n], channelDimension: 0)
        let b = bias("\(node.name)/bias", values: p.bias, input: node.inputs[0], weightScales: scales)
        let out = activation(index, name: node.name, rangeNode: rangeNode)
        let hybrid = isDynamicRange && scales != nil
        file.addOperator(.fullyConnected, version: isInteger ? 4 : (isDynamicRange ? 12 : 1), inputs: [input, w, b], outputs: [out]) {
            $0.activation = fusedReLU ? 1 : 0 // RELU, NONE
            $0.asymmetric_quantize_inputs = hybrid ? 1 : 0
        }
    }
}
