import Foundation
import Hummingbird
import MobileNetANN
import MobileNetServing
import NIOCore

/// The routes of `mobilenet serve`: TensorFlow Serving REST (`/v1/models/...`), KServe v2
/// (`/v2/...`), the plain endpoints (`/v1/classify`, `/v1/embed`, `/v1/similar`), `/metrics`,
/// `/openapi.json` and the page at `/`. Each handler parses the request, calls the
/// ``/MobileNetServing/InferenceService`` and encodes its answer.
struct ServingRoutes: Sendable {
    let state: ServerState
    let configuration: ServerConfiguration
    let metrics: ServingMetrics

    func add<Methods: RouterMethods<ServingRequestContext>>(to router: Methods) {
        // TensorFlow Serving REST API.
        router.get("/v1/models/{name}") { _, context in
            let name = try Self.statusName(try context.parameters.require("name"), path: "/v1/models/{name}:predict")
            return json(try state.requireService().tfServingStatus(model: name))
        }
        router.get("/v1/models/{name}/metadata") { _, context in
            json(try state.requireService().tfServingMetadata(model: try context.parameters.require("name")))
        }
        router.get("/v1/models/{name}/versions/{version}") { _, context in
            let version = try Self.statusName(try context.parameters.require("version"), path: "/v1/models/{name}/versions/{version}:predict")
            return json(try state.requireService().tfServingStatus(model: try context.parameters.require("name"), version: version))
        }
        router.get("/v1/models/{name}/versions/{version}/metadata") { _, context in
            json(try state.requireService().tfServingMetadata(model: try context.parameters.require("name"),
                                                                 version: try context.parameters.require("version")))
        }
        // `/v1/models/resnet:predict`: the verb follows a colon in the last path segment.
        router.post("/v1/models/{name}") { request, context in
            let (name, verb) = try Self.splitVerb(try context.parameters.require("name"))
            return try await predict(request, context: context, model: name, version: nil, verb: verb)
        }
        router.post("/v1/models/{name}/versions/{version}") { request, context in
            let (version, verb) = try Self.splitVerb(try context.parameters.require("version"))
            return try await predict(request, context: context, model: try context.parameters.require("name"), version: version, verb: verb)
        }

        // KServe v2 (Open Inference Protocol).
        router.get("/v2") { _, _ in json(KServe.ServerMetadata()) }
        let live: @Sendable () -> Response = { json(["live": true]) }
        let ready: @Sendable () -> Response = { json(["ready": state.isReady], status: state.isReady ? .ok : .serviceUnavailable) }
        let page: @Sendable () -> Response = { Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: IndexPage.html))) }
        router.get("/v2/health/live") { _, _ in live() }
        router.get("/v2/health/ready") { _, _ in ready() }
        router.get("/v2/models/{name}") { _, context in
            json(try state.requireService().kserveMetadata(model: try context.parameters.require("name")))
        }
        router.get("/v2/models/{name}/versions/{version}") { _, context in
            json(try state.requireService().kserveMetadata(model: try context.parameters.require("name"), version: try context.parameters.require("version")))
        }
        router.get("/v2/models/{name}/ready") { _, context in
            try modelReady(try context.parameters.require("name"), version: nil)
        }
        router.get("/v2/models/{name}/versions/{version}/ready") { _, context in
            try modelReady(try context.parameters.require("name"), version: try context.parameters.require("version"))
        }
        router.post("/v2/models/{name}/infer") { request, context in
            let service = try state.requireService()
            let body = try await readBody(request)
            let name = try context.parameters.require("name")
            return json(try await DisconnectCancellation.run(on: context.channel) { try await service.kserveInfer(model: name, body: body) })
        }
        router.post("/v2/models/{name}/versions/{version}/infer") { request, context in
            let service = try state.requireService()
            let body = try await readBody(request)
            let (name, version) = (try context.parameters.require("name"), try context.parameters.require("version"))
            return json(try await DisconnectCancellation.run(on: context.channel) { try await service.kserveInfer(model: name, version: version, body: body) })
        }

        // Plain endpoints: the body is the encoded image.
        router.post("/v1/classify") { request, context in
            let query = try QueryItems(request, allowed: ["model", "top"])
            let service = try state.requireService()
            let model = try modelParameter(query, service: service, classifier: true)
            let top = try topParameter(query, default: 5, limit: service.limits.maxTopK)
            let image = try await readImage(request)
            return json(try await DisconnectCancellation.run(on: context.channel) { try await service.classify(model: model, image: image, top: top) })
        }
        router.post("/v1/embed") { request, context in
            let query = try QueryItems(request, allowed: ["model"])
            let service = try state.requireService()
            let model = try modelParameter(query, service: service, classifier: false)
            let image = try await readImage(request)
            return json(try await DisconnectCancellation.run(on: context.channel) { try await service.embed(model: model, image: image) }.jsonData)
        }

        router.post("/v1/similar") { request, context in
            let query = try QueryItems(request, allowed: ["index", "top", "nprobe", "ef_search"])
            let service = try state.requireService()
            let index: String
            if let name = query["index"] { index = name } else {
                guard let first = service.registry.indexes.first else {
                    throw ServingError.invalidInput(field: "index", problem: "no index is served (start the server with --index NAME=DB)")
                }
                index = first.name
            }
            let top = try topParameter(query, default: 5, limit: service.limits.maxTopK)
            let parameters = ANNSearchParameters(nprobe: try positiveParameter(query, "nprobe", limit: 1 << 20),
                                                 efSearch: try positiveParameter(query, "ef_search", limit: ANNSearchParameters.maximumEfSearch))
            let image = try await readImage(request)
            return json(try await DisconnectCancellation.run(on: context.channel) { try await service.similar(index: index, image: image, top: top, parameters: parameters) })
        }
        // The models and indexes (for the page), and an indexed image (a match's thumbnail).
        router.get("/v1/catalog") { _, _ in json(try state.requireService().catalog()) }
        router.get("/v1/indexes/{name}/image") { request, context in
            guard let file = try QueryItems(request, allowed: ["file"])["file"] else {
                throw ServingError.invalidInput(field: "file", problem: "name the indexed image: ?file=PATH (the 'file' of a similarity match)")
            }
            let image = try state.requireService().indexedImage(index: try context.parameters.require("name"), file: file)
            return Response(status: .ok, headers: [.contentType: image.mediaType, .cacheControl: "private, max-age=300"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: image.bytes)))
        }

        // HEAD is every GET route's (HeadMiddleware); a GET on a POST-only route is 405.
        for path in ["/v1/classify", "/v1/embed", "/v1/similar", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"] {
            router.get(RouterPath(path)) { _, _ -> Response in
                throw ServingError.methodNotAllowed(path: path, allowed: "POST")
            }
        }

        // Operations.
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
        router.get("/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        router.get("/") { _, _ in page() }
    }

    /// The answer to a HEAD request for what `response` answers a GET: its status and headers,
    /// with the Content-Length of its body, and no body (RFC 9110 §9.3.2: the same header fields
    /// as the GET; was: `Content-Length: 0`).
    static func head(of response: Response) -> Response {
        var headers = response.headers
        if let length = response.body.contentLength { headers[.contentLength] = String(length) }
        return Response(status: response.status, headers: headers)
    }

    /// The model name (or version) of a TF Serving status GET; a GET (or HEAD) of the
    /// `:predict` path of a POST route is ``/MobileNetServing/ServingError/methodNotAllowed(path:allowed:)``.
    static func statusName(_ segment: String, path: String) throws(ServingError) -> String {
        guard segment.contains(":") else { return segment }
        throw .methodNotAllowed(path: path, allowed: "POST")
    }

    /// `resnet:predict` to (`resnet`, `predict`).
    ///
    /// - Throws: ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` without a verb
    ///   or with another than `predict` (`classify` and `regress` need signatures these models lack).
    static func splitVerb(_ segment: String) throws(ServingError) -> (String, String) {
        guard let colon = segment.lastIndex(of: ":") else {
            throw .invalidInput(field: "path", problem: "'\(segment)' has no ':predict' (POST /v1/models/NAME:predict)")
        }
        let name = String(segment[..<colon]), verb = String(segment[segment.index(after: colon)...])
        guard verb == "predict" else {
            throw .invalidInput(field: "path", problem: "':\(verb)' is not supported: this server answers ':predict' (classify and regress need signatures these models do not have)")
        }
        return (name, verb)
    }

    private func predict(_ request: Request, context: ServingRequestContext, model: String, version: String?, verb: String) async throws -> Response {
        let service = try state.requireService()
        _ = try service.registry.model(named: model, version: version)  // 404 before the body is read
        let body = try await readBody(request)
        return json(try await DisconnectCancellation.run(on: context.channel) { try await service.tfServingPredict(model: model, version: version, body: body) })
    }

    private func modelReady(_ name: String, version: String?) throws -> Response {
        let service = try state.requireService()
        let model = try service.registry.model(named: name, version: version)
        struct Ready: Encodable { var name: String; var ready: Bool }
        return json(Ready(name: model.name, ready: true))
    }

    /// The body, at most ``/MobileNetServing/ServingLimits/maxBodyBytes``: a declared
    /// `Content-Length` over it is refused before anything is read.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/bodyTooLarge(bytes:limit:)``, and
    ///   ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` (400) when the body's HTTP
    ///   framing is broken (a bad chunk size).
    private func readBody(_ request: Request) async throws -> Data {
        let limit = configuration.limits.maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw ServingError.bodyTooLarge(bytes: declared, limit: limit)
        }
        let timeout = configuration.bodyTimeout
        do {
            // The whole body within the body timeout: the read races a timer, and the loser is cancelled.
            let buffer = try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                group.addTask {
                    var request = request
                    return try await request.collectBody(upTo: limit)
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let body = first else {
                    throw ServingError.bodyTimedOut(seconds: Double(timeout.components.seconds) + Double(timeout.components.attoseconds) * 1e-18)
                }
                return body
            }
            return Data(buffer.readableBytesView)
        } catch let error as ServingError {
            throw error
        } catch is NIOTooManyBytesError {
            throw ServingError.bodyTooLarge(bytes: nil, limit: limit)
        } catch {
            // The body's framing is broken (a bad chunk size, a connection closed mid-body): the client's fault.
            throw ServingError.invalidInput(field: "body", problem: "the request body could not be read (\(error))")
        }
    }

    /// The encoded image of a plain-endpoint request: the body, or the file part of a
    /// `multipart/form-data` body.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/unsupportedMediaType(type:accepted:)`` for a
    ///   JSON content type (checked before the body is read); as ``readBody(_:)`` and
    ///   ``ImageUpload/image(from:contentType:)``.
    private func readImage(_ request: Request) async throws -> Data {
        let contentType = request.headers[.contentType]
        try ImageUpload.checkMediaType(contentType)
        return try ImageUpload.image(from: try await readBody(request), contentType: contentType)
    }

    private func modelParameter(_ query: QueryItems, service: InferenceService, classifier: Bool) throws(ServingError) -> String {
        if let name = query["model"] { return name }
        let candidates = service.registry.models.filter { !classifier || $0.kind.isClassifier }
        guard let first = candidates.first else {
            throw .invalidInput(field: "model", problem: "no \(classifier ? "classifier" : "model") is served; name one with ?model=NAME")
        }
        return first.name
    }

    /// An optional positive integer query parameter (`nprobe`, `ef_search`), at most `limit`.
    private func positiveParameter(_ query: QueryItems, _ name: String, limit: Int) throws(ServingError) -> Int? {
        guard let text = query[name] else { return nil }
        guard let value = Int(text), (1...limit).contains(value) else {
            throw .invalidInput(field: name, problem: "must be an integer between 1 and \(limit), got '\(text)'")
        }
        return value
    }

    private func topParameter(_ query: QueryItems, default value: Int, limit: Int) throws(ServingError) -> Int {
        guard let text = query["top"] else { return value }
        guard let top = Int(text), (1...limit).contains(top) else {
            throw .invalidInput(field: "top", problem: "must be an integer between 1 and \(limit), got '\(text)'")
        }
        return top
    }
}

