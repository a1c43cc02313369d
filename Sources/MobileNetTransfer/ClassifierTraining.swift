import Foundation
import MobileNetIO
import MobileNetModel
import MobileNetTraining
import MobileNetPipeline
import MobileNetStore

/// Why a classifier cannot be trained from the data given.
public enum ClassifierTrainingError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A class has no image that could be embedded.
    case noTrainingImage(className: String)
    /// No validation image could be embedded.
    case noValidationImage
    /// Fine-tuning diverged before any epoch had a finite validation loss (NaN or infinite
    /// weights, e.g. from a learning rate far too high): there is no model worth writing.
    case fineTuningDiverged(epoch: Int, validationLoss: Double)
    /// Training the head diverged: its loss or weights stopped being finite in `epoch` (a
    /// learning rate or L2 factor far too high); there is no model worth writing.
    case headDiverged(epoch: Int, loss: Double)

    public var description: String {
        switch self {
        case .noTrainingImage(let name): "class '\(name)' has no usable training image; nothing to learn it from"
        case .noValidationImage: "no usable validation image"
        case .fineTuningDiverged(let epoch, let loss):
            "fine-tuning diverged: val_loss \(loss) in fine-tuning epoch \(epoch), no epoch gave finite weights; use a lower --fine-tune-learning-rate"
        case .headDiverged(let epoch, let loss):
            "training the head diverged: loss \(loss) in epoch \(epoch), weights no longer finite; use a lower --learning-rate or --l2"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// What happens during ``ClassifierTraining/run(backbone:store:runtime:events:)``, for a log or a progress display.
public enum ClassifierTrainingEvent: Sendable {
    /// A line worth showing (data summary, cache counts, warnings).
    case message(String)
    /// A warning (a skipped file, an image in both training and validation).
    case warning(String)
    /// Embedding progress: images handled, images to compute.
    case embedding(done: Int, total: Int)
    /// Augmented views embedded so far, of all to compute.
    case augmentation(done: Int, total: Int)
    /// An image could not be embedded (it is left out; the run goes on).
    case failure(EmbeddingFailure)
    /// One epoch of head training finished.
    case epoch(EpochRecord)
    /// Fine-tuning progress in the current epoch: training images handled, of all.
    case fineTuning(done: Int, total: Int)
    /// One fine-tuning epoch finished (epochs numbered from 1), with its training throughput.
    case fineTuningEpoch(EpochRecord, imagesPerSecond: Double)
}

/// A validation image the final classifier gets wrong, for the report.
public struct Misclassification: Sendable, Equatable, Codable {
    /// The image file.
    public var url: URL
    /// Its class (folder).
    public var trueClass: String
    /// The most probable class.
    public var predictedClass: String
    /// The probability of ``predictedClass``, 0...1.
    public var probability: Double
    /// The probability of ``trueClass``, 0...1.
    public var trueClassProbability: Double

    /// A misclassified image from its values.
    public init(url: URL, trueClass: String, predictedClass: String, probability: Double, trueClassProbability: Double) {
        self.url = url
        self.trueClass = trueClass
        self.predictedClass = predictedClass
        self.probability = probability
        self.trueClassProbability = trueClassProbability
    }

    /// The misclassified images of an evaluation, most confident mistakes first.
    ///
    /// - Parameters:
    ///   - probabilities: `[n, classes]`.
    ///   - images: the `n` images in row order.
    ///   - classNames: class names by label.
    public static func find(probabilities: Matrix, images: [LabelledImage], classNames: [String]) -> [Misclassification] {
        var result: [Misclassification] = []
        for (r, image) in images.enumerated() where r < probabilities.rows {
            let row = Array(probabilities.row(r))
            guard let top = row.indices.max(by: { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }), top != image.label else { continue }
            result.append(Misclassification(url: image.url, trueClass: classNames[image.label], predictedClass: classNames[top],
                                            probability: row[top], trueClassProbability: row[image.label]))
        }
        return result.sorted { $0.probability > $1.probability || ($0.probability == $1.probability && $0.url.path < $1.url.path) }
    }
}

/// Transfer learning from folders, the Keras guide's first half: embed the images of one
/// sub-folder per class with the frozen backbone (through the embedding cache), optionally add
/// seeded augmented views, train a Dropout + Dense softmax head, evaluate it on the validation
/// images. The one call behind `mobilenet train`.
public struct ClassifierTraining: Sendable {
    /// One sub-folder of images per class (Keras `image_dataset_from_directory`).
    public var dataDirectory: URL
    /// A validation folder with the same class sub-folders; nil to hold out ``validationSplit``.
    public var validationDirectory: URL?
    /// Fraction of each class held out for validation when no ``validationDirectory`` is given (0 < f < 1).
    public var validationSplit: Double
    /// Head, optimiser and augmentation settings; the seed also drives the split.
    public var settings: TrainingSettings
    /// How images become network input; recorded in the model file.
    public var preprocessing: PreprocessingConfiguration
    /// Refuse images with more pixels (decompression bombs).
    public var maxPixels: Int
    /// k of the top-k accuracy in the evaluation.
    public var topK: Int
    /// Phase 2, fine-tuning the top of the base after the head phase; nil: the head only.
    public var fineTuning: FineTuningSettings?
    /// The on-the-fly augmentation of fine-tuning (default `RandomFlip("horizontal")`); nil: none.
    public var augmentation: FineTuningAugmentation? = .horizontalFlip
    /// Keep the fine-tuned model even when it is worse on validation than the head alone (lower
    /// accuracy, or the same with a higher loss). Default false: the head-only model is the
    /// result then (see ``Outcome/fineTuningKept``), and a message gives both figures.
    public var keepWorseFineTuning = false
    /// Builds the trainable network of fine-tuning (default ``FineTuningNetworks/standard``).
    public var networkFactory: FineTuningNetworkFactory = FineTuningNetworks.standard

    /// Creates a training job with the Keras guide's defaults.
    public init(dataDirectory: URL, validationDirectory: URL? = nil, validationSplit: Double = 0.2, settings: TrainingSettings = TrainingSettings(),
                preprocessing: PreprocessingConfiguration = .standard, maxPixels: Int = 100_000_000, topK: Int = 5) {
        self.dataDirectory = dataDirectory
        self.validationDirectory = validationDirectory
        self.validationSplit = validationSplit
        self.settings = settings
        self.preprocessing = preprocessing
        self.maxPixels = maxPixels
        self.topK = topK
    }

    /// The result of a run.
    public struct Outcome: Sendable {
        /// The trained classifier, ready to write (``ClassifierModel/write(to:overwrite:)``).
        public var model: ClassifierModel
        /// Validation metrics of the best epoch's head.
        public var evaluation: EvaluationReport
        /// Images that could not be embedded (left out of training and validation).
        public var failures: [EmbeddingFailure]
        /// Images used: training (with augmented views) and validation.
        public var trainingImages: Int, validationImages: Int
        /// Seconds spent training the head.
        public var headSeconds: Double
        /// Validation metrics of the head alone (equal to ``evaluation`` without fine-tuning).
        public var headOnlyEvaluation: EvaluationReport
        /// Validation metrics of the fine-tuned model, also when it was not kept; nil without fine-tuning.
        public var fineTunedEvaluation: EvaluationReport?
        /// Whether ``model`` is the fine-tuned model: true when fine-tuning did at least as well
        /// on validation as the head alone (accuracy, then loss on a tie) or
        /// ``keepWorseFineTuning`` was set; false without fine-tuning, and when the
        /// fine-tuned model was worse and the head-only model was kept instead.
        public var fineTuningKept = false
        /// Seconds of the fine-tuning phase (0 without it).
        public var fineTuningSeconds: Double = 0
        /// Mean fine-tuning throughput, training images per second (0 without it).
        public var fineTuningImagesPerSecond: Double = 0
        /// The validation images the saved classifier gets wrong.
        public var misclassified: [Misclassification] = []

        /// The self-contained HTML report (curves of both phases, confusion matrix, the
        /// misclassified validation images as thumbnails).
        public func htmlReport(title: String) -> String {
            HTMLReport.render(title: title, history: model.history, bestEpoch: model.bestEpoch, evaluation: evaluation,
                              fineTuningHistory: model.fineTuning?.history ?? [], fineTuningBestEpoch: model.fineTuning?.bestEpoch,
                              misclassified: misclassified)
        }
    }

    /// Runs the whole workflow.
    ///
    /// - Parameters:
    ///   - backbone: the frozen embedding network (``/MobileNetPipeline/Backbone/load(weightsPath:alpha:inputHeight:inputWidth:pooling:backend:resolver:)``).
    ///   - store: the embedding cache, or nil to compute everything.
    ///   - runtime: network batch size and decoding threads (the backend is the backbone's).
    ///   - events: called on the calling thread as the run goes.
    /// - Returns: the model, its evaluation and the failures (a bad image never stops the run).
    /// - Throws: ``FineTuningSetupError`` (before any image is embedded: a setting out of range,
    ///   a fine-tune point out of range or an unknown layer, a hidden head, base weights that
    ///   cannot be fine-tuned), ``DatasetError`` (missing or unusable folders),
    ///   ``ClassifierTrainingError``, ``/MobileNetStore/StoreError``, network errors.
    public func run(backbone: Backbone, store: EmbeddingStore?, runtime: RuntimeOptions,
                    events: @escaping (ClassifierTrainingEvent) -> Void = { _ in }) throws -> Outcome {
        // Fine-tuning is checked before any image is embedded or the head trained: a bad
        // setting, a fine-tune point out of range, an unknown layer, a hidden head or base
        // weights that cannot be fine-tuned fail at once instead of after phase 1.
        let c = backbone.network.configuration
        var fineTuningPlan: (settings: FineTuningSettings, base: KerasWeightSet, layers: [LayerSpec], fineTuneAt: Int)?
        if let fineTuning {
            try fineTuning.validate()
            guard settings.hiddenUnits == nil else { throw FineTuningSetupError.hiddenLayer }
            let layers = try MobileNetV2Architecture.layers(for: MobileNetV2Configuration(alpha: c.alpha, inputHeight: c.inputHeight, inputWidth: c.inputWidth,
                                                                                         includeTop: false, pooling: nil))
            let fineTuneAt = try fineTuning.point.resolve(in: layers)
            let base = try Self.baseWeights(backbone)
            fineTuningPlan = (fineTuning, base, layers, fineTuneAt)
        }
        let folder = try ImageFolder(root: dataDirectory)
        for warning in folder.warnings { events(.warning(warning)) }
        var trainImages: [LabelledImage]
        var valImages: [LabelledImage]
        if let validationDirectory {
            let valFolder = try ImageFolder(root: validationDirectory, classNames: folder.classNames)
            for warning in valFolder.warnings { events(.warning(warning)) }
            (trainImages, valImages) = (folder.images, valFolder.images)
        } else {
            (trainImages, valImages) = try folder.split(validationFraction: validationSplit, seed: settings.seed)
        }
        events(.message("classes: \(folder.classNames.joined(separator: ", ")); \(trainImages.count) training and \(valImages.count) validation images"))

        // Embeddings.
        let preprocessor = ImagePreprocessor(configuration: preprocessing, height: c.inputHeight, width: c.inputWidth, maxPixels: maxPixels)
        let embedder = try CachedEmbedder(backbone: backbone, preprocessor: preprocessor, store: store, runtime: runtime)
        let start = Date()
        let embedded = try embedder.embed(trainImages.map(\.url) + valImages.map(\.url)) { events(.embedding(done: $0, total: $1)) }
        var failures = embedded.failures
        for failure in embedded.failures { events(.failure(failure)) }
        events(.message("embeddings: \(embedded.embeddings.count) images embedded (\(embedded.cached) from the cache, \(embedded.computed) computed) in \(String(format: "%.1f", Date().timeIntervalSince(start))) s"))
        let embeddings = embedded.embeddings
        var (trainData, keptTrain) = Self.labelledMatrix(trainImages, embeddings: embeddings)
        if let views = settings.augmentedViews, views > 0 {
            let augmented = try embedder.embedAugmented(keptTrain.compactMap { image in embeddings[image.url].map { (image.url, $0.contentSHA256) } },
                                                        count: views, seed: settings.seed) { events(.augmentation(done: $0, total: $1)) }
            failures += augmented.failures
            for failure in augmented.failures { events(.failure(failure)) }
            var rows: [[Float]] = []
            var labels: [Int] = []
            for image in keptTrain { for vector in augmented.views[image.url] ?? [] { rows.append(vector); labels.append(image.label) } }
            trainData = LabelledMatrix(features: Matrix(rows: trainData.features.rows + rows.count, columns: trainData.features.columns,
                                                        values: trainData.features.values + rows.flatMap { $0.map(Double.init) }),
                                       labels: trainData.labels + labels)
            events(.message("augmentation: \(rows.count) augmented views added (\(views) per training image; \(augmented.cached) from the cache)"))
        }
        let (valData, keptVal) = Self.labelledMatrix(valImages, embeddings: embeddings)
        for warning in Self.overlapWarnings(train: keptTrain, validation: keptVal, embeddings: embeddings) { events(.warning(warning)) }
        for (label, name) in folder.classNames.enumerated() where !trainData.labels.contains(label) {
            throw ClassifierTrainingError.noTrainingImage(className: name)
        }
        guard !valData.labels.isEmpty else { throw ClassifierTrainingError.noValidationImage }

        // The head.
        let headStart = Date()
        let result = try HeadTrainer(settings: settings).train(train: trainData, validation: valData, classes: folder.classNames.count) { events(.epoch($0)) }
        let headSeconds = Date().timeIntervalSince(headStart)
        let headProbabilities = result.head.probabilities(valData.features)
        let headEvaluation = EvaluationReport(probabilities: headProbabilities, labels: valData.labels, classNames: folder.classNames, k: topK)
        var model = ClassifierModel(classNames: folder.classNames, backbone: backbone.identity, backboneWeightsPath: backbone.weightsURL.path,
                                    preprocessing: embedder.preprocessing, preprocessingConfiguration: preprocessing, head: result.head,
                                    training: settings, history: result.history, bestEpoch: result.bestEpoch, validation: headEvaluation)
        var outcome = Outcome(model: model, evaluation: headEvaluation, failures: failures, trainingImages: trainData.labels.count,
                              validationImages: valData.labels.count, headSeconds: headSeconds, headOnlyEvaluation: headEvaluation,
                              misclassified: Misclassification.find(probabilities: headProbabilities, images: keptVal, classNames: folder.classNames))
        guard let plan = fineTuningPlan else { return outcome }
        let (tuning, base, layers, fineTuneAt) = plan

        // Phase 2: fine-tuning from the head's weights.
        guard let dense = result.head.denseLayers.last else { throw FineTuningSetupError.hiddenLayer }
        var setupConfiguration = MobileNetV2Configuration(alpha: c.alpha, inputHeight: c.inputHeight, inputWidth: c.inputWidth,
                                                          includeTop: true, pooling: nil, classes: folder.classNames.count)
        setupConfiguration.classifierActivation = .none
        let headLayer = KerasLayerWeights(name: "predictions", arrays: [
            WeightArray(name: "kernel", shape: [dense.inputs, dense.outputs], values: dense.kernel.map { Float($0) }),
            WeightArray(name: "bias", shape: [dense.outputs], values: dense.bias.map { Float($0) }),
        ])
        let setup = FineTuningSetup(configuration: setupConfiguration, weights: KerasWeightSet(source: base.source, layers: base.layers + [headLayer]),
                                    fineTuneAt: fineTuneAt, dropout: settings.dropout, backend: runtime.backend, classifierL2: settings.l2)
        var network = try networkFactory(setup)
        var recorded = tuning
        recorded.augmentation = augmentation?.name
        let optimizer = tuning.optimizerSettings
        var trainer = FineTuningTrainer(settings: recorded, optimizer: optimizer, labelSmoothing: settings.labelSmoothing,
                                        seed: settings.seed, augmentation: augmentation)
        // The head phase's class weights and L2 penalty hold in phase 2 too, as in Keras (the same
        // `class_weight` passed to the second `fit`; the Dense layer keeps its regularizer).
        if settings.balancedClassWeights {
            trainer.classWeights = HeadTrainer.balancedWeights(labels: keptTrain.map(\.label), classes: folder.classNames.count)
        }
        let firstLayer = fineTuneAt < layers.count ? layers[fineTuneAt].name : nil
        events(.message("fine-tuning: layers \(fineTuneAt)...\(layers.count - 1) of \(layers.count) trainable (from \(firstLayer ?? "none: the head only")), \(network.trainableVariables.count) variables, entry \(network.entryLayer); \(Self.describe(optimizer)), batch \(tuning.batchSize), up to \(tuning.epochs) epochs; BatchNorm in inference mode"))
        let tuned = try Self.fineTune(&network, trainer: trainer, frozen: backbone.network, train: keptTrain, validation: keptVal,
                                      preprocessor: preprocessor, decodeThreads: runtime.decodeThreads, events: events)
        guard let predictions = tuned.weights.layer(named: "predictions"), predictions.arrays.count == 2 else {
            throw FineTuningSetupError.invalidSetting("the trained network returned no predictions layer")
        }
        let tunedHead = ClassifierHead(layers: [.dropout(rate: settings.dropout), .dense(DenseLayer(inputs: dense.inputs, outputs: dense.outputs,
            kernel: predictions.arrays[0].values.map(Double.init), bias: predictions.arrays[1].values.map(Double.init)))])
        let evaluation = EvaluationReport(probabilities: tuned.validationProbabilities, labels: tuned.validationImages.map(\.label),
                                          classNames: folder.classNames, k: topK)
        outcome.failures += tuned.failures.filter { failure in !outcome.failures.contains { $0.url == failure.url } }
        outcome.fineTuningSeconds = tuned.seconds
        outcome.fineTuningImagesPerSecond = tuned.imagesPerSecond
        outcome.fineTunedEvaluation = evaluation
        // A fine-tuned model worse on validation than the head alone is not the result unless asked for.
        guard keepWorseFineTuning || !Self.isWorse(evaluation, than: headEvaluation) else {
            events(.message(String(format: "fine-tuning made the model worse on validation (val_accuracy %.4f, val_loss %.4f; the head alone: %.4f, %.4f): keeping the head-only model",
                                    evaluation.accuracy, evaluation.loss, headEvaluation.accuracy, headEvaluation.loss)))
            return outcome
        }
        model.head = tunedHead
        model.validation = evaluation
        model.fineTuning = FineTunedBase(fineTuneAt: fineTuneAt, firstLayer: firstLayer, settings: recorded, optimizer: optimizer, history: tuned.history,
                                         bestEpoch: tuned.bestEpoch, headOnlyValidation: headEvaluation, weights: tuned.weights)
        outcome.model = model
        outcome.evaluation = evaluation
        outcome.fineTuningKept = true
        outcome.misclassified = Misclassification.find(probabilities: tuned.validationProbabilities, images: tuned.validationImages, classNames: folder.classNames)
        return outcome
    }

    /// Whether `tuned` is worse than `head` on the same validation images: lower accuracy, or
    /// the same accuracy with a higher loss. The rule by which a fine-tuned model gives way to
    /// the head-only one (``keepWorseFineTuning``).
    public static func isWorse(_ tuned: EvaluationReport, than head: EvaluationReport) -> Bool {
        if tuned.accuracy != head.accuracy { return tuned.accuracy < head.accuracy }
        return tuned.loss > head.loss
    }

    /// Opens the existential network for the generic trainer.
    static func fineTune<N: FineTunableNetwork>(_ network: inout N, trainer: FineTuningTrainer, frozen: MobileNetV2, train: [LabelledImage],
                                                validation: [LabelledImage], preprocessor: ImagePreprocessor, decodeThreads: Int?,
                                                events: @escaping (ClassifierTrainingEvent) -> Void) throws -> FineTuningTrainer.Result {
        try trainer.run(network: &network, frozen: frozen, train: train, validation: validation, preprocessor: preprocessor, decodeThreads: decodeThreads) { event in
            switch event {
            case .progress(let done, let total): events(.fineTuning(done: done, total: total))
            case .epoch(let record, let rate): events(.fineTuningEpoch(record, imagesPerSecond: rate))
            case .failure(let failure): events(.failure(failure))
            }
        }
    }

    /// The MobileNetV2 layers of the backbone's weight file (nested in a Keras transfer model or not).
    ///
    /// - Throws: ``FineTuningSetupError/baseWeights(path:message:)`` naming the file.
    public static func baseWeights(_ backbone: Backbone) throws -> KerasWeightSet {
        let path = backbone.weightsURL.path
        let weights: KerasWeightSet
        do {
            weights = try KerasWeightFile.read(contentsOf: backbone.weightsURL).weights.mobileNetV2Part().droppingClassifier()
        } catch {
            throw FineTuningSetupError.baseWeights(path: path, message: "\(error)")
        }
        // The same strict check as the network: another alpha or a missing layer is named here.
        do {
            _ = try weights.matched(to: backbone.network.configuration)
        } catch {
            throw FineTuningSetupError.baseWeights(path: path, message: error.description)
        }
        return weights
    }

    static func describe(_ optimizer: OptimizerSettings) -> String {
        switch optimizer {
        case .rmsprop(let lr, _, _, _, _): "RMSprop(learning_rate=\(lr))"
        case .adam(let lr, _, _, _): "Adam(learning_rate=\(lr))"
        case .sgd(let lr, let momentum): "SGD(learning_rate=\(lr), momentum=\(momentum))"
        }
    }

    /// The labelled matrix of the images that were embedded (the others are left out).
    public static func labelledMatrix(_ images: [LabelledImage], embeddings: [URL: ImageEmbedding]) -> (LabelledMatrix, [LabelledImage]) {
        let kept = images.filter { embeddings[$0.url] != nil }
        let rows = kept.compactMap { embeddings[$0.url]?.vector }
        return (LabelledMatrix(features: Matrix(stacking: rows), labels: kept.map(\.label)), kept)
    }

    /// Warnings for image contents that are in both training and validation (at most 10 named).
    static func overlapWarnings(train: [LabelledImage], validation: [LabelledImage], embeddings: [URL: ImageEmbedding]) -> [String] {
        var trainByHash: [String: URL] = [:]
        for image in train { if let hash = embeddings[image.url]?.contentSHA256 { trainByHash[hash] = image.url } }
        var warnings: [String] = []
        var count = 0
        for image in validation {
            guard let hash = embeddings[image.url]?.contentSHA256, let twin = trainByHash[hash] else { continue }
            count += 1
            if count <= 10 { warnings.append("\(image.url.path) (validation) has the same content as \(twin.path) (training)") }
        }
        if count > 10 { warnings.append("\(count) validation images in total have the same content as a training image") }
        return warnings
    }
}

extension RunnableModel {
    /// Metrics on a folder with one sub-folder per class (the model's classes): accuracy, top-k,
    /// per-class precision/recall/F1 and the confusion matrix. The one call behind `mobilenet evaluate`.
    ///
    /// - Returns: the report, the failures, and the folder's warnings.
    /// - Throws: ``DatasetError`` (the folder's classes differ), ``ClassifierTrainingError/noValidationImage``
    ///   when no image could be embedded, ``/MobileNetPipeline/PreprocessingMismatch``, store and network errors.
    public func evaluate(folder root: URL, k: Int, preprocessor: ImagePreprocessor? = nil, allowOtherPreprocessing: Bool = false,
                         store: EmbeddingStore?, runtime: RuntimeOptions,
                         progress: ((Int, Int) -> Void)? = nil) throws -> (report: EvaluationReport, failures: [EmbeddingFailure], warnings: [String]) {
        guard isClassifier else { throw ModelFileError.notAClassifier(path: source.path) }
        let folder = try ImageFolder(root: root, classNames: classNames)
        let (byFile, failures) = try classProbabilities(folder.images.map(\.url), preprocessor: preprocessor, allowOtherPreprocessing: allowOtherPreprocessing,
                                                        store: store, runtime: runtime, progress: progress)
        let kept = folder.images.filter { byFile[$0.url] != nil }
        guard !kept.isEmpty else { throw ClassifierTrainingError.noValidationImage }
        let rows = kept.map { byFile[$0.url]! }
        let probabilities = Matrix(rows: rows.count, columns: classes.count, values: rows.flatMap { $0.map(Double.init) })
        let report = EvaluationReport(probabilities: probabilities, labels: kept.map(\.label), classNames: classNames, k: k)
        return (report, failures, folder.warnings)
    }
}
