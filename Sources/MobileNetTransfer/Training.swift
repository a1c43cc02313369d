import Foundation
import MobileNetPipeline
import MobileNetTraining

/// How the head is trained. Defaults follow the Keras transfer-learning guide.
public struct TrainingSettings: Sendable, Equatable, Codable {
    /// Maximum number of passes over the training set.
    public var epochs: Int = 20
    /// Samples per gradient step (Keras default 32); the last batch of an epoch may be smaller.
    public var batchSize: Int = 32
    /// Seed of everything random: initialisation, shuffling, dropout.
    public var seed: UInt64 = 42
    /// The optimiser (default Adam, learning rate 1e-3).
    public var optimizer: OptimizerSettings = .adam(learningRate: 1e-3)
    /// Dropout rate before each Dense (Keras guide: 0.2).
    public var dropout: Double = 0.2
    /// Units of an optional hidden ReLU layer (nil: none).
    public var hiddenUnits: Int?
    /// L2 penalty on Dense kernels: `l2 · Σ w²` added to the loss (Keras `regularizers.L2`).
    public var l2: Double = 0
    /// Label smoothing ε of Keras `CategoricalCrossentropy`: targets `y(1 − ε) + ε / classes`.
    public var labelSmoothing: Double = 0
    /// Weigh each training sample by `n / (classes · n_class)` (scikit-learn "balanced", passed
    /// to Keras as `class_weight`). Validation loss is unweighted, as in Keras.
    public var balancedClassWeights: Bool = false
    /// Early stopping on validation loss (Keras `EarlyStopping(monitor="val_loss", patience=…,
    /// restore_best_weights=True)`): stop after this many epochs without improvement; nil: never.
    public var patience: Int? = 3

    /// Augmented views per training image (`train --augment N`); nil or 0: none. Recorded for
    /// the model file; the views themselves are made by ``/MobileNetPipeline/ImageAugmenter``.
    public var augmentedViews: Int?

    /// The defaults.
    public init() {}
}

/// The metrics of one epoch, as Keras prints them.
public struct EpochRecord: Sendable, Equatable, Codable {
    /// 1-based epoch number.
    public var epoch: Int
    /// Mean training loss over the epoch's batches (weighted by batch size; dropout active;
    /// including the L2 penalty), like Keras's `loss`.
    public var loss: Double
    /// Training accuracy over the epoch's batches (dropout active).
    public var accuracy: Double
    /// Validation loss (inference mode, unweighted, with the L2 penalty).
    public var validationLoss: Double?
    /// Validation accuracy.
    public var validationAccuracy: Double?

    /// A record from its values.
    public init(epoch: Int, loss: Double, accuracy: Double, validationLoss: Double? = nil, validationAccuracy: Double? = nil) {
        self.epoch = epoch
        self.loss = loss
        self.accuracy = accuracy
        self.validationLoss = validationLoss
        self.validationAccuracy = validationAccuracy
    }
}

/// Labelled embeddings: `features` `[n, d]` and a label in `0..<classes` per row.
public struct LabelledMatrix: Sendable {
    /// `[n, d]`.
    public var features: Matrix
    /// `n` labels.
    public var labels: [Int]

    /// Creates labelled data (`labels.count == features.rows`).
    public init(features: Matrix, labels: [Int]) {
        precondition(features.rows == labels.count, "LabelledMatrix: \(features.rows) rows, \(labels.count) labels")
        self.features = features
        self.labels = labels
    }
}

/// The loss of a head on a batch and its gradients, derived by hand (checked by finite
/// differences in the tests).
///
/// Loss (Keras `CategoricalCrossentropy(label_smoothing=ε)` on softmax outputs, reduction
/// `sum_over_batch_size`, sample weights, plus `l2 · Σ kernel²`):
/// `L = (1/n) Σᵢ wᵢ · (−Σⱼ yᵢⱼ log softmax(zᵢ)ⱼ) + l2 Σ‖W‖²`, with `y` the smoothed one-hot targets.
/// `∂L/∂zᵢⱼ = wᵢ/n · (pᵢⱼ − yᵢⱼ)`; Dense and ReLU backpropagate as usual, dropout multiplies by its mask.
public struct HeadObjective: Sendable {
    /// Label smoothing ε.
    public var labelSmoothing: Double
    /// L2 penalty on kernels.
    public var l2: Double
    /// Per-class sample weight (nil: all 1).
    public var classWeights: [Double]?

    /// Creates an objective.
    public init(labelSmoothing: Double = 0, l2: Double = 0, classWeights: [Double]? = nil) {
        self.labelSmoothing = labelSmoothing
        self.l2 = l2
        self.classWeights = classWeights
    }

