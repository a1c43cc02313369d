import Foundation
import MobileNetPipeline
import MobileNetIO
import MobileNetStore

/// Errors reading a classifier model file. Each names the file.
public enum ClassifierModelError: Error, Equatable, CustomStringConvertible {
    /// The file cannot be read.
    case unreadable(path: String, message: String)
    /// Not JSON, or not a swift-mobilenet classifier.
    case invalid(path: String, message: String)
    /// Written by a newer format version.
    case unsupportedVersion(path: String, found: Int, supported: Int)
    /// The weight file given for the backbone is not the one the head was trained on.
    case backboneMismatch(path: String, expected: String, found: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .unreadable(let path, let message): return "\(path): cannot read the model file (\(message))"
        case .invalid(let path, let message): return "\(path): not a swift-mobilenet classifier model file (\(message))"
        case .unsupportedVersion(let path, let found, let supported):
            return "\(path): model file format version \(found) is newer than this build supports (\(supported))"
        case .backboneMismatch(let path, let expected, let found):
            return "\(path): the head was trained on backbone \(expected), but the weights give \(found); pass the same weight file (--weights)"
        }
    }
}

/// A trained classifier: one versioned JSON file holding everything needed to predict —
/// the head weights (Float32), the class names, the backbone identity (alpha, input size,
/// weights SHA-256 and the weight file's path when trained), the preprocessing settings, the
/// training settings, the history and the metrics.
public struct ClassifierModel: Sendable, Equatable, Codable {
    /// `"swift-mobilenet-classifier"`.
    public var format: String = ClassifierModel.formatName
    /// Format version: 1 for a head on the frozen base, 2 with ``fineTuning`` (kept in step when
    /// ``fineTuning`` is set; a read model keeps its file's value).
    public var version: Int = 1
    /// Class names, in label order (sorted folder names).
    public var classNames: [String]
    /// The frozen backbone the head expects.
    public var backbone: BackboneIdentity
    /// Path of the backbone weight file at training time (a hint; the hash is what counts).
    public var backboneWeightsPath: String?
    /// How images were turned into network input.
    public var preprocessing: PreprocessingIdentity
    /// The preprocessing settings the head was trained with, when recorded (files written
    /// before this field have only ``preprocessing``; ``recordedPreprocessing`` recovers the default).
    public var preprocessingConfiguration: PreprocessingConfiguration?
    /// The head (weights already rounded to Float32).
    public var head: ClassifierHead
    /// How it was trained.
    public var training: TrainingSettings?
    /// Per-epoch metrics.
    public var history: [EpochRecord]
    /// Epoch whose weights were kept.
    public var bestEpoch: Int?
    /// Validation metrics of the saved head.
    public var validation: EvaluationReport?
    /// ISO 8601 creation time.
    public var created: String?
    /// The fine-tuned layers of the base and the fine-tuning run (`train --fine-tune-at`); nil
    /// for a head trained on the frozen base. A file with it has format version 2 (older builds
    /// refuse it rather than predict with the unchanged base); a file without it, version 1.
    public var fineTuning: FineTunedBase? {
        didSet { version = fineTuning == nil ? 1 : 2 }
    }

    /// The `format` value.
    public static let formatName = "swift-mobilenet-classifier"
    /// The newest version this build reads and writes (2: with ``fineTuning``).
    public static let currentVersion = 2

    /// Creates a model.
    public init(classNames: [String], backbone: BackboneIdentity, backboneWeightsPath: String?, preprocessing: PreprocessingIdentity,
                preprocessingConfiguration: PreprocessingConfiguration? = nil,
                head: ClassifierHead, training: TrainingSettings?, history: [EpochRecord], bestEpoch: Int?, validation: EvaluationReport?) {
        self.preprocessingConfiguration = preprocessingConfiguration
        self.classNames = classNames
        self.backbone = backbone
        self.backboneWeightsPath = backboneWeightsPath
        self.preprocessing = preprocessing
        self.head = head
        self.training = training
        self.history = history
        self.bestEpoch = bestEpoch
        self.validation = validation
        self.created = ISO8601DateFormatter().string(from: Date())
    }

    /// The preprocessing the head was trained with: ``preprocessingConfiguration``, or for an
    /// older file the configuration its ``preprocessing`` identity describes; nil when unknown
    /// (then only the identity can be checked).
    public var recordedPreprocessing: PreprocessingConfiguration? {
        preprocessingConfiguration ?? PreprocessingConfiguration(identitySettings: preprocessing.settings)
    }

    /// Writes the model as pretty JSON, atomically.
    ///
    /// - Parameters:
    ///   - url: the model file to write (pretty JSON).
    ///   - overwrite: replace an existing file; without it an existing file is an error.
    /// - Throws: `CocoaError(.fileWriteFileExists)` or the file-system error.
    public func write(to url: URL, overwrite: Bool) throws {
        try AtomicFile.write(try encoded(), to: url, overwrite: overwrite)
    }

