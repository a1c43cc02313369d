import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetSavedModel
import Synchronization

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

/// Which version folders of a TF Serving base folder (`BASE/1/`, `BASE/2/`, ...) are served, as
/// TensorFlow Serving's `model_version_policy` (`all {}`, `latest { num_versions }`,
/// `specific { versions }`); at most ``ModelRegistry/maximumVersionsPerModel`` versions.
///
/// Written on the command line as `all`, `latest` (the highest one), `latest:N` or
/// `specific:V,V,...` (``init(parsing:)``).
public enum ModelVersionPolicy: Sendable, Hashable, CustomStringConvertible {
    /// Every version folder (the highest ``ModelRegistry/maximumVersionsPerModel``); a version
    /// whose folder is removed is retired. Requests without a version get the highest.
    case all
    /// The `count` highest versions (TensorFlow Serving's default is one): a new version folder
    /// replaces the lowest of them.
    case latest(count: Int)
    /// These versions (ascending, distinct), those of them that have a folder: a listed version
    /// is loaded when its folder appears and retired when it goes, the others are never served.
    case specific(versions: [Int])

    /// Parses `all`, `latest`, `latest:N` (N from 1 to ``ModelRegistry/maximumVersionsPerModel``)
    /// or `specific:V,V,...` (1 to ``ModelRegistry/maximumVersionsPerModel`` distinct
    /// non-negative version numbers, as TF Serving's folder names).
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)`` naming what is wrong.
    public init(parsing text: String) throws(ServingError) {
        let limit = ModelRegistry.maximumVersionsPerModel
        let usage = "all, latest, latest:N (1 to \(limit)) or specific:V,V,... (1 to \(limit) version numbers)"
        let (kind, argument) = text.firstIndex(of: ":").map { (String(text[..<$0]), Optional(String(text[text.index(after: $0)...]))) } ?? (text, nil)
        switch (kind, argument) {
        case ("all", nil):
            self = .all
        case ("latest", nil):
            self = .latest(count: 1)
        case ("latest", let count?):
            guard let n = Int(count), (1...limit).contains(n) else {
                throw .invalidSpecification("--model-version-policy '\(text)': the count must be 1 to \(limit)")
            }
            self = .latest(count: n)
        case ("specific", let list?):
            let parts = list.split(separator: ",", omittingEmptySubsequences: false)
            let numbers = parts.compactMap { part in Int(part).flatMap { $0 >= 0 ? $0 : nil } }
            guard !parts.isEmpty, numbers.count == parts.count else {
                throw .invalidSpecification("--model-version-policy '\(String(text.prefix(80)))': the versions must be non-negative integers separated by commas")
            }
            guard Set(numbers).count == numbers.count, numbers.count <= limit else {
                throw .invalidSpecification("--model-version-policy '\(String(text.prefix(80)))': 1 to \(limit) distinct versions")
            }
            self = .specific(versions: numbers.sorted())
        default:
            throw .invalidSpecification("--model-version-policy must be \(usage), got '\(String(text.prefix(80)))'")
        }
    }

    /// The command-line form: `all`, `latest`, `latest:3`, `specific:1,3`.
    public var description: String {
        switch self {
        case .all: "all"
        case .latest(let count): count == 1 ? "latest" : "latest:\(count)"
        case .specific(let versions): "specific:" + versions.map(String.init).joined(separator: ",")
        }
    }

    /// The versions served of those on disk (`available` ascending; the result ascending).
    public func versions(of available: [Int]) -> [Int] {
        let limit = ModelRegistry.maximumVersionsPerModel
        switch self {
        case .all: return Array(available.suffix(limit))
        case .latest(let count): return Array(available.suffix(min(max(1, count), limit)))
        case .specific(let versions):
            let wanted = Set(versions)
            return Array(available.filter(wanted.contains).suffix(limit))
        }
    }
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
    /// Which versions of a TF Serving base folder are served (default ``ModelVersionPolicy/all``).
    public var versionPolicy: ModelVersionPolicy = .all

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
///
/// A model may be served in several versions (the version folders of a TensorFlow Serving base
/// folder); requests that name no version get the highest. Versions are added and retired while
/// the server runs (``add(_:)``, ``retire(model:version:grace:)``): a retired version takes no new
/// requests at once, and its batcher is stopped only after a grace period, so that a request
/// that had already found it is still answered.
public final class ModelRegistry: Sendable {
    /// One served version: the model and its batcher.
    private struct Served: Sendable {
        let model: ServedModel
        let batcher: DynamicBatcher
    }
    private struct State: Sendable {
        /// By model name, ascending by version.
        var versions: [String: [Served]] = [:]
        /// Retired versions by model name, in retirement order.
        var retired: [String: [Int64]] = [:]
        /// Batchers of retired versions not stopped yet.
        var draining: [DynamicBatcher] = []
        /// Versions that failed to load while the server ran, by model name: version → why.
        var failed: [String: [Int64: String]] = [:]
    }
    private let state: Mutex<State>
    /// The model names, in the order given.
    private let names: [String]
    /// The image indexes for similarity search, in the order given.
    public let indexes: [ServedIndex]
    private let indexBatchers: [String: DynamicBatcher]
    private let batching: BatchingConfiguration
    private let observer: (any BatcherObserver)?

