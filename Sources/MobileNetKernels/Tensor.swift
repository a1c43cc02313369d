/// A dense, row-major `Float` tensor.
///
/// Activations use the NHWC layout throughout the package: `[batch, height, width, channels]`,
/// the layout of Keras/TensorFlow with `image_data_format="channels_last"`. Convolution kernels
/// use Keras's layouts: `[kernelHeight, kernelWidth, inputChannels, outputChannels]` (HWIO) for
/// `Conv2D`, `[kernelHeight, kernelWidth, channels, 1]` for `DepthwiseConv2D` and
/// `[inputFeatures, outputFeatures]` for `Dense`.
public struct Tensor: Sendable, Equatable {
    /// The extent of each dimension, outermost first.
    public let shape: [Int]
    /// The elements in row-major order; `scalars.count` equals the product of `shape`.
    public var scalars: [Float]

    /// Creates a tensor from its shape and row-major elements.
    ///
    /// - Precondition: `scalars.count` equals the product of `shape` and no extent is negative
    ///   (a programmer error, not a data error).
    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative extent in shape \(shape)")
        precondition(scalars.count == shape.reduce(1, *), "shape \(shape) needs \(shape.reduce(1, *)) elements, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    /// Creates a tensor of the given shape filled with `value` (zero by default).
    public init(shape: [Int], repeating value: Float = 0) {
        self.init(shape: shape, scalars: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// The number of elements.
    public var count: Int { scalars.count }

    /// The number of dimensions.
    public var rank: Int { shape.count }

    /// The largest absolute element-wise difference to `other`, or `.infinity` when the shapes
    /// differ. Used by parity tests against Keras outputs.
    public func maxAbsoluteDifference(to other: Tensor) -> Float {
        guard shape == other.shape else { return .infinity }
        var worst: Float = 0
        for i in 0..<scalars.count {
            let d = abs(scalars[i] - other.scalars[i])
            if d > worst || d.isNaN { worst = d.isNaN ? .infinity : d }
        }
        return worst
    }

    /// Rows of a rank-2 tensor `[batch, features]`, or of any tensor flattened after its first
    /// dimension, as arrays.
    public var rows: [[Float]] {
        guard let batch = shape.first, batch > 0 else { return [] }
        let width = scalars.count / batch
        return (0..<batch).map { Array(scalars[($0 * width)..<(($0 + 1) * width)]) }
    }

    /// Concatenates tensors along their first (batch) dimension: `[n1] + S`, `[n2] + S`, ...
    /// give `[n1 + n2 + ...] + S`.
    ///
    /// - Precondition: at least one tensor, all with the same trailing shape `S`.
    public static func concatenatingBatches(_ tensors: [Tensor]) -> Tensor {
        precondition(!tensors.isEmpty, "cannot concatenate zero tensors")
        let inner = Array(tensors[0].shape.dropFirst())
        var scalars: [Float] = []
        var batch = 0
        for t in tensors {
            precondition(Array(t.shape.dropFirst()) == inner, "batch shapes differ: \(t.shape) vs \(tensors[0].shape)")
            batch += t.shape.first ?? 0
            scalars.append(contentsOf: t.scalars)
        }
        return Tensor(shape: [batch] + inner, scalars: scalars)
    }
}

/// A value handed to `DispatchQueue.concurrentPerform`'s work items whose callers guarantee that
/// they touch disjoint memory (each writes its own elements of a buffer): the training kernels'
/// `GradientKernels.parallel` and the TFLite integer executor's images.
package struct UncheckedSendable<Value>: @unchecked Sendable {
    package let value: Value
    package init(_ value: Value) { self.value = value }
}
