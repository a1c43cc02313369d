import Foundation
import Hummingbird
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetTestSupport
import Testing

/// The KServe v2 (Open Inference Protocol) routes with the shared ImageNet weights.
@Suite("KServe v2 API", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct KServeRouteTests {
    @Test("health: live 200; ready 200 once loaded, 503 before (and model routes 503 with Retry-After)")
    func health() async throws {
        let model = try await Harness.imagenet()
        try await Harness.withServer(models: [model]) { client, _, _ in
            try await client.execute(uri: "/v2/health/live", method: .get) { response throws in
                #expect(response.status == .ok)
                #expect(try Harness.object(response)["live"] as? Bool == true)
            }
            try await client.execute(uri: "/v2/health/ready", method: .get) { response throws in
                #expect(response.status == .ok)
                #expect(try Harness.object(response)["ready"] as? Bool == true)
            }
            try await client.execute(uri: "/v2/models/imagenet/ready", method: .get) { response throws in
                #expect(response.status == .ok)
                #expect(try Harness.object(response)["ready"] as? Bool == true)
            }
            try await client.execute(uri: "/v2/models/nosuch/ready", method: .get) { #expect($0.status == .notFound) }
            // HEAD: the GET's status and headers, its Content-Length included, and no body.
            for uri in ["/v2/health/live", "/v2/health/ready", "/", "/openapi.json", "/v2/models/imagenet", "/v1/models/imagenet"] {
                var length: String?, type: String?
                try await client.execute(uri: uri, method: .get) { response in
                    length = response.headers[.contentLength]
                    type = response.headers[.contentType]
                    #expect(length == String(response.body.readableBytes), "\(uri)")
                }
                try await client.execute(uri: uri, method: .head) { response in
                    #expect(response.status == .ok && response.body.readableBytes == 0, "\(uri)")
                    #expect(response.headers[.contentLength] == length && response.headers[.contentType] == type, "HEAD \(uri): \(response.headers)")
                }
            }
            // A POST-only route: HEAD is its GET's 405 with Allow, no body; no route: 404, no body.
            for uri in ["/v1/classify", "/v2/models/imagenet/infer", "/v2/models/imagenet/versions/1/infer", "/v1/models/imagenet:predict", "/v1/models/imagenet/versions/1:predict"] {
                try await client.execute(uri: uri, method: .head) { response in
                    #expect(response.status == .methodNotAllowed && response.headers[.allow] == "POST" && response.body.readableBytes == 0, "HEAD \(uri): \(response.status)")
                }
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .methodNotAllowed && response.headers[.allow] == "POST", "GET \(uri): \(response.status)")
                }
            }
            try await client.execute(uri: "/nosuch", method: .head) { response in
                #expect(response.status == .notFound && response.body.readableBytes == 0)
            }
        }
        try await Harness.withServer(models: [model], ready: false) { client, _, _ in
            try await client.execute(uri: "/v2/health/live", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v2/health/ready", method: .get) { response throws in
                #expect(response.status == .serviceUnavailable)
                #expect(try Harness.object(response)["ready"] as? Bool == false)
            }
            try await client.execute(uri: "/v1/models/imagenet", method: .get) { response throws in
                #expect(response.status == .serviceUnavailable)
                #expect(response.headers[.retryAfter] == "1")
            }
        }
    }

    @Test("GET /v2/models/imagenet: versions, input_1 FP32 [-1,224,224,3], predictions FP32 [-1,1000]")
    func metadata() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            try await client.execute(uri: "/v2/models/imagenet", method: .get) { response throws in
                #expect(response.status == .ok)
                let object = try Harness.object(response)
                #expect(object["name"] as? String == "imagenet")
                #expect(object["versions"] as? [String] == ["1"])
                let input = (object["inputs"] as? [[String: Any]])?.first
                #expect(input?["name"] as? String == "input_1")
                #expect(input?["datatype"] as? String == "FP32")
                #expect(input?["shape"] as? [Int] == [-1, 224, 224, 3])
                let output = (object["outputs"] as? [[String: Any]])?.first
                #expect(output?["name"] as? String == "predictions")
                #expect(output?["shape"] as? [Int] == [-1, 1000])
            }
        }
    }

    @Test("POST /v2/models/imagenet/infer with BYTES (base64 PNG, JPEG) and FP32 (flat data): the right classes, FP32 equal to BYTES within 1e-5")
    func infer() async throws {
        let model = try await Harness.imagenet()
        let png = try Data(contentsOf: Harness.png).base64EncodedString(), jpeg = try Data(contentsOf: Harness.jpeg).base64EncodedString()
        let flat = try Harness.nestedTensor(Harness.png, for: model).flatMap { $0.flatMap { $0 } }
        try await Harness.withServer(models: [model]) { client, _, _ in
            let bytesRequest: [String: Any] = ["id": "req-7", "inputs": [["name": "input_1", "datatype": "BYTES", "shape": [2], "data": [png, jpeg]]],
                                               "outputs": [["name": "predictions"]]]
            let fromBytes = try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: try Harness.body(bytesRequest)) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let object = try Harness.object(response)
                #expect(object["model_name"] as? String == "imagenet")
                #expect(object["id"] as? String == "req-7")
                let output = (object["outputs"] as? [[String: Any]])?.first
                #expect(output?["name"] as? String == "predictions")
                #expect(output?["datatype"] as? String == "FP32")
                #expect(output?["shape"] as? [Int] == [2, 1000])
                let data = Harness.numbers(output?["data"])
                #expect(data.count == 2000)
                #expect(Harness.argmax(Array(data[0..<1000])) == Harness.egyptianCat)
                #expect(Harness.argmax(Array(data[1000..<2000])) == Harness.espresso)
                return Array(data[0..<1000])
            }
            let fp32Request: [String: Any] = ["inputs": [["name": "input_1", "datatype": "FP32", "shape": [1, 224, 224, 3], "data": flat]]]
            try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: try Harness.body(fp32Request)) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let output = (try Harness.object(response)["outputs"] as? [[String: Any]])?.first
                #expect(output?["shape"] as? [Int] == [1, 1000])
                let data = Harness.numbers(output?["data"])
                let diff = zip(data, fromBytes).map { abs($0 - $1) }.max() ?? 1
                #expect(data.count == 1000 && diff < 1e-5, "max |diff| \(diff)")
            }
            // A shape that is not the model's, and an unknown output: 400 naming the field.
            let badShape: [String: Any] = ["inputs": [["name": "input_1", "datatype": "FP32", "shape": [1, 100, 100, 3], "data": [0]]]]
            try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: try Harness.body(badShape)) { response throws in
                #expect(response.status == .badRequest)
                #expect((try Harness.object(response)["error"] as? String)?.contains("inputs[0].shape") == true)
            }
            let badOutput: [String: Any] = ["inputs": [["name": "input_1", "datatype": "BYTES", "shape": [1], "data": [png]]], "outputs": [["name": "logits"]]]
            try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: try Harness.body(badOutput)) { response throws in
                #expect(response.status == .badRequest)
                #expect((try Harness.object(response)["error"] as? String)?.contains("logits") == true)
            }
        }
    }
}