    /// The name of the default model served when none is specified.
    public static let defaultModelName = "imagenet"

    /// The most versions of one model served at once (the highest are kept).
    public static let maximumVersionsPerModel = 16

    /// Creates a registry of loaded models and indexes and starts their batchers.
    ///
    /// - Parameters:
    ///   - models: the models; several of one name are versions of it (``ServedModel/versionNumber``),
    ///     which must differ.
    ///   - indexes: the image indexes; names must differ (from each other: indexes and models
    ///     are addressed by different routes).
    ///   - batching: the batching parameters of every model and index embedder.
    ///   - observer: told about every batcher's runs and queue (metrics), or nil.
    /// - Throws: ``ServingError/invalidSpecification(_:)`` for one version of a model given twice,
    ///   or two indexes of one name.
    public init(models: [ServedModel], indexes: [ServedIndex] = [], batching: BatchingConfiguration = BatchingConfiguration(),
                observer: (any BatcherObserver)? = nil) throws(ServingError) {
        var state = State(), names: [String] = []
        for model in models {
            if state.versions[model.name] == nil { names.append(model.name) }
            guard !(state.versions[model.name] ?? []).contains(where: { $0.model.versionNumber == model.versionNumber }) else {
                throw .invalidSpecification("two models are named '\(model.name)'\(model.versionNumber == 1 ? "" : " in version \(model.versionNumber)")")
            }
            state.versions[model.name, default: []].append(Served(model: model, batcher: DynamicBatcher(model: model, configuration: batching, observer: observer)))
            state.versions[model.name]!.sort { $0.model.versionNumber < $1.model.versionNumber }
        }
        var seenIndexes = Set<String>()
        for index in indexes where !seenIndexes.insert(index.name).inserted {
            throw .invalidSpecification("two indexes are named '\(index.name)'")
        }
        self.state = Mutex(state)
        self.names = names
        self.indexes = indexes
        self.batching = batching
        self.observer = observer
        var indexBatchers: [String: DynamicBatcher] = [:]
        for index in indexes { indexBatchers[index.name] = DynamicBatcher(model: index.embedder, configuration: batching, observer: observer) }
        self.indexBatchers = indexBatchers
    }

    /// The models, in the order given: each in its highest version.
    public var models: [ServedModel] {
        state.withLock { state in names.compactMap { state.versions[$0]?.last?.model } }
    }

    /// Every served version of the model named `name`, ascending.
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``.
    public func versions(of name: String) throws(ServingError) -> [ServedModel] {
        let versions = state.withLock { $0.versions[name]?.map(\.model) }
        guard let versions, !versions.isEmpty else { throw .modelNotFound(name: name, available: names) }
        return versions
    }

    /// The versions of the model named `name` that were retired while the server ran (their
    /// folders removed, or superseded under the `latest` policy), oldest first.
    public func retiredVersions(of name: String) -> [Int64] {
        state.withLock { $0.retired[name] ?? [] }
    }

    /// Records that a version of a served model failed to load (a broken or half-copied
    /// version folder): the status lists it as TensorFlow Serving does (`END` with the error),
    /// until it loads.
    public func recordLoadFailure(model name: String, version: Int64, reason: String) {
        state.withLock { $0.failed[name, default: [:]][version] = reason }
    }

