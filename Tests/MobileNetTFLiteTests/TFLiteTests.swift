import Foundation
import MobileNet
import MobileNetTestSupport
import MobileNetTFLite
import Testing

/// The Coral / TF-slim quantization-aware MobileNetV2 (uint8, 1001 classes) in the shared data.
private let coral = TestData.shared("data/tflite/mobilenet_v2_1.0_224_quant.tflite")

/// LiteRT's outputs on it (scripts/fixtures/make_tflite_fixtures.py).
private struct CoralFixture: Decodable {
    struct Photo: Decodable {
        var input_sha256: String
        var top5_builtin: [Int]
        var output_builtin: [Int32]
        var output_xnnpack: [Int32]
    }
    var photos: [String: Photo]

    static func load() throws -> CoralFixture {
        try JSONDecoder().decode(CoralFixture.self, from: Data(contentsOf: TestData.fixtures.appendingPathComponent("tflite/coral-litert.json")))
    }
}

/// The uint8 input the fixture fed LiteRT: the photo's Keras tensor mapped back to pixels.
private func pixels(_ id: String) throws -> [Int32] {
    let tensor = try NPY.read(contentsOf: TestData.shared("data/reference/\(id).input.npy"))
    return tensor.scalars.map { x in Int32(min(max(((Double(x) + 1) * 127.5 + 0.5).rounded(.down), 0), 255)) }
}

@Suite("TFLite requantization arithmetic (TFLite's reference rounding)")
struct QuantizedArithmeticTests {
    @Test("QuantizeMultiplier: mantissa in Q0.31 and shift, as TFLite's quantization_util")
    func quantizeMultiplier() {
        #expect(QuantizedArithmetic.quantizeMultiplier(0.5) == .init(multiplier: 1 << 30, shift: 0))
        #expect(QuantizedArithmetic.quantizeMultiplier(1.0) == .init(multiplier: 1 << 30, shift: 1))
        #expect(QuantizedArithmetic.quantizeMultiplier(0.25) == .init(multiplier: 1 << 30, shift: -1))
        #expect(QuantizedArithmetic.quantizeMultiplier(0) == .init(multiplier: 0, shift: 0))
        // A mantissa that rounds up to 2^31 is halved and the shift raised.
        let nearlyOne = QuantizedArithmetic.quantizeMultiplier(0.99999999999)
        #expect(nearlyOne == .init(multiplier: 1 << 30, shift: 1))
        // Below 2^-32 the multiplier flushes to zero.
        #expect(QuantizedArithmetic.quantizeMultiplier(1e-12) == .init(multiplier: 0, shift: 0))
    }

    @Test("rounding: high multiplication saturates, division by a power of two rounds half away from zero")
    func rounding() {
        #expect(QuantizedArithmetic.saturatingRoundingDoublingHighMul(Int32.min, Int32.min) == Int32.max)
        #expect(QuantizedArithmetic.saturatingRoundingDoublingHighMul(1 << 30, 1 << 30) == 1 << 29)
        #expect(QuantizedArithmetic.roundingDivideByPOT(5, 1) == 3)
        #expect(QuantizedArithmetic.roundingDivideByPOT(-5, 1) == -3)
        #expect(QuantizedArithmetic.roundingDivideByPOT(-5, 2) == -1)
        #expect(QuantizedArithmetic.roundingDivideByPOT(6, 2) == 2)
        // 1000 * 0.3 = 300; -1001 * 0.3 = -300.3 becomes -301: TFLite rounds twice (the high
        // multiplication to -601, then -601 / 2 = -300.5 away from zero), and so must we.
        let m = QuantizedArithmetic.quantizeMultiplier(0.3)
        #expect(m == .init(multiplier: 1_288_490_189, shift: -1))
        #expect(QuantizedArithmetic.multiply(1000, by: m) == 300)
        #expect(QuantizedArithmetic.multiply(-1001, by: m) == -301)
    }

