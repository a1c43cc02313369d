import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import MobileNetIO
import MobileNetProcess
import MobileNetSavedModel
import MobileNetServing
import MobileNetServingGRPC
import Synchronization
import NIOCore
import ServiceLifecycle

/// `mobilenet serve`: a Hummingbird 2 HTTP server that TensorFlow Serving REST and KServe v2
/// clients can call, over the models of a ``/MobileNetServing/ModelRegistry``.
///
/// The server is live at once; it becomes ready (`/v2/health/ready` 200, model routes answer)
/// when every model is loaded. SIGTERM or SIGINT shut it down gracefully: no new connections,
/// open requests answered, then the batchers drain and stop; what is still open after
/// ``ServerConfiguration/shutdownTimeout`` is cancelled.
public enum MobileNetServer {
    /// The router with every route and the error and metrics middleware.
    ///
    /// - Parameters:
    ///   - state: readiness and the service, once loaded.
    ///   - configuration: limits and `Retry-After`.
    ///   - metrics: where requests are counted.
    public static func makeRouter(state: ServerState, configuration: ServerConfiguration, metrics: ServingMetrics) -> Router<ServingRequestContext> {
        // HEAD on every GET route: Hummingbird runs the GET's responder (with these
        // middlewares) for it, and HeadMiddleware gives the answer the GET's Content-Length.
        let router = Router(context: ServingRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: MetricsMiddleware(metrics: metrics))
        router.add(middleware: LogRequestsMiddleware(.info))
        router.add(middleware: HeadMiddleware())
        router.add(middleware: ErrorMiddleware(retryAfterSeconds: configuration.retryAfterSeconds))
        ServingRoutes(state: state, configuration: configuration, metrics: metrics).add(to: router)
        return router
    }

    /// The application: the router, bound to `configuration.host:port`, with `services` run
    /// beside the server (the model loader).
    public static func makeApplication(state: ServerState, configuration: ServerConfiguration, metrics: ServingMetrics,
                                       services: [any Service] = [], logger: Logger,
                                       onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        makeApplication(state: state, configuration: configuration, metrics: metrics, services: services, logger: logger,
                        connections: configuration.connectionCount(),
                        onServerRunning: onServerRunning)
    }

    /// The application, its connections counted in `connections` (shared with the gRPC listener).
    static func makeApplication(state: ServerState, configuration: ServerConfiguration, metrics: ServingMetrics, services: [any Service] = [], logger: Logger,
                                connections: ConnectionLimiter.Count,
                                onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        Application(router: makeRouter(state: state, configuration: configuration, metrics: metrics),
                    server: .http1(configuration: HTTP1Channel.Configuration(additionalChannelHandlers: [ConnectionLimiter(count: connections), DisconnectDetector(), ContinueResponder(maxBodyBytes: configuration.limits.maxBodyBytes), ConnectionCloser()], idleTimeout: TimeAmount.nanoseconds(
                        configuration.idleTimeout.components.seconds * 1_000_000_000 + configuration.idleTimeout.components.attoseconds / 1_000_000_000))),
                    configuration: ApplicationConfiguration(address: .hostname(configuration.host, port: configuration.port), serverName: "mobilenet"),
                    services: services,
                    onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
                    logger: logger)
    }

    /// The whole server: the application with the model loader beside it. It is live at once
    /// and ready when the loader has loaded every model and index; on graceful shutdown the
    /// loader drains and stops the batchers.
    ///
    /// - Parameters:
    ///   - specifications: the models (`--model NAME=PATH`); none for `imagenet` from the default weights.
    ///   - indexes: the image indexes for `/v1/similar` (`--index NAME=DB`).
    ///   - loading: backend, input size and preprocessing for weight files, weight resolution.
    ///   - configuration: address, limits, batching.
    ///   - state: readiness (a new state by default).
    ///   - metrics: the Prometheus metrics (new ones by default).
    ///   - logger: the server's log.
    ///   - onServerRunning: called with the bound port once the server listens.
    public static func makeApplication(specifications: [ModelSpecification], indexes: [IndexSpecification] = [], loading: ModelLoadingOptions,
                                       configuration: ServerConfiguration, state: ServerState = ServerState(), metrics: ServingMetrics = ServingMetrics(),
                                       logger: Logger, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let loader = ModelLoaderService(specifications: specifications, indexes: indexes, loading: loading, configuration: configuration,
                                        state: state, metrics: metrics, logger: logger)
        return makeApplication(state: state, configuration: configuration, metrics: metrics, services: [loader], logger: logger, onServerRunning: onServerRunning)
    }

