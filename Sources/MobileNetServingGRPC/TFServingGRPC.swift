import Foundation
import GRPCCore
import MobileNetServing
import MobileNetTFProtos
import SwiftProtobuf

/// TensorFlow Serving's gRPC messages (`tensorflow_serving/apis/*.proto`) decoded into a served
/// model's requests and its outputs encoded into the responses, as TensorFlow Serving does for
/// a SavedModel with one `serving_default` signature: input `input_1`, output `predictions`
/// (a classifier's probabilities) or `embedding`.
///
/// Everything here is checked before it is used: tensor types, shapes (each dimension against
/// the model's input and ``/MobileNetServing/ServingLimits/maxImagesPerRequest`` before any
/// product is taken), value counts, value ranges; the message itself is bounded by the gRPC
/// server's largest request (``/MobileNetServing/ServingLimits/maxBodyBytes``).
public enum TFServingGRPC {
    /// The method name of the one signature (`tensorflow/serving/predict`).
    public static let predictMethodName = "tensorflow/serving/predict"

    // MARK: Model spec

    /// The version a `ModelSpec` asks for: its `version` as text, nil when it names none.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/versionNotFound(model:version:available:)`` for a
    ///   `version_label` (this server has no labels).
    static func version(of spec: Tensorflow_Serving_ModelSpec, available: [String]) throws(ServingError) -> String? {
        switch spec.versionChoice {
        case .version(let value): return String(value.value)
        case .versionLabel(let label):
            throw .versionNotFound(model: spec.name, version: "labelled \(label)", available: available)
        case nil: return nil
        }
    }

    /// Checks a request's `signature_name` (empty or `serving_default`).
    ///
    /// - Throws: ``/MobileNetServing/ServingError/unknownSignature(name:available:)``.
    static func checkSignature(_ name: String) throws(ServingError) {
        guard name.isEmpty || name == TFServing.defaultSignature else {
            throw .unknownSignature(name: name, available: [TFServing.defaultSignature])
        }
    }

    /// The `ModelSpec` of a response: the model's name, version and signature.
    static func spec(of model: ServedModel, signature: String = TFServing.defaultSignature) -> Tensorflow_Serving_ModelSpec {
        var spec = Tensorflow_Serving_ModelSpec()
        spec.name = model.name
        spec.version = Google_Protobuf_Int64Value(model.versionNumber)
        spec.signatureName = signature
        return spec
    }

    // MARK: Predict

    /// The images of a `PredictRequest` for `model`: its one input, `input_1`, is
    /// - `DT_STRING` of shape `[N]` (or `[N, 1]`): encoded images (JPEG, PNG, WebP, GIF, BMP),
    ///   decoded and preprocessed with the model's preprocessing (what TensorFlow Serving's
    ///   clients send for an image model taking bytes);
    /// - `DT_FLOAT` of shape `[N, inputHeight, inputWidth, 3]` (NHWC), values preprocessed for
    ///   the model (``/MobileNetServing/ServedModel/inputRange``, -1...1 for the Keras
    ///   weights), in `tensor_content` (little-endian, as `tf.make_tensor_proto` writes it) or
    ///   `float_val`.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` naming the input for
    ///   a missing or unknown input, another type, a shape that does not fit, too many images, a
    ///   value count that does not match the shape, a value outside the input range;
    ///   ``/MobileNetServing/ServingError/unknownSignature(name:available:)``.
    public static func images(of request: Tensorflow_Serving_PredictRequest, model: ServedModel, limits: ServingLimits) throws(ServingError) -> [RequestImage] {
        try checkSignature(request.modelSpec.signatureName)
        let expected = ServedModel.inputName
        guard let tensor = request.inputs[expected] else {
            let given = request.inputs.keys.sorted().map { "'\($0)'" }.joined(separator: ", ")
            throw .invalidInput(field: "inputs", problem: "input tensor alias not found in signature: \(given.isEmpty ? "no inputs" : given); inputs expected to be in the set {\(expected)}")
        }
        if let other = request.inputs.keys.sorted().first(where: { $0 != expected }) {
            throw .invalidInput(field: "inputs['\(other)']", problem: "input tensor alias not found in signature; inputs expected to be in the set {\(expected)}")
        }
        for name in request.outputFilter where name != model.outputName {
            throw .invalidInput(field: "output_filter", problem: "output tensor alias not found in signature: '\(name)'; outputs expected to be in the set {\(model.outputName)}")
        }
        return try images(of: tensor, field: "inputs['\(expected)']", model: model, limits: limits)
    }

