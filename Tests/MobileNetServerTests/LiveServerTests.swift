import Foundation
import Hummingbird
import HummingbirdTesting
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
        let app = MobileNetServer.makeApplication(specifications: [try ModelSpecification(name: "imagenet", path: Harness.topWeights.path)],
                                                  loading: ModelLoadingOptions(backend: OneDNNBackend()), configuration: configuration,
                                                  state: state, logger: Harness.quietLogger)
        let png = try Data(contentsOf: Harness.png)
        try await app.test(.live) { client in
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
}
