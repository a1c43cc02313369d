import Foundation
import Hummingbird
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetTestSupport
import Testing

/// The TensorFlow Serving REST routes with the shared ImageNet weights.
@Suite("TensorFlow Serving REST API", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct TFServingRouteTests {
    @Test("GET /v1/models/imagenet and /metadata: AVAILABLE, serving_default with input_1 [-1,224,224,3] and predictions [-1,1000]")
    func statusAndMetadata() async throws {
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            try await client.execute(uri: "/v1/models/imagenet", method: .get) { response throws in
                #expect(response.status == .ok)
                let status = try Harness.object(response)["model_version_status"] as? [[String: Any]]
                #expect(status?.first?["state"] as? String == "AVAILABLE")
                #expect(status?.first?["version"] as? String == "1")
                #expect((status?.first?["status"] as? [String: Any])?["error_code"] as? String == "OK")
            }
            try await client.execute(uri: "/v1/models/imagenet/versions/1", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/models/imagenet/versions/2", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/models/imagenet/metadata", method: .get) { response throws in
                #expect(response.status == .ok)
                let object = try Harness.object(response)
                #expect((object["model_spec"] as? [String: Any])?["name"] as? String == "imagenet")
                let signatures = ((object["metadata"] as? [String: Any])?["signature_def"] as? [String: Any])?["signature_def"] as? [String: Any]
                let serving = signatures?["serving_default"] as? [String: Any]
                let input = (serving?["inputs"] as? [String: Any])?["input_1"] as? [String: Any]
                #expect(input?["dtype"] as? String == "DT_FLOAT")
                let dims = ((input?["tensor_shape"] as? [String: Any])?["dim"] as? [[String: Any]])?.compactMap { $0["size"] as? String }
                #expect(dims == ["-1", "224", "224", "3"])
                let output = (serving?["outputs"] as? [String: Any])?["predictions"] as? [String: Any]
                let outDims = ((output?["tensor_shape"] as? [String: Any])?["dim"] as? [[String: Any]])?.compactMap { $0["size"] as? String }
                #expect(outDims == ["-1", "1000"])
            }
        }
    }

    @Test("POST :predict with b64 PNG and JPEG instances: Egyptian_cat and espresso, probabilities summing to 1")
    func predictEncodedImages() async throws {
        let png = try Data(contentsOf: Harness.png).base64EncodedString()
        let jpeg = try Data(contentsOf: Harness.jpeg).base64EncodedString()
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            let body = try Harness.body(["instances": [["b64": png], ["b64": jpeg]]])
            try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: body) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let predictions = try Harness.object(response)["predictions"] as? [Any] ?? []
                #expect(predictions.count == 2)
                let rows = predictions.map(Harness.numbers)
                #expect(rows.map(\.count) == [1000, 1000])
                #expect(rows.map(Harness.argmax) == [Harness.egyptianCat, Harness.espresso])
                for row in rows { #expect(abs(row.reduce(0, +) - 1) < 1e-3) }
            }
            // The same through a version and with the signature named.
            let named = try Harness.body(["signature_name": "serving_default", "instances": [["b64": png]]])
            try await client.execute(uri: "/v1/models/imagenet/versions/1:predict", method: .post, body: named) { response throws in
                #expect(response.status == .ok)
                let row = Harness.numbers((try Harness.object(response)["predictions"] as? [Any])?.first)
                #expect(Harness.argmax(row) == Harness.egyptianCat)
            }
        }
    }

    @Test("POST :predict with a preprocessed float tensor, row and columnar formats: the b64 result, within 1e-5")
    func predictFloatTensor() async throws {
        let model = try await Harness.imagenet()
        let tensor = try Harness.nestedTensor(Harness.png, for: model)
        let png = try Data(contentsOf: Harness.png).base64EncodedString()
        try await Harness.withServer(models: [model]) { client, _, _ in
            let fromImage = try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: try Harness.body(["instances": [["b64": png]]])) {
                Harness.numbers((try Harness.object($0)["predictions"] as? [Any])?.first)
            }
            let row = try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: try Harness.body(["instances": [tensor]])) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                return Harness.numbers((try Harness.object(response)["predictions"] as? [Any])?.first)
            }
            let columnar = try await client.execute(uri: "/v1/models/imagenet:predict", method: .post, body: try Harness.body(["inputs": ["input_1": [tensor]]])) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let object = try Harness.object(response)
                #expect(object["predictions"] == nil)
                return Harness.numbers((object["outputs"] as? [Any])?.first)
            }
            #expect(row.count == 1000 && columnar.count == 1000)
            #expect(Harness.argmax(row) == Harness.egyptianCat)
            let diff = zip(row, fromImage).map { abs($0 - $1) }.max() ?? 1
            #expect(diff < 1e-5, "max |diff| \(diff)")
            #expect(row == columnar)
        }
    }

    @Test("POST /v1/classify with raw PNG bytes: top 3 with names, synsets and probabilities; /v1/embed: the library's embedding")
    func plainClassifyAndEmbed() async throws {
        let imagenet = try await Harness.imagenet(), embedder = try await Harness.embedder()
        let bytes = try Data(contentsOf: Harness.png)
        let expected = try embedder.run(embedder.preprocessor(maxPixels: 100_000_000).tensor(contentsOf: Harness.png)).embeddings[0]
        try await Harness.withServer(models: [imagenet, embedder]) { client, _, _ in
            try await client.execute(uri: "/v1/classify?model=imagenet&top=3", method: .post, body: ByteBuffer(bytes: bytes)) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let predictions = try Harness.object(response)["predictions"] as? [[String: Any]] ?? []
                #expect(predictions.count == 3)
                #expect(predictions.first?["label"] as? String == "Egyptian_cat")
                #expect(predictions.first?["synset"] as? String == "n02124075")
                #expect(predictions.first?["rank"] as? Int == 1)
                let p = (predictions.first?["probability"] as? NSNumber)?.doubleValue ?? 0
                #expect(p > 0.5 && p <= 1)
            }
            try await client.execute(uri: "/v1/embed?model=embedder", method: .post, body: ByteBuffer(bytes: bytes)) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let object = try Harness.object(response)
                #expect(object["dimension"] as? Int == 1280)
                let embedding = Harness.numbers(object["embedding"])
                #expect(embedding.count == 1280)
                let diff = zip(embedding, expected).map { abs($0 - Double($1)) }.max() ?? 1
                #expect(diff < 1e-5, "max |diff| \(diff)")
            }
            // An embedder cannot classify: 400 naming it.
            try await client.execute(uri: "/v1/classify?model=embedder", method: .post, body: ByteBuffer(bytes: bytes)) { response throws in
                #expect(response.status == .badRequest)
                #expect((try Harness.object(response)["error"] as? String)?.contains("embedder") == true)
            }
        }
    }

    @Test("POST /v1/classify with a multipart/form-data upload (curl -F image=@...): the raw-body answer; a broken form is a 400 naming the problem")
    func multipartUpload() async throws {
        let png = try Data(contentsOf: Harness.png)
        @Sendable func form(boundary: String, parts: [(name: String, filename: String?, body: Data)], close: Bool = true) -> ByteBuffer {
            var data = Data("preamble\r\n".utf8)
            for part in parts {
                data += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(part.name)\"\(part.filename.map { "; filename=\"\($0)\"" } ?? "")\r\n".utf8)
                data += Data("Content-Type: application/octet-stream\r\n\r\n".utf8) + part.body + Data("\r\n".utf8)
            }
            if close { data += Data("--\(boundary)--\r\n".utf8) }
            return ByteBuffer(bytes: data)
        }
        try await Harness.withServer(models: [try await Harness.imagenet()]) { client, _, _ in
            var expected: [String] = []
            try await client.execute(uri: "/v1/classify?top=3", method: .post, body: ByteBuffer(bytes: png)) { response throws in
                expected = (try Harness.object(response)["predictions"] as? [[String: Any]] ?? []).compactMap { $0["label"] as? String }
            }
            #expect(expected.first == "Egyptian_cat")
            let cases: [(String, [(name: String, filename: String?, body: Data)])] = [
                ("image part among others", [("note", nil, Data("hello".utf8)), ("image", "chelsea.png", png)]),
                ("a file part under another name", [("upload", "chelsea.png", png), ("note", nil, Data("x".utf8))]),
                ("the only part", [("whatever", nil, png)]),
                ("image after a file part and a filename part (issue 32: the first was taken)",
                 [("file", "notes.txt", Data("not an image".utf8)), ("thumb", "t.png", Data("x".utf8)), ("image", "chelsea.png", png)]),
                ("a UTF-8 filename (header values are not screened)", [("image", "chat-\u{E9}t\u{E9}.png", png)]),
            ]
            for (label, parts) in cases {
                for boundary in ["XyZ123", "----WebKitFormBoundary7MA4YWxkTrZu0gW"] {
                    let headers: HTTPFields = [.contentType: "multipart/form-data; boundary=\"\(boundary)\""]
                    try await client.execute(uri: "/v1/classify?top=3", method: .post, headers: headers, body: form(boundary: boundary, parts: parts)) { response throws in
                        #expect(response.status == .ok, "\(label): \(String(buffer: response.body))")
                        let labels = (try Harness.object(response)["predictions"] as? [[String: Any]] ?? []).compactMap { $0["label"] as? String }
                        #expect(labels == expected, "\(label)")
                    }
                }
            }
            let bad: [(String, HTTPFields, ByteBuffer, String)] = [
                ("no boundary", [.contentType: "multipart/form-data"], form(boundary: "b", parts: [("image", "x.png", png)]), "boundary"),
                ("a 71-character boundary", [.contentType: "multipart/form-data; boundary=\(String(repeating: "b", count: 71))"], ByteBuffer(), "boundary"),
                ("no closing boundary", [.contentType: "multipart/form-data; boundary=b"], form(boundary: "b", parts: [("image", "x.png", png)], close: false), "closing boundary"),
                ("two unnamed parts", [.contentType: "multipart/form-data; boundary=b"], form(boundary: "b", parts: [("a", nil, png), ("b", nil, png)]), "none is named"),
                ("an empty image part", [.contentType: "multipart/form-data; boundary=b"], form(boundary: "b", parts: [("image", "x.png", Data())]), "body"),
                // A form is not a batch: two parts where one is picked are refused, not the first taken.
                ("two image parts", [.contentType: "multipart/form-data; boundary=b"],
                 form(boundary: "b", parts: [("image", "a.png", png), ("image", "b.png", Data("x".utf8))]), "2 parts named 'image'"),
                ("two file parts", [.contentType: "multipart/form-data; boundary=b"],
                 form(boundary: "b", parts: [("file", "a.png", png), ("file", "b.png", png)]), "2 parts named 'file'"),
                ("two parts with filenames", [.contentType: "multipart/form-data; boundary=b"],
                 form(boundary: "b", parts: [("a", "a.png", png), ("b", "b.png", png)]), "2 parts carrying a filename"),
                // MultipartKit 4.7.1 trapped (index out of range) on a header name byte ≥ 0x80: the
                // server stopped. The first part's name, a later line's, a later part's.
                ("a non-ASCII header name", [.contentType: "multipart/form-data; boundary=b"],
                 ByteBuffer(bytes: Data("--b\r\n\u{E9}: x\r\n\r\nabc\r\n--b--\r\n".utf8)), "not ASCII"),
                ("a non-ASCII name on a later line", [.contentType: "multipart/form-data; boundary=b"],
                 ByteBuffer(bytes: Data("--b\r\nContent-Disposition: form-data; name=\"image\"\r\nX\u{FF}: 1\r\n\r\nabc\r\n--b--\r\n".utf8)), "not ASCII"),
                // A header line without a colon is a syntax error, not blamed on the part's bytes.
                ("a header line without a colon", [.contentType: "multipart/form-data; boundary=b"],
                 ByteBuffer(bytes: Data("--b\r\nContent-Disposition form-data\r\n\r\n".utf8) + png + Data("\r\n--b--\r\n".utf8)), "does not parse"),
                ("a non-ASCII name in a later part", [.contentType: "multipart/form-data; boundary=b"],
                 ByteBuffer(bytes: Data("--b\r\nA: 1\r\n\r\nabc\r\n--b\r\n\u{80}\r\n\r\n--b--\r\n".utf8)), "not ASCII"),
            ]
            for (label, headers, body, word) in bad {
                try await client.execute(uri: "/v1/classify", method: .post, headers: headers, body: body) { response throws in
                    #expect(response.status == .badRequest, "\(label): \(response.status)")
                    let message = try Harness.object(response)["error"] as? String ?? ""
                    #expect(message.contains(word), "\(label): \(message)")
                }
            }
        }
    }
}
