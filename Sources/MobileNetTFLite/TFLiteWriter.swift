import CMobileNetTFLite
import CZip
import Foundation

/// Builds one TFLite flatbuffer (schema version 3, one subgraph) through the C++ code flatc
/// generates from TFLite's `schema.fbs` (`CMobileNetTFLiteWriter.h`). The exporter decides every
/// tensor and operator; this type only records and serialises them.
final class TFLiteFileWriter {
    private let writer: OpaquePointer

    init() {
        writer = mn_tflite_writer_create()
    }

    deinit {
        mn_tflite_writer_destroy(writer)
    }

    /// Adds a constant buffer (stored 16-byte aligned); returns its index.
    func addBuffer(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { mn_tflite_writer_add_buffer(writer, $0.baseAddress, $0.count) }
    }

    /// Adds the raw bytes of an array of trivial values (little-endian, as TFLite stores them).
    func addBuffer<T: BitwiseCopyable>(values: [T]) -> UInt32 {
        values.withUnsafeBytes { raw in
            mn_tflite_writer_add_buffer(writer, raw.bindMemory(to: UInt8.self).baseAddress, raw.count)
        }
    }

    /// Adds a tensor; returns its index.
    func addTensor(name: String, shape: [Int], type: TFLiteTensorType, buffer: UInt32 = 0, dynamicBatch: Bool = false,
                   scales: [Float] = [], zeroPoints: [Int64] = [], quantizedDimension: Int = 0) -> Int32 {
        precondition(scales.count == zeroPoints.count)
        let shape32 = shape.map { Int32($0) }
        return name.withCString { cName in
            shape32.withUnsafeBufferPointer { s in
                scales.withUnsafeBufferPointer { sc in
                    zeroPoints.withUnsafeBufferPointer { zp in
                        var spec = mn_tflite_tensor_spec(shape: s.baseAddress, rank: UInt32(s.count), dynamic_batch: dynamicBatch ? 1 : 0,
                                                         type: type.rawValue, buffer: buffer, name: cName,
                                                         scale: sc.baseAddress, zero_point: zp.baseAddress,
                                                         quantization_count: UInt32(sc.count), quantized_dimension: Int32(quantizedDimension))
                        return mn_tflite_writer_add_tensor(writer, &spec)
                    }
                }
            }
        }
    }

    /// Adds an operator; `configure` fills in its builtin options.
    func addOperator(_ code: BuiltinOperator, version: Int, inputs: [Int32], outputs: [Int32],
                     configure: (inout mn_tflite_operator_spec) -> Void = { _ in }) {
        var spec = mn_tflite_operator_spec()
        spec.builtin_code = code.rawValue
        spec.version = Int32(version)
        spec.options_type = code.optionsType
        configure(&spec)
        inputs.withUnsafeBufferPointer { i in
            outputs.withUnsafeBufferPointer { o in
                spec.inputs = i.baseAddress
                spec.input_count = UInt32(i.count)
                spec.outputs = o.baseAddress
                spec.output_count = UInt32(o.count)
                mn_tflite_writer_add_operator(writer, &spec)
            }
        }
    }

    func setIO(input: Int32, inputName: String, output: Int32, outputName: String) {
        mn_tflite_writer_set_io(writer, input, inputName, output, outputName)
    }

    func addMetadata(name: String, buffer: UInt32) {
        mn_tflite_writer_add_metadata(writer, name, buffer)
    }

    func setDescription(_ description: String) {
        mn_tflite_writer_set_description(writer, description)
    }

