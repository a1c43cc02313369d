import MobileNetKernels

/// A dense, row-major `Double` tensor: the values of the reference training passes.
///
/// Training runs in Double (like the classifier head's training) so that gradients can be
/// checked by central finite differences and compared with TensorFlow's float32 gradients
/// without the reference adding rounding noise of its own. Layouts are those of ``/MobileNetKernels/Tensor``:
/// NHWC activations `[batch, height, width, channels]`, HWIO `Conv2D` kernels
/// `[kh, kw, in, out]`, `[kh, kw, channels, 1]` depthwise kernels, `[in, out]` Dense kernels.
public struct DoubleTensor: Sendable, Equatable {
    /// The extent of each dimension, outermost first.
    public let shape: [Int]
    /// The elements in row-major order; `scalars.count` equals the product of `shape`.
    public var scalars: [Double]

    /// Creates a tensor from its shape and row-major elements.
    ///
    /// - Precondition: `scalars.count` equals the product of `shape` (a programmer error).
    public init(shape: [Int], scalars: [Double]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative extent in shape \(shape)")
        precondition(scalars.count == shape.reduce(1, *), "shape \(shape) needs \(shape.reduce(1, *)) elements, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of the given shape filled with `value` (zero by default).
    public init(shape: [Int], repeating value: Double = 0) {
        self.init(shape: shape, scalars: [Double](repeating: value, count: shape.reduce(1, *)))
    }

    /// The same values widened from a `Float` tensor.
    public init(_ tensor: Tensor) {
        self.init(shape: tensor.shape, scalars: tensor.scalars.map(Double.init))
    }

    /// The number of elements.
    public var count: Int { scalars.count }

    /// The values rounded to `Float`.
    public var floatTensor: Tensor { Tensor(shape: shape, scalars: scalars.map(Float.init)) }

    /// The Euclidean (L2) norm of all elements.
    public var norm: Double { scalars.reduce(0) { $0 + $1 * $1 }.squareRoot() }
}
