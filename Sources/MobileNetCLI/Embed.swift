import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet embed IMAGE...|DIR`: one embedding per image.
struct Embed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compute one embedding per image (model without its top, globally pooled).",
        discussion: """
            The embedding is the pooled output of the last ReLU6 (Keras include_top=False, \
            pooling="avg"): 1280 values in 0...6 for alpha <= 1 (1280 * alpha rounded for alpha > 1). \
            Weight files with or without the top work; the classifier is ignored.

            Output formats, from --format or the --output extension:
              npy    float32 [N, C] (numpy.load), with the file names in order in <output>.files.txt
              csv    header "file,e0,e1,...", one row per image
              jsonl  one {"file": ..., "embedding": [...]} object per line (the default on stdout)
            Rows follow the input order; images that fail are reported and left out. An existing \
            output file is never replaced unless --overwrite is given; files are written atomically.
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case npy, csv, jsonl
    }

    @OptionGroup(title: "Model") var model: BackboneOptions

    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup

    @OptionGroup var decode: DecodeOptions

    @OptionGroup(title: "Image preprocessing") var image: ImageOptions

    @Option(name: .long, help: "Global pooling: avg (Keras's usual embedding) or max.")
    var pooling: String = "avg"

    @Option(name: [.short, .long], help: ArgumentHelp("Output file (.npy, .csv or .jsonl); JSON lines on stdout when omitted.", valueName: "path"))
    var output: String?

    @Option(name: .long, help: "Output format (default: from the --output extension).")
    var format: Format?

    @Flag(name: .long, help: "Replace an existing output file.")
    var overwrite = false

    @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
    var recursive = false

    @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
    var images: [String]

    func validate() throws {
        guard Pooling(rawValue: pooling) != nil else { throw ValidationError("--pooling must be avg or max") }
        guard !images.isEmpty else { throw ValidationError("give at least one image file or directory") }
        if output != nil, resolvedFormat == nil {
            throw ValidationError("cannot tell the format from '\(output ?? "")': use --format npy|csv|jsonl")
        }
        if let output {
            let npy = resolvedFormat == .npy
            try validateOutputs([output] + (npy ? [output + ".files.txt"] : []), overwrite: overwrite, needsSideFile: npy ? [output] : [])
        }
    }

    var resolvedFormat: Format? {
        if let format { return format }
        guard let output else { return .jsonl }
        return Format(rawValue: URL(fileURLWithPath: output).pathExtension.lowercased())
    }

    func run() async throws {
        let (files, missing) = collectImageFiles(images, recursive: recursive)
        var failed = !missing.isEmpty
        try requireImages(files, images, problems: missing)
        try checkUsage { try refuseOutputsAmongInputs(output.map { [$0, $0 + ".files.txt"] } ?? [], inputs: files) }
        if output != nil, resolvedFormat == .npy { try checkUsage { try validateListableNames(files) } }
        let configuration = try model.configuration(includeTop: false, pooling: Pooling(rawValue: pooling))
        let network: MobileNetV2
        do {
            network = try await MobileNetV2.load(configuration: configuration, weightsPath: model.weights, backend: runtime.inferenceBackend()).model
        } catch {
            printError("error: \(errorMessage(error))")
            throw ExitCode(1)
        }
        let format = resolvedFormat ?? .jsonl
        var names: [String] = []
        var rows: [[Float]] = []
        let pipeline = ImageBatchPipeline(model: network, preprocessor: image.preprocessor(height: configuration.inputHeight, width: configuration.inputWidth),
                                          runtime: runtime.runtime(decode))
        let progress = ProgressBar(total: files.count, unit: "images")
        try pipeline.run(files) { batch in
            progress.clear()
            for failure in batch.failures {
                failed = true
                printError("error: \(failure.message)")
            }
            for (file, row) in zip(batch.files, batch.outputs) {
                if output == nil {
                    print(try Self.jsonLine(file: file.relativePath, row: row))
                } else {
                    names.append(file.relativePath)
                    rows.append(row)
                }
            }
            progress.update(done: batch.processed)
        }
        progress.finish()
        if let output {
            let url = URL(fileURLWithPath: output)
            do {
                try write(format: format, names: names, rows: rows, width: network.embeddingWidth, to: url)
            } catch {
                printError("error: \(errorMessage(error))")
                throw ExitCode(1)
            }
            printError("wrote \(counted(rows.count, "embedding")) of \(network.embeddingWidth) values to \(output)")
        }
        if failed { throw ExitCode(1) }
    }

    func write(format: Format, names: [String], rows: [[Float]], width: Int, to url: URL) throws {
        switch format {
        case .npy:
            try EmbeddingFiles.writeNPY(names: names, rows: rows, width: width, to: url, overwrite: overwrite)
        case .csv:
            var text = "file," + (0..<width).map { "e\($0)" }.joined(separator: ",") + "\n"
            for (name, row) in zip(names, rows) {
                text += Self.csvField(name) + "," + row.map { "\($0)" }.joined(separator: ",") + "\n"
            }
            try AtomicFile.write(Data(text.utf8), to: url, overwrite: overwrite)
        case .jsonl:
            let lines = try zip(names, rows).map { try Self.jsonLine(file: $0, row: $1) }
            try AtomicFile.write(Data(lines.map { $0 + "\n" }.joined().utf8), to: url, overwrite: overwrite)
        }
    }

    /// `{"file": ..., "embedding": [...]}`, always in that key order (JSONEncoder on Linux
    /// orders the keys of a struct differently from one process to the next).
    static func jsonLine(file: String, row: [Float]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let name = String(decoding: try encoder.encode(file), as: UTF8.self)
        let values = String(decoding: try encoder.encode(row), as: UTF8.self)
        return "{\"file\":\(name),\"embedding\":\(values)}"
    }

    /// RFC 4180 quoting when the field holds a comma, quote or line break.
    static func csvField(_ value: String) -> String {
        guard value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
