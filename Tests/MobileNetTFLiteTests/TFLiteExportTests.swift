import Foundation
import MobileNet
import MobileNetTestSupport
import MobileNetTFLite
import Testing

/// A small classifier with random weights: MobileNetV2 alpha 0.35 at 96x96, BatchNorm statistics
/// random (so folding matters), and a head Dense(16, relu) → Dense(5, softmax).
private func smallClassifier() throws -> MobileNetV2 {
    let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 96, inputWidth: 96, includeTop: false, pooling: .avg)
    let base = try MobileNetV2(configuration: configuration, weights: try KerasWeightSet.random(for: configuration, seed: 11), backend: OneDNNBackend())
    var generator = SplitMix64(seed: 5)
    func values(_ n: Int, _ limit: Float) -> [Float] { (0..<n).map { _ in (generator.uniform() * 2 - 1) * limit } }
    let head = try DenseHead(layers: [
        .init(name: "hidden", kernel: Tensor(shape: [1280, 16], scalars: values(1280 * 16, 0.2)), bias: values(16, 0.1), activation: .relu),
        .init(name: "predictions", kernel: Tensor(shape: [16, 5], scalars: values(16 * 5, 0.8)), bias: values(5, 0.1), activation: .softmax),
    ], source: "test")
    return try base.withHead(head)
}

private let classNames = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]

private func inputs(_ count: Int, seed: UInt64) -> [Tensor] {
    (0..<count).map { Tensor.randomInput(shape: [1, 96, 96, 3], seed: seed + UInt64($0)) }
}

private func metadata(classes: [String]? = classNames) -> TFLiteExportMetadata {
    TFLiteExportMetadata(name: "flowers", version: "3", description: "a test classifier", author: "tests", license: "Apache-2.0",
                         classNames: classes)
}

private func calibrated(_ network: MobileNetV2) throws -> TFLiteCalibration {
    let calibrator = try TFLiteCalibrator(graph: network.graph, backend: OneDNNBackend())
    for batch in inputs(16, seed: 100) { try calibrator.observe(batch) }
    return try calibrator.calibration()
}

/// LiteRT's view of an exported file (scripts/tflite_interop.py).
struct LiteRTRun: Decodable {
    struct Detail: Decodable { var dtype: String; var shape: [Int]; var quantization: [Double] }
    var input: Detail
    var output: Detail
    var signatures: [String]
    var packed: [String: String]
    var builtin: [[Double]]
    var xnnpack: [[Double]]
}

@Suite("TFLite export: the library's models written as .tflite files, read back by its reader and by LiteRT")
struct TFLiteExportTests {
    static let python = TestData.repositoryRoot.appendingPathComponent(".venv-test/bin/python")
    static let script = TestData.repositoryRoot.appendingPathComponent("scripts/tflite_interop.py")

    /// Whether LiteRT runs; required (a failure) when MOBILENET_REQUIRE_SHARED=1.
    static var liteRTAvailable: Bool {
        if ProcessInfo.processInfo.environment["MOBILENET_REQUIRE_SHARED"] == "1" { return true }
        guard FileManager.default.isExecutableFile(atPath: python.path),
              let result = try? Subprocess.run(python, ["-c", "import ai_edge_litert.interpreter"]) else { return false }
        return result.status == 0
    }

    static let missing: Comment = "LiteRT not found at \(python.path): run scripts/setup-test-tools.sh (set MOBILENET_REQUIRE_SHARED=1 to make this a failure)"

    static func liteRT(_ file: URL, inputs: [Tensor], in dir: URL) throws -> LiteRTRun {
        let npy = dir.appendingPathComponent("inputs.npy")
        try NPY.encode(Tensor.concatenatingBatches(inputs)).write(to: npy)
        let result = try Subprocess.run(python, [script.path, file.path, npy.path])
        try #require(result.status == 0, "tflite_interop.py failed: \(result.stderr)")
        return try JSONDecoder().decode(LiteRTRun.self, from: Data(result.stdout.utf8))
    }

