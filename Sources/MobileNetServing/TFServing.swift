import Foundation

/// The TensorFlow Serving REST API (`/v1/models/...`): predict requests in the row
/// (`instances`) and columnar (`inputs`) formats, their responses, model status and metadata,
/// as described in TensorFlow Serving's "RESTful API" guide.
public enum TFServing {
    /// The one signature every served model has.
    public static let defaultSignature = "serving_default"

    /// Whether the request was in the row or the columnar format; the response uses the same.
    public enum Format: String, Sendable, Hashable {
        /// `{"instances": [...]}`, answered with `{"predictions": [...]}`.
        case row
        /// `{"inputs": ...}`, answered with `{"outputs": ...}`.
        case columnar
    }

    /// A decoded predict request.
    public struct PredictRequest: Sendable, Equatable {
        /// The request format.
        public var format: Format
        /// The images, in order.
        public var images: [RequestImage]
    }

    /// Decodes a predict request body for `model`.
    ///
    /// Each instance (each element of `instances`, or of the batch in `inputs`) is one of:
    /// - a `[inputHeight][inputWidth][3]` array of numbers, preprocessed for the model (-1...1
    ///   for the Keras weights), as a Keras SavedModel of the network takes it;
    /// - `{"b64": "..."}`, base64 of an encoded image (JPEG, PNG, WebP, GIF, BMP), decoded and
    ///   preprocessed with the model's own preprocessing (TensorFlow Serving's binary values);
    /// - either of those under the input's name, `{"input_1": ...}`.
    /// In the columnar format `inputs` is the batch (an array of instances), the same under the
    /// input's name (`{"inputs": {"input_1": [...]}}`), or a single `{"b64": ...}`.
    ///
    /// - Parameters:
    ///   - body: the JSON body.
    ///   - model: the model addressed (input size and range, input name).
    ///   - limits: the most images per request.
    /// - Throws: ``ServingError/invalidJSON(reason:)``, ``ServingError/unknownSignature(name:available:)``
    ///   for a `signature_name` other than `serving_default`, ``ServingError/invalidInput(field:problem:)``
    ///   naming the field for everything else that does not fit.
    public static func decodePredict(_ body: Data, model: ServedModel, limits: ServingLimits) throws(ServingError) -> PredictRequest {
        try RequestJSON.decode(PredictDocument.self, from: body, context: RequestJSON.Context(model: model, limits: limits)).request
    }

    /// A predict request body, read in the shapes ``decodePredict(_:model:limits:)`` describes.
    struct PredictDocument: RequestDocument {
        var request: PredictRequest

        /// A predict request's fields: anything else is refused (before the values under it are read).
        static func checkFields(_ topLevelKeys: [String]) throws(ServingError) {
            // Compared as bytes: hashing a long key as a Swift String normalises it.
            let known = ["signature_name", "instances", "inputs"]
            if let unknown = topLevelKeys.first(where: { key in !known.contains { $0.utf8.elementsEqual(key.utf8) } }) {
                throw .invalidInput(field: RequestJSON.quoted(unknown), problem: "unknown field (a predict request has signature_name and one of instances or inputs)")
            }
        }

        init(from decoder: any Decoder) throws {
            let context = try RequestJSON.context(decoder)
            let object = try RequestJSON.topLevelObject(decoder)
            if object.contains(JSONKey("signature_name")) {
                let name = try RequestJSON.string(object, "signature_name", field: "signature_name")
                guard name == defaultSignature || name.isEmpty else { throw ServingError.unknownSignature(name: RequestJSON.quoted(name), available: [defaultSignature]) }
            }
            switch (object.contains(JSONKey("instances")), object.contains(JSONKey("inputs"))) {
            case (false, false):
                throw ServingError.invalidInput(field: "instances", problem: "missing: give instances (row format) or inputs (columnar format)")
            case (true, true):
                throw ServingError.invalidInput(field: "inputs", problem: "instances and inputs exclude each other")
            case (true, false):
                request = PredictRequest(format: .row, images: try Self.batch(try object.superDecoder(forKey: JSONKey("instances")), field: "instances", context: context))
            case (false, true):
                var value = try object.superDecoder(forKey: JSONKey("inputs")), field = "inputs"
                if let named = try? value.container(keyedBy: JSONKey.self) {
                    if !named.contains(JSONKey("b64")) {
                        guard named.allKeys.count == 1, named.contains(JSONKey(ServedModel.inputName)) else {
                            throw ServingError.invalidInput(field: "inputs", problem: "expected the batch, or an object with the one input '\(ServedModel.inputName)', got keys \(named.allKeys.map { RequestJSON.quoted($0.stringValue) }.sorted())")
                        }
                        (value, field) = (try named.superDecoder(forKey: JSONKey(ServedModel.inputName)), "inputs.\(ServedModel.inputName)")
                    }
                }
                if (try? value.container(keyedBy: JSONKey.self)) != nil {  // a single {"b64": ...}
                    request = PredictRequest(format: .columnar, images: [try Self.instance(value, field: field, context: context)])
                } else {
                    request = PredictRequest(format: .columnar, images: try Self.batch(value, field: field, context: context))
                }
            }
        }