    /// The images of one input tensor (see ``images(of:model:limits:)-(Tensorflow_Serving_PredictRequest,_,_)``).
    static func images(of tensor: Tensorflow_TensorProto, field: String, model: ServedModel, limits: ServingLimits) throws(ServingError) -> [RequestImage] {
        guard !tensor.tensorShape.unknownRank else { throw .invalidInput(field: "\(field).tensor_shape", problem: "unknown rank") }
        let dims = tensor.tensorShape.dim.map(\.size)
        let shape = "[\(dims.map(String.init).joined(separator: ", "))]"
        switch tensor.dtype {
        case .dtString:
            guard dims.count == 1 || (dims.count == 2 && dims[1] == 1) else {
                throw .invalidInput(field: "\(field).tensor_shape", problem: "\(shape) is not [N] (one encoded image per element) for DT_STRING")
            }
            try limits.checkImageCount(dims[0], field: field)
            guard Int(dims[0]) == tensor.stringVal.count else {
                throw .invalidInput(field: "\(field).string_val", problem: "\(tensor.stringVal.count) strings, but the shape \(shape) has \(dims[0])")
            }
            return tensor.stringVal.enumerated().map { .encoded($0.element, field: "\(field).string_val[\($0.offset)]") }
        case .dtFloat:
            guard dims.count == 4, dims[1] == Int64(model.inputHeight), dims[2] == Int64(model.inputWidth), dims[3] == 3 else {
                throw .invalidInput(field: "\(field).tensor_shape", problem: "\(shape) is not [N, \(model.inputHeight), \(model.inputWidth), 3], the input of model '\(model.name)'")
            }
            try limits.checkImageCount(dims[0], field: field)
            let n = Int(dims[0]), perImage = model.inputScalarCount, total = n * perImage
            var values: [Float]
            if !tensor.tensorContent.isEmpty {
                guard tensor.floatVal.isEmpty else {
                    throw .invalidInput(field: "\(field).float_val", problem: "given together with tensor_content; a tensor holds its values in one of them")
                }
                guard tensor.tensorContent.count == total * 4 else {
                    throw .invalidInput(field: "\(field).tensor_content", problem: "\(tensor.tensorContent.count) bytes, but the shape \(shape) of DT_FLOAT needs \(total * 4)")
                }
                values = [Float](repeating: 0, count: total)
                values.withUnsafeMutableBytes { out in tensor.tensorContent.withUnsafeBytes { out.copyMemory(from: $0) } }
                // tensor_content is little-endian; so is every host this runs on (x86-64, arm64).
            } else {
                guard tensor.floatVal.count == total else {
                    throw .invalidInput(field: "\(field).float_val", problem: "\(tensor.floatVal.count) values, but the shape \(shape) has \(total)")
                }
                values = tensor.floatVal
            }
            if let bad = model.firstValueOutsideInputRange(values) {
                throw .invalidInput(field: field, problem: "value \(values[bad]) at flat index \(bad) is outside \(model.inputRange.lowerBound)...\(model.inputRange.upperBound), the range of this model's preprocessed input; send preprocessed values, or encoded images as DT_STRING")
            }
            return (0..<n).map { .tensor(Array(values[($0 * perImage)..<(($0 + 1) * perImage)])) }
        default:
            throw .invalidInput(field: "\(field).dtype", problem: "\(typeName(tensor.dtype)) is not accepted: send DT_STRING (encoded images, shape [N]) or DT_FLOAT (preprocessed, shape [N, \(model.inputHeight), \(model.inputWidth), 3])")
        }
    }

    /// A data type as TensorFlow writes it (`DT_INT32`), from the generated case (`dtInt32`).
    static func typeName(_ type: Tensorflow_DataType) -> String {
        if case .UNRECOGNIZED(let value) = type { return "data type \(value)" }
        var out = ""
        for character in String(describing: type) {
            if character.isUppercase, !out.isEmpty { out += "_" }
            out += character.uppercased()
        }
        return out
    }

    /// The `PredictResponse` of `outputs`: the model's output (`predictions` or `embedding`),
    /// `DT_FLOAT` of shape `[N, outputWidth]` in `float_val`, as TensorFlow Serving writes it.
    public static func predictResponse(_ outputs: ServedOutputs, model: ServedModel) -> Tensorflow_Serving_PredictResponse {
        var response = Tensorflow_Serving_PredictResponse()
        response.modelSpec = spec(of: model)
        var tensor = Tensorflow_TensorProto()
        tensor.dtype = .dtFloat
        let rows = outputs.primary
        tensor.tensorShape = shape([Int64(rows.count), Int64(rows.first?.count ?? model.outputWidth)])
        tensor.floatVal.reserveCapacity(rows.count * (rows.first?.count ?? 0))
        for row in rows { tensor.floatVal.append(contentsOf: row) }
        response.outputs[model.outputName] = tensor
        return response
    }

