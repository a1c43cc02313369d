import ArgumentParser
import Foundation
import MobileNet

/// Options for the embedding cache, shared by train, evaluate and predict.
struct CacheOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Embedding cache database (SQLite).",
        discussion: "Default: embeddings.sqlite in the cache folder ($MOBILENET_CACHE_DIR, else ~/.cache/swift-mobilenet).",
        valueName: "path"))
    var cache: String?

    @Flag(name: .long, help: "Do not read or write the embedding cache.")
    var noCache = false

    /// Opens the store (creating its folder), or nil with --no-cache.
    func openStore() throws -> EmbeddingStore? {
        if noCache { return nil }
        let url: URL
        if let cache {
            url = URL(fileURLWithPath: cache)
        } else {
            let directory = WeightsResolver().cacheDirectory
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            url = directory.appendingPathComponent("embeddings.sqlite")
        }
        return try EmbeddingStore(url: url)
    }
}

/// The frozen backbone of a classifier: the embedding network, its identity and weight file.
struct Backbone {
    let network: MobileNetV2
    let identity: BackboneIdentity
    let weightsURL: URL

    /// Resolves the weight file like `embed` (a file without the top is preferred) and builds the
    /// pooled embedding network.
    static func load(model: ModelOptions, pooling: Pooling = .avg) async throws -> Backbone {
        let (h, w) = try model.inputDimensions()
        let size = h == w && MobileNetV2Configuration.officialInputSizes.contains(h) ? h : 224
        let url = try await WeightsResolver().resolve(alpha: model.alpha, inputSize: size, includeTop: false, explicitPath: model.weights)
        return try load(url: url, alpha: model.alpha, height: h, width: w, pooling: pooling, backend: model.inferenceBackend())
    }

    /// Builds the embedding network from `url` (any Keras layout, nested MobileNetV2 included).
    static func load(url: URL, alpha: Double, height: Int, width: Int, pooling: Pooling = .avg, backend: any InferenceBackend) throws -> Backbone {
        let configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: height, inputWidth: width, includeTop: false, pooling: pooling)
        let weights = try KerasWeightFile.read(contentsOf: url).weights.mobileNetV2Part()
        let network = try MobileNetV2(configuration: configuration, weights: weights.droppingClassifier(), backend: backend)
        return Backbone(network: network, identity: try BackboneIdentity(configuration: configuration, weightsFile: url), weightsURL: url)
    }
}