    @Test("ReLU6 becomes a clamp in the quantized domain")
    func activationRange() {
        let range = QuantizedArithmetic.activationRange(.relu6, scale: 0.0235285, zeroPoint: 0, typeRange: 0...255)
        #expect(range == 0...255) // 6 / 0.0235285 = 255.0
        #expect(QuantizedArithmetic.activationRange(.relu6, scale: 0.05, zeroPoint: 10, typeRange: 0...255) == 10...130)
        #expect(QuantizedArithmetic.activationRange(.none, scale: 0.05, zeroPoint: 10, typeRange: -128...127) == -128...127)
    }
}

@Suite("TFLite files: reading, recognising MobileNetV2, integer kernels against LiteRT", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct TFLiteModelTests {
    @Test("the Coral file reads: 66 operators, uint8 input 1x224x224x3, 1001 outputs, recognised as MobileNetV2 1.0")
    func reads() throws {
        let model = try TFLiteModel(contentsOf: coral)
        #expect(model.operators.count == 66)
        let input = model.tensors[model.inputs[0]]
        #expect(input.type == .uint8 && input.shape == [1, 224, 224, 3])
        #expect(input.quantization?.scales == [0.0078125] && input.quantization?.zeroPoints == [128])
        #expect(model.tensors[model.outputs[0]].shape == [1, 1001])
        let network = try TFLiteMobileNetV2(model: model)
        #expect(network.configuration.alpha == 1.0 && network.configuration.inputHeight == 224)
        #expect(network.quantizationKind == .fullInteger)
        #expect(network.classes == 1001 && network.hasSoftmax)
        #expect(network.backboneWeights.layers.count == 52 * 2) // 52 convolutions, each with its identity BatchNorm
    }

    @Test("TFLite Support metadata: the packed label file and the normalisation, used by ModelFile")
    func metadata() async throws {
        let metadata = try #require(try TFLiteModel(contentsOf: coral).supportMetadata())
        #expect(metadata.labelsFile != nil)
        let mean = try #require(metadata.mean), std = try #require(metadata.std)
        #expect(PixelScaling(normalizationMean: mean, std: std) == .minusOneToOne)
        let model = try await ModelFile.open(coral, backend: OneDNNBackend())
        #expect(model.classes[1].name == "tench, Tinca tinca" && model.classes[1].synset == "n01440764")
        #expect(model.preprocessingConfiguration?.scaling == .minusOneToOne)
        // --labels replaces the packed names; a wrong count names the file.
        let dir = try TestData.temporaryDirectory()
        let labels = dir.appendingPathComponent("labels.txt")
        try Data(([0xEF, 0xBB, 0xBF] + Array(((0..<1001).map { "c\($0)" }.joined(separator: "\r\n") + "\r\n").utf8))).write(to: labels)
        let names = try ModelFile.labels(contentsOf: labels)
        #expect(names.count == 1001 && names[0] == "c0" && names[1000] == "c1000")
        let relabelled = try await ModelFile.open(coral, options: ModelOpenOptions(classNames: names), backend: OneDNNBackend())
        #expect(relabelled.classes[5].name == "c5")
        #expect(relabelled.classes.allSatisfy { $0.synset == nil }) // not ImageNet's labels: no synsets
        let imageNetLabels = try ModelFile.labels(contentsOf: TestData.shared("data/tflite/imagenet_labels.txt"))
        let labelled = try await ModelFile.open(coral, options: ModelOpenOptions(classNames: imageNetLabels), backend: OneDNNBackend())
        #expect(labelled.classes[286].synset == "n02124075" && labelled.classes[286].name == "Egyptian cat")
        await #expect(throws: ModelFileError.self) {
            try await ModelFile.open(coral, options: ModelOpenOptions(classNames: Array(names.prefix(1000))), backend: OneDNNBackend())
        }
        try Data().write(to: labels)
        #expect(throws: ModelFileError.classNames(path: labels.path, reason: "the label file holds no names")) { try ModelFile.labels(contentsOf: labels) }
        // Another scaling: the integer input is then the scaled image quantized, not the raw pixels.
        let zeroToOne = try await ModelFile.open(coral, options: ModelOpenOptions(preprocessing: PreprocessingConfiguration(scaling: .zeroToOne)), backend: OneDNNBackend())
        let backend = try #require(zeroToOne.network.backend as? TFLiteIntegerBackend)
        #expect(backend.inputMapping == .quantize(scale: 0.0078125, zeroPoint: 128, range: 0...255))
    }

    @Test("predict and evaluate give a quantized file's own integer probabilities (a full pass, as classify), not a float head on cached embeddings")
    func predictUsesIntegerHead() async throws {
        let model = try await ModelFile.open(coral, backend: OneDNNBackend())
        #expect(!model.headRunsOnEmbeddings)
        let photo = TestData.shared("data/images/cat.jpg")
        let runtime = RuntimeOptions(backend: OneDNNBackend(), batchSize: 4, decodeThreads: 0)
        let (predictions, failures) = try model.predict([photo], k: 3, store: nil, runtime: runtime)
        #expect(failures.isEmpty)
        var classify: [Float] = []
        try ImageBatchPipeline(model: model.network, preprocessor: model.preprocessor(), runtime: runtime).run([photo]) { classify = $0.outputs[0] }
        let top = try #require(predictions.first?.classes.first)
        #expect(top.className == "Egyptian cat")
        #expect(Float(top.probability) == classify.max())
        #expect((top.probability * 256).rounded() == top.probability * 256) // a uint8 output, dequantized
    }

    @Test("NormalizationOptions map to the named scalings when they match exactly")
    func normalization() {
        #expect(PixelScaling(normalizationMean: [0], std: [255]) == .zeroToOne)
        #expect(PixelScaling(normalizationMean: [0, 0, 0], std: [1, 1, 1]) == PixelScaling.none)
        #expect(PixelScaling(normalizationMean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]) != nil)
        #expect(PixelScaling(normalizationMean: [1, 2], std: [1]) == nil)
        #expect(PixelScaling(normalizationMean: [0], std: [0]) == nil)
    }

    @Test("a damaged file is a typed error naming it, never a crash (truncated, bytes flipped)")
    func hostile() throws {
        let bytes = try Data(contentsOf: coral)
        // (The file ends with a ZIP of its label file, outside the flatbuffer: cut inside it.)
        for cut in [0, 7, 8, 100, bytes.count / 2] {
            #expect(throws: TFLiteError.self) { try TFLiteModel(bytes: bytes.prefix(cut), path: "cut.tflite") }
        }
        var random = SystemRandomNumberGenerator()
        // Flip bytes where the flatbuffer's tables and vectors are: the start, and the end before the label ZIP.
        let regions = [0..<60_000, (bytes.count - 120_000)..<(bytes.count - 22_000)]
        for _ in 0..<150 {
            var copy = bytes
            let region = regions.randomElement(using: &random)!
            for _ in 0..<4 { copy[Int.random(in: region, using: &random)] = UInt8.random(in: 0...255, using: &random) }
            switch Result(catching: { () throws(TFLiteError) in try TFLiteModel(bytes: copy, path: "flipped.tflite") }) {
            case .success(let model):
                _ = try? TFLiteMobileNetV2(model: model)
                _ = try? QuantizedProgram(model: model)
            case .failure(let error):
                #expect(error.description.hasPrefix("flipped.tflite: "))
            }
        }
        var wrongIdentifier = bytes
        wrongIdentifier[4] = UInt8(ascii: "X")
        #expect(throws: TFLiteError.damaged(path: "x.tflite", reason: "no TFLite file identifier (\"TFL3\" at byte 4)")) {
            try TFLiteModel(bytes: wrongIdentifier, path: "x.tflite")
        }
    }

    @Test("integer kernels equal LiteRT's built-in kernels bit for bit, and XNNPACK's within 1, on the shared photos")
    func parityWithLiteRT() throws {
        let fixture = try CoralFixture.load()
        let model = try TFLiteModel(contentsOf: coral)
        let program = try QuantizedProgram(model: model)
        let output = model.outputs[0]
        let ids = fixture.photos.keys.sorted()
        var equal = 0, xnnpackWithinOne = 0, total = 0, sameTop = 0
        for id in ids {
            let expected = fixture.photos[id]!
            let ours = try program.run(.quantized(try pixels(id)), keep: [output]).quantized[output]!
            #expect(ours.count == 1001)
            for (i, a) in ours.enumerated() {
                total += 1
                if a == expected.output_builtin[i] { equal += 1 }
                if abs(a - expected.output_xnnpack[i]) <= 1 { xnnpackWithinOne += 1 }
            }
            let top = ours.indices.max { ours[$0] < ours[$1] || (ours[$0] == ours[$1] && $0 > $1) }!
            if top == expected.top5_builtin[0] { sameTop += 1 }
        }
        #expect(equal == total, "equal to LiteRT's built-in kernels: \(equal)/\(total)")
        #expect(Double(xnnpackWithinOne) >= 0.99 * Double(total), "within 1 of LiteRT with XNNPACK: \(xnnpackWithinOne)/\(total)")
        #expect(sameTop == ids.count)
    }

    @Test("XNNPACK's operators: within 1 of LiteRT with XNNPACK in at least 99% of outputs, the same top-1")
    func xnnpackParity() throws {
        let fixture = try CoralFixture.load()
        let model = try TFLiteModel(contentsOf: coral)
        let program = try QuantizedProgram(model: model)
        let fast = try #require(XNNPACKProgram(model: model, program: program, threads: 2))
        #expect(fast.xnnpackOperators >= 60)
        let ids = fixture.photos.keys.sorted()
        let output = model.outputs[0]
        let results = try fast.run(try ids.map { .quantized(try pixels($0)) }, keep: [output])
        var withinOne = 0, equalXNNPACK = 0, withinOneBuiltin = 0, total = 0, sameTop = 0, maxDiff: Int32 = 0
        for (id, result) in zip(ids, results) {
            let ours = try #require(result.quantized[output])
            let expected = fixture.photos[id]!
            for (j, v) in ours.enumerated() {
                total += 1
                if v == expected.output_xnnpack[j] { equalXNNPACK += 1 }
                if abs(v - expected.output_xnnpack[j]) <= 1 { withinOne += 1 }
                if abs(v - expected.output_builtin[j]) <= 1 { withinOneBuiltin += 1 }
                maxDiff = max(maxDiff, abs(v - expected.output_xnnpack[j]))
            }
            let top = ours.indices.max { ours[$0] < ours[$1] || (ours[$0] == ours[$1] && $0 > $1) }!
            if top == expected.top5_builtin[0] { sameTop += 1 }
        }
        print("XNNPACK vs LiteRT XNNPACK: equal \(equalXNNPACK)/\(total), within 1 \(withinOne)/\(total), max \(maxDiff); within 1 of built-in \(withinOneBuiltin)/\(total); top-1 \(sameTop)/\(ids.count)")
        #expect(Double(withinOne) >= 0.99 * Double(total))
        #expect(sameTop == ids.count)
    }

    @Test("ModelFile opens the Coral file: ImageNet classes after background with synsets, the integer backend, embeddings")
    func modelFile() async throws {
        let model = try await ModelFile.open(coral, backend: OneDNNBackend())
        #expect(model.kind == .tflite)
        #expect(model.classes.count == 1001 && model.classes[0].name == "background")
        #expect(model.network.backendName == "tflite-xnnpack")
        let id = "cat"
        let input = try NPY.read(contentsOf: TestData.shared("data/reference/\(id).input.npy"))
        let outputs = try model.run(Tensor(shape: [1, 224, 224, 3], scalars: input.scalars))
        let probabilities = try #require(outputs.probabilities?.first)
        let fixture = try CoralFixture.load().photos[id]!
        let top = model.topK(probabilities, k: 1)[0]
        #expect(top.index == fixture.top5_builtin[0])
        // The probabilities are the uint8 output dequantized (scale 1/256): XNNPACK's, LiteRT's
        // default (equal on AVX2; within a step allows for XNNPACK's kernels of another CPU).
        #expect(probabilities.enumerated().allSatisfy { abs($0.element - Float(fixture.output_xnnpack[$0.offset]) / 256) <= 1.0 / 256 })
        #expect(top.synset == ImageNetClasses.all[top.index - 1].synset)
        #expect(outputs.embeddings[0].count == 1280)
        // A batch runs on one single-threaded lane per thread: the same values as one by one.
        let other = try NPY.read(contentsOf: TestData.shared("data/reference/bird.input.npy")).scalars
        let pair = try model.run(Tensor(shape: [3, 224, 224, 3], scalars: input.scalars + other + input.scalars))
        #expect(pair.probabilities?[0] == probabilities && pair.probabilities?[2] == probabilities)
        #expect(pair.probabilities?[1] == (try model.run(Tensor(shape: [1, 224, 224, 3], scalars: other)).probabilities?[0]))
        let embedder = try await ModelFile.open(coral, options: ModelOpenOptions(embeddingOnly: true), backend: OneDNNBackend())
        let embedding = try embedder.run(Tensor(shape: [1, 224, 224, 3], scalars: input.scalars)).embeddings[0]
        #expect(embedding == outputs.embeddings[0])
        #expect(!embedder.isClassifier)
    }
}

