import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// Tiny fine-tuning runs: the alpha 0.35 base of the committed Keras transfer fixture at 32x32,
/// a few generated images, and the Double reference network as the trainable part, so a whole
/// run takes about a second.
enum TinyFineTuning {
    /// MobileNetV2 alpha 0.35 (formula weights) nested in a Keras transfer model.
    static let weights = TestData.fixtures.appendingPathComponent("keras-transfer/transfer_a035_96.h5")
    static let size = 32

    static func backbone() throws -> Backbone {
        try Backbone.load(contentsOf: weights, alpha: 0.35, inputHeight: size, inputWidth: size, backend: OneDNNBackend())
    }

    static func makeData(count: Int = 4, validation: Int = 2) throws -> URL {
        try TestImages.twoClassFolders(count: count, validation: validation)
    }

    static func training(_ root: URL, point: FineTunePoint = .index(140), epochs: Int = 4, augmentation: FineTuningAugmentation? = .horizontalFlip) -> ClassifierTraining {
        var settings = TrainingSettings()
        settings.epochs = 5
        settings.batchSize = 4
        settings.patience = nil
        var training = ClassifierTraining(dataDirectory: root.appendingPathComponent("train"), validationDirectory: root.appendingPathComponent("val"),
                                          settings: settings, topK: 1)
        var fineTuning = FineTuningSettings(point: point)
        fineTuning.epochs = epochs
        fineTuning.batchSize = 4
        fineTuning.optimizer = .adam
        fineTuning.learningRate = 1e-3
        fineTuning.patience = nil
        training.fineTuning = fineTuning
        // These runs test the mechanics: keep the fine-tuned model whatever its validation figures.
        training.keepWorseFineTuning = true
        training.augmentation = augmentation
        training.networkFactory = ReferenceFineTuningNetwork.factory
        return training
    }

    static func run(_ training: ClassifierTraining, backbone: Backbone) throws -> ClassifierTraining.Outcome {
        try training.run(backbone: backbone, store: nil, runtime: RuntimeOptions(backend: backbone.network.backend, batchSize: 4, decodeThreads: 1))
    }
}

@Suite("fine-tuning the top of the base (train --fine-tune-at)", .serialized)
struct FineTuningTests {
    @Test func phaseTwoLowersTheTrainingLossAndTheSameSeedGivesTheSameModel() throws {
        let root = try TinyFineTuning.makeData()
        let backbone = try TinyFineTuning.backbone()
        // Without Dropout and augmentation the training loss is a clean signal.
        var training = TinyFineTuning.training(root, epochs: 6, augmentation: nil)
        training.settings.dropout = 0
        var epochs: [EpochRecord] = []
        let outcome = try training.run(backbone: backbone, store: nil, runtime: RuntimeOptions(backend: backbone.network.backend, batchSize: 4, decodeThreads: 1)) { event in
            if case .fineTuningEpoch(let record, _) = event { epochs.append(record) }
        }
        let tuned = try #require(outcome.model.fineTuning)
        #expect(tuned.history == epochs)
        #expect(tuned.history.count == 6)
        #expect(tuned.history.last!.loss < tuned.history.first!.loss, "training loss \(tuned.history.map(\.loss))")
        // Only layers from the fine-tune point are stored, never the frozen part.
        let layers = try MobileNetV2Architecture.layers(for: MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: nil))
        let trainable = Set(layers[140...].filter { !$0.weights.isEmpty }.map(\.name))
        #expect(Set(tuned.layers.map(\.name)) == trainable)
        #expect(tuned.fineTuneAt == 140 && tuned.firstLayer == layers[140].name)