    /// The file's bytes: pretty JSON with sorted keys; version 1 without ``fineTuning``, 2 with it.
    public func encoded() throws -> Data {
        var copy = self
        copy.version = fineTuning == nil ? 1 : 2
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(copy)
    }

    /// The largest model file read (256 MiB): a model fine-tuned from the first layer of an
    /// alpha 1.4 base is under 60 MB; a bigger file is refused before it is read.
    public static let maximumFileBytes = 256 << 20

    /// Reads a model file.
    ///
    /// - Throws: ``ClassifierModelError`` naming the file: ``ClassifierModelError/unreadable(path:message:)``
    ///   also for a directory, a device or FIFO, and a file over ``maximumFileBytes``.
    public static func read(contentsOf url: URL) throws(ClassifierModelError) -> ClassifierModel {
        switch FileKind(path: url.path) {
        case .missing: throw .unreadable(path: url.path, message: FileKind.unreachableReason(url.path) ?? "no such file")
        case .regular(let bytes) where bytes > Int64(maximumFileBytes):
            throw .unreadable(path: url.path, message: "\(bytes) bytes, more than the \(maximumFileBytes >> 20) MiB a model file can have")
        case .regular: break
        case let other: throw .unreadable(path: url.path, message: other.description)
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw .unreadable(path: url.path, message: error.localizedDescription) }
        return try decode(data, path: url.path)
    }

    /// Decodes a model file's bytes (see ``read(contentsOf:)``).
    ///
    /// - Parameters:
    ///   - data: the JSON bytes.
    ///   - path: the file, for messages.
    /// - Throws: ``ClassifierModelError`` naming `path`.
    public static func decode(_ data: Data, path: String) throws(ClassifierModelError) -> ClassifierModel {
        let url = URL(fileURLWithPath: path)
        guard (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
            throw .invalid(path: url.path, message: "not valid JSON, or not a JSON object")
        }
        struct Header: Decodable { var format: String?; var version: Int? }
        guard let header = try? JSONDecoder().decode(Header.self, from: data) else {
            throw .invalid(path: url.path, message: "\"format\" and \"version\" must be a string and an integer")
        }
        guard header.format == formatName else {
            throw .invalid(path: url.path, message: "\"format\" is \(header.format.map { "'\($0)'" } ?? "missing"), expected '\(formatName)'")
        }
        guard let version = header.version, version >= 1 else {
            throw .invalid(path: url.path, message: header.version.map { "\"version\" is \($0); versions start at 1" } ?? "\"version\" is missing")
        }
        guard version <= currentVersion else {
            throw .unsupportedVersion(path: url.path, found: version, supported: currentVersion)
        }
        do {
            let model = try JSONDecoder().decode(ClassifierModel.self, from: data)
            if let problem = model.head.inconsistency {
                throw ClassifierModelError.invalid(path: url.path, message: "inconsistent head: \(problem)")
            }
            if let scaling = model.preprocessingConfiguration?.scaling, !scaling.isValid {
                throw ClassifierModelError.invalid(path: url.path, message: "preprocessing scaling \(scaling) needs three means and three non-zero deviations")
            }
            if let fineTuning = model.fineTuning {
                guard version >= 2 else { throw ClassifierModelError.invalid(path: url.path, message: "fine-tuned layers in a version \(version) file") }
                guard FineTunedBase.digest(fineTuning.layers) == fineTuning.weightsSHA256 else {
                    throw ClassifierModelError.invalid(path: url.path, message: "the fine-tuned layers do not match their weightsSHA256")
                }
                guard model.head.layers.count == 2, case .dense = model.head.layers[1] else {
                    throw ClassifierModelError.invalid(path: url.path, message: "a fine-tuned model has a Dropout → Dense head")
                }
            }
            guard model.head.classes == model.classNames.count else {
                throw ClassifierModelError.invalid(path: url.path, message: "head has \(model.head.classes) outputs for \(model.classNames.count) classes")
            }
            return model
        } catch let error as ClassifierModelError {
            throw error
        } catch let error as DecodingError {
            throw .invalid(path: url.path, message: Self.describe(error))
        } catch {
            throw .invalid(path: url.path, message: "\(error)")
        }
    }
}

extension ClassifierModel {
    /// A decoding error as one line: what is wrong, at which key path.
    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the top level" : "'" + keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[") + "'"
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "missing '\(key.stringValue)' in \(path(context))"
        case .valueNotFound(_, let context):
            return "missing value at \(path(context))"
        case .typeMismatch(let type, let context):
            return "\(path(context)) is not a \(type)"
        case .dataCorrupted(let context):
            return "invalid value at \(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

extension ClassifierModelError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