    /// Loss, gradients (per Dense layer: kernel then bias, input first) and logits.
    ///
    /// - Parameters:
    ///   - head: the classifier head to run.
    ///   - x: the batch of embeddings, `[n, inputs]`, one row per example.
    ///   - labels: the class index (0-based) of each row of `x`.
    ///   - training: dropout active (masks drawn from `random`) and class weights applied.
    ///   - random: the seeded generator for the dropout masks (advanced only when `training`).
    /// - Returns: the loss (``/MobileNetTraining/SoftmaxCrossEntropy`` plus `l2·Σ kernel²`), the
    ///   gradients and the logits `[n, classes]`.
    /// - Throws: ``/MobileNetTraining/FineTuningError`` for a label smoothing outside 0...1, labels
    ///   not one per row or outside the classes, class weights not one per class or negative.
    public func evaluate(head: ClassifierHead, x: Matrix, labels: [Int], training: Bool,
                         random: inout SeededRandom) throws(FineTuningError) -> (loss: Double, gradients: [[Double]], logits: Matrix) {
        var inputs: [Matrix] = []
        var masks: [[Double]?] = []
        var h = x
        for layer in head.layers {
            inputs.append(h)
            switch layer {
            case .dropout(let rate):
                if training && rate > 0 {
                    let scale = 1 / (1 - rate)
                    let mask = (0..<h.values.count).map { _ in random.uniform() < rate ? 0.0 : scale }
                    for i in h.values.indices { h.values[i] *= mask[i] }
                    masks.append(mask)
                } else {
                    masks.append(nil)
                }
            case .dense(let d):
                h = d.forward(h)
                masks.append(nil)
            case .relu:
                h.values = h.values.map { max(0, $0) }
                masks.append(nil)
            }
        }
        let logits = h
        // The loss of the fine-tuning phase (Keras CategoricalCrossentropy with class weights as
        // sample weights in training; validation unweighted, as Keras reports it).
        let crossEntropy = try SoftmaxCrossEntropy(labelSmoothing: labelSmoothing, classWeights: training ? classWeights : nil)
        let (crossEntropyLoss, logitGradient) = try crossEntropy.evaluate(logits: DoubleTensor(shape: [logits.rows, logits.columns], scalars: logits.values),
                                                                          labels: labels)
        var loss = crossEntropyLoss
        let grad = Matrix(rows: logits.rows, columns: logits.columns, values: logitGradient.scalars)
        let penalty = L2Penalty(l2)
        for d in head.denseLayers { loss += penalty.loss(of: d.kernel) }
        // Backward.
        var gradients: [[Double]] = []
        var g = grad
        for (index, layer) in head.layers.enumerated().reversed() {
            switch layer {
            case .dropout:
                if let mask = masks[index] { for i in g.values.indices { g.values[i] *= mask[i] } }
            case .relu:
                let input = inputs[index]
                for i in g.values.indices where input.values[i] <= 0 { g.values[i] = 0 }
            case .dense(let d):
                var (dx, dw, db) = d.backward(input: inputs[index], outputGradient: g)
                if l2 != 0 { penalty.addGradient(of: d.kernel, to: &dw) }
                gradients.insert(contentsOf: [dw, db], at: 0)
                dx.rows = inputs[index].rows
                g = dx
            }
        }
        return (loss, gradients, logits)
    }
}

extension ClassifierHead {
    /// The trainable arrays, per Dense layer kernel then bias, input first.
    public var parameters: [[Double]] {
        get { denseLayers.flatMap { [$0.kernel, $0.bias] } }
        set {
            var index = 0
            for (i, layer) in layers.enumerated() {
                guard case .dense(var d) = layer else { continue }
                d.kernel = newValue[index]
                d.bias = newValue[index + 1]
                index += 2
                layers[i] = .dense(d)
            }
        }
    }
}

/// Trains a ``ClassifierHead`` on embeddings like Keras `model.fit`: shuffled mini-batches each
/// epoch, validation at the end of each epoch, early stopping on validation loss that restores
/// the best weights. Deterministic: the same inputs and settings give a bit-identical head.
public struct HeadTrainer: Sendable {
    /// The settings.
    public var settings: TrainingSettings

    /// Creates a trainer.
    public init(settings: TrainingSettings) { self.settings = settings }

