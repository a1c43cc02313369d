import MobileNetServing
import Synchronization

/// The server's readiness: nil until the models are loaded, then the service that answers.
/// The HTTP server is live from the start; model routes answer 503 until ready.
public final class ServerState: Sendable {
    private let current: Mutex<InferenceService?>

    /// Creates the state, ready when `service` is given.
    public init(service: InferenceService? = nil) {
        current = Mutex(service)
    }

    /// The service, once the models are loaded.
    public var service: InferenceService? { current.withLock { $0 } }

    /// Whether the models are loaded.
    public var isReady: Bool { service != nil }

    /// Makes the server ready with `service`.
    public func setReady(_ service: InferenceService) {
        current.withLock { $0 = service }
    }

    /// The service.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/notReady`` while the models are loading.
    func requireService() throws(ServingError) -> InferenceService {
        guard let service else { throw .notReady }
        return service
    }
}
