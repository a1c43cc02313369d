// The option groups the commands share (ArgumentParser `ParsableArguments`).
import ArgumentParser
import Foundation
import MobileNet

/// The default weights and the network's size: `--weights`, `--alpha`, `--input-size` (`serve`
/// and `bench`, which name their models otherwise; the other commands take ``ModelOptions``).
struct BackboneOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Keras weight file (.h5, .weights.h5 or .keras).",
        discussion: "Without it: $MOBILENET_WEIGHTS, then the cache ($MOBILENET_CACHE_DIR or ~/.cache/swift-mobilenet, and ~/.keras/models), then the official Keras download (a non-official input size uses the 224 file).",
        valueName: "path"))
    var weights: String?

    @Option(name: .customLong("alpha"), help: "Width multiplier: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for the ImageNet weights (default 1.0; a model file's own when it records one: giving another is an error).")
    var alphaOption: Double?

    @Option(name: .customLong("input-size"), help: ArgumentHelp("Model input size: N for NxN, or HxW (default 224; a model file's own when it records one: giving another is an error).", valueName: "size"))
    var inputSizeOption: String?

    /// The width multiplier (1.0 unless given).
    var alpha: Double { alphaOption ?? 1.0 }
    /// The input size text (`224` unless given).
    var inputSize: String { inputSizeOption ?? "224" }

    func inputDimensions() throws -> (height: Int, width: Int) {
        // Digits only ("+224", "224x", "x224" are typos, not sizes).
        let parts = inputSize.split(separator: "x", omittingEmptySubsequences: false).map { part in
            part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber) && !part.isEmpty && part.count <= 9 ? Int(part) : nil
        }
        if parts.count == 1, let n = parts[0] { return (n, n) }
        if parts.count == 2, let h = parts[0], let w = parts[1] { return (h, w) }
        throw ValidationError("--input-size must be N or HxW, got '\(inputSize)'")
    }

    func validate() throws {
        let (h, w) = try inputDimensions()
        let maximum = MobileNetV2Configuration.maximumInputSide
        guard h >= 32, w >= 32, h <= maximum, w <= maximum else { throw ValidationError("--input-size must be between 32x32 and \(maximum)x\(maximum), got \(inputSize)") }
        guard alpha > 0, alpha.isFinite, alpha <= MobileNetV2Configuration.maximumAlpha else {
            throw ValidationError("--alpha must be positive and at most \(MobileNetV2Configuration.maximumAlpha) (ImageNet weights exist for 0.35 ... 1.4), got \(alpha)")
        }
    }

    /// The configuration of the network with these options.
    func configuration(includeTop: Bool, pooling: Pooling? = nil) throws -> MobileNetV2Configuration {
        let (h, w) = try inputDimensions()
        return MobileNetV2Configuration(alpha: alpha, inputHeight: h, inputWidth: w, includeTop: includeTop, pooling: includeTop ? nil : pooling)
    }

}

/// The model of a command that runs one: `--model FILE` (any model file, through the library's
/// `ModelFile`) or the default weights (``BackboneOptions``). Every such command opens it with
/// ``openModel(backend:includeTop:embeddingOnly:pooling:classNames:preprocessing:)``.
struct ModelOptions: ParsableArguments {
    @Option(name: .customLong("model"), help: ArgumentHelp("A model file: a `mobilenet train` model, a Keras .keras/whole-model .h5 transfer model, Keras weights (with or without the top), a TFLite .tflite MobileNetV2 (float or quantized), or a SavedModel folder (a Keras export, a TF Hub MobileNetV2 module, or a TF Serving base folder of versions); detected from its contents.",
        discussion: "Without it: the ImageNet weights (--weights, or the usual resolution). With it, --weights names a trained model's backbone weight file.",
        valueName: "path"))
    var modelFile: String?

    @Option(name: .customLong("labels"), help: ArgumentHelp("A label file: one class name per line, in the model's output order (a TFLite model's labels, `background` first for TF-slim's 1001 classes); instead of the names the model records.",
        valueName: "path"))
    var labelsFile: String?

    @Option(name: .customLong("model-version"), help: ArgumentHelp("With --model naming a TF Serving base folder (BASE/1/, BASE/2/, ...): the version to open (default: the highest).", valueName: "n"))
    var modelVersion: Int?

