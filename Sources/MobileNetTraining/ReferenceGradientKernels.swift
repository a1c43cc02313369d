import MobileNetKernels

/// Plain-Swift reference forward and backward kernels in Double over NHWC tensors, for training.
///
/// Each backward kernel takes what its forward kernel read (the saved input) and `dy`, the
/// gradient of the loss with respect to the forward output (same shape as the output), and
/// returns the gradients with respect to the input and the weights, as TensorFlow's gradient
/// functions define them (`Conv2DBackpropInput`/`Conv2DBackpropFilter`,
/// `DepthwiseConv2dNativeBackprop*`, `Relu6Grad`, ...). They are written for clarity, with the
/// channel dimension innermost so release builds vectorise them; they are the oracle a faster
/// (oneDNN) backward pass is to be checked against. Like ``/MobileNetKernels/ReferenceKernels`` they know nothing
/// of MobileNetV2. Shape mismatches are programmer errors (`precondition`).
public enum ReferenceGradientKernels {
    /// TensorFlow's `padding="same"` for one dimension: total `max((ceil(n/s) − 1)·s + k − n, 0)`,
    /// the smaller half before (top/left), the larger after (bottom/right).
    public static func samePadding(size: Int, kernel: Int, stride: Int) -> (before: Int, after: Int) {
        let out = (size + stride - 1) / stride
        let total = max((out - 1) * stride + kernel - size, 0)
        return (total / 2, total - total / 2)
    }

    /// Keras `padding="same"` for a 2-D window, as ``/MobileNetKernels/Padding``.
    public static func samePadding(height: Int, width: Int, kernel: Int, stride: Int) -> Padding {
        let h = samePadding(size: height, kernel: kernel, stride: stride), w = samePadding(size: width, kernel: kernel, stride: stride)
        return Padding(top: h.before, bottom: h.after, left: w.before, right: w.after)
    }

    // MARK: Convolution

