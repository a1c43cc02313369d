import Foundation
import GRPCCore
import GRPCInProcessTransport
import MobileNet
import MobileNetServer
import MobileNetServing
import MobileNetServingGRPC
import MobileNetTFProtos
import MobileNetTestSupport
import SwiftProtobuf
import Testing

/// The Keras 3 export fixture in TF Serving's layout (version folder 1): MobileNetV2 alpha 0.35
/// at 96x96 with a 5-class head.
private let base = TestData.fixtures.appendingPathComponent("savedmodel/keras3-export")

/// A TF Serving base folder with the fixture as versions `versions`.
private func baseFolder(versions: [Int]) throws -> URL {
    let dir = try TestData.temporaryDirectory().appendingPathComponent("base")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    for version in versions {
        try FileManager.default.copyItem(at: base.appendingPathComponent("1"), to: dir.appendingPathComponent("\(version)"))
    }
    return dir
}

private func registry(_ path: URL, policy: ModelVersionPolicy = .all) async throws -> ModelRegistry {
    var options = ModelLoadingOptions(backend: OneDNNBackend())
    options.versionPolicy = policy
    let models = try await ModelRegistry.load([try ModelSpecification(name: "flowers", path: path.path)], options: options)
    return try ModelRegistry(models: models)
}

/// ``registry(_:policy:)`` under a name a test's local `registry` does not shadow.
private func policyRegistry(_ path: URL, _ policy: ModelVersionPolicy) async throws -> ModelRegistry {
    try await registry(path, policy: policy)
}

private func predictRequest(_ tensor: Tensorflow_TensorProto, model: String = "flowers", version: Int64? = nil) -> Tensorflow_Serving_PredictRequest {
    var request = Tensorflow_Serving_PredictRequest()
    request.modelSpec.name = model
    if let version { request.modelSpec.version = Google_Protobuf_Int64Value(version) }
    request.inputs[ServedModel.inputName] = tensor
    return request
}

private func floatTensor(_ dims: [Int64], values: [Float]) -> Tensorflow_TensorProto {
    var tensor = Tensorflow_TensorProto()
    tensor.dtype = .dtFloat
    tensor.tensorShape.dim = dims.map { var d = Tensorflow_TensorShapeProto.Dim(); d.size = $0; return d }
    tensor.tensorContent = values.withUnsafeBytes { Data($0) }
    return tensor
}

private func stringTensor(_ values: [Data]) -> Tensorflow_TensorProto {
    var tensor = Tensorflow_TensorProto()
    tensor.dtype = .dtString
    var dim = Tensorflow_TensorShapeProto.Dim()
    dim.size = Int64(values.count)
    tensor.tensorShape.dim = [dim]
    tensor.stringVal = values
    return tensor
}

/// The (version, state) pairs of a REST status body.
private func versionStates(_ status: TFServing.ModelStatus) throws -> [[String]] {
    let object = try JSONSerialization.jsonObject(with: ServingJSON.encode(status)) as? [String: [[String: Any]]]
    return (object?["model_version_status"] ?? []).map { [$0["version"] as? String ?? "", $0["state"] as? String ?? ""] }
}