        // Same seed, with augmentation: identical model files (but the creation time).
        let flipped = TinyFineTuning.training(root, epochs: 2)
        var first = try TinyFineTuning.run(flipped, backbone: backbone).model
        var second = try TinyFineTuning.run(flipped, backbone: backbone).model
        first.created = nil
        second.created = nil
        #expect(try first.encoded() == second.encoded())
        #expect(first.fineTuning?.settings.augmentation == "RandomFlip(\"horizontal\")")
        // Another seed gives another model.
        var reseeded = flipped
        reseeded.settings.seed = 7
        #expect(try TinyFineTuning.run(reseeded, backbone: backbone).model.fineTuning?.weightsSHA256 != first.fineTuning?.weightsSHA256)
    }

    @Test func theModelFileRoundTripsAndPredictsAsTheTrainedNetwork() async throws {
        let root = try TinyFineTuning.makeData()
        let backbone = try TinyFineTuning.backbone()
        let outcome = try TinyFineTuning.run(TinyFineTuning.training(root, point: .layer("block_14_expand"), epochs: 2), backbone: backbone)
        let file = root.appendingPathComponent("model.json")
        try outcome.model.write(to: file, overwrite: false)
        let read = try ClassifierModel.read(contentsOf: file)
        #expect(read.version == 2)
        #expect(read.fineTuning == outcome.model.fineTuning)
        #expect(read.head == outcome.model.head)
        let text = try String(contentsOf: file, encoding: .utf8)
        #expect(text.contains("\"float32LE\"") && text.contains("\"sha256\""))
        #expect(!text.contains("\"Conv1\""), "the frozen part is never copied")

        // predict == the trained network's logits → softmax (the Double reference, unfolded
        // BatchNorm) within 1e-5.
        let classifier = try await ModelFile.open(file, backend: OneDNNBackend())
        #expect(classifier.identity != backbone.identity, "the fine-tuned base has its own cache identity")
        let files = try FileManager.default.contentsOfDirectory(at: root.appendingPathComponent("val/bars"), includingPropertiesForKeys: nil).sorted { $0.path < $1.path }
        let predicted = try classifier.predict(files, k: 2, store: nil, runtime: RuntimeOptions(backend: OneDNNBackend(), decodeThreads: 0))
        #expect(predicted.failures.isEmpty)
        let tuned = try #require(read.fineTuning)
        var weights = try tuned.applied(to: try ClassifierTraining.baseWeights(backbone))
        let dense = try #require(read.head.denseLayers.last)
        weights.layers.append(KerasLayerWeights(name: "predictions", arrays: [
            WeightArray(name: "kernel", shape: [dense.inputs, dense.outputs], values: dense.kernel.map { Float($0) }),
            WeightArray(name: "bias", shape: [dense.outputs], values: dense.bias.map { Float($0) }),
        ]))
        var configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: true, pooling: nil, classes: 2)
        configuration.classifierActivation = .none
        let reference = try ReferenceFineTuningNetwork(FineTuningSetup(configuration: configuration, weights: weights, fineTuneAt: tuned.fineTuneAt,
                                                                       dropout: 0.2, backend: ReferenceBackend()))
        let preprocessor = classifier.preprocessor()
        var worst = 0.0
        for (file, scores) in predicted.predictions {
            let logits = try reference.logits(entry: try preprocessor.tensor(contentsOf: file)).scalars.map(Double.init)
            let m = logits.max()!
            let e = logits.map { exp($0 - m) }
            let p = e.map { $0 / e.reduce(0, +) }
            for score in scores {
                let index = read.classNames.firstIndex(of: score.className)!
                worst = max(worst, abs(score.probability - p[index]))
            }
        }
        #expect(worst <= 1e-5, "max |predict − reference softmax| = \(worst)")

        // The Keras export carries the fine-tuned base.
        let base = try ClassifierTraining.baseWeights(backbone)
        let keras = root.appendingPathComponent("model.keras")
        try KerasTransferExport.write(read, backbone: base, to: keras, overwrite: false)
        let imported = try KerasTransferModel.read(contentsOf: keras)
        let exportedLayer = try #require(imported.backboneWeights.mobileNetV2Part().layer(named: tuned.layers[0].name))
        #expect(exportedLayer.arrays.map(\.values) == tuned.layers[0].arrays.map { try! $0.decoded(layer: tuned.layers[0].name).values })
        let frozenLayer = try #require(imported.backboneWeights.mobileNetV2Part().layer(named: "Conv1"))
        #expect(frozenLayer.arrays.map(\.values) == base.layer(named: "Conv1")!.arrays.map(\.values))

        // A damaged fine-tuned array is refused, naming the file.
        let damaged = text.replacingOccurrences(of: tuned.layers[0].arrays[0].sha256, with: String(repeating: "0", count: 64))
        #expect(throws: ClassifierModelError.self) { try ClassifierModel.decode(Data(damaged.utf8), path: "damaged.json") }
    }

    /// The same with the fast Float network: `predict` of the model file (one folded oneDNN pass)
    /// equals the trained network's logits → softmax on the frozen part's entry activations.
    @Test func theFastNetworkTrainsAndPredictMatchesIt() async throws {
        let root = try TinyFineTuning.makeData()
        let backbone = try TinyFineTuning.backbone()
        var training = TinyFineTuning.training(root, point: .index(100), epochs: 2)
        training.networkFactory = FineTuningNetworks.fast
        let outcome = try TinyFineTuning.run(training, backbone: backbone)
        let file = root.appendingPathComponent("fast.json")
        try outcome.model.write(to: file, overwrite: false)
        let read = try ClassifierModel.read(contentsOf: file)
        let tuned = try #require(read.fineTuning)
        #expect(tuned.fineTuneAt == 100 && tuned.history.count == 2)
        var weights = try tuned.applied(to: try ClassifierTraining.baseWeights(backbone))
        let dense = try #require(read.head.denseLayers.last)
        weights.layers.append(KerasLayerWeights(name: "predictions", arrays: [
            WeightArray(name: "kernel", shape: [dense.inputs, dense.outputs], values: dense.kernel.map { Float($0) }),
            WeightArray(name: "bias", shape: [dense.outputs], values: dense.bias.map { Float($0) }),
        ]))
        var configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: true, pooling: nil, classes: 2)
        configuration.classifierActivation = .none
        let network = try FineTuningNetwork(configuration: configuration, weights: weights, fineTuneAt: 100, dropout: 0.2)
        let classifier = try await ModelFile.open(file, backend: OneDNNBackend())
        let files = try FileManager.default.contentsOfDirectory(at: root.appendingPathComponent("val/rings"), includingPropertiesForKeys: nil).sorted { $0.path < $1.path }
        let predicted = try classifier.predict(files, k: 2, store: nil, runtime: RuntimeOptions(backend: OneDNNBackend(), decodeThreads: 0))
        let preprocessor = classifier.preprocessor()
        var worst = 0.0
        for (file, scores) in predicted.predictions {
            let input = try preprocessor.tensor(contentsOf: file)
            let entry = network.entryLayer == "input_layer" ? input : try #require(try backbone.network.activations(input, layers: [network.entryLayer])[network.entryLayer])
            let logits = try network.logits(entry: entry).scalars.map(Double.init)
            let m = logits.max()!
            let e = logits.map { exp($0 - m) }
            for score in scores {
                let index = read.classNames.firstIndex(of: score.className)!
                worst = max(worst, abs(score.probability - e[index] / e.reduce(0, +)))
            }
        }
        #expect(worst <= 1e-5, "max |predict − fast network softmax| = \(worst)")
    }

    @Test func aHeadOnlyModelFileStaysVersionOne() throws {
        let root = try TinyFineTuning.makeData(count: 2, validation: 1)
        var training = TinyFineTuning.training(root)
        training.fineTuning = nil
        let outcome = try TinyFineTuning.run(training, backbone: try TinyFineTuning.backbone())
        #expect(outcome.model.fineTuning == nil)
        let json = try JSONSerialization.jsonObject(with: try outcome.model.encoded()) as? [String: Any]
        #expect(json?["version"] as? Int == 1)
    }

    @Test func badFineTunePointsSayWhatIsAccepted() throws {
        let layers = try MobileNetV2Architecture.layers(for: MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: nil))
        #expect(layers.count == 154)
        #expect(try FineTunePoint.index(100).resolve(in: layers) == 100)
        #expect(try FineTunePoint.index(154).resolve(in: layers) == 154)
        #expect(throws: FineTuningSetupError.pointOutOfRange(155, layerCount: 154)) { try FineTunePoint.index(155).resolve(in: layers) }
        #expect(FineTuningSetupError.pointOutOfRange(-1, layerCount: 154).description.contains("0...154"))
        #expect(try FineTunePoint.layer("block_12_expand").resolve(in: layers) == layers.firstIndex { $0.name == "block_12_expand" })
        do {
            _ = try FineTunePoint.layer("block_12_expnd").resolve(in: layers)
            Issue.record("an unknown layer name was accepted")
        } catch {
            guard case .unknownLayer(let name, let suggestions) = error else { Issue.record("\(error)"); return }
            #expect(name == "block_12_expnd")
            #expect(suggestions.first == "block_12_expand")
            #expect(error.description.contains("closest: block_12_expand"))
        }
        // Through the run: the message reaches the caller before any fine-tuning work.
        let root = try TinyFineTuning.makeData(count: 1, validation: 1)
        #expect(throws: FineTuningSetupError.pointOutOfRange(400, layerCount: 154)) {
            try TinyFineTuning.run(TinyFineTuning.training(root, point: .index(400)), backbone: try TinyFineTuning.backbone())
        }
        var hidden = TinyFineTuning.training(root)
        hidden.settings.hiddenUnits = 8
        #expect(throws: FineTuningSetupError.hiddenLayer) { try TinyFineTuning.run(hidden, backbone: try TinyFineTuning.backbone()) }
        var settings = FineTuningSettings(point: .index(100))
        settings.learningRate = -1
        #expect(throws: FineTuningSetupError.self) { try settings.validate() }
    }

    @Test func aKerasTransferModelWithAnotherAlphaIsRefusedNamingTheFile() throws {
        // A backbone that claims alpha 1.0 with the alpha 0.35 transfer model's weight file.
        let configuration = MobileNetV2Configuration(alpha: 1.0, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: .avg)
        let network = try MobileNetV2(configuration: configuration, weights: try FormulaWeights.weights(for: configuration, seed: 3), backend: ReferenceBackend())
        let backbone = Backbone(network: network, identity: try BackboneIdentity(configuration: configuration, weightsFile: TinyFineTuning.weights),
                                weightsURL: TinyFineTuning.weights)
        do {
            _ = try ClassifierTraining.baseWeights(backbone)
            Issue.record("weights of another alpha were accepted")
        } catch let error as FineTuningSetupError {
            #expect(error.description.contains(TinyFineTuning.weights.path))
            #expect(error.description.contains("alpha"), "\(error)")
        }
        // Loading the backbone itself with the wrong alpha already fails the same way.
        #expect(throws: (any Error).self) {
            try Backbone.load(contentsOf: TinyFineTuning.weights, alpha: 1.0, inputHeight: 32, inputWidth: 32, backend: ReferenceBackend())
        }
    }

    /// A scripted network: its validation loss follows `losses` epoch by epoch, so early
    /// stopping and the restored epoch can be checked exactly.
    struct ScriptedNetwork: FineTunableNetwork {
        var steps = 0
        let stepsPerEpoch: Int
        let losses: [Double]
        var entryLayer: String { "input_layer" }
        var trainableVariables: [String] { ["predictions/kernel"] }
        var epoch: Int { steps / stepsPerEpoch }
        func logitsFor(_ n: Int) -> Tensor {
            // Two classes, label 0: loss = log(1 + e^-z) for logits (z, 0).
            let target = losses[min(max(epoch - 1, 0), losses.count - 1)]
            let z = Float(-log(exp(target) - 1))
            return Tensor(shape: [n, 2], scalars: (0..<n).flatMap { _ in [z, 0] })
        }
        func lossAndGradients(entry: Tensor, labels: [Int], loss: SoftmaxCrossEntropy, training: Bool,
                              random: inout SplitMix64) throws -> (loss: Double, logits: Tensor, gradients: Int) {
            (1.0, logitsFor(labels.count), 1)
        }
        func logits(entry: Tensor) throws -> Tensor { logitsFor(entry.shape[0]) }
        mutating func apply(_ gradients: Int, optimizer: inout Optimizer) throws { steps += gradients }
        func trainedWeights() throws -> KerasWeightSet {
            KerasWeightSet(source: "scripted", layers: [KerasLayerWeights(name: "predictions", arrays: [WeightArray(name: "epoch", shape: [1], values: [Float(epoch)])])])
        }
    }

    /// The data, validation images (class 0), tiny backbone and trainer (index 0, up to 10
    /// epochs, batch 4, SGD 0.1) of the ScriptedNetwork tests.
    func scriptedRun(patience: Int?) throws -> (ImageFolder, [LabelledImage], Backbone, FineTuningTrainer) {
        let root = try TinyFineTuning.makeData(count: 2, validation: 1)
        let folder = try ImageFolder(root: root.appendingPathComponent("train"))
        let validation = try ImageFolder(root: root.appendingPathComponent("val"), classNames: folder.classNames).images.filter { $0.label == 0 }
        var settings = FineTuningSettings(point: .index(0))
        settings.epochs = 10
        settings.batchSize = 4
        settings.patience = patience
        let trainer = FineTuningTrainer(settings: settings, optimizer: .sgd(learningRate: 0.1), seed: 1, augmentation: nil)
        return (folder, validation, try TinyFineTuning.backbone(), trainer)
    }

    /// Records what phase 2 hands the network: the loss's class weights and the setup's L2.
    final class PhaseTwoRecorder: @unchecked Sendable {
        private let lock = NSLock()
        private var _classWeights: [[Double]?] = [], _l2: [Double] = []
        func record(classWeights: [Double]?) { lock.withLock { _classWeights.append(classWeights) } }
        func record(l2: Double) { lock.withLock { _l2.append(l2) } }
        var classWeights: [[Double]?] { lock.withLock { _classWeights } }
        var l2: [Double] { lock.withLock { _l2 } }
    }

    struct RecordingNetwork: FineTunableNetwork {
        var inner: ReferenceFineTuningNetwork
        let recorder: PhaseTwoRecorder
        var entryLayer: String { inner.entryLayer }
        var trainableVariables: [String] { inner.trainableVariables }
        func lossAndGradients(entry: Tensor, labels: [Int], loss: SoftmaxCrossEntropy, training: Bool,
                              random: inout SplitMix64) throws -> (loss: Double, logits: Tensor, gradients: FineTuningModel.Gradients) {
            recorder.record(classWeights: loss.classWeights)
            return try inner.lossAndGradients(entry: entry, labels: labels, loss: loss, training: training, random: &random)
        }
        func logits(entry: Tensor) throws -> Tensor { try inner.logits(entry: entry) }
        mutating func apply(_ gradients: FineTuningModel.Gradients, optimizer: inout Optimizer) throws { try inner.apply(gradients, optimizer: &optimizer) }
        func trainedWeights() throws -> KerasWeightSet { try inner.trainedWeights() }
    }

    @Test("--balanced and --l2 hold in phase 2: the fine-tuning loss gets the head phase's class weights, the network its L2 penalty")
    func phaseTwoKeepsClassWeightsAndL2() throws {
        let root = try TinyFineTuning.makeData(count: 4)
        // Unbalanced: 4 bars, 3 rings.
        let rings = root.appendingPathComponent("train/rings")
        let first = try #require(try FileManager.default.contentsOfDirectory(atPath: rings.path).sorted().first)
        try FileManager.default.removeItem(at: rings.appendingPathComponent(first))
        let backbone = try TinyFineTuning.backbone()
        for (balanced, l2) in [(true, 0.01), (false, 0.0)] {
            let recorder = PhaseTwoRecorder()
            var training = TinyFineTuning.training(root, epochs: 1, augmentation: nil)
            training.settings.balancedClassWeights = balanced
            training.settings.l2 = l2
            training.networkFactory = { setup in
                recorder.record(l2: setup.classifierL2)
                return RecordingNetwork(inner: try ReferenceFineTuningNetwork(setup), recorder: recorder)
            }
            _ = try TinyFineTuning.run(training, backbone: backbone)
            #expect(recorder.l2 == [l2])
            let expected: [Double]? = balanced ? [7.0 / (2 * 4), 7.0 / (2 * 3)] : nil
            #expect(!recorder.classWeights.isEmpty && recorder.classWeights.allSatisfy { $0 == expected }, "\(recorder.classWeights)")
        }
    }

    @Test func earlyStoppingRestoresTheBestEpoch() throws {
        let (folder, validation, backbone, trainer) = try scriptedRun(patience: 2)
        var network = ScriptedNetwork(stepsPerEpoch: 1, losses: [0.9, 0.4, 0.6, 0.5, 0.1])
        let preprocessor = ImagePreprocessor(height: 32, width: 32)
        let result = try trainer.run(network: &network, frozen: backbone.network, train: folder.images, validation: validation,
                                     preprocessor: preprocessor, decodeThreads: 0)
        // Epoch 2 is best; epochs 3 and 4 do not improve on it: patience 2 stops after epoch 4.
        #expect(result.history.map(\.epoch) == [1, 2, 3, 4])
        #expect(result.history.map { ($0.validationLoss! * 1e4).rounded() / 1e4 } == [0.9, 0.4, 0.6, 0.5])
        #expect(result.bestEpoch == 2)
        #expect(result.weights.layer(named: "predictions")?.arrays[0].values == [2])
        #expect(result.validationProbabilities.rows == validation.count)
    }

    @Test func aDamagedOrEditedFineTunedSectionIsRefused() async throws {
        let root = try TinyFineTuning.makeData(count: 1, validation: 1)
        let backbone = try TinyFineTuning.backbone()
        let model = try TinyFineTuning.run(TinyFineTuning.training(root, point: .layer("block_14_expand"), epochs: 1), backbone: backbone).model
        let tuned = try #require(model.fineTuning)
        let base = try ClassifierTraining.baseWeights(backbone)
        _ = try tuned.applied(to: base)
        let decoded = try tuned.layers.map { layer in KerasLayerWeights(name: layer.name, arrays: try layer.arrays.map { try $0.decoded(layer: layer.name) }) }
        // Re-encoded with correct hashes, as a deliberate edit would be.
        func rebuilt(_ layers: [KerasLayerWeights], fineTuneAt: Int? = nil) -> FineTunedBase {
            FineTunedBase(fineTuneAt: fineTuneAt ?? tuned.fineTuneAt, firstLayer: tuned.firstLayer, settings: tuned.settings, optimizer: tuned.optimizer,
                          history: tuned.history, bestEpoch: tuned.bestEpoch, headOnlyValidation: nil, weights: KerasWeightSet(source: "edited", layers: layers))
        }
        func refusal(_ edited: FineTunedBase) -> String {
            do { _ = try edited.applied(to: base); return "accepted" } catch { return error.description }
        }
        var nan = decoded
        nan[0].arrays[0].values[0] = .nan
        #expect(refusal(rebuilt(nan)).contains("NaN or infinite values"))
        #expect(refusal(rebuilt(Array(decoded.dropLast()))).contains("layers with weights are missing ('\(decoded.last!.name)')"))
        #expect(refusal(rebuilt(decoded + [decoded[0]])).contains("given more than once"))
        #expect(refusal(rebuilt(decoded, fineTuneAt: 1_000_000_000)).contains("fineTuneAt 1000000000 is not in 0...154"))
        var reshaped = decoded
        reshaped[0].arrays[0].shape = Array(reshaped[0].arrays[0].shape.reversed())
        #expect(refusal(rebuilt(reshaped)).contains("has shapes"))
        var truncated = tuned
        truncated.layers[0].arrays[0].float32LE.removeLast(8)
        #expect(refusal(truncated).contains("bytes for shape"))
        var rehashed = tuned
        rehashed.layers[0].arrays[0].sha256 = String(repeating: "0", count: 64)
        #expect(refusal(rehashed).contains("weightsSHA256 does not match"))
        // Through the model file: the message names the file.
        var edited = model
        edited.fineTuning = rebuilt(Array(decoded.dropLast()))
        let file = root.appendingPathComponent("edited.json")
        try edited.write(to: file, overwrite: false)
        do {
            _ = try await ModelFile.open(file, backend: OneDNNBackend())
            Issue.record("a model file with a fine-tuned layer left out was accepted")
        } catch {
            #expect("\(error)".contains(file.path) && "\(error)".contains("missing"), "\(error)")
        }
    }

    @Test func aDivergedEpochIsNeverTheBestAndStopsTheRun() throws {
        let (folder, validation, backbone, trainer) = try scriptedRun(patience: nil)
        let preprocessor = ImagePreprocessor(height: 32, width: 32)
        // NaN in epoch 3 (NaN >= best is false: before, the NaN epoch became the best one and
        // its NaN weights were written into a model file that predict then refuses).
        var network = ScriptedNetwork(stepsPerEpoch: 1, losses: [0.9, 0.4, .nan, 0.1])
        let result = try trainer.run(network: &network, frozen: backbone.network, train: folder.images, validation: validation,
                                     preprocessor: preprocessor, decodeThreads: 0)
        #expect(result.history.map(\.epoch) == [1, 2, 3])
        #expect(result.bestEpoch == 2)
        #expect(result.weights.layer(named: "predictions")?.arrays[0].values == [2])
        // Diverged from the first epoch: no model at all, a message that says so.
        var diverged = ScriptedNetwork(stepsPerEpoch: 1, losses: [.infinity])
        do {
            _ = try trainer.run(network: &diverged, frozen: backbone.network, train: folder.images, validation: validation,
                                preprocessor: preprocessor, decodeThreads: 0)
            Issue.record("a run without a finite validation loss returned weights")
        } catch let error as ClassifierTrainingError {
            guard case .fineTuningDiverged(let epoch, _) = error else { Issue.record("\(error)"); return }
            #expect(epoch == 1)
            #expect(error.description.contains("--fine-tune-learning-rate"))
        }
    }

    @Test("a fine-tuned model worse on validation than the head alone is not the result, unless keepWorseFineTuning (issue 32)")
    func aWorseFineTunedModelIsNotKept() throws {
        let root = try TinyFineTuning.makeData()
        let backbone = try TinyFineTuning.backbone()
        var training = TinyFineTuning.training(root, epochs: 1, augmentation: nil)
        training.networkFactory = { ConstantAnswerNetwork(inner: try ReferenceFineTuningNetwork($0)) }
        training.keepWorseFineTuning = false
        var messages: [String] = []
        let outcome = try training.run(backbone: backbone, store: nil, runtime: RuntimeOptions(backend: backbone.network.backend, batchSize: 4, decodeThreads: 1)) { event in
            if case .message(let text) = event { messages.append(text) }
        }
        let tuned = try #require(outcome.fineTunedEvaluation)
        // Every validation image is called class 0 with logit 20: half right, and a loss of about 10.
        #expect(tuned.accuracy == 0.5 && tuned.loss > outcome.headOnlyEvaluation.loss + 1)
        #expect(ClassifierTraining.isWorse(tuned, than: outcome.headOnlyEvaluation))
        #expect(!outcome.fineTuningKept && outcome.model.fineTuning == nil)
        #expect(outcome.evaluation == outcome.headOnlyEvaluation && outcome.model.validation == outcome.headOnlyEvaluation)
        #expect(messages.contains { $0.contains("fine-tuning made the model worse") && $0.contains("keeping the head-only model") }, "\(messages)")

        training.keepWorseFineTuning = true
        let kept = try training.run(backbone: backbone, store: nil, runtime: RuntimeOptions(backend: backbone.network.backend, batchSize: 4, decodeThreads: 1))
        #expect(kept.fineTuningKept && kept.model.fineTuning != nil && kept.evaluation.accuracy == 0.5)
    }

    @Test func thumbnailsOfMisclassifiedImagesAreEmbedded() throws {
        let root = try TinyFineTuning.makeData(count: 1, validation: 1)
        let image = root.appendingPathComponent("val/bars/0.bmp")
        let evaluation = EvaluationReport(probabilities: Matrix(rows: 1, columns: 2, values: [0.3, 0.7]), labels: [0], classNames: ["bars", "rings"], k: 1)
        let miss = Misclassification.find(probabilities: Matrix(rows: 1, columns: 2, values: [0.3, 0.7]), images: [LabelledImage(url: image, label: 0)],
                                          classNames: ["bars", "rings"])
        #expect(miss == [Misclassification(url: image, trueClass: "bars", predictedClass: "rings", probability: 0.7, trueClassProbability: 0.3)])
        let html = HTMLReport.render(title: "t", history: [EpochRecord(epoch: 1, loss: 1, accuracy: 0.5, validationLoss: 1, validationAccuracy: 0.5)], bestEpoch: 1,
                                     evaluation: evaluation, fineTuningHistory: [EpochRecord(epoch: 1, loss: 0.5, accuracy: 0.7, validationLoss: 0.6, validationAccuracy: 1)],
                                     fineTuningBestEpoch: 1, misclassified: miss)
        #expect(html.contains("data:image/png;base64,"))
        #expect(html.contains("true: bars") && html.contains("predicted: rings (70.0%)"))
        #expect(html.contains("fine-tuning: epochs 2–2"))
        // The PNG decodes with the project's own decoder, at thumbnail size.
        let base64 = html.components(separatedBy: "data:image/png;base64,")[1].components(separatedBy: "\"")[0]
        let png = try #require(Data(base64Encoded: base64))
        let decoded = try StandardImageDecoder().decode(png, source: "thumbnail", target: nil)
        #expect(decoded.width == 40 && decoded.height == 40)
    }
}