@Suite("int8 path against LiteRT (a tiny TF2 full-integer model, no shared data)")
struct TinyInt8Tests {
    struct Fixture: Decodable {
        var inputs: [[Int32]]
        var output_builtin: [[Int32]]
        var output_xnnpack: [[Int32]]
    }

    @Test("per-channel int8 convolutions, QUANTIZE uint8 to int8, MEAN, FULLY_CONNECTED and SOFTMAX equal LiteRT's built-in kernels")
    func parity() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: TestData.fixtures.appendingPathComponent("tflite/tiny-int8-litert.json")))
        let model = try TFLiteModel(contentsOf: TestData.fixtures.appendingPathComponent("fuzz-corpus/tflite/tiny-int8.tflite"))
        let program = try QuantizedProgram(model: model)
        let output = model.outputs[0]
        var equal = 0, withinOne = 0, total = 0
        for (i, input) in fixture.inputs.enumerated() {
            let ours = try #require(try program.run(.quantized(input), keep: [output]).quantized[output])
            for (j, v) in ours.enumerated() {
                total += 1
                if v == fixture.output_builtin[i][j] { equal += 1 }
                if abs(v - fixture.output_xnnpack[i][j]) <= 1 { withinOne += 1 }
            }
        }
        #expect(total == 60)
        #expect(equal == total, "equal to LiteRT's built-in kernels: \(equal)/\(total)")
        #expect(withinOne == total, "within 1 of LiteRT with XNNPACK: \(withinOne)/\(total)")
    }

    @Test("quantization scales no integer kernel can take are refused when compiled (they crashed XNNPACK and the reference)")
    func extremeScales() throws {
        let url = TestData.fixtures.appendingPathComponent("fuzz-corpus/tflite/tiny-int8.tflite")
        let bytes = try Data(contentsOf: url)
        let input = try TFLiteModel(bytes: bytes, path: "tiny.tflite")
        let scale = input.tensors[input.inputs[0]].quantization!.scales[0]
        let pattern = withUnsafeBytes(of: scale.bitPattern.littleEndian) { Data($0) }
        for hostile: Float in [1e8, 1e-12] {
            var copy = bytes
            var replaced = 0
            var start = copy.startIndex
            while let range = copy[start...].firstRange(of: pattern) {
                copy.replaceSubrange(range, with: withUnsafeBytes(of: hostile.bitPattern.littleEndian) { Data($0) })
                replaced += 1
                start = range.upperBound
            }
            #expect(replaced >= 1)
            let model = try TFLiteModel(bytes: copy, path: "scale.tflite")
            #expect(throws: TFLiteError.self) { try QuantizedProgram(model: model) }
        }
    }
}

