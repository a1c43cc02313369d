import Foundation
import Hummingbird
import HTTPTypes
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetTestSupport
import Testing

/// Hostile and wrong requests: each gets the status that fits and an error naming the problem.
@Suite("Serving errors", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct ErrorTests {
    static func error(_ response: TestResponse) throws -> String {
        try Harness.object(response)["error"] as? String ?? "(no error field)"
    }

    @Test("an unknown model is 404 on every API, naming the served models")
    func unknownModel() async throws {
        let png = try Data(contentsOf: Harness.png).base64EncodedString()
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            for (uri, method) in [("/v1/models/resnet", HTTPRequest.Method.get), ("/v1/models/resnet/metadata", .get), ("/v2/models/resnet", .get)] {
                try await client.execute(uri: uri, method: method) { response throws in
                    #expect(response.status == .notFound, "\(uri)")
                    #expect(try Self.error(response).contains("'resnet'") && Self.error(response).contains("imagenet"))
                }
            }
            try await client.execute(uri: "/v1/models/resnet:predict", method: .post, body: try Harness.body(["instances": [["b64": png]]])) {
                #expect($0.status == .notFound)
            }
            try await client.execute(uri: "/v2/models/resnet/infer", method: .post, body: try Harness.body(["inputs": []])) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/classify?model=resnet", method: .post, body: ByteBuffer(bytes: Array("x".utf8))) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/no/such/route", method: .get) { #expect($0.status == .notFound) }
        }
    }

    @Test("garbage, empty, non-object, deeply nested and mistyped JSON: 400, never a crash")
    func garbageJSON() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
            let bodies: [(String, String)] = [
                ("{not json", "not a JSON object"), ("", "empty"), ("[1, 2]", "not an object"), ("\"text\"", "not a JSON object"),
                ("{\"instances\": " + deep + "}", "nested more than 16 levels"), ("{\"instances\": 3}", "instances"),
                ("{\"instances\": []}", "no instances"), ("{\"instances\": [[1, 2]]}", "instances[0]"),
                ("{\"instances\": [{\"b64\": 7}]}", "instances[0].b64"), ("{\"instances\": [{\"b64\": \"%%%\"}]}", "not valid base64"),
                ("{\"inputs\": [], \"instances\": []}", "exclude"), ("{\"instance\": []}", "unknown field"),
                ("{\"signature_name\": \"predict_images\", \"instances\": [{\"b64\": \"\"}]}", "predict_images"),
            ]
            for (text, expected) in bodies {
                try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: ByteBuffer(string: text)) { response throws in
                    #expect(response.status == .badRequest, "\(text.prefix(60))")
                    let message = try Self.error(response)
                    #expect(message.contains(expected), "\(text.prefix(60)): \(message)")
                }
            }
            // A tensor value out of the preprocessed range (0...255 pixels sent by mistake).
            let raw = [[[Float]]](repeating: [[Float]](repeating: [255, 0, 0], count: 224), count: 224)
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: try Harness.body(["instances": [raw]])) { response throws in
                #expect(response.status == .badRequest)
                #expect(try Self.error(response).contains("instances[0][0][0][0]") && Self.error(response).contains("-1.0...1.0"))
            }
            try await client.execute(uri: "/v1/models/imagenet:classify", method: .post, body: ByteBuffer(string: "{}")) { response throws in
                #expect(response.status == .badRequest)
                #expect(try Self.error(response).contains(":classify"))
            }
            try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: ByteBuffer(string: "{\"inputs\": [{\"name\": \"input_1\", \"datatype\": \"INT8\", \"shape\": [1], \"data\": [1]}]}")) { response throws in
                #expect(response.status == .badRequest)
                #expect(try Self.error(response).contains("INT8"))
            }
        }
    }

    @Test("a body with more JSON values than any request can need is refused before it is parsed (issue 32: 21 MB of {\"b64\":\"\"} took 7.2 GB)")
    func hostileValueCounts() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            // 2,000,000 empty binary instances, 21 MB: the issue's reproduction.
            var objects = "{\"instances\":["
            objects += Array(repeating: "{\"b64\":\"\"}", count: 2_000_000).joined(separator: ",")
            objects += "]}"
            // 20,000,000 numbers in 40 MB.
            var numbers = "{\"instances\":[["
            numbers += String(repeating: "0,", count: 20_000_000)
            numbers += "0]]}"
            for (body, expected) in [(objects, "JSON strings"), (numbers, "JSON values")] {
                try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: ByteBuffer(string: body)) { response throws in
                    #expect(response.status == .badRequest)
                    let message = try Self.error(response)
                    #expect(message.hasPrefix("body: more than") && message.contains(expected), "\(message)")
                }
                try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: ByteBuffer(string: body)) { response throws in
                    #expect(response.status == .badRequest)
                    #expect(try Self.error(response).contains(expected))
                }
            }
            // At the limit (64 instances, each under the input's name) the count passes and the
            // request is refused for its content, as before.
            let named = "{\"instances\":[" + Array(repeating: "{\"input_1\":{\"b64\":\"%%\"}}", count: 64).joined(separator: ",") + "]}"
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: ByteBuffer(string: named)) { response throws in
                #expect(response.status == .badRequest)
                #expect(try Self.error(response).contains("instances[0].input_1.b64: not valid base64"))
            }
        }
    }

    @Test("what Foundation's parser lets through is refused: a key given twice in one object, a raw control character in a string; an unknown field is refused before the body is parsed")
    func looseJSON() async throws {
        let png = try Data(contentsOf: Harness.png).base64EncodedString()
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            let predict: [(String, Int, String)] = [
                // The parser kept the first of two keys: a proxy that keeps the last sees another request.
                ("{\"instances\": [{\"b64\": \"\(png)\"}], \"instances\": [{\"b64\": \"%%%\"}]}", 400, "instances: given twice in one object"),
                ("{\"instances\": [{\"b64\": \"\(png)\", \"b64\": \"%%%\"}]}", 400, "b64: given twice"),
                ("{\"instances\": [], \"\\u0069nstances\": []}", 400, "instances: given twice"),
                // The same word twice in an array is not a key.
                ("{\"instances\": [[\"b64\", \"b64\"]]}", 400, "instances[0]"),
                ("{\"instances\": [{\"b64\": \"iVBOR\u{01}w0KGgo\"}]}", 400, "raw control character 0x01 inside a string"),
                ("{\"instances\": [{\"b64\": \"iVBOR\tw0KGgo\"}]}", 400, "0x09"),
                ("{\"\u{0A}\": 1}", 400, "0x0A"),
                // The unknown field is named though the body would not even parse: it is refused first.
                ("{\"instance\": [" + String(repeating: "0,", count: 100_000), 400, "instance: unknown field"),
                ("{\"signature_name\": \"serving_default\", \"instances\": [{\"b64\": \"\(png)\"}]}", 200, ""),
            ]
            for (text, status, expected) in predict {
                try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: ByteBuffer(string: text)) { response throws in
                    #expect(response.status.code == status, "\(text.prefix(60)): \(String(buffer: response.body).prefix(300))")
                    if status != 200 {
                        let message = try Self.error(response)
                        #expect(message.contains(expected), "\(text.prefix(60)): \(message)")
                    }
                }
            }
            let input = "{\"name\": \"input_1\", \"datatype\": \"BYTES\", \"shape\": [1], \"data\": [\"\(png)\"]}"
            let infer: [(String, Int, String)] = [
                ("{\"inputs\": [{\"name\": \"input_1\", \"datatype\": \"BYTES\", \"shape\": [1], \"name\": \"other\", \"data\": [\"\(png)\"]}]}", 400, "name: given twice"),
                // Keys are compared as bytes, as JSON parsers do: canonically equivalent Unicode
                // (é as one scalar and as e + combining acute; the Angstrom sign and Å) is two keys.
                ("{\"inputs\": [\(input)], \"parameters\": {\"\u{E9}\": 1, \"e\u{301}\": 2, \"\u{212B}\": 3, \"\u{C5}\": 4}}", 200, ""),
                // Keys over 1 KiB are refused by the census (they cost the parser a normalising hash each).
                ("{\"inputs\": [\(input)], \"parameters\": {\"\(String(repeating: "e\u{301}", count: 400))\": 1}}", 400, "keys are at most 1024 bytes"),
                // A negative dimension is named, not the element after it.
                ("{\"inputs\": [{\"name\": \"input_1\", \"datatype\": \"BYTES\", \"shape\": [-1], \"data\": []}]}", 400, "shape[0]: expected a non-negative integer, got -1"),
            ]
            for (text, status, expected) in infer {
                try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: ByteBuffer(string: text)) { response throws in
                    #expect(response.status.code == status, "\(text.prefix(60)): \(String(buffer: response.body).prefix(300))")
                    if status != 200 { #expect(try Self.error(response).contains(expected), "\(text.prefix(60))") }
                }
            }
            // A JSON body sent to a plain endpoint: 415 naming the JSON routes, before the body is used.
            let raw = try Data(contentsOf: Harness.png)
            for type in ["application/json", "Application/JSON; charset=utf-8", "application/vnd.api+json"] {
                try await client.execute(uri: "/v1/classify", method: .post, headers: [.contentType: type], body: ByteBuffer(bytes: raw)) { response throws in
                    #expect(response.status == .unsupportedMediaType, "\(type): \(response.status)")
                    #expect(try Self.error(response).contains(":predict"))
                }
            }
            // Two Content-Type fields (joined by a comma) with a JSON one among them.
            var twoTypes = HTTPFields()
            twoTypes.append(HTTPField(name: .contentType, value: "image/png"))
            twoTypes.append(HTTPField(name: .contentType, value: "application/json"))
            try await client.execute(uri: "/v1/classify", method: .post, headers: twoTypes, body: ByteBuffer(bytes: raw)) { response throws in
                #expect(response.status == .unsupportedMediaType, "two types: \(response.status)")
            }
            for type in ["image/png", "application/octet-stream", "application/x-www-form-urlencoded"] {
                try await client.execute(uri: "/v1/classify", method: .post, headers: [.contentType: type], body: ByteBuffer(bytes: raw)) { response throws in
                    #expect(response.status == .ok, "\(type): \(response.status)")
                }
            }
        }
    }

    @Test("messages quote at most 64 characters of the request (a 1 MB key was echoed whole) and name strings that are not valid Unicode")
    func messagesQuoteBriefly() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            let long = String(repeating: "a", count: 1 << 20)
            // One character of a million scalars (a letter and its combining marks) is cut too:
            // the cut was by characters.
            let marks = "a" + String(repeating: "\u{301}", count: 1 << 20)
            for body in ["{\"signature_name\": \"\(long)\", \"instances\": [[]]}", "{\"\(long)\": 1}", "{\"signature_name\": \"\(marks)\", \"instances\": [[]]}"] {
                try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: ByteBuffer(string: body)) { response throws in
                    #expect(response.status == .badRequest)
                    #expect(response.body.readableBytes < 1000 && String(buffer: response.body).contains(" bytes"), "\(response.body.readableBytes) bytes")
                }
            }
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: ByteBuffer(string: "{\"instances\": [{\"b64\": \"\\ud800iVBOR\"}]}")) { response throws in
                #expect(response.status == .badRequest)
                let message = try Self.error(response)
                #expect(message.contains("instances[0].b64") && message.contains("not valid Unicode"), "\(message)")
            }
        }
    }

    @Test("KServe: JSON booleans are not FP32 numbers, and the binary data extension is refused, not ignored")
    func kserveBooleansAndBinaryData() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            let count = 224 * 224 * 3
            let booleans = "{\"inputs\":[{\"name\":\"input_1\",\"datatype\":\"FP32\",\"shape\":[1,224,224,3],\"data\":["
                + Array(repeating: "true", count: count).joined(separator: ",") + "]}]}"
            try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: ByteBuffer(string: booleans)) { response throws in
                #expect(response.status == .badRequest)
                let message = try Self.error(response)
                #expect(message.contains("inputs[0].data[0]") && message.contains("a boolean"), "\(message)")
            }
            let binary = "{\"inputs\":[{\"name\":\"input_1\",\"datatype\":\"FP32\",\"shape\":[1,224,224,3],\"parameters\":{\"binary_data_size\":602112}}]}"
            try await client.execute(uri: "/v2/models/imagenet/infer", method: .post, body: ByteBuffer(string: binary)) { response throws in
                #expect(response.status == .badRequest)
                #expect(try Self.error(response).contains("binary_data_size"))
            }
        }
    }

    @Test("a b64 value that is not an image: 400 naming the instance and the problem")
    func notAnImage() async throws {
        let text = Data("hello, this is not an image".utf8).base64EncodedString()
        let truncated = try Data(contentsOf: Harness.png).prefix(200).base64EncodedString()
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post,
                                     body: try Harness.body(["instances": [["b64": try Data(contentsOf: Harness.png).base64EncodedString()], ["b64": text]]])) { response throws in
                #expect(response.status == .badRequest)
                let message = try Self.error(response)
                #expect(message.contains("instances[1].b64") && message.contains("not an image"), "\(message)")
            }
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: try Harness.body(["instances": [["b64": truncated]]])) { response throws in
                #expect(response.status == .badRequest)
                let message = try Self.error(response)
                #expect(message.contains("instances[0].b64") && message.contains("cannot decode"), "\(message)")
            }
            try await client.execute(uri: "/v1/classify", method: .post, body: ByteBuffer(string: "plain text")) { response throws in
                #expect(response.status == .badRequest)
                #expect(try Self.error(response).contains("not an image"))
            }
        }
    }

    @Test("a body over the limit: 413, by Content-Length and while streamed")
    func oversizeBody() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()], limits: ServingLimits(maxBodyBytes: 1000)) { client, _, _ in
            let big = ByteBuffer(bytes: [UInt8](repeating: 0x20, count: 5000))
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, headers: [.contentLength: "5000"], body: big) { response throws in
                #expect(response.status == .contentTooLarge)
                #expect(try Self.error(response).contains("1000"))
            }
            try await client.execute(uri: "/v1/classify", method: .post, body: big) { response throws in
                #expect(response.status == .contentTooLarge)
            }
        }
    }

    @Test("a full queue: 503 with Retry-After, and the queued request still answered")
    func fullQueue() async throws {
        let png = try Data(contentsOf: Harness.png).base64EncodedString()
        // One image may wait. A direct (unannounced) submission fills the queue and waits a
        // minute for a batch to fill, so the HTTP request finds the queue full whatever the
        // machine's load. Shutting the batcher down then runs the waiting image at once.
        let batching = BatchingConfiguration(maxBatchSize: 8, batchTimeout: .seconds(60), maxQueuedImages: 1)
        let model = try await Harness.imagenet()
        try await Harness.withServer(models: [model], batching: batching) { client, registry, metrics in
            let batcher = try registry.batcher(for: "imagenet")
            let image = try Harness.nestedTensor(Harness.png, for: model).flatMap { $0.flatMap { $0 } }
            let first = Task { try await batcher.submit([image]) }
            let clock = ContinuousClock(), deadline = clock.now + .seconds(10)
            while batcher.queueDepth == 0, clock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            #expect(batcher.queueDepth == 1)
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: try Harness.body(["instances": [["b64": png]]])) { response throws in
                #expect(response.status == .serviceUnavailable)
                #expect(response.headers[.retryAfter] == "1")
                #expect(try Self.error(response).contains("retry later"))
            }
            #expect(batcher.statistics.rejected == 1)
            batcher.shutdown()
            #expect(try await first.value.count == 1)
            #expect(String(decoding: metrics.exposition(), as: UTF8.self).contains("mobilenet_requests_rejected_total{model=\"imagenet\"} 1"))
        }
    }
}