        private static func batch(_ decoder: any Decoder, field: String, context: RequestJSON.Context) throws -> [RequestImage] {
            var items: any UnkeyedDecodingContainer
            do { items = try decoder.unkeyedContainer() } catch {
                throw ServingError.invalidInput(field: field, problem: "expected an array of instances, got \(RequestJSON.typeName(decoder))")
            }
            let count = items.count ?? 0
            try context.limits.checkImageCount(Int64(count), field: field, noun: "instances")
            var images: [RequestImage] = []
            for i in 0..<count { images.append(try instance(try items.superDecoder(), field: "\(field)[\(i)]", context: context)) }
            return images
        }

        private static func instance(_ decoder: any Decoder, field: String, context: RequestJSON.Context, named: Bool = false) throws -> RequestImage {
            if let object = try? decoder.container(keyedBy: JSONKey.self) {
                let keys = object.allKeys.map { RequestJSON.quoted($0.stringValue) }.sorted()
                if object.contains(JSONKey("b64")) {
                    guard keys.count == 1 else { throw ServingError.invalidInput(field: field, problem: "a binary value is {\"b64\": \"...\"} with no other keys, got keys \(keys)") }
                    let text: String
                    do { text = try object.decode(String.self, forKey: JSONKey("b64")) } catch {
                        throw ServingError.invalidInput(field: "\(field).b64", problem: "expected a base64 string, got \(RequestJSON.typeName(object, "b64"))")
                    }
                    guard let data = RequestJSON.base64(text) else { throw ServingError.invalidInput(field: "\(field).b64", problem: "not valid base64") }
                    return .encoded(data, field: "\(field).b64")
                }
                guard !named, keys == [ServedModel.inputName] else {
                    throw ServingError.invalidInput(field: field, problem: "an instance is a \(context.height)x\(context.width)x3 array, {\"b64\": ...} or {\"\(ServedModel.inputName)\": ...}; got an object with keys \(keys)")
                }
                return try instance(try object.superDecoder(forKey: JSONKey(ServedModel.inputName)), field: "\(field).\(ServedModel.inputName)", context: context, named: true)
            }
            return .tensor(try RequestJSON.imageTensor(decoder, field: field, context: context))
        }
    }

    /// The response body: `{"predictions": [row, ...]}` or `{"outputs": [row, ...]}`, one row of
    /// the model's single output per image (probabilities for a classifier, the embedding for an
    /// embedder), as TensorFlow Serving writes a signature with one output.
    public static func encodePredictResponse(_ outputs: ServedOutputs, format: Format) -> Data {
        var out = "{\"\(format == .row ? "predictions" : "outputs")\":["
        out.reserveCapacity(16 + outputs.primary.reduce(0) { $0 + $1.count * 12 })
        for (i, row) in outputs.primary.enumerated() {
            if i > 0 { out += "," }
            ServingJSON.append(row, to: &out)
        }
        out += "]}"
        return Data(out.utf8)
    }

    /// `GET /v1/models/{name}`: the model's version status, as TensorFlow Serving's
    /// `GetModelStatus` gives it (`state` is `AVAILABLE` once loaded).
    public struct ModelStatus: Encodable, Sendable, Equatable {
        /// One version's status.
        struct VersionStatus: Encodable, Sendable, Equatable {
            /// The status's error code and message (`OK`, empty).
            struct Status: Encodable, Sendable, Equatable {
                var error_code = "OK"
                var error_message = ""
            }
            var version: String
            var state: String
            var status = Status()
        }
        var model_version_status: [VersionStatus]

        /// The status of the served versions of a model, each `AVAILABLE`; then the retired
        /// ones, `END` (TensorFlow Serving lists an unloaded version so); then those that failed
        /// to load, `END` with error `UNKNOWN` and why.
        public init(versions: [ServedModel], retired: [Int64] = [], failed: [(version: Int64, reason: String)] = []) {
            model_version_status = versions.map { VersionStatus(version: $0.version, state: "AVAILABLE") }
                + retired.map { VersionStatus(version: String($0), state: "END") }
                + failed.map { VersionStatus(version: String($0.version), state: "END", status: VersionStatus.Status(error_code: "UNKNOWN", error_message: $0.reason)) }
        }
    }

