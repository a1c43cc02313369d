import Foundation
import Hummingbird
import MobileNet
import MobileNetServing
import MobileNetTestSupport
import Testing

/// Model specifications and the detection of a served model's kind from its file.
@Suite("Served models")
struct ServedModelTests {
    @Test("NAME=PATH specifications: the first '=' splits; names that cannot appear in a URL path are refused")
    func specifications() throws {
        let spec = try ModelSpecification(parsing: "imagenet=weights/a=b.h5")
        #expect(spec.name == "imagenet" && spec.path == "weights/a=b.h5")
        for bad in ["imagenet", "=x.h5", "a:b=x.h5", "a/b=x.h5", ".hidden=x.h5", "ok=", String(repeating: "n", count: 65) + "=x.h5"] {
            #expect(throws: ServingError.self, "\(bad)") { try ModelSpecification(parsing: bad) }
        }
    }

    @Test("a .tflite classifier is served as tflite-classifier, on its integer kernels, with --labels names")
    func tflite() async throws {
        let url = TestData.fixtures.appendingPathComponent("tflite/mnv2-035-96-int8.tflite")
        var options = ModelLoadingOptions(backend: OneDNNBackend())
        options.classNames = ["flowers": ["daisy", "dandelion", "roses", "sunflowers", "tulips"]]
        let models = try await ModelRegistry.load([try ModelSpecification(name: "flowers", path: url.path)], options: options)
        let model = try #require(models.first)
        #expect(model.kind == .tfliteClassifier && model.outputWidth == 5)
        #expect(model.classes.map(\.name) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"])
        #expect(model.model.network.backendName == "tflite-xnnpack")
        options.classNames = ["flowers": ["a", "b"]]
        await #expect(throws: ServingError.self) { try await ModelRegistry.load([try ModelSpecification(name: "flowers", path: url.path)], options: options) }
    }

    @Test("a SavedModel in TF Serving's layout (a base folder of versions) is served; a folder that is not one fails at load")
    func savedModel() async throws {
        let base = TestData.fixtures.appendingPathComponent("savedmodel/keras3-export")
        let options = ModelLoadingOptions(backend: OneDNNBackend())
        let specification = try ModelSpecification(name: "flowers", path: base.path)
        try ModelRegistry.checkFilesExist(models: [specification], indexes: [], options: options)
        let model = try #require(try await ModelRegistry.load([specification], options: options).first)
        #expect(model.kind == .kerasClassifier && model.outputWidth == 5 && model.inputHeight == 96)
        let empty = try TestData.temporaryDirectory()
        let notAModel = try ModelSpecification(name: "empty", path: empty.path)
        try ModelRegistry.checkFilesExist(models: [notAModel], indexes: [], options: options)
        await #expect(throws: ServingError.self) { try await ModelRegistry.load([notAModel], options: options) }
    }

    @Test("kinds from the contents: weights with top, without top, a Keras transfer model, a mobilenet train model file",
          .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func kinds() async throws {
        let imagenet = try await Harness.imagenet()
        #expect(imagenet.kind == .imageNetClassifier && imagenet.outputWidth == 1000 && imagenet.classes[285].synset == "n02124075")
        let embedder = try await Harness.embedder()
        #expect(embedder.kind == .embedder && embedder.outputWidth == 1280 && embedder.outputName == "embedding" && embedder.classes.isEmpty)

        let keras = try await ServedModel.load(name: "flowers", contentsOf: TestData.fixtures.appendingPathComponent("keras-transfer/transfer_a035_96.keras"),
                                               backend: OneDNNBackend())
        #expect(keras.kind == .kerasClassifier && keras.configuration.alpha == 0.35)
        #expect(keras.inputHeight == 96 && keras.inputWidth == 96 && keras.outputWidth == 5)

        // A `mobilenet train` model file over the shared no-top weights, with its recorded preprocessing.
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var random = SeededRandom(seed: 3)
        let configuration = MobileNetV2Configuration(includeTop: false, pooling: .avg)
        let preprocessing = PreprocessingConfiguration.preset(.tensorflow)
        let file = ClassifierModel(classNames: ["cat", "dog"], backbone: try BackboneIdentity(configuration: configuration, weightsFile: Harness.noTopWeights),
                                   backboneWeightsPath: Harness.noTopWeights.path,
                                   preprocessing: PreprocessingIdentity(preprocessing, height: 224, width: 224), preprocessingConfiguration: preprocessing,
                                   head: ClassifierHead(inputs: 1280, classes: 2, random: &random).roundedToFloat32(),
                                   training: nil, history: [], bestEpoch: nil, validation: nil)
        let url = dir.appendingPathComponent("pets.json")
        try file.write(to: url, overwrite: false)
        let trained = try await ServedModel.load(name: "pets", contentsOf: url, backend: OneDNNBackend())
        #expect(trained.kind == .trainedClassifier && trained.classes.map(\.name) == ["cat", "dog"])
        #expect(trained.preprocessing == preprocessing)
        let input = try trained.preprocessor(maxPixels: 100_000_000).tensor(contentsOf: Harness.png)
        let out = try trained.run(input)
        let sum = out.probabilities?.first?.reduce(0, +) ?? 0
        #expect(abs(sum - 1) < 1e-4)
        let direct = try embedder.run(input).embeddings[0]
        let diff = zip(out.embeddings[0], direct).map { abs($0 - $1) }.max() ?? 1
        #expect(diff < 1e-5, "max |diff| \(diff)")

        // Not a model: an error naming the file and the reason.
        let text = dir.appendingPathComponent("notes.txt")
        try Data("hello".utf8).write(to: text)
        await #expect(throws: ServingError.self) { try await ServedModel.load(name: "x", contentsOf: text, backend: OneDNNBackend()) }
        do {
            _ = try await ServedModel.load(name: "x", contentsOf: dir.appendingPathComponent("missing.h5"), backend: OneDNNBackend())
            Issue.record("a missing file loaded")
        } catch {
            let message = String(describing: error)
            #expect(message.contains("missing.h5") && message.contains("no such file"), "\(message)")
        }
    }
}
