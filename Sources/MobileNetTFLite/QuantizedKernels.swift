import Foundation

/// The values of a run: quantized tensors as their integer values (uint8 or int8 held in
/// `Int32`), float tensors as floats.
public struct QuantizedValues: Sendable {
    /// Integer tensors by index.
    public var quantized: [Int: [Int32]] = [:]
    /// Float tensors by index (the input before QUANTIZE, outputs after DEQUANTIZE).
    public var float: [Int: [Float]] = [:]
}

extension QuantizedProgram {
    /// One image's input: floats for a float32 input (quantized by the graph's QUANTIZE), or the
    /// integer values of a uint8/int8 input.
    public enum Input: Sendable {
        case float([Float])
        case quantized([Int32])
    }

    /// Runs the graph on one image (batch 1) with the plain-Swift integer kernels: the oracle of
    /// faster kernels, and the parity reference against LiteRT.
    ///
    /// - Parameters:
    ///   - input: the input tensor's values, NHWC, as many as its shape holds.
    ///   - keep: the tensors whose values to return (others are released after their last use);
    ///     nil keeps every tensor.
    /// - Returns: the kept tensors' values.
    /// - Throws: ``TFLiteError/damaged(path:reason:)`` for an input of the wrong size or type.
    public func run(_ input: Input, keep: Set<Int>? = nil) throws(TFLiteError) -> QuantizedValues {
        var values = QuantizedValues()
        let info = tensors[self.input]
        switch input {
        case .float(let x):
            guard info.type == .float32, x.count == info.count else {
                throw .damaged(path: path, reason: "the input takes \(info.count) \(info.type.name) values; \(x.count) floats were given")
            }
            values.float[self.input] = x
        case .quantized(let x):
            guard info.type != .float32, x.count == info.count else {
                throw .damaged(path: path, reason: "the input takes \(info.count) \(info.type.name) values; \(x.count) integers were given")
            }
            values.quantized[self.input] = x.map { min(max($0, info.range.lowerBound), info.range.upperBound) }
        }
        var lastUse: [Int: Int] = [:]
        for (position, step) in steps.enumerated() {
            for i in step.inputs { lastUse[i] = position }
        }
        for (position, step) in steps.enumerated() {
            apply(step, to: &values)
            if let keep {
                for i in step.inputs where lastUse[i] == position && !keep.contains(i) {
                    values.quantized[i] = nil
                    values.float[i] = nil
                }
            }
        }
        return values
    }

    /// Runs one step on `values`, adding its output.
    func apply(_ step: Step, to values: inout QuantizedValues) {
        let out = tensors[step.output]
        switch step.kind {
        case .quantize(let multiplier):
            if let multiplier {
                let x = values.quantized[step.inputs[0]] ?? []
                let zx = tensors[step.inputs[0]].zeroPoint
                values.quantized[step.output] = x.map { v in
                    min(max(QuantizedArithmetic.multiply(v - zx, by: multiplier) + out.zeroPoint, out.range.lowerBound), out.range.upperBound)
                }
            } else {
                let x = values.float[step.inputs[0]] ?? []
                values.quantized[step.output] = x.map { f in
                    let q = (f / out.scale).rounded(.toNearestOrAwayFromZero)
                    let clamped = min(max(q, Float(Int32.min / 2)), Float(Int32.max / 2))
                    return min(max(Int32(clamped) + out.zeroPoint, out.range.lowerBound), out.range.upperBound)
                }
            }
        case .dequantize:
            let x = tensors[step.inputs[0]]
            values.float[step.output] = (values.quantized[step.inputs[0]] ?? []).map { Float(Double(x.scale) * Double($0 - x.zeroPoint)) }
        case .copy:
            if let q = values.quantized[step.inputs[0]] { values.quantized[step.output] = q }
        case .convolution(let c):
            values.quantized[step.output] = QuantizedKernels.convolution(values.quantized[step.inputs[0]] ?? [], input: tensors[step.inputs[0]].shape,
                                                                         output: out.shape, c)
        case .fullyConnected(let c):
            values.quantized[step.output] = QuantizedKernels.fullyConnected(values.quantized[step.inputs[0]] ?? [], c)
        case .add(let a):
            values.quantized[step.output] = QuantizedKernels.add(values.quantized[step.inputs[0]] ?? [], values.quantized[step.inputs[1]] ?? [], a)
        case .averagePool(let p):
            values.quantized[step.output] = QuantizedKernels.averagePool(values.quantized[step.inputs[0]] ?? [], input: tensors[step.inputs[0]].shape,
                                                                         output: out.shape, p)
        case .mean(let m):
            values.quantized[step.output] = QuantizedKernels.mean(values.quantized[step.inputs[0]] ?? [], input: tensors[step.inputs[0]].shape, m)
        case .softmax(let s):
            values.quantized[step.output] = QuantizedKernels.softmax(values.quantized[step.inputs[0]] ?? [], s)
        case .pad(let p):
            values.quantized[step.output] = QuantizedKernels.pad(values.quantized[step.inputs[0]] ?? [], input: tensors[step.inputs[0]].shape, p)
        }
    }

