import CMobileNetTFLite
import Foundation

/// Why a `.tflite` file cannot be read or run. Each case names the file.
public enum TFLiteError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// Missing, not a regular file, or unreadable.
    case unreadable(path: String, reason: String)
    /// Larger than ``TFLiteModel/maximumFileBytes``.
    case tooLarge(path: String, bytes: Int, limit: Int)
    /// Not a well-formed TFLite flatbuffer: what is wrong and where.
    case damaged(path: String, reason: String)
    /// An operator this library does not run, named as the schema names it, with its position.
    case unsupportedOperator(path: String, index: Int, name: String, reason: String)
    /// A well-formed model that is not a MobileNetV2 image classifier or embedder.
    case notAnImageModel(path: String, reason: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "\(path): cannot read the TFLite file (\(reason))"
        case .tooLarge(let path, let bytes, let limit):
            "\(path): the TFLite file has \(bytes) bytes; model files over \(limit / (1 << 20)) MiB are refused"
        case .damaged(let path, let reason): "\(path): damaged TFLite file: \(reason)"
        case .unsupportedOperator(let path, let index, let name, let reason):
            "\(path): operator \(index) (\(name)) is not supported: \(reason)"
        case .notAnImageModel(let path, let reason): "\(path): not a MobileNetV2 image model: \(reason)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The element types of TFLite tensors (the schema's `TensorType`).
public enum TFLiteTensorType: Int32, Sendable, Hashable, CaseIterable {
    case float32 = 0, float16 = 1, int32 = 2, uint8 = 3, int64 = 4, string = 5, bool = 6, int16 = 7, complex64 = 8, int8 = 9, float64 = 10

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .uint8, .int8, .bool, .string: 1
        case .float16, .int16: 2
        case .float32, .int32: 4
        case .int64, .float64, .complex64: 8
        }
    }

    /// The schema's name (`UINT8`).
    public var name: String { String(cString: mn_tflite_tensor_type_name(rawValue)) }
}

/// Linear quantization of a tensor: `real = scale * (q - zeroPoint)`, per tensor (one scale) or
/// per channel along ``dimension`` (TFLite's `QuantizationParameters`).
public struct TFLiteQuantization: Sendable, Equatable {
    /// One scale, or one per slice along ``dimension``; each finite and positive.
    public var scales: [Float]
    /// As many zero points as scales, in the type's range.
    public var zeroPoints: [Int]
    /// The quantized dimension of per-channel quantization (`quantized_dimension`).
    public var dimension: Int

    /// Whether there is one scale for the whole tensor.
    public var isPerTensor: Bool { scales.count == 1 }
}

/// One tensor of the model's graph: an activation, or a constant (weights, biases, shapes).
public struct TFLiteTensor: Sendable, Equatable {
    /// Its index in the subgraph.
    public var index: Int
    /// The converter's name (TF-slim scopes such as `MobilenetV2/Conv/Relu6`, or Keras layers).
    public var name: String
    /// The element type.
    public var type: TFLiteTensorType
    /// The shape, NHWC for images (`[1, 224, 224, 3]`); OHWI for convolution filters,
    /// `[1, H, W, C]` for depthwise filters, `[out, in]` for FULLY_CONNECTED weights.
    public var shape: [Int]
    /// The linear quantization, nil for a float tensor (or an integer one without it).
    public var quantization: TFLiteQuantization?
    /// The constant's bytes (little-endian, row-major), exactly `elementCount * byteWidth`;
    /// nil for an activation.
    public var data: Data?

    /// The number of elements.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// The options of the builtin operators this library reads (the schema's `*Options` tables).
public struct TFLiteOperatorOptions: Sendable, Equatable {
    /// `SAME` or `VALID` (convolutions, pooling).
    public enum Padding: Int32, Sendable { case same = 0, valid = 1 }
    /// A fused activation (the schema's `ActivationFunctionType`).
    public enum Activation: Int32, Sendable { case none = 0, relu = 1, reluN1To1 = 2, relu6 = 3, tanh = 4, signBit = 5 }