    @OptionGroup var backbone: BackboneOptions

    func validate() throws {
        if let modelVersion, modelFile == nil || modelVersion < 0 {
            throw ValidationError("--model-version \(modelVersion) needs --model naming a TF Serving base folder, and a version of at least 0")
        }
    }

    /// `--weights`.
    var weights: String? { backbone.weights }
    /// `--alpha`, when given.
    var alphaOption: Double? { backbone.alphaOption }
    /// `--input-size`, when given.
    var inputSizeOption: String? { backbone.inputSizeOption }
    /// The width multiplier (1.0 unless given).
    var alpha: Double { backbone.alpha }
    /// The input size (224x224 unless given).
    func inputDimensions() throws -> (height: Int, width: Int) { try backbone.inputDimensions() }

    /// How a model file is opened with these options: only what was given explicitly, so the
    /// file's own alpha and input size are used, and an explicit one that disagrees is refused
    /// by the library (``ModelFileError/conflictingOption(path:option:recorded:given:)``).
    func openOptions(classNames: [String]? = nil, pooling: Pooling = .avg, preprocessing: PreprocessingConfiguration? = nil) throws -> ModelOpenOptions {
        if classNames != nil, labelsFile != nil { throw ValidationError("give the class names once: --class-names or --labels") }
        let names = try classNames ?? labelsFile.map { try ModelFile.labels(contentsOf: URL(fileURLWithPath: $0)) }
        var options = ModelOpenOptions(inputSize: inputSizeOption == nil ? nil : try inputDimensions(), alpha: alphaOption, pooling: pooling,
                                       backboneWeightsPath: weights, classNames: names, preprocessing: preprocessing)
        options.modelVersion = modelVersion
        return options
    }

    /// Opens the model: `--model` when given (any model file), else the default weights
    /// (`--weights`, `$MOBILENET_WEIGHTS`, the cache, the download).
    ///
    /// - Parameters:
    ///   - includeTop: a classifier is needed (weights without the top are refused).
    ///   - embeddingOnly: only the pooled embedding network (`embed`, `index`, `train`).
    func openModel(backend: any InferenceBackend, includeTop: Bool, embeddingOnly: Bool = false, pooling: Pooling = .avg,
                   classNames: [String]? = nil, preprocessing: PreprocessingConfiguration? = nil) async throws -> RunnableModel {
        var options = try openOptions(classNames: classNames, pooling: pooling, preprocessing: preprocessing)
        options.embeddingOnly = embeddingOnly
        guard let modelFile else {
            return try await ModelFile.openDefault(weightsPath: weights, includeTop: includeTop, options: options, backend: backend)
        }
        let model = try await ModelFile.open(URL(fileURLWithPath: modelFile), options: options, backend: backend)
        if includeTop && !model.isClassifier { throw ModelFileError.notAClassifier(path: modelFile) }
        return model
    }

    /// The pooled embedding network of the model (``openModel(backend:includeTop:embeddingOnly:pooling:classNames:preprocessing:)``).
    func loadBackbone(runtime: RuntimeOptions, pooling: Pooling = .avg, preprocessing: PreprocessingConfiguration? = nil) async throws -> Backbone {
        try await openModel(backend: runtime.backend, includeTop: false, embeddingOnly: true, pooling: pooling, preprocessing: preprocessing).backbone()
    }
}

extension OneDNNBackend.ThreadPolicy: ExpressibleByArgument {}
/// `--layout-policy`: blocked or library. (`plain`, NHWC forced everywhere, is refused by the
/// backend for MobileNetV2's first layer, where oneDNN has only its reference kernel; it is for
/// the library's tests, not offered here.)
extension OneDNNBackend.LayoutPolicy: ExpressibleByArgument {
    public static var allValueStrings: [String] { ["blocked", "library"] }
    public init?(argument: String) {
        switch argument {
        case "blocked": self = .blocked
        case "library": self = .library
        default: return nil
        }
    }
}

/// How the network runs: `--backend`, `--threads`, `--thread-policy`, `--micro-batch`, `--no-fuse-depthwise`, `--batch-size`.
struct RuntimeOptionGroup: ParsableArguments {
    @Option(name: .long, help: "Images per inference batch.")
    var batchSize: Int = 16

