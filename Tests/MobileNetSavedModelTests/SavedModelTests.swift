import Foundation
import MobileNet
import MobileNetSavedModel
import MobileNetTestSupport
import Testing

/// The Keras 3 export fixture (scripts/fixtures/make_savedmodel_fixtures.py): MobileNetV2 alpha
/// 0.35 at 96x96 → pooling → Dropout → Dense(8, relu) → Dense(5, softmax), in TF Serving's
/// layout (version folder 1), with TensorFlow's outputs for 4 random inputs.
private let base = TestData.fixtures.appendingPathComponent("savedmodel/keras3-export")
private let version1 = base.appendingPathComponent("1")

private struct Fixture: Decodable {
    var inputs: [[Float]]
    var outputs: [[Float]]
    static func load(_ name: String = "keras3-export") throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: TestData.fixtures.appendingPathComponent("savedmodel/\(name).json")))
    }
}

/// A copy of the fixture folder to damage.
private func copy() throws -> URL {
    let dir = try TestData.temporaryDirectory().appendingPathComponent("model")
    try FileManager.default.copyItem(at: version1, to: dir)
    return dir
}

@Suite("SavedModel folders: Keras 3 exports read through swift-protobuf and the tensor bundle")
struct SavedModelTests {
    @Test("the tensor bundle index: header, entries, the object graph, checked tensors")
    func bundle() throws {
        let bundle = try TensorBundle(indexURL: version1.appendingPathComponent("variables/variables.index"))
        #expect(bundle.shardCount == 1)
        #expect(bundle.keys.contains("_CHECKPOINTABLE_OBJECT_GRAPH"))
        #expect(bundle.keys.count > 500)
        let key = try #require(bundle.keys.first { $0.hasPrefix("variables/") })
        let (shape, values) = try bundle.floats(key)
        #expect(shape == bundle.shape(of: key) && values.count == shape.reduce(1, *))
    }

    @Test("the folder: serving signature input, variables named by Keras layer")
    func folder() throws {
        let folder = try SavedModelFolder(contentsOf: version1)
        #expect(folder.inputShape == [-1, 96, 96, 3])
        #expect(folder.variables.contains { $0.name == "Conv1/kernel" && $0.shape == [3, 3, 3, 16] })
        #expect(folder.variables.contains { $0.name == "block_16_depthwise/kernel" })
        #expect(Set(folder.variables.map(\.name)).count == folder.variables.count)
    }

    @Test("recognised as MobileNetV2 0.35 with a Dense(8, relu) → Dense(5, softmax) head; TensorFlow's outputs within 1e-5")
    func recognised() throws {
        let model = try SavedModelMobileNetV2(folder: try SavedModelFolder(contentsOf: version1))
        #expect(model.inputSize?.height == 96 && model.inputSize?.width == 96)
        #expect(model.inputScaling.isIdentity && !model.isTFSlimModule)
        let head = try #require(model.head)
        #expect(head.layers.map(\.activation) == [.relu, .softmax] && head.layers.map(\.units) == [8, 5])
        #expect(model.backboneWeights.widthMultiplier() == 0.35)
        let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 96, inputWidth: 96, includeTop: false, pooling: .avg)
        let network = try MobileNetV2(configuration: configuration, weights: model.backboneWeights, backend: OneDNNBackend()).withHead(head)
        let fixture = try Fixture.load()
        var worst: Float = 0
        for (input, expected) in zip(fixture.inputs, fixture.outputs) {
            let output = try network(Tensor(shape: [1, 96, 96, 3], scalars: input)).scalars
            worst = max(worst, zip(output, expected).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-5, "max |difference| from TensorFlow: \(worst)")
    }