    /// Convolution and pooling padding.
    public var padding: Padding = .same
    /// Strides (width, height).
    public var strideW = 0, strideH = 0
    /// Dilation factors (width, height); 1 when absent.
    public var dilationW = 1, dilationH = 1
    /// DEPTHWISE_CONV_2D's depth multiplier.
    public var depthMultiplier = 0
    /// AVERAGE_POOL_2D's window (width, height).
    public var filterW = 0, filterH = 0
    /// The fused activation, nil for a code outside the schema.
    public var activation: Activation? = Activation.none
    /// FULLY_CONNECTED's weights format (0: default; 1: shuffled int8, not supported).
    public var weightsFormat = 0
    /// FULLY_CONNECTED's `keep_num_dims`.
    public var keepNumDims = false
    /// MEAN's `keep_dims`.
    public var keepDims = false
    /// SOFTMAX's `beta`.
    public var beta: Float = 1
    /// RESHAPE's `new_shape` when given as an option.
    public var newShape: [Int]? = nil
    /// SQUEEZE's dimensions.
    public var squeezeDimensions: [Int] = []
    /// Whether the operator carries custom options or intermediate tensors (none of the
    /// operators this library runs does).
    public var hasCustomOptions = false
}

/// One operator of the graph, in execution order.
public struct TFLiteOperator: Sendable, Equatable {
    /// Its position in the subgraph's operator list.
    public var index: Int
    /// The builtin operator code (`CONV_2D` is 3); 32 (`CUSTOM`) for a custom operator.
    public var builtinCode: Int32
    /// The schema's name of the operator (`CONV_2D`), or the custom code's name.
    public var name: String
    /// The operator version the converter recorded.
    public var version: Int
    /// Input tensor indices; -1 marks an optional input left out (a bias).
    public var inputs: [Int]
    /// Output tensor indices.
    public var outputs: [Int]
    /// The decoded options.
    public var options: TFLiteOperatorOptions
}

/// A TensorFlow Lite model file, read and checked: the tensors, operators, inputs, outputs and
/// metadata of its first subgraph, with every constant's bytes.
///
/// Reading treats the file as hostile: the flatbuffer is checked by the Verifier of the code
/// `flatc` generates from TFLite's schema (every offset, table, vector and string inside the
/// file), then every index between tables, every shape (no negative dimension, at most
/// ``maximumElements`` elements), every constant's size against its shape and type, and every
/// quantization's scales and zero points.
public struct TFLiteModel: Sendable {
    /// The largest file read: 256 MiB, as for the other model files.
    public static let maximumFileBytes = 256 << 20
    /// The most elements one tensor may have (2^28).
    public static let maximumElements = 1 << 28

    /// The file it was read from (for messages).
    public var path: String
    /// The schema version (3).
    public var version: Int
    /// The converter's description (`TOCO Converted.`, `MLIR Converted.`).
    public var description: String
    /// The tensors of the first subgraph.
    public var tensors: [TFLiteTensor]
    /// The operators of the first subgraph, in execution order.
    public var operators: [TFLiteOperator]
    /// The subgraph's input tensor indices.
    public var inputs: [Int]
    /// The subgraph's output tensor indices.
    public var outputs: [Int]
    /// Metadata entries by name (`min_runtime_version`, `TFLITE_METADATA`) with their bytes.
    public var metadata: [String: Data]
    /// The whole file (its appended ZIP holds TFLite Support's associated files, the labels).
    public var fileBytes: Data

    /// Reads and checks the `.tflite` file at `url`.
    ///
    /// - Throws: ``TFLiteError/unreadable(path:reason:)``, ``TFLiteError/tooLarge(path:bytes:limit:)``,
    ///   ``TFLiteError/damaged(path:reason:)``.
    public init(contentsOf url: URL) throws(TFLiteError) {
        let path = url.path
        var status = stat()
        guard stat(path, &status) == 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard status.st_mode & S_IFMT == S_IFREG else { throw .unreadable(path: path, reason: "not a regular file") }
        guard Int(status.st_size) <= Self.maximumFileBytes else {
            throw .tooLarge(path: path, bytes: Int(status.st_size), limit: Self.maximumFileBytes)
        }
        let data: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            data = try handle.read(upToCount: Self.maximumFileBytes + 1) ?? Data()
        } catch {
            throw .unreadable(path: path, reason: error.localizedDescription)
        }
        guard data.count <= Self.maximumFileBytes else { throw .tooLarge(path: path, bytes: data.count, limit: Self.maximumFileBytes) }
        try self.init(bytes: data, path: path)
    }