/// The query parameters of a plain `/v1` request, decoded as browsers and `requests` encode
/// forms (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte).
///
/// A key the route does not take (`efSearch` for `ef_search`, a typo) or a key given twice is
/// refused rather than ignored, so a request never runs with a setting other than the one the
/// client believes it sent.
struct QueryItems {
    private var values: [String: String] = [:]

    /// The parameters of `request`'s URI.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` (400) naming the
    ///   key: one not in `allowed`, one given twice, or one that is not valid percent-encoding.
    init(_ request: Request, allowed: [String]) throws(ServingError) {
        try self.init(query: request.uri.query, allowed: allowed)
    }

    /// The parameters of a URI query string (the part after `?`; nil for none).
    ///
    /// - Throws: as ``init(_:allowed:)``.
    init(query: String?, allowed: [String]) throws(ServingError) {
        guard let query else { return }
        func decode(_ text: Substring) -> String? { String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = decode(parts[0]) else {
                throw .invalidInput(field: "query", problem: "'\(parts[0])' is not valid percent-encoding")
            }
            guard !key.isEmpty else {
                throw .invalidInput(field: "query", problem: "'\(pair)' has an empty parameter name")
            }
            guard allowed.contains(key) else {
                throw .invalidInput(field: key, problem: "unknown query parameter; this endpoint takes \(allowed.map { "'\($0)'" }.joined(separator: ", "))")
            }
            guard values[key] == nil else {
                throw .invalidInput(field: key, problem: "given more than once; give it once")
            }
            guard let value = parts.count > 1 ? decode(parts[1]) : "" else {
                throw .invalidInput(field: key, problem: "the value is not valid percent-encoding")
            }
            values[key] = value
        }
    }

    /// The value of `name` (empty for `?name` or `?name=`), nil when absent.
    subscript(name: String) -> String? { values[name] }
}

/// A JSON response of `data`.
func json(_ data: Data, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}

/// A JSON response of `value`.
func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    json(ServingJSON.encode(value), status: status)
}