    @Option(name: .long, help: ArgumentHelp("Inference backend: onednn (fast, the default) or reference (plain Swift, for debugging).", valueName: "name"))
    var backend: BackendChoice = .onednn

    @Option(name: .long, help: ArgumentHelp("Inference threads for the onednn backend (default: all cores).", valueName: "n"))
    var threads: Int?

    @Option(name: .long, help: ArgumentHelp("adaptive (the default): each batch size is timed at --threads and at one thread and the faster is used, so a core kept busy by another process does not stall every layer; fixed: always --threads.", valueName: "policy"))
    var threadPolicy: OneDNNBackend.ThreadPolicy = .adaptive

    @Option(name: .long, help: ArgumentHelp("Largest batch the onednn backend runs at once; bigger batches are split (default: 1, or 4 with --thread-policy fixed, or $MOBILENET_MICRO_BATCH). Changes speed and memory; results only within float rounding.", valueName: "n"))
    var microBatch: Int?

    @Option(name: .long, help: ArgumentHelp("How the onednn backend chooses memory formats: blocked (the default: nChw16c on AVX-512) or library (oneDNN's own choice). For diagnostics.", valueName: "policy"))
    var layoutPolicy: OneDNNBackend.LayoutPolicy = .blocked

    @Flag(name: .long, help: "Never fuse an expansion (1x1) layer with the depthwise layer after it. By default the onednn backend offers each such pair to oneDNN as one primitive, and oneDNN fuses the ones it has a fast kernel for (the large early layers). For comparison; results differ only within float rounding.")
    var noFuseDepthwise = false

    /// `$MOBILENET_MICRO_BATCH` when set and valid (checked in ``validate()``).
    static var environmentMicroBatch: Int? {
        ProcessInfo.processInfo.environment["MOBILENET_MICRO_BATCH"].flatMap { Int($0) }
    }

    func validate() throws {
        // Set but empty counts as unset; the reference backend does not micro-batch.
        if let text = ProcessInfo.processInfo.environment["MOBILENET_MICRO_BATCH"], !text.isEmpty, microBatch == nil, backend == .onednn {
            guard let value = Int(text), (1...RuntimeOptionGroup.maximumBatchSize).contains(value) else {
                throw ValidationError("$MOBILENET_MICRO_BATCH must be between 1 and \(RuntimeOptionGroup.maximumBatchSize), got '\(text)'")
            }
        }
        guard (1...RuntimeOptionGroup.maximumBatchSize).contains(batchSize) else {
            throw ValidationError("--batch-size must be between 1 and \(RuntimeOptionGroup.maximumBatchSize), got \(batchSize)")
        }
        if let threads, !(1...1024).contains(threads) { throw ValidationError("--threads must be between 1 and 1024, got \(threads)") }
        if backend == .reference, layoutPolicy != .blocked || noFuseDepthwise {
            throw ValidationError("--layout-policy and --no-fuse-depthwise set the onednn backend; the reference backend has neither")
        }
        if let microBatch, !(1...RuntimeOptionGroup.maximumBatchSize).contains(microBatch) {
            throw ValidationError("--micro-batch must be between 1 and \(RuntimeOptionGroup.maximumBatchSize), got \(microBatch)")
        }
    }

    /// The largest `--batch-size` (the pipeline also keeps one batch under 1 GB of input).
    static let maximumBatchSize = 4096

    /// The backend chosen with `--backend`, `--threads` and `--micro-batch`.
    func inferenceBackend() -> any InferenceBackend {
        switch backend {
        case .onednn: OneDNNBackend(threads: threads, layoutPolicy: layoutPolicy, microBatch: microBatch ?? RuntimeOptionGroup.environmentMicroBatch, threadPolicy: threadPolicy,
                                    fusesDepthwise: !noFuseDepthwise)
        case .reference: ReferenceBackend()
        }
    }

    /// The library's runtime options, with the decoding threads of `decode`.
    func runtime(_ decode: DecodeOptions? = nil) -> RuntimeOptions {
        RuntimeOptions(backend: inferenceBackend(), batchSize: batchSize, decodeThreads: decode?.threads)
    }
}

