import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet predict --model FILE IMAGE...|DIR`: top-k of your own classes per image.
struct Predict: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images with a trained classifier (your class names).",
        discussion: """
            --model takes a model file written by `mobilenet train`, or a Keras transfer model \
            (.keras or whole-model .h5) together with --class-names. Output: a table (default), \
            --json (one document with results and errors) or --csv (file,rank,class,probability).
            """
    )

    @OptionGroup var model: ModelOptions


    @OptionGroup var decode: DecodeOptions
    @OptionGroup var cacheOptions: CacheOptions

    @Option(name: .customLong("model"), help: ArgumentHelp("Classifier: a `mobilenet train` model file, or a Keras .keras/.h5 transfer model.", valueName: "path"))
    var modelFile: String

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
        guard !images.isEmpty else { throw ValidationError("give at least one image file or directory") }
        guard !(json && csv) else { throw ValidationError("--json and --csv are exclusive") }
        guard topK >= 1 else { throw ValidationError("--top-k must be at least 1") }
    }

    struct Prediction: Encodable { let className: String; let probability: Double }
    struct Result: Encodable { let file: String; let predictions: [Prediction] }
    struct Document: Encodable { let results: [Result]; let errors: [String] }

    func run() async throws {
        let (files, missing) = collectImageFiles(images, recursive: recursive)
        var errors = missing
        let classifier: LoadedClassifier
        let embeddings: [URL: ImageEmbedding]
        do {
            let names = classNames.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
            classifier = try await LoadedClassifier.load(path: modelFile, model: model, classNames: names)
            let embedder = try CachedEmbedder(model: classifier.backbone.network, backbone: classifier.backbone.identity,
                                              expectedPreprocessing: classifier.preprocessing, store: try cacheOptions.openStore(), batchSize: model.batchSize, decodeThreads: decode.threads)
            let result = try embedder.embed(files)
            embeddings = result.embeddings
            errors += result.failures.map(\.message)
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
        var results: [Result] = []
        for file in files {
            guard let embedding = embeddings[file] else { continue }
            let p = classifier.head.probabilities(Matrix(stacking: [embedding.vector]))
            let row = Array(p.row(0))
            let ranked = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(topK)
            results.append(Result(file: file.relativePath, predictions: ranked.map { Prediction(className: classifier.classNames[$0], probability: row[$0]) }))
        }
        if json {
            print(try jsonText(Document(results: results, errors: errors)))
        } else {
            for message in errors { printError("error: \(message)") }
            if csv {
                print("file,rank,class,probability")
                for result in results {
                    for (rank, p) in result.predictions.enumerated() {
                        print("\(Embed.csvField(result.file)),\(rank + 1),\(Embed.csvField(p.className)),\(String(format: "%.6f", p.probability))")
                    }
                }
            } else {
                let width = classifier.classNames.map(\.count).max() ?? 5
                for result in results {
                    print(result.file)
                    for (rank, p) in result.predictions.enumerated() {
                        print("  \(rank + 1). \(p.className.padding(toLength: width, withPad: " ", startingAt: 0))  \(String(format: "%7.3f%%", p.probability * 100))")
                    }
                }
            }
        }
        if !errors.isEmpty { throw ExitCode(1) }
    }
}