/// Embeds files through the cache, printing progress and errors on standard error.
func embedWithProgress(_ embedder: CachedEmbedder, files: [URL], label: String) throws -> (embeddings: [URL: ImageEmbedding], failures: [EmbeddingFailure]) {
    let start = Date()
    var progress: ProgressBar?
    let result = try embedder.embed(files) { done, total in
        // The bar is made at the first report (the count to compute is known only then), but
        // its rate counts from the start of the whole embedding step.
        if progress == nil { progress = ProgressBar(total: total, unit: "images", start: start) }
        progress?.update(done: done)
    }
    progress?.finish()
    for failure in result.failures { printError("error: \(failure.message) (skipped)") }
    let stats = embedder.lastStatistics
    printError("\(label): \(result.embeddings.count) images embedded (\(stats.cached) from the cache, \(stats.computed) computed) in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    return result
}

/// The labelled matrix of the images that were embedded (the others are left out).
func labelledMatrix(_ images: [LabelledImage], embeddings: [URL: ImageEmbedding]) -> (LabelledMatrix, [LabelledImage]) {
    let kept = images.filter { embeddings[$0.url] != nil }
    let rows = kept.compactMap { embeddings[$0.url]?.vector }
    return (LabelledMatrix(features: Matrix(stacking: rows), labels: kept.map(\.label)), kept)
}

/// A trained classifier ready to predict: the backbone, the head and the class names.
struct LoadedClassifier {
    let backbone: Backbone
    let head: ClassifierHead
    let classNames: [String]
    let preprocessing: PreprocessingIdentity

    /// Loads a classifier: a `mobilenet train` model file (JSON), or a Keras transfer model
    /// (`.keras` / whole-model `.h5`).
    ///
    /// For a model file, the backbone weight file is `--weights` when given, else the path
    /// recorded at training, else the normal resolution; its SHA-256 must equal the recorded one.
    /// For a Keras model, the base and head come from the file itself; class names are
    /// `classNames`, else the sorted subfolders of `classNamesFrom`, else `class0`, `class1`, ...
    static func load(path: String, model options: ModelOptions, classNamesFrom root: URL? = nil, classNames: [String]? = nil) async throws -> LoadedClassifier {
        let url = URL(fileURLWithPath: path)
        let head = (try? FileHandle(forReadingFrom: url)).flatMap { handle in
            defer { try? handle.close() }
            return try? handle.read(upToCount: 8)
        } ?? Data()
        let isKeras = head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x89, 0x48, 0x44, 0x46])
        if isKeras { return try loadKeras(url: url, options: options, classNamesFrom: root, classNames: classNames) }
        let saved = try ClassifierModel.read(contentsOf: url)
        let identity = saved.backbone
        let weightsURL: URL
        if let explicit = options.weights {
            weightsURL = URL(fileURLWithPath: explicit)
        } else if let recorded = saved.backboneWeightsPath, FileManager.default.fileExists(atPath: recorded) {
            weightsURL = URL(fileURLWithPath: recorded)
        } else {
            let size = identity.inputHeight == identity.inputWidth && MobileNetV2Configuration.officialInputSizes.contains(identity.inputHeight) ? identity.inputHeight : 224
            weightsURL = try await WeightsResolver().resolve(alpha: identity.alpha, inputSize: size, includeTop: false)
        }
        let backbone = try Backbone.load(url: weightsURL, alpha: identity.alpha, height: identity.inputHeight, width: identity.inputWidth,
                                         pooling: Pooling(rawValue: identity.pooling) ?? .avg, backend: options.inferenceBackend())
        guard backbone.identity == identity else {
            throw ClassifierModelError.backboneMismatch(path: url.path, expected: identity.key, found: "\(backbone.identity.key) (\(weightsURL.path))")
        }
        try checkWidth(head: saved.head, backbone: backbone, path: url.path)
        return LoadedClassifier(backbone: backbone, head: saved.head, classNames: saved.classNames, preprocessing: saved.preprocessing)
    }

    /// The head must take the backbone's embedding width (1280 for alpha ≤ 1).
    static func checkWidth(head: ClassifierHead, backbone: Backbone, path: String) throws {
        let width = backbone.network.layers.last?.outputShape.last ?? 0
        if let problem = head.inconsistency { throw CLIFailure("\(path): inconsistent head: \(problem)") }
        guard head.inputs == width else {
            throw CLIFailure("\(path): the head takes \(head.inputs)-d embeddings but the backbone gives \(width)-d ones")
        }
    }

    static func loadKeras(url: URL, options: ModelOptions, classNamesFrom root: URL?, classNames: [String]?) throws -> LoadedClassifier {
        let imported = try KerasTransferModel.read(contentsOf: url)
        let (h, w) = try imported.inputSize ?? options.inputDimensions()
        let configuration = MobileNetV2Configuration(alpha: imported.alpha, inputHeight: h, inputWidth: w, includeTop: false, pooling: .avg)
        let network = try MobileNetV2(configuration: configuration, weights: imported.backboneWeights.droppingClassifier(), backend: options.inferenceBackend())
        let classes = imported.head.classes
        var names = classNames ?? (0..<classes).map { "class\($0)" }
        if classNames == nil, let root { names = try ImageFolder(root: root).classNames }
        guard names.count == classes else {
            throw CLIFailure("\(url.path): the model has \(classes) classes but \(names.count) class names were given (\(names.joined(separator: ", ")))")
        }
        let identity = try BackboneIdentity(configuration: configuration, weightsFile: url)
        let backbone = Backbone(network: network, identity: identity, weightsURL: url)
        try checkWidth(head: imported.head, backbone: backbone, path: url.path)
        return LoadedClassifier(backbone: backbone, head: imported.head,
                                classNames: names, preprocessing: .standard)
    }
}

/// A failure with a plain message, printed as `error: <message>`.
struct CLIFailure: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
