import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// Records progress callbacks from the URLSession queue.
private final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var calls: [(Int64, Int64?)] = []
    func append(_ received: Int64, _ expected: Int64?) {
        lock.lock(); defer { lock.unlock() }
        calls.append((received, expected))
    }
    var last: (Int64, Int64?)? {
        lock.lock(); defer { lock.unlock() }
        return calls.last
    }
    var count: Int {
        lock.lock(); defer { lock.unlock() }
        return calls.count
    }
}

@Suite("WeightsResolver: resolution order, cache and download")
struct WeightsResolverTests {
    static let fixture = TestData.fixtures.appendingPathComponent("keras-transfer/transfer_a035_96.h5")
    /// The fixture is served as the official alpha 0.35, 96x96, no-top file.
    static let fixtureName = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    static let sharedWeights = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5")
    static let sharedName = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"

    /// A fresh home and cache folder, removed by `cleanUp`.
    struct Sandbox {
        let root: URL
        var home: URL { root.appendingPathComponent("home") }
        var cache: URL { root.appendingPathComponent("cache/swift-mobilenet") }
        var kerasModels: URL { home.appendingPathComponent(".keras/models") }

        init() throws {
            root = try TestData.temporaryDirectory()
            try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        }

        func resolver(base: URL?, extra: [String: String] = [:], allowDownload: Bool = true) -> WeightsResolver {
            var environment = ["MOBILENET_CACHE_DIR": cache.path]
            if let base { environment["MOBILENET_WEIGHTS_BASE_URL"] = base.absoluteString }
            environment.merge(extra) { $1 }
            return WeightsResolver(environment: environment, homeDirectory: home, allowDownload: allowDownload, timeout: 20)
        }

