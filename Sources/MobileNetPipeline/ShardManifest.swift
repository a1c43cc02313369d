import Foundation
import MobileNetIO
import MobileNetStore

/// What one shard of a distributed embedding run produced, written beside its output as
/// `<output>.manifest.json` (`mobilenet embed --shard`, `mobilenet index add --shard`): which
/// part of which list, made by which backbone and preprocessing, the files embedded with their
/// content hashes, the failures, and the SHA-256 of each output file, so a merge step can check
/// that shards fit together and that an output was not changed or cut short.
public struct ShardManifest: Codable, Sendable, Equatable {
    /// The value of ``format`` this build writes and reads.
    public static let formatName = "swift-mobilenet-shard-manifest/1"
    /// How paths are assigned to shards (``Shard``).
    public static let partitionName = "fnv1a-64(path utf-8 bytes) mod N"

    /// One embedded file.
    public struct File: Codable, Sendable, Equatable {
        /// The path as listed.
        public var path: String
        /// SHA-256 (hex) of the file's bytes when it was embedded.
        public var sha256: String
        /// Creates an entry.
        public init(path: String, sha256: String) {
            self.path = path
            self.sha256 = sha256
        }
    }

    /// One file that could not be embedded.
    public struct Failure: Codable, Sendable, Equatable {
        /// The path as listed.
        public var path: String
        /// The error message (naming the file and the problem).
        public var error: String
        /// Creates an entry.
        public init(path: String, error: String) {
            self.path = path
            self.error = error
        }
    }

    /// One output file of the shard, with its checksum.
    public struct Output: Codable, Sendable, Equatable {
        /// The file's path as given on the command line.
        public var path: String
        /// Its size in bytes.
        public var bytes: Int64
        /// SHA-256 (hex) of its bytes.
        public var sha256: String
        /// Creates an entry.
        public init(path: String, bytes: Int64, sha256: String) {
            self.path = path
            self.bytes = bytes
            self.sha256 = sha256
        }
    }

    /// ``formatName``.
    public var format: String
    /// The shard, `I/N`.
    public var shard: String
    /// ``partitionName``.
    public var partition: String
    /// The list or arguments the shard was cut from (`--files-from` name, or the arguments).
    public var source: String
    /// ``/MobileNetStore/BackboneIdentity/key`` of the network that made the embeddings.
    public var backbone: String
    /// ``/MobileNetStore/PreprocessingIdentity/key`` of the image pipeline.
    public var preprocessing: String
    /// Number of files embedded (``files`` count).
    public var count: Int
    /// The files embedded, in output order.
    public var files: [File]
    /// The files that failed.
    public var failures: [Failure]
    /// The output files with their checksums (empty for an index shard, which is checked
    /// through its database).
    public var outputs: [Output]

    /// Creates a manifest.
    public init(shard: Shard, source: String, backbone: BackboneIdentity, preprocessing: PreprocessingIdentity,
                files: [File], failures: [Failure], outputs: [Output]) {
        format = Self.formatName
        self.shard = shard.description
        partition = Self.partitionName
        self.source = source
        self.backbone = backbone.key
        self.preprocessing = preprocessing.key
        count = files.count
        self.files = files
        self.failures = failures
        self.outputs = outputs
    }

    /// The manifest's path beside an output: `<output>.manifest.json`.
    public static func url(besides output: URL) -> URL {
        output.deletingLastPathComponent().appendingPathComponent(output.lastPathComponent + ".manifest.json")
    }

    /// The checksum entry of the file at `url` (named by `url.relativePath`).
    ///
    /// - Throws: the file-system error when it cannot be read.
    public static func output(at url: URL) throws -> Output {
        let size = (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.int64Value ?? 0
        return Output(path: url.relativePath, bytes: size, sha256: try SHA256.hex(contentsOf: url))
    }

    /// Writes the manifest atomically beside `output` (``url(besides:)``), replacing an earlier
    /// run's manifest, and returns its URL.
    ///
    /// - Throws: an encoding error, or ``/MobileNetIO/AtomicFileError`` when it cannot be written.
    @discardableResult
    public func write(besides output: URL) throws -> URL {
        let url = Self.url(besides: output)
        try AtomicFile.write(try encoded(), to: url, overwrite: true)
        return url
    }

    /// The manifest as JSON (sorted keys, pretty-printed, a final newline).
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    /// Reads a manifest, or nil when `url` names no file.
    ///
    /// - Throws: a decoding error for a file that is not a manifest of ``formatName``.
    public static func read(_ url: URL) throws -> ShardManifest? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let data = try Data(contentsOf: url)
        guard data.count <= 1 << 30 else { throw CocoaError(.fileReadTooLarge) }
        let manifest = try JSONDecoder().decode(ShardManifest.self, from: data)
        guard manifest.format == formatName else { throw CocoaError(.fileReadCorruptFile) }
        return manifest
    }

    /// Whether this manifest records a finished run of the same work: the same shard, source,
    /// backbone, preprocessing and input files (in order) whose contents still have the recorded
    /// SHA-256 (an image replaced since must be embedded again, issue 32), no failures, and
    /// outputs whose sizes and SHA-256 still match (so a re-run of a complete shard can stop at once),
    /// and a ``count`` that agrees with ``files`` (an edited or damaged manifest is not trusted).
    public func isComplete(shard: Shard, source: String, backbone: BackboneIdentity, preprocessing: PreprocessingIdentity, inputs: [String]) -> Bool {
        guard count == files.count, self.shard == shard.description, self.source == source, self.backbone == backbone.key,
              self.preprocessing == preprocessing.key, failures.isEmpty, files.map(\.path) == inputs, !outputs.isEmpty else { return false }
        let outputsMatch = outputs.allSatisfy { output in
            (try? Self.output(at: URL(fileURLWithPath: output.path))) == output
        }
        return outputsMatch && files.allSatisfy { file in
            (try? SHA256.hex(contentsOf: URL(fileURLWithPath: file.path))) == file.sha256.lowercased()
        }
    }
}