/// `--decode-threads`, for the commands that read image files.
struct DecodeOptions: ParsableArguments {
    @Option(name: .customLong("decode-threads"), help: ArgumentHelp("Threads that decode and resize images while the network runs (0: decode in line, no overlap; default: half the cores, at least 1).", valueName: "n"))
    var threads: Int?

    func validate() throws {
        if let threads, !(0...256).contains(threads) { throw ValidationError("--decode-threads must be between 0 and 256, got \(threads)") }
    }
}

/// The embedding database (SQLite): the transfer-learning cache and the image index are one
/// format, named by one option.
struct EmbeddingDatabaseOptions: ParsableArguments {
    @Option(name: [.customLong("index"), .customLong("cache")], help: ArgumentHelp("Embedding database (SQLite): the image index, or the embedding cache of train/evaluate/predict (--cache is the same option).",
        discussion: "train/evaluate/predict default to embeddings.sqlite in the cache folder ($MOBILENET_CACHE_DIR, else ~/.cache/swift-mobilenet).",
        valueName: "path"))
    var database: String?

    @Flag(name: .long, help: "train/evaluate/predict: do not read or write the embedding cache.")
    var noCache = false

    func validate() throws {
        if noCache, database != nil { throw ValidationError("--no-cache and --cache/--index exclude each other") }
    }

    /// The `--index` path of the index commands, which must be given and must not be empty.
    ///
    /// - Throws: `ValidationError` (a usage error) when `--index` is missing or is `""`.
    func indexPath() throws -> String {
        guard let database else { throw ValidationError("give the index database with --index FILE") }
        guard !database.isEmpty else { throw ValidationError("--index: the path is empty; give the index database file") }
        return database
    }

    /// Opens the cache store (creating its folder), or nil with --no-cache.
    func openCache() throws -> EmbeddingStore? {
        if noCache { return nil }
        if let database { return try EmbeddingStore(path: database) }
        let directory = WeightsResolver().cacheDirectory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try EmbeddingStore(url: directory.appendingPathComponent("embeddings.sqlite"))
    }
}

/// The values of `--backend`.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case onednn, reference
}

/// `--files-from FILE` and `--shard I/N`, for the commands that embed many files (`embed`,
/// `index add`): the files of a path list and one shard of them.
struct FileListOptions: ParsableArguments {
    @Option(name: .customLong("files-from"), help: ArgumentHelp("Read the image paths from FILE, one per line (- for standard input); a list names files, not folders.", valueName: "file"))
    var filesFrom: String?

    @Option(name: .long, help: ArgumentHelp("Process only shard I of N (0 <= I < N): the files whose path hashes (FNV-1a 64 of its UTF-8 bytes, as listed) to I modulo N, so N workers cover every file exactly once. E.g. --shard $JOB_COMPLETION_INDEX/8.", valueName: "I/N"))
    var shard: String?

    func validate() throws {
        if let shard {
            do { _ = try Shard(parsing: shard) } catch { throw ValidationError("--shard: \(error.description)") }
        }
        if filesFrom == "" { throw ValidationError("--files-from needs a file name (or - for standard input)") }
    }

    /// The shard (the whole list without `--shard`).
    var selectedShard: Shard { shard.flatMap { try? Shard(parsing: $0) } ?? .all }

    /// Where the files come from, for a manifest: the list's name, or the arguments.
    func source(_ arguments: [String]) -> String {
        filesFrom.map { $0 == "-" ? "standard input" : $0 } ?? arguments.joined(separator: " ")
    }

    /// The files of the list (`--files-from`) or of the arguments, kept to the shard, with the
    /// problems printed on standard error; `missing` lists the errors.
    ///
    /// An unreadable list prints its error and exits 1.
    func collect(_ arguments: [String], recursive: Bool) throws -> (files: [URL], missing: [ImageFileProblem]) {
        guard let filesFrom else {
            let (files, missing) = collectImageFiles(arguments, recursive: recursive)
            let shard = selectedShard
            return (shard == .all ? files : files.filter { shard.contains($0.relativePath) }, missing)
        }
        do {
            let list = try ImageFileList(listedIn: try PathListReader(path: filesFrom), shard: selectedShard)
            for problem in list.problems { printError("error: \(problem)") }
            return (list.files, list.problems.filter(\.isError))
        } catch {
            printError("error: \(error.description)")
            throw ExitCode(1)
        }
    }
}