    /// Loads the models and serves them until SIGTERM or SIGINT.
    ///
    /// - Parameters: as ``makeApplication(specifications:indexes:loading:configuration:state:metrics:logger:onServerRunning:)``.
    /// - Throws: ``/MobileNetServing/ServingError`` for a model, index or FAISS file that is not
    ///   there (before the port is bound: ``/MobileNetServing/ModelRegistry/checkFilesExist(models:indexes:options:)``)
    ///   or cannot be loaded (the server stops), or the server's error (the address is in use).
    public static func run(specifications: [ModelSpecification], indexes: [IndexSpecification] = [], loading: ModelLoadingOptions,
                           configuration: ServerConfiguration, logger: Logger) async throws {
        // A missing file is reported before the port is bound.
        try ModelRegistry.checkFilesExist(models: specifications, indexes: indexes, options: loading)
        ServerConfiguration.raiseDescriptorLimit()
        if let settings = configuration.malloc, !MallocTuning.apply(settings) {
            logger.warning("the C allocator did not take the settings", metadata: ["settings": .string("\(settings)")])
        }
        let state = ServerState(), metrics = ServingMetrics()
        let loader = ModelLoaderService(specifications: specifications, indexes: indexes, loading: loading, configuration: configuration,
                                        state: state, metrics: metrics, logger: logger)
        // One connection limit for HTTP and gRPC together: it keeps the process's file descriptors.
        let connections = configuration.connectionCount()
        let app = makeApplication(state: state, configuration: configuration, metrics: metrics, logger: logger, connections: connections) { port in
            logger.info("listening", metadata: ["host": .string(configuration.host), "port": .stringConvertible(port)])
        }
        // A model that cannot be loaded shuts the server down gracefully (cancelling it would
        // log a CancellationError from its accept loop), and the loader's error is thrown. On a
        // signal the services stop in reverse order: the server first (in-flight requests
        // finish), then the loader drains the batchers.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: loader, failureTerminationBehavior: .gracefullyShutdownGroup), .init(service: app)]
        if let grpcPort = configuration.grpcPort {
            services.append(.init(service: GRPCService(host: configuration.host, port: grpcPort, maxRequestBytes: configuration.limits.maxBodyBytes,
                                                       connections: connections, state: state, logger: logger)))
        }
        var group = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        try await ServiceGroup(configuration: group).run()
    }
}

/// Loads the models beside the running server, makes the server ready, and on graceful
/// shutdown drains and stops the batchers.
struct ModelLoaderService: Service {
    let specifications: [ModelSpecification]
    let indexes: [IndexSpecification]
    let loading: ModelLoadingOptions
    let configuration: ServerConfiguration
    let state: ServerState
    let metrics: ServingMetrics
    let logger: Logger

    func run() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let models = try await ModelRegistry.load(specifications, options: loading)
        let served = try await ModelRegistry.loadIndexes(indexes, models: models, options: loading)
        let registry = try ModelRegistry(models: models, indexes: served, batching: configuration.batching, observer: metrics)
        metrics.register(models: models.map(\.name) + served.map(\.name))
        for model in models {
            logger.info("model loaded", metadata: [
                "model": .string(model.name), "kind": .string(model.kind.rawValue), "file": .string(model.source.path),
                "input": .string("\(model.inputHeight)x\(model.inputWidth)"), "outputs": .stringConvertible(model.outputWidth),
            ])
        }
        for index in served {
            logger.info("index loaded", metadata: ["index": .string(index.name), "file": .string(index.source.path), "images": .stringConvertible(index.search.count)])
        }
        state.setReady(InferenceService(registry: registry, limits: configuration.limits))
        logger.info("ready", metadata: ["models": .stringConvertible(models.count), "seconds": .string(String(format: "%.2f", start.duration(to: clock.now).seconds))])
        // Serve until shutdown (listing TF Serving base folders for new and removed versions
        // meanwhile), then let the accepted requests finish.
        let watcher = VersionWatcher(specifications: specifications.filter { SavedModelFolder.isBaseFolder(URL(fileURLWithPath: $0.path)) },
                                     registry: registry, loading: loading, logger: logger)
        let polling = Task { [interval = configuration.pollInterval] in
            guard let interval, !watcher.specifications.isEmpty else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                await watcher.poll()
            }
        }
        try? await gracefulShutdown()
        polling.cancel()
        await polling.value
        logger.info("shutting down: draining the batchers")
        registry.shutdown()
    }
}

/// Follows the TF Serving base folders of served models as TensorFlow Serving's file-system
/// source does: a new version folder the policy wants is loaded and served (the highest becomes
/// the default); then the versions the policy no longer wants are retired (under
/// ``/MobileNetServing/ModelVersionPolicy/latest(count:)`` those below the highest `count`, under
/// ``/MobileNetServing/ModelVersionPolicy/all`` and
/// ``/MobileNetServing/ModelVersionPolicy/specific(versions:)`` those whose folders are gone). A version that
/// fails to load is logged and tried again only when its folder changes (a copy still under way).
final class VersionWatcher: Sendable {
    let specifications: [ModelSpecification]
    let registry: ModelRegistry
    let loading: ModelLoadingOptions
    let logger: Logger
    /// Versions that failed to load, with their folder's signature when they did.
    private let failures = Mutex<[String: String]>([:])
    /// Models whose base folder was found without any version folder (warned once).
    private let emptyWarned = Mutex<Set<String>>([])