    /// The versions of the model named `name` that failed to load, with why, ascending.
    public func failedVersions(of name: String) -> [(version: Int64, reason: String)] {
        state.withLock { ($0.failed[name] ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }

    /// Adds a version of a served model (a new version folder) and starts its batcher; from now
    /// on requests without a version get it when it is the highest.
    ///
    /// - Throws: ``ServingError/invalidSpecification(_:)`` when the model is not served or the
    ///   version already is.
    public func add(_ model: ServedModel) throws(ServingError) {
        let batcher = DynamicBatcher(model: model, configuration: batching, observer: observer)
        let problem: String? = state.withLock { state in
            guard var versions = state.versions[model.name] else { return "no model named '\(model.name)' is served" }
            guard !versions.contains(where: { $0.model.versionNumber == model.versionNumber }) else {
                return "model '\(model.name)' is already served in version \(model.versionNumber)"
            }
            versions.append(Served(model: model, batcher: batcher))
            versions.sort { $0.model.versionNumber < $1.model.versionNumber }
            state.versions[model.name] = versions
            state.retired[model.name]?.removeAll { $0 == model.versionNumber }
            state.failed[model.name]?[model.versionNumber] = nil
            return nil
        }
        if let problem {
            batcher.shutdown()
            throw .invalidSpecification(problem)
        }
    }

    /// Retires a version: requests no longer find it at once; its batcher takes what was already
    /// sent to it for `grace` more (a request that found the version just before), then stops
    /// and drains. The last version of a model is never retired.
    ///
    /// - Returns: whether the version was served and is now retired.
    @discardableResult
    public func retire(model name: String, version: Int64, grace: Duration = .seconds(5)) -> Bool {
        let removed: Served? = state.withLock { state in
            guard var versions = state.versions[name], versions.count > 1, let i = versions.firstIndex(where: { $0.model.versionNumber == version }) else { return nil }
            let served = versions.remove(at: i)
            state.versions[name] = versions
            state.retired[name, default: []].append(version)
            state.draining.append(served.batcher)
            return served
        }
        guard let removed else { return false }
        let batcher = removed.batcher
        Thread.detachNewThread { [self] in
            Thread.sleep(forTimeInterval: Double(grace.components.seconds) + Double(grace.components.attoseconds) * 1e-18)
            batcher.shutdown()
            batcher.waitUntilFinished()
            state.withLock { $0.draining.removeAll { $0 === batcher } }
        }
        return true
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
            let url = URL(fileURLWithPath: spec.path)
            // A TF Serving base folder: the versions its policy serves; anything else: version 1.
            var versions: [Int?] = [nil]
            if SavedModelFolder.isBaseFolder(url) {
                let available = SavedModelFolder.versions(in: url) ?? []
                versions = options.versionPolicy.versions(of: available)
                guard !versions.isEmpty else {
                    throw .modelLoadFailed(name: spec.name, path: spec.path, reason: "--model-version-policy \(options.versionPolicy) serves none of the version folders of \(spec.path) (\(available.map(String.init).joined(separator: ", ")))")
                }
            }
            for version in versions {
                models.append(try await load(spec, version: version, options: options))
            }
        }
        return models
    }

    /// Loads one version of a specified model (nil: a model file or SavedModel folder, served as version 1).
    ///
    /// - Throws: ``ServingError/modelLoadFailed(name:path:reason:)``.
    public static func load(_ spec: ModelSpecification, version: Int?, options: ModelLoadingOptions) async throws(ServingError) -> ServedModel {
        try await ServedModel.load(name: spec.name, contentsOf: URL(fileURLWithPath: spec.path), inputHeight: options.inputHeight,
                                   inputWidth: options.inputWidth, alpha: options.alpha, preprocessing: options.preprocessing,
                                   classNames: options.classNames[spec.name], backend: options.backend, resolver: options.resolver, version: version)
    }

    /// The model named `name`, in its highest version.
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``.
    public func model(named name: String) throws(ServingError) -> ServedModel {
        guard let model = state.withLock({ $0.versions[name]?.last?.model }) else { throw .modelNotFound(name: name, available: names) }
        return model
    }

    /// The model named `name` in `version` (nil: the highest).
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``, ``ServingError/versionNotFound(model:version:available:)``.
    public func model(named name: String, version: String?) throws(ServingError) -> ServedModel {
        guard let version else { return try model(named: name) }
        let versions = try versions(of: name)
        guard let number = Int64(version), let model = versions.first(where: { $0.versionNumber == number }) else {
            throw .versionNotFound(model: name, version: version, available: versions.map(\.version))
        }
        return model
    }

    /// The batcher of a served model version.
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)`` when it is not served (any more).
    public func batcher(for model: ServedModel) throws(ServingError) -> DynamicBatcher {
        let found: DynamicBatcher? = state.withLock { state in
            state.versions[model.name]?.first { $0.model === model }?.batcher
                ?? state.draining.first { $0.model === model }
        }
        guard let found else { throw .modelNotFound(name: model.name, available: names) }
        return found
    }

    /// The batcher of the model named `name`, in its highest version.
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``.
    public func batcher(for name: String) throws(ServingError) -> DynamicBatcher {
        try batcher(for: try model(named: name))
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
        let all = state.withLock { state in state.versions.values.flatMap { $0.map(\.batcher) } + state.draining } + Array(indexBatchers.values)
        for batcher in all { batcher.shutdown() }
        for batcher in all { batcher.waitUntilFinished() }
    }
}
