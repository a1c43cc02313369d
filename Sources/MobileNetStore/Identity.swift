import Foundation

/// What makes an embedding: the network and its exact weights. Two embeddings are comparable
/// only when their backbone identities are equal; the store never returns an embedding made by
/// another backbone.
public struct BackboneIdentity: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Architecture name: `"mobilenetv2"`; `"mobilenetv2+tflite-xnnpack"` or `"mobilenetv2+tflite-reference"` for a quantized `.tflite` on its integer kernels (their outputs differ now and then).
    public var architecture: String
    /// Width multiplier (Keras `alpha`).
    public var alpha: Double
    /// Model input height in pixels.
    public var inputHeight: Int
    /// Model input width in pixels.
    public var inputWidth: Int
    /// Global pooling of the embedding (`"avg"` like Keras `pooling="avg"`, or `"max"`).
    public var pooling: String
    /// SHA-256 (hex) of the weight file's bytes (for a fine-tuned base, of the file holding it).
    public var weightsSHA256: String

    /// Creates a backbone identity.
    public init(architecture: String = "mobilenetv2", alpha: Double, inputHeight: Int, inputWidth: Int, pooling: String = "avg", weightsSHA256: String) {
        self.architecture = architecture
        self.alpha = alpha
        self.inputHeight = inputHeight
        self.inputWidth = inputWidth
        self.pooling = pooling
        self.weightsSHA256 = weightsSHA256
    }

    /// The stable string stored in the database, e.g.
    /// `mobilenetv2;alpha=1.0;input=224x224;pooling=avg;weights=sha256:ab12...`.
    public var key: String {
        "\(architecture);alpha=\(Self.format(alpha));input=\(inputHeight)x\(inputWidth);pooling=\(pooling);weights=sha256:\(weightsSHA256)"
    }

    /// The same as ``key``.
    public var description: String { key }

    static func format(_ value: Double) -> String {
        value == value.rounded() ? String(format: "%.1f", value) : "\(value)"
    }
}

/// How an image file became the network input, as one value: part of the embedding cache key.
///
/// Designed to grow: each setting is a `name=value` pair in ``settings``; ``key`` lists them
/// sorted by name. A new setting (a crop mode, EXIF handling, a new resize) is added with its
/// current behaviour as the value; only embeddings made with exactly the same settings match.
public struct PreprocessingIdentity: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Setting name to value, e.g. `resize` → `bilinear-half-pixel`.
    public var settings: [String: String]

    /// Creates an identity from explicit settings.
    public init(settings: [String: String]) {
        self.settings = settings
    }

    /// The same identity with one setting changed or added.
    public func setting(_ name: String, _ value: String) -> PreprocessingIdentity {
        var copy = self
        copy.settings[name] = value
        return copy
    }

    /// The stable string stored in the database: `name=value` pairs sorted by name, joined with `;`.
    public var key: String {
        settings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ";")
    }

    /// The same as ``key``.
    public var description: String { key }
}
