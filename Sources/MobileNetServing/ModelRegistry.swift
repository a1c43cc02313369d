import Foundation
import MobileNetIO
import MobileNetKernels

/// A `--model NAME=PATH` specification: a served name and the file to load.
public struct ModelSpecification: Sendable, Hashable, CustomStringConvertible {
    /// The served name: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting with `.` (it appears in
    /// URL paths, so never `/` or `:`).
    public var name: String
    /// The model or weight file.
    public var path: String

    /// Creates a specification.
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)`` for a name that is not allowed or an empty path.
    public init(name: String, path: String) throws(ServingError) {
        try Self.validate(name: name, in: "\(name)=\(path)")
        guard !path.isEmpty else { throw .invalidSpecification("'\(name)=': the path is empty") }
        self.name = name
        self.path = path
    }

    /// Parses `NAME=PATH` (the first `=` separates them).
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)`` naming the text.
    public init(parsing text: String) throws(ServingError) {
        guard let equals = text.firstIndex(of: "=") else {
            throw .invalidSpecification("'\(text)' is not NAME=PATH (for example imagenet=mobilenet_v2_weights.h5)")
        }
        try self.init(name: String(text[..<equals]), path: String(text[text.index(after: equals)...]))
    }

    /// Checks a served name.
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)``.
    public static func validate(name: String, in text: String) throws(ServingError) {
        let allowed = name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D || c == 0x2E
        }
        guard !name.isEmpty, name.utf8.count <= 64, allowed, !name.hasPrefix(".") else {
            throw .invalidSpecification("'\(text)': the name must be 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'")
        }
    }

    public var description: String { "\(name)=\(path)" }
}

/// How the models of a registry are loaded.
public struct ModelLoadingOptions: Sendable {
    /// The kernels that run the networks.
    public var backend: any InferenceBackend
    /// Input height for files that record none (weight files; default 224). A model file that
    /// records another size is refused when this is set (nil: each file's own).
    public var inputHeight: Int?
    /// Input width, as ``inputHeight``.
    public var inputWidth: Int?
    /// Preprocessing for weight files; nil for the Keras default. Model files keep theirs.
    public var preprocessing: PreprocessingConfiguration?
    /// Where default weights and the backbones of model files are looked for.
    public var resolver: WeightsResolver
    /// The weight file of the default `imagenet` model when no model is specified (nil: the
    /// resolver's search).
    public var defaultWeightsPath: String?
    /// The width multiplier of the default `imagenet` model (default 1.0; a given file's is read from it).
    public var defaultAlpha: Double
    /// The width multiplier every specified model must have (`--alpha`); nil accepts each file's.
    public var alpha: Double?
    /// Class names by served model name (`--labels NAME=FILE`), instead of what each file
    /// records: one per output, as ``/MobileNetTransfer/ModelOpenOptions/classNames``.
    public var classNames: [String: [String]] = [:]

    /// Creates options.
    public init(backend: any InferenceBackend, inputHeight: Int? = nil, inputWidth: Int? = nil, preprocessing: PreprocessingConfiguration? = nil,
                resolver: WeightsResolver = WeightsResolver(), defaultWeightsPath: String? = nil, defaultAlpha: Double = 1.0, alpha: Double? = nil) {
        self.defaultAlpha = defaultAlpha
        self.alpha = alpha
        self.backend = backend
        self.inputHeight = inputHeight
        self.inputWidth = inputWidth
        self.preprocessing = preprocessing
        self.resolver = resolver
        self.defaultWeightsPath = defaultWeightsPath
    }
}

/// The served models and image indexes by name, each with its ``DynamicBatcher``.
public final class ModelRegistry: Sendable {
    /// The models, in the order given.
    public let models: [ServedModel]
    /// The image indexes for similarity search, in the order given.
    public let indexes: [ServedIndex]
    private let batchers: [String: DynamicBatcher]
    private let indexBatchers: [String: DynamicBatcher]

    /// The name of the default model served when none is specified.
    public static let defaultModelName = "imagenet"

