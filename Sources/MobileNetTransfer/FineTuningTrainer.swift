import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetPipeline
import MobileNetTraining

/// Phase 2 of the Keras guide: trains a ``FineTunableNetwork`` on image files like Keras
/// `model.fit`: each epoch the training images are shuffled, decoded on worker threads,
/// augmented (a new random view per image and epoch), preprocessed, run through the frozen base
/// up to the network's entry layer (oneDNN, BatchNorm folded), then one training step per batch;
/// then the validation images (no augmentation) give loss and accuracy. Early stopping on
/// validation loss keeps the best epoch's weights.
///
/// BatchNorm runs in inference mode throughout: the moving mean and variance stay frozen while
/// gamma and beta of the unfrozen BatchNorm layers train, as the guide intends
/// (`base_model(x, training=False)`). Keras 3 itself does otherwise once the base is unfrozen
/// (keras-team/keras#20285: `fit` passes `training=True` down, so unfrozen BatchNorm layers use
/// batch statistics), which wrecks the pretrained statistics on small datasets.
///
/// Deterministic: the same seed, data and settings give bit-identical weights (the shuffling,
/// the augmentation and the Dropout masks depend only on the seed, the epoch and the image).
///
/// Memory: each step allocates and frees its activations and gradients (~260 MB at batch 32,
/// 224x224, `fineTuneAt` 100). A program that trains should call
/// `MallocTuning.keepFreedBlocksForTraining()` once before (as `mobilenet train` does), or glibc
/// hands the blocks back to the system after every step and the kernel clears fresh pages for the
/// next (14% of a step's cycles).
public struct FineTuningTrainer: Sendable {
    /// The fine-tuning settings.
    public var settings: FineTuningSettings
    /// The optimiser (see ``FineTuningSettings/optimizerSettings``).
    public var optimizer: OptimizerSettings
    /// Label smoothing of the loss (the head phase's).
    public var labelSmoothing: Double
    /// Per-class weights of the training loss (Keras `fit(class_weight=…)`, the head phase's
    /// ``TrainingSettings/balancedClassWeights``), indexed by class; nil: all 1. The validation
    /// loss is unweighted, as Keras reports it.
    public var classWeights: [Double]?
    /// The seed.
    public var seed: UInt64
    /// The training-time augmentation; nil for none.
    public var augmentation: FineTuningAugmentation?
    /// Validation entry activations are kept between epochs up to this many bytes (the frozen
    /// part then runs once on them); above, they are recomputed each epoch.
    public var validationCacheBytes: Int = 1 << 30

    /// Creates a trainer.
    public init(settings: FineTuningSettings, optimizer: OptimizerSettings, labelSmoothing: Double = 0, seed: UInt64,
                augmentation: FineTuningAugmentation?) {
        self.settings = settings
        self.optimizer = optimizer
        self.labelSmoothing = labelSmoothing
        self.seed = seed
        self.augmentation = augmentation
    }

    /// Progress of a run, for a log.
    public enum Event: Sendable {
        /// Images handled in the current epoch's training part, of all.
        case progress(done: Int, total: Int)
        /// One epoch finished; `imagesPerSecond` counts the training images of the epoch over
        /// its training time (decoding, frozen part and steps; validation excluded).
        case epoch(EpochRecord, imagesPerSecond: Double)
        /// An image failed to decode this epoch (it is left out of the epoch).
        case failure(EmbeddingFailure)
    }

    /// The result of a run.
    public struct Result: Sendable {
        /// Per-epoch metrics.
        public var history: [EpochRecord]
        /// The epoch whose weights were kept (1-based).
        public var bestEpoch: Int
        /// The kept weights (``FineTunableNetwork/trainedWeights()`` of the best epoch).
        public var weights: KerasWeightSet
        /// Validation probabilities of the kept weights, `[n, classes]`, one row per image of
        /// ``validationImages``.
        public var validationProbabilities: Matrix
        /// The validation images that decoded, in order.
        public var validationImages: [LabelledImage]
        /// Images that failed (each reported once).
        public var failures: [EmbeddingFailure]
        /// Mean training throughput over the epochs, images per second.
        public var imagesPerSecond: Double
        /// Seconds of the whole phase.
        public var seconds: Double
    }