@Suite("Keras MobileNetV2 converted by TensorFlow (alpha 0.35, 96x96, 5 classes; float16 and int8 files, no shared data)")
struct ConvertedMobileNetV2Tests {
    struct Fixture: Decodable {
        var inputs: [[Float]]
        var keras_probabilities: [[Float]]
        var float16_builtin: [[Float]]
        var int8_builtin: [[Int32]]
        var int8_xnnpack: [[Int32]]
    }

    static let directory = TestData.fixtures.appendingPathComponent("tflite")
    static func fixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: directory.appendingPathComponent("mnv2-035-96-litert.json")))
    }

    @Test("the float16 file is recognised (DEQUANTIZE of the weights, MEAN, FULLY_CONNECTED) and runs on oneDNN as LiteRT does")
    func float16() async throws {
        let url = Self.directory.appendingPathComponent("mnv2-035-96-float16.tflite")
        let recognised = try TFLiteMobileNetV2(model: try TFLiteModel(contentsOf: url))
        #expect(recognised.configuration.alpha == 0.35 && recognised.configuration.inputHeight == 96)
        #expect(recognised.quantizationKind == .float16Weights)
        #expect(recognised.classes == 5 && recognised.hasSoftmax)
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(model.kind == .tflite && model.classNames == ["class0", "class1", "class2", "class3", "class4"])
        #expect(model.network.backendName == "onednn")
        let fixture = try Self.fixture()
        var worst: Float = 0
        for (input, expected) in zip(fixture.inputs, fixture.float16_builtin) {
            let probabilities = try #require(try model.run(Tensor(shape: [1, 96, 96, 3], scalars: input)).probabilities?.first)
            worst = max(worst, zip(probabilities, expected).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-4, "max |difference| from LiteRT: \(worst)")
    }

    @Test("the int8 file (per-channel weights, uint8 input and output) runs in integer arithmetic equal to LiteRT's built-in kernels")
    func int8() async throws {
        let url = Self.directory.appendingPathComponent("mnv2-035-96-int8.tflite")
        let file = try TFLiteModel(contentsOf: url)
        let recognised = try TFLiteMobileNetV2(model: file)
        #expect(recognised.quantizationKind == .fullInteger && recognised.classes == 5)
        let program = try QuantizedProgram(model: file)
        let input = file.tensors[file.inputs[0]]
        let (scale, zero) = (input.quantization!.scales[0], Int32(input.quantization!.zeroPoints[0]))
        let fixture = try Self.fixture()
        var equal = 0, withinOne = 0, total = 0
        for (i, x) in fixture.inputs.enumerated() {
            // Quantized as the fixture script fed LiteRT: round(x / scale) + zero point.
            let q = x.map { min(max(Int32(($0 / scale).rounded(.toNearestOrAwayFromZero)) + zero, 0), 255) }
            let ours = try #require(try program.run(.quantized(q), keep: [file.outputs[0]]).quantized[file.outputs[0]])
            for (j, v) in ours.enumerated() {
                total += 1
                if v == fixture.int8_builtin[i][j] { equal += 1 }
                if abs(v - fixture.int8_xnnpack[i][j]) <= 1 { withinOne += 1 }
            }
        }
        #expect(equal == total, "equal to LiteRT's built-in kernels: \(equal)/\(total)")
        #expect(withinOne == total, "within 1 of LiteRT with XNNPACK: \(withinOne)/\(total)")
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(model.network.backendName == "tflite-xnnpack" && model.embeddingWidth == 1280)
    }
}
