import MobileNetKernels
import Testing

/// Each reference kernel against a naive formula written independently (index arithmetic on
/// the definition, no shared code), on odd shapes, strides 1 and 2, 1x1 and 3x3 kernels and
/// asymmetric padding.
@Suite("Reference kernels against naive definitions")
struct ReferenceKernelTests {
    /// Deterministic pseudo-random values in -1..<1.
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state) >> 40) / Float(1 << 23)
        }
    }

    static func tensor(_ shape: [Int], seed: UInt64) -> Tensor {
        Tensor(shape: shape, scalars: values(shape.reduce(1, *), seed: seed))
    }

    struct ConvCase: Sendable, CustomTestStringConvertible {
        let n: Int, h: Int, w: Int, cin: Int, cout: Int, k: Int, stride: Int, padding: Padding, activation: FusedActivation
        var testDescription: String { "N\(n) \(h)x\(w)x\(cin)->\(cout) k\(k) s\(stride) pad(\(padding.top),\(padding.bottom),\(padding.left),\(padding.right)) \(activation)" }
    }

    static let convCases: [ConvCase] = [
        ConvCase(n: 2, h: 7, w: 5, cin: 3, cout: 4, k: 3, stride: 2, padding: Padding(top: 0, bottom: 1, left: 0, right: 1), activation: .relu6),
        ConvCase(n: 1, h: 9, w: 11, cin: 5, cout: 7, k: 3, stride: 1, padding: Padding(top: 1, bottom: 1, left: 1, right: 1), activation: .none),
        ConvCase(n: 3, h: 4, w: 6, cin: 6, cout: 3, k: 1, stride: 1, padding: .valid, activation: .none),
        ConvCase(n: 1, h: 8, w: 8, cin: 2, cout: 2, k: 3, stride: 2, padding: .same(inputHeight: 8, inputWidth: 8, kernelSize: 3, stride: 2), activation: .relu6),
    ]

    /// y[b, oy, ox, co] = bias[co] + sum over ky, kx, ci of x[b, oy*s+ky-top, ox*s+kx-left, ci] * k[ky, kx, ci, co].
    static func naiveConv(_ x: Tensor, _ p: ConvolutionParameters, depthwise: Bool) -> Tensor {
        let (n, h, w, cin) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = (p.kernel.shape[0], p.kernel.shape[1])
        let cout = depthwise ? cin : p.kernel.shape[3]
        let oh = (h + p.padding.top + p.padding.bottom - kh) / p.stride + 1
        let ow = (w + p.padding.left + p.padding.right - kw) / p.stride + 1
        var out = [Float]()
        for b in 0..<n { for oy in 0..<oh { for ox in 0..<ow { for co in 0..<cout {
            var acc = Double(p.bias[co])
            for ky in 0..<kh { for kx in 0..<kw {
                let iy = oy * p.stride + ky - p.padding.top, ix = ox * p.stride + kx - p.padding.left
                guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                if depthwise {
                    acc += Double(x.scalars[((b * h + iy) * w + ix) * cin + co]) * Double(p.kernel.scalars[(ky * kw + kx) * cin + co])
                } else {
                    for ci in 0..<cin {
                        acc += Double(x.scalars[((b * h + iy) * w + ix) * cin + ci]) * Double(p.kernel.scalars[((ky * kw + kx) * cin + ci) * cout + co])
                    }
                }
            } }
            if p.activation == .relu6 { acc = min(max(acc, 0), 6) }
            out.append(Float(acc))
        } } } }
        return Tensor(shape: [n, oh, ow, cout], scalars: out)
    }

    @Test("conv2D", arguments: convCases)
    func conv2D(c: ConvCase) {
        let x = Self.tensor([c.n, c.h, c.w, c.cin], seed: 1)
        let p = ConvolutionParameters(kernel: Self.tensor([c.k, c.k, c.cin, c.cout], seed: 2).scaled(4), bias: Self.values(c.cout, seed: 3),
                                      stride: c.stride, padding: c.padding, activation: c.activation)
        let ours = ReferenceKernels.conv2D(x, p)
        let naive = Self.naiveConv(x, p, depthwise: false)
        #expect(ours.shape == naive.shape)
        #expect(ours.maxAbsoluteDifference(to: naive) < 1e-5)
        if c.activation == .relu6 { #expect(ours.scalars.contains(6) || ours.scalars.contains(0)) }
    }

    @Test("depthwiseConv2D", arguments: convCases)
    func depthwise(c: ConvCase) {
        let x = Self.tensor([c.n, c.h, c.w, c.cin], seed: 4)
        let p = ConvolutionParameters(kernel: Self.tensor([c.k, c.k, c.cin, 1], seed: 5).scaled(4), bias: Self.values(c.cin, seed: 6),
                                      stride: c.stride, padding: c.padding, activation: c.activation)
        let ours = ReferenceKernels.depthwiseConv2D(x, p)
        let naive = Self.naiveConv(x, p, depthwise: true)
        #expect(ours.shape == naive.shape)
        #expect(ours.maxAbsoluteDifference(to: naive) < 1e-5)
    }

    @Test("SAME padding follows TensorFlow: smaller half first")
    func samePadding() {
        #expect(Padding.same(inputHeight: 224, inputWidth: 225, kernelSize: 3, stride: 2) == Padding(top: 0, bottom: 1, left: 1, right: 1))
        #expect(Padding.same(inputHeight: 7, inputWidth: 7, kernelSize: 3, stride: 1) == Padding(top: 1, bottom: 1, left: 1, right: 1))
        #expect(Padding.same(inputHeight: 5, inputWidth: 6, kernelSize: 1, stride: 1) == .valid)
    }

    @Test("BatchNorm, add, pooling, dense, softmax")
    func elementwiseAndReductions() {
        let x = Self.tensor([2, 3, 5, 4], seed: 7)
        let bn = BatchNormParameters(gamma: [1, 2, 0.5, -1], beta: [0, 0.1, -0.2, 0.3], movingMean: [0.1, -0.1, 0, 0.2],
                                     movingVariance: [1, 0.5, 2, 0.25], epsilon: 1e-3)
        let y = ReferenceKernels.batchNorm(x, bn)
        for i in 0..<x.count {
            let c = i % 4
            let expected = bn.gamma[c] * (x.scalars[i] - bn.movingMean[c]) / (bn.movingVariance[c] + 1e-3).squareRoot() + bn.beta[c]
            #expect(abs(y.scalars[i] - expected) < 1e-5)
        }
        let sum = ReferenceKernels.add(x, y)
        #expect(sum.scalars[17] == x.scalars[17] + y.scalars[17])

        let avg = ReferenceKernels.globalAveragePool(x)
        let max = ReferenceKernels.globalMaxPool(x)
        #expect(avg.shape == [2, 4] && max.shape == [2, 4])
        for b in 0..<2 { for c in 0..<4 {
            let column = (0..<15).map { x.scalars[(b * 15 + $0) * 4 + c] }
            #expect(abs(avg.scalars[b * 4 + c] - column.reduce(0, +) / 15) < 1e-6)
            #expect(max.scalars[b * 4 + c] == column.max())
        } }

        let features = Self.tensor([3, 5], seed: 8)
        let dense = DenseParameters(kernel: Self.tensor([5, 7], seed: 9), bias: Self.values(7, seed: 10))
        let logits = ReferenceKernels.dense(features, dense)
        for b in 0..<3 { for o in 0..<7 {
            let expected = dense.bias[o] + (0..<5).reduce(Float(0)) { $0 + features.scalars[b * 5 + $1] * dense.kernel.scalars[$1 * 7 + o] }
            #expect(abs(logits.scalars[b * 7 + o] - expected) < 1e-5)
        } }
        let probabilities = ReferenceKernels.softmax(Tensor(shape: [2, 3], scalars: [1000, 1001, 1002, -1, 0, 1]))
        let e = [Float(1), expf(1), expf(2)], total = e.reduce(0, +)
        for i in 0..<3 {
            #expect(abs(probabilities.scalars[i] - e[i] / total) < 1e-6)
            #expect(abs(probabilities.scalars[3 + i] - e[i] / total) < 1e-6)
        }
    }

    @Test("a graph with a bad shape is rejected before execution")
    func graphValidation() throws {
        let conv = ConvolutionParameters(kernel: Tensor(shape: [3, 3, 4, 2]), bias: [0, 0], stride: 1, padding: .valid, activation: .none)
        let graph = Graph(inputShape: [8, 8, 3], nodes: [Node(name: "bad_conv", operation: .conv2D(conv), inputs: [Graph.inputIndex])])
        #expect(throws: GraphError.self) { try ReferenceBackend().makeExecutor(for: graph) }
        let good = Graph(inputShape: [8, 8, 4], nodes: [Node(name: "conv", operation: .conv2D(conv), inputs: [Graph.inputIndex])])
        // The good graph must be accepted (a `try?` here used to hide a rejection) and run.
        let executor = try ReferenceBackend().makeExecutor(for: good)
        #expect(try executor.run(Tensor(shape: [1, 8, 8, 4]))[0].shape == [1, 6, 6, 2])
        #expect(throws: GraphError.inputShape(expected: [8, 8, 4], got: [1, 8, 8, 3])) { try executor.run(Tensor(shape: [1, 8, 8, 3])) }
    }
}

extension Tensor {
    func scaled(_ factor: Float) -> Tensor { Tensor(shape: shape, scalars: scalars.map { $0 * factor }) }
}

#if canImport(Glibc)
import Glibc
#endif
