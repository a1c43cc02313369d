import Foundation
import Hummingbird
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetTestSupport
import Testing

/// The whole server over a real socket: the loader beside it, readiness, a request, graceful shutdown.
@Suite("Live server", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct LiveServerTests {
    @Test("live at once, ready once the loader has loaded the model, then answers classify over TCP; shuts down gracefully")
    func liveServer() async throws {
        let state = ServerState()
        let configuration = ServerConfiguration(host: "127.0.0.1", port: 0)
        let portBox = PortBox()
        let app = MobileNetServer.makeApplication(specifications: [try ModelSpecification(name: "imagenet", path: Harness.topWeights.path)],
                                                  loading: ModelLoadingOptions(backend: OneDNNBackend()), configuration: configuration,
                                                  state: state, logger: Harness.quietLogger, onServerRunning: { portBox.set($0) })
        let png = try Data(contentsOf: Harness.png)
        try await LiveTest.run(app, port: portBox) { client in
            try await client.execute(uri: "/v2/health/live", method: .get) { #expect($0.status == .ok) }
            let clock = ContinuousClock(), deadline = clock.now + .seconds(60)
            var ready = false
            while !ready, clock.now < deadline {
                ready = try await client.execute(uri: "/v2/health/ready", method: .get) { $0.status == .ok }
                if !ready { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(ready && state.isReady)
            try await client.execute(uri: "/v1/classify?top=1", method: .post, body: ByteBuffer(bytes: png)) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let first = (try Harness.object(response)["predictions"] as? [[String: Any]])?.first
                #expect(first?["label"] as? String == "Egyptian_cat")
            }
        }
        // After the graceful shutdown the batchers have stopped: the service refuses new work.
        let service = try #require(state.service)
        await #expect(throws: ServingError.shuttingDown(model: "imagenet")) {
            try await service.run([.encoded(png, field: "body")], on: try service.registry.model(named: "imagenet"))
        }
    }

    @Test("a client that disconnects while its request waits in the queue: the request is cancelled, not run")
    func disconnectCancels() async throws {
        let state = ServerState()
        // A batch waits up to 20 s to fill behind a direct (unannounced) submission: the HTTP
        // request stays queued until its client leaves.
        let configuration = ServerConfiguration(host: "127.0.0.1", port: 0, batching: BatchingConfiguration(maxBatchSize: 8, batchTimeout: .seconds(20)))
        let portBox = PortBox()
        let app = MobileNetServer.makeApplication(specifications: [try ModelSpecification(name: "imagenet", path: Harness.topWeights.path)],
                                                  loading: ModelLoadingOptions(backend: OneDNNBackend()), configuration: configuration,
                                                  state: state, logger: Harness.quietLogger, onServerRunning: { portBox.set($0) })
        let png = try Data(contentsOf: Harness.png)
        try await LiveTest.run(app, port: portBox) { client in
            let clock = ContinuousClock(), deadline = clock.now + .seconds(60)
            while !state.isReady, clock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            let service = try #require(state.service)
            let batcher = try service.registry.batcher(for: "imagenet")
            let port = try #require(portBox.value)
            let model = try service.registry.model(named: "imagenet")
            let image = try Harness.nestedTensor(Harness.png, for: model).flatMap { $0.flatMap { $0 } }
            let holder = Task { try await batcher.submit([image]) }
            while batcher.queueDepth < 1 { try await Task.sleep(for: .milliseconds(5)) }
            // A raw TCP client: the whole request, then close before the answer.
            let fd = try TestClient.connectedSocket(port: port)
            let request = Data("POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Length: \(png.count)\r\n\r\n".utf8) + png
            let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            #expect(sent == request.count)
            var queued = false
            for _ in 0..<2000 where !queued {
                queued = batcher.queueDepth == 2
                if !queued { try await Task.sleep(for: .milliseconds(5)) }
            }
            #expect(queued, "the request never reached the queue")
            close(fd)
            var cancelled = false
            for _ in 0..<1000 where !cancelled {
                cancelled = batcher.statistics.cancelled == 1
                if !cancelled { try await Task.sleep(for: .milliseconds(5)) }
            }
            #expect(cancelled, "the request was not cancelled within 5 s of the disconnect")
            #expect(batcher.queueDepth == 1 && batcher.statistics.images == 0)
            // The server goes on answering others.
            try await client.execute(uri: "/v2/health/ready", method: .get) { #expect($0.status == .ok) }
            batcher.shutdown()  // runs the held image
            #expect(try await holder.value.count == 1)
        }
    }
}

extension LiveServerTests {
    @Test("a 413 closes the connection (it stayed open after an Expect: 100-continue upload over the limit, issue 32)")
    func oversizedUploadClosesTheConnection() async throws {
        let state = ServerState()
        let configuration = ServerConfiguration(host: "127.0.0.1", port: 0, limits: ServingLimits(maxBodyBytes: 1000))
        let portBox = PortBox()
        let app = MobileNetServer.makeApplication(specifications: [try ModelSpecification(name: "imagenet", path: Harness.topWeights.path)],
                                                  loading: ModelLoadingOptions(backend: OneDNNBackend()), configuration: configuration,
                                                  state: state, logger: Harness.quietLogger, onServerRunning: { portBox.set($0) })
        try await LiveTest.run(app, port: portBox) { _ in
            let port = try #require(portBox.value)
            // With Expect (the client never sends the body), and without (it sends it all).
            for (headers, body) in [("Expect: 100-continue\r\n", Data()), ("", Data(repeating: 0x41, count: 5000))] {
                // Blocking socket calls off Swift's cooperative pool (LiveTest.offPool).
                let (text, last) = try await LiveTest.offPool { () throws -> (String, Int) in
                    let fd = try TestClient.connectedSocket(port: port, receiveTimeoutSeconds: 20)
                    defer { close(fd) }
                    let request = Data("POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\(headers)\r\n".utf8) + body
                    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    // Read to the end: recv returns 0 when the server closes; -1 after the 20 s timeout.
                    var answer = Data(), last = 0
                    var chunk = [UInt8](repeating: 0, count: 4096)
                    repeat {
                        last = recv(fd, &chunk, chunk.count, 0)
                        if last > 0 { answer.append(contentsOf: chunk[0..<last]) }
                    } while last > 0
                    return (String(decoding: answer, as: UTF8.self), last)
                }
                #expect(text.hasPrefix("HTTP/1.1 413"), "\(text.prefix(80))")
                #expect(last == 0, "the connection was not closed (\(headers.isEmpty ? "body sent" : "Expect"))")
            }
        }
    }
}

/// The port the live server bound, set from its `onServerRunning`.
final class PortBox: @unchecked Sendable {
    private let lock = NSLock()
    private var port: Int?
    func set(_ value: Int) { lock.lock(); port = value; lock.unlock() }
    var value: Int? { lock.lock(); defer { lock.unlock() }; return port }
}