@Suite("TensorFlow Serving's gRPC API: PredictionService and ModelService (grpc-swift's in-process transport; the network by Tests/Integration/test_grpc.py)")
struct GRPCTests {
    /// Runs `body` with a client of a gRPC server over `registry`, both on grpc-swift's
    /// in-process transport (the HTTP/2 server is driven by TF Serving's Python client in the
    /// integration tests).
    private func withServer(_ registry: ModelRegistry, limits: ServingLimits = ServingLimits(),
                            _ body: @Sendable (Tensorflow_Serving_PredictionService.Client<InProcessTransport.Client>,
                                               Tensorflow_Serving_ModelService.Client<InProcessTransport.Client>) async throws -> Void) async throws {
        let service = InferenceService(registry: registry, limits: limits)
        let provider: InferenceServiceProvider = { () throws(ServingError) in service }
        let inProcess = InProcessTransport()
        let server = GRPCServer(transport: inProcess.server, services: [PredictionService(service: provider), ModelService(service: provider)])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            try await withGRPCClient(transport: inProcess.client) { client in
                try await body(Tensorflow_Serving_PredictionService.Client(wrapping: client), Tensorflow_Serving_ModelService.Client(wrapping: client))
            }
            server.beginGracefulShutdown()
        }
        registry.shutdown()
    }

    @Test("Predict with a float tensor and with encoded images; Classify; metadata; status; the same outputs as the REST API")
    func predict() async throws {
        let registry = try await registry(base)
        let png = try Data(contentsOf: TestData.repositoryRoot.appendingPathComponent("Examples/chelsea.png"))
        let restBody = Data(#"{"instances":[{"b64":"\#(png.base64EncodedString())"}]}"#.utf8)
        let rest = try await InferenceService(registry: registry).tfServingPredict(model: "flowers", body: restBody)
        let restRow = try #require((try JSONSerialization.jsonObject(with: rest) as? [String: [[Double]]])?["predictions"]?.first)
        try await withServer(registry) { prediction, models in
            // Encoded images (DT_STRING [N]).
            let response = try await prediction.predict(predictRequest(stringTensor([png, png])))
            #expect(response.modelSpec.name == "flowers" && response.modelSpec.version.value == 1 && response.modelSpec.signatureName == "serving_default")
            let output = try #require(response.outputs["predictions"])
            #expect(output.dtype == .dtFloat && output.tensorShape.dim.map(\.size) == [2, 5] && output.floatVal.count == 10)
            #expect(zip(output.floatVal.prefix(5), restRow).allSatisfy { abs(Double($0) - $1) < 1e-6 })
            // A preprocessed float tensor (tensor_content), 96x96x3 in -1...1.
            let zeros = try await prediction.predict(predictRequest(floatTensor([1, 96, 96, 3], values: .init(repeating: 0, count: 96 * 96 * 3))))
            #expect(abs((zeros.outputs["predictions"]?.floatVal.reduce(0, +) ?? 0) - 1) < 1e-4)
            // Classify: every class with its name.
            var classify = Tensorflow_Serving_ClassificationRequest()
            classify.modelSpec.name = "flowers"
            var example = Tensorflow_Example()
            var feature = Tensorflow_Feature()
            feature.bytesList.value = [png]
            example.features.feature["image/encoded"] = feature
            classify.input.exampleList.examples = [example]
            let classes = try await prediction.classify(classify).result.classifications
            #expect(classes.count == 1 && classes[0].classes.map(\.label) == ["class0", "class1", "class2", "class3", "class4"])
            #expect(zip(classes[0].classes.map(\.score), output.floatVal.prefix(5)).allSatisfy { $0 == $1 })
            // Metadata: the signature in a SignatureDefMap.
            var metadata = Tensorflow_Serving_GetModelMetadataRequest()
            metadata.modelSpec.name = "flowers"
            metadata.metadataField = ["signature_def"]
            let map = try Tensorflow_Serving_SignatureDefMap(unpackingAny: try #require(try await prediction.getModelMetadata(metadata).metadata["signature_def"]))
            let signature = try #require(map.signatureDef["serving_default"])
            #expect(signature.inputs["input_1"]?.tensorShape.dim.map(\.size) == [-1, 96, 96, 3] && signature.outputs["predictions"]?.tensorShape.dim.map(\.size) == [-1, 5])
            // Status.
            var status = Tensorflow_Serving_GetModelStatusRequest()
            status.modelSpec.name = "flowers"
            let versions = try await models.getModelStatus(status).modelVersionStatus
            #expect(versions.map(\.version) == [1] && versions.map(\.state) == [.available])
        }
    }

    @Test("hostile and wrong requests get typed statuses naming the field: shapes, counts, types, sizes, names, versions")
    func errors() async throws {
        let registry = try await registry(base)
        try await withServer(registry, limits: ServingLimits(maxImagesPerRequest: 4)) { prediction, models in
            func code(_ request: Tensorflow_Serving_PredictRequest) async -> (RPCError.Code, String)? {
                do { _ = try await prediction.predict(request); return nil } catch let error as RPCError { return (error.code, error.message) } catch { return (.unknown, "\(error)") }
            }
            var cases: [(Tensorflow_Serving_PredictRequest, RPCError.Code, String)] = []
            cases.append((predictRequest(stringTensor([Data("no image".utf8)])), .invalidArgument, "string_val[0]"))
            cases.append((predictRequest(floatTensor([1, 95, 96, 3], values: .init(repeating: 0, count: 95 * 96 * 3))), .invalidArgument, "[1, 95, 96, 3]"))
            cases.append((predictRequest(floatTensor([1 << 62, 96, 96, 3], values: [0])), .invalidArgument, "more than the 4"))
            cases.append((predictRequest(floatTensor([-1, 96, 96, 3], values: [0])), .invalidArgument, "negative"))
            cases.append((predictRequest(floatTensor([0, 96, 96, 3], values: [])), .invalidArgument, "no images"))
            cases.append((predictRequest(floatTensor([1, 96, 96, 3], values: [0, 1])), .invalidArgument, "tensor_content"))
            cases.append((predictRequest(floatTensor([1, 96, 96, 3], values: .init(repeating: .nan, count: 96 * 96 * 3))), .invalidArgument, "outside"))
            cases.append((predictRequest(floatTensor([1, 96, 96, 3], values: .init(repeating: 0, count: 96 * 96 * 3)), model: "nope"), .notFound, "nope"))
            cases.append((predictRequest(floatTensor([1, 96, 96, 3], values: .init(repeating: 0, count: 96 * 96 * 3)), version: 7), .notFound, "7"))
            var wrongName = predictRequest(stringTensor([Data()]))
            wrongName.inputs = ["images": stringTensor([Data()])]
            cases.append((wrongName, .invalidArgument, "input_1"))
            var int32 = stringTensor([Data()])
            int32.dtype = .dtInt32
            cases.append((predictRequest(int32), .invalidArgument, "DT_INT32"))
            var label = predictRequest(stringTensor([Data()]))
            label.modelSpec.versionLabel = "stable"
            cases.append((label, .notFound, "stable"))
            var signature = predictRequest(stringTensor([Data()]))
            signature.modelSpec.signatureName = "classify"
            cases.append((signature, .invalidArgument, "classify"))
            var filter = predictRequest(floatTensor([1, 96, 96, 3], values: .init(repeating: 0, count: 96 * 96 * 3)))
            filter.outputFilter = ["logits"]
            cases.append((filter, .invalidArgument, "logits"))
            for (request, expected, text) in cases {
                let got = await code(request)
                #expect(got?.0 == expected && got?.1.contains(text) == true, "\(text): \(String(describing: got))")
            }
            // A message over the size limit is refused by the transport.
            var status = Tensorflow_Serving_GetModelStatusRequest()
            status.modelSpec.name = "nope"
            await #expect(throws: RPCError.self) { try await models.getModelStatus(status) }
        }
    }

    @Test("versions: a base folder serves every version folder; added and retired while running, in-flight work answered")
    func versions() async throws {
        let folder = try baseFolder(versions: [1, 3])
        let registry = try await registry(folder)
        #expect(try registry.versions(of: "flowers").map(\.versionNumber) == [1, 3])
        #expect(try registry.model(named: "flowers").versionNumber == 3)
        #expect(try registry.model(named: "flowers", version: "1").versionNumber == 1)
        #expect(throws: ServingError.self) { try registry.model(named: "flowers", version: "2") }
        let service = InferenceService(registry: registry)
        #expect(try versionStates(service.tfServingStatus(model: "flowers")) == [["1", "AVAILABLE"], ["3", "AVAILABLE"]])
        // Version 4 arrives; version 1 goes, but a request that found it first is still answered.
        var options = ModelLoadingOptions(backend: OneDNNBackend())
        options.versionPolicy = .all
        let spec = try ModelSpecification(name: "flowers", path: folder.path)
        try FileManager.default.copyItem(at: base.appendingPathComponent("1"), to: folder.appendingPathComponent("4"))
        try registry.add(try await ModelRegistry.load(spec, version: 4, options: options))
        #expect(try registry.model(named: "flowers").versionNumber == 4)
        let old = try registry.model(named: "flowers", version: "1")
        #expect(registry.retire(model: "flowers", version: 1, grace: .milliseconds(500)))
        #expect(throws: ServingError.self) { try registry.model(named: "flowers", version: "1") }
        let input = RequestImage.tensor(.init(repeating: 0, count: 96 * 96 * 3))
        let outputs = try await service.run([input], on: old)
        #expect(outputs.count == 1)
        #expect(registry.retiredVersions(of: "flowers") == [1])
        registry.recordLoadFailure(model: "flowers", version: 9, reason: "variables cut short")
        let failedStatus = try JSONSerialization.jsonObject(with: ServingJSON.encode(service.tfServingStatus(model: "flowers"))) as? [String: [[String: Any]]]
        let failed = try #require(failedStatus?["model_version_status"]?.last)
        #expect(failed["version"] as? String == "9" && failed["state"] as? String == "END"
                && (failed["status"] as? [String: String]) == ["error_code": "UNKNOWN", "error_message": "variables cut short"])
        #expect(registry.failedVersions(of: "flowers").map(\.version) == [9])
        #expect(try versionStates(service.tfServingStatus(model: "flowers")) == [["3", "AVAILABLE"], ["4", "AVAILABLE"], ["1", "END"], ["9", "END"]])
        // The last version is never retired; a version is not added twice.
        #expect(registry.retire(model: "flowers", version: 3))
        #expect(!registry.retire(model: "flowers", version: 4))
        #expect(throws: ServingError.self) { try registry.add(try registry.model(named: "flowers")) }
        // Under `latest`, only the highest version folder is loaded; `latest:2` the two highest,
        // `specific:1,3,7` those of its versions that have folders; one that has none is an error.
        for (policy, expected) in [("latest", [4]), ("latest:2", [3, 4]), ("specific:1,3,7", [1, 3])] {
            let other = try await policyRegistry(folder, try ModelVersionPolicy(parsing: policy))
            #expect(try other.versions(of: "flowers").map(\.versionNumber) == expected.map(Int64.init), "\(policy)")
            other.shutdown()
        }
        do {
            _ = try await policyRegistry(folder, .specific(versions: [2, 5]))
            Issue.record("a policy that serves no version folder was accepted")
        } catch let error as ServingError {
            #expect(error.description.contains("specific:2,5 serves none of the version folders") && error.description.contains("(1, 3, 4)"), "\(error)")
        }
        registry.shutdown()
    }

    @Test("--model-version-policy as TF Serving's model_version_policy: all, latest, latest:N, specific:V,...; what the command line cannot mean is refused")
    func versionPolicies() throws {
        let cases: [(String, ModelVersionPolicy)] = [("all", .all), ("latest", .latest(count: 1)), ("latest:3", .latest(count: 3)),
                                                     ("specific:7,2", .specific(versions: [2, 7])), ("specific:0", .specific(versions: [0]))]
        for (text, policy) in cases {
            #expect(try ModelVersionPolicy(parsing: text) == policy, "\(text)")
            #expect(try ModelVersionPolicy(parsing: policy.description) == policy, "\(policy)")
        }
        for bad in ["", "All", "latest:0", "latest:17", "latest:x", "specific", "specific:", "specific:1,,2", "specific:-1", "specific:1,1",
                    "specific:" + (1...17).map(String.init).joined(separator: ","), "specific:99999999999999999999", "newest"] {
            #expect(throws: ServingError.self, "\(bad)") { try ModelVersionPolicy(parsing: bad) }
        }
        let onDisk = Array(1...20)
        #expect(ModelVersionPolicy.all.versions(of: onDisk) == Array(5...20))
        #expect(ModelVersionPolicy.latest(count: 2).versions(of: onDisk) == [19, 20])
        #expect(ModelVersionPolicy.specific(versions: [3, 25]).versions(of: onDisk) == [3])
        #expect(ModelVersionPolicy.latest(count: 1).versions(of: []) == [])
    }
}