    /// Reads and checks a model held in memory.
    ///
    /// - Parameters:
    ///   - bytes: the file's contents.
    ///   - path: the name used in messages.
    /// - Throws: ``TFLiteError/damaged(path:reason:)``, ``TFLiteError/tooLarge(path:bytes:limit:)``.
    public init(bytes: Data, path: String) throws(TFLiteError) {
        guard bytes.count <= Self.maximumFileBytes else { throw .tooLarge(path: path, bytes: bytes.count, limit: Self.maximumFileBytes) }
        // The Verifier checks alignment against the buffer's start: copy into 16-byte-aligned memory.
        let size = bytes.count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 16)
        defer { raw.deallocate() }
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress { raw.copyMemory(from: base, byteCount: size) }
        }
        let base = UnsafePointer<UInt8>(raw.assumingMemoryBound(to: UInt8.self))
        var message = [CChar](repeating: 0, count: 256)
        if mn_tflite_verify(base, size, &message, message.count) != 0 {
            let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw .damaged(path: path, reason: text)
        }
        self = try Reader(base: base, size: size, path: path).read(fileBytes: bytes)
    }

    /// The tensor feeding the operator's input `position`, nil when absent (-1) or out of range.
    public func input(_ op: TFLiteOperator, _ position: Int) -> TFLiteTensor? {
        guard position < op.inputs.count, op.inputs[position] >= 0 else { return nil }
        return tensors[op.inputs[position]]
    }

    /// The tensor the operator writes first.
    public func output(_ op: TFLiteOperator) -> TFLiteTensor { tensors[op.outputs[0]] }

    init(path: String, version: Int, description: String, tensors: [TFLiteTensor], operators: [TFLiteOperator], inputs: [Int],
         outputs: [Int], metadata: [String: Data], fileBytes: Data) {
        self.path = path
        self.version = version
        self.description = description
        self.tensors = tensors
        self.operators = operators
        self.inputs = inputs
        self.outputs = outputs
        self.metadata = metadata
        self.fileBytes = fileBytes
    }
}

/// Copies the verified flatbuffer into Swift values, checking what the Verifier does not.
private struct Reader {
    let base: UnsafePointer<UInt8>
    let size: Int
    let path: String

    func damaged(_ reason: String) -> TFLiteError { .damaged(path: path, reason: reason) }

    func string(_ pointer: UnsafePointer<CChar>?, _ length: UInt32) -> String {
        guard let pointer else { return "" }
        let bytes = UnsafeRawBufferPointer(start: pointer, count: Int(length))
        return String(decoding: bytes, as: UTF8.self)
    }

    func ints(_ pointer: UnsafePointer<Int32>?, _ count: UInt32) -> [Int] {
        guard let pointer else { return [] }
        return UnsafeBufferPointer(start: pointer, count: Int(count)).map { Int($0) }
    }