    /// `GET /v1/models/{name}/metadata`: the model spec and its `serving_default` signature
    /// (input `input_1`: `DT_FLOAT [-1, H, W, 3]`; output `predictions` `DT_FLOAT [-1, classes]`
    /// or `embedding` `DT_FLOAT [-1, 1280]`), in TensorFlow Serving's JSON form of `SignatureDef`.
    public struct ModelMetadata: Encodable, Sendable, Equatable {
        struct ModelSpec: Encodable, Sendable, Equatable {
            var name: String
            var signature_name = ""
            var version: String
        }
        struct TensorInfo: Encodable, Sendable, Equatable {
            struct Shape: Encodable, Sendable, Equatable {
                struct Dimension: Encodable, Sendable, Equatable {
                    var size: String
                    var name = ""
                }
                var dim: [Dimension]
                var unknown_rank = false
            }
            var dtype: String
            var tensor_shape: Shape
            var name: String

            init(dtype: String, shape: [Int], name: String) {
                self.dtype = dtype
                tensor_shape = Shape(dim: shape.map { Shape.Dimension(size: String($0)) })
                self.name = name
            }
        }
        struct SignatureDef: Encodable, Sendable, Equatable {
            var inputs: [String: TensorInfo]
            var outputs: [String: TensorInfo]
            var method_name = "tensorflow/serving/predict"
        }
        struct SignatureDefMap: Encodable, Sendable, Equatable {
            var signature_def: [String: SignatureDef]
        }
        struct Metadata: Encodable, Sendable, Equatable {
            var signature_def: SignatureDefMap
        }
        var model_spec: ModelSpec
        var metadata: Metadata

        /// The metadata of `model`.
        public init(model: ServedModel) {
            model_spec = ModelSpec(name: model.name, version: model.version)
            let input = TensorInfo(dtype: "DT_FLOAT", shape: [-1, model.inputHeight, model.inputWidth, 3], name: "serving_default_\(ServedModel.inputName):0")
            let output = TensorInfo(dtype: "DT_FLOAT", shape: [-1, model.outputWidth], name: "StatefulPartitionedCall:0")
            let signature = SignatureDef(inputs: [ServedModel.inputName: input], outputs: [model.outputName: output])
            metadata = Metadata(signature_def: SignatureDefMap(signature_def: [defaultSignature: signature]))
        }
    }
}

/// JSON encoding of responses: sorted keys, no escaped slashes; floats in their shortest
/// round-trip form.
///
/// The float-heavy responses (TF Serving predictions, KServe outputs, embeddings) are written
/// by ``append(_:to:)-(Float,_)`` rather than `JSONEncoder`, which takes about 2 ms for 1000
/// floats (a fifth of a batch-1 inference): the same text, eight times faster.
public enum ServingJSON {
    /// Appends `value` as JSON: its shortest round-trip digits (Swift's `description`, as
    /// `JSONEncoder` writes them, without a trailing `.0`), and the non-finite values as the
    /// strings `"NaN"`, `"Infinity"`, `"-Infinity"` (the encoder's strategy in ``encode(_:)``).
    public static func append(_ value: Float, to out: inout String) {
        guard value.isFinite else {
            out += value.isNaN ? "\"NaN\"" : (value > 0 ? "\"Infinity\"" : "\"-Infinity\"")
            return
        }
        let text = value.description
        out += text.hasSuffix(".0") ? text.dropLast(2) : Substring(text)
    }

    /// Appends `values` as a JSON array of numbers (see ``append(_:to:)-(Float,_)``).
    public static func append(_ values: [Float], to out: inout String) {
        out += "["
        for (i, value) in values.enumerated() {
            if i > 0 { out += "," }
            append(value, to: &out)
        }
        out += "]"
    }

    /// Appends `text` as a JSON string literal: `"` and `\` escaped, control characters as
    /// `\uXXXX` (the short forms for newline, tab and carriage return), `/` not escaped.
    public static func append(string text: String, to out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    /// The JSON bytes of `value` (`{"error": ...}` if it cannot be encoded, which for the
    /// response types here only a non-finite float would cause).
    public static func encode(_ value: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        do { return try encoder.encode(value) } catch {
            return Data(#"{"error":"the response could not be encoded"}"#.utf8)
        }
    }

    /// `{"error": "<message>"}`, the error body of TensorFlow Serving and KServe v2.
    public static func error(_ message: String) -> Data {
        struct Body: Encodable { var error: String }
        return encode(Body(error: message))
    }
}
