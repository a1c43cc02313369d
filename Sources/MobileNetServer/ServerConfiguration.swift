import Foundation
import MobileNetIO
import MobileNetProcess
import MobileNetServing

/// Where and how `mobilenet serve` listens and batches.
public struct ServerConfiguration: Sendable {
    /// The address to bind (default `127.0.0.1`: only this machine; `0.0.0.0` for all interfaces).
    public var host: String
    /// The TCP port (default 8501, TensorFlow Serving's REST port; 0 for any free port).
    public var port: Int
    /// The request limits (body size, image pixels, images per request).
    public var limits: ServingLimits
    /// The dynamic batching of every model.
    public var batching: BatchingConfiguration
    /// The `Retry-After` seconds sent with a 503 (default 1).
    public var retryAfterSeconds: Int
    /// How long a connection may stay idle (no request being read or answered) before the server
    /// closes it (default 60 s), so idle or stalled clients cannot hold connections forever.
    public var idleTimeout: Duration
    /// How long a graceful shutdown (SIGTERM, SIGINT) may take (default 25 s, under Kubernetes'
    /// 30 s grace period): open requests are answered meanwhile; after it, the connections that
    /// are left (a client stalled mid-upload) are cancelled and the process exits.
    public var shutdownTimeout: Duration
    /// How long a request's whole body may take to arrive (default 60 s): a client that sends a
    /// byte now and then resets the idle timeout, so without this it could hold a connection (and
    /// a request task) forever. Past it: 408 and the connection closes.
    public var bodyTimeout: Duration
    /// glibc allocator settings applied when the server starts
    /// (``/MobileNetProcess/MallocTuning/apply(_:)``, default ``/MobileNetProcess/MallocSettings/server``):
    /// no page faults per request and a resident size that stays flat under load; nil leaves the
    /// allocator as the process has it (for example tuned by `GLIBC_TUNABLES`).
    public var malloc: MallocSettings?
    /// The port of TensorFlow Serving's gRPC API (``/MobileNetServingGRPC/PredictionService``,
    /// ``/MobileNetServingGRPC/ModelService``) on ``host``; nil (the default) serves no gRPC; 0 any
    /// free port. TensorFlow Serving's is 8500.
    public var grpcPort: Int?
    /// How often the TF Serving base folders of the served models are listed for new and removed
    /// version folders (TensorFlow Serving's `--file_system_poll_wait_seconds`, 1 s); nil never.
    public var pollInterval: Duration?

    /// The most connections open at once, HTTP and gRPC together; more are closed as they
    /// arrive (nil: ``defaultMaxConnections()``), so that the process never runs out of file descriptors.
    public var maxConnections: Int?

    /// The default connection limit: the process's file-descriptor limit (raised to its hard
    /// limit when the server starts) less a reserve for model, index and image files and the
    /// gRPC server (128, or half of a small limit), at least 8.
    public static func defaultMaxConnections() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < (1 << 40) else { return 4096 }
        let descriptors = Int(min(limit.rlim_cur, 1 << 20))
        return max(8, descriptors - min(128, descriptors / 2))
    }

    /// Raises the process's soft file-descriptor limit to its hard limit (as Go and most servers
    /// do at start): the default 1024 is low for a server. Returns the new soft limit.
    @discardableResult
    public static func raiseDescriptorLimit() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(min(limit.rlim_cur, 1 << 30))
    }

    /// TensorFlow Serving's REST port.
    public static let defaultPort = 8501

    /// Creates a configuration.
    public init(host: String = "127.0.0.1", port: Int = ServerConfiguration.defaultPort, limits: ServingLimits = ServingLimits(),
                batching: BatchingConfiguration = BatchingConfiguration(), retryAfterSeconds: Int = 1, idleTimeout: Duration = .seconds(60),
                shutdownTimeout: Duration = .seconds(25), bodyTimeout: Duration = .seconds(60), malloc: MallocSettings? = .server,
                grpcPort: Int? = nil, pollInterval: Duration? = .seconds(1), maxConnections: Int? = nil) {
        self.maxConnections = maxConnections.map { max(1, $0) }
        self.grpcPort = grpcPort
        self.pollInterval = pollInterval.map { max(.milliseconds(10), $0) }
        self.host = host
        self.port = port
        self.limits = limits
        self.batching = batching
        self.retryAfterSeconds = max(1, retryAfterSeconds)
        self.idleTimeout = max(.milliseconds(100), idleTimeout)
        self.shutdownTimeout = max(.milliseconds(100), shutdownTimeout)
        self.bodyTimeout = max(.milliseconds(100), bodyTimeout)
        self.malloc = malloc
    }
}

extension ServerConfiguration {
    /// A new count of open connections under this configuration's limit (``maxConnections``, or
    /// ``defaultMaxConnections()``), for the HTTP server and the gRPC listener to share.
    func connectionCount() -> ConnectionLimiter.Count {
        ConnectionLimiter.Count(limit: maxConnections ?? Self.defaultMaxConnections())
    }
}
