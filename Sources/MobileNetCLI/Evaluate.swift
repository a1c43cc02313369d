import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet evaluate --model FILE DATA_DIR`: metrics of a trained classifier on a labelled folder.
struct Evaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a trained classifier on a folder with one subfolder per class.",
        discussion: """
            Prints accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix \
            (rows: true class, columns: predicted); --json for scripts, --report for an HTML file. \
            The folder's class subfolders must be the model's classes. --model takes a model file \
            written by `mobilenet train` (JSON) or a Keras transfer model (.keras or whole-model .h5: \
            input → MobileNetV2 → GlobalAveragePooling2D → Dropout → Dense(softmax)), whose class \
            names are the sorted subfolder names of DATA_DIR.
            """
    )

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup
    @OptionGroup var decode: DecodeOptions
    @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
    @OptionGroup(title: "Image preprocessing (default: what the model was trained with)") var image: ImageOptions

    @Argument(help: ArgumentHelp("Folder with one subfolder of images per class.", valueName: "data-dir"))
    var dataDir: String

    @Option(name: .long, help: "k of the top-k accuracy.")
    var topK: Int = 5

    @Flag(name: .long, help: "Print the metrics as JSON.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Write a self-contained HTML report.", valueName: "path"))
    var report: String?

    @Flag(name: .long, help: "Replace an existing report file.")
    var overwrite = false

    func validate() throws {
        guard model.modelFile != nil else { throw ValidationError("--model is required: a `mobilenet train` model file, a Keras transfer model or weights with the top") }
        if let report { try validateOutputs([report], overwrite: overwrite) }
    }

    func run() async throws {
        do {
            let root = URL(fileURLWithPath: dataDir, isDirectory: true)
            var classifier = try await model.openModel(backend: runtime.inferenceBackend(), includeTop: true, preprocessing: image.modelPreprocessing)
            // A Keras model records no class names: the folder's sorted sub-folders give them.
            if classifier.kind == .kerasModel {
                classifier = try classifier.withClassNames(ofFolder: root)
            }
            let progress = ProgressReporter()
            let (evaluation, failures, warnings) = try classifier.evaluate(folder: root, k: topK, preprocessor: image.preprocessor(for: classifier),
                                                                           allowOtherPreprocessing: image.isSet, store: try database.openCache(),
                                                                           runtime: runtime.runtime(decode), progress: progress.update)
            progress.finish()
            for warning in warnings { printError("warning: \(warning)") }
            for failure in failures { printError("error: \(failure.message) (skipped)") }
            if let report {
                let html = HTMLReport.render(title: "mobilenet evaluate \(model.modelFile ?? "") \(dataDir)", history: [], bestEpoch: nil, evaluation: evaluation)
                try AtomicFile.write(Data(html.utf8), to: URL(fileURLWithPath: report), overwrite: overwrite)
            }
            print(json ? try jsonText(evaluation) : evaluation.table)
            if !failures.isEmpty { throw ExitCode(1) }
        }
    }
}