    @Test("float32: recognised by the reader with its head and labels, outputs equal to the float network's")
    func float32() async throws {
        let network = try smallClassifier()
        let bytes = try TFLiteExporter.write(network.graph, options: TFLiteExportOptions(metadata: metadata()))
        let file = try TFLiteModel(bytes: bytes, path: "float.tflite")
        let recognised = try TFLiteMobileNetV2(model: file)
        #expect(recognised.quantizationKind == .float32 && recognised.classes == 5 && recognised.hasSoftmax)
        #expect(recognised.configuration.alpha == 0.35 && recognised.configuration.inputHeight == 96)
        #expect(recognised.head?.layers.map(\.activation) == [.relu, .softmax])
        let metadata = try #require(try file.supportMetadata())
        #expect(metadata.name == "flowers" && metadata.version == "3" && metadata.labelsFile == "labels.txt")
        #expect(metadata.mean == [127.5] && metadata.std == [127.5])

        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("float.tflite")
        try bytes.write(to: url)
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(model.classNames == classNames)
        var worst: Float = 0
        for x in inputs(4, seed: 1) {
            let expected = try network(x).scalars
            let got = try #require(try model.run(x).probabilities?.first)
            worst = max(worst, zip(expected, got).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-5, "max |difference| from the float network: \(worst)")
    }

    @Test("full integer: calibrated int8, uint8 input and output; our integer kernels and LiteRT's agree", .enabled(if: liteRTAvailable, missing))
    func fullInteger() async throws {
        let network = try smallClassifier()
        let options = TFLiteExportOptions(quantization: .fullInteger(try calibrated(network)), inputType: .uint8, outputType: .uint8, metadata: metadata())
        let bytes = try TFLiteExporter.write(network.graph, options: options)
        let file = try TFLiteModel(bytes: bytes, path: "int8.tflite")
        #expect(try TFLiteMobileNetV2(model: file).quantizationKind == .fullInteger)
        let input = file.tensors[file.inputs[0]]
        #expect(input.type == .uint8 && input.quantization?.zeroPoints == [127])
        #expect(abs(Double(input.quantization!.scales[0]) - 2.0 / 255) < 1e-7)

        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("int8.tflite")
        try bytes.write(to: url)
        let tests = inputs(8, seed: 40)
        let lite = try Self.liteRT(url, inputs: tests, in: dir)
        #expect(lite.input.dtype == "uint8" && lite.output.dtype == "uint8" && lite.signatures == ["serving_default"])
        #expect(lite.packed["labels.txt"] == classNames.joined(separator: "\n") + "\n")

        // The reference kernels (LiteRT's built-in arithmetic) and XNNPACK's operators (what
        // LiteRT's default resolver runs) on the same quantized input.
        let program = try QuantizedProgram(model: file)
        let fast = try #require(XNNPACKProgram(model: file, program: program, threads: 1))
        let (scale, zero) = (input.quantization!.scales[0], Int32(input.quantization!.zeroPoints[0]))
        let quantized = tests.map { x in x.scalars.map { v -> Int32 in min(max(Int32((v / scale).rounded(.toNearestOrAwayFromZero)) + zero, 0), 255) } }
        let output = file.outputs[0]
        let fastResults = try fast.run(quantized.map { .quantized($0) }, keep: [output])
        var equal = 0, withinOne = 0, total = 0
        for (i, q) in quantized.enumerated() {
            let ours = try #require(try program.run(.quantized(q), keep: [output]).quantized[output])
            let ourFast = try #require(fastResults[i].quantized[output])
            for j in ours.indices {
                total += 1
                if Double(ours[j]) == lite.builtin[i][j] { equal += 1 }
                if abs(Double(ourFast[j]) - lite.xnnpack[i][j]) <= 1 { withinOne += 1 }
            }
        }
        #expect(equal == total, "reference kernels equal to LiteRT's built-in kernels: \(equal)/\(total)")
        #expect(withinOne == total, "XNNPACK within 1 of LiteRT with XNNPACK: \(withinOne)/\(total)")

        // Opened as every command opens it: the integer backend, the packed class names, and
        // probabilities near the float network's.
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(model.classNames == classNames && model.network.backendName == "tflite-xnnpack")
        var worst: Float = 0
        for x in tests {
            let expected = try network(x).scalars
            let got = try #require(try model.run(x).probabilities?.first)
            worst = max(worst, zip(expected, got).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 0.1, "max |difference| of int8 probabilities from float: \(worst)")
    }

    @Test("float32 and dynamic range run in LiteRT as in the library", .enabled(if: liteRTAvailable, missing),
          arguments: [TFLiteExportQuantization.none, .dynamicRange])
    func floatInLiteRT(quantization: TFLiteExportQuantization) async throws {
        let network = try smallClassifier()
        let bytes = try TFLiteExporter.write(network.graph, options: TFLiteExportOptions(quantization: quantization, metadata: metadata(classes: nil)))
        let file = try TFLiteModel(bytes: bytes, path: "x.tflite")
        #expect(try TFLiteMobileNetV2(model: file).quantizationKind == (quantization == .none ? .float32 : .dynamicRange))
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("x.tflite")
        try bytes.write(to: url)
        let tests = inputs(4, seed: 60)
        let lite = try Self.liteRT(url, inputs: tests, in: dir)
        #expect(lite.input.dtype == "float32" && lite.packed.isEmpty)
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(model.classNames == ["class0", "class1", "class2", "class3", "class4"])
        var worst: Double = 0
        for (i, x) in tests.enumerated() {
            let ours = try #require(try model.run(x).probabilities?.first)
            worst = max(worst, zip(ours, lite.builtin[i]).map { abs(Double($0) - $1) }.max()!)
        }
        // Float: rounding only. Dynamic range: LiteRT quantizes activations on the fly, the
        // library computes in float with the dequantized int8 weights.
        #expect(worst < (quantization == .none ? 1e-5 : 0.05), "max |difference| from LiteRT: \(worst)")
    }

    @Test("an embedder (no head) exports its pooled embedding")
    func embedder() async throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 96, inputWidth: 96, includeTop: false, pooling: .avg)
        let network = try MobileNetV2(configuration: configuration, weights: try KerasWeightSet.random(for: configuration, seed: 3), backend: OneDNNBackend())
        let bytes = try TFLiteExporter.write(network.graph, options: TFLiteExportOptions())
        let recognised = try TFLiteMobileNetV2(model: try TFLiteModel(bytes: bytes, path: "e.tflite"))
        #expect(recognised.head == nil)
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("e.tflite")
        try bytes.write(to: url)
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(!model.isClassifier && model.embeddingWidth == 1280)
        let x = inputs(1, seed: 9)[0]
        let expected = try network(x).scalars
        let difference = try model.run(x).embeddings[0].enumerated().map { abs($0.element - expected[$0.offset]) }.max()!
        #expect(difference < 1e-5)
    }