    func read(fileBytes: Data) throws(TFLiteError) -> TFLiteModel {
        var info = mn_tflite_model_info()
        mn_tflite_model(base, &info)
        guard info.version == 3 else { throw damaged("schema version \(info.version); TFLite files are version 3") }
        guard info.subgraph_count >= 1 else { throw damaged("the model has no subgraph") }
        var buffers: [Data?] = []
        buffers.reserveCapacity(Int(info.buffer_count))
        for i in 0..<info.buffer_count {
            var b = mn_tflite_buffer()
            guard mn_tflite_buffer_at(base, i, &b) == 0 else { throw damaged("buffer \(i) cannot be read") }
            if b.offset > 1 {
                // Constants outside the flatbuffer: only files over 2 GB use them, and those are refused.
                throw damaged("buffer \(i) lies outside the flatbuffer (offset \(b.offset), size \(b.external_size)), which only files over 2 GB use")
            }
            if let data = b.data, b.size > 0 { buffers.append(Data(bytes: data, count: Int(b.size))) } else { buffers.append(nil) }
        }
        var codes: [(code: Int32, name: String, version: Int)] = []
        for i in 0..<info.operator_code_count {
            var c = mn_tflite_operator_code()
            guard mn_tflite_operator_code_at(base, i, &c) == 0 else { throw damaged("operator code \(i) cannot be read") }
            let name = c.builtin_code == 32 ? "CUSTOM \(string(c.custom_code, c.custom_code_length))" : String(cString: mn_tflite_builtin_operator_name(c.builtin_code))
            codes.append((c.builtin_code, name.isEmpty ? "builtin operator \(c.builtin_code)" : name, Int(c.version)))
        }
        var graph = mn_tflite_subgraph()
        guard mn_tflite_subgraph_at(base, 0, &graph) == 0 else { throw damaged("subgraph 0 cannot be read") }
        let tensorCount = Int(graph.tensor_count)
        var tensors: [TFLiteTensor] = []
        tensors.reserveCapacity(tensorCount)
        for i in 0..<graph.tensor_count {
            tensors.append(try tensor(Int(i), buffers: buffers))
        }
        func checked(_ indices: [Int], what: String, optional: Bool) throws(TFLiteError) -> [Int] {
            for index in indices where !(index >= 0 && index < tensorCount) && !(optional && index == -1) {
                throw damaged("\(what) names tensor \(index); the model has \(tensorCount)")
            }
            return indices
        }
        let inputs = try checked(ints(graph.inputs, graph.input_count), what: "the model's inputs", optional: false)
        let outputs = try checked(ints(graph.outputs, graph.output_count), what: "the model's outputs", optional: false)
        var operators: [TFLiteOperator] = []
        for i in 0..<graph.operator_count {
            var o = mn_tflite_operator()
            guard mn_tflite_operator_at(base, 0, i, &o) == 0 else { throw damaged("operator \(i) cannot be read") }
            guard Int(o.opcode_index) < codes.count else {
                throw damaged("operator \(i) uses operator code \(o.opcode_index); the model has \(codes.count)")
            }
            let code = codes[Int(o.opcode_index)]
            var options = TFLiteOperatorOptions()
            options.padding = TFLiteOperatorOptions.Padding(rawValue: o.padding) ?? .same
            (options.strideW, options.strideH) = (Int(o.stride_w), Int(o.stride_h))
            (options.dilationW, options.dilationH) = (Int(o.dilation_w), Int(o.dilation_h))
            options.depthMultiplier = Int(o.depth_multiplier)
            (options.filterW, options.filterH) = (Int(o.filter_w), Int(o.filter_h))
            options.activation = TFLiteOperatorOptions.Activation(rawValue: o.activation)
            options.weightsFormat = Int(o.weights_format)
            options.keepNumDims = o.keep_num_dims != 0
            options.keepDims = o.keep_dims != 0
            options.beta = o.beta
            if o.new_shape != nil { options.newShape = ints(o.new_shape, o.new_shape_count) }
            options.squeezeDimensions = ints(o.squeeze_dims, o.squeeze_dims_count)
            options.hasCustomOptions = o.has_custom_options != 0 || o.has_intermediates != 0
            let what = "operator \(i) (\(code.name))"
            let opInputs = try checked(ints(o.inputs, o.input_count), what: what, optional: true)
            let opOutputs = try checked(ints(o.outputs, o.output_count), what: what, optional: false)
            guard !opOutputs.isEmpty else { throw damaged("\(what) has no output") }
            operators.append(TFLiteOperator(index: Int(i), builtinCode: code.code, name: code.name, version: code.version,
                                            inputs: opInputs, outputs: opOutputs, options: options))
        }
        var metadata: [String: Data] = [:]
        for i in 0..<info.metadata_count {
            var m = mn_tflite_metadata()
            guard mn_tflite_metadata_at(base, i, &m) == 0 else { throw damaged("metadata entry \(i) cannot be read") }
            guard Int(m.buffer) < buffers.count else { throw damaged("metadata entry \(i) names buffer \(m.buffer); the model has \(buffers.count)") }
            metadata[string(m.name, m.name_length)] = buffers[Int(m.buffer)] ?? Data()
        }
        return TFLiteModel(path: path, version: Int(info.version), description: string(info.description, info.description_length),
                           tensors: tensors, operators: operators, inputs: inputs, outputs: outputs, metadata: metadata, fileBytes: fileBytes)
    }

