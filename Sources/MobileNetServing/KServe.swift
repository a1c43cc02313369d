import Foundation
import MobileNetIO

/// The KServe / Open Inference Protocol v2 REST API (`/v2/...`): server and model metadata,
/// readiness, and inference requests with FP32 tensors or BYTES of encoded images, as its JSON
/// specification describes them.
public enum KServe {
    /// The datatypes the model's input accepts.
    public enum Datatype: String, Sendable, Hashable {
        /// 32-bit floats: an image tensor `[N, H, W, 3]`, preprocessed.
        case fp32 = "FP32"
        /// Byte strings: `[N]` encoded images, each base64 or a raw string (see ``decodeInfer(_:model:limits:)``).
        case bytes = "BYTES"
    }

    /// A decoded inference request.
    public struct InferRequest: Sendable, Equatable {
        /// The request's `id`, echoed in the response.
        public var id: String?
        /// The images, in order.
        public var images: [RequestImage]
    }

    /// The most levels of nesting accepted in a tensor's `data` (the image tensor has four).
    static let maxDataDepth = 5

    /// Decodes an inference request body for `model`.
    ///
    /// The request has exactly one input, named `input_1`, either
    /// - `"datatype": "FP32"`, `"shape": [N, H, W, 3]` (the model's size), `data` the N images
    ///   preprocessed (range as the model's preprocessing gives, -1...1 for the Keras weights),
    ///   row-major, flat or nested; or
    /// - `"datatype": "BYTES"`, `"shape": [N]`, `data` N strings each holding an encoded image
    ///   (JPEG, PNG, WebP, GIF, BMP): base64 when the string is valid base64, else the
    ///   string's code points 0...255 as bytes (how binary travels in a JSON string); decoded
    ///   and preprocessed with the model's own preprocessing.
    /// `outputs`, when given, may only name the model's output.
    ///
    /// - Throws: ``ServingError/invalidJSON(reason:)``; ``ServingError/invalidInput(field:problem:)``
    ///   naming the field (`inputs[0].shape`) for a missing or ill-typed field, an unknown
    ///   input or output name, another datatype, a shape that is not the model's, data whose
    ///   count differs from the shape, values outside the input range, more images than allowed.
    public static func decodeInfer(_ body: Data, model: ServedModel, limits: ServingLimits) throws(ServingError) -> InferRequest {
        try RequestJSON.decode(InferDocument.self, from: body, context: RequestJSON.Context(model: model, limits: limits)).request
    }

    /// An inference request body, read in the shapes ``decodeInfer(_:model:limits:)`` describes.
    struct InferDocument: RequestDocument {
        var request: InferRequest