    @Test("the shared ImageNet weights to int8 (calibrated on the 100 sample photos): LiteRT's outputs on the 31 reference photos are ours",
          .enabled(if: TestData.sharedAvailable && liteRTAvailable, "needs ../shared and LiteRT"))
    func sharedWeightsInt8() async throws {
        let weights = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5")
        let model = try await ModelFile.open(weights, backend: OneDNNBackend())
        let sample = TestData.shared("data/imagenet-sample")
        let photos = try FileManager.default.contentsOfDirectory(at: sample, includingPropertiesForKeys: nil).sorted { $0.path < $1.path }
        let settings = TFLiteExportSettings(quantization: .int8, calibrationImages: photos, inputType: .uint8, outputType: .uint8, name: "imagenet")
        let result = try model.exportTFLite(settings, floatBackend: OneDNNBackend(), runtime: RuntimeOptions(backend: OneDNNBackend()))
        #expect(result.calibrationImages == photos.count && result.calibrationFailures.isEmpty)

        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("imagenet-int8.tflite")
        try result.data.write(to: url)
        let reference = TestData.shared("data/reference")
        let ids = try FileManager.default.contentsOfDirectory(atPath: reference.path).filter { $0.hasSuffix(".input.npy") }
            .map { String($0.dropLast(".input.npy".count)) }.sorted()
        let tensors = try ids.map { try NPY.read(contentsOf: reference.appendingPathComponent("\($0).input.npy")) }
        let lite = try Self.liteRT(url, inputs: tensors, in: dir)

        let file = try TFLiteModel(contentsOf: url)
        let program = try QuantizedProgram(model: file)
        let fast = try #require(XNNPACKProgram(model: file, program: program, threads: 2))
        let input = file.tensors[file.inputs[0]]
        let (scale, zero) = (input.quantization!.scales[0], Int32(input.quantization!.zeroPoints[0]))
        let quantized = tensors.map { x in x.scalars.map { v -> Int32 in min(max(Int32((v / scale).rounded(.toNearestOrAwayFromZero)) + zero, 0), 255) } }
        let output = file.outputs[0]
        let fastResults = try fast.run(quantized.map { .quantized($0) }, keep: [output])
        var equal = 0, withinOne = 0, total = 0, sameTopKeras = 0
        for (i, q) in quantized.enumerated() {
            let ours = try #require(try program.run(.quantized(q), keep: [output]).quantized[output])
            let ourFast = try #require(fastResults[i].quantized[output])
            for j in ours.indices {
                total += 1
                if Double(ours[j]) == lite.builtin[i][j] { equal += 1 }
                if abs(Double(ourFast[j]) - lite.xnnpack[i][j]) <= 1 { withinOne += 1 }
            }
            let keras = try NPY.read(contentsOf: reference.appendingPathComponent("\(ids[i]).probs.npy")).scalars
            let top = ourFast.indices.max { ourFast[$0] < ourFast[$1] || (ourFast[$0] == ourFast[$1] && $0 > $1) }!
            if top == keras.indices.max(by: { keras[$0] < keras[$1] })! { sameTopKeras += 1 }
        }
        print("exported int8 (shared weights): reference kernels equal to LiteRT built-in \(equal)/\(total); XNNPACK within 1 of LiteRT XNNPACK \(withinOne)/\(total); top-1 as Keras float \(sameTopKeras)/\(ids.count); \(result.data.count) bytes")
        #expect(Double(equal) >= 0.99 * Double(total))
        #expect(Double(withinOne) >= 0.99 * Double(total))
        #expect(sameTopKeras >= ids.count - 2)
        #expect(lite.packed["labels.txt"]?.split(separator: "\n").count == 1000)
    }

