import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The tests' HTTP client and server runner: the application runs for real on a loopback port
/// (the whole pipeline: `Expect: 100-continue`, disconnect detection, connection closing), and
/// requests go through Foundation's `URLSession` (libcurl). It stands in for HummingbirdTesting,
/// whose dependencies (AsyncHTTPClient, swift-nio-ssl's BoringSSL: about 400 C files) took
/// minutes of every clean build.
enum LiveTest {
    /// Runs `app` (which must listen on port 0 and report its port into `port`), calls `body`
    /// with a client for it, then shuts the application down gracefully.
    static func run<App: ApplicationProtocol, R: Sendable>(_ app: App, port: PortBox, _ body: @Sendable (TestClient) async throws -> R) async throws -> R {
        var logger = Logger(label: "mobilenet.serve.tests")
        logger.logLevel = .warning
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [app], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            // Generous: with the whole suite running, Swift's cooperative threads are shared with
            // tests that keep them busy for a minute or more, and the server starts on them.
            let clock = ContinuousClock(), deadline = clock.now + .seconds(600)
            while port.value == nil, clock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            guard let bound = port.value else {
                await group.triggerGracefulShutdown()
                throw HarnessError("the server did not start listening within 600 s")
            }
            let result: R
            do {
                result = try await body(TestClient(port: bound))
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        }
    }
}

/// A response as the tests read it.
struct TestResponse: Sendable {
    /// The status.
    var status: HTTPResponse.Status
    /// The header fields.
    var headers: HTTPFields
    /// The body (empty for `HEAD`).
    var body: ByteBuffer
}

/// An HTTP/1.1 client of one loopback server.
struct TestClient: Sendable {
    /// The server's port on 127.0.0.1.
    let port: Int

    private static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = 64
        configuration.timeoutIntervalForRequest = 300
        configuration.timeoutIntervalForResource = 600
        return URLSession(configuration: configuration)
    }()

    /// Sends one request and hands its response to `check`.
    @discardableResult
    func execute<Return>(uri: String, method: HTTPRequest.Method, headers: HTTPFields = [:], body: ByteBuffer? = nil,
                         testCallback check: (TestResponse) async throws -> Return) async throws -> Return {
        guard let url = URL(string: "http://127.0.0.1:\(port)\(uri)") else { throw HarnessError("not a URI: \(uri)") }
        var request = URLRequest(url: url)
        request.httpMethod = method.rawValue
        for field in headers { request.addValue(field.value, forHTTPHeaderField: field.name.rawName) }
        if let body { request.httpBody = Data(body.readableBytesView) }
        let (data, response) = try await Self.session.data(for: request)
        guard let http = response as? HTTPURLResponse else { throw HarnessError("not an HTTP response") }
        var fields = HTTPFields()
        for (name, value) in http.allHeaderFields {
            guard let text = name as? String, let name = HTTPField.Name(text), let value = value as? String else { continue }
            fields.append(HTTPField(name: name, value: value))
        }
        return try await check(TestResponse(status: HTTPResponse.Status(code: http.statusCode), headers: fields, body: ByteBuffer(bytes: data)))
    }

    /// A TCP socket connected to 127.0.0.1:`port`, whose reads give up after the timeout
    /// (the caller closes it).
    static func connectedSocket(port: Int, receiveTimeoutSeconds: Int = 60) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else {
            close(fd)
            throw HarnessError("connect: \(errno)")
        }
        var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends `request` as it is (no client in between to normalise its target, such as an
    /// invalid percent-encoding) with `Connection: close`, and returns the raw response text.
    func raw(_ request: String) throws -> String {
        let fd = try Self.connectedSocket(port: port, receiveTimeoutSeconds: 60)
        defer { close(fd) }
        let bytes = Array(request.utf8)
        guard send(fd, bytes, bytes.count, 0) == bytes.count else { throw HarnessError("send: \(errno)") }
        var answer = [UInt8](), chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { break }
            answer += chunk[0..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }
}

extension LiveTest {
    /// Runs blocking socket calls on a thread of their own, not on Swift's cooperative pool:
    /// with two cores the pool has two threads, and a test blocked in `recv` on one of them
    /// (while another test does the same) left the server under test no thread to answer on.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }
}