    /// Creates a registry of loaded models and indexes and starts their batchers.
    ///
    /// - Parameters:
    ///   - models: the models; names must differ.
    ///   - indexes: the image indexes; names must differ (from each other: indexes and models
    ///     are addressed by different routes).
    ///   - batching: the batching parameters of every model and index embedder.
    ///   - observer: told about every batcher's runs and queue (metrics), or nil.
    /// - Throws: ``ServingError/invalidSpecification(_:)`` for two models or two indexes of one name.
    public init(models: [ServedModel], indexes: [ServedIndex] = [], batching: BatchingConfiguration = BatchingConfiguration(),
                observer: (any BatcherObserver)? = nil) throws(ServingError) {
        var seen = Set<String>()
        for model in models where !seen.insert(model.name).inserted {
            throw .invalidSpecification("two models are named '\(model.name)'")
        }
        var seenIndexes = Set<String>()
        for index in indexes where !seenIndexes.insert(index.name).inserted {
            throw .invalidSpecification("two indexes are named '\(index.name)'")
        }
        self.models = models
        self.indexes = indexes
        var batchers: [String: DynamicBatcher] = [:]
        for model in models { batchers[model.name] = DynamicBatcher(model: model, configuration: batching, observer: observer) }
        self.batchers = batchers
        var indexBatchers: [String: DynamicBatcher] = [:]
        for index in indexes { indexBatchers[index.name] = DynamicBatcher(model: index.embedder, configuration: batching, observer: observer) }
        self.indexBatchers = indexBatchers
    }

    /// Checks, before anything is loaded (and before a server binds its port), that every file
    /// the specifications name is there and readable: each model file (or, with no models, the
    /// default weights file when one is given), each index database and each FAISS file. A
    /// mistyped path is then reported at once, not after the server has started listening.
    /// What is in the files is checked when they are loaded.
    ///
    /// - Throws: ``ServingError/modelLoadFailed(name:path:reason:)`` or
    ///   ``ServingError/indexLoadFailed(name:path:reason:)`` for the first file that is missing,
    ///   not a regular file, or not readable.
    public static func checkFilesExist(models: [ModelSpecification], indexes: [IndexSpecification], options: ModelLoadingOptions) throws(ServingError) {
        if models.isEmpty, let path = options.defaultWeightsPath, let problem = fileProblem(path) {
            throw .modelLoadFailed(name: defaultModelName, path: path, reason: problem)
        }
        for model in models {
            // A model may be a SavedModel folder or a TF Serving base folder of versions.
            if let problem = fileProblem(model.path, allowDirectory: true) { throw .modelLoadFailed(name: model.name, path: model.path, reason: problem) }
        }
        for index in indexes {
            for path in [index.path] + (index.annPath.map { [$0] } ?? []) {
                if let problem = fileProblem(path) { throw .indexLoadFailed(name: index.name, path: path, reason: problem) }
            }
        }
    }

    /// Why `path` cannot be read as a file (`PATH: no such file`), or nil; with `allowDirectory`,
    /// a readable folder is fine too (a SavedModel).
    static func fileProblem(_ path: String, allowDirectory: Bool = false) -> String? {
        var status = stat()
        guard stat(path, &status) == 0 else {
            return "\(path): " + (errno == ENOENT || errno == ENOTDIR ? "no such file" : String(cString: strerror(errno)))
        }
        if allowDirectory, status.st_mode & S_IFMT == S_IFDIR {
            return access(path, R_OK | X_OK) == 0 ? nil : "\(path): folder not readable (\(String(cString: strerror(errno))))"
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            return "\(path): " + (status.st_mode & S_IFMT == S_IFDIR ? "a directory, not a file" : "not a regular file")
        }
        guard access(path, R_OK) == 0 else { return "\(path): not readable (\(String(cString: strerror(errno))))" }
        return nil
    }

