import CBLAS
import CMobileNetProcess
import Dispatch
import Foundation
import MobileNetKernels

/// The fast `Float` forward and backward kernels of ``FineTuningNetwork``, over raw NHWC buffers.
///
/// They compute what ``ReferenceGradientKernels`` computes (and are checked against it through
/// the network's tests), in `Float`: 1x1 convolutions and their two backward passes are OpenBLAS
/// `cblas_sgemm` calls on the `[N·H·W, C]` matrix view of an NHWC tensor (OpenBLAS runs its own
/// threads); other convolutions go through im2col and sgemm; the depthwise convolution,
/// inference-mode BatchNorm (optionally fused with the ReLU6 after it), ReLU6, `Add`,
/// `ZeroPadding2D` and global average pooling are tight loops over contiguous channels, split
/// over ``workers`` threads. Reductions (weight gradients, BatchNorm `dγ`/`dβ`, pooling) add
/// `Float` partial sums of at most ``reductionBlock`` rows into `Double` totals, so long sums do
/// not lose precision.
///
/// Layouts: activations NHWC `[N, H, W, C]`, `Conv2D` kernels HWIO `[KH, KW, Cin, Cout]`,
/// depthwise kernels `[KH, KW, C]` (Keras's `[KH, KW, C, 1]`), Dense kernels `[In, Out]`. Every
/// pointer must address the number of elements its shape says; buffers never alias unless said.
/// Shape errors are programmer errors (`precondition`).
public enum GradientKernels {
    /// Threads for the loop kernels: the active processor count, at most 8.
    public static let workers = max(1, min(8, ProcessInfo.processInfo.activeProcessorCount))

    /// Rows summed in `Float` before a partial sum is added to the `Double` total.
    public static let reductionBlock = 64

