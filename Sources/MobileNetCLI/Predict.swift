import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet predict --model FILE IMAGE...|DIR`: top-k of your own classes per image.
struct Predict: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images with a trained classifier (your class names).",
        discussion: """
            --model takes any model file `classify --model` takes: a model file written by \
            `mobilenet train`, a Keras transfer model (.keras or whole-model .h5, with \
            --class-names), or ImageNet weights with the top. Output: a table (default), \
            --json (one document with results and errors) or --csv (file,rank,class,probability).
            """
    )

    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup
    @OptionGroup var decode: DecodeOptions
    @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
    @OptionGroup(title: "Image preprocessing (default: what the model was trained with)") var image: ImageOptions

    @Option(name: .long, help: ArgumentHelp("Comma-separated class names for a Keras model (default: class0, class1, ...).", valueName: "names"))
    var classNames: String?

    @Option(name: .long, help: "Number of classes to show per image.")
    var topK: Int = 5

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    @Flag(name: .long, help: "Print CSV.")
    var csv = false

    @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
    var recursive = false

    @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
    var images: [String]

    func validate() throws {
        guard model.modelFile != nil else { throw ValidationError("--model is required: a `mobilenet train` model file, a Keras transfer model or weights with the top") }
        guard !images.isEmpty else { throw ValidationError("give at least one image file or directory") }
        guard !(json && csv) else { throw ValidationError("--json and --csv are exclusive") }
        guard (1...1_000_000).contains(topK) else { throw ValidationError("--top-k must be between 1 and 1000000, got \(topK)") }
    }

    struct Prediction: Encodable { let className: String; let probability: Double }
    struct Result: Encodable { let file: String; let predictions: [Prediction] }
    struct Document: Encodable { let results: [Result]; let errors: [String] }

    func run() async throws {
        let (files, missing) = collectImageFiles(images, recursive: recursive)
        var errors = missing.map(\.description)
        try requireImages(files, images, problems: missing)
        var results: [Result] = []
        do {
            let names = self.classNames.map { $0.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingCharacters(in: .whitespaces) } }
            let classifier = try await model.openModel(backend: runtime.inferenceBackend(), includeTop: true, classNames: names, preprocessing: image.modelPreprocessing)
            let progress = ProgressReporter()
            let (predictions, failures) = try classifier.predict(files, k: topK, preprocessor: image.preprocessor(for: classifier),
                                                                 allowOtherPreprocessing: image.isSet, store: try database.openCache(),
                                                                 runtime: runtime.runtime(decode), progress: progress.update)
            progress.finish()
            errors += failures.map(\.message)
            results = predictions.map { Result(file: $0.file.relativePath, predictions: $0.classes.map { Prediction(className: $0.className, probability: $0.probability) }) }
        }
        if json {
            print(try jsonText(Document(results: results, errors: errors)))
        } else {
            // The listing's problems were printed when the files were collected.
            for message in errors.dropFirst(missing.count) { printError("error: \(message)") }
            if csv {
                print("file,rank,class,probability")
                for result in results {
                    for (rank, p) in result.predictions.enumerated() {
                        print("\(Embed.csvField(result.file)),\(rank + 1),\(Embed.csvField(p.className)),\(String(format: "%.6f", p.probability))")
                    }
                }
            } else {
                for result in results {
                    // As wide as the names shown (ImageNet's longest takes 97 characters).
                    let width = result.predictions.map(\.className.count).max() ?? 5
                    print(displayed(result.file))
                    for (rank, p) in result.predictions.enumerated() {
                        print("  \(rank + 1). \(p.className.padding(toLength: width, withPad: " ", startingAt: 0))  \(String(format: "%7.3f%%", p.probability * 100))")
                    }
                }
            }
        }
        if !errors.isEmpty { throw ExitCode(1) }
    }
}