    init(specifications: [ModelSpecification], registry: ModelRegistry, loading: ModelLoadingOptions, logger: Logger) {
        (self.specifications, self.registry, self.loading, self.logger) = (specifications, registry, loading, logger)
    }

    /// One pass over every base folder.
    func poll() async {
        for spec in specifications {
            let base = URL(fileURLWithPath: spec.path)
            guard let folders = SavedModelFolder.versionFolders(in: base) else { continue }
            // No version folder left: the versions served stay (TF Serving would unload them
            // all and answer nothing); said once.
            if folders.isEmpty {
                if emptyWarned.withLock({ $0.insert(spec.name).inserted }) {
                    logger.warning("no version folder left; the loaded versions keep serving", metadata: ["model": .string(spec.name), "folder": .string(base.path)])
                }
                continue
            }
            emptyWarned.withLock { _ = $0.remove(spec.name) }
            let wanted = loading.versionPolicy.versions(of: folders.keys.sorted())
            let served = Set(((try? registry.versions(of: spec.name)) ?? []).map(\.versionNumber))
            for version in wanted where !served.contains(Int64(version)) {
                let key = "\(spec.name)/\(version)", signature = Self.signature(of: folders[version]!)
                if failures.withLock({ $0[key] }) == signature { continue }
                do {
                    let model = try await ModelRegistry.load(spec, version: version, options: loading)
                    try registry.add(model)
                    failures.withLock { $0[key] = nil }
                    logger.info("model version loaded", metadata: ["model": .string(spec.name), "version": .stringConvertible(version), "folder": .string(folders[version]!.path)])
                } catch {
                    failures.withLock { $0[key] = signature }
                    registry.recordLoadFailure(model: spec.name, version: Int64(version), reason: (error as? LocalizedError)?.errorDescription ?? "\(error)")
                    logger.error("model version not loaded", metadata: ["model": .string(spec.name), "version": .stringConvertible(version), "error": .string("\(error)")])
                }
            }
            let now = ((try? registry.versions(of: spec.name)) ?? []).map(\.versionNumber)
            let keep = Set(wanted.map(Int64.init))
            // Retire only once a wanted version serves (never leave the model without one).
            guard now.contains(where: keep.contains) else { continue }
            for version in now where !keep.contains(version) {
                if registry.retire(model: spec.name, version: version) {
                    logger.info("model version retired", metadata: ["model": .string(spec.name), "version": .stringConvertible(version)])
                }
            }
        }
    }

    /// What identifies a version folder's contents cheaply: the path, size and modification
    /// time of every file in it (at most 10,000 entries walked), so that a copy finishing any
    /// file (the variables' data shards last, as `cp -r` writes them) makes it load again.
    static func signature(of folder: URL) -> String {
        var parts: [String] = []
        guard let walker = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.fileSizeKey, .contentModificationDateKey]) else { return "" }
        for case let url as URL in walker {
            guard parts.count < 10_000 else { break }
            let values = try? url.resourceValues(forKeys: [.fileSizeKey, .contentModificationDateKey])
            parts.append("\(url.path.dropFirst(folder.path.count)):\(values?.fileSize ?? -1)@\(values?.contentModificationDate?.timeIntervalSince1970 ?? 0)")
        }
        return parts.sorted().joined(separator: ",")
    }
}

/// TensorFlow Serving's gRPC API beside the HTTP server, over the same models once they are
/// loaded (``/MobileNetServingGRPC/TFServingGRPCServer``); on graceful shutdown it stops taking
/// calls and finishes the open ones.
struct GRPCService: Service {
    let host: String
    let port: Int
    let maxRequestBytes: Int
    let connections: ConnectionLimiter.Count
    let state: ServerState
    let logger: Logger

    func run() async throws {
        let grpc = TFServingGRPCServer(host: host, port: port, maxRequestBytes: maxRequestBytes, connections: connections) { [state] () throws(ServingError) in
            try state.requireService()
        }
        let logger = logger, host = host
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await grpc.server.serve() }
                group.addTask {
                    if let port = await grpc.listeningPort {
                        logger.info("gRPC listening", metadata: ["host": .string(host), "port": .stringConvertible(port)])
                    }
                }
            }
        } onGracefulShutdown: {
            grpc.server.beginGracefulShutdown()
        }
    }
}

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