    /// Runs `body` over `0..<count` split into at most ``workers`` contiguous ranges, in parallel
    /// when more than one range is worth it (`count ≥ 2 · grain`).
    static func parallel(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        let chunks = max(1, min(workers, count / max(grain, 1)))
        if chunks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // The ranges are disjoint and `concurrentPerform` returns when all are done: the
            // body's captures (raw pointers into buffers the caller owns) are not shared beyond it.
            let work = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                let lower = count * c / chunks, upper = count * (c + 1) / chunks
                if upper > lower { work.value(lower..<upper) }
            }
        }
    }

    // MARK: Convolutions

    /// `Y[M, Cout] = X[M, Cin] · K[Cin, Cout]` (row-major sgemm): a 1x1, stride-1 `Conv2D` over
    /// `M = N·H·W` positions, or a `Dense` layer without bias.
    public static func pointwise(_ x: UnsafePointer<Float>, rows m: Int, inputChannels cin: Int, kernel: UnsafePointer<Float>,
                                 outputChannels cout: Int, into y: UnsafeMutablePointer<Float>) {
        guard m > 0, cout > 0 else { return }
        mn_blas_enter()  // no fork while OpenBLAS runs (CMobileNetProcess)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(cout), Int32(cin), 1, x, Int32(cin), kernel, Int32(cout), 0, y, Int32(cout))
        mn_blas_leave()
    }

    /// The input gradient of ``pointwise(_:rows:inputChannels:kernel:outputChannels:into:)``:
    /// `dX[M, Cin] = dY[M, Cout] · Kᵀ` (TensorFlow's `Conv2DBackpropInput` for a 1x1 kernel).
    public static func pointwiseBackwardData(_ dy: UnsafePointer<Float>, rows m: Int, inputChannels cin: Int, kernel: UnsafePointer<Float>,
                                             outputChannels cout: Int, into dx: UnsafeMutablePointer<Float>) {
        guard m > 0, cin > 0 else { return }
        mn_blas_enter()  // no fork while OpenBLAS runs (CMobileNetProcess)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(cin), Int32(cout), 1, dy, Int32(cout), kernel, Int32(cout), 0, dx, Int32(cin))
        mn_blas_leave()
    }

    /// The kernel gradient of ``pointwise(_:rows:inputChannels:kernel:outputChannels:into:)``:
    /// `dK[Cin, Cout] = Xᵀ · dY` summed over the `M` positions (`Conv2DBackpropFilter`).
    public static func pointwiseBackwardWeights(_ x: UnsafePointer<Float>, rows m: Int, inputChannels cin: Int, dy: UnsafePointer<Float>,
                                                outputChannels cout: Int, into dk: UnsafeMutablePointer<Float>) {
        guard cin > 0, cout > 0 else { return }
        if m == 0 { dk.update(repeating: 0, count: cin * cout); return }
        mn_blas_enter()  // no fork while OpenBLAS runs (CMobileNetProcess)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(cin), Int32(cout), Int32(m), 1, x, Int32(cin), dy, Int32(cout), 0, dk, Int32(cout))
        mn_blas_leave()
    }

    /// The geometry of a `KH x KW` window sliding with `stride` over an `H x W` NHWC map with
    /// explicit zero padding (`top`/`left` before; the output size fixes what is read after).
    public struct Window: Sendable, Hashable {
        /// Batch, input height, width and channels.
        public var batch: Int, height: Int, width: Int, channels: Int
        /// Kernel height and width.
        public var kernelHeight: Int, kernelWidth: Int
        /// The stride in both directions.
        public var stride: Int
        /// Zero padding before the first row and column.
        public var top: Int, left: Int
        /// Output height and width.
        public var outputHeight: Int, outputWidth: Int

        /// A window with explicit padding (Keras `padding="same"` or a `ZeroPadding2D` before a `valid` one).
        ///
        /// - Parameters: the input `[N, H, W, C]`, the kernel size, stride and padding.
        public init(batch: Int, height: Int, width: Int, channels: Int, kernelHeight: Int, kernelWidth: Int, stride: Int, padding: Padding) {
            (self.batch, self.height, self.width, self.channels) = (batch, height, width, channels)
            (self.kernelHeight, self.kernelWidth, self.stride) = (kernelHeight, kernelWidth, stride)
            (top, left) = (padding.top, padding.left)
            outputHeight = (height + padding.top + padding.bottom - kernelHeight) / stride + 1
            outputWidth = (width + padding.left + padding.right - kernelWidth) / stride + 1
        }

        /// Elements of the input and of the output.
        public var inputCount: Int { batch * height * width * channels }
        /// Output positions `N·OH·OW`.
        public var outputPositions: Int { batch * outputHeight * outputWidth }
        /// The im2col row width `KH·KW·C`.
        public var patchSize: Int { kernelHeight * kernelWidth * channels }

        /// The taps of output position `(b, oy, ox)` that fall inside the input: for each, the
        /// element offset of its input pixel in `inputs` and of its kernel row (`tap · C`) in
        /// `weights` (each with room for `KH·KW` entries). Returns their number.
        @inline(__always)
        func validTaps(b: Int, oy: Int, ox: Int, inputs: UnsafeMutablePointer<Int>, weights: UnsafeMutablePointer<Int>) -> Int {
            var count = 0
            for ky in 0..<kernelHeight {
                let iy = oy * stride - top + ky
                if iy < 0 || iy >= height { continue }
                for kx in 0..<kernelWidth {
                    let ix = ox * stride - left + kx
                    if ix < 0 || ix >= width { continue }
                    inputs[count] = ((b * height + iy) * width + ix) * channels
                    weights[count] = (ky * kernelWidth + kx) * channels
                    count += 1
                }
            }
            return count
        }
    }

    /// im2col: row `(b, oy, ox)` of `columns` (`[N·OH·OW, KH·KW·C]`) holds the window's input
    /// values in `(ky, kx, c)` order, zeros where the window leaves the input; with an HWIO
    /// kernel viewed as `[KH·KW·Cin, Cout]`, `columns · K` is the convolution.
    public static func im2col(_ x: UnsafePointer<Float>, _ g: Window, into columns: UnsafeMutablePointer<Float>) {
        let c = g.channels, patch = g.patchSize
        parallel(g.batch * g.outputHeight, grain: 4) { rows in
            for row in rows {
                let b = row / g.outputHeight, oy = row % g.outputHeight
                for ox in 0..<g.outputWidth {
                    var out = columns + ((b * g.outputHeight + oy) * g.outputWidth + ox) * patch
                    for ky in 0..<g.kernelHeight {
                        let iy = oy * g.stride - g.top + ky
                        for kx in 0..<g.kernelWidth {
                            let ix = ox * g.stride - g.left + kx
                            if iy < 0 || iy >= g.height || ix < 0 || ix >= g.width {
                                out.update(repeating: 0, count: c)
                            } else {
                                out.update(from: x + ((b * g.height + iy) * g.width + ix) * c, count: c)
                            }
                            out += c
                        }
                    }
                }
            }
        }
    }

    /// col2im, the adjoint of ``im2col(_:_:into:)``: adds every column entry back to the input
    /// position it was read from (`dx` is overwritten).
    public static func col2im(_ columns: UnsafePointer<Float>, _ g: Window, into dx: UnsafeMutablePointer<Float>) {
        let c = g.channels, patch = g.patchSize
        dx.update(repeating: 0, count: g.inputCount)
        // Images are independent: parallel over the batch.
        parallel(g.batch) { images in
            for b in images {
                for oy in 0..<g.outputHeight { for ox in 0..<g.outputWidth {
                    var column = columns + ((b * g.outputHeight + oy) * g.outputWidth + ox) * patch
                    for ky in 0..<g.kernelHeight {
                        let iy = oy * g.stride - g.top + ky
                        for kx in 0..<g.kernelWidth {
                            let ix = ox * g.stride - g.left + kx
                            if iy >= 0 && iy < g.height && ix >= 0 && ix < g.width {
                                let target = dx + ((b * g.height + iy) * g.width + ix) * c
                                for ch in 0..<c { target[ch] += column[ch] }
                            }
                            column += c
                        }
                    }
                } }
            }
        }
    }

    /// A `Conv2D` without bias over any window: im2col, then `columns · K` by sgemm.
    ///
    /// - Parameters: `x` `[N, H, W, Cin]`; `kernel` HWIO `[KH, KW, Cin, Cout]`; `y` `[N, OH, OW, Cout]`.
    public static func convolution(_ x: UnsafePointer<Float>, _ g: Window, kernel: UnsafePointer<Float>, outputChannels cout: Int, into y: UnsafeMutablePointer<Float>) {
        if g.kernelHeight == 1, g.kernelWidth == 1, g.stride == 1, g.top == 0, g.left == 0 {
            pointwise(x, rows: g.outputPositions, inputChannels: g.channels, kernel: kernel, outputChannels: cout, into: y)
            return
        }
        withTemporary(g.outputPositions * g.patchSize) { columns in
            im2col(x, g, into: columns)
            pointwise(columns, rows: g.outputPositions, inputChannels: g.patchSize, kernel: kernel, outputChannels: cout, into: y)
        }
    }

    /// The backward pass of ``convolution(_:_:kernel:outputChannels:into:)``: `dK` always, `dX`
    /// when `dx` is given (`Conv2DBackpropFilter`, `Conv2DBackpropInput`).
    public static func convolutionBackward(_ x: UnsafePointer<Float>, _ g: Window, kernel: UnsafePointer<Float>, outputChannels cout: Int,
                                           dy: UnsafePointer<Float>, dkernel: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) {
        if g.kernelHeight == 1, g.kernelWidth == 1, g.stride == 1, g.top == 0, g.left == 0 {
            pointwiseBackwardWeights(x, rows: g.outputPositions, inputChannels: g.channels, dy: dy, outputChannels: cout, into: dkernel)
            if let dx { pointwiseBackwardData(dy, rows: g.outputPositions, inputChannels: g.channels, kernel: kernel, outputChannels: cout, into: dx) }
            return
        }
        withTemporary(g.outputPositions * g.patchSize) { columns in
            im2col(x, g, into: columns)
            pointwiseBackwardWeights(UnsafePointer(columns), rows: g.outputPositions, inputChannels: g.patchSize, dy: dy, outputChannels: cout, into: dkernel)
            if let dx {
                pointwiseBackwardData(dy, rows: g.outputPositions, inputChannels: g.patchSize, kernel: kernel, outputChannels: cout, into: columns)
                col2im(columns, g, into: dx)
            }
        }
    }

    /// `DepthwiseConv2D` (depth multiplier 1, no bias):
    /// `y[b, oy, ox, c] = Σ x[b, oy·s − top + ky, ox·s − left + kx, c] · k[ky, kx, c]`, zero outside.
    ///
    /// - Parameters: `x` `[N, H, W, C]`; `kernel` `[KH, KW, C]`; `y` `[N, OH, OW, C]`.
    public static func depthwise(_ x: UnsafePointer<Float>, _ g: Window, kernel: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        let c = g.channels, vectorEnd = c & ~7
        parallel(g.batch * g.outputHeight, grain: 2) { rows in
            var inputs = [Int](repeating: 0, count: g.kernelHeight * g.kernelWidth), weights = inputs
            inputs.withUnsafeMutableBufferPointer { inputOffsets in
                weights.withUnsafeMutableBufferPointer { weightOffsets in
                    for row in rows {
                        let b = row / g.outputHeight, oy = row % g.outputHeight
                        for ox in 0..<g.outputWidth {
                            let out = y + ((b * g.outputHeight + oy) * g.outputWidth + ox) * c
                            let taps = g.validTaps(b: b, oy: oy, ox: ox, inputs: inputOffsets.baseAddress!, weights: weightOffsets.baseAddress!)
                            var ch = 0
                            while ch < vectorEnd {
                                var sum = SIMD8<Float>()
                                for t in 0..<taps { sum += load8(x + inputOffsets[t] + ch) * load8(kernel + weightOffsets[t] + ch) }
                                store8(sum, out + ch)
                                ch += 8
                            }
                            while ch < c {
                                var sum: Float = 0
                                for t in 0..<taps { sum += x[inputOffsets[t] + ch] * kernel[weightOffsets[t] + ch] }
                                out[ch] = sum
                                ch += 1
                            }
                        }
                    }
                }
            }
        }
    }

    /// The backward pass of ``depthwise(_:_:kernel:into:)``: `dk[ky, kx, c] = Σ x · dy` over the
    /// batch and output positions (`DepthwiseConv2dNativeBackpropFilter`), and, when `dx` is
    /// given, `dx[…, c] = Σ k[ky, kx, c] · dy[…, c]` (`…BackpropInput`; `dx` is overwritten).
    public static func depthwiseBackward(_ x: UnsafePointer<Float>, _ g: Window, kernel: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                         dkernel: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?) {
        let c = g.channels, taps = g.kernelHeight * g.kernelWidth, vectorEnd = c & ~7
        let chunks = max(1, min(workers, g.batch))
        // Per chunk of images: Double totals of the kernel gradient, and a Float block sum.
        var totals = [Double](repeating: 0, count: chunks * taps * c)
        dx?.update(repeating: 0, count: g.inputCount)
        totals.withUnsafeMutableBufferPointer { totalBuffer in
            let total = totalBuffer.baseAddress!
            parallel(chunks) { range in
                var inputs = [Int](repeating: 0, count: taps), weights = inputs
                for chunk in range {
                    let mine = total + chunk * taps * c
                    withTemporary(taps * c) { block in
                        block.update(repeating: 0, count: taps * c)
                        var rowsInBlock = 0
                        for b in (g.batch * chunk / chunks)..<(g.batch * (chunk + 1) / chunks) {
                            for oy in 0..<g.outputHeight {
                                for ox in 0..<g.outputWidth {
                                    let gradient = dy + ((b * g.outputHeight + oy) * g.outputWidth + ox) * c
                                    let count = inputs.withUnsafeMutableBufferPointer { i in
                                        weights.withUnsafeMutableBufferPointer { g.validTaps(b: b, oy: oy, ox: ox, inputs: i.baseAddress!, weights: $0.baseAddress!) }
                                    }
                                    for t in 0..<count {
                                        let input = x + inputs[t], partial = block + weights[t]
                                        var ch = 0
                                        while ch < vectorEnd {
                                            store8(load8(partial + ch) + load8(input + ch) * load8(gradient + ch), partial + ch)
                                            ch += 8
                                        }
                                        while ch < c { partial[ch] += input[ch] * gradient[ch]; ch += 1 }
                                        if let dx {
                                            let target = dx + inputs[t], weight = kernel + weights[t]
                                            ch = 0
                                            while ch < vectorEnd {
                                                store8(load8(target + ch) + load8(weight + ch) * load8(gradient + ch), target + ch)
                                                ch += 8
                                            }
                                            while ch < c { target[ch] += weight[ch] * gradient[ch]; ch += 1 }
                                        }
                                    }
                                }
                                rowsInBlock += g.outputWidth
                                if rowsInBlock >= reductionBlock {
                                    for i in 0..<(taps * c) { mine[i] += Double(block[i]) }
                                    block.update(repeating: 0, count: taps * c)
                                    rowsInBlock = 0
                                }
                            }
                        }
                        for i in 0..<(taps * c) { mine[i] += Double(block[i]) }
                    }
                }
            }
        }
        for i in 0..<(taps * c) {
            var s = 0.0
            for chunk in 0..<chunks { s += totals[chunk * taps * c + i] }
            dkernel[i] = Float(s)
        }
    }

    // MARK: BatchNorm, ReLU6

    /// Inference-mode BatchNorm `y = (x − μ) · γ/√(σ² + ε) + β` over `rows` positions of `channels`
    /// values, followed by ReLU6 (`min(max(y, 0), 6)`) when `relu6` is set. `y` may be `x`.
    ///
    /// - Parameters: `gamma`, `beta`, `mean`, `variance` `[C]`; `epsilon` > 0.
    public static func batchNorm(_ x: UnsafePointer<Float>, rows: Int, channels c: Int, gamma: [Float], beta: [Float], mean: [Float], variance: [Float],
                                 epsilon: Float, relu6: Bool, into y: UnsafeMutablePointer<Float>) {
        var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
        for ch in 0..<c {
            scale[ch] = gamma[ch] / (variance[ch] + epsilon).squareRoot()
            shift[ch] = beta[ch] - mean[ch] * scale[ch]
        }
        let vectorEnd = c & ~7
        scale.withUnsafeBufferPointer { sp in
            shift.withUnsafeBufferPointer { tp in
                let s = sp.baseAddress!, t = tp.baseAddress!
                parallel(rows, grain: 256) { range in
                    for row in range {
                        let input = x + row * c, output = y + row * c
                        var ch = 0
                        while ch < vectorEnd {
                            var v = load8(input + ch) * load8(s + ch) + load8(t + ch)
                            if relu6 {
                                // (`clamped` and `pointwiseMin/Max` are not specialised here: select instead.)
                                v.replace(with: 0, where: v .< 0)
                                v.replace(with: 6, where: v .> 6)
                            }
                            store8(v, output + ch)
                            ch += 8
                        }
                        while ch < c {
                            let v = input[ch] * s[ch] + t[ch]
                            output[ch] = relu6 ? Swift.min(Swift.max(v, 0), 6) : v
                            ch += 1
                        }
                    }
                }
            }
        }
    }

    /// The backward pass of inference-mode ``batchNorm(_:rows:channels:gamma:beta:mean:variance:epsilon:relu6:into:)``
    /// (the moving statistics are constants). With `relu6Output` (the fused ReLU6's output `y`),
    /// `dy` is first masked as TensorFlow's `Relu6Grad` does (`dz = dy` where `0 < y < 6`, else 0).
    /// Then `dγ = Σ dz · (x − μ)/√(σ² + ε)`, `dβ = Σ dz` over the rows, and, when `dx` is given,
    /// `dx = dz · γ/√(σ² + ε)` (`dx` may be `dy`).
    ///
    /// - Parameters: `x` the BatchNorm input; `dgamma`, `dbeta` `[C]` (overwritten) or nil when
    ///   not wanted.
    public static func batchNormBackward(_ x: UnsafePointer<Float>, rows: Int, channels c: Int, gamma: [Float], mean: [Float], variance: [Float],
                                         epsilon: Float, relu6Output: UnsafePointer<Float>?, dy: UnsafePointer<Float>,
                                         dgamma: UnsafeMutablePointer<Float>?, dbeta: UnsafeMutablePointer<Float>?, dx: UnsafeMutablePointer<Float>?) {
        var inv = [Float](repeating: 0, count: c), scale = [Float](repeating: 0, count: c)
        for ch in 0..<c {
            inv[ch] = 1 / (variance[ch] + epsilon).squareRoot()
            scale[ch] = gamma[ch] * inv[ch]
        }
        let reduce = dgamma != nil || dbeta != nil
        let chunks = max(1, min(workers, rows / 256))
        let vectorEnd = c & ~7
        // Per chunk: Double totals of Σ dz·(x − μ) (then scaled by 1/√(σ² + ε)) and of Σ dz.
        var totals = [Double](repeating: 0, count: chunks * 2 * c)
        scale.withUnsafeBufferPointer { sp in
            mean.withUnsafeBufferPointer { mp in
                totals.withUnsafeMutableBufferPointer { tp in
                    let scale = sp.baseAddress!, mu = mp.baseAddress!, total = tp.baseAddress!
                    parallel(chunks) { range in for chunk in range {
                        let lower = rows * chunk / chunks, upper = rows * (chunk + 1) / chunks
                        let sums = total + chunk * 2 * c  // Σ dz·(x − μ) at 0..<c, Σ dz at c..<2c
                        withTemporary(2 * c) { block in
                            block.update(repeating: 0, count: 2 * c)
                            let blockG = block, blockB = block + c
                            var inBlock = 0
                            for row in lower..<upper {
                                let input = x + row * c, gradient = dy + row * c
                                let output = relu6Output.map { $0 + row * c }
                                let target = dx.map { $0 + row * c }
                                var ch = 0
                                while ch < vectorEnd {
                                    var dz = load8(gradient + ch)
                                    if let output {
                                        let y = load8(output + ch)
                                        dz.replace(with: 0, where: .!((y .> 0) .& (y .< 6)))
                                    }
                                    if reduce {
                                        store8(load8(blockG + ch) + dz * (load8(input + ch) - load8(mu + ch)), blockG + ch)
                                        store8(load8(blockB + ch) + dz, blockB + ch)
                                    }
                                    if let target { store8(dz * load8(scale + ch), target + ch) }
                                    ch += 8
                                }
                                while ch < c {
                                    var dz = gradient[ch]
                                    if let output, !(output[ch] > 0 && output[ch] < 6) { dz = 0 }
                                    if reduce {
                                        blockG[ch] += dz * (input[ch] - mu[ch])
                                        blockB[ch] += dz
                                    }
                                    if let target { target[ch] = dz * scale[ch] }
                                    ch += 1
                                }
                                if reduce {
                                    inBlock += 1
                                    if inBlock == reductionBlock {
                                        for i in 0..<(2 * c) { sums[i] += Double(block[i]) }
                                        block.update(repeating: 0, count: 2 * c)
                                        inBlock = 0
                                    }
                                }
                            }
                            for i in 0..<(2 * c) { sums[i] += Double(block[i]) }
                        }
                    } }
                }
            }
        }
        for ch in 0..<c {
            var g = 0.0, b = 0.0
            for chunk in 0..<chunks { g += totals[chunk * 2 * c + ch]; b += totals[chunk * 2 * c + c + ch] }
            dgamma?[ch] = Float(g * Double(inv[ch]))
            dbeta?[ch] = Float(b)
        }
    }

    /// `y = min(max(x, 0), 6)` element-wise (`y` may be `x`).
    public static func relu6(_ x: UnsafePointer<Float>, count: Int, into y: UnsafeMutablePointer<Float>) {
        parallel(count, grain: 16_384) { r in for i in r { y[i] = Swift.min(Swift.max(x[i], 0), 6) } }
    }

    /// The backward pass of ``relu6(_:count:into:)`` from its output `y` (TensorFlow's
    /// `Relu6Grad` reads the output too): `dx = dy` where `0 < y < 6`, else 0 (`dx` may be `dy`).
    public static func relu6Backward(output y: UnsafePointer<Float>, dy: UnsafePointer<Float>, count: Int, into dx: UnsafeMutablePointer<Float>) {
        parallel(count, grain: 16_384) { r in for i in r { dx[i] = y[i] > 0 && y[i] < 6 ? dy[i] : 0 } }
    }

    // MARK: Add, padding, pooling

    /// `y = a + b` element-wise (`y` may be `a` or `b`); also the accumulation of a gradient
    /// read by two layers.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int, into y: UnsafeMutablePointer<Float>) {
        parallel(count, grain: 16_384) { r in for i in r { y[i] = a[i] + b[i] } }
    }

    /// `ZeroPadding2D`: `[N, H, W, C]` into `[N, H + top + bottom, W + left + right, C]`.
    public static func zeroPadding(_ x: UnsafePointer<Float>, batch n: Int, height h: Int, width w: Int, channels c: Int, _ p: Padding,
                                   into y: UnsafeMutablePointer<Float>) {
        let (ph, pw) = (h + p.top + p.bottom, w + p.left + p.right)
        y.update(repeating: 0, count: n * ph * pw * c)
        for b in 0..<n { for iy in 0..<h {
            (y + ((b * ph + iy + p.top) * pw + p.left) * c).update(from: x + (b * h + iy) * w * c, count: w * c)
        } }
    }

    /// The backward pass of ``zeroPadding(_:batch:height:width:channels:_:into:)``: `dy`
    /// `[N, H + top + bottom, W + left + right, C]` cropped to `dx` `[N, H, W, C]`.
    public static func zeroPaddingBackward(_ dy: UnsafePointer<Float>, batch n: Int, height h: Int, width w: Int, channels c: Int, _ p: Padding,
                                           into dx: UnsafeMutablePointer<Float>) {
        let (ph, pw) = (h + p.top + p.bottom, w + p.left + p.right)
        for b in 0..<n { for iy in 0..<h {
            (dx + (b * h + iy) * w * c).update(from: dy + ((b * ph + iy + p.top) * pw + p.left) * c, count: w * c)
        } }
    }

    /// `GlobalAveragePooling2D`: `[N, P, C]` (P = H·W positions) to `[N, C]`, the mean over positions.
    public static func globalAveragePool(_ x: UnsafePointer<Float>, batch n: Int, positions p: Int, channels c: Int, into y: UnsafeMutablePointer<Float>) {
        parallel(n) { images in
            for b in images {
                var sum = [Double](repeating: 0, count: c)
                for q in 0..<p {
                    let row = x + (b * p + q) * c
                    for ch in 0..<c { sum[ch] += Double(row[ch]) }
                }
                for ch in 0..<c { y[b * c + ch] = Float(sum[ch] / Double(p)) }
            }
        }
    }

    /// The backward pass of ``globalAveragePool(_:batch:positions:channels:into:)``:
    /// `dx[b, q, c] = dy[b, c] / P`.
    public static func globalAveragePoolBackward(_ dy: UnsafePointer<Float>, batch n: Int, positions p: Int, channels c: Int, into dx: UnsafeMutablePointer<Float>) {
        let scale = 1 / Float(p)
        parallel(n) { images in
            for b in images {
                for q in 0..<p {
                    let row = dx + (b * p + q) * c
                    for ch in 0..<c { row[ch] = dy[b * c + ch] * scale }
                }
            }
        }
    }

    /// Eight floats from `p` (no alignment needed).
    @inline(__always) static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always) static func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    /// Stores eight floats at `p` (no alignment needed).
    @inline(__always) static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) }

    /// Scratch memory of `count` floats for the duration of `body` (uninitialised).
    static func withTemporary<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        defer { buffer.deallocate() }
        return body(buffer)
    }
}