    /// Loads the specified models (the kind of each detected from its file), or with none the
    /// ImageNet classifier `imagenet` from the default weights.
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)`` for two specifications of one name,
    ///   ``ServingError/modelLoadFailed(name:path:reason:)`` for the first model that cannot be loaded.
    public static func load(_ specifications: [ModelSpecification], options: ModelLoadingOptions) async throws(ServingError) -> [ServedModel] {
        var seen = Set<String>()
        for spec in specifications where !seen.insert(spec.name).inserted {
            throw .invalidSpecification("two models are named '\(spec.name)'")
        }
        if specifications.isEmpty {
            return [try await ServedModel.loadImageNet(name: defaultModelName, weightsPath: options.defaultWeightsPath, alpha: options.defaultAlpha, inputHeight: options.inputHeight ?? 224,
                                                       inputWidth: options.inputWidth ?? options.inputHeight ?? 224, preprocessing: options.preprocessing,
                                                       backend: options.backend, resolver: options.resolver)]
        }
        var models: [ServedModel] = []
        for spec in specifications {
            models.append(try await ServedModel.load(name: spec.name, contentsOf: URL(fileURLWithPath: spec.path), inputHeight: options.inputHeight,
                                                     inputWidth: options.inputWidth, alpha: options.alpha, preprocessing: options.preprocessing,
                                                     classNames: options.classNames[spec.name], backend: options.backend, resolver: options.resolver))
        }
        return models
    }

    /// The model named `name`.
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``.
    public func model(named name: String) throws(ServingError) -> ServedModel {
        guard let model = models.first(where: { $0.name == name }) else { throw .modelNotFound(name: name, available: models.map(\.name)) }
        return model
    }

    /// The model named `name` in `version` (nil: the latest; every model has only version `1`).
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``, ``ServingError/versionNotFound(model:version:available:)``.
    public func model(named name: String, version: String?) throws(ServingError) -> ServedModel {
        let model = try model(named: name)
        if let version, version != ServedModel.version {
            throw .versionNotFound(model: name, version: version, available: [ServedModel.version])
        }
        return model
    }

    /// The batcher of the model named `name`.
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``.
    public func batcher(for name: String) throws(ServingError) -> DynamicBatcher {
        guard let batcher = batchers[name] else { throw .modelNotFound(name: name, available: models.map(\.name)) }
        return batcher
    }

    /// The index named `name`.
    ///
    /// - Throws: ``ServingError/indexNotFound(name:available:)``.
    public func index(named name: String) throws(ServingError) -> ServedIndex {
        guard let index = indexes.first(where: { $0.name == name }) else { throw .indexNotFound(name: name, available: indexes.map(\.name)) }
        return index
    }

    /// The batcher of the index named `name` (its embedder's).
    ///
    /// - Throws: ``ServingError/indexNotFound(name:available:)``.
    public func batcher(forIndex name: String) throws(ServingError) -> DynamicBatcher {
        guard let batcher = indexBatchers[name] else { throw .indexNotFound(name: name, available: indexes.map(\.name)) }
        return batcher
    }

    /// Loads the specified indexes; the served models' files are tried first as their backbones.
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)`` for two specifications of one name,
    ///   ``ServingError/indexLoadFailed(name:path:reason:)`` for the first index that cannot be loaded.
    public static func loadIndexes(_ specifications: [IndexSpecification], models: [ServedModel], options: ModelLoadingOptions) async throws(ServingError) -> [ServedIndex] {
        var seen = Set<String>()
        for spec in specifications where !seen.insert(spec.name).inserted {
            throw .invalidSpecification("two indexes are named '\(spec.name)'")
        }
        var indexes: [ServedIndex] = []
        for spec in specifications {
            indexes.append(try await ServedIndex.load(name: spec.name, contentsOf: URL(fileURLWithPath: spec.path), preprocessing: options.preprocessing,
                                                      candidateWeights: models.map(\.source), backend: options.backend, resolver: options.resolver,
                                                      annFile: spec.annPath.map { URL(fileURLWithPath: $0) }))
        }
        return indexes
    }

    /// Stops every batcher from taking requests and waits until the accepted ones are answered.
    public func shutdown() {
        let all = Array(batchers.values) + Array(indexBatchers.values)
        for batcher in all { batcher.shutdown() }
        for batcher in all { batcher.waitUntilFinished() }
    }
}