    @Test("damaged folders are typed errors naming the file: cut index, flipped tensor bytes, no variables, garbage graph")
    func damaged() throws {
        let cut = try copy()
        let index = cut.appendingPathComponent("variables/variables.index")
        let bytes = try Data(contentsOf: index)
        for length in [0, 20, 47, bytes.count / 2, bytes.count - 1] {
            try bytes.prefix(length).write(to: index)
            #expect(throws: SavedModelError.self) { try SavedModelFolder(contentsOf: cut) }
        }
        // Every byte of the index's last block flipped in turn: never a crash.
        for position in stride(from: bytes.count - 200, to: bytes.count, by: 7) {
            var damaged = bytes
            damaged[position] ^= 0x5a
            try damaged.write(to: index)
            // Typed throws: anything thrown is a SavedModelError; the point is that nothing traps.
            _ = try? SavedModelMobileNetV2(folder: try SavedModelFolder(contentsOf: cut))
        }
        let flipped = try copy()
        let shard = flipped.appendingPathComponent("variables/variables.data-00000-of-00001")
        var data = try Data(contentsOf: shard)
        // Keras 3 saves each variable twice and one copy is read: damage the whole shard.
        for position in stride(from: 0, to: data.count, by: 1000) { data[position] ^= 0xff }
        try data.write(to: shard)
        #expect(throws: SavedModelError.self) { try SavedModelMobileNetV2(folder: try SavedModelFolder(contentsOf: flipped)) }

        let noVariables = try copy()
        try FileManager.default.removeItem(at: noVariables.appendingPathComponent("variables"))
        #expect(throws: SavedModelError.self) { try SavedModelFolder(contentsOf: noVariables) }

        let garbage = try copy()
        try Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: garbage.appendingPathComponent("saved_model.pb"))
        let error = #expect(throws: SavedModelError.self) { try SavedModelFolder(contentsOf: garbage) }
        #expect(error?.description.contains("saved_model.pb") == true, "\(String(describing: error))")
    }
}

