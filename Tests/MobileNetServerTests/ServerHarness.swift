import Foundation
import Hummingbird
import Logging
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetTestSupport

/// The shared models (loaded once for the whole target) and an in-process server around them.
enum Harness {
    static let topWeights = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5")
    static let noTopWeights = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5")
    static let png = TestData.repositoryRoot.appendingPathComponent("Examples/chelsea.png")
    static let jpeg = TestData.repositoryRoot.appendingPathComponent("Examples/coffee.jpg")
    /// ImageNet index of `Egyptian_cat`, the shared weights' top-1 for chelsea.png.
    static let egyptianCat = 285
    /// ImageNet index of `espresso`, the top-1 for coffee.jpg.
    static let espresso = 967

    private static let imagenetTask = Task { try await ServedModel.load(name: "imagenet", contentsOf: topWeights, backend: OneDNNBackend()) }
    private static let embedderTask = Task { try await ServedModel.load(name: "embedder", contentsOf: noTopWeights, backend: OneDNNBackend()) }

    /// The ImageNet classifier from the shared weights with the top.
    static func imagenet() async throws -> ServedModel { try await imagenetTask.value }
    /// The embedder from the shared weights without the top.
    static func embedder() async throws -> ServedModel { try await embedderTask.value }

    /// Runs `body` against a server on a loopback port (``LiveTest``) over `models`, with its
    /// own batchers, metrics and limits.
    static func withServer<T: Sendable>(models: [ServedModel], batching: BatchingConfiguration = BatchingConfiguration(), limits: ServingLimits = ServingLimits(),
                                        ready: Bool = true,
                                        _ body: @Sendable (TestClient, ModelRegistry, ServingMetrics) async throws -> T) async throws -> T {
        let metrics = ServingMetrics()
        let registry = try ModelRegistry(models: models, batching: batching, observer: metrics)
        defer { registry.shutdown() }
        let configuration = ServerConfiguration(host: "127.0.0.1", port: 0, limits: limits, batching: batching)
        let state = ServerState(service: ready ? InferenceService(registry: registry, limits: limits) : nil)
        return try await serve(state: state, configuration: configuration, metrics: metrics) { client in try await body(client, registry, metrics) }
    }

    /// Runs `body` against the application of `state` on a loopback port (``LiveTest``).
    static func serve<T: Sendable>(state: ServerState, configuration: ServerConfiguration = ServerConfiguration(host: "127.0.0.1", port: 0), metrics: ServingMetrics,
                                   _ body: @Sendable (TestClient) async throws -> T) async throws -> T {
        var configuration = configuration
        configuration.port = 0
        let port = PortBox()
        let app = MobileNetServer.makeApplication(state: state, configuration: configuration, metrics: metrics, logger: quietLogger) { port.set($0) }
        return try await LiveTest.run(app, port: port, body)
    }

    /// A logger that keeps the test output to warnings and errors (the request log is `info`).
    static var quietLogger: Logger {
        var logger = Logger(label: "mobilenet.serve.tests")
        logger.logLevel = .warning
        return logger
    }

    /// The preprocessed tensor of an image file for `model`, as nested `[H][W][3]` arrays.
    static func nestedTensor(_ url: URL, for model: ServedModel) throws -> [[[Float]]] {
        let scalars = try model.preprocessor(maxPixels: 100_000_000).tensor(contentsOf: url).scalars
        let (h, w) = (model.inputHeight, model.inputWidth)
        return (0..<h).map { y in (0..<w).map { x in Array(scalars[((y * w + x) * 3)..<((y * w + x) * 3 + 3)]) } }
    }

    /// The JSON bytes of a value built from dictionaries and arrays.
    static func body(_ object: Any) throws -> ByteBuffer {
        ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: object))
    }

    /// The response body parsed as a JSON object.
    static func object(_ response: TestResponse) throws -> [String: Any] {
        let value = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))
        guard let object = value as? [String: Any] else { throw HarnessError("the response is not a JSON object: \(String(buffer: response.body))") }
        return object
    }

    /// The index of the largest value.
    static func argmax(_ row: [Double]) -> Int { row.indices.max { row[$0] < row[$1] } ?? -1 }

    /// A JSON array of numbers as doubles.
    static func numbers(_ value: Any?) -> [Double] { (value as? [Any])?.compactMap { ($0 as? NSNumber)?.doubleValue } ?? [] }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
