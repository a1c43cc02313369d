import Foundation
import MobileNetIO
import MobileNetPipeline
import MobileNetStore

/// Why a classifier cannot be trained from the data given.
public enum ClassifierTrainingError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A class has no image that could be embedded.
    case noTrainingImage(className: String)
    /// No validation image could be embedded.
    case noValidationImage

    public var description: String {
        switch self {
        case .noTrainingImage(let name): "class '\(name)' has no usable training image; nothing to learn it from"
        case .noValidationImage: "no usable validation image"
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

        /// The self-contained HTML report (curves, confusion matrix).
        public func htmlReport(title: String) -> String {
            HTMLReport.render(title: title, history: model.history, bestEpoch: model.bestEpoch, evaluation: evaluation)
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
    /// - Throws: ``DatasetError`` (missing or unusable folders), ``ClassifierTrainingError``,
    ///   ``/MobileNetStore/StoreError``, network errors.
    public func run(backbone: Backbone, store: EmbeddingStore?, runtime: RuntimeOptions,
                    events: @escaping (ClassifierTrainingEvent) -> Void = { _ in }) throws -> Outcome {
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
        let c = backbone.network.configuration
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
        let result = HeadTrainer(settings: settings).train(train: trainData, validation: valData, classes: folder.classNames.count) { events(.epoch($0)) }
        let headSeconds = Date().timeIntervalSince(headStart)
        let evaluation = EvaluationReport(probabilities: result.head.probabilities(valData.features), labels: valData.labels,
                                          classNames: folder.classNames, k: topK)
        let model = ClassifierModel(classNames: folder.classNames, backbone: backbone.identity, backboneWeightsPath: backbone.weightsURL.path,
                                    preprocessing: embedder.preprocessing, preprocessingConfiguration: preprocessing, head: result.head,
                                    training: settings, history: result.history, bestEpoch: result.bestEpoch, validation: evaluation)
        return Outcome(model: model, evaluation: evaluation, failures: failures, trainingImages: trainData.labels.count,
                       validationImages: valData.labels.count, headSeconds: headSeconds)
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

extension TrainedClassifier {
    /// Metrics on a folder with one sub-folder per class (the model's classes): accuracy, top-k,
    /// per-class precision/recall/F1 and the confusion matrix. The one call behind `mobilenet evaluate`.
    ///
    /// - Returns: the report, the failures, and the folder's warnings.
    /// - Throws: ``DatasetError`` (the folder's classes differ), ``ClassifierTrainingError/noValidationImage``
    ///   when no image could be embedded, ``/MobileNetPipeline/PreprocessingMismatch``, store and network errors.
    public func evaluate(folder root: URL, k: Int, preprocessor: ImagePreprocessor? = nil, allowOtherPreprocessing: Bool = false,
                         store: EmbeddingStore?, runtime: RuntimeOptions,
                         progress: ((Int, Int) -> Void)? = nil) throws -> (report: EvaluationReport, failures: [EmbeddingFailure], warnings: [String]) {
        let folder = try ImageFolder(root: root, classNames: classNames)
        let embedder = try CachedEmbedder(backbone: backbone, preprocessor: preprocessor ?? self.preprocessor(),
                                          expectedPreprocessing: allowOtherPreprocessing ? nil : preprocessing, store: store, runtime: runtime)
        let result = try embedder.embed(folder.images.map(\.url), progress: progress)
        let (data, _) = ClassifierTraining.labelledMatrix(folder.images, embeddings: result.embeddings)
        guard !data.labels.isEmpty else { throw ClassifierTrainingError.noValidationImage }
        let report = EvaluationReport(probabilities: head.probabilities(data.features), labels: data.labels, classNames: classNames, k: k)
        return (report, result.failures, folder.warnings)
    }
}