@Suite("SavedModel folders as models: ModelFile.open, TF Serving's version folders")
struct SavedModelFileTests {
    @Test("a TF Serving base folder opens its highest version; TensorFlow's probabilities within 1e-5")
    func openBaseFolder() async throws {
        let model = try await ModelFile.open(base, backend: OneDNNBackend())
        #expect(model.kind == .savedModel && model.isClassifier)
        #expect(model.classNames == ["class0", "class1", "class2", "class3", "class4"])
        #expect(model.configuration.alpha == 0.35 && model.configuration.inputHeight == 96)
        #expect(model.source.lastPathComponent == "1")
        let fixture = try Fixture.load()
        var worst: Float = 0
        for (input, expected) in zip(fixture.inputs, fixture.outputs) {
            let probabilities = try #require(try model.run(Tensor(shape: [1, 96, 96, 3], scalars: input)).probabilities?.first)
            worst = max(worst, zip(probabilities, expected).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-5, "max |difference| from TensorFlow: \(worst)")
        // As an embedder (index, similar, train): the pooled 1280-d embedding.
        let embedder = try await ModelFile.open(version1, options: ModelOpenOptions(embeddingOnly: true), backend: OneDNNBackend())
        #expect(!embedder.isClassifier && embedder.embeddingWidth == 1280)
    }

    @Test("a tf.keras 2 SavedModel (keras_metadata.pb) of a transfer model with a Rescaling layer: TensorFlow's probabilities within 1e-5")
    func tfKerasWithRescaling() async throws {
        let model = try await ModelFile.open(TestData.fixtures.appendingPathComponent("savedmodel/tfkeras-rescaling"), backend: OneDNNBackend())
        #expect(model.kind == .savedModel && model.classes.count == 5 && model.configuration.alpha == 0.35)
        // The graph's Rescaling(1/127.5, offset=-1) is the library's default scaling: the
        // backbone gets the same -1...1 values (the fixture's inputs are the scaled pixels).
        let fixture = try Fixture.load("tfkeras-rescaling")
        var worst: Float = 0
        for (input, expected) in zip(fixture.inputs, fixture.outputs) {
            let probabilities = try #require(try model.run(Tensor(shape: [1, 96, 96, 3], scalars: input)).probabilities?.first)
            worst = max(worst, zip(probabilities, expected).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-5, "max |difference| from TensorFlow: \(worst)")
    }

    @Test("a tf.keras 2 SavedModel of MobileNetV2 with its top: predictions read as the head; TensorFlow's probabilities within 1e-5")
    func tfKerasTop() async throws {
        let model = try await ModelFile.open(TestData.fixtures.appendingPathComponent("savedmodel/tfkeras-top"), backend: OneDNNBackend())
        #expect(model.kind == .savedModel && model.classes.count == 7 && model.configuration.alpha == 0.35)
        #expect(model.head?.layers.map(\.name) == ["predictions"] && model.head?.layers.map(\.activation) == [.softmax])
        #expect(model.preprocessingConfiguration?.scaling == .minusOneToOne)
        let fixture = try Fixture.load("tfkeras-top")
        var worst: Float = 0
        for (input, expected) in zip(fixture.inputs, fixture.outputs) {
            let probabilities = try #require(try model.run(Tensor(shape: [1, 96, 96, 3], scalars: input)).probabilities?.first)
            worst = max(worst, zip(probabilities, expected).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-5, "max |difference| from TensorFlow: \(worst)")
    }

    @Test("a Keras 3 export trained on x/255 (Rescaling(1/255) in the graph): pixels scaled x/255; TensorFlow's probabilities from pixels within 1e-5")
    func unitRangeRescaling() async throws {
        struct PixelFixture: Decodable { var pixels: [[Float]]; var outputs: [[Float]] }
        let model = try await ModelFile.open(TestData.fixtures.appendingPathComponent("savedmodel/keras3-unit-range"), backend: OneDNNBackend())
        let scaling = try #require(model.preprocessingConfiguration?.scaling)
        #expect(scaling == .zeroToOne)
        let fixture = try JSONDecoder().decode(PixelFixture.self, from: Data(contentsOf: TestData.fixtures.appendingPathComponent("savedmodel/keras3-unit-range.json")))
        var worst: Float = 0
        for (pixels, expected) in zip(fixture.pixels, fixture.outputs) {
            let probabilities = try #require(try model.run(Tensor(shape: [1, 96, 96, 3], scalars: scaling.apply(pixels))).probabilities?.first)
            worst = max(worst, zip(probabilities, expected).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-5, "max |difference| from TensorFlow: \(worst)")
        // The graph decides the scaling: another --scaling does not double-scale it.
        var options = ModelOpenOptions()
        options.preprocessing = PreprocessingConfiguration(scaling: .minusOneToOne)
        let given = try await ModelFile.open(TestData.fixtures.appendingPathComponent("savedmodel/keras3-unit-range"), options: options, backend: OneDNNBackend())
        #expect(given.preprocessingConfiguration?.scaling == .zeroToOne)
        // Another scaling that disagrees with the graph's is refused, not applied on top of it.
        options.preprocessing = PreprocessingConfiguration(scaling: .none)
        await #expect { try await ModelFile.open(TestData.fixtures.appendingPathComponent("savedmodel/keras3-unit-range"), options: options, backend: OneDNNBackend()) } throws: {
            "\($0)".contains("the pixel scaling x / 255 (the graph scales its own input") && "\($0)".contains("x (0...255) was given")
        }
    }

    @Test("version folders: the highest holding saved_model.pb, or the one asked for; other folders are not versions")
    func versions() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["1", "3", "10-draft", "007x"] {
            try FileManager.default.copyItem(at: version1, to: dir.appendingPathComponent(name))
        }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("12"), withIntermediateDirectories: true) // no saved_model.pb
        #expect(try SavedModelFolder.resolve(dir).version == 3)
        #expect(try SavedModelFolder.resolve(dir, version: 1).url.lastPathComponent == "1")
        #expect(throws: SavedModelError.self) { try SavedModelFolder.resolve(dir, version: 2) }
        #expect(try SavedModelFolder.resolve(version1).version == nil)
        let empty = dir.appendingPathComponent("12")
        #expect(throws: SavedModelError.self) { try SavedModelFolder.resolve(empty) }
        // TF Serving reads `07` as version 7 (the plain `7` wins when both are there).
        try FileManager.default.copyItem(at: version1, to: dir.appendingPathComponent("07"))
        #expect(try SavedModelFolder.resolve(dir).url.lastPathComponent == "07")
        #expect(SavedModelFolder.versions(in: dir) == [1, 3, 7])
        try FileManager.default.copyItem(at: version1, to: dir.appendingPathComponent("7"))
        #expect(try SavedModelFolder.resolve(dir, version: 7).url.lastPathComponent == "7")
    }
}

/// The TF Hub-style modules with TF-slim names (scripts/fixtures/make_slim_savedmodel_fixtures.py):
/// MobileNetV2 alpha 0.35, random weights, TF Hub's 0...1 input scaled by `hub_input/Mul` and
/// `hub_input/Sub`; the feature vector without a serving signature (any input size), the
/// classifier with 11 logits and a serving signature at 96x96.
private struct SlimFixture: Decodable {
    var pixels: [[Float]]
    var preprocessed: [[Float]]
    var outputs: [[Float]]
    static func load(_ name: String) throws -> SlimFixture {
        try JSONDecoder().decode(SlimFixture.self, from: Data(contentsOf: TestData.fixtures.appendingPathComponent("savedmodel/\(name).json")))
    }
}

@Suite("TF Hub-style modules: TF-slim variable names, TF Hub's 0...1 input contract")
struct SlimModuleTests {
    @Test("the feature vector: slim names become Keras layers, no signature (any size, 224 by default), hub_input read as the scaling; TensorFlow's within 1e-4")
    func featureVector() async throws {
        let url = TestData.fixtures.appendingPathComponent("savedmodel/slim-feature-vector")
        let recognised = try SavedModelMobileNetV2(folder: try SavedModelFolder(contentsOf: url))
        #expect(recognised.isTFSlimModule && recognised.head == nil && recognised.inputSize == nil)
        #expect(recognised.inputScaling.isClose(to: SavedModelInputScaling(scale: [2, 2, 2], offset: [-1, -1, -1])), "\(recognised.inputScaling)")
        let names = Set(recognised.backboneWeights.layers.map(\.name))
        #expect(names.isSuperset(of: ["Conv1", "bn_Conv1", "expanded_conv_depthwise", "expanded_conv_project_BN", "block_1_expand", "block_16_project_BN", "Conv_1", "Conv_1_bn"]))
        #expect(recognised.backboneWeights.widthMultiplier() == 0.35)
        // Without a size the module runs at TF Hub's default 224x224.
        #expect(try await ModelFile.open(url, backend: OneDNNBackend()).configuration.inputHeight == 224)
        let model = try await ModelFile.open(url, options: ModelOpenOptions(inputSize: (96, 96)), backend: OneDNNBackend())
        #expect(model.kind == .savedModel && !model.isClassifier && model.embeddingWidth == 1280)
        // TF Hub's x / 255 then the graph's 2x - 1: the backbone gets x / 127.5 - 1.
        let scaling = try #require(model.preprocessingConfiguration?.scaling)
        #expect(scaling == .minusOneToOne)
        let fixture = try SlimFixture.load("slim-feature-vector")
        var worst: Float = 0
        for (pixels, expected) in zip(fixture.pixels, fixture.outputs) {
            let embedding = try #require(try model.run(Tensor(shape: [1, 96, 96, 3], scalars: scaling.apply(pixels))).embeddings.first)
            worst = max(worst, zip(embedding, expected).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-4, "max |difference| from TensorFlow: \(worst)")
    }

    @Test("the classifier: TF-slim's 1x1-convolution logits read as a Dense head whose softmax is the probabilities; TensorFlow's within 1e-5")
    func classifier() async throws {
        let url = TestData.fixtures.appendingPathComponent("savedmodel/slim-classification")
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        #expect(model.isClassifier && model.classes.count == 11 && model.configuration.inputHeight == 96)
        let head = try #require(model.head)
        #expect(head.layers.map(\.activation) == [.softmax] && head.layers[0].name == "Logits")
        let fixture = try SlimFixture.load("slim-classification")
        var worst: Float = 0
        for (input, logits) in zip(fixture.preprocessed, fixture.outputs) {
            let probabilities = try #require(try model.run(Tensor(shape: [1, 96, 96, 3], scalars: input)).probabilities?.first)
            let top = logits.max()!, sum = logits.reduce(0) { $0 + exp($1 - top) }
            worst = max(worst, zip(probabilities, logits.map { exp($0 - top) / sum }).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-5, "max |difference| from the softmax of TensorFlow's logits: \(worst)")
    }

    @Test("a graph's own input scaling becomes the pixel scaling: x/255 is zero-to-one, x/127.5-1 minus-one-to-one, others mean/std")
    func scalings() throws {
        #expect(ModelFile.pixelScaling(SavedModelInputScaling(scale: [1 / 255, 1 / 255, 1 / 255], offset: [0, 0, 0]), unitRangeInput: false) == .zeroToOne)
        #expect(ModelFile.pixelScaling(SavedModelInputScaling(scale: [1 / 127.5, 1 / 127.5, 1 / 127.5], offset: [-1, -1, -1]), unitRangeInput: false) == .minusOneToOne)
        #expect(ModelFile.pixelScaling(SavedModelInputScaling(scale: [2, 2, 2], offset: [-1, -1, -1]), unitRangeInput: true) == .minusOneToOne)
        #expect(ModelFile.pixelScaling(.identity, unitRangeInput: true) == .zeroToOne)
        let torch = try #require(ModelFile.pixelScaling(SavedModelInputScaling(scale: [1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)],
                                                                                offset: [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]), unitRangeInput: false))
        guard case .meanStd(let mean, let std) = torch else { Issue.record("\(torch)"); return }
        #expect(zip(mean + std, [0.485, 0.456, 0.406, 0.229, 0.224, 0.225]).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(ModelFile.pixelScaling(SavedModelInputScaling(scale: [0, 1, 1], offset: [0, 0, 0]), unitRangeInput: false) == nil)
    }
}