@Suite("The HTTP server's connection limit (file descriptors to spare)")
struct ConnectionLimitTests {
    @Test("over --max-connections, a new connection is closed at once; the open ones still answer; a freed slot is reused")
    func limit() async throws {
        let state = ServerState()
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0)
        configuration.maxConnections = 2
        try await Harness.serve(state: state, configuration: configuration, metrics: ServingMetrics()) { client in
            let port = client.port
            // Three connections to a server that takes two: one is closed at once (which one
            // depends on the order the event loops set them up), the other two answer.
            let outcomes = try await LiveTest.offPool { () throws -> [String] in
                let sockets = try (0..<3).map { _ in try TestClient.connectedSocket(port: port, receiveTimeoutSeconds: 10) }
                defer { sockets.forEach { close($0) } }
                Thread.sleep(forTimeInterval: 0.3)
                let request = Array("GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                return sockets.map { fd in
                    _ = send(fd, request, request.count, Int32(MSG_NOSIGNAL))
                    var byte = [UInt8](repeating: 0, count: 64)
                    let n = recv(fd, &byte, byte.count, 0)
                    return n > 0 ? String(decoding: byte[0..<n], as: UTF8.self) : "closed"
                }
            }
            #expect(outcomes.filter { $0 == "closed" }.count == 1 && outcomes.filter { $0.hasPrefix("HTTP/1.1 200") }.count == 2, "\(outcomes.map { $0.prefix(20) })")
            // The slots are free again: the next connection is answered.
            try await Task.sleep(for: .milliseconds(200))
            let reply = try await LiveTest.offPool { try client.raw("GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") }
            #expect(reply.hasPrefix("HTTP/1.1 200"), "\(reply.prefix(80))")
        }
    }

    @Test("the gRPC listener closes connections past its limit at once too; a freed slot is reused")
    func grpcLimit() async throws {
        let grpc = TFServingGRPCServer(host: "127.0.0.1", port: 0, maxRequestBytes: 1 << 20, maxConnections: 2) { () throws(ServingError) -> InferenceService in
            throw .notReady
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await grpc.server.serve() }
            let port = try #require(await grpc.listeningPort)
            // HTTP/2's client preface and an empty SETTINGS frame: a served connection answers
            // with the server's SETTINGS, a refused one is closed (recv gives 0).
            @Sendable func answered(_ fd: Int32) -> Bool {
                let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
                _ = send(fd, preface, preface.count, Int32(MSG_NOSIGNAL))
                var bytes = [UInt8](repeating: 0, count: 64)
                return recv(fd, &bytes, bytes.count, 0) > 0
            }
            let outcomes = try await LiveTest.offPool { () throws -> [Bool] in
                let sockets = try (0..<3).map { _ in try TestClient.connectedSocket(port: port, receiveTimeoutSeconds: 10) }
                defer { sockets.forEach { close($0) } }
                Thread.sleep(forTimeInterval: 0.3)
                return sockets.map(answered)
            }
            #expect(outcomes.filter { $0 }.count == 2 && outcomes.filter { !$0 }.count == 1, "\(outcomes)")
            try await Task.sleep(for: .milliseconds(200))
            let again = try await LiveTest.offPool { () throws -> Bool in
                let fd = try TestClient.connectedSocket(port: port, receiveTimeoutSeconds: 10)
                defer { close(fd) }
                return answered(fd)
            }
            #expect(again)
            grpc.server.beginGracefulShutdown()
        }
    }
}