        init(from decoder: any Decoder) throws {
            let context = try RequestJSON.context(decoder)
            let object = try RequestJSON.topLevelObject(decoder)
            var id: String?
            if object.contains(JSONKey("id")) { id = try RequestJSON.string(object, "id", field: "id") }
            if object.contains(JSONKey("parameters")), (try? object.nestedContainer(keyedBy: JSONKey.self, forKey: JSONKey("parameters"))) == nil {
                throw ServingError.invalidInput(field: "parameters", problem: "expected an object, got \(RequestJSON.typeName(object, "parameters"))")
            }
            if object.contains(JSONKey("outputs")) {
                var list: any UnkeyedDecodingContainer
                do { list = try object.nestedUnkeyedContainer(forKey: JSONKey("outputs")) } catch {
                    throw ServingError.invalidInput(field: "outputs", problem: "expected an array, got \(RequestJSON.typeName(object, "outputs"))")
                }
                var i = 0
                while !list.isAtEnd {
                    guard let output = try? list.nestedContainer(keyedBy: JSONKey.self), let name = try? output.decode(String.self, forKey: JSONKey("name")) else {
                        throw ServingError.invalidInput(field: "outputs[\(i)]", problem: "expected an object with a name")
                    }
                    guard name == context.outputName else {
                        throw ServingError.invalidInput(field: "outputs[\(i)].name", problem: "model '\(context.modelName)' has no output '\(RequestJSON.quoted(name))' (outputs: \(context.outputName))")
                    }
                    i += 1
                }
            }
            guard object.contains(JSONKey("inputs")) else { throw ServingError.invalidInput(field: "inputs", problem: "missing") }
            var inputs: any UnkeyedDecodingContainer
            do { inputs = try object.nestedUnkeyedContainer(forKey: JSONKey("inputs")) } catch {
                throw ServingError.invalidInput(field: "inputs", problem: "expected an array, got \(RequestJSON.typeName(object, "inputs"))")
            }
            guard inputs.count == 1 else {
                throw ServingError.invalidInput(field: "inputs", problem: "expected exactly one input ('\(ServedModel.inputName)'), got \(inputs.count ?? 0)")
            }
            let input: KeyedDecodingContainer<JSONKey>
            do { input = try inputs.nestedContainer(keyedBy: JSONKey.self) } catch {
                throw ServingError.invalidInput(field: "inputs[0]", problem: "expected an object, got \(RequestJSON.typeName(next: &inputs))")
            }
            guard let name = try? input.decode(String.self, forKey: JSONKey("name")) else { throw ServingError.invalidInput(field: "inputs[0].name", problem: "missing, or not a string") }
            guard name == ServedModel.inputName else {
                throw ServingError.invalidInput(field: "inputs[0].name", problem: "model '\(context.modelName)' has no input '\(RequestJSON.quoted(name))' (inputs: \(ServedModel.inputName))")
            }
            guard let datatypeText = try? input.decode(String.self, forKey: JSONKey("datatype")) else {
                throw ServingError.invalidInput(field: "inputs[0].datatype", problem: "missing, or not a string")
            }
            guard let datatype = Datatype(rawValue: datatypeText) else {
                throw ServingError.invalidInput(field: "inputs[0].datatype", problem: "'\(RequestJSON.quoted(datatypeText))' is not accepted (FP32 for an image tensor, BYTES for encoded images)")
            }
            guard var shapeList = try? input.nestedUnkeyedContainer(forKey: JSONKey("shape")) else {
                throw ServingError.invalidInput(field: "inputs[0].shape", problem: "missing, or not an array")
            }
            var shape: [Int] = []
            while !shapeList.isAtEnd {
                let i = shape.count
                guard let n = try? shapeList.decode(Int.self) else {
                    let kind = RequestJSON.typeName(next: &shapeList)
                    throw ServingError.invalidInput(field: "inputs[0].shape[\(i)]", problem: "expected a non-negative integer, got \(kind)")
                }
                // (The element is read: what follows it is not what was wrong.)
                guard n >= 0 else { throw ServingError.invalidInput(field: "inputs[0].shape[\(i)]", problem: "expected a non-negative integer, got \(n)") }
                guard shape.count < 8 else { throw ServingError.invalidInput(field: "inputs[0].shape", problem: "more than 8 dimensions") }
                shape.append(n)
            }
            if input.contains(JSONKey("parameters")) {
                guard let parameters = try? input.nestedContainer(keyedBy: JSONKey.self, forKey: JSONKey("parameters")) else {
                    throw ServingError.invalidInput(field: "inputs[0].parameters", problem: "expected an object, got \(RequestJSON.typeName(input, "parameters"))")
                }
                // The binary tensor extension puts the data after the JSON; this server reads the data in the JSON only.
                if parameters.contains(JSONKey("binary_data_size")) {
                    throw ServingError.invalidInput(field: "inputs[0].parameters.binary_data_size", problem: "the binary tensor data extension is not supported: send the tensor in \"data\" (JSON numbers for FP32, strings for BYTES)")
                }
            }
            guard input.contains(JSONKey("data")) else { throw ServingError.invalidInput(field: "inputs[0].data", problem: "missing") }
            let data = try input.superDecoder(forKey: JSONKey("data"))
            let images: [RequestImage]
            let inputScalarCount = context.height * context.width * 3
            switch datatype {
            case .fp32:
                let expected = "[N, \(context.height), \(context.width), 3]"
                guard shape.count == 4, shape[1] == context.height, shape[2] == context.width, shape[3] == 3 else {
                    throw ServingError.invalidInput(field: "inputs[0].shape", problem: "\(shape) is not \(expected), the input of model '\(context.modelName)'")
                }
                let n = shape[0]
                try context.limits.checkImageCount(Int64(n), field: "inputs[0].shape[0]")
                let values = try RequestJSON.flatNumbers(data, limit: n * inputScalarCount, maxDepth: maxDataDepth, field: "inputs[0].data")
                guard values.count == n * inputScalarCount else {
                    throw ServingError.invalidInput(field: "inputs[0].data", problem: "\(values.count) values, but shape \(shape) has \(n * inputScalarCount)")
                }
                let range = context.range, slack = context.slack
                if let bad = ServedModel.firstValue(outside: range, slack: slack, in: values) {
                    throw ServingError.invalidInput(field: "inputs[0].data", problem: "value \(values[bad]) at flat index \(bad) is outside \(range.lowerBound)...\(range.upperBound), the range of this model's preprocessed input; send preprocessed values, or encoded images as BYTES")
                }
                images = (0..<n).map { .tensor(Array(values[($0 * inputScalarCount)..<(($0 + 1) * inputScalarCount)])) }
            case .bytes:
                guard shape.count == 1 || (shape.count == 2 && shape[1] == 1) else {
                    throw ServingError.invalidInput(field: "inputs[0].shape", problem: "\(shape) is not [N] (one encoded image per element) for BYTES")
                }
                let n = shape[0]
                try context.limits.checkImageCount(Int64(n), field: "inputs[0].shape[0]")
                images = try Self.strings(data, count: n, shape: shape).enumerated().map { .encoded(bytes(of: $0.element), field: "inputs[0].data[\($0.offset)]") }
            }
            request = InferRequest(id: id, images: images)
        }

