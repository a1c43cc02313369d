import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet classify IMAGE...`: ImageNet top-k classes per image.
struct Classify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images: the 1000 ImageNet classes, or the classes of any model file (--model).",
        discussion: """
            Without --model: the ImageNet weights with the top (--weights, or the usual \
            resolution). --model takes any model file: a `mobilenet train` model file, a Keras \
            transfer model (.keras or whole-model .h5; --class-names), or Keras weights with the \
            top; the model's own class names are printed. Images (JPEG, PNG, WebP, GIF or BMP, detected from the bytes) are turned as their \
            EXIF orientation says (--exif ignore for Keras parity), resized to the model input \
            with bilinear interpolation exactly as tf.image.resize does by default (see --resize \
            and --crop), then scaled to -1...1 (x / 127.5 - 1). Directories are expanded to \
            the files they contain.
            """
    )

    @OptionGroup(title: "Model") var model: ModelOptions

    @Option(name: .long, help: ArgumentHelp("Comma-separated class names for a Keras transfer model (default: class0, class1, ...).", valueName: "names"))
    var classNames: String?

    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup

    @OptionGroup var decode: DecodeOptions

    @OptionGroup(title: "Image preprocessing") var image: ImageOptions

    @Option(name: .long, help: "How many classes to show per image.")
    var topK: Int = 5

    @Flag(name: .long, help: "Print one JSON document instead of a table.")
    var json = false

    @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
    var recursive = false

    @Option(name: .long, help: ArgumentHelp("Also write the 1280-d embeddings (global average pool, from the same pass) to this .npy file, with the file names in <path>.files.txt.", valueName: "path"))
    var embeddings: String?

    @Flag(name: .long, help: "Replace an existing --embeddings file.")
    var overwrite = false

    @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
    var images: [String]

    struct Prediction: Encodable {
        let rank: Int, index: Int, synset: String?, name: String, probability: Float
    }
    struct Result: Encodable {
        let file: String
        let predictions: [Prediction]
    }
    struct Failure: Encodable {
        let file: String, error: String
    }
    struct Report: Encodable {
        let model: String
        let kind: String
        let weights: String
        let results: [Result]
        let errors: [Failure]
    }

    func validate() throws {
        guard (1...1_000_000).contains(topK) else { throw ValidationError("--top-k must be between 1 and 1000000, got \(topK)") }
        guard !images.isEmpty else { throw ValidationError("give at least one image file or directory") }
        if let embeddings {
            guard embeddings.lowercased().hasSuffix(".npy") else { throw ValidationError("--embeddings must name a .npy file") }
            try validateOutputs([embeddings, embeddings + ".files.txt"], overwrite: overwrite, needsSideFile: [embeddings])
        }
    }

    func run() async throws {
        let (files, missing) = collectImageFiles(images, recursive: recursive)
        var failures = missing.map { Failure(file: $0.path, error: $0.description) }
        try requireImages(files, images, problems: missing)
        try checkUsage { try refuseOutputsAmongInputs((embeddings.map { [$0, $0 + ".files.txt"] } ?? []), inputs: files) }
        if embeddings != nil { try checkUsage { try validateListableNames(files) } }
        let classifier: RunnableModel
        do {
            let names = classNames.map { $0.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingCharacters(in: .whitespaces) } }
            classifier = try await model.openModel(backend: runtime.inferenceBackend(), includeTop: true, classNames: names, preprocessing: image.modelPreprocessing)
        }
        let network = classifier.network
        var results: [Result] = []
        var embeddingNames: [String] = []
        var embeddingRows: [[Float]] = []
        let pipeline = ImageBatchPipeline(model: network, preprocessor: image.preprocessor(for: classifier),
                                          runtime: runtime.runtime(decode), embeddings: embeddings != nil)
        let progress = ProgressBar(total: files.count, unit: "images")
        try pipeline.run(files) { batch in
            progress.clear()
            for failure in batch.failures {
                failures.append(Failure(file: failure.url.relativePath, error: failure.message))
                printError("error: \(failure.message)")
            }
            for (index, (file, row)) in zip(batch.files, batch.outputs).enumerated() {
                let top = classifier.topK(row, k: topK)
                let result = Result(file: file.relativePath, predictions: top.enumerated().map {
                    Prediction(rank: $0.offset + 1, index: $0.element.index, synset: $0.element.synset.isEmpty ? nil : $0.element.synset,
                               name: $0.element.name, probability: $0.element.score)
                })
                results.append(result)
                if !json { print(Self.table(result)) }
                if embeddings != nil {
                    embeddingNames.append(file.relativePath)
                    embeddingRows.append(batch.embeddings[index])
                }
            }
            progress.update(done: batch.processed)
        }
        progress.finish()
        if let embeddings {
            do {
                try EmbeddingFiles.writeNPY(names: embeddingNames, rows: embeddingRows, width: network.embeddingWidth, to: URL(fileURLWithPath: embeddings), overwrite: overwrite)
                printError("wrote \(counted(embeddingRows.count, "embedding")) of \(network.embeddingWidth) values to \(embeddings)")
            }
        }
        if json {
            print(try jsonText(Report(model: network.configuration.description, kind: classifier.kind.rawValue, weights: classifier.source.path,
                                      results: results, errors: failures)))
        }
        if !failures.isEmpty { throw ExitCode(1) }
    }

    static func table(_ result: Result) -> String {
        var lines = [displayed(result.file)]
        let nameWidth = result.predictions.map(\.name.count).max() ?? 0
        for p in result.predictions {
            let percent = String(format: "%7.3f%%", Double(p.probability) * 100)
            let synset = p.synset.map { "\($0)  " } ?? ""
            lines.append("  \(p.rank). \(synset)\(p.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0))  \(percent)")
        }
        return lines.joined(separator: "\n")
    }
}
