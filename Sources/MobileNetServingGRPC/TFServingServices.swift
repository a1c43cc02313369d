import Foundation
import GRPCCore
import GRPCNIOTransportCore
import GRPCNIOTransportHTTP2Posix
import MobileNetServing
import MobileNetTFProtos

/// The service a gRPC call runs on once the server is ready; throws
/// ``/MobileNetServing/ServingError/notReady`` while the models load.
public typealias InferenceServiceProvider = @Sendable () throws(ServingError) -> InferenceService

/// TensorFlow Serving's `tensorflow.serving.PredictionService` over an ``/MobileNetServing/InferenceService``:
/// `Predict`, `Classify` and `GetModelMetadata` as ``TFServingGRPC`` describes them; `Regress`
/// and `MultiInference` answer `UNIMPLEMENTED` (a MobileNetV2 has no regression signature).
/// Images go through the same batcher, limits and preprocessing as the REST API's.
public struct PredictionService: Tensorflow_Serving_PredictionService.SimpleServiceProtocol {
    let service: InferenceServiceProvider

    /// A service answering with what `service` returns (the ready server's inference service).
    public init(service: @escaping InferenceServiceProvider) {
        self.service = service
    }

    /// `Predict`: see ``TFServingGRPC/images(of:model:limits:)-(Tensorflow_Serving_PredictRequest,_,_)``.
    public func predict(request: Tensorflow_Serving_PredictRequest, context: ServerContext) async throws -> Tensorflow_Serving_PredictResponse {
        try await answer { () async throws(ServingError) in
            let service = try service()
            let model = try Self.model(request.modelSpec, in: service)
            let images = try TFServingGRPC.images(of: request, model: model, limits: service.limits)
            return TFServingGRPC.predictResponse(try await service.run(images, on: model), model: model)
        }
    }

    /// `Classify`: a classifier's probabilities of every class per `tf.Example`
    /// (``TFServingGRPC/images(of:model:limits:)-(Tensorflow_Serving_ClassificationRequest,_,_)``);
    /// `INVALID_ARGUMENT` for an embedder.
    public func classify(request: Tensorflow_Serving_ClassificationRequest, context: ServerContext) async throws -> Tensorflow_Serving_ClassificationResponse {
        try await answer { () async throws(ServingError) in
            let service = try service()
            let model = try Self.model(request.modelSpec, in: service)
            guard model.kind.isClassifier else {
                throw .invalidInput(field: "model_spec.name", problem: "'\(model.name)' is an embedder (its output is the \(model.embeddingWidth)-d embedding); Classify needs a classifier: use Predict")
            }
            let images = try TFServingGRPC.images(of: request, model: model, limits: service.limits)
            return TFServingGRPC.classificationResponse(try await service.run(images, on: model), model: model)
        }
    }

    /// `GetModelMetadata`: the `serving_default` signature (``TFServingGRPC/metadataResponse(_:model:)``).
    public func getModelMetadata(request: Tensorflow_Serving_GetModelMetadataRequest, context: ServerContext) async throws -> Tensorflow_Serving_GetModelMetadataResponse {
        try await answer { () async throws(ServingError) in
            let service = try service()
            return try TFServingGRPC.metadataResponse(request, model: try Self.model(request.modelSpec, in: service))
        }
    }

    /// `Regress`: `UNIMPLEMENTED`.
    public func regress(request: Tensorflow_Serving_RegressionRequest, context: ServerContext) async throws -> Tensorflow_Serving_RegressionResponse {
        throw RPCError(code: .unimplemented, message: "Regress: the served models are classifiers and embedders with one predict signature; use Predict or Classify")
    }

    /// `MultiInference`: `UNIMPLEMENTED`.
    public func multiInference(request: Tensorflow_Serving_MultiInferenceRequest, context: ServerContext) async throws -> Tensorflow_Serving_MultiInferenceResponse {
        throw RPCError(code: .unimplemented, message: "MultiInference is not served; use Predict or Classify")
    }