    static func shape(_ dims: [Int64]) -> Tensorflow_TensorShapeProto {
        var shape = Tensorflow_TensorShapeProto()
        shape.dim = dims.map { size in
            var dim = Tensorflow_TensorShapeProto.Dim()
            dim.size = size
            return dim
        }
        return shape
    }

    // MARK: Classify

    /// The feature names an `Example`'s encoded image is looked for under, in order.
    public static let imageFeatureNames = ["image", "image/encoded", "image_bytes", ServedModel.inputName]

    /// The images of a `ClassificationRequest`: one per `tf.Example` (`example_list`, or
    /// `example_list_with_context` with the context's features merged under each example's),
    /// each holding an encoded image as one `bytes_list` value under `image`, `image/encoded`,
    /// `image_bytes` or `input_1` (or under its only feature), or a preprocessed
    /// `[inputHeight, inputWidth, 3]` image as a `float_list` under `input_1`.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` naming the example
    ///   and feature; ``/MobileNetServing/ServingError/unknownSignature(name:available:)``.
    public static func images(of request: Tensorflow_Serving_ClassificationRequest, model: ServedModel, limits: ServingLimits) throws(ServingError) -> [RequestImage] {
        try checkSignature(request.modelSpec.signatureName)
        let examples: [Tensorflow_Example], context: Tensorflow_Features?, field: String
        switch request.input.kind {
        case .exampleList(let list): (examples, context, field) = (list.examples, nil, "input.example_list.examples")
        case .exampleListWithContext(let list):
            (examples, context, field) = (list.examples, list.context.features, "input.example_list_with_context.examples")
        case nil: throw .invalidInput(field: "input", problem: "missing: give example_list (one tf.Example per image)")
        }
        try limits.checkImageCount(Int64(examples.count), field: field)
        return try examples.enumerated().map { (i, example) throws(ServingError) in
            var features = context?.feature ?? [:]
            for (name, value) in example.features.feature { features[name] = value }
            return try image(of: features, field: "\(field)[\(i)]", model: model)
        }
    }

    static func image(of features: [String: Tensorflow_Feature], field: String, model: ServedModel) throws(ServingError) -> RequestImage {
        let name = imageFeatureNames.first { features[$0] != nil } ?? (features.count == 1 ? features.keys.first : nil)
        guard let name, let feature = features[name] else {
            throw .invalidInput(field: field, problem: "no image: put the encoded image in a bytes_list feature named \(imageFeatureNames.map { "'\($0)'" }.joined(separator: ", ")) (features given: \(features.keys.sorted().map { "'\($0)'" }.joined(separator: ", ")))")
        }
        let place = "\(field).features['\(name)']"
        switch feature.kind {
        case .bytesList(let list):
            guard list.value.count == 1 else { throw .invalidInput(field: place, problem: "\(list.value.count) values; one encoded image per example") }
            return .encoded(list.value[0], field: place)
        case .floatList(let list):
            guard list.value.count == model.inputScalarCount else {
                throw .invalidInput(field: place, problem: "\(list.value.count) floats; a preprocessed image of model '\(model.name)' has \(model.inputHeight)x\(model.inputWidth)x3 = \(model.inputScalarCount)")
            }
            if let bad = model.firstValueOutsideInputRange(list.value) {
                throw .invalidInput(field: place, problem: "value \(list.value[bad]) at index \(bad) is outside \(model.inputRange.lowerBound)...\(model.inputRange.upperBound), the range of this model's preprocessed input")
            }
            return .tensor(list.value)
        case .int64List, nil:
            throw .invalidInput(field: place, problem: "an int64_list or empty feature; give the encoded image as a bytes_list")
        }
    }

    /// The `ClassificationResponse` of a classifier's `outputs`: per image every class, in the
    /// model's output order, with its name and probability (as a classification signature's
    /// `classes` and `scores` give them).
    public static func classificationResponse(_ outputs: ServedOutputs, model: ServedModel) -> Tensorflow_Serving_ClassificationResponse {
        var response = Tensorflow_Serving_ClassificationResponse()
        response.modelSpec = spec(of: model)
        response.result.classifications = (outputs.probabilities ?? []).map { row in
            var classifications = Tensorflow_Serving_Classifications()
            classifications.classes = zip(model.classes, row).map { served, score in
                var entry = Tensorflow_Serving_Class()
                entry.label = served.name
                entry.score = score
                return entry
            }
            return classifications
        }
        return response
    }

