import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet train DATA_DIR`: train a classifier head on the frozen backbone's embeddings.
struct Train: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a classifier for your own categories on top of the frozen MobileNetV2 (transfer learning).",
        discussion: """
            DATA_DIR holds one subfolder of images per class, like Keras image_dataset_from_directory: \
            class names are the folder names sorted, non-image files are skipped with a warning, images \
            that fail to decode are reported and skipped. Validation: --validation-dir, or a seeded \
            --validation-split held out per class (stratified, spread over each class).

            Embeddings (1280-d, global average pooled) are cached in SQLite keyed by the image content \
            hash, the backbone (alpha, input size, weight file SHA-256) and the preprocessing, so a \
            second run embeds only new or changed images.

            The head is the Keras transfer-learning guide's: Dropout(0.2) → Dense(classes, softmax), \
            Adam(1e-3), categorical cross-entropy, early stopping on val_loss restoring the best \
            weights. The same seed gives a bit-identical model.

            Fine-tuning (--fine-tune-at N or --fine-tune-from LAYER), the guide's second half: after \
            the head, the base's layers from N on (Keras base_model.layers[N:]; the guide uses 100) are \
            trained with the head for --fine-tune-epochs at --fine-tune-learning-rate (default 1e-5, both \
            Keras guides' rate), with RMSprop (Keras defaults), Adam or SGD, early stopping on val_loss restoring \
            the best epoch. Each epoch decodes the training images again with a new random horizontal \
            flip per image (seeded; --fine-tune-rotation adds Keras RandomRotation), runs the frozen part, \
            then a training step. BatchNorm stays in \
            inference mode: the moving mean and variance stay frozen while gamma and beta of the \
            unfrozen BatchNorm layers train, as the guide intends (Keras 3 itself switches unfrozen \
            BatchNorm layers to batch statistics, keras-team/keras#20285, which destroys the pretrained \
            statistics on small datasets). The model file carries the fine-tuned layers only (the base \
            weight file is referenced by its SHA-256, as for a head). A run does not resume: the model \
            file is written once, atomically, at the end; an interrupted run leaves no file behind.
            """
    )

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup
    @OptionGroup var decode: DecodeOptions
    @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
    @OptionGroup(title: "Image preprocessing") var image: ImageOptions

    @Argument(help: ArgumentHelp("Folder with one subfolder of images per class.", valueName: "data-dir"))
    var dataDir: String

    @Option(name: [.short, .long], help: ArgumentHelp("Model file to write (JSON).", valueName: "path"))
    var output: String = "classifier.json"

    @Flag(name: .long, help: "Replace existing output files.")
    var overwrite = false

    @Option(name: .long, help: ArgumentHelp("Validation folder with the same class subfolders (instead of --validation-split).", valueName: "dir"))
    var validationDir: String?

    @Option(name: .long, help: "Fraction of each class held out for validation when no --validation-dir is given.")
    var validationSplit: Double = 0.2

    @Option(name: .long, help: "Seed of the split, initialisation, shuffling and dropout.")
    var seed: UInt64 = 42

    @Option(name: .long, help: "Maximum number of epochs.")
    var epochs: Int = 20

    @Option(name: .long, help: "Samples per training step (Keras batch_size).")
    var trainBatchSize: Int = 32

    @Option(name: .long, help: "adam or sgd.")
    var optimizer: String = "adam"

    @Option(name: .long, help: "Learning rate (default 1e-3 for Adam, 1e-2 for SGD).")
    var learningRate: Double?

    @Option(name: .long, help: "SGD momentum.")
    var momentum: Double = 0.9

    @Option(name: .long, help: "Dropout rate before each Dense layer.")
    var dropout: Double = 0.2

    @Option(name: .long, help: "Units of an optional hidden ReLU layer.")
    var hidden: Int?

    @Option(name: .long, help: "L2 penalty on the Dense kernels (in both phases with --fine-tune-at).")
    var l2: Double = 0

    @Option(name: .long, help: "Label smoothing (0...1).")
    var labelSmoothing: Double = 0

    @Flag(name: .long, help: "Weigh classes inversely to their frequency (n / (classes * n_class)), in both phases with --fine-tune-at.")
    var balanced = false

    @Option(name: .long, help: "Early-stopping patience in epochs on val_loss (0: off).")
    var patience: Int = 3

    @Option(name: .long, help: ArgumentHelp("Augmented views per training image (flip, zoom crop, rotation, brightness/contrast; seeded and cached).", valueName: "n"))
    var augment: Int = 0

    @Option(name: .long, help: ArgumentHelp("Fine-tune the base from layer index N on (Keras base_model.layers[N:]; 0...154 at alpha 1.0; the guide uses 100).", valueName: "n"))
    var fineTuneAt: Int?

    @Option(name: .long, help: ArgumentHelp("Fine-tune the base from this Keras layer on (e.g. block_12_expand).", valueName: "layer"))
    var fineTuneFrom: String?

    @Option(name: .long, help: "Maximum fine-tuning epochs (default 10 when fine-tuning).")
    var fineTuneEpochs: Int?

    @Option(name: .long, help: "Fine-tuning learning rate (default 1e-5, the Keras guides').")
    var fineTuneLearningRate: Double?

    @Flag(name: .long, help: "Write the fine-tuned model even when it is worse on validation than the head alone (default: keep the head-only model then).")
    var keepFineTuned = false

    @Option(name: .long, help: "Fine-tuning optimizer: rmsprop (Keras defaults, the default), adam or sgd (with --momentum).")
    var fineTuneOptimizer: String?

    @Option(name: .long, help: ArgumentHelp("Fine-tuning augmentation: also Keras RandomRotation(FACTOR) (fill reflect, bilinear; the Keras guide uses 0.1); 0: horizontal flip only.", valueName: "factor"))
    var fineTuneRotation: Double?

    @Option(name: .long, help: "k of the top-k accuracy.")
    var topK: Int = 5

    @Option(name: .long, help: ArgumentHelp("Write a self-contained HTML report (curves, confusion matrix).", valueName: "path"))
    var report: String?

    @Flag(name: .long, help: "Print the validation metrics as JSON on standard output.")
    var json = false

    func validate() throws {
        for (name, value) in [("--learning-rate", learningRate ?? 1e-3), ("--momentum", momentum), ("--l2", l2), ("--validation-split", validationSplit)] where !value.isFinite {
            throw ValidationError("\(name) must be a finite number, got \(value)")
        }
        if let learningRate, !(learningRate > 0 && learningRate <= 10) { throw ValidationError("--learning-rate must be in (0, 10], got \(learningRate)") }
        guard l2 >= 0 else { throw ValidationError("--l2 must be at least 0, got \(l2)") }
        guard (0..<1).contains(momentum) else { throw ValidationError("--momentum must be in [0, 1), got \(momentum)") }
        if let hidden, !(1...65_536).contains(hidden) { throw ValidationError("--hidden must be between 1 and 65536 units, got \(hidden)") }
        guard epochs <= 100_000 else { throw ValidationError("--epochs must be at most 100000, got \(epochs)") }
        guard augment <= 100 else { throw ValidationError("--augment must be at most 100 views per image, got \(augment)") }
        guard trainBatchSize <= 1_000_000 else { throw ValidationError("--train-batch-size must be at most 1000000, got \(trainBatchSize)") }
        guard (1...1000).contains(topK) else { throw ValidationError("--top-k must be between 1 and 1000, got \(topK)") }
        guard ["adam", "sgd"].contains(optimizer) else { throw ValidationError("--optimizer must be adam or sgd") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        guard augment >= 0 else { throw ValidationError("--augment must be 0 or more") }
        guard trainBatchSize >= 1 else { throw ValidationError("--train-batch-size must be at least 1") }
        guard (0..<1).contains(dropout) else { throw ValidationError("--dropout must be in 0..<1") }
        guard (0...1).contains(labelSmoothing) else { throw ValidationError("--label-smoothing must be in 0...1, got \(labelSmoothing)") }
        if let fineTuneRotation, !(fineTuneRotation.isFinite && (0...1).contains(fineTuneRotation)) {
            throw ValidationError("--fine-tune-rotation must be in 0...1, got \(fineTuneRotation)")
        }
        if fineTuneAt != nil && fineTuneFrom != nil { throw ValidationError("give --fine-tune-at or --fine-tune-from, not both") }
        if let fineTuneOptimizer, FineTuningOptimizer(rawValue: fineTuneOptimizer) == nil {
            throw ValidationError("--fine-tune-optimizer must be rmsprop, adam or sgd, got '\(fineTuneOptimizer)'")
        }
        if let fineTuning {
            // The settings' own check, with the options' names.
            if let fineTuneEpochs, !(1...100_000).contains(fineTuneEpochs) { throw ValidationError("--fine-tune-epochs must be in 1...100000, got \(fineTuneEpochs)") }
            if let fineTuneLearningRate, !(fineTuneLearningRate.isFinite && fineTuneLearningRate > 0 && fineTuneLearningRate <= 10) {
                throw ValidationError("--fine-tune-learning-rate must be in (0, 10], got \(fineTuneLearningRate)")
            }
            guard fineTuning.batchSize <= 4096 else { throw ValidationError("--train-batch-size must be at most 4096 when fine-tuning (images per step through the base), got \(trainBatchSize)") }
            do { try fineTuning.validate() } catch { throw ValidationError(error.description) }
        } else {
            // Fine-tuning settings without fine-tuning would be ignored silently.
            let given = [("--fine-tune-epochs", fineTuneEpochs != nil), ("--fine-tune-learning-rate", fineTuneLearningRate != nil),
                         ("--fine-tune-optimizer", fineTuneOptimizer != nil), ("--fine-tune-rotation", fineTuneRotation != nil),
                         ("--keep-fine-tuned", keepFineTuned)].filter { $0.1 }.map { $0.0 }
            if !given.isEmpty { throw ValidationError("\(given.joined(separator: ", ")) only apply with --fine-tune-at N or --fine-tune-from LAYER") }
        }
        guard validationDir != nil || (validationSplit > 0 && validationSplit < 1) else {
            throw ValidationError("--validation-split must be in (0, 1), or give --validation-dir")
        }
        // Neither output may be the backbone weight file or the cache, even with --overwrite.
        try validateOutputs([output] + (report.map { [$0] } ?? []), overwrite: overwrite,
                            inputs: (database.database.map { [$0] } ?? []) + (model.weights.map { [$0] } ?? []))
    }

    var settings: TrainingSettings {
        var s = TrainingSettings()
        s.epochs = epochs
        s.batchSize = trainBatchSize
        s.seed = seed
        s.optimizer = optimizer == "sgd" ? .sgd(learningRate: learningRate ?? 1e-2, momentum: momentum) : .adam(learningRate: learningRate ?? 1e-3)
        s.dropout = dropout
        s.hiddenUnits = hidden
        s.l2 = l2
        s.labelSmoothing = labelSmoothing
        s.balancedClassWeights = balanced
        s.patience = patience > 0 ? patience : nil
        s.augmentedViews = augment > 0 ? augment : nil
        return s
    }

    var fineTuning: FineTuningSettings? {
        guard let point = fineTuneAt.map(FineTunePoint.index) ?? fineTuneFrom.map(FineTunePoint.layer) else { return nil }
        var s = FineTuningSettings(point: point)
        s.epochs = fineTuneEpochs ?? 10
        s.learningRate = fineTuneLearningRate
        s.optimizer = fineTuneOptimizer.flatMap(FineTuningOptimizer.init(rawValue:)) ?? .rmsprop
        s.momentum = momentum
        s.batchSize = trainBatchSize
        s.patience = patience > 0 ? patience : nil
        return s
    }

    func run() async throws {
        let started = Date()
        do {
            let options = runtime.runtime(decode)
            // Fine-tuning allocates and frees the same large tensors every step: keep them in the
            // heap (the user's own allocator settings win).
            if fineTuning != nil, !MallocTuning.tunedByEnvironment() { MallocTuning.keepFreedBlocksForTraining() }
            let backbone = try await model.loadBackbone(runtime: options, preprocessing: image.modelPreprocessing)
            var training = ClassifierTraining(dataDirectory: URL(fileURLWithPath: dataDir, isDirectory: true),
                                              validationDirectory: validationDir.map { URL(fileURLWithPath: $0, isDirectory: true) },
                                              validationSplit: validationSplit, settings: settings, preprocessing: image.configuration(),
                                              maxPixels: image.maxPixels, topK: topK)
            training.fineTuning = fineTuning
            training.keepWorseFineTuning = keepFineTuned
            if let fineTuneRotation, fineTuneRotation > 0 { training.augmentation = .keras(try KerasAugmentation(horizontalFlip: true, rotationFactor: fineTuneRotation)) }
            let progress = ProgressReporter()
            let outcome = try training.run(backbone: backbone, store: try database.openCache(), runtime: options) { event in
                switch event {
                case .message(let text): progress.finish(); printError(text)
                case .warning(let text): progress.finish(); printError("warning: \(text)")
                case .failure(let failure): progress.finish(); printError("error: \(failure.message) (skipped)")
                case .embedding(let done, let total), .augmentation(let done, let total), .fineTuning(let done, let total): progress.update(done, total)
                case .fineTuningEpoch(let record, let rate):
                    progress.finish()
                    printError(String(format: "fine-tune epoch %d/%d - loss: %.4f - accuracy: %.4f - val_loss: %.4f - val_accuracy: %.4f - %.1f images/s",
                                      record.epoch, fineTuning?.epochs ?? 0, record.loss, record.accuracy, record.validationLoss ?? .nan, record.validationAccuracy ?? .nan, rate))
                case .epoch(let record):
                    progress.finish()
                    printError(String(format: "epoch %d/%d - loss: %.4f - accuracy: %.4f - val_loss: %.4f - val_accuracy: %.4f",
                                      record.epoch, epochs, record.loss, record.accuracy, record.validationLoss ?? .nan, record.validationAccuracy ?? .nan))
                }
            }
            progress.finish()
            printError(String(format: "head trained in %.2f s (%d epochs, best epoch %d)", outcome.headSeconds, outcome.model.history.count, outcome.model.bestEpoch ?? 0))
            if let tuned = outcome.fineTunedEvaluation {
                printError(String(format: "fine-tuned in %.1f s (%.1f images/s): val_accuracy %.4f with the head only, %.4f fine-tuned; writing the %@ model%@",
                                  outcome.fineTuningSeconds, outcome.fineTuningImagesPerSecond, outcome.headOnlyEvaluation.accuracy, tuned.accuracy,
                                  outcome.fineTuningKept ? "fine-tuned" : "head-only",
                                  outcome.fineTuningKept ? "" : " (--keep-fine-tuned writes the fine-tuned one)"))
            }
            try outcome.model.write(to: URL(fileURLWithPath: output), overwrite: overwrite)
            if let report {
                try AtomicFile.write(Data(outcome.htmlReport(title: "mobilenet train \(dataDir)").utf8), to: URL(fileURLWithPath: report), overwrite: overwrite)
            }
            print(json ? try jsonText(outcome.evaluation) : outcome.evaluation.table)
            printError("wrote \(output)\(report.map { " and \($0)" } ?? "") in \(String(format: "%.1f", Date().timeIntervalSince(started))) s total")
            // Like evaluate and predict: images that failed make the exit status 1.
            if !outcome.failures.isEmpty { throw ExitCode(1) }
        }
    }
}
