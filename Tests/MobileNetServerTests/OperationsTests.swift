import Foundation
import Hummingbird
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetTestSupport
import Testing

/// `/metrics`, `/openapi.json` and the page at `/`.
@Suite("Serving operations", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct OperationsTests {
    @Test("/metrics counts requests by route template and status, and has the batch size histogram and queue depth")
    func metrics() async throws {
        let png = try Data(contentsOf: Harness.png).base64EncodedString()
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, metrics in
            metrics.register(models: ["imagenet"])
            try await client.execute(uri: "/v1/models/imagenet", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/models/nosuch", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: try Harness.body(["instances": [["b64": png]]])) { #expect($0.status == .ok) }
            try await client.execute(uri: "/metrics", method: .get) { response throws in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
                let text = String(buffer: response.body)
                #expect(text.contains(#"mobilenet_http_requests_total{method="GET",route="/v1/models/{name}",status="200"} 1"#), "\(text)")
                #expect(text.contains(#"mobilenet_http_requests_total{method="GET",route="/v1/models/{name}",status="404"} 1"#))
                #expect(text.contains(#"mobilenet_http_requests_total{method="POST",route="/v1/models/{name}",status="200"} 1"#))
                #expect(text.contains("mobilenet_http_request_duration_seconds_bucket"))
                #expect(text.contains(#"mobilenet_batch_size_count{model="imagenet"} 1"#))
                #expect(text.contains(#"mobilenet_queue_depth{model="imagenet"} 0"#))
            }
        }
    }

    @Test("/openapi.json is an OpenAPI 3 document naming every route; / is the HTML page")
    func documents() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            try await client.execute(uri: "/openapi.json", method: .get) { response throws in
                #expect(response.status == .ok)
                let object = try Harness.object(response)
                #expect((object["openapi"] as? String)?.hasPrefix("3.") == true)
                let paths = (object["paths"] as? [String: Any])?.keys.sorted() ?? []
                for route in ["/v1/models/{name}", "/v1/models/{name}/metadata", "/v1/models/{name}:predict", "/v2/health/live", "/v2/health/ready",
                              "/v2/models/{name}", "/v2/models/{name}/ready", "/v2/models/{name}/infer", "/v1/classify", "/v1/embed", "/metrics"] {
                    #expect(paths.contains(route), "\(route)")
                }
                // Both ways, from the router itself: every registered route is documented (so
                // schemathesis calls it) and every documented operation is served.
                let drift = OpenAPIDocument.routeMismatches()
                #expect(drift.undocumented.isEmpty, "registered, not in /openapi.json: \(drift.undocumented)")
                #expect(drift.unregistered.isEmpty, "in /openapi.json, not registered: \(drift.unregistered)")
                #expect(OpenAPIDocument.registeredOperations.count >= 20, "\(OpenAPIDocument.registeredOperations.sorted())")
                // The catalog's model kinds are the served kinds, no more, no fewer.
                let catalog = ((object["components"] as? [String: Any])?["schemas"] as? [String: Any])?["Catalog"] as? [String: Any]
                let models = ((catalog?["properties"] as? [String: Any])?["models"] as? [String: Any])?["items"] as? [String: Any]
                let kinds = (((models?["properties"] as? [String: Any])?["kind"] as? [String: Any])?["enum"] as? [String]) ?? []
                #expect(Set(kinds) == Set(ServedModelKind.allCases.map(\.rawValue)) && kinds.count == ServedModelKind.allCases.count, "\(kinds)")
            }
            try await client.execute(uri: "/", method: .get) { response throws in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("text/html") == true)
                #expect(String(buffer: response.body).contains("/v1/classify?top=5"))
            }
        }
    }
}
