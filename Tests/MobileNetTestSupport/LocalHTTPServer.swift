import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tiny HTTP/1.1 server for tests, listening on 127.0.0.1 at an ephemeral port. It serves
/// `GET` requests one connection at a time from a background thread, answering each with
/// `Connection: close`. It is bounded so tests never hang: it stops after ``maxRequests``
/// requests or ``maxLifetime`` seconds, every accept and read waits at most a short timeout,
/// and it stops on ``stop()`` or when released.
public final class LocalHTTPServer: @unchecked Sendable {
    /// How a route answers.
    public enum Response: Sendable, Equatable {
        /// Status 200 (or the given status) with the body and a correct `Content-Length`.
        case body(Data, status: Int = 200)
        /// Status 200 announcing `declaredLength` bytes, then only `body` and the connection is
        /// closed: a transfer cut short.
        case truncated(Data, declaredLength: Int)
        /// The status with a short text body (404 for unknown paths).
        case status(Int)

        /// A 200 response with the bytes of a file.
        public static func file(_ url: URL) throws -> Response { .body(try Data(contentsOf: url)) }
    }

    /// The port the server listens on.
    public let port: UInt16
    /// The requests after which the server stops accepting.
    public let maxRequests: Int
    /// Seconds after which the server stops even if requests keep coming.
    public let maxLifetime: TimeInterval
    private let state: State

    /// `http://127.0.0.1:<port>/`.
    public var baseURL: URL { URL(string: "http://127.0.0.1:\(port)/")! }

    /// Starts a server.
    ///
    /// - Parameters:
    ///   - routes: responses by request path (`/name.h5`); other paths get 404.
    ///   - maxRequests: the server stops after this many requests.
    ///   - maxLifetime: the server stops after this many seconds.
    /// - Throws: ``ServerError`` when the socket cannot be created, bound or listened on.
    public init(routes: [String: Response], maxRequests: Int = 200, maxLifetime: TimeInterval = 300) throws {
        self.maxRequests = maxRequests
        self.maxLifetime = maxLifetime
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw ServerError("bind/listen on 127.0.0.1: \(message)")
        }
        guard let port = Self.boundPort(fd) else {
            close(fd)
            throw ServerError("getsockname failed")
        }
        self.port = port
        state = State(routes: routes)
        let state = self.state
        let deadline = Date().addingTimeInterval(maxLifetime)
        let thread = Thread {
            Self.serve(listener: fd, state: state, maxRequests: maxRequests, deadline: deadline)
        }
        thread.name = "LocalHTTPServer:\(port)"
        thread.start()
    }

    deinit { stop() }

    /// Stops accepting connections; the listening socket is closed within about 50 ms.
    public func stop() { state.stop() }

    /// Changes the answer of a path.
    public func setRoute(_ path: String, _ response: Response) { state.setRoute(path, response) }

    /// How many requests were received so far.
    public var requestCount: Int { state.paths.count }

    /// The paths requested so far, in order.
    public var requestedPaths: [String] { state.paths }

    /// A port on 127.0.0.1 with nothing listening (connections are refused): bound briefly to
    /// get a free ephemeral port, then released.
    public static func unusedPort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, let port = boundPort(fd) else { throw ServerError("bind on 127.0.0.1 failed") }
        return port
    }

    /// A server setup failure.
    public struct ServerError: Error, CustomStringConvertible {
        /// What failed, with the system error text.
        public let description: String
        init(_ description: String) { self.description = description }
    }

    // MARK: Internals

    private final class State: @unchecked Sendable {
        private let lock = NSLock()
        private var routes: [String: Response]
        private var requested: [String] = []
        private var stopped = false

        init(routes: [String: Response]) { self.routes = routes }

        var paths: [String] {
            lock.lock(); defer { lock.unlock() }
            return requested
        }
        var isStopped: Bool {
            lock.lock(); defer { lock.unlock() }
            return stopped
        }
        func stop() {
            lock.lock(); defer { lock.unlock() }
            stopped = true
        }
        func setRoute(_ path: String, _ response: Response) {
            lock.lock(); defer { lock.unlock() }
            routes[path] = response
        }
        func record(_ path: String) -> Response {
            lock.lock(); defer { lock.unlock() }
            requested.append(path)
            return routes[path] ?? .status(404)
        }
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    private static func boundPort(_ fd: Int32) -> UInt16? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return result == 0 ? UInt16(bigEndian: address.sin_port) : nil
    }

    private static func serve(listener: Int32, state: State, maxRequests: Int, deadline: Date) {
        defer { close(listener) }
        var served = 0
        while served < maxRequests, !state.isStopped, Date() < deadline {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            served += 1
            handle(client: client, state: state)
        }
    }

    private static func setTimeout(_ fd: Int32, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    private static func handle(client: Int32, state: State) {
        defer { close(client) }
        setTimeout(client, seconds: 5)
        // Read the request head (GET requests have no body), at most 64 KiB.
        var head = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let terminator: [UInt8] = [13, 10, 13, 10]
        while head.count < 65536 {
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return }
            head.append(contentsOf: buffer[0..<n])
            if head.count >= 4, (0...(head.count - 4)).contains(where: { Array(head[$0..<$0 + 4]) == terminator }) { break }
        }
        let requestLine = String(decoding: head.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = requestLine.split(separator: " ")
        guard parts.count >= 2 else { return }
        let path = String(parts[1])
        let response = state.record(path)
        switch response {
        case .body(let data, let status):
            sendAll(client, header(status: status, length: data.count))
            sendAll(client, data)
        case .truncated(let data, let declared):
            sendAll(client, header(status: 200, length: declared))
            sendAll(client, data)
        case .status(let status):
            let body = Data("\(status) \(reason(status))\n".utf8)
            sendAll(client, header(status: status, length: body.count))
            sendAll(client, body)
        }
        // Graceful close: signal the end, let the client read everything, then close.
        shutdown(client, Int32(SHUT_WR))
        var drain = [UInt8](repeating: 0, count: 1024)
        setTimeout(client, seconds: 1)
        while drain.withUnsafeMutableBytes({ recv(client, $0.baseAddress, $0.count, 0) }) > 0 {}
    }

    private static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 404: "Not Found"
        case 500: "Internal Server Error"
        default: "Status"
        }
    }

    private static func header(status: Int, length: Int) -> Data {
        Data(("HTTP/1.1 \(status) \(reason(status))\r\nContent-Type: application/octet-stream\r\n"
            + "Content-Length: \(length)\r\nConnection: close\r\n\r\n").utf8)
    }

    /// Sends all bytes, without SIGPIPE if the client went away.
    private static func sendAll(_ fd: Int32, _ data: Data) {
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            guard var pointer = raw.baseAddress else { return }
            var remaining = raw.count
            while remaining > 0 {
                let n = send(fd, pointer, remaining, Int32(MSG_NOSIGNAL))
                guard n > 0 else { return }
                pointer += n
                remaining -= n
            }
        }
    }
}
