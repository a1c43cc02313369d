/// Plain-Swift reference kernels over NHWC tensors.
///
/// They are written for clarity and checked against NumPy-style naive loops and Keras outputs;
/// they are the oracle that faster backends are tested against. Loops keep the channel dimension
/// innermost so that the compiler can vectorise them in release builds.
public enum ReferenceKernels {
    /// Dense 2-D convolution (Keras `Conv2D`, `use_bias` folded into `bias`).
    ///
    /// - Parameters:
    ///   - input: `[N, H, W, Cin]`.
    ///   - parameters: kernel `[KH, KW, Cin, Cout]`, bias `[Cout]`, stride, explicit padding and
    ///     the fused activation.
    /// - Returns: `[N, OH, OW, Cout]` with `OH = (H + top + bottom - KH) / stride + 1` (and
    ///   likewise `OW`).
    public static func conv2D(_ input: Tensor, _ parameters: ConvolutionParameters) -> Tensor {
        let (n, h, w, cin) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let k = parameters.kernel.shape
        let (kh, kw, cout) = (k[0], k[1], k[3])
        precondition(k[2] == cin, "kernel \(k) does not fit \(cin) input channels")
        let s = parameters.stride, pad = parameters.padding
        let oh = (h + pad.top + pad.bottom - kh) / s + 1
        let ow = (w + pad.left + pad.right - kw) / s + 1
        var output = [Float](repeating: 0, count: n * oh * ow * cout)
        input.scalars.withUnsafeBufferPointer { x in
            parameters.kernel.scalars.withUnsafeBufferPointer { kernel in
                parameters.bias.withUnsafeBufferPointer { bias in
                    output.withUnsafeMutableBufferPointer { y in
                        for b in 0..<n {
                            for oy in 0..<oh {
                                for ox in 0..<ow {
                                    let outBase = ((b * oh + oy) * ow + ox) * cout
                                    for co in 0..<cout { y[outBase + co] = bias[co] }
                                    for ky in 0..<kh {
                                        let iy = oy * s - pad.top + ky
                                        if iy < 0 || iy >= h { continue }
                                        for kx in 0..<kw {
                                            let ix = ox * s - pad.left + kx
                                            if ix < 0 || ix >= w { continue }
                                            let inBase = ((b * h + iy) * w + ix) * cin
                                            let kBase = (ky * kw + kx) * cin * cout
                                            for ci in 0..<cin {
                                                let v = x[inBase + ci]
                                                let row = kBase + ci * cout
                                                for co in 0..<cout { y[outBase + co] += v * kernel[row + co] }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        applyActivation(parameters.activation, y)
                    }
                }
            }
        }
        return Tensor(shape: [n, oh, ow, cout], scalars: output)
    }

    /// Depthwise 2-D convolution with depth multiplier 1 (Keras `DepthwiseConv2D`).
    ///
    /// - Parameters:
    ///   - input: `[N, H, W, C]`.
    ///   - parameters: kernel `[KH, KW, C, 1]`, bias `[C]`, stride, explicit padding, activation.
    /// - Returns: `[N, OH, OW, C]`.
    public static func depthwiseConv2D(_ input: Tensor, _ parameters: ConvolutionParameters) -> Tensor {
        let (n, h, w, c) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let k = parameters.kernel.shape
        let (kh, kw) = (k[0], k[1])
        precondition(k[2] == c && k[3] == 1, "depthwise kernel \(k) does not fit \(c) channels")
        let s = parameters.stride, pad = parameters.padding
        let oh = (h + pad.top + pad.bottom - kh) / s + 1
        let ow = (w + pad.left + pad.right - kw) / s + 1
        var output = [Float](repeating: 0, count: n * oh * ow * c)
        input.scalars.withUnsafeBufferPointer { x in
            parameters.kernel.scalars.withUnsafeBufferPointer { kernel in
                parameters.bias.withUnsafeBufferPointer { bias in
                    output.withUnsafeMutableBufferPointer { y in
                        for b in 0..<n {
                            for oy in 0..<oh {
                                for ox in 0..<ow {
                                    let outBase = ((b * oh + oy) * ow + ox) * c
                                    for ch in 0..<c { y[outBase + ch] = bias[ch] }
                                    for ky in 0..<kh {
                                        let iy = oy * s - pad.top + ky
                                        if iy < 0 || iy >= h { continue }
                                        for kx in 0..<kw {
                                            let ix = ox * s - pad.left + kx
                                            if ix < 0 || ix >= w { continue }
                                            let inBase = ((b * h + iy) * w + ix) * c
                                            let kBase = (ky * kw + kx) * c
                                            for ch in 0..<c { y[outBase + ch] += x[inBase + ch] * kernel[kBase + ch] }
                                        }
                                    }
                                }
                            }
                        }
                        applyActivation(parameters.activation, y)
                    }
                }
            }
        }
        return Tensor(shape: [n, oh, ow, c], scalars: output)
    }

    /// Inference BatchNorm over the last dimension, unfolded, computed as TensorFlow does:
    /// `x * scale + (beta - mean * scale)` with `scale = gamma / sqrt(variance + epsilon)`.
    public static func batchNorm(_ input: Tensor, _ parameters: BatchNormParameters) -> Tensor {
        let c = input.shape.last ?? 0
        let scale = (0..<c).map { parameters.gamma[$0] / (parameters.movingVariance[$0] + parameters.epsilon).squareRoot() }
        let shift = (0..<c).map { parameters.beta[$0] - parameters.movingMean[$0] * scale[$0] }
        var output = input
        output.scalars.withUnsafeMutableBufferPointer { y in
            var i = 0
            while i < y.count {
                for ch in 0..<c { y[i + ch] = y[i + ch] * scale[ch] + shift[ch] }
                i += c
            }
        }
        return output
    }

    /// `min(max(x, 0), 6)` element-wise (Keras `ReLU(6.0)`).
    public static func relu6(_ input: Tensor) -> Tensor {
        var output = input
        output.scalars.withUnsafeMutableBufferPointer { applyActivation(.relu6, $0) }
        return output
    }

    /// Element-wise sum of two tensors of the same shape (Keras `Add`).
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
        var output = a
        output.scalars.withUnsafeMutableBufferPointer { y in
            b.scalars.withUnsafeBufferPointer { x in
                for i in 0..<y.count { y[i] += x[i] }
            }
        }
        return output
    }

    /// Mean over the spatial dimensions: `[N, H, W, C]` to `[N, C]` (Keras `GlobalAveragePooling2D`).
    public static func globalAveragePool(_ input: Tensor) -> Tensor {
        let (n, h, w, c) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        var output = [Float](repeating: 0, count: n * c)
        let area = h * w
        input.scalars.withUnsafeBufferPointer { x in
            for b in 0..<n {
                // Sum in Double, then divide: stable for large maps, rounded once to Float.
                var sums = [Double](repeating: 0, count: c)
                for p in 0..<area {
                    let base = (b * area + p) * c
                    for ch in 0..<c { sums[ch] += Double(x[base + ch]) }
                }
                for ch in 0..<c { output[b * c + ch] = Float(sums[ch] / Double(area)) }
            }
        }
        return Tensor(shape: [n, c], scalars: output)
    }

    /// Maximum over the spatial dimensions: `[N, H, W, C]` to `[N, C]` (Keras `GlobalMaxPooling2D`).
    public static func globalMaxPool(_ input: Tensor) -> Tensor {
        let (n, h, w, c) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        var output = [Float](repeating: -.infinity, count: n * c)
        let area = h * w
        input.scalars.withUnsafeBufferPointer { x in
            for b in 0..<n {
                for p in 0..<area {
                    let base = (b * area + p) * c
                    for ch in 0..<c { output[b * c + ch] = max(output[b * c + ch], x[base + ch]) }
                }
            }
        }
        return Tensor(shape: [n, c], scalars: output)
    }

    /// Fully connected layer: `[N, Cin]` times kernel `[Cin, Cout]` plus bias `[Cout]`.
    public static func dense(_ input: Tensor, _ parameters: DenseParameters) -> Tensor {
        let (n, cin) = (input.shape[0], input.shape[1])
        let cout = parameters.kernel.shape[1]
        precondition(parameters.kernel.shape[0] == cin, "dense kernel \(parameters.kernel.shape) does not fit \(cin) inputs")
        var output = [Float](repeating: 0, count: n * cout)
        input.scalars.withUnsafeBufferPointer { x in
            parameters.kernel.scalars.withUnsafeBufferPointer { kernel in
                output.withUnsafeMutableBufferPointer { y in
                    for b in 0..<n {
                        for co in 0..<cout { y[b * cout + co] = parameters.bias[co] }
                        for ci in 0..<cin {
                            let v = x[b * cin + ci]
                            for co in 0..<cout { y[b * cout + co] += v * kernel[ci * cout + co] }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [n, cout], scalars: output)
    }

    /// `max(x, 0)` element-wise (Keras `activation="relu"`), any shape.
    public static func relu(_ input: Tensor) -> Tensor {
        var output = input
        output.scalars.withUnsafeMutableBufferPointer { y in
            for i in y.indices { y[i] = max(y[i], 0) }
        }
        return output
    }

    /// Softmax over the last dimension: `exp(x - max(x)) / sum(exp(x - max(x)))`, as Keras
    /// computes it. Each output row is a probability distribution (values in 0...1, sum 1).
    public static func softmax(_ input: Tensor) -> Tensor {
        let c = input.shape.last ?? 0
        var output = input
        guard c > 0 else { return output }
        output.scalars.withUnsafeMutableBufferPointer { y in
            var i = 0
            while i < y.count {
                var m = -Float.infinity
                for j in 0..<c { m = max(m, y[i + j]) }
                var sum: Float = 0
                for j in 0..<c {
                    let e = expf(y[i + j] - m)
                    y[i + j] = e
                    sum += e
                }
                for j in 0..<c { y[i + j] /= sum }
                i += c
            }
        }
        return output
    }

    @inline(__always)
    static func applyActivation(_ activation: FusedActivation, _ y: UnsafeMutableBufferPointer<Float>) {
        guard activation == .relu6 else { return }
        for i in 0..<y.count { y[i] = min(max(y[i], 0), 6) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
