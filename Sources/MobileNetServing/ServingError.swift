import Foundation

/// Why a serving request or a served model failed. Every case names what was wrong (the model,
/// the field of the request, the limit), so that ``description`` can be sent to the client as is.
///
/// The HTTP face maps the cases to status codes: ``modelNotFound(name:available:)``,
/// ``indexNotFound(name:available:)``, ``imageNotFound(index:file:reason:)`` and
/// ``versionNotFound(model:version:available:)`` to 404, ``bodyTimedOut(seconds:)`` to 408, ``bodyTooLarge(bytes:limit:)`` to 413, ``unsupportedMediaType(type:accepted:)`` to 415,
/// ``queueFull(model:limit:)``, ``timedOut(model:waited:)``, ``shuttingDown(model:)`` and ``notReady`` to 503 (with `Retry-After`),
/// ``inferenceFailed(model:reason:)`` to 500 and every other request error to 400.
public enum ServingError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    /// No model is served under this name.
    case modelNotFound(name: String, available: [String])
    /// No image index is served under this name.
    case indexNotFound(name: String, available: [String])
    /// `file` is not an image of the served index `index` (only indexed images are served), or
    /// it is no longer readable as one.
    case imageNotFound(index: String, file: String, reason: String)
    /// The model is served, but not in this version (the versions served are its version folders, or `1` for a model file).
    case versionNotFound(model: String, version: String, available: [String])
    /// The body is not JSON, or its top level is not a JSON object.
    case invalidJSON(reason: String)
    /// A field of the request is missing, has the wrong type, shape or value; `field` is its
    /// path in the request (`instances[2][0][5]`, `inputs[0].shape`).
    case invalidInput(field: String, problem: String)
    /// A TensorFlow Serving `signature_name` other than the model's signatures.
    case unknownSignature(name: String, available: [String])
    /// An encoded image that cannot be used (not an image, corrupt, too many pixels); `field`
    /// names where it was in the request, `problem` says what is wrong with it.
    case invalidImage(field: String, problem: String)
    /// The request body has more bytes than the server accepts (`bytes` is nil when the body
    /// was refused while it was streamed, before its length was known).
    case bodyTooLarge(bytes: Int?, limit: Int)
    /// The request body did not arrive within the server's body timeout (a client trickling
    /// bytes to hold the connection); `seconds` is the timeout.
    case bodyTimedOut(seconds: Double)
    /// The model's queue holds as many images as it may: the client should retry later.
    case queueFull(model: String, limit: Int)
    /// The request waited in the model's queue longer than the request timeout and was not run.
    case timedOut(model: String, waited: Duration)
    /// The body's `Content-Type` is one the route does not take (415): `type` as sent, `accepted`
    /// what the route takes instead.
    case unsupportedMediaType(type: String, accepted: String)
    /// The route exists, but not for this HTTP method (405 with `Allow: allowed`).
    case methodNotAllowed(path: String, allowed: String)
    /// The server is shutting down and takes no new work for the model.
    case shuttingDown(model: String)
    /// The models are still loading: the server is live but not ready.
    case notReady
    /// The network failed on an accepted input (a server fault, not the client's).
    case inferenceFailed(model: String, reason: String)
    /// A `--model NAME=PATH` or `--index NAME=DB` specification that cannot be used.
    case invalidSpecification(String)
    /// A model file that cannot be served: `reason` is the library's error.
    case modelLoadFailed(name: String, path: String, reason: String)
    /// An image index (`--index NAME=DB`) that cannot be served: `reason` is the library's error.
    case indexLoadFailed(name: String, path: String, reason: String)

    public var description: String {
        switch self {
        case .modelNotFound(let name, let available):
            "no model named '\(name)' is served (models: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case .indexNotFound(let name, let available):
            "no index named '\(name)' is served (indexes: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case .imageNotFound(let index, let file, let reason):
            "index '\(index)' has no image '\(file)' to show: \(reason)"
        case .versionNotFound(let model, let version, let available):
            "model '\(model)' has no version '\(version)' (versions: \(available.joined(separator: ", ")))"
        case .invalidJSON(let reason): "the request body is not a JSON object: \(reason)"
        case .invalidInput(let field, let problem): "\(field): \(problem)"
        case .unknownSignature(let name, let available):
            "unknown signature_name '\(name)' (signatures: \(available.joined(separator: ", ")))"
        case .invalidImage(let field, let problem): "\(field): \(problem)"
        case .bodyTooLarge(let bytes, let limit):
            if let bytes { "the request body has \(bytes) bytes, more than the \(limit) this server accepts" }
            else { "the request body is larger than the \(limit) bytes this server accepts" }
        case .bodyTimedOut(let seconds):
            "the request body did not arrive within \(String(format: "%g", seconds)) s (the server's body timeout)"
        case .queueFull(let model, let limit):
            "model '\(model)' has \(limit) images waiting, as many as its queue holds; retry later"
        case .timedOut(let model, let waited):
            "the request waited \(String(format: "%.1f", Double(waited.components.seconds) + Double(waited.components.attoseconds) * 1e-18)) s for model '\(model)', longer than the server's request timeout; retry later"
        case .methodNotAllowed(let path, let allowed): "\(path) takes \(allowed) only"
        case .unsupportedMediaType(let type, let accepted): "Content-Type '\(type)' is not taken here: \(accepted)"
        case .shuttingDown(let model): "the server is shutting down and takes no new work for model '\(model)'"
        case .notReady: "the server is not ready: its models are still loading"
        case .inferenceFailed(let model, let reason): "model '\(model)' failed to run: \(reason)"
        case .invalidSpecification(let message): message
        case .modelLoadFailed(let name, let path, let reason): "cannot serve model '\(name)'\(Self.source(path, unlessIn: reason)): \(reason)"
        case .indexLoadFailed(let name, let path, let reason): "cannot serve index '\(name)'\(Self.source(path, unlessIn: reason)): \(reason)"
        }
    }

    /// ` from PATH`, or nothing when the library's reason already names the file (most do), so
    /// the path is not said twice.
    private static func source(_ path: String, unlessIn reason: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        return reason.contains(trimmed) ? "" : " from \(path)"
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }

    /// Whether the client may retry the same request later with success (queue full, shutting
    /// down): the HTTP face answers 503 with `Retry-After`.
    public var isRetryable: Bool {
        switch self {
        case .queueFull, .timedOut, .shuttingDown, .notReady: true
        default: false
        }
    }
}