        /// The strings of a BYTES `data`: `[N]` flat, or nested as `[[s], ...]`.
        private static func strings(_ decoder: any Decoder, count n: Int, shape: [Int]) throws -> [String] {
            var list: any UnkeyedDecodingContainer
            do { list = try decoder.unkeyedContainer() } catch {
                throw ServingError.invalidInput(field: "inputs[0].data", problem: "expected an array of strings, got \(RequestJSON.typeName(decoder))")
            }
            var strings: [String] = []
            while !list.isAtEnd {
                let field = "inputs[0].data[\(strings.count)]"
                if let text = try? list.decode(String.self) {
                    strings.append(text)
                } else if var inner = try? list.nestedUnkeyedContainer() {
                    while !inner.isAtEnd {
                        guard let text = try? inner.decode(String.self) else {
                            throw ServingError.invalidInput(field: "inputs[0].data[\(strings.count)]", problem: "expected a string holding an encoded image, got \(RequestJSON.typeName(next: &inner))")
                        }
                        strings.append(text)
                    }
                } else {
                    throw ServingError.invalidInput(field: field, problem: "expected a string holding an encoded image, got \(RequestJSON.typeName(next: &list))")
                }
            }
            // Bounded: the census allows a few strings per image.
            guard strings.count == n else {
                throw ServingError.invalidInput(field: "inputs[0].data", problem: "\(strings.count) elements, but shape \(shape) has \(n)")
            }
            return strings
        }
    }

    /// The bytes a BYTES element holds: its base64 decoding when it is base64 of something,
    /// else its code points when all are at most 255 (Latin-1, how binary is put in a JSON
    /// string), else its UTF-8.
    static func bytes(of text: String) -> Data {
        let scalars = text.unicodeScalars
        let raw = scalars.allSatisfy({ $0.value <= 0xFF }) ? Data(scalars.map { UInt8($0.value) }) : Data(text.utf8)
        if !text.isEmpty, let decoded = RequestJSON.base64(text), ImageFormat.detect(decoded) != nil || ImageFormat.detect(raw) == nil {
            return decoded
        }
        return raw
    }

