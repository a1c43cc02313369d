import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetPipeline
import MobileNetTraining

// The second half of the Keras guide "Transfer learning and fine-tuning"
// (https://keras.io/guides/transfer_learning/, and the TensorFlow tutorial "Transfer learning
// with a pretrained ConvNet", section "Fine tuning"): after the head is trained on the frozen
// base, `base_model.layers[fine_tune_at:]` are unfrozen and trained with the head at a small
// learning rate.

/// Where fine-tuning starts: Keras's `fine_tune_at` (the first N layers of the base stay
/// frozen), or the name of the first trainable layer.
public enum FineTunePoint: Sendable, Equatable, Codable, CustomStringConvertible {
    /// `base_model.layers[n:]` are trained, `n` in `0...layers.count` (0 or 1: the whole base,
    /// since layer 0 is the input; `layers.count`: only the head). The Keras guide uses 100.
    case index(Int)
    /// The first trainable layer by its Keras name (`block_12_expand`).
    case layer(String)

    public var description: String {
        switch self {
        case .index(let n): "fine-tune point \(n)"
        case .layer(let name): "fine-tune layer '\(name)'"
        }
    }

    /// The index into the base's Keras layer list (`input_layer` … `out_relu`).
    ///
    /// - Parameter layers: the base's layers (``/MobileNetModel/MobileNetV2Architecture/layers(for:)``
    ///   without the top).
    /// - Throws: ``FineTuningSetupError/pointOutOfRange(_:layerCount:)`` or
    ///   ``FineTuningSetupError/unknownLayer(_:suggestions:)`` (with the closest names).
    public func resolve(in layers: [LayerSpec]) throws(FineTuningSetupError) -> Int {
        switch self {
        case .index(let n):
            guard n >= 0, n <= layers.count else { throw .pointOutOfRange(n, layerCount: layers.count) }
            return n
        case .layer(let name):
            if let index = layers.firstIndex(where: { $0.name == name }) { return index }
            throw .unknownLayer(name, suggestions: Self.closest(to: name, in: layers.map(\.name)))
        }
    }

    /// Up to three names closest to `name` by edit distance (for a typo's message).
    static func closest(to name: String, in names: [String]) -> [String] {
        func distance(_ a: [Character], _ b: [Character]) -> Int {
            guard !a.isEmpty else { return b.count }
            guard !b.isEmpty else { return a.count }
            var previous = Array(0...b.count)
            for i in 1...a.count {
                var current = [Int](repeating: 0, count: b.count + 1)
                current[0] = i
                for j in 1...b.count {
                    let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                    current[j] = min(substitution, min(previous[j], current[j - 1]) + 1)
                }
                previous = current
            }
            return previous[b.count]
        }
        let target = Array(name.lowercased())
        let scored: [(String, Int)] = names.map { candidate in (candidate, distance(target, Array(candidate.lowercased()))) }
        return scored
            .sorted { (a: (String, Int), b: (String, Int)) -> Bool in a.1 < b.1 || (a.1 == b.1 && a.0 < b.0) }.prefix(3).map { $0.0 }
    }
}