    /// `Conv2D` without bias: `y[b, oy, ox, co] = Σ x[b, oy·s − top + ky, ox·s − left + kx, ci] · k[ky, kx, ci, co]`
    /// (positions outside the input read 0).
    ///
    /// - Parameters:
    ///   - x: `[N, H, W, Cin]`.
    ///   - kernel: `[KH, KW, Cin, Cout]` (HWIO).
    ///   - stride: both directions.
    ///   - padding: explicit zero padding.
    /// - Returns: `[N, OH, OW, Cout]`, `OH = (H + top + bottom − KH) / stride + 1` (likewise `OW`).
    public static func conv2D(_ x: DoubleTensor, kernel: DoubleTensor, stride: Int, padding: Padding) -> DoubleTensor {
        let (n, h, w, cin) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw, cout) = (kernel.shape[0], kernel.shape[1], kernel.shape[3])
        precondition(kernel.shape[2] == cin, "kernel \(kernel.shape) does not fit \(cin) input channels")
        let oh = (h + padding.top + padding.bottom - kh) / stride + 1
        let ow = (w + padding.left + padding.right - kw) / stride + 1
        var y = [Double](repeating: 0, count: n * oh * ow * cout)
        x.scalars.withUnsafeBufferPointer { xp in
            kernel.scalars.withUnsafeBufferPointer { kp in
                y.withUnsafeMutableBufferPointer { yp in
                    for b in 0..<n { for oy in 0..<oh { for ox in 0..<ow {
                        let outBase = ((b * oh + oy) * ow + ox) * cout
                        for ky in 0..<kh {
                            let iy = oy * stride - padding.top + ky
                            if iy < 0 || iy >= h { continue }
                            for kx in 0..<kw {
                                let ix = ox * stride - padding.left + kx
                                if ix < 0 || ix >= w { continue }
                                let inBase = ((b * h + iy) * w + ix) * cin
                                let kBase = (ky * kw + kx) * cin * cout
                                for ci in 0..<cin {
                                    let v = xp[inBase + ci]
                                    let row = kBase + ci * cout
                                    for co in 0..<cout { yp[outBase + co] += v * kp[row + co] }
                                }
                            }
                        }
                    } } }
                }
            }
        }
        return DoubleTensor(shape: [n, oh, ow, cout], scalars: y)
    }

    /// The backward pass of ``conv2D(_:kernel:stride:padding:)``: `dk[ky, kx, ci, co] = Σ x[…, ci] · dy[…, co]`
    /// over the batch and output positions, and `dx[…, ci] = Σ k[ky, kx, ci, co] · dy[…, co]`.
    ///
    /// - Parameters:
    ///   - x: the forward input `[N, H, W, Cin]`.
    ///   - kernel: `[KH, KW, Cin, Cout]`.
    ///   - dy: `[N, OH, OW, Cout]`.
    ///   - stride: the forward stride.
    ///   - padding: the forward padding.
    ///   - inputGradient: whether to compute `dx` (not needed when the input comes from a frozen layer).
    /// - Returns: `dx` (`[N, H, W, Cin]`, nil when not asked for) and `dkernel` (`[KH, KW, Cin, Cout]`).
    public static func conv2DBackward(_ x: DoubleTensor, kernel: DoubleTensor, stride: Int, padding: Padding, dy: DoubleTensor,
                                      inputGradient: Bool) -> (dx: DoubleTensor?, dkernel: DoubleTensor) {
        let (n, h, w, cin) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw, cout) = (kernel.shape[0], kernel.shape[1], kernel.shape[3])
        let (oh, ow) = (dy.shape[1], dy.shape[2])
        precondition(dy.shape == [n, (h + padding.top + padding.bottom - kh) / stride + 1, (w + padding.left + padding.right - kw) / stride + 1, cout],
                     "conv2DBackward: dy \(dy.shape) does not fit x \(x.shape), kernel \(kernel.shape)")
        var dk = [Double](repeating: 0, count: kernel.count)
        var dx = [Double](repeating: 0, count: inputGradient ? x.count : 0)
        x.scalars.withUnsafeBufferPointer { xp in
            kernel.scalars.withUnsafeBufferPointer { kp in
                dy.scalars.withUnsafeBufferPointer { gp in
                    dk.withUnsafeMutableBufferPointer { dkp in
                        dx.withUnsafeMutableBufferPointer { dxp in
                            for b in 0..<n { for oy in 0..<oh { for ox in 0..<ow {
                                let outBase = ((b * oh + oy) * ow + ox) * cout
                                for ky in 0..<kh {
                                    let iy = oy * stride - padding.top + ky
                                    if iy < 0 || iy >= h { continue }
                                    for kx in 0..<kw {
                                        let ix = ox * stride - padding.left + kx
                                        if ix < 0 || ix >= w { continue }
                                        let inBase = ((b * h + iy) * w + ix) * cin
                                        let kBase = (ky * kw + kx) * cin * cout
                                        for ci in 0..<cin {
                                            let v = xp[inBase + ci]
                                            let row = kBase + ci * cout
                                            var s = 0.0
                                            for co in 0..<cout {
                                                let g = gp[outBase + co]
                                                dkp[row + co] += v * g
                                                s += kp[row + co] * g
                                            }
                                            if inputGradient { dxp[inBase + ci] += s }
                                        }
                                    }
                                }
                            } } }
                        }
                    }
                }
            }
        }
        return (inputGradient ? DoubleTensor(shape: x.shape, scalars: dx) : nil, DoubleTensor(shape: kernel.shape, scalars: dk))
    }

    /// `DepthwiseConv2D` with depth multiplier 1, without bias:
    /// `y[b, oy, ox, c] = Σ x[b, oy·s − top + ky, ox·s − left + kx, c] · k[ky, kx, c, 0]`.
    ///
    /// - Parameters:
    ///   - x: `[N, H, W, C]`.
    ///   - kernel: `[KH, KW, C, 1]`.
    ///   - stride: the stride, both directions.
    ///   - padding: Keras `same` (TensorFlow's split: the extra row or column at the bottom right) or `valid`.
    /// - Returns: `[N, OH, OW, C]`.
    public static func depthwiseConv2D(_ x: DoubleTensor, kernel: DoubleTensor, stride: Int, padding: Padding) -> DoubleTensor {
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = (kernel.shape[0], kernel.shape[1])
        precondition(kernel.shape[2] == c && kernel.shape[3] == 1, "depthwise kernel \(kernel.shape) does not fit \(c) channels")
        let oh = (h + padding.top + padding.bottom - kh) / stride + 1
        let ow = (w + padding.left + padding.right - kw) / stride + 1
        var y = [Double](repeating: 0, count: n * oh * ow * c)
        x.scalars.withUnsafeBufferPointer { xp in
            kernel.scalars.withUnsafeBufferPointer { kp in
                y.withUnsafeMutableBufferPointer { yp in
                    for b in 0..<n { for oy in 0..<oh { for ox in 0..<ow {
                        let outBase = ((b * oh + oy) * ow + ox) * c
                        for ky in 0..<kh {
                            let iy = oy * stride - padding.top + ky
                            if iy < 0 || iy >= h { continue }
                            for kx in 0..<kw {
                                let ix = ox * stride - padding.left + kx
                                if ix < 0 || ix >= w { continue }
                                let inBase = ((b * h + iy) * w + ix) * c
                                let kBase = (ky * kw + kx) * c
                                for ch in 0..<c { yp[outBase + ch] += xp[inBase + ch] * kp[kBase + ch] }
                            }
                        }
                    } } }
                }
            }
        }
        return DoubleTensor(shape: [n, oh, ow, c], scalars: y)
    }

    /// The backward pass of ``depthwiseConv2D(_:kernel:stride:padding:)``:
    /// `dk[ky, kx, c, 0] = Σ x[…, c] · dy[…, c]`, `dx[…, c] += k[ky, kx, c, 0] · dy[…, c]`.
    ///
    /// - Parameters:
    ///   - x: the forward input `[N, H, W, C]`.
    ///   - kernel: `[KH, KW, C, 1]`.
    ///   - dy: `[N, OH, OW, C]`.
    ///   - stride: the forward stride.
    ///   - padding: the forward padding.
    ///   - inputGradient: whether to compute `dx`.
    /// - Returns: `dx` (`[N, H, W, C]`, nil when `inputGradient` is false) and `dkernel` `[KH, KW, C, 1]`.
    public static func depthwiseConv2DBackward(_ x: DoubleTensor, kernel: DoubleTensor, stride: Int, padding: Padding, dy: DoubleTensor,
                                               inputGradient: Bool) -> (dx: DoubleTensor?, dkernel: DoubleTensor) {
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = (kernel.shape[0], kernel.shape[1])
        let (oh, ow) = (dy.shape[1], dy.shape[2])
        precondition(dy.shape == [n, (h + padding.top + padding.bottom - kh) / stride + 1, (w + padding.left + padding.right - kw) / stride + 1, c],
                     "depthwiseConv2DBackward: dy \(dy.shape) does not fit x \(x.shape), kernel \(kernel.shape)")
        var dk = [Double](repeating: 0, count: kernel.count)
        var dx = [Double](repeating: 0, count: inputGradient ? x.count : 0)
        x.scalars.withUnsafeBufferPointer { xp in
            kernel.scalars.withUnsafeBufferPointer { kp in
                dy.scalars.withUnsafeBufferPointer { gp in
                    dk.withUnsafeMutableBufferPointer { dkp in
                        dx.withUnsafeMutableBufferPointer { dxp in
                            for b in 0..<n { for oy in 0..<oh { for ox in 0..<ow {
                                let outBase = ((b * oh + oy) * ow + ox) * c
                                for ky in 0..<kh {
                                    let iy = oy * stride - padding.top + ky
                                    if iy < 0 || iy >= h { continue }
                                    for kx in 0..<kw {
                                        let ix = ox * stride - padding.left + kx
                                        if ix < 0 || ix >= w { continue }
                                        let inBase = ((b * h + iy) * w + ix) * c
                                        let kBase = (ky * kw + kx) * c
                                        for ch in 0..<c { dkp[kBase + ch] += xp[inBase + ch] * gp[outBase + ch] }
                                        if inputGradient {
                                            for ch in 0..<c { dxp[inBase + ch] += kp[kBase + ch] * gp[outBase + ch] }
                                        }
                                    }
                                }
                            } } }
                        }
                    }
                }
            }
        }
        return (inputGradient ? DoubleTensor(shape: x.shape, scalars: dx) : nil, DoubleTensor(shape: kernel.shape, scalars: dk))
    }

    // MARK: BatchNorm, ReLU6, padding, add

    /// Inference-mode BatchNorm over the last dimension (Keras `BatchNormalization` called with
    /// `training=False`): `y = γ · (x − μ) / √(σ² + ε) + β` with the frozen moving mean `μ` and
    /// variance `σ²`.
    ///
    /// - Parameters: `x` `[…, C]`; `gamma`, `beta`, `mean`, `variance` `[C]`.
    /// - Returns: the same shape as `x`.
    public static func batchNorm(_ x: DoubleTensor, gamma: [Double], beta: [Double], mean: [Double], variance: [Double], epsilon: Double) -> DoubleTensor {
        let c = x.shape.last ?? 0
        let inv = (0..<c).map { 1 / (variance[$0] + epsilon).squareRoot() }
        var y = x
        y.scalars.withUnsafeMutableBufferPointer { yp in
            var i = 0
            while i < yp.count {
                for ch in 0..<c { yp[i + ch] = gamma[ch] * (yp[i + ch] - mean[ch]) * inv[ch] + beta[ch] }
                i += c
            }
        }
        return y
    }

    /// The backward pass of inference-mode ``batchNorm(_:gamma:beta:mean:variance:epsilon:)``
    /// (the moving statistics are constants): `dγ = Σ dy · (x − μ)/√(σ² + ε)`, `dβ = Σ dy`
    /// (sums over every position but the channel), `dx = dy · γ / √(σ² + ε)`.
    ///
    /// - Returns: `dx` (nil when `inputGradient` is false), `dgamma` and `dbeta` `[C]`.
    public static func batchNormBackward(_ x: DoubleTensor, gamma: [Double], mean: [Double], variance: [Double], epsilon: Double,
                                         dy: DoubleTensor, inputGradient: Bool) -> (dx: DoubleTensor?, dgamma: [Double], dbeta: [Double]) {
        precondition(x.shape == dy.shape, "batchNormBackward: x \(x.shape), dy \(dy.shape)")
        let c = x.shape.last ?? 0
        let inv = (0..<c).map { 1 / (variance[$0] + epsilon).squareRoot() }
        var dgamma = [Double](repeating: 0, count: c), dbeta = [Double](repeating: 0, count: c)
        var dx = inputGradient ? dy : DoubleTensor(shape: [0])
        x.scalars.withUnsafeBufferPointer { xp in
            dy.scalars.withUnsafeBufferPointer { gp in
                var i = 0
                while i < xp.count {
                    for ch in 0..<c {
                        dgamma[ch] += gp[i + ch] * (xp[i + ch] - mean[ch]) * inv[ch]
                        dbeta[ch] += gp[i + ch]
                    }
                    i += c
                }
            }
        }
        if inputGradient {
            let scale = (0..<c).map { gamma[$0] * inv[$0] }
            dx.scalars.withUnsafeMutableBufferPointer { dp in
                var i = 0
                while i < dp.count {
                    for ch in 0..<c { dp[i + ch] *= scale[ch] }
                    i += c
                }
            }
        }
        return (inputGradient ? dx : nil, dgamma, dbeta)
    }

    /// `min(max(x, 0), 6)` element-wise (Keras `ReLU(6.0)`).
    public static func relu6(_ x: DoubleTensor) -> DoubleTensor {
        var y = x
        for i in y.scalars.indices { y.scalars[i] = min(max(y.scalars[i], 0), 6) }
        return y
    }

    /// The backward pass of ``relu6(_:)`` as TensorFlow's `Relu6Grad`: `dx = dy` where
    /// `0 < x < 6`, else 0 (at the kinks 0 and 6 the gradient is 0).
    public static func relu6Backward(_ x: DoubleTensor, dy: DoubleTensor) -> DoubleTensor {
        precondition(x.shape == dy.shape, "relu6Backward: x \(x.shape), dy \(dy.shape)")
        var dx = dy
        for i in dx.scalars.indices where !(x.scalars[i] > 0 && x.scalars[i] < 6) { dx.scalars[i] = 0 }
        return dx
    }

    /// `ZeroPadding2D`: `[N, H, W, C]` to `[N, H + top + bottom, W + left + right, C]`.
    public static func zeroPadding(_ x: DoubleTensor, _ p: Padding) -> DoubleTensor {
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (ph, pw) = (h + p.top + p.bottom, w + p.left + p.right)
        var y = [Double](repeating: 0, count: n * ph * pw * c)
        for b in 0..<n { for iy in 0..<h { for ix in 0..<w {
            let src = ((b * h + iy) * w + ix) * c, dst = ((b * ph + iy + p.top) * pw + ix + p.left) * c
            for ch in 0..<c { y[dst + ch] = x.scalars[src + ch] }
        } } }
        return DoubleTensor(shape: [n, ph, pw, c], scalars: y)
    }

    /// The backward pass of ``zeroPadding(_:_:)``: `dy` cropped back to `[N, H, W, C]`.
    public static func zeroPaddingBackward(_ dy: DoubleTensor, _ p: Padding) -> DoubleTensor {
        let (n, ph, pw, c) = (dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3])
        let (h, w) = (ph - p.top - p.bottom, pw - p.left - p.right)
        var dx = [Double](repeating: 0, count: n * h * w * c)
        for b in 0..<n { for iy in 0..<h { for ix in 0..<w {
            let dst = ((b * h + iy) * w + ix) * c, src = ((b * ph + iy + p.top) * pw + ix + p.left) * c
            for ch in 0..<c { dx[dst + ch] = dy.scalars[src + ch] }
        } } }
        return DoubleTensor(shape: [n, h, w, c], scalars: dx)
    }

    /// Element-wise sum (Keras `Add`); its backward pass hands `dy` to both inputs unchanged.
    public static func add(_ a: DoubleTensor, _ b: DoubleTensor) -> DoubleTensor {
        precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
        var y = a
        for i in y.scalars.indices { y.scalars[i] += b.scalars[i] }
        return y
    }

    // MARK: Head

    /// `GlobalAveragePooling2D`: `[N, H, W, C]` to `[N, C]`, the mean over the `H·W` positions.
    public static func globalAveragePool(_ x: DoubleTensor) -> DoubleTensor {
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var y = [Double](repeating: 0, count: n * c)
        for b in 0..<n {
            for p in 0..<(h * w) { for ch in 0..<c { y[b * c + ch] += x.scalars[(b * h * w + p) * c + ch] } }
            for ch in 0..<c { y[b * c + ch] /= Double(h * w) }
        }
        return DoubleTensor(shape: [n, c], scalars: y)
    }

    /// The backward pass of ``globalAveragePool(_:)``: `dx[b, y, x, c] = dy[b, c] / (H·W)`.
    ///
    /// - Parameters:
    ///   - dy: `[N, C]`.
    ///   - inputShape: the forward input's shape `[N, H, W, C]`.
    public static func globalAveragePoolBackward(_ dy: DoubleTensor, inputShape: [Int]) -> DoubleTensor {
        let (n, h, w, c) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
        precondition(dy.shape == [n, c], "globalAveragePoolBackward: dy \(dy.shape) for input \(inputShape)")
        var dx = [Double](repeating: 0, count: n * h * w * c)
        let scale = 1 / Double(h * w)
        for b in 0..<n { for p in 0..<(h * w) { for ch in 0..<c { dx[(b * h * w + p) * c + ch] = dy.scalars[b * c + ch] * scale } } }
        return DoubleTensor(shape: inputShape, scalars: dx)
    }

    /// `Dense`: `y = x · kernel + bias`, `[N, In]` times `[In, Out]` plus `[Out]`.
    public static func dense(_ x: DoubleTensor, kernel: DoubleTensor, bias: [Double]) -> DoubleTensor {
        let (n, cin, cout) = (x.shape[0], x.shape[1], kernel.shape[1])
        precondition(kernel.shape[0] == cin && bias.count == cout, "dense: kernel \(kernel.shape), bias \(bias.count) for input \(x.shape)")
        var y = [Double](repeating: 0, count: n * cout)
        for b in 0..<n {
            for co in 0..<cout { y[b * cout + co] = bias[co] }
            for ci in 0..<cin {
                let v = x.scalars[b * cin + ci]
                for co in 0..<cout { y[b * cout + co] += v * kernel.scalars[ci * cout + co] }
            }
        }
        return DoubleTensor(shape: [n, cout], scalars: y)
    }

    /// The backward pass of ``dense(_:kernel:bias:)``: `dx = dy · kernelᵀ`, `dkernel = xᵀ · dy`,
    /// `dbias = Σ_batch dy`.
    public static func denseBackward(_ x: DoubleTensor, kernel: DoubleTensor, dy: DoubleTensor) -> (dx: DoubleTensor, dkernel: DoubleTensor, dbias: [Double]) {
        let (n, cin, cout) = (x.shape[0], x.shape[1], kernel.shape[1])
        precondition(dy.shape == [n, cout], "denseBackward: dy \(dy.shape) for x \(x.shape), kernel \(kernel.shape)")
        var dx = [Double](repeating: 0, count: n * cin), dk = [Double](repeating: 0, count: cin * cout), db = [Double](repeating: 0, count: cout)
        for b in 0..<n {
            for co in 0..<cout { db[co] += dy.scalars[b * cout + co] }
            for ci in 0..<cin {
                let v = x.scalars[b * cin + ci]
                var s = 0.0
                for co in 0..<cout {
                    let g = dy.scalars[b * cout + co]
                    dk[ci * cout + co] += v * g
                    s += kernel.scalars[ci * cout + co] * g
                }
                dx[b * cin + ci] = s
            }
        }
        return (DoubleTensor(shape: x.shape, scalars: dx), DoubleTensor(shape: kernel.shape, scalars: dk), db)
    }
}
