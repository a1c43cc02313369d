import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet classify IMAGE...`: ImageNet top-k classes per image.
struct Classify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images into the 1000 ImageNet classes (model with its top).",
        discussion: """
            Images (JPEG, PNG, WebP, GIF or BMP, detected from the bytes) are turned as their \
            EXIF orientation says (--exif ignore for Keras parity), resized to the model input \
            with bilinear interpolation exactly as tf.image.resize does by default (see --resize \
            and --crop), then scaled to -1...1 (x / 127.5 - 1). Directories are expanded to \
            the files they contain.
            """
    )

    @OptionGroup var model: ModelOptions


    @OptionGroup var decode: DecodeOptions

    @OptionGroup(title: "Image preprocessing") var image: ImageOptions

    @Option(name: .long, help: "How many classes to show per image.")
    var topK: Int = 5

    @Flag(name: .long, help: "Print one JSON document instead of a table.")
    var json = false

    @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
    var recursive = false

    @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
    var images: [String]

    struct Prediction: Encodable {
        let rank: Int, index: Int, synset: String, name: String, probability: Float
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
        let weights: String
        let results: [Result]
        let errors: [Failure]
    }

    func validate() throws {
        guard topK >= 1 else { throw ValidationError("--top-k must be at least 1") }
        guard !images.isEmpty else { throw ValidationError("give at least one image file or directory") }
    }

    func run() async throws {
        let (files, missing) = collectImageFiles(images, recursive: recursive)
        var failures = missing.map { Failure(file: String($0.split(separator: ":").first ?? ""), error: $0) }
        for message in missing { printError("error: \(message)") }
        let (h, w) = try model.inputDimensions()
        let configuration = MobileNetV2Configuration(alpha: model.alpha, inputHeight: h, inputWidth: w, includeTop: true)
        let network: MobileNetV2
        let weightsSource: String
        do {
            // The raw weight set is dropped once the model is built (the model keeps its own
            // folded copy): it would add ~14 MB to the peak memory of the whole run.
            let weights = try await model.loadWeights(includeTop: true)
            weightsSource = weights.source
            network = try MobileNetV2(configuration: configuration, weights: weights, backend: model.inferenceBackend())
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
        var results: [Result] = []
        try runBatches(files: files, model: network, batchSize: model.batchSize, decodeThreads: decode.threads,
                       preprocessor: image.preprocessor(height: h, width: w), onResult: { file, row in
            let top = ImageNetClasses.topK(row, k: topK)
            let result = Result(file: file.relativePath, predictions: top.enumerated().map {
                Prediction(rank: $0.offset + 1, index: $0.element.index, synset: $0.element.synset, name: $0.element.name, probability: $0.element.score)
            })
            results.append(result)
            if !json { print(Self.table(result)) }
        }, onError: { file, message in
            failures.append(Failure(file: file.relativePath, error: message))
            printError("error: \(message)")
        })
        if json {
            print(try jsonText(Report(model: configuration.description, weights: weightsSource, results: results, errors: failures)))
        }
        if !failures.isEmpty { throw ExitCode(1) }
    }

    static func table(_ result: Result) -> String {
        var lines = [result.file]
        let nameWidth = result.predictions.map(\.name.count).max() ?? 0
        for p in result.predictions {
            let percent = String(format: "%7.3f%%", Double(p.probability) * 100)
            lines.append("  \(p.rank). \(p.synset)  \(p.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0))  \(percent)")
        }
        return lines.joined(separator: "\n")
    }
}