    /// Class weights for `labels` per ``TrainingSettings/balancedClassWeights``: `n / (classes · n_c)`
    /// (0 for a class with no samples).
    public static func balancedWeights(labels: [Int], classes: Int) -> [Double] {
        var counts = [Int](repeating: 0, count: classes)
        for l in labels { counts[l] += 1 }
        return counts.map { $0 == 0 ? 0 : Double(labels.count) / (Double(classes) * Double($0)) }
    }

    /// Trains a new head.
    ///
    /// - Parameters:
    ///   - train: training embeddings and labels.
    ///   - validation: validation data (required for early stopping; nil trains all epochs).
    ///   - classes: number of classes.
    ///   - onEpoch: called after each epoch (for a progress line).
    /// - Returns: the head (best validation loss when early stopping is on, rounded to Float32)
    ///   and the history of every epoch run.
    /// - Throws: ``/MobileNetTraining/FineTuningError`` from the loss (``HeadObjective/evaluate(head:x:labels:training:random:)``):
    ///   a label smoothing outside 0...1 or a label outside `0..<classes`;
    ///   ``ClassifierTrainingError/headDiverged(epoch:loss:)`` when the loss or the weights stop
    ///   being finite (after that epoch's `onEpoch`).
    public func train(train: LabelledMatrix, validation: LabelledMatrix?, classes: Int,
                      onEpoch: ((EpochRecord) -> Void)? = nil) throws -> (head: ClassifierHead, history: [EpochRecord], bestEpoch: Int) {
        var random = SeededRandom(seed: settings.seed)
        var head = ClassifierHead(inputs: train.features.columns, classes: classes, hidden: settings.hiddenUnits,
                                  dropout: settings.dropout, random: &random)
        let objective = HeadObjective(labelSmoothing: settings.labelSmoothing, l2: settings.l2,
                                      classWeights: settings.balancedClassWeights ? Self.balancedWeights(labels: train.labels, classes: classes) : nil)
        var optimizer = Optimizer(settings.optimizer)
        var history: [EpochRecord] = []
        var best: (loss: Double, head: ClassifierHead, epoch: Int)?
        var wait = 0
        let n = train.labels.count
        let batch = max(1, settings.batchSize)
        for epoch in 1...max(1, settings.epochs) {
            var order = Array(0..<n)
            random.shuffle(&order)
            var lossSum = 0.0
            var correct = 0
            var start = 0
            while start < n {
                let indices = Array(order[start..<min(start + batch, n)])
                start += batch
                let x = train.features.gathering(rows: indices)
                let labels = indices.map { train.labels[$0] }
                let result = try objective.evaluate(head: head, x: x, labels: labels, training: true, random: &random)
                lossSum += result.loss * Double(indices.count)
                correct += Self.correctCount(logits: result.logits, labels: labels)
                var parameters = head.parameters
                optimizer.update(&parameters, gradients: result.gradients)
                head.parameters = parameters
            }
            var record = EpochRecord(epoch: epoch, loss: lossSum / Double(max(n, 1)), accuracy: Double(correct) / Double(max(n, 1)))
            if let validation, !validation.labels.isEmpty {
                var unused = SeededRandom(seed: 0)
                let result = try objective.evaluate(head: head, x: validation.features, labels: validation.labels, training: false, random: &unused)
                record.validationLoss = result.loss
                record.validationAccuracy = Double(Self.correctCount(logits: result.logits, labels: validation.labels)) / Double(validation.labels.count)
            }
            history.append(record)
            onEpoch?(record)
            // NaN or infinite weights (a learning rate or L2 factor far too high) never recover:
            // stop with the reason instead of writing a model that cannot be used.
            if !record.loss.isFinite || !(record.validationLoss?.isFinite ?? true) || !head.parameters.allSatisfy({ $0.allSatisfy(\.isFinite) }) {
                throw ClassifierTrainingError.headDiverged(epoch: epoch, loss: record.loss.isFinite ? (record.validationLoss ?? record.loss) : record.loss)
            }
            if let patience = settings.patience, let valLoss = record.validationLoss {
                if let current = best, valLoss >= current.loss {
                    wait += 1
                    if wait >= patience { break }
                } else {
                    best = (valLoss, head, epoch)
                    wait = 0
                }
            }
        }
        if let best { return (best.head.roundedToFloat32(), history, best.epoch) }
        return (head.roundedToFloat32(), history, history.count)
    }

    static func correctCount(logits: Matrix, labels: [Int]) -> Int {
        var correct = 0
        for r in 0..<logits.rows {
            let row = Array(logits.row(r))
            if let top = row.indices.max(by: { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }), top == labels[r] { correct += 1 }
        }
        return correct
    }
}