        /// The names in the cache folder, hidden ones included; empty when it does not exist.
        func cacheListing() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: cache.path)) ?? []).sorted()
        }

        func cleanUp() { try? FileManager.default.removeItem(at: root) }
    }

    /// Runs an operation expected to fail and returns its error.
    static func failure(_ operation: () async throws(WeightsResolutionError) -> URL) async -> WeightsResolutionError? {
        do {
            let url = try await operation()
            Issue.record("unexpectedly resolved \(url.path)")
            return nil
        } catch {
            return error
        }
    }

    static func copy(_ source: URL, to destination: URL) throws {
        try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source, to: destination)
    }

    /// The description must tell the user what to fetch, from where, and where to put it.
    static func expectInstructions(_ error: WeightsResolutionError, file: OfficialWeightsFile, sourceLocation: SourceLocation = #_sourceLocation) {
        let text = error.description
        #expect(text.contains(file.fileName), "\(text)", sourceLocation: sourceLocation)
        #expect(text.contains(file.url.absoluteString), "\(text)", sourceLocation: sourceLocation)
        #expect(text.contains(file.cacheDirectory.path + "/"), "\(text)", sourceLocation: sourceLocation)
        #expect(text.contains("--weights PATH"), "\(text)", sourceLocation: sourceLocation)
        #expect(text.contains("MOBILENET_WEIGHTS"), "\(text)", sourceLocation: sourceLocation)
    }

    // MARK: Names

    @Test("official file names equal Keras's", arguments: [
        (1.0, 224, true, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"),
        (1.0, 224, false, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        (0.35, 96, false, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"),
        (0.5, 128, true, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_128.h5"),
        (0.75, 160, false, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.75_160_no_top.h5"),
        (1.3, 224, true, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.3_224.h5"),
        (1.4, 192, false, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_192_no_top.h5"),
    ])
    func officialNames(alpha: Double, size: Int, top: Bool, expected: String) {
        #expect(WeightsResolver.officialFileName(alpha: alpha, inputSize: size, includeTop: top) == expected)
        let resolver = WeightsResolver(environment: [:], homeDirectory: URL(fileURLWithPath: "/nonexistent-home"))
        let file = resolver.officialFile(alpha: alpha, inputSize: size, includeTop: top)
        #expect(file.url.absoluteString == "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + expected)
        #expect(file.cachedPath.path == "/nonexistent-home/.cache/swift-mobilenet/" + expected)
    }

    @Test("cache folders and base URL follow MOBILENET_CACHE_DIR, XDG_CACHE_HOME, KERAS_HOME and MOBILENET_WEIGHTS_BASE_URL")
    func folders() {
        let home = URL(fileURLWithPath: "/h")
        let plain = WeightsResolver(environment: [:], homeDirectory: home)
        #expect(plain.cacheDirectory.path == "/h/.cache/swift-mobilenet")
        #expect(plain.kerasCacheDirectory.path == "/h/.keras/models")
        #expect(plain.baseURL == WeightsResolver.defaultBaseURL)
        let xdg = WeightsResolver(environment: ["XDG_CACHE_HOME": "/x", "KERAS_HOME": "/k", "MOBILENET_WEIGHTS_BASE_URL": "http://127.0.0.1:1/w"], homeDirectory: home)
        #expect(xdg.cacheDirectory.path == "/x/swift-mobilenet")
        #expect(xdg.kerasCacheDirectory.path == "/k/models")
        #expect(xdg.baseURL == "http://127.0.0.1:1/w/")
        let relativeXDG = WeightsResolver(environment: ["XDG_CACHE_HOME": "relative"], homeDirectory: home)
        #expect(relativeXDG.cacheDirectory.path == "/h/.cache/swift-mobilenet")
        let custom = WeightsResolver(environment: ["XDG_CACHE_HOME": "/x", "MOBILENET_CACHE_DIR": "/c", "HOME": "/ignored"], homeDirectory: home)
        #expect(custom.cacheDirectory.path == "/c")
        let fromHome = WeightsResolver(environment: ["HOME": "/e"])
        #expect(fromHome.homeDirectory.path == "/e")
        #expect(custom.cacheCandidates(alpha: 0.5, inputSize: 96, includeTop: true).map(\.path) == [
            "/c/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96.h5",
            "/h/.keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96.h5",
        ])
    }

    @Test("alpha or size without official weights gives the explanatory error and no request", arguments: [
        (0.6, 224, true), (1.0, 200, false), (1.0, 300, true), (0.35, 97, false),
    ])
    func unsupported(alpha: Double, size: Int, top: Bool) async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let server = try LocalHTTPServer(routes: [:])
        let resolver = sandbox.resolver(base: server.baseURL)
        let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: alpha, inputSize: size, includeTop: top)
        }
        #expect(error == .noOfficialWeights(alpha: alpha, inputSize: size, includeTop: top))
        let text = error?.description ?? ""
        #expect(text.contains("0.35, 0.5, 0.75, 1.0, 1.3, 1.4"), "\(text)")
        #expect(text.contains("96, 128, 160, 192, 224"), "\(text)")
        #expect(text.contains("--weights PATH") && text.contains("MOBILENET_WEIGHTS"), "\(text)")
        #expect(server.requestCount == 0)
        #expect(!FileManager.default.fileExists(atPath: sandbox.cache.path))
        print(text)
    }

    // MARK: Downloads

    /// Downloads `source` served under `name`, checks the cache, then resolves again.
    func downloadAndReuse(source: URL, name: String, alpha: Double, size: Int, top: Bool) async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let bytes = try Data(contentsOf: source)
        let server = try LocalHTTPServer(routes: ["/" + name: .body(bytes)])
        let resolver = sandbox.resolver(base: server.baseURL)
        let log = ProgressLog()
        let url = try await resolver.resolve(alpha: alpha, inputSize: size, includeTop: top) { log.append($0, $1) }
        #expect(url == sandbox.cache.appendingPathComponent(name))
        #expect(try Data(contentsOf: url) == bytes)
        #expect(sandbox.cacheListing() == [name])
        #expect(server.requestedPaths == ["/" + name])
        #expect(log.count >= 2)
        #expect(log.last?.0 == Int64(bytes.count) && log.last?.1 == Int64(bytes.count))
        let again = try await resolver.resolve(alpha: alpha, inputSize: size, includeTop: top)
        #expect(again == url)
        #expect(server.requestCount == 1, "the second resolve must use the cache")
        _ = try KerasWeightFile.read(contentsOf: again)
    }

    @Test("a download of the committed fixture lands in the cache with identical bytes and is reused")
    func fixtureDownload() async throws {
        try await downloadAndReuse(source: Self.fixture, name: Self.fixtureName, alpha: 0.35, size: 96, top: false)
    }

    @Test("a download of the 14.5 MB ImageNet file lands in the cache with identical bytes and is reused",
          .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func sharedDownload() async throws {
        try await downloadAndReuse(source: Self.sharedWeights, name: Self.sharedName, alpha: 1.0, size: 224, top: true)
    }

    @Test("a transfer cut short is a size mismatch and leaves nothing in the cache")
    func truncated() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let bytes = try Data(contentsOf: Self.fixture)
        let half = bytes.prefix(bytes.count / 2)
        let server = try LocalHTTPServer(routes: ["/" + Self.fixtureName: .truncated(half, declaredLength: bytes.count)])
        let resolver = sandbox.resolver(base: server.baseURL)
        let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false)
        }
        let file = resolver.officialFile(alpha: 0.35, inputSize: 96, includeTop: false)
        #expect(error == .sizeMismatch(file: file, expectedBytes: Int64(bytes.count), receivedBytes: Int64(half.count)))
        if let error { Self.expectInstructions(error, file: file) }
        #expect(sandbox.cacheListing() == [])
        print(error?.description ?? "")
    }

    @Test("a transfer of the 14.5 MB file cut short leaves nothing in the cache",
          .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func sharedTruncated() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let bytes = try Data(contentsOf: Self.sharedWeights)
        let cut = bytes.prefix(bytes.count - 1000)
        let server = try LocalHTTPServer(routes: ["/" + Self.sharedName: .truncated(cut, declaredLength: bytes.count)])
        let resolver = sandbox.resolver(base: server.baseURL)
        let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 1.0, inputSize: 224, includeTop: true)
        }
        let file = resolver.officialFile(alpha: 1.0, inputSize: 224, includeTop: true)
        #expect(error == .sizeMismatch(file: file, expectedBytes: Int64(bytes.count), receivedBytes: Int64(cut.count)))
        #expect(sandbox.cacheListing() == [])
    }

    /// Bodies served with a matching Content-Length that are not valid weight files.
    /// (Read with `try`: a missing fixture used to turn the last case into a second "empty".)
    static func invalidBodies() throws -> [(String, Data)] {
        let fixture = try Data(contentsOf: WeightsResolverTests.fixture)
        #expect(fixture.count > 1000)
        return [
            ("text", Data("<html>not a weight file</html>".utf8)),
            ("empty", Data()),
            ("HDF5 signature then garbage", Data([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) + Data(repeating: 7, count: 4096)),
            ("first half of a valid file", fixture.prefix(fixture.count / 2)),
        ]
    }

    @Test("content that is not a valid weight file is rejected and not kept", arguments: 0..<4)
    func invalidContent(index: Int) async throws {
        let (label, body) = try Self.invalidBodies()[index]
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let server = try LocalHTTPServer(routes: ["/" + Self.fixtureName: .body(body)])
        let resolver = sandbox.resolver(base: server.baseURL)
        let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false)
        }
        guard case .invalidDownload(let file, let reason) = error else {
            Issue.record("\(label): expected invalidDownload, got \(String(describing: error))")
            return
        }
        #expect(file == resolver.officialFile(alpha: 0.35, inputSize: 96, includeTop: false))
        #expect(!reason.contains(".part"), "the reason must not name the deleted temporary file: \(reason)")
        Self.expectInstructions(error!, file: file)
        #expect(sandbox.cacheListing() == [], "\(label)")
        print("\(label): \(error!.description)")
    }

    @Test("a failed download never replaces a good cached file")
    func keepsGoodCache() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let good = try Data(contentsOf: Self.fixture)
        let cached = sandbox.cache.appendingPathComponent(Self.fixtureName)
        try Self.copy(Self.fixture, to: cached)
        let server = try LocalHTTPServer(routes: ["/" + Self.fixtureName: .body(Data("not hdf5".utf8))])
        let resolver = sandbox.resolver(base: server.baseURL)
        let responses: [LocalHTTPServer.Response] = [
            .body(Data("not hdf5".utf8)),
            .truncated(good.prefix(1000), declaredLength: good.count),
            .status(404),
            .body(Data([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) + Data(repeating: 0, count: good.count - 8)),
        ]
        for response in responses {
            server.setRoute("/" + Self.fixtureName, response)
            let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
                try await resolver.download(alpha: 0.35, inputSize: 96, includeTop: false)
            }
            #expect(error != nil)
            #expect(try Data(contentsOf: cached) == good)
            #expect(sandbox.cacheListing() == [Self.fixtureName])
        }
        #expect(server.requestCount == responses.count)
        let resolved = try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false)
        #expect(resolved == cached)
        #expect(server.requestCount == responses.count)
    }

    @Test("a cached file that is not HDF5 (an empty file) is skipped and replaced by a good download")
    func replacesEmptyCacheFile() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let cached = sandbox.cache.appendingPathComponent(Self.fixtureName)
        try FileManager.default.createDirectory(at: sandbox.cache, withIntermediateDirectories: true)
        try Data().write(to: cached)
        let server = try LocalHTTPServer(routes: ["/" + Self.fixtureName: try .file(Self.fixture)])
        let url = try await sandbox.resolver(base: server.baseURL).resolve(alpha: 0.35, inputSize: 96, includeTop: false)
        #expect(url == cached)
        #expect(try Data(contentsOf: url) == Data(contentsOf: Self.fixture))
        #expect(server.requestCount == 1)
        #expect(sandbox.cacheListing() == [Self.fixtureName])
    }

    @Test("HTTP 404 gives the offline error naming the file, the URL and the cache folder")
    func notFound() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let server = try LocalHTTPServer(routes: [:])
        let resolver = sandbox.resolver(base: server.baseURL)
        let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 1.0, inputSize: 224, includeTop: true)
        }
        let file = resolver.officialFile(alpha: 1.0, inputSize: 224, includeTop: true)
        guard case .downloadFailed(let failed, let status, _) = error else {
            Issue.record("expected downloadFailed, got \(String(describing: error))")
            return
        }
        #expect(failed == file)
        #expect(status == 404)
        Self.expectInstructions(error!, file: file)
        #expect(error!.description.contains("404"))
        #expect(server.requestedPaths == ["/" + Self.sharedName])
        #expect(sandbox.cacheListing() == [])
        print(error!.description)
    }

    @Test("connection refused gives the offline error naming the file, the URL and the cache folder")
    func connectionRefused() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let port = try LocalHTTPServer.unusedPort()
        let resolver = sandbox.resolver(base: URL(string: "http://127.0.0.1:\(port)/")!)
        let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 0.5, inputSize: 160, includeTop: false)
        }
        let file = resolver.officialFile(alpha: 0.5, inputSize: 160, includeTop: false)
        guard case .downloadFailed(let failed, let status, let reason) = error else {
            Issue.record("expected downloadFailed, got \(String(describing: error))")
            return
        }
        #expect(failed == file)
        #expect(status == nil)
        #expect(!reason.isEmpty)
        Self.expectInstructions(error!, file: file)
        #expect(sandbox.cacheListing() == [])
        print(error!.description)
    }

    @Test("with downloads turned off a missing file is an error naming the folders searched, without any request")
    func downloadDisabled() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let server = try LocalHTTPServer(routes: ["/" + Self.fixtureName: try .file(Self.fixture)])
        let resolver = sandbox.resolver(base: server.baseURL, allowDownload: false)
        let error = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false)
        }
        let file = resolver.officialFile(alpha: 0.35, inputSize: 96, includeTop: false)
        #expect(error == .downloadDisabled(file: file, searched: [sandbox.cache.path, sandbox.kerasModels.path]))
        if let error { Self.expectInstructions(error, file: file) }
        #expect(server.requestCount == 0)
        #expect(!FileManager.default.fileExists(atPath: sandbox.cache.path))
    }

    // MARK: Resolution order

    @Test("explicit path beats MOBILENET_WEIGHTS beats the cache beats Keras's cache beats a download")
    func order() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        let explicit = sandbox.root.appendingPathComponent("explicit/weights.h5")
        let fromEnvironment = sandbox.root.appendingPathComponent("env/weights.h5")
        let cached = sandbox.cache.appendingPathComponent(Self.fixtureName)
        let kerasCached = sandbox.kerasModels.appendingPathComponent(Self.fixtureName)
        for url in [explicit, fromEnvironment, cached, kerasCached] { try Self.copy(Self.fixture, to: url) }
        let server = try LocalHTTPServer(routes: ["/" + Self.fixtureName: try .file(Self.fixture)])
        let withVariable = sandbox.resolver(base: server.baseURL, extra: ["MOBILENET_WEIGHTS": fromEnvironment.path])
        let plain = sandbox.resolver(base: server.baseURL)
        func resolve(_ resolver: WeightsResolver, explicitPath: String? = nil) async throws -> URL {
            try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false, explicitPath: explicitPath)
        }
        #expect(try await resolve(withVariable, explicitPath: explicit.path) == explicit)
        #expect(try await resolve(withVariable) == fromEnvironment)
        #expect(try await resolve(plain) == cached)
        try FileManager.default.removeItem(at: cached)
        #expect(try await resolve(plain) == kerasCached)
        #expect(server.requestCount == 0)
        // KERAS_HOME moves Keras's cache: the file under ~/.keras is no longer seen.
        let kerasHome = sandbox.root.appendingPathComponent("keras-home")
        try Self.copy(Self.fixture, to: kerasHome.appendingPathComponent("models/" + Self.fixtureName))
        let withKerasHome = sandbox.resolver(base: server.baseURL, extra: ["KERAS_HOME": kerasHome.path])
        #expect(try await resolve(withKerasHome) == kerasHome.appendingPathComponent("models/" + Self.fixtureName))
        try FileManager.default.removeItem(at: kerasCached)
        #expect(try await resolve(plain) == cached)
        #expect(server.requestCount == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.kerasModels.path) == [], "Keras's cache is never written")
        // A relative explicit path and `~/` are made absolute.
        let home = sandbox.home.appendingPathComponent("w.h5")
        try Self.copy(Self.fixture, to: home)
        #expect(try await resolve(plain, explicitPath: "~/w.h5") == home)
    }

    @Test("a missing explicit or MOBILENET_WEIGHTS file is an error naming it, even when the cache has the file")
    func missingGivenFile() async throws {
        let sandbox = try Sandbox()
        defer { sandbox.cleanUp() }
        try Self.copy(Self.fixture, to: sandbox.cache.appendingPathComponent(Self.fixtureName))
        let missing = sandbox.root.appendingPathComponent("nowhere/weights.h5")
        let resolver = sandbox.resolver(base: nil, extra: ["MOBILENET_WEIGHTS": missing.path], allowDownload: false)
        let explicitError = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false, explicitPath: missing.path + "x")
        }
        #expect(explicitError == .explicitFileNotFound(path: missing.path + "x"))
        #expect(explicitError?.description.hasPrefix(missing.path + "x") == true)
        let directoryError = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false, explicitPath: sandbox.cache.path)
        }
        #expect(directoryError == .explicitFileUnusable(path: sandbox.cache.path, reason: "it is a directory"))
        let environmentError = await Self.failure { () async throws(WeightsResolutionError) -> URL in
            try await resolver.resolve(alpha: 0.35, inputSize: 96, includeTop: false)
        }
        #expect(environmentError == .environmentFileNotFound(variable: "MOBILENET_WEIGHTS", path: missing.path))
        #expect(environmentError?.description.contains("MOBILENET_WEIGHTS") == true)
        print(explicitError?.description ?? "")
        print(environmentError?.description ?? "")
    }
}