/// The reference network, trained as usual, whose every inference answer is class 0 (logits
/// [20, 0, ...]): a fine-tuning run that makes the model worse, on purpose.
struct ConstantAnswerNetwork: FineTunableNetwork {
    var inner: ReferenceFineTuningNetwork
    var entryLayer: String { inner.entryLayer }
    var trainableVariables: [String] { inner.trainableVariables }

    func lossAndGradients(entry: Tensor, labels: [Int], loss: SoftmaxCrossEntropy, training: Bool,
                          random: inout SplitMix64) throws -> (loss: Double, logits: Tensor, gradients: ReferenceFineTuningNetwork.Gradients) {
        try inner.lossAndGradients(entry: entry, labels: labels, loss: loss, training: training, random: &random)
    }

    func logits(entry: Tensor) throws -> Tensor {
        let real = try inner.logits(entry: entry)
        let (n, classes) = (real.shape[0], real.shape[1])
        var scalars = [Float](repeating: 0, count: n * classes)
        for i in 0..<n { scalars[i * classes] = 20 }
        return Tensor(shape: [n, classes], scalars: scalars)
    }

    mutating func apply(_ gradients: ReferenceFineTuningNetwork.Gradients, optimizer: inout Optimizer) throws {
        try inner.apply(gradients, optimizer: &optimizer)
    }

    func trainedWeights() throws -> KerasWeightSet { try inner.trainedWeights() }
}