    @Test("what cannot be written is a typed error: integer I/O without calibration, a foreign calibration, wrong class names, an unfolded graph")
    func refusals() throws {
        let network = try smallClassifier()
        #expect(throws: TFLiteExportError.self) {
            try TFLiteExporter.write(network.graph, options: TFLiteExportOptions(inputType: .uint8))
        }
        #expect(throws: TFLiteExportError.calibration(reason: "the calibration has 3 nodes; the graph has \(network.graph.nodes.count)")) {
            try TFLiteExporter.write(network.graph, options: TFLiteExportOptions(quantization: .fullInteger(TFLiteCalibration(ranges: [0...1, 0...1, 0...1], images: 1))))
        }
        #expect(throws: TFLiteExportError.unsupported(reason: "2 class names for 5 outputs")) {
            try TFLiteExporter.write(network.graph, options: TFLiteExportOptions(metadata: metadata(classes: ["a", "b"])))
        }
        let unfolded = try MobileNetV2.makeGraph(configuration: network.configuration.withoutTop, weights: try KerasWeightSet.random(for: network.configuration.withoutTop), foldBatchNorm: false)
        #expect(throws: TFLiteExportError.self) { try TFLiteExporter.write(unfolded, options: TFLiteExportOptions()) }
        let calibrator = try TFLiteCalibrator(graph: network.graph, backend: OneDNNBackend())
        #expect(throws: TFLiteExportError.calibration(reason: "no calibration image was run")) { try calibrator.calibration() }
    }
}

private extension MobileNetV2Configuration {
    var withoutTop: MobileNetV2Configuration {
        MobileNetV2Configuration(alpha: alpha, inputHeight: inputHeight, inputWidth: inputWidth, includeTop: false, pooling: .avg)
    }
}