/// TF Hub-style modules built from the shared weights by
/// `scripts/fixtures/make_slim_savedmodel_fixtures.py --from-shared DIR` (too large to commit;
/// they cannot be the downloaded modules either): set MOBILENET_SLIM_SHARED_DIR=DIR to compare
/// the library's outputs with TensorFlow's (DIR/reference.json) on the shared photos' exact inputs.
private let slimSharedDirectory = ProcessInfo.processInfo.environment["MOBILENET_SLIM_SHARED_DIR"].map { URL(fileURLWithPath: $0) }

private struct SlimSharedReference: Decodable {
    struct Photo: Decodable {
        var name: String
        var features: [Float]
        var logits: [Float]
    }
    var photos: [Photo]
}

@Suite("TF Hub-style modules of the shared weights (MOBILENET_SLIM_SHARED_DIR)")
struct SlimSharedModuleTests {
    @Test("feature vector and 1001-class classifier at 224: TensorFlow's features and probabilities within 1e-4, the same top-1",
          .enabled(if: slimSharedDirectory != nil && TestData.sharedAvailable, "set MOBILENET_SLIM_SHARED_DIR (make_slim_savedmodel_fixtures.py --from-shared DIR)"))
    func sharedModules() async throws {
        let dir = try #require(slimSharedDirectory)
        let reference = try JSONDecoder().decode(SlimSharedReference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
        let embedder = try await ModelFile.open(dir.appendingPathComponent("slim-feature-vector-224"), backend: OneDNNBackend())
        let classifier = try await ModelFile.open(dir.appendingPathComponent("slim-classification-224"), backend: OneDNNBackend())
        #expect(classifier.classes.count == 1001 && classifier.classes[0].name == "background" && classifier.classes[286].synset == "n02124075")
        var worstFeature: Float = 0, worstProbability: Float = 0, agree = 0
        for photo in reference.photos {
            let input = try NPY.read(contentsOf: TestData.shared("data/reference/\(photo.name).input.npy"))
            let features = try #require(try embedder.run(input).embeddings.first)
            worstFeature = max(worstFeature, zip(features, photo.features).map { abs($0 - $1) }.max()!)
            let probabilities = try #require(try classifier.run(input).probabilities?.first)
            let top = photo.logits.max()!, sum = photo.logits.reduce(0) { $0 + exp($1 - top) }
            worstProbability = max(worstProbability, zip(probabilities, photo.logits.map { exp($0 - top) / sum }).map { abs($0 - $1) }.max()!)
            if probabilities.indices.max(by: { probabilities[$0] < probabilities[$1] }) == photo.logits.indices.max(by: { photo.logits[$0] < photo.logits[$1] }) { agree += 1 }
        }
        print("slim modules of the shared weights: \(reference.photos.count) photos, max |feature diff| \(worstFeature), max |probability diff| \(worstProbability), top-1 agreement \(agree)/\(reference.photos.count)")
        #expect(worstFeature < 1e-4 && worstProbability < 1e-4 && agree == reference.photos.count)
    }
}
