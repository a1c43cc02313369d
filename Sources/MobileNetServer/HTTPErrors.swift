import Foundation
import Hummingbird
import MobileNetServing
import NIOCore

/// A ``/MobileNetServing/ServingError`` as an HTTP response: `{"error": "..."}` (the error
/// body of TensorFlow Serving and KServe v2) with the status that fits the case.
struct ServingHTTPError: HTTPResponseError {
    var error: ServingError
    var retryAfterSeconds: Int

    var status: HTTPResponse.Status {
        switch error {
        case .modelNotFound, .indexNotFound, .imageNotFound, .versionNotFound: .notFound
        case .bodyTooLarge: .contentTooLarge
        case .bodyTimedOut: .requestTimeout
        case .queueFull, .timedOut, .shuttingDown, .notReady: .serviceUnavailable
        case .methodNotAllowed: .methodNotAllowed
        case .unsupportedMediaType: .unsupportedMediaType
        case .inferenceFailed, .modelLoadFailed, .indexLoadFailed: .internalServerError
        case .invalidJSON, .invalidInput, .unknownSignature, .invalidImage, .invalidSpecification: .badRequest
        }
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if error.isRetryable { headers[.retryAfter] = String(retryAfterSeconds) }
        if case .methodNotAllowed(_, let allowed) = error { headers[.allow] = allowed }
        // The rest of an oversized body is not read (and discarded) without bound: the
        // connection closes after the 413, as nginx does.
        switch error {
        case .bodyTooLarge, .bodyTimedOut: headers[.connection] = "close"
        default: break
        }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: ServingJSON.error(error.description))))
    }
}

/// Turns errors thrown by the routes into JSON error responses: serving errors with their
/// status, Hummingbird's own (404 no route, 405) kept, anything else a 500 that names no internals.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    var retryAfterSeconds: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ServingError {
            return try ServingHTTPError(error: error, retryAfterSeconds: retryAfterSeconds).response(from: request, context: context)
        } catch let error as NIOTooManyBytesError {
            return try ServingHTTPError(error: .bodyTooLarge(bytes: nil, limit: error.maxBytes ?? 0), retryAfterSeconds: retryAfterSeconds)
                .response(from: request, context: context)
        } catch is CancellationError {
            // The client disconnected before the answer was ready (DisconnectCancellation): nobody reads this.
            context.logger.debug("request cancelled: the client disconnected")
            return Response(status: .serviceUnavailable, headers: [.contentType: "application/json"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: ServingJSON.error("the request was cancelled"))))
        } catch let error as any HTTPResponseError {
            let message = error.status == .notFound ? "no route for \(request.method) \(request.uri.path)" : error.status.reasonPhrase
            var response = Response(status: error.status, headers: [.contentType: "application/json"],
                                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: ServingJSON.error(message))))
            if error.status == .methodNotAllowed, let original = try? error.response(from: request, context: context), let allow = original.headers[.allow] {
                response.headers[.allow] = allow
            }
            return response
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            return Response(status: .internalServerError, headers: [.contentType: "application/json"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: ServingJSON.error("internal server error"))))
        }
    }
}

/// The answer to `HEAD` on a GET route (the router's `autoGenerateHeadEndpoints` runs the GET's
/// responder, these middlewares included, for it): the GET's status and headers with the
/// Content-Length of its body, and no body (RFC 9110 §9.3.2; Hummingbird alone sends
/// `Content-Length: 0`). A POST-only route's GET is 405 with `Allow`, so its HEAD is too.
/// Outside ``ErrorMiddleware``, so an error's answer loses its body the same way.
struct HeadMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        return request.method == .head ? ServingRoutes.head(of: response) : response
    }
}

/// Counts and times every request for ``ServingMetrics``, by the matched route's template.
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    var metrics: ServingMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let clock = ContinuousClock()
        let start = clock.now
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.recordRequest(method: request.method.rawValue, route: context.endpointPath ?? "unmatched", status: status, duration: start.duration(to: clock.now))
            throw error
        }
        metrics.recordRequest(method: request.method.rawValue, route: context.endpointPath ?? "unmatched", status: response.status.code,
                              duration: start.duration(to: clock.now))
        return response
    }
}
