/// Global pooling after the last convolution when the classifier is not included
/// (Keras `pooling=` argument of `MobileNetV2`).
public enum Pooling: String, Sendable, Hashable, Codable, CaseIterable {
    /// `GlobalAveragePooling2D`: `[N, H, W, C]` to `[N, C]`, the usual embedding.
    case avg
    /// `GlobalMaxPooling2D`: `[N, H, W, C]` to `[N, C]`.
    case max
}

/// The activation of the `predictions` layer (Keras `classifier_activation=`).
public enum ClassifierActivation: String, Sendable, Hashable, Codable, CaseIterable {
    /// Probabilities: each row lies in 0...1 and sums to 1.
    case softmax
    /// Raw logits (Keras `classifier_activation=None`).
    case none
}

/// The hyper-parameters of a MobileNetV2 network, with the meaning of the Keras Applications
/// arguments of `keras.applications.MobileNetV2`.
public struct MobileNetV2Configuration: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The width multiplier (paper section 6.1): scales every layer's channel count. The
    /// ImageNet weights exist for 0.35, 0.5, 0.75, 1.0, 1.3 and 1.4 (``officialAlphas``).
    public var alpha: Double
    /// Input height in pixels (at least 32).
    public var inputHeight: Int
    /// Input width in pixels (at least 32).
    public var inputWidth: Int
    /// Whether the network ends with `GlobalAveragePooling2D` and the `predictions` Dense
    /// layer (`include_top=True`).
    public var includeTop: Bool
    /// Global pooling when `includeTop` is false; `nil` keeps the spatial feature map
    /// `[N, H/32, W/32, C]` (rounded up). Ignored when `includeTop` is true, as in Keras.
    public var pooling: Pooling?
    /// Number of classes of the `predictions` layer (1000 for ImageNet).
    public var classes: Int
    /// Activation of the `predictions` layer.
    public var classifierActivation: ClassifierActivation

    /// The width multipliers for which Keras publishes ImageNet weights.
    public static let officialAlphas: [Double] = [0.35, 0.5, 0.75, 1.0, 1.3, 1.4]
    /// The square input sizes for which Keras publishes ImageNet weights.
    public static let officialInputSizes: [Int] = [96, 128, 160, 192, 224]

    /// The largest input side accepted: at 4096x4096 the widest activation (block 1's expansion,
    /// 2048x2048x96 floats) is 1.6 GB per image, most of what a machine can hold.
    public static let maximumInputSide = 4096
    /// The largest width multiplier accepted (Keras publishes weights up to 1.4; at 10 the
    /// network has about 300 million parameters).
    public static let maximumAlpha = 10.0
    /// The largest classifier accepted (the 1280 x classes kernel is 2.6 GB at this size).
    public static let maximumClasses = 500_000

    /// Creates a configuration with the Keras defaults: alpha 1.0, 224x224, with the
    /// 1000-class softmax classifier.
    ///
    /// - Parameters:
    ///   - alpha: width multiplier, greater than 0.
    ///   - inputHeight: input rows, at least 32.
    ///   - inputWidth: input columns, at least 32.
    ///   - includeTop: whether to include the classifier.
    ///   - pooling: global pooling when `includeTop` is false.
    ///   - classes: classifier width, at least 1.
    ///   - classifierActivation: softmax (probabilities) or none (logits).
    public init(
        alpha: Double = 1.0, inputHeight: Int = 224, inputWidth: Int = 224, includeTop: Bool = true,
        pooling: Pooling? = nil, classes: Int = 1000, classifierActivation: ClassifierActivation = .softmax
    ) {
        self.alpha = alpha
        self.inputHeight = inputHeight
        self.inputWidth = inputWidth
        self.includeTop = includeTop
        self.pooling = pooling
        self.classes = classes
        self.classifierActivation = classifierActivation
    }

    /// Checks the values the way Keras does when it builds the model.
    ///
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` naming the bad value.
    public func validate() throws(ModelError) {
        guard alpha > 0, alpha.isFinite else { throw .invalidConfiguration("alpha must be a positive number, got \(alpha)") }
        guard alpha <= Self.maximumAlpha else { throw .invalidConfiguration("alpha must be at most \(Self.maximumAlpha), got \(alpha)") }
        guard inputHeight >= 32, inputWidth >= 32 else {
            throw .invalidConfiguration("input size must be at least 32x32, got \(inputHeight)x\(inputWidth)")
        }
        guard inputHeight <= Self.maximumInputSide, inputWidth <= Self.maximumInputSide else {
            throw .invalidConfiguration("input size must be at most \(Self.maximumInputSide)x\(Self.maximumInputSide), got \(inputHeight)x\(inputWidth)")
        }
        guard classes >= 1 else { throw .invalidConfiguration("classes must be at least 1, got \(classes)") }
        guard classes <= Self.maximumClasses else { throw .invalidConfiguration("classes must be at most \(Self.maximumClasses), got \(classes)") }
    }

    /// The Keras model name, e.g. `mobilenetv2_1.00_224` (Keras uses the input rows).
    public var kerasModelName: String {
        "mobilenetv2_\(formatAlpha2(alpha))_\(inputHeight)"
    }

    /// The network's output per example: `[classes]` with the top, `[C]` with pooling, or
    /// `[ceil(H/32), ceil(W/32), C]` without either.
    public var outputDescription: String {
        if includeTop { return "\(classes) \(classifierActivation == .softmax ? "probabilities" : "logits")" }
        if let pooling { return "\(pooling.rawValue)-pooled embedding" }
        return "spatial feature map"
    }

    public var description: String {
        let top = includeTop ? "top (\(classes) classes, \(classifierActivation.rawValue))" : "no top, pooling \(pooling?.rawValue ?? "none")"
        return "MobileNetV2(alpha: \(formatAlpha(alpha)), input: \(inputHeight)x\(inputWidth), \(top))"
    }
}

/// Formats alpha the way Python's `str(float(alpha))` does for the official values
/// (`1.0`, `0.35`, `1.4`); used in the Keras weight file names.
public func formatAlpha(_ alpha: Double) -> String {
    var s = String(alpha)
    if !s.contains(".") && !s.contains("e") { s += ".0" }
    return s
}

/// Formats alpha with two decimals (`1.00`, `0.35`), as in Keras model names.
func formatAlpha2(_ alpha: Double) -> String {
    let hundredths = Int((alpha * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