    /// Runs the fine-tuning epochs.
    ///
    /// - Parameters:
    ///   - network: the trainable network, already holding the head phase's weights.
    ///   - frozen: the frozen base (BatchNorm folded), to compute the entry activations.
    ///   - train: training images and labels.
    ///   - validation: validation images and labels (at least one must decode).
    ///   - preprocessor: how images become input (the head phase's).
    ///   - decodeThreads: decoding workers (nil: the default; 0: inline).
    ///   - events: called on the calling thread.
    /// - Returns: the best epoch's weights; a NaN or infinite validation loss is never the best
    ///   and ends the run (the weights diverged).
    /// - Throws: ``ClassifierTrainingError/noValidationImage``,
    ///   ``ClassifierTrainingError/fineTuningDiverged(epoch:validationLoss:)`` when the first
    ///   epoch's validation loss is already not finite, the network's and the backend's errors.
    public func run<Network: FineTunableNetwork>(network: inout Network, frozen: MobileNetV2, train: [LabelledImage], validation: [LabelledImage],
                                                 preprocessor: ImagePreprocessor, decodeThreads: Int?,
                                                 events: (Event) -> Void = { _ in }) throws -> Result {
        let started = Date()
        let loss = try SoftmaxCrossEntropy(labelSmoothing: labelSmoothing, classWeights: classWeights)
        let validationLoss = loss.unweighted
        var optimizer = Optimizer(self.optimizer)
        let entryLayer = network.entryLayer
        func entry(_ batch: Tensor) throws -> Tensor {
            if entryLayer == "input_layer" { return batch }
            guard let value = try frozen.activations(batch, layers: [entryLayer])[entryLayer] else { throw ModelError.unknownLayer(entryLayer) }
            return value
        }
        var shuffler = SeededRandom(seed: seed ^ 0x5EED_F17E)
        var dropout = SplitMix64(seed: seed ^ 0xD0D0_7E55)
        let runner = PreparedBatches(batchSize: settings.batchSize, decodeThreads: decodeThreads)
        var failed = Set<URL>()
        var failures: [EmbeddingFailure] = []
        func report(_ failure: EmbeddingFailure) {
            guard failed.insert(failure.url).inserted else { return }
            failures.append(failure)
            events(.failure(failure))
        }

        // Validation: entry activations once (no augmentation), kept when small enough.
        var validationEntries: [(Tensor, [Int])]?
        var validationKept: [LabelledImage] = []
        func validationBatches(_ body: (Tensor, [Int]) throws -> Void) throws {
            if let cached = validationEntries {
                for (x, labels) in cached { try body(x, labels) }
                return
            }
            var keep: [(Tensor, [Int])]? = []
            var bytes = 0
            var kept: [LabelledImage] = []
            try runner.run(count: validation.count, prepare: { index throws(ImageError) in try preprocessor.tensor(contentsOf: validation[index].url) }) { range, prepared in
                var inputs: [Tensor] = []
                var labels: [Int] = []
                for (index, item) in zip(range, prepared) {
                    switch item {
                    case .success(let tensor): inputs.append(tensor); labels.append(validation[index].label); kept.append(validation[index])
                    case .failure(let error): report(EmbeddingFailure(url: validation[index].url, error: error))
                    }
                }
                guard !inputs.isEmpty else { return }
                let x = try entry(Tensor.concatenatingBatches(inputs))
                bytes += x.count * MemoryLayout<Float>.size
                if bytes > validationCacheBytes { keep = nil } else { keep?.append((x, labels)) }
                try body(x, labels)
            }
            validationKept = kept
            validationEntries = keep
        }

        var history: [EpochRecord] = []
        var best: (loss: Double, weights: KerasWeightSet, probabilities: Matrix, epoch: Int)?
        var wait = 0
        var throughput: [Double] = []
        let augmentation = self.augmentation
        let seed = self.seed
        for epoch in 1...settings.epochs {
            let epochStart = Date()
            var shuffled = Array(train.indices)
            shuffler.shuffle(&shuffled)
            let order = shuffled
            var lossSum = 0.0, correct = 0, seen = 0
            try runner.run(count: order.count, prepare: { position throws(ImageError) in
                let image = train[order[position]]
                var tensor = try preprocessor.tensor(contentsOf: image.url)
                if let augmentation {
                    var random = Self.augmentationRandom(seed: seed, epoch: epoch, image: order[position])
                    tensor = augmentation.apply(tensor, &random)
                }
                return tensor
            }) { range, prepared in
                var inputs: [Tensor] = []
                var labels: [Int] = []
                for (position, item) in zip(range, prepared) {
                    let image = train[order[position]]
                    switch item {
                    case .success(let tensor): inputs.append(tensor); labels.append(image.label)
                    case .failure(let error): report(EmbeddingFailure(url: image.url, error: error))
                    }
                }
                if !inputs.isEmpty {
                    let x = try entry(Tensor.concatenatingBatches(inputs))
                    let step = try network.lossAndGradients(entry: x, labels: labels, loss: loss, training: true, random: &dropout)
                    try network.apply(step.gradients, optimizer: &optimizer)
                    lossSum += step.loss * Double(labels.count)
                    correct += Self.correctCount(step.logits, labels: labels)
                    seen += labels.count
                }
                events(.progress(done: range.upperBound, total: order.count))
            }
            let trainSeconds = Date().timeIntervalSince(epochStart)
            throughput.append(Double(seen) / max(trainSeconds, 1e-9))
            // Validation.
            var valLoss = 0.0, valCorrect = 0, valCount = 0
            var rows: [Double] = []
            try validationBatches { x, labels in
                let logits = try network.logits(entry: x)
                let (value, _) = try validationLoss.evaluate(logits: DoubleTensor(logits), labels: labels)
                valLoss += value * Double(labels.count)
                valCorrect += Self.correctCount(logits, labels: labels)
                valCount += labels.count
                rows += ClassifierHead.softmax(Matrix(rows: labels.count, columns: logits.shape[1], values: logits.scalars.map(Double.init))).values
            }
            guard valCount > 0 else { throw ClassifierTrainingError.noValidationImage }
            let record = EpochRecord(epoch: epoch, loss: lossSum / Double(max(seen, 1)), accuracy: Double(correct) / Double(max(seen, 1)),
                                     validationLoss: valLoss / Double(valCount), validationAccuracy: Double(valCorrect) / Double(valCount))
            history.append(record)
            events(.epoch(record, imagesPerSecond: throughput.last ?? 0))
            let probabilities = Matrix(rows: valCount, columns: rows.count / valCount, values: rows)
            let validationLoss = record.validationLoss!
            // A NaN or infinite validation loss (the weights diverged, e.g. a learning rate far
            // too high) is never the best epoch, and the run stops: NaN weights never recover.
            guard validationLoss.isFinite else { break }
            if let current = best, validationLoss >= current.loss {
                wait += 1
                if let patience = settings.patience, wait >= patience { break }
            } else {
                best = (validationLoss, try network.trainedWeights(), probabilities, epoch)
                wait = 0
            }
        }
        guard let best else {
            throw ClassifierTrainingError.fineTuningDiverged(epoch: history.count, validationLoss: history.last?.validationLoss ?? .nan)
        }
        return Result(history: history, bestEpoch: best.epoch, weights: best.weights, validationProbabilities: best.probabilities,
                      validationImages: validationKept, failures: failures,
                      imagesPerSecond: throughput.reduce(0, +) / Double(max(throughput.count, 1)), seconds: Date().timeIntervalSince(started))
    }

    /// The generator of one image's augmentation in one epoch: depends on the seed, the epoch and
    /// the image's index in the training list only.
    public static func augmentationRandom(seed: UInt64, epoch: Int, image: Int) -> SeededRandom {
        var mixer = SplitMix64(seed: seed ^ (UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(image) &* 0xD1B5_4A32_D192_ED03))
        return SeededRandom(seed: mixer.next())
    }

    static func correctCount(_ logits: Tensor, labels: [Int]) -> Int {
        let k = logits.shape.last ?? 1
        var correct = 0
        for (r, label) in labels.enumerated() {
            let row = logits.scalars[(r * k)..<((r + 1) * k)]
            if let top = row.indices.max(by: { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }), top - r * k == label { correct += 1 }
        }
        return correct
    }
}