    /// The model a `ModelSpec` names, in the version it asks for (nil: the latest).
    static func model(_ spec: Tensorflow_Serving_ModelSpec, in service: InferenceService) throws(ServingError) -> ServedModel {
        guard !spec.name.isEmpty else { throw .invalidInput(field: "model_spec.name", problem: "missing") }
        let versions = (try? service.registry.versions(of: spec.name)) ?? []
        return try service.registry.model(named: spec.name, version: try TFServingGRPC.version(of: spec, available: versions.map(\.version)))
    }
}

/// TensorFlow Serving's `tensorflow.serving.ModelService`: `GetModelStatus` (every served version
/// of the model, or the one asked for, `AVAILABLE`); `HandleReloadConfigRequest` answers
/// `UNIMPLEMENTED` (models are given on the command line, and new version folders are picked up
/// by polling).
public struct ModelService: Tensorflow_Serving_ModelService.SimpleServiceProtocol {
    let service: InferenceServiceProvider

    /// A service answering with what `service` returns.
    public init(service: @escaping InferenceServiceProvider) {
        self.service = service
    }

    /// `GetModelStatus`.
    public func getModelStatus(request: Tensorflow_Serving_GetModelStatusRequest, context: ServerContext) async throws -> Tensorflow_Serving_GetModelStatusResponse {
        try await answer { () async throws(ServingError) in
            let service = try service()
            let spec = request.modelSpec
            guard !spec.name.isEmpty else { throw .invalidInput(field: "model_spec.name", problem: "missing") }
            let versions = try service.registry.versions(of: spec.name)
            if let version = try TFServingGRPC.version(of: spec, available: versions.map(\.version)) {
                return TFServingGRPC.statusResponse(versions: [try service.registry.model(named: spec.name, version: version)])
            }
            return TFServingGRPC.statusResponse(versions: versions, retired: service.registry.retiredVersions(of: spec.name), failed: service.registry.failedVersions(of: spec.name))
        }
    }

    /// `HandleReloadConfigRequest`: `UNIMPLEMENTED`.
    public func handleReloadConfigRequest(request: Tensorflow_Serving_ReloadConfigRequest, context: ServerContext) async throws -> Tensorflow_Serving_ReloadConfigResponse {
        throw RPCError(code: .unimplemented, message: "HandleReloadConfigRequest: models are given with --model; new version folders are picked up while the server runs")
    }
}

/// Runs `body` and turns its ``/MobileNetServing/ServingError`` into the gRPC status
/// (``TFServingGRPC/rpcError(_:)``); a cancelled call stays cancelled.
func answer<T: Sendable>(_ body: () async throws(ServingError) -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        throw TFServingGRPC.rpcError(error)
    }
}

/// The gRPC server of `mobilenet serve`: ``PredictionService`` and ``ModelService`` on
/// HTTP/2 without TLS (TensorFlow Serving's `--port`, 8500 by default).
public enum TFServingGRPCServer {
    /// TensorFlow Serving's gRPC port.
    public static let defaultPort = 8500

    /// A server bound to `host:port` (0: any free port) when it is run (`serve()`), taking
    /// requests of up to `maxRequestBytes` (larger ones are refused by the transport with
    /// `RESOURCE_EXHAUSTED` before they are decoded), at most `maxConcurrentStreams` calls per
    /// connection.
    public static func make(host: String, port: Int, maxRequestBytes: Int, maxConcurrentStreams: Int = 128,
                            service: @escaping InferenceServiceProvider) -> GRPCServer<HTTP2ServerTransport.Posix> {
        // The address as the HTTP server's `--host` gives it: IPv4, IPv6 (`::`), or `localhost`.
        let address: GRPCNIOTransportCore.SocketAddress = host.contains(":") ? .ipv6(host: host, port: port)
            : .ipv4(host: host == "localhost" ? "127.0.0.1" : host, port: port)
        let transport = HTTP2ServerTransport.Posix(
            address: address, transportSecurity: .plaintext,
            config: .defaults { config in
                config.rpc.maxRequestPayloadSize = maxRequestBytes
                config.http2.maxConcurrentStreams = maxConcurrentStreams
            })
        return GRPCServer(transport: transport, services: [PredictionService(service: service), ModelService(service: service)])
    }
}
