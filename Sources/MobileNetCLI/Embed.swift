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

            Distributed runs: --files-from FILE (- for standard input) reads the paths, one per \
            line; --shard I/N keeps the files whose path hashes to I (FNV-1a 64 of the path's \
            UTF-8 bytes modulo N), so N workers cover every file exactly once. With --shard and \
            --output, OUTPUT.manifest.json records the shard, backbone, preprocessing, files with \
            their SHA-256 and the outputs' checksums; a re-run of a complete shard stops at once.

            --stream: read paths from --files-from (default standard input) and print one JSON \
            line per image as soon as its batch is done: {"path": ..., "embedding": [...]} or \
            {"path": ..., "error": "..."}, flushed per batch, memory bounded however long the \
            input. Failures are in the stream; the exit status is 0 unless the run itself fails \
            (weights, an unreadable list), so data engines (Spark RDD.pipe) do not fail the job.
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case npy, csv, jsonl
    }

    @OptionGroup(title: "Model") var model: ModelOptions

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

    @OptionGroup(title: "File list and shard") var list: FileListOptions

    @Flag(name: .long, help: "Streaming mode: paths from --files-from (default: standard input), one JSON line per image on stdout, flushed per batch.")
    var stream = false

    @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
    var images: [String] = []

    func validate() throws {
        guard Pooling(rawValue: pooling) != nil else { throw ValidationError("--pooling must be avg or max") }
        if stream {
            guard images.isEmpty else { throw ValidationError("--stream reads the paths from --files-from or standard input, not from arguments") }
            guard output == nil, format == nil || format == .jsonl else { throw ValidationError("--stream writes JSON lines on standard output; leave out --output and --format") }
            return
        }
        if list.filesFrom != nil, !images.isEmpty { throw ValidationError("give either image arguments or --files-from, not both") }
        guard !images.isEmpty || list.filesFrom != nil else { throw ValidationError("give at least one image file or directory (or --files-from FILE)") }
        if output != nil, resolvedFormat == nil {
            throw ValidationError("cannot tell the format from '\(output ?? "")': use --format npy|csv|jsonl")
        }
        if let output {
            // A shard whose manifest exists is checked in run(): complete → nothing to do.
            let resumable = list.shard != nil && pathIsTaken(manifestURL(output).path)
            try validateOutputs(outputPaths(output), overwrite: overwrite || resumable, needsSideFile: resolvedFormat == .npy ? [output] : [])
        }
    }

    /// The files an output writes: itself, the `.npy` name list, the shard manifest.
    func outputPaths(_ output: String) -> [String] {
        [output] + (resolvedFormat == .npy ? [output + ".files.txt"] : []) + (list.shard != nil ? [manifestURL(output).path] : [])
    }

    func manifestURL(_ output: String) -> URL { ShardManifest.url(besides: URL(fileURLWithPath: output)) }

    var resolvedFormat: Format? {
        if let format { return format }
        guard let output else { return .jsonl }
        return Format(rawValue: URL(fileURLWithPath: output).pathExtension.lowercased())
    }

    func run() async throws {
        if stream { return try await runStream() }
        let (files, missing) = try list.collect(images, recursive: recursive)
        var failed = !missing.isEmpty
        if files.isEmpty, list.shard != nil, missing.isEmpty {
            // An empty shard is a normal outcome of a partition (few files, many shards).
            printError("shard \(list.selectedShard): no files")
        } else {
            try requireImages(files, images.isEmpty ? [list.filesFrom ?? ""] : images, problems: missing)
        }
        try checkUsage { try refuseOutputsAmongInputs(output.map { outputPaths($0) } ?? [], inputs: files) }
        if output != nil, resolvedFormat == .npy { try checkUsage { try validateListableNames(files) } }
        let opened = try await openEmbedder()
        let network = opened.network
        let preprocessor = image.preprocessor(for: opened)
        let backboneIdentity = opened.identity
        let preprocessingIdentity = PreprocessingIdentity(preprocessor)
        if let output, list.shard != nil {
            let manifest = try? ShardManifest.read(manifestURL(output))
            if let manifest, manifest.isComplete(shard: list.selectedShard, source: list.source(images), backbone: backboneIdentity,
                                                 preprocessing: preprocessingIdentity, inputs: files.map(\.relativePath)) {
                printError("shard \(list.selectedShard): already complete (\(manifestURL(output).relativePath)); nothing to do")
                if failed { throw ExitCode(1) }
                return
            }
            if !overwrite, manifest == nil || pathIsTaken(output) {
                try checkUsage { try validateOutputs(outputPaths(output), overwrite: false) }
            }
        }
        let format = resolvedFormat ?? .jsonl
        var names: [String] = []
        var rows: [[Float]] = []
        var shardFailures: [ShardManifest.Failure] = []
        let pipeline = ImageBatchPipeline(model: network, preprocessor: preprocessor, runtime: runtime.runtime(decode))
        let progress = ProgressBar(total: files.count, unit: "images")
        try pipeline.run(files) { batch in
            progress.clear()
            for failure in batch.failures {
                failed = true
                printError("error: \(failure.message)")
                shardFailures.append(ShardManifest.Failure(path: failure.url.relativePath, error: failure.message))
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
                if list.shard != nil {
                    let written = try outputPaths(output).dropLast().map { try ShardManifest.output(at: URL(fileURLWithPath: $0)) }
                    let entries = try names.map { ShardManifest.File(path: $0, sha256: try SHA256.hex(contentsOf: URL(fileURLWithPath: $0))) }
                    let manifest = ShardManifest(shard: list.selectedShard, source: list.source(images), backbone: backboneIdentity,
                                                 preprocessing: preprocessingIdentity, files: entries, failures: shardFailures, outputs: written)
                    try manifest.write(besides: url)
                }
            }
            printError("wrote \(counted(rows.count, "embedding")) of \(network.embeddingWidth) values to \(output)")
        }
        if failed { throw ExitCode(1) }
    }

    /// The pooled embedding network of the model (`--model`, any model file, or the weights).
    func openEmbedder() async throws -> RunnableModel {
        try await model.openModel(backend: runtime.inferenceBackend(), includeTop: false, embeddingOnly: true, pooling: Pooling(rawValue: pooling) ?? .avg, preprocessing: image.modelPreprocessing)
    }

    /// `--stream`: paths in, one JSON line per image out, flushed per batch.
    func runStream() async throws {
        let reader: PathListReader
        do {
            reader = try PathListReader(path: list.filesFrom ?? "-")
        } catch {
            printError("error: \(error.description)")
            throw ExitCode(1)
        }
        let opened = try await openEmbedder()
        let network = opened.network
        let preprocessor = image.preprocessor(for: opened)
        let identity = (backbone: opened.identity.key, preprocessing: PreprocessingIdentity(preprocessor).key)
        let pipeline = ImageBatchPipeline(model: network, preprocessor: preprocessor, runtime: runtime.runtime(decode))
        do {
            try pipeline.stream(reader, shard: list.selectedShard) { results in
                var text = ""
                for result in results {
                    text += try result.jsonLine(backbone: identity.backbone, preprocessing: identity.preprocessing) + "\n"
                }
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        }
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
