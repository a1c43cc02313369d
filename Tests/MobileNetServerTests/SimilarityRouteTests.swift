import Foundation
import Hummingbird
import HummingbirdTesting
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetTestSupport
import Testing

/// `POST /v1/similar` over an image index built with the library (`mobilenet index add`).
@Suite("Similarity search", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct SimilarityRouteTests {
    @Test("an indexed photo finds itself first (similarity about 1) and its re-encode next; an unknown index is 404")
    func similar() async throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let copy = dir.appendingPathComponent("bird-copy.jpg")
        try FileManager.default.copyItem(at: TestData.shared("data/images/bird.jpg"), to: copy)
        let files = ["cat.jpg", "cat.png", "bird.jpg"].map { TestData.shared("data/images/\($0)").standardizedFileURL } + [Harness.jpeg.standardizedFileURL, copy.standardizedFileURL]
        let url = dir.appendingPathComponent("photos.db")
        let embedder = try await Harness.embedder()
        let backbone = try Backbone.load(contentsOf: Harness.noTopWeights, alpha: 1.0, inputHeight: 224, inputWidth: 224, backend: OneDNNBackend())
        let added = try ImageIndex(url: url).add(files, backbone: backbone, preprocessor: embedder.preprocessor(maxPixels: 100_000_000),
                                                 runtime: RuntimeOptions(backend: backbone.network.backend, batchSize: 4, decodeThreads: 0))
        #expect(added.failures.isEmpty)
        let index = try await ServedIndex.load(name: "photos", contentsOf: url, candidateWeights: [Harness.topWeights, Harness.noTopWeights], backend: OneDNNBackend())
        #expect(index.search.count == 5)
        let metrics = ServingMetrics()
        let registry = try ModelRegistry(models: [embedder], indexes: [index], observer: metrics)
        defer { registry.shutdown() }
        let state = ServerState(service: InferenceService(registry: registry))
        let app = Application(router: MobileNetServer.makeRouter(state: state, configuration: ServerConfiguration(), metrics: metrics), logger: Harness.quietLogger)
        let query = try Data(contentsOf: files[0])
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/similar?index=photos&top=2", method: .post, body: ByteBuffer(bytes: query)) { response throws in
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let object = try Harness.object(response)
                #expect(object["index"] as? String == "photos")
                let matches = object["matches"] as? [[String: Any]] ?? []
                #expect(matches.compactMap { $0["file"] as? String } == [files[0].path, files[1].path])
                let best = (matches.first?["similarity"] as? NSNumber)?.floatValue ?? 0
                #expect(best > 0.999, "\(best)")
            }
            // The page's thumbnails: an indexed file, as stored; nothing else.
            try await client.execute(uri: "/v1/indexes/photos/image?file=\(files[1].path.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)", method: .get) { response throws in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "image/png")
                #expect(Data(response.body.readableBytesView) == (try Data(contentsOf: files[1])))
            }
            for file in ["/etc/passwd", files[1].path + "x", dir.appendingPathComponent("photos.db").path] {
                try await client.execute(uri: "/v1/indexes/photos/image?file=\(file.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)", method: .get) { response throws in
                    #expect(response.status == .notFound, "\(file)")
                    #expect((try Harness.object(response)["error"] as? String)?.contains("the index holds no such path") == true)
                }
            }
            try await client.execute(uri: "/v1/indexes/photos/image", method: .get) { response throws in
                #expect(response.status == .badRequest)
            }
            // An indexed path whose bytes are no longer the indexed ones (replaced, or re-pointed
            // by a link) is not served.
            let copyURI = "/v1/indexes/photos/image?file=\(copy.standardizedFileURL.path.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)"
            try await client.execute(uri: copyURI, method: .get) { #expect($0.status == .ok) }
            try FileManager.default.removeItem(at: copy)
            try FileManager.default.createSymbolicLink(at: copy, withDestinationURL: Harness.png)
            try await client.execute(uri: copyURI, method: .get) { response throws in
                #expect(response.status == .notFound)
                #expect((try Harness.object(response)["error"] as? String)?.contains("changed since it was indexed") == true)
            }
            try await client.execute(uri: "/v1/catalog", method: .get) { response throws in
                #expect(response.status == .ok)
                let object = try Harness.object(response)
                let models = object["models"] as? [[String: Any]] ?? []
                #expect(models.compactMap { $0["name"] as? String } == ["embedder"])
                #expect(models.first?["classifier"] as? Bool == false)
                let indexes = object["indexes"] as? [[String: Any]] ?? []
                #expect(indexes.first?["name"] as? String == "photos")
                #expect((indexes.first?["images"] as? NSNumber)?.intValue == 5)
            }
            try await client.execute(uri: "/v1/similar?index=nosuch", method: .post, body: ByteBuffer(bytes: query)) { response throws in
                #expect(response.status == .notFound)
                #expect((try Harness.object(response)["error"] as? String)?.contains("photos") == true)
            }
        }
    }
}
