import Foundation
import GRPCCore
import GRPCNIOTransportCore
import NIOCore
import NIOPosix
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
/// HTTP/2 without TLS (TensorFlow Serving's `--port`, 8500 by default), over grpc-swift's
/// HTTP/2 transport with a plain TCP listener (``PlainTCPListener``).
public struct TFServingGRPCServer: Sendable {
    /// TensorFlow Serving's gRPC port.
    public static let defaultPort = 8500

    /// The server: run it with `serve()`, stop it with `beginGracefulShutdown()`.
    public let server: GRPCServer<HTTP2ServerTransport.Custom<PlainTCPListener>>
    private let transport: HTTP2ServerTransport.Custom<PlainTCPListener>

    /// A server bound to `host:port` (0: any free port) when it is run, taking requests of up to
    /// `maxRequestBytes` (larger ones are refused by the transport, which resets the stream,
    /// before they are decoded), at most `maxConcurrentStreams` calls per connection and at most
    /// `maxConnections` connections at once (more are closed as they arrive; nil: no limit).
    public init(host: String, port: Int, maxRequestBytes: Int, maxConcurrentStreams: Int = 128, maxConnections: Int? = nil,
                service: @escaping InferenceServiceProvider) {
        self.init(host: host, port: port, maxRequestBytes: maxRequestBytes, maxConcurrentStreams: maxConcurrentStreams,
                  connections: maxConnections.map(ConnectionLimiter.Count.init(limit:)), service: service)
    }

    /// As the public initializer, the connections counted in `connections` (shared with the HTTP server).
    package init(host: String, port: Int, maxRequestBytes: Int, maxConcurrentStreams: Int = 128, connections: ConnectionLimiter.Count?,
                 service: @escaping InferenceServiceProvider) {
        var config = HTTP2ServerTransport.Custom<PlainTCPListener>.Config.defaults
        config.rpc.maxRequestPayloadSize = maxRequestBytes
        config.http2.maxConcurrentStreams = maxConcurrentStreams
        var listener = PlainTCPListener(host: host == "localhost" ? "127.0.0.1" : host, port: port)
        listener.connections = connections
        transport = HTTP2ServerTransport.Custom(listenerFactory: listener, config: config)
        server = GRPCServer(transport: transport, services: [PredictionService(service: service), ModelService(service: service)])
    }

    /// The port the server listens on, once it does (nil if it never started).
    public var listeningPort: Int? {
        get async {
            let address = await transport.listeningAddress
            return address?.ipv4?.port ?? address?.ipv6?.port
        }
    }
}

/// A plain TCP listener for grpc-swift's HTTP/2 server transport (its
/// `HTTP2ServerTransport.ListenerFactory` seam): SwiftNIO's `ServerBootstrap` bound to a host
/// and port, each accepted connection given the gRPC pipeline, no TLS.
public struct PlainTCPListener: HTTP2ServerTransport.ListenerFactory {
    /// The address to bind (`127.0.0.1`, `0.0.0.0`, `::`).
    public let host: String
    /// The port (0: any free port).
    public let port: Int
    /// SwiftNIO's shared event loops.
    public var eventLoopGroup: any EventLoopGroup { MultiThreadedEventLoopGroup.singleton }
    /// The connection count each accepted connection joins first (``/MobileNetServing/ConnectionLimiter``); nil: no limit.
    package var connections: ConnectionLimiter.Count?

    /// A listener on `host:port`.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Binds the listening socket and sets up each accepted connection for gRPC.
    public func makeListeningChannel(listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
                                     connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator)
        async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in listenerConfigurator.configure(channel: channel) }
            .bind(host: host, port: port) { [connections] channel in
                guard let connections else { return connectionConfigurator.configure(channel: channel, tls: .none) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectionLimiter(count: connections))
                }.flatMap { connectionConfigurator.configure(channel: channel, tls: .none) }
            }
    }
}