    /// The serialised model.
    func finish() throws(TFLiteExportError) -> Data {
        var bytes: UnsafePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: 512)
        guard mn_tflite_writer_finish(writer, &bytes, &size, &message, message.count) == 0, let bytes else {
            throw .unsupported(reason: String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return Data(bytes: bytes, count: size)
    }

    /// The builtin operators the exporter writes (TFLite's `BuiltinOperator` codes) with the tag
    /// of their options table (`BuiltinOptions`).
    enum BuiltinOperator: Int32 {
        case add = 0, conv2D = 3, depthwiseConv2D = 4, dequantize = 6, fullyConnected = 9, softmax = 25, mean = 40, quantize = 114

        var optionsType: Int32 {
            switch self {
            case .conv2D: 1            // Conv2DOptions
            case .depthwiseConv2D: 2   // DepthwiseConv2DOptions
            case .fullyConnected: 8    // FullyConnectedOptions
            case .softmax: 9           // SoftmaxOptions
            case .add: 11              // AddOptions
            case .mean: 27             // ReducerOptions
            case .dequantize: 0
            case .quantize: 0
            }
        }
    }
}

/// TFLite Support's metadata for an image model (`metadata_schema.fbs`, identifier "M001"),
/// as its `ImageClassifierWriter` writes it: the model's name, version, description, author and
/// licence; the input as an RGB image with its normalisation and value range; the output as
/// features (0...1 for probabilities) with the label file packed in the model.
struct TFLiteSupportMetadataSpec {
    var name: String
    var version: String
    var description: String
    var author: String
    var license: String
    var inputName = "image"
    var inputDescription: String
    var mean: [Float]
    var std: [Float]
    var inputRange: ClosedRange<Float>
    var outputName: String
    var outputDescription: String
    var outputIsProbability: Bool
    var labelsFile: String?

    /// The serialised metadata.
    func serialised() -> Data {
        precondition(mean.count == std.count)
        // C copies of the strings, alive until the metadata is built.
        var owned: [UnsafeMutablePointer<CChar>] = []
        defer { owned.forEach { free($0) } }
        func c(_ s: String?) -> UnsafePointer<CChar>? {
            guard let s, let copy = strdup(s) else { return nil }
            owned.append(copy)
            return UnsafePointer(copy)
        }
        return mean.withUnsafeBufferPointer { m in
            std.withUnsafeBufferPointer { s in
                var spec = mn_tflite_metadata_spec(
                    name: c(name), version: c(version), description: c(description), author: c(author), license: c(license),
                    input_name: c(inputName), input_description: c(inputDescription),
                    mean: m.baseAddress, std: s.baseAddress, normalization_count: UInt32(m.count),
                    input_min: inputRange.lowerBound, input_max: inputRange.upperBound,
                    output_name: c(outputName), output_description: c(outputDescription),
                    output_is_probability: outputIsProbability ? 1 : 0,
                    labels_file: c(labelsFile), labels_description: labelsFile == nil ? nil : c(outputDescription))
                var size = 0
                guard let bytes = mn_tflite_write_metadata(&spec, &size) else { return Data() }
                defer { mn_tflite_free(bytes) }
                return Data(bytes: bytes, count: size)
            }
        }
    }
}

/// Files packed into a model as TFLite Support packs its associated files (label files): a ZIP
/// archive appended to the flatbuffer, members stored uncompressed, offsets counted from the start
/// of the model file (as Python's `zipfile` appends to a file that is not a ZIP archive), so
/// TFLite Support's `MetadataExtractor`, Python's `zipfile` and libzip find them. Dates are fixed
/// (1980-01-01) so the same model gives the same bytes.
enum AppendedZip {
    static func appending(_ files: [(name: String, data: Data)], to model: Data) -> Data {
        var out = model
        var central = Data()
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8((v >> 8) & 0xff)] }
        func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xff), UInt8((v >> 8) & 0xff), UInt8((v >> 16) & 0xff), UInt8(v >> 24)] }
        let date = 0x21 // 1980-01-01 in MS-DOS format; time 00:00
        for file in files {
            let name = Array(file.name.utf8)
            let crc = crc32(file.data)
            let offset = UInt32(out.count)
            let size = UInt32(file.data.count)
            let common = le16(20) + le16(0) + le16(0) + le16(0) + le16(date) + le32(crc) + le32(size) + le32(size) + le16(name.count) + le16(0)
            out.append(contentsOf: le32(0x0403_4b50) + common + name)
            out.append(file.data)
            central.append(contentsOf: le32(0x0201_4b50) + le16(20) + common + le16(0) + le16(0) + le16(0) + le32(0o100644 << 16) + le32(offset) + name)
        }
        let centralOffset = UInt32(out.count)
        out.append(central)
        out.append(contentsOf: le32(0x0605_4b50) + le16(0) + le16(0) + le16(files.count) + le16(files.count)
                   + le32(UInt32(central.count)) + le32(centralOffset) + le16(0))
        return out
    }

    /// CRC-32 (the ZIP checksum), by zlib.
    static func crc32(_ data: Data) -> UInt32 {
        data.withUnsafeBytes { raw in UInt32(truncatingIfNeeded: CZip.crc32(0, raw.bindMemory(to: UInt8.self).baseAddress, uInt(raw.count))) }
    }
}
