import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// The one opener (`ModelFile`) and the one runnable model value (`RunnableModel`), issue 28.
@Suite struct RunnableModelTests {
    static let directory = TestData.fixtures.appendingPathComponent("keras-transfer")

    /// Both Keras layouts of the transfer model open as what they are, at the input size their
    /// config records (96x96: the whole-model .h5's `model_config` used to be ignored, so it ran
    /// at 224 and gave other probabilities), and the one pass gives Keras's probabilities.
    @Test(arguments: ["transfer_a035_96.keras", "transfer_a035_96.h5"])
    func transferModelOpensAtItsRecordedSize(file: String) async throws {
        let url = Self.directory.appendingPathComponent(file)
        #expect(try ModelFile.kind(of: url) == .kerasModel)
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(model.kind == .kerasModel && model.isClassifier)
        #expect(model.configuration.inputHeight == 96 && model.configuration.inputWidth == 96 && model.configuration.alpha == 0.35)
        #expect(model.classNames == ["class0", "class1", "class2", "class3", "class4"])
        let outputs = try model.run(FormulaWeights.input(seed: 100, batch: 2, height: 96, width: 96))
        let probabilities = try #require(outputs.probabilities)
        let expected = try NPY.read(contentsOf: Self.directory.appendingPathComponent("transfer_a035_96.probs.npy"))
        let diff = zip(probabilities.flatMap { $0 }, expected.scalars).map { abs($0 - $1) }.max() ?? 1
        print("\(file): opened model probabilities max |diff| vs Keras = \(diff)")
        #expect(diff <= 1e-4)
        // The head on the embeddings (the cache's path) gives the graph's probabilities.
        let cached = try model.probabilities(embeddings: outputs.embeddings)
        let pathDiff = zip(cached.flatMap { $0 }, probabilities.flatMap { $0 }).map { abs($0 - $1) }.max() ?? 1
        #expect(pathDiff <= 1e-5, "head on cached embeddings vs in the graph: \(pathDiff)")
        #expect(model.topK(probabilities[0], k: 1).first?.name == "class4")
        // What the file records cannot be overridden silently.
        await #expect(throws: ModelFileError.conflictingOption(path: url.path, option: "input size", recorded: "96x96", given: "224x224")) {
            _ = try await ModelFile.open(url, options: ModelOpenOptions(inputSize: (224, 224)), backend: OneDNNBackend())
        }
        await #expect(throws: ModelError.self) {
            _ = try await ModelFile.open(url, options: ModelOpenOptions(alpha: 1.0), backend: OneDNNBackend())
        }
    }

    @Test func classNamesAreCheckedOnce() async throws {
        let url = Self.directory.appendingPathComponent("transfer_a035_96.keras")
        let names = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
        let model = try await ModelFile.open(url, options: ModelOpenOptions(classNames: names), backend: ReferenceBackend())
        #expect(model.classNames == names)
        await #expect(throws: ModelFileError.self) {
            _ = try await ModelFile.open(url, options: ModelOpenOptions(classNames: ["a", "b"]), backend: ReferenceBackend())
        }
        await #expect(throws: ModelFileError.classNames(path: url.path, reason: "the class name 'a' appears twice")) {
            _ = try await ModelFile.open(url, options: ModelOpenOptions(classNames: ["a", "b", "a", "c", "d"]), backend: ReferenceBackend())
        }
        #expect(throws: ModelFileError.self) { _ = try model.withClassNames(["x", "x", "y", "z", "w"]) }
        await #expect(throws: ModelFileError.classNames(path: url.path, reason: "class name 1 is empty")) {
            _ = try await ModelFile.open(url, options: ModelOpenOptions(classNames: ["a", " ", "b", "c", "d"]), backend: ReferenceBackend())
        }
        #expect(try model.withClassNames(["v", "w", "x", "y", "z"]).classNames == ["v", "w", "x", "y", "z"])
    }

    /// A `train` model file records its class names and backbone: other names are refused, and
    /// a backbone configuration it cannot run is named as the file's fault, before any weights
    /// are looked for.
    @Test func trainedModelFilesKeepWhatTheyRecord() async throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var random = SeededRandom(seed: 2)
        let head = ClassifierHead(inputs: 1280, classes: 2, random: &random).roundedToFloat32()
        func write(alpha: Double, name: String) throws -> URL {
            let model = ClassifierModel(classNames: ["cat", "dog"], backbone: BackboneIdentity(alpha: alpha, inputHeight: 224, inputWidth: 224, weightsSHA256: "00"),
                                        backboneWeightsPath: nil, preprocessing: .standard, head: head, training: nil, history: [], bestEpoch: nil, validation: nil)
            let url = dir.appendingPathComponent(name)
            try model.write(to: url, overwrite: true)
            return url
        }
        let good = try write(alpha: 1.0, name: "m.json")
        await #expect(throws: ModelFileError.conflictingOption(path: good.path, option: "class names", recorded: "cat,dog", given: "a,b")) {
            _ = try await ModelFile.open(good, options: ModelOpenOptions(classNames: ["a", "b"]), backend: ReferenceBackend())
        }
        let bad = try write(alpha: -1, name: "bad.json")
        do {
            _ = try await ModelFile.open(bad, backend: ReferenceBackend())
            Issue.record("alpha -1 was accepted")
        } catch {
            #expect("\(error)".hasPrefix(bad.path) && "\(error)".contains("alpha"), "\(error)")
        }
    }

    @Test func kindsAreDetectedFromTheBytes() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let json = dir.appendingPathComponent("model.h5")
        try Data("\u{FEFF}  {\"format\": \"swift-mobilenet-classifier\"}".utf8).write(to: json)
        #expect(try ModelFile.kind(of: json) == .trainedModel)
        let text = dir.appendingPathComponent("notes.keras")
        try Data("hello".utf8).write(to: text)
        #expect(throws: ModelFileError.self) { try ModelFile.kind(of: text) }
        let empty = dir.appendingPathComponent("empty.h5")
        try Data().write(to: empty)
        #expect(throws: ModelFileError.unknownKind(path: empty.path, reason: "the file is empty")) { try ModelFile.kind(of: empty) }
        #expect(throws: ModelFileError.self) { try ModelFile.kind(of: dir) }
        #expect(throws: ModelFileError.unreadable(path: dir.appendingPathComponent("none").path, reason: "no such file")) {
            try ModelFile.kind(of: dir.appendingPathComponent("none"))
        }
    }

    @Test("a model file over 256 MiB is refused before it is read (issue 32: 1.5 GB was read first)")
    func hugeModelFilesAreRefusedUnread() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let huge = dir.appendingPathComponent("huge.json")
        try Data("{\"format\": \"swift-mobilenet-classifier\"".utf8).write(to: huge)
        let handle = try FileHandle(forWritingTo: huge)
        try handle.truncate(atOffset: 300 << 20)  // sparse: no 300 MB written
        try handle.close()
        #expect(throws: ClassifierModelError.unreadable(path: huge.path, message: "\(300 << 20) bytes, more than the 256 MiB a model file can have")) {
            try ClassifierModel.read(contentsOf: huge)
        }
    }

    @Test(.enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func sharedWeightFilesOpenAsImageNetClassifierAndEmbedder() async throws {
        let top = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5")
        let noTop = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5")
        let classifier = try await ModelFile.open(top, backend: OneDNNBackend())
        #expect(classifier.kind == .kerasWeights && classifier.classes.count == 1000)
        #expect(classifier.classes[285] == ModelClass(name: "Egyptian_cat", synset: "n02124075"))
        let embedder = try await ModelFile.open(noTop, backend: OneDNNBackend())
        #expect(embedder.kind == .kerasWeightsNoTop && !embedder.isClassifier && embedder.classes.isEmpty)
        // The ImageNet head read back from the graph is the file's `predictions` layer.
        let head = try #require(classifier.head)
        #expect(head.layers.map(\.name) == ["predictions"] && head.classes == 1000 && head.endsWithSoftmax)
        // One pass: the classifier's embedding is the embedder's.
        let input = FormulaWeights.input(seed: 3, batch: 1, height: 224, width: 224)
        let a = try classifier.run(input), b = try embedder.run(input)
        #expect(zip(a.embeddings[0], b.embeddings[0]).map { abs($0 - $1) }.max() ?? 1 <= 1e-5)
        #expect(b.probabilities == nil)
        // A `.keras` archive records its input size (224): a classifier keeps it, refusing
        // another; the embedding network alone runs at any size.
        let archive = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.keras")
        await #expect(throws: ModelFileError.conflictingOption(path: archive.path, option: "input size", recorded: "224x224", given: "128x128")) {
            _ = try await ModelFile.open(archive, options: ModelOpenOptions(inputSize: (128, 128)), backend: OneDNNBackend())
        }
        let small = try await ModelFile.open(archive, options: ModelOpenOptions(inputSize: (128, 128), embeddingOnly: true), backend: OneDNNBackend())
        #expect(small.configuration.inputHeight == 128 && !small.isClassifier)
    }

    /// A head with hidden ReLU layers runs inside the graph (on oneDNN and the reference backend)
    /// and on embeddings with the same numbers.
    @Test func headInTheGraphEqualsHeadOnEmbeddings() throws {
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 64, inputWidth: 64, includeTop: false, pooling: .avg)
        let weights = try FormulaWeights.weights(for: configuration, seed: 7)
        var random = SeededRandom(seed: 5)
        var classifierHead = ClassifierHead(inputs: 1280, classes: 3, hidden: 16, dropout: 0.2, random: &random)
        classifierHead = classifierHead.roundedToFloat32()
        let head = try classifierHead.denseHead(source: "test")
        #expect(head.layers.map(\.activation) == [.relu, .softmax] && head.layers.map(\.name) == ["dense", "dense_1"])
        let input = FormulaWeights.input(seed: 9, batch: 3, height: 64, width: 64)
        for backend in [ReferenceBackend(), OneDNNBackend()] as [any InferenceBackend] {
            let network = try MobileNetV2(configuration: configuration, weights: weights, backend: backend).withHead(head)
            #expect(network.head == head)
            let out = try network.forward(input)
            let inGraph = try #require(out.probabilities)
            let onEmbeddings = try head.probabilities(embeddings: out.embedding)
            let diff = zip(inGraph.scalars, onEmbeddings.scalars).map { abs($0 - $1) }.max() ?? 1
            #expect(diff <= 1e-6, "\(backend.name): \(diff)")
            // Each row is the Double training head's answer, to float rounding.
            let double = classifierHead.probabilities(Matrix(stacking: out.embedding.rows))
            #expect(zip(double.values, inGraph.scalars).map { abs($0 - Double($1)) }.max() ?? 1 <= 1e-5)
        }
    }

    /// Non-finite head weights are refused when the head is made (they gave one answer for every
    /// image), naming the layer.
    @Test func nonFiniteHeadsAreRefused() throws {
        var random = SeededRandom(seed: 1)
        let good = ClassifierHead(inputs: 4, classes: 2, dropout: 0, random: &random)
        var huge = good
        if case .dense(var d) = huge.layers[0] { d.kernel[0] = 1e39; huge.layers[0] = .dense(d) }
        #expect(throws: ModelError.invalidWeights(layer: "dense", variable: "kernel", reason: "value 0 is inf", source: "m.json")) {
            _ = try huge.denseHead(source: "m.json")
        }
        // Finite but overflowing: every kernel value 3e38 (issue 32: every image got one answer).
        let overflowing = DenseHead.Layer(name: "dense", kernel: Tensor(shape: [1280, 5], scalars: [Float](repeating: 3e38, count: 6400)),
                                          bias: [Float](repeating: 0, count: 5), activation: .softmax)
        #expect(throws: ModelError.self) { _ = try DenseHead(layers: [overflowing], source: "x") }
        let nanBias = DenseHead.Layer(name: "predictions", kernel: Tensor(shape: [4, 2], scalars: [Float](repeating: 0, count: 8)), bias: [0, .nan], activation: .softmax)
        #expect(throws: ModelError.self) { _ = try DenseHead(layers: [nanBias], source: "x") }
        let misplaced = DenseHead.Layer(name: "dense", kernel: Tensor(shape: [4, 2], scalars: [Float](repeating: 0, count: 8)), bias: [0, 0], activation: .softmax)
        #expect(throws: ModelError.self) { _ = try DenseHead(layers: [misplaced, nanBias], source: "x") }
        #expect(try good.denseHead(source: "ok").classes == 2)
    }

    @Test func rankingIsOneRule() {
        #expect(ClassRanking.topK([0.1, 0.4, 0.4, 0.1], k: 3) == [1, 2, 0])
        #expect(ClassRanking.topK([.nan, 0.2, 0.1], k: 3) == [1, 2, 0])
        #expect(ClassRanking.topK([0.5], k: 9) == [0] && ClassRanking.topK([0.5], k: -1).isEmpty)
        #expect(ImageNetClasses.topK([Float](repeating: 0.001, count: 1000), k: 2).map(\.index) == [0, 1])
    }
}
