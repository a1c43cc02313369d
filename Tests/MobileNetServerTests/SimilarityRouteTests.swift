import Foundation
import Hummingbird
import MobileNet
import MobileNetANN
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
        let query = try Data(contentsOf: files[0])
        try await Harness.serve(state: state, metrics: metrics) { client in
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
            // HEAD: the GET's headers with its length, no body; an error keeps its status, no body.
            try await client.execute(uri: "/v1/indexes/photos/image?file=\(files[1].path.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)", method: .head) { response throws in
                #expect(response.status == .ok && response.body.readableBytes == 0)
                #expect(response.headers[.contentType] == "image/png")
                #expect(response.headers[.contentLength] == String(try Data(contentsOf: files[1]).count))
            }
            try await client.execute(uri: "/v1/indexes/photos/image?file=%2Fetc%2Fpasswd", method: .head) { response in
                #expect(response.status == .notFound && response.body.readableBytes == 0)
            }
            try await client.execute(uri: "/v1/similar?=1", method: .post, body: ByteBuffer(bytes: query)) { response throws in
                #expect(response.status == .badRequest)
                #expect((try Harness.object(response)["error"] as? String)?.contains("empty parameter name") == true, "\(String(buffer: response.body))")
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

    @Test("--ann: queries go through the index's FAISS file (same answers as exact search for Flat), nprobe is checked, a file of other embeddings is refused at load")
    func approximate() async throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = ["cat.jpg", "cat.png", "bird.jpg"].map { TestData.shared("data/images/\($0)").standardizedFileURL } + [Harness.jpeg.standardizedFileURL]
        let url = dir.appendingPathComponent("photos.db"), smaller = dir.appendingPathComponent("fewer.db")
        let embedder = try await Harness.embedder()
        let backbone = try Backbone.load(contentsOf: Harness.noTopWeights, alpha: 1.0, inputHeight: 224, inputWidth: 224, backend: OneDNNBackend())
        let runtime = RuntimeOptions(backend: backbone.network.backend, batchSize: 4, decodeThreads: 0)
        let preprocessor = embedder.preprocessor(maxPixels: 100_000_000)
        #expect(try ImageIndex(url: url).add(files, backbone: backbone, preprocessor: preprocessor, runtime: runtime).failures.isEmpty)
        #expect(try ImageIndex(url: smaller).add(Array(files.prefix(3)), backbone: backbone, preprocessor: preprocessor, runtime: runtime).failures.isEmpty)
        let identity = PreprocessingIdentity(.standard, height: 224, width: 224)
        let annURL = dir.appendingPathComponent("photos.faiss"), otherURL = dir.appendingPathComponent("fewer.faiss")
        try ImageIndex(url: url, readOnly: true).buildANN(preprocessing: identity, factory: "Flat").ann.write(to: annURL, overwrite: false)
        try ImageIndex(url: smaller, readOnly: true).buildANN(preprocessing: identity, factory: "Flat").ann.write(to: otherURL, overwrite: false)
        // Impossible sizes are refused before the embeddings are read: here a preprocessing with
        // no embeddings at all, which reading them would report instead.
        let unembedded = PreprocessingIdentity.standard.setting("resize", "never-used")
        #expect { try ImageIndex(url: url, readOnly: true).buildANN(preprocessing: unembedded, factory: "IVF64,Flat") } throws: { error in
            guard case .invalidArgument(let message) = error as? ANNError else { return false }
            return message.contains("64 IVF lists for 4 vectors")
        }
        #expect(throws: ImageIndexError.self) { try ImageIndex(url: url, readOnly: true).buildANN(preprocessing: unembedded, factory: "IVF2,Flat") }

        // The specifications: --ann names an --index; an unknown name or two files are refused.
        let specs = try IndexSpecification.attachingANN(["photos=\(annURL.path)"], to: [try IndexSpecification(parsing: "photos=\(url.path)")])
        #expect(specs.first?.annPath == annURL.path)
        #expect(throws: ServingError.self) { try IndexSpecification.attachingANN(["nosuch=\(annURL.path)"], to: specs) }
        #expect(throws: ServingError.self) { try IndexSpecification.attachingANN(["photos=a.faiss", "photos=b.faiss"], to: specs) }

        // A FAISS file built from other embeddings is refused at load, naming the file.
        do {
            _ = try await ServedIndex.load(name: "photos", contentsOf: url, candidateWeights: [Harness.noTopWeights], backend: OneDNNBackend(), annFile: otherURL)
            Issue.record("an ANN file of another index was accepted")
        } catch {
            #expect(String(describing: error).contains(otherURL.path), "\(error)")
        }

        let exact = try await ServedIndex.load(name: "exact", contentsOf: url, candidateWeights: [Harness.noTopWeights], backend: OneDNNBackend())
        let index = try await ServedIndex.load(name: "photos", contentsOf: url, candidateWeights: [Harness.noTopWeights], backend: OneDNNBackend(), annFile: annURL)
        #expect(index.ann?.count == 4)
        let metrics = ServingMetrics()
        let registry = try ModelRegistry(models: [embedder], indexes: [index, exact], observer: metrics)
        defer { registry.shutdown() }
        let state = ServerState(service: InferenceService(registry: registry))
        let query = try Data(contentsOf: files[2])
        try await Harness.serve(state: state, metrics: metrics) { client in
            var answers: [String: [[String: Any]]] = [:]
            for name in ["photos", "exact"] {
                try await client.execute(uri: "/v1/similar?index=\(name)&top=4", method: .post, body: ByteBuffer(bytes: query)) { response throws in
                    #expect(response.status == .ok, "\(String(buffer: response.body))")
                    answers[name] = try Harness.object(response)["matches"] as? [[String: Any]] ?? []
                }
            }
            let approximate = answers["photos"] ?? [], exactMatches = answers["exact"] ?? []
            #expect(approximate.count == 4)
            #expect(approximate.compactMap { $0["file"] as? String } == exactMatches.compactMap { $0["file"] as? String })
            #expect(approximate.first?["file"] as? String == files[2].path)
            for (a, e) in zip(approximate, exactMatches) {
                let (x, y) = ((a["similarity"] as? NSNumber)?.floatValue ?? 9, (e["similarity"] as? NSNumber)?.floatValue ?? -9)
                #expect(abs(x - y) < 1e-5, "\(x) vs \(y)")
            }
            // Out of range, or a parameter the index's search does not take (a Flat file, an
            // exact index): 400 naming the parameter, never silently ignored.
            for (name, bad) in [("photos", "nprobe=0"), ("photos", "ef_search=x"), ("photos", "nprobe=99999999999"),
                                ("photos", "nprobe=4"), ("photos", "ef_search=40"), ("exact", "nprobe=4")] {
                try await client.execute(uri: "/v1/similar?index=\(name)&\(bad)", method: .post, body: ByteBuffer(bytes: query)) { response throws in
                    #expect(response.status == .badRequest, "\(name) \(bad)")
                    if bad.hasSuffix("=4") || bad.hasSuffix("=40") {
                        #expect(String(buffer: response.body).contains(bad.hasPrefix("nprobe") ? "applies to an IVF index" : "applies to an HNSW index"), "\(String(buffer: response.body))")
                    }
                }
            }
            // A key the route does not take, or one given twice, is refused, not ignored.
            for (uri, expected) in [("/v1/similar?index=photos&efSearch=16", "unknown query parameter"),
                                    ("/v1/similar?index=photos&nprobe=2&nprobe=abc", "more than once"),
                                    ("/v1/similar?index=photos&top=2&top=3", "more than once"),
                                    ("/v1/classify?topk=3", "unknown query parameter"),
                                    ("/v1/embed?top=3", "unknown query parameter")] {
                try await client.execute(uri: uri, method: .post, body: ByteBuffer(bytes: query)) { response throws in
                    #expect(response.status == .badRequest, "\(uri)")
                    #expect(String(buffer: response.body).contains(expected), "\(uri): \(String(buffer: response.body))")
                }
            }
            // A target with a broken percent-encoding, sent as it is (a client library would re-encode it).
            let broken = try client.raw("POST /v1/similar?index=%ZZ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
            #expect(broken.hasPrefix("HTTP/1.1 400") && broken.contains("percent-encoding"), "\(broken.prefix(300))")
            try await client.execute(uri: "/v1/indexes/photos/image?file=a&file=b", method: .get) { response throws in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/catalog", method: .get) { response throws in
                let indexes = try Harness.object(response)["indexes"] as? [[String: Any]] ?? []
                #expect(indexes.first?["ann"] as? String == "Flat")
                #expect(indexes.last?["ann"] == nil)
            }
        }
    }
}