    // MARK: Metadata and status

    /// The `GetModelMetadataResponse` of `model`: its `signature_def` (a `SignatureDefMap` in an
    /// `Any`) with the one `serving_default` signature, as the REST API's metadata.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` for a
    ///   `metadata_field` other than `signature_def` (the only one TensorFlow Serving has).
    public static func metadataResponse(_ request: Tensorflow_Serving_GetModelMetadataRequest, model: ServedModel) throws(ServingError) -> Tensorflow_Serving_GetModelMetadataResponse {
        guard !request.metadataField.isEmpty else { throw .invalidInput(field: "metadata_field", problem: "empty: ask for signature_def") }
        if let other = request.metadataField.first(where: { $0 != "signature_def" }) {
            throw .invalidInput(field: "metadata_field", problem: "metadata field '\(other)' is not supported (signature_def is)")
        }
        func info(_ name: String, _ dims: [Int64]) -> Tensorflow_TensorInfo {
            var info = Tensorflow_TensorInfo()
            info.name = name
            info.dtype = .dtFloat
            info.tensorShape = shape(dims)
            return info
        }
        var signature = Tensorflow_SignatureDef()
        signature.methodName = predictMethodName
        signature.inputs[ServedModel.inputName] = info("serving_default_\(ServedModel.inputName):0", [-1, Int64(model.inputHeight), Int64(model.inputWidth), 3])
        signature.outputs[model.outputName] = info("StatefulPartitionedCall:0", [-1, Int64(model.outputWidth)])
        var map = Tensorflow_Serving_SignatureDefMap()
        map.signatureDef[TFServing.defaultSignature] = signature
        var response = Tensorflow_Serving_GetModelMetadataResponse()
        response.modelSpec = spec(of: model, signature: "")
        do {
            response.metadata["signature_def"] = try Google_Protobuf_Any(message: map)
        } catch {
            throw .inferenceFailed(model: model.name, reason: "the metadata could not be encoded: \(error)")
        }
        return response
    }

    /// The `GetModelStatusResponse` of the versions of a model the registry serves, each
    /// `AVAILABLE` with status `OK`; then the retired ones, `END`; then those that failed to
    /// load, `END` with `UNKNOWN` and why (as the REST status).
    public static func statusResponse(versions: [ServedModel], retired: [Int64] = [], failed: [(version: Int64, reason: String)] = []) -> Tensorflow_Serving_GetModelStatusResponse {
        func entry(_ version: Int64, _ state: Tensorflow_Serving_ModelVersionStatus.State, error: String? = nil) -> Tensorflow_Serving_ModelVersionStatus {
            var status = Tensorflow_Serving_ModelVersionStatus()
            status.version = version
            status.state = state
            var proto = Tensorflow_Serving_StatusProto()
            if let error {
                proto.errorCode = .unknown
                proto.errorMessage = error
            }
            status.status = proto
            return status
        }
        var response = Tensorflow_Serving_GetModelStatusResponse()
        response.modelVersionStatus = versions.map { entry($0.versionNumber, .available) } + retired.map { entry($0, .end) }
            + failed.map { entry($0.version, .end, error: $0.reason) }
        return response
    }

    // MARK: Errors

    /// The gRPC status of a serving error, as TensorFlow Serving answers: `NOT_FOUND` for an
    /// unknown model or version, `INVALID_ARGUMENT` for a request that does not fit,
    /// `RESOURCE_EXHAUSTED` for a full queue, `UNAVAILABLE` while loading or shutting down,
    /// `DEADLINE_EXCEEDED` for a request that waited too long, `INTERNAL` for a network failure.
    public static func rpcError(_ error: ServingError) -> RPCError {
        let code: RPCError.Code
        switch error {
        case .modelNotFound, .versionNotFound, .indexNotFound, .imageNotFound: code = .notFound
        case .queueFull: code = .resourceExhausted
        case .shuttingDown, .notReady: code = .unavailable
        case .timedOut, .bodyTimedOut: code = .deadlineExceeded
        case .inferenceFailed, .modelLoadFailed, .indexLoadFailed: code = .internalError
        case .bodyTooLarge: code = .resourceExhausted
        case .invalidJSON, .invalidInput, .unknownSignature, .invalidImage, .methodNotAllowed, .unsupportedMediaType, .invalidSpecification: code = .invalidArgument
        }
        return RPCError(code: code, message: error.description)
    }
}