    /// One output tensor of a response.
    public struct OutputTensor: Encodable, Sendable, Equatable {
        /// The output's name (`predictions` or `embedding`).
        public var name: String
        /// Always `FP32`.
        public var datatype: String
        /// `[N, width]`.
        public var shape: [Int]
        /// The values, row-major (`N * width`).
        public var data: [Float]
    }

    /// An inference response.
    public struct InferResponse: Encodable, Sendable, Equatable {
        /// The model's name.
        public var model_name: String
        /// The model's version (`1`).
        public var model_version: String
        /// The request's `id`, when it had one.
        public var id: String?
        /// The model's output.
        public var outputs: [OutputTensor]
    }

    /// The response body for `outputs` of a request with `id`.
    public static func encodeInferResponse(_ outputs: ServedOutputs, model: ServedModel, id: String?) -> Data {
        // The keys in sorted order, as ServingJSON.encode writes them.
        let rows = outputs.primary
        var out = "{"
        out.reserveCapacity(160 + rows.reduce(0) { $0 + $1.count * 12 })
        if let id {
            out += "\"id\":"
            ServingJSON.append(string: id, to: &out)
            out += ","
        }
        out += "\"model_name\":"
        ServingJSON.append(string: model.name, to: &out)
        out += ",\"model_version\":"
        ServingJSON.append(string: model.version, to: &out)
        out += ",\"outputs\":[{\"data\":"
        ServingJSON.append(rows.flatMap { $0 }, to: &out)
        out += ",\"datatype\":\"\(Datatype.fp32.rawValue)\",\"name\":"
        ServingJSON.append(string: model.outputName, to: &out)
        out += ",\"shape\":[\(rows.count),\(model.outputWidth)]}]}"
        return Data(out.utf8)
    }

    /// One tensor in model metadata.
    public struct TensorMetadata: Encodable, Sendable, Equatable {
        /// The tensor's name.
        public var name: String
        /// Its datatype (`FP32`).
        public var datatype: String
        /// Its shape, `-1` for the batch dimension.
        public var shape: [Int]
    }

    /// `GET /v2/models/{name}`: the model's name, versions, platform, input and output.
    public struct ModelMetadata: Encodable, Sendable, Equatable {
        /// The model's name.
        public var name: String
        /// Its versions (`["1"]`).
        public var versions: [String]
        /// `swift-mobilenet`.
        public var platform: String
        /// `input_1`: `FP32 [-1, H, W, 3]` (BYTES `[-1]` of encoded images is accepted too).
        public var inputs: [TensorMetadata]
        /// `predictions` `[-1, classes]` or `embedding` `[-1, 1280]`, FP32.
        public var outputs: [TensorMetadata]

        /// The metadata of `model`, listing `versions` (every served version of it; default
        /// its own).
        public init(model: ServedModel, versions: [String]? = nil) {
            name = model.name
            self.versions = versions ?? [model.version]
            platform = "swift-mobilenet"
            inputs = [TensorMetadata(name: ServedModel.inputName, datatype: Datatype.fp32.rawValue, shape: [-1, model.inputHeight, model.inputWidth, 3])]
            outputs = [TensorMetadata(name: model.outputName, datatype: Datatype.fp32.rawValue, shape: [-1, model.outputWidth])]
        }
    }

    /// `GET /v2`: the server's name, version and protocol extensions.
    public struct ServerMetadata: Encodable, Sendable, Equatable {
        /// `swift-mobilenet`.
        public var name = "swift-mobilenet"
        /// The server's version.
        public var version = "0.1.0"
        /// The protocol extensions supported (none).
        public var extensions: [String] = []

        /// The server metadata.
        public init() {}
    }
}