/// Why fine-tuning cannot start. Each message says what is accepted.
public enum FineTuningSetupError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The fine-tune index is not in `0...layerCount`.
    case pointOutOfRange(Int, layerCount: Int)
    /// No base layer has this name; the closest names are given.
    case unknownLayer(String, suggestions: [String])
    /// The head has a hidden layer; the fine-tuned model is the guide's Dropout → Dense head.
    case hiddenLayer
    /// A setting is out of range.
    case invalidSetting(String)
    /// The base weights do not fit (another alpha, a missing layer), naming the file.
    case baseWeights(path: String, message: String)

    public var description: String {
        switch self {
        case .pointOutOfRange(let n, let count):
            "fine-tune point \(n) is out of range: the MobileNetV2 base has \(count) layers, so --fine-tune-at takes 0...\(count) (Keras base_model.layers[N:] are trained; the guide uses 100)"
        case .unknownLayer(let name, let suggestions):
            "'\(name)' is not a layer of the MobileNetV2 base" + (suggestions.isEmpty ? "" : "; closest: \(suggestions.joined(separator: ", "))")
        case .hiddenLayer:
            "fine-tuning trains the guide's Dropout → Dense head; a head with a hidden layer (--hidden) cannot be fine-tuned"
        case .invalidSetting(let message): message
        case .baseWeights(let path, let message): "\(path): the base weights cannot be fine-tuned (\(message))"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The optimiser of the fine-tuning phase.
public enum FineTuningOptimizer: String, Sendable, Equatable, Codable, CaseIterable {
    /// Keras `RMSprop` with its defaults (ρ 0.9, ε 1e-7, no momentum): the TensorFlow tutorial's choice.
    case rmsprop
    /// Keras `Adam` with its defaults: the Keras guide's choice.
    case adam
    /// Keras `SGD` with momentum (``FineTuningSettings/momentum``).
    case sgd
}

/// How the top of the base is fine-tuned (phase 2). Defaults follow the Keras guide.
public struct FineTuningSettings: Sendable, Equatable, Codable {
    /// Where the trainable part starts.
    public var point: FineTunePoint
    /// Maximum number of fine-tuning epochs (the guide: 10).
    public var epochs: Int = 10
    /// Learning rate; nil: ``guideLearningRate``.
    public var learningRate: Double?
    /// The optimiser (default RMSprop).
    public var optimizer: FineTuningOptimizer = .rmsprop
    /// Momentum of SGD.
    public var momentum: Double = 0.9
    /// Images per training step (Keras batch_size 32).
    public var batchSize: Int = 32
    /// Early stopping on validation loss, restoring the best epoch's weights (Keras
    /// `EarlyStopping(monitor="val_loss", patience=…, restore_best_weights=True)`, as the head
    /// phase); nil: keep the best of all epochs anyway, never stop early.
    public var patience: Int? = 3
    /// What augmentation was applied (recorded; the function itself is
    /// ``ClassifierTraining/augmentation``).
    public var augmentation: String?

    /// The fine-tuning learning rate of both Keras guides, 1e-5: TensorFlow's "Transfer learning
    /// and fine-tuning" tutorial fine-tunes at `base_learning_rate / 10` with a base of 1e-4
    /// (RMSprop), keras.io's guide at `Adam(1e-5)`. (The head's Adam(1e-3) / 10 = 1e-4 made
    /// the flowers model worse than the head alone: issue 32.)
    public static let guideLearningRate = 1e-5

    /// Settings for fine-tuning from `point` with the defaults.
    public init(point: FineTunePoint) { self.point = point }

    /// The optimiser settings: ``optimizer`` at ``learningRate`` (``guideLearningRate`` when nil).
    public var optimizerSettings: OptimizerSettings {
        let rate = learningRate ?? Self.guideLearningRate
        switch optimizer {
        case .rmsprop: return .rmsprop(learningRate: rate)
        case .adam: return .adam(learningRate: rate)
        case .sgd: return .sgd(learningRate: rate, momentum: momentum)
        }
    }

    /// Checks the ranges.
    ///
    /// - Throws: ``FineTuningSetupError/invalidSetting(_:)``.
    public func validate() throws(FineTuningSetupError) {
        guard (1...100_000).contains(epochs) else { throw .invalidSetting("fine-tuning epochs must be in 1...100000, got \(epochs)") }
        guard (1...4096).contains(batchSize) else { throw .invalidSetting("fine-tuning batch size must be in 1...4096, got \(batchSize)") }
        if let learningRate, !(learningRate.isFinite && learningRate > 0 && learningRate <= 10) {
            throw .invalidSetting("fine-tuning learning rate must be in (0, 10], got \(learningRate)")
        }
        guard momentum.isFinite, (0..<1).contains(momentum) else { throw .invalidSetting("momentum must be in [0, 1), got \(momentum)") }
        if let patience, patience < 1 { throw .invalidSetting("patience must be at least 1, got \(patience)") }
    }
}

/// On-the-fly augmentation of one preprocessed training image, applied anew each epoch (a new
/// random view per image and epoch, drawn from a generator that depends only on the seed, the
/// epoch and the image, so results do not depend on threads).
public struct FineTuningAugmentation: Sendable {
    /// What it does, recorded in the model file (`RandomFlip("horizontal")`).
    public var name: String
    /// Maps a `[1, H, W, 3]` preprocessed image to an augmented one of the same shape.
    public var apply: @Sendable (Tensor, inout SeededRandom) -> Tensor

    /// An augmentation from its parts.
    public init(name: String, apply: @escaping @Sendable (Tensor, inout SeededRandom) -> Tensor) {
        self.name = name
        self.apply = apply
    }

    /// Keras `RandomFlip("horizontal")`: each image mirrored left-right with probability 0.5.
    public static let horizontalFlip = FineTuningAugmentation(name: "RandomFlip(\"horizontal\")") { image, random in
        random.uniform() < 0.5 ? flippedHorizontally(image) : image
    }

    /// Keras `RandomFlip("horizontal")` + `RandomRotation(factor)` (fill mode reflect,
    /// bilinear) as ``/MobileNetPipeline/KerasAugmentation`` computes them, on the preprocessed
    /// image: both steps are linear in the pixel values with weights summing to 1 (reflect fill
    /// samples inside the image only), so applying them after `x / 127.5 − 1` equals applying them
    /// before, as Keras does, up to Float rounding. The view is drawn from the per-image, per-epoch
    /// generator the trainer passes.
    public static func keras(_ augmentation: KerasAugmentation) -> FineTuningAugmentation {
        let rotation = augmentation.angleRangeDegrees
        let name = (augmentation.horizontalFlip ? "RandomFlip(\"horizontal\") + " : "")
            + String(format: "RandomRotation(%g...%g degrees, fill_mode=\"reflect\")", rotation.lowerBound, rotation.upperBound)
        return FineTuningAugmentation(name: name) { image, random in
            let view = augmentation.view(seed: random.next(), epoch: 0, index: 0)
            let (n, h, w) = (image.shape[0], image.shape[1], image.shape[2])
            guard n == 1 else { return image }
            return Tensor(shape: image.shape, scalars: augmentation.apply(view, to: image.scalars, height: h, width: w))
        }
    }

    /// A `[N, H, W, C]` tensor mirrored along its width.
    public static func flippedHorizontally(_ image: Tensor) -> Tensor {
        let (n, h, w, c) = (image.shape[0], image.shape[1], image.shape[2], image.shape[3])
        var out = image
        for b in 0..<n {
            for y in 0..<h {
                let row = (b * h + y) * w
                for x in 0..<w {
                    for k in 0..<c { out.scalars[(row + x) * c + k] = image.scalars[(row + w - 1 - x) * c + k] }
                }
            }
        }
        return out
    }
}

/// The trainable top of a fine-tuning run: the layers from the fine-tune point and the head,
/// fed with the activation of ``entryLayer`` (computed by the frozen base). Implemented by the
/// fast `FineTuningNetwork` and, for tiny test models, by ``ReferenceFineTuningNetwork`` (the
/// Double reference ``/MobileNetTraining/FineTuningModel``).
public protocol FineTunableNetwork: Sendable {
    /// What ``lossAndGradients(entry:labels:loss:training:random:)`` returns and ``apply(_:optimizer:)`` takes.
    associatedtype Gradients
    /// The Keras layer whose output is the entry activation (`input_layer`: the preprocessed image).
    var entryLayer: String { get }
    /// Paths of the trainable variables (Keras `model.trainable_variables` order).
    var trainableVariables: [String] { get }
    /// Loss, logits `[N, classes]` and gradients of one batch of entry activations.
    func lossAndGradients(entry: Tensor, labels: [Int], loss: SoftmaxCrossEntropy, training: Bool,
                          random: inout SplitMix64) throws -> (loss: Double, logits: Tensor, gradients: Gradients)
    /// Logits `[N, classes]` in inference mode (no Dropout).
    func logits(entry: Tensor) throws -> Tensor
    /// One optimiser step.
    mutating func apply(_ gradients: Gradients, optimizer: inout Optimizer) throws
    /// The trained layers (from the fine-tune point, every variable, BatchNorm statistics
    /// included) and `predictions` (kernel `[C, classes]`, bias), by Keras layer name.
    func trainedWeights() throws -> KerasWeightSet
}

/// What a network factory gets: the network to build.
public struct FineTuningSetup: Sendable {
    /// Alpha, input size and `classes` (top with logits).
    public var configuration: MobileNetV2Configuration
    /// The base layers and `predictions` (the head phase's Dense).
    public var weights: KerasWeightSet
    /// Keras's fine-tune point, `0...layers.count`.
    public var fineTuneAt: Int
    /// The head's Dropout rate (active in training steps only).
    public var dropout: Double
    /// The backend the frozen part runs on.
    public var backend: any InferenceBackend
    /// The L2 penalty of the classifier's kernel (the head phase's ``TrainingSettings/l2``: Keras
    /// keeps a layer's `kernel_regularizer` when the base is unfrozen); 0: none.
    public var classifierL2: Double

    /// A setup from its parts.
    public init(configuration: MobileNetV2Configuration, weights: KerasWeightSet, fineTuneAt: Int, dropout: Double, backend: any InferenceBackend,
                classifierL2: Double = 0) {
        self.configuration = configuration
        self.weights = weights
        self.fineTuneAt = fineTuneAt
        self.dropout = dropout
        self.backend = backend
        self.classifierL2 = classifierL2
    }
}

/// Builds the trainable network of a run.
public typealias FineTuningNetworkFactory = @Sendable (FineTuningSetup) throws -> any FineTunableNetwork

/// ``FineTunableNetwork`` on the Double reference ``/MobileNetTraining/FineTuningModel``: the
/// entry is the preprocessed image (the model runs its frozen part itself). Slow; for tiny
/// models in tests and as the oracle of the fast network.
public struct ReferenceFineTuningNetwork: FineTunableNetwork {
    /// The reference model.
    public private(set) var model: FineTuningModel

    /// Builds the reference model of `setup`.
    ///
    /// - Throws: ``/MobileNetTraining/FineTuningError``.
    public init(_ setup: FineTuningSetup) throws {
        model = try FineTuningModel(configuration: setup.configuration, weights: setup.weights, fineTuneAt: setup.fineTuneAt, dropout: setup.dropout)
        model.classifierL2 = setup.classifierL2
    }

    /// The factory for ``ClassifierTraining/networkFactory``.
    public static let factory: FineTuningNetworkFactory = { try ReferenceFineTuningNetwork($0) }

    public var entryLayer: String { "input_layer" }
    public var trainableVariables: [String] { model.trainableVariables }

    public func lossAndGradients(entry: Tensor, labels: [Int], loss: SoftmaxCrossEntropy, training: Bool,
                                 random: inout SplitMix64) throws -> (loss: Double, logits: Tensor, gradients: FineTuningModel.Gradients) {
        let r = try model.lossAndGradients(entry, labels: labels, loss: loss, training: training, random: &random)
        return (r.loss, r.logits.floatTensor, r.gradients)
    }

    public func logits(entry: Tensor) throws -> Tensor {
        var unused = SplitMix64(seed: 0)
        return try model.forward(entry, training: false, random: &unused).logits.floatTensor
    }

    public mutating func apply(_ gradients: FineTuningModel.Gradients, optimizer: inout Optimizer) throws {
        try model.apply(gradients, optimizer: &optimizer)
    }

    public func trainedWeights() throws -> KerasWeightSet {
        var layers: [KerasLayerWeights] = []
        for layer in model.layers[model.fineTuneAt...] where !layer.weights.isEmpty {
            layers.append(KerasLayerWeights(name: layer.name, arrays: layer.weights.map { spec in
                WeightArray(name: spec.name, shape: spec.shape,
                            values: (model.variables[FineTuningModel.path(layer: layer.name, variable: spec.name)] ?? []).map(Float.init))
            }))
        }
        let kernel = FineTuningModel.path(layer: FineTuningModel.classifierLayer, variable: "kernel")
        let bias = FineTuningModel.path(layer: FineTuningModel.classifierLayer, variable: "bias")
        layers.append(KerasLayerWeights(name: FineTuningModel.classifierLayer, arrays: [
            WeightArray(name: "kernel", shape: model.variableShapes[kernel] ?? [], values: (model.variables[kernel] ?? []).map(Float.init)),
            WeightArray(name: "bias", shape: model.variableShapes[bias] ?? [], values: (model.variables[bias] ?? []).map(Float.init)),
        ]))
        return KerasWeightSet(source: "fine-tuned", layers: layers)
    }
}

/// The fast Float network (``/MobileNetTraining/FineTuningNetwork``): its entry is the output of
/// the last layer below the fine-tune point that the folded oneDNN MobileNetV2 can tap.
extension FineTuningNetwork: FineTunableNetwork {}

/// The trainable networks fine-tuning can use.
public enum FineTuningNetworks {
    /// ``/MobileNetTraining/FineTuningNetwork``, the fast Float network.
    public static let fast: FineTuningNetworkFactory = { setup in
        var network = try FineTuningNetwork(configuration: setup.configuration, weights: setup.weights, fineTuneAt: setup.fineTuneAt, dropout: setup.dropout)
        network.classifierL2 = setup.classifierL2
        return network
    }
    /// The network `train --fine-tune-at` uses: ``fast``.
    public static let standard: FineTuningNetworkFactory = fast
}