    func tensor(_ index: Int, buffers: [Data?]) throws(TFLiteError) -> TFLiteTensor {
        var t = mn_tflite_tensor()
        guard mn_tflite_tensor_at(base, 0, UInt32(index), &t) == 0 else { throw damaged("tensor \(index) cannot be read") }
        let name = string(t.name, t.name_length)
        let what = "tensor \(index) (\(name.prefix(80)))"
        guard let type = TFLiteTensorType(rawValue: t.type) else {
            let typeName = String(cString: mn_tflite_tensor_type_name(t.type))
            throw damaged("\(what) has type \(typeName.isEmpty ? String(t.type) : typeName), which this library does not read")
        }
        let shape = ints(t.shape, t.rank)
        guard shape.count <= 8 else { throw damaged("\(what) has \(shape.count) dimensions") }
        var elements = 1
        for dimension in shape {
            guard dimension >= 0 else { throw damaged("\(what) has a negative dimension in its shape \(shape)") }
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            guard !overflow, product <= TFLiteModel.maximumElements else { throw damaged("\(what) has more than 2^28 elements (\(shape))") }
            elements = product
        }
        guard t.has_sparsity == 0 else { throw damaged("\(what) is sparse, which this library does not read") }
        guard Int(t.buffer) < buffers.count else { throw damaged("\(what) names buffer \(t.buffer); the model has \(buffers.count)") }
        let data = buffers[Int(t.buffer)]
        if let data, data.count != elements * type.byteWidth {
            throw damaged("\(what) of shape \(shape) and type \(type.name) needs \(elements * type.byteWidth) bytes; its buffer has \(data.count)")
        }
        var quantization: TFLiteQuantization?
        if t.has_quantization != 0, t.scale_count > 0 {
            guard t.has_custom_quantization == 0 else { throw damaged("\(what) has a custom quantization") }
            let scales = Array(UnsafeBufferPointer(start: t.scale, count: Int(t.scale_count)))
            let zeroPoints = t.zero_point.map { Array(UnsafeBufferPointer(start: $0, count: Int(t.zero_point_count))).map { Int(clamping: $0) } } ?? []
            guard zeroPoints.count == scales.count else {
                throw damaged("\(what) has \(scales.count) quantization scales but \(zeroPoints.count) zero points")
            }
            let dimension = Int(t.quantized_dimension)
            if scales.count > 1 {
                guard dimension >= 0, dimension < shape.count, shape[dimension] == scales.count else {
                    throw damaged("\(what) has \(scales.count) quantization scales along dimension \(dimension) of its shape \(shape)")
                }
            }
            for (i, scale) in scales.enumerated() where !(scale.isFinite && scale > 0) {
                throw damaged("\(what) has quantization scale \(scale) at \(i) (must be finite and positive)")
            }
            let range: ClosedRange<Int>? = switch type {
            case .uint8: 0...255
            case .int8: -128...127
            case .int16, .int32, .int64: 0...0
            default: nil
            }
            if let range {
                for (i, zero) in zeroPoints.enumerated() where !range.contains(zero) {
                    throw damaged("\(what) of type \(type.name) has zero point \(zero) at \(i) (must be within \(range))")
                }
            }
            quantization = TFLiteQuantization(scales: scales, zeroPoints: zeroPoints, dimension: dimension)
        }
        return TFLiteTensor(index: index, name: name, type: type, shape: shape, quantization: quantization, data: data)
    }
}

/// What TFLite Support's metadata in a model says (the `TFLITE_METADATA` buffer, its
/// `metadata_schema.fbs`; written by TFLite Support's metadata writers, Model Maker and Coral's
/// tools), checked by its Verifier.
public struct TFLiteMetadata: Sendable, Equatable {
    /// The model's name, version and description (empty when absent).
    public var name: String, version: String, description: String
    /// The first input's normalisation, `(x - mean) / std` per channel, on pixels 0...255; nil when absent.
    public var mean: [Float]?, std: [Float]?
    /// The name of the first output's label file (`TENSOR_AXIS_LABELS`), a member of the ZIP
    /// archive appended to the model file; nil when absent.
    public var labelsFile: String?
}

extension TFLiteModel {
    /// The model's TFLite Support metadata, nil when it has none.
    ///
    /// - Throws: ``TFLiteError/damaged(path:reason:)`` when the `TFLITE_METADATA` buffer is not valid metadata.
    public func supportMetadata() throws(TFLiteError) -> TFLiteMetadata? {
        guard let bytes = metadata["TFLITE_METADATA"], !bytes.isEmpty else { return nil }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 16)
        defer { raw.deallocate() }
        bytes.withUnsafeBytes { raw.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        var info = mn_tflite_metadata_info()
        var message = [CChar](repeating: 0, count: 256)
        guard mn_tflite_read_metadata(raw.assumingMemoryBound(to: UInt8.self), bytes.count, &info, &message, message.count) == 0 else {
            throw .damaged(path: path, reason: message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        func text(_ p: UnsafePointer<CChar>?, _ n: UInt32) -> String {
            p.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(n)), as: UTF8.self) } ?? ""
        }
        func floats(_ p: UnsafePointer<Float>?, _ n: UInt32) -> [Float]? { p.map { Array(UnsafeBufferPointer(start: $0, count: Int(n))) } }
        return TFLiteMetadata(name: text(info.name, info.name_length), version: text(info.version, info.version_length),
                              description: text(info.description, info.description_length),
                              mean: floats(info.mean, info.mean_count), std: floats(info.std, info.std_count),
                              labelsFile: info.labels_file == nil ? nil : text(info.labels_file, info.labels_file_length))
    }
}