    /// One step on `values` (its inputs), returning them with the step's output added: the
    /// plain-Swift kernel of an operator the fast path does not run.
    func runStep(_ step: Step, on values: QuantizedValues) -> QuantizedValues {
        var result = values
        apply(step, to: &result)
        return result
    }
}

/// The plain-Swift integer kernels, NHWC, batch 1, with TFLite's reference semantics
/// (`reference_ops` / `reference_integer_ops`). Slow and simple: the oracle.
enum QuantizedKernels {
    static func convolution(_ x: [Int32], input: [Int], output: [Int], _ c: QuantizedProgram.Convolution) -> [Int32] {
        let (inH, inW, inC) = (input[1], input[2], input[3])
        let (outH, outW, outC) = (output[1], output[2], output[3])
        var y = [Int32](repeating: 0, count: outH * outW * outC)
        x.withUnsafeBufferPointer { xp in
            c.weights.withUnsafeBufferPointer { wp in
                y.withUnsafeMutableBufferPointer { yp in
                    for oy in 0..<outH {
                        for ox in 0..<outW {
                            let iy0 = oy * c.strideH - c.padTop, ix0 = ox * c.strideW - c.padLeft
                            for oc in 0..<outC {
                                var acc: Int32 = c.bias[oc]
                                for ky in 0..<c.kernelH {
                                    let iy = iy0 + ky
                                    if iy < 0 || iy >= inH { continue }
                                    for kx in 0..<c.kernelW {
                                        let ix = ix0 + kx
                                        if ix < 0 || ix >= inW { continue }
                                        let xBase = (iy * inW + ix) * inC
                                        if c.depthwise {
                                            acc &+= (xp[xBase + oc] - c.inputZero) &* wp[(ky * c.kernelW + kx) * outC + oc]
                                        } else {
                                            let wBase = ((oc * c.kernelH + ky) * c.kernelW + kx) * inC
                                            for ic in 0..<inC { acc &+= (xp[xBase + ic] - c.inputZero) &* wp[wBase + ic] }
                                        }
                                    }
                                }
                                let scaled = QuantizedArithmetic.multiplyRoundingUp(acc, by: c.multipliers[oc]) &+ c.outputZero
                                yp[(oy * outW + ox) * outC + oc] = min(max(scaled, c.bounds.lowerBound), c.bounds.upperBound)
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    static func fullyConnected(_ x: [Int32], _ c: QuantizedProgram.Convolution) -> [Int32] {
        (0..<c.outputChannels).map { o in
            var acc: Int32 = c.bias[o]
            let base = o * c.inputChannels
            for i in 0..<c.inputChannels { acc &+= (x[i] - c.inputZero) &* c.weights[base + i] }
            let scaled = QuantizedArithmetic.multiplyRoundingUp(acc, by: c.multipliers[o]) &+ c.outputZero
            return min(max(scaled, c.bounds.lowerBound), c.bounds.upperBound)
        }
    }

    static func add(_ a: [Int32], _ b: [Int32], _ p: QuantizedProgram.Add) -> [Int32] {
        zip(a, b).map { u, v in
            let su = QuantizedArithmetic.multiply((u - p.zero1) &* (1 << 20), by: p.multiplier1)
            let sv = QuantizedArithmetic.multiply((v - p.zero2) &* (1 << 20), by: p.multiplier2)
            let out = QuantizedArithmetic.multiply(su &+ sv, by: p.outputMultiplier) &+ p.outputZero
            return min(max(out, p.bounds.lowerBound), p.bounds.upperBound)
        }
    }

    static func averagePool(_ x: [Int32], input: [Int], output: [Int], _ p: QuantizedProgram.Pool) -> [Int32] {
        let (inH, inW, channels) = (input[1], input[2], input[3])
        let (outH, outW) = (output[1], output[2])
        var y = [Int32](repeating: 0, count: outH * outW * channels)
        for oy in 0..<outH {
            for ox in 0..<outW {
                let y0 = oy * p.strideH - p.padTop, x0 = ox * p.strideW - p.padLeft
                let fy0 = max(0, -y0), fy1 = min(p.filterH, inH - y0)
                let fx0 = max(0, -x0), fx1 = min(p.filterW, inW - x0)
                let count = Int32(max(0, fy1 - fy0) * max(0, fx1 - fx0))
                for c in 0..<channels {
                    var acc: Int32 = 0
                    if count > 0 {
                        for fy in fy0..<fy1 {
                            for fx in fx0..<fx1 { acc &+= x[((y0 + fy) * inW + x0 + fx) * channels + c] }
                        }
                    }
                    let mean: Int32 = count == 0 ? 0 : (p.signed && acc < 0 ? (acc - count / 2) / count : (acc + count / 2) / count)
                    y[(oy * outW + ox) * channels + c] = min(max(mean, p.bounds.lowerBound), p.bounds.upperBound)
                }
            }
        }
        return y
    }

    static func mean(_ x: [Int32], input: [Int], _ m: QuantizedProgram.Mean) -> [Int32] {
        let (h, w, channels) = (input[1], input[2], input[3])
        return (0..<channels).map { c in
            var acc: Int32 = 0
            for i in 0..<(h * w) { acc &+= x[i * channels + c] - m.inputZero }
            let out = QuantizedArithmetic.multiply(acc, by: m.multiplier) &+ m.outputZero
            return min(max(out, m.bounds.lowerBound), m.bounds.upperBound)
        }
    }

    /// LiteRT's uint8/int8 softmax (`optimized_ops::Softmax` with its lookup table): in Float,
    /// `table[max - x]` summed, each entry times `1 / (sum * outputScale)`, rounded half away
    /// from zero, plus the output zero point.
    static func softmax(_ x: [Int32], _ s: QuantizedProgram.Softmax) -> [Int32] {
        guard let top = x.max() else { return [] }
        var sum: Float = 0
        for v in x { sum += s.table[Int(top - v)] }
        let inverse = 1 / (sum * s.outputScale)
        return x.map { v in
            let q = Int32((s.table[Int(top - v)] * inverse).rounded(.toNearestOrAwayFromZero)) + s.outputZero
            return min(max(q, s.bounds.lowerBound), s.bounds.upperBound)
        }
    }

    static func pad(_ x: [Int32], input: [Int], _ p: QuantizedProgram.Pad) -> [Int32] {
        let (h, w, c) = (input[1], input[2], input[3])
        let (outH, outW) = (h + p.top + p.bottom, w + p.left + p.right)
        var y = [Int32](repeating: p.value, count: outH * outW * c)
        for iy in 0..<h {
            for ix in 0..<w {
                let src = (iy * w + ix) * c, dst = ((iy + p.top) * outW + ix + p.left) * c
                for k in 0..<c { y[dst + k] = x[src + k] }
            }
        }
        return y
    }
}
