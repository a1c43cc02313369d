import CXNNPACK
import Foundation

/// The fast path of a quantized TFLite graph: each operator of a ``QuantizedProgram`` as an
/// XNNPACK operator (Debian's libxnnpack, the library LiteRT itself runs quantized models with):
/// `qu8` convolutions, depthwise convolutions (HWGo filters), fully connected layers, ADD, global
/// average pooling and softmax for uint8 files (TF-slim / Coral); `qc8` (per-channel) and `qs8`
/// for int8 files (TF2 post-training quantization; a per-channel FULLY_CONNECTED as a 1x1 `qc8`
/// convolution). Operators XNNPACK does not offer here (PAD, QUANTIZE between integer types,
/// int8 SOFTMAX, DEQUANTIZE) run on the plain-Swift kernels, as does any operator XNNPACK refuses
/// to create (its requantization scale limits).
///
/// XNNPACK requantizes in Float (`round(acc * scale)`, to nearest even), as LiteRT does when it
/// runs a model through XNNPACK (its default): the outputs are LiteRT's default outputs, within 1
/// of its built-in kernels (which ``QuantizedProgram/run(_:keep:)`` equals bit for bit).
///
/// Operators are set up for each batch and are not thread-safe: runs are serialised by a lock;
/// XNNPACK's thread pool runs each operator on ``threads`` threads.
public final class XNNPACKProgram: @unchecked Sendable {
    /// XNNPACK's one-time initialisation (CPU detection, kernel tables); false when it failed.
    static let available: Bool = xnn_initialize(nil) == xnn_status_success

    private enum Kernel {
        case convolution(xnn_operator_t, signed: Bool, inputH: Int, inputW: Int)
        case fullyConnected(xnn_operator_t, signed: Bool)
        case add(xnn_operator_t, signed: Bool, shape: [Int])
        case globalAveragePool(xnn_operator_t, signed: Bool, width: Int)
        case softmax(xnn_operator_t)
        case flipSignBit
        case reference
    }

    let program: QuantizedProgram
    private var kernels: [Kernel] = []
    private let pool: pthreadpool_t?
    private let lock = NSLock()
    /// Operators run on XNNPACK (the rest on the plain-Swift kernels).
    public private(set) var xnnpackOperators = 0
    /// Threads of XNNPACK's pool.
    public let threads: Int

    /// Creates XNNPACK operators for `program`'s steps, nil when XNNPACK is unavailable.
    ///
    /// - Parameters:
    ///   - model: the file `program` was compiled from (its raw weights and scales).
    ///   - program: the compiled graph.
    ///   - threads: XNNPACK's thread pool size, at least 1.
    public init?(model: TFLiteModel, program: QuantizedProgram, threads: Int) {
        guard Self.available else { return nil }
        self.program = program
        self.threads = max(1, threads)
        pool = pthreadpool_create(self.threads)
        for step in program.steps {
            let op = model.operators[step.index]
            let kernel = Self.makeKernel(step, op: op, model: model, program: program)
            switch kernel {
            case .reference, .flipSignBit: break
            default: xnnpackOperators += 1
            }
            kernels.append(kernel)
        }
    }

    deinit {
        for kernel in kernels {
            switch kernel {
            case .convolution(let op, _, _, _), .fullyConnected(let op, _), .add(let op, _, _), .globalAveragePool(let op, _, _), .softmax(let op):
                xnn_delete_operator(op)
            case .reference, .flipSignBit: break
            }
        }
        for b in buffers.values { b.deallocate() }
        if let pool { pthreadpool_destroy(pool) }
    }

    private static func makeKernel(_ step: QuantizedProgram.Step, op: TFLiteOperator, model: TFLiteModel, program: QuantizedProgram) -> Kernel {
        let output = model.tensors[step.output]
        let signed = output.type == .int8
        var created: xnn_operator_t?
        switch step.kind {
        case .convolution(let c), .fullyConnected(let c):
            let x = model.tensors[step.inputs[0]], w = model.input(op, 1)!
            guard let wq = w.quantization, let data = w.data, x.type == output.type, w.type == (signed ? .int8 : .uint8) else { return .reference }
            let bias: [Int32] = model.input(op, 2)?.data.map { d in d.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } } ?? [Int32](repeating: 0, count: c.outputChannels)
            let xs = x.quantization!.scales[0], ys = output.quantization!.scales[0]
            let isFullyConnected: Bool = { if case .fullyConnected = step.kind { return true } else { return false } }()
            let (kh, kw) = (c.kernelH, c.kernelW)
            var inH = 1, inW = 1, padBottom = 0, padRight = 0
            if !isFullyConnected {
                (inH, inW) = (x.shape[1], x.shape[2])
                padBottom = max(0, (output.shape[1] - 1) * c.strideH + kh - inH - c.padTop)
                padRight = max(0, (output.shape[2] - 1) * c.strideW + kw - inW - c.padLeft)
            }
            let groups = c.depthwise ? c.outputChannels : 1
            let groupIn = c.depthwise ? 1 : c.inputChannels, groupOut = c.depthwise ? 1 : c.outputChannels
            let flags: UInt32 = c.depthwise ? UInt32(XNN_FLAG_DEPTHWISE_CONVOLUTION) : 0
            let status: xnn_status = data.withUnsafeBytes { raw in
                if !signed {
                    if isFullyConnected {
                        return xnn_create_fully_connected_nc_qu8(c.inputChannels, c.outputChannels, c.inputChannels, c.outputChannels,
                                                                 UInt8(c.inputZero), xs, UInt8(wq.zeroPoints[0]), wq.scales[0],
                                                                 raw.bindMemory(to: UInt8.self).baseAddress, bias, UInt8(c.outputZero), ys,
                                                                 UInt8(c.bounds.lowerBound), UInt8(c.bounds.upperBound), 0, &created)
                    }
                    return xnn_create_convolution2d_nhwc_qu8(UInt32(c.padTop), UInt32(padRight), UInt32(padBottom), UInt32(c.padLeft),
                                                             UInt32(kh), UInt32(kw), UInt32(c.strideH), UInt32(c.strideW), 1, 1,
                                                             UInt32(groups), groupIn, groupOut, c.inputChannels, c.outputChannels,
                                                             UInt8(c.inputZero), xs, UInt8(wq.zeroPoints[0]), wq.scales[0],
                                                             raw.bindMemory(to: UInt8.self).baseAddress, bias, UInt8(c.outputZero), ys,
                                                             UInt8(c.bounds.lowerBound), UInt8(c.bounds.upperBound), flags, &created)
                }
                guard wq.zeroPoints.allSatisfy({ $0 == 0 }) else { return xnn_status_unsupported_parameter }
                if isFullyConnected && wq.isPerTensor {
                    return xnn_create_fully_connected_nc_qs8(c.inputChannels, c.outputChannels, c.inputChannels, c.outputChannels,
                                                             Int8(c.inputZero), xs, wq.scales[0], raw.bindMemory(to: Int8.self).baseAddress,
                                                             bias, Int8(c.outputZero), ys, Int8(c.bounds.lowerBound), Int8(c.bounds.upperBound), 0, &created)
                }
                // A per-channel FULLY_CONNECTED is a 1x1 convolution of a 1x1 image: the same [out, in] weights.
                let scales = wq.isPerTensor ? [Float](repeating: wq.scales[0], count: c.outputChannels) : wq.scales
                return xnn_create_convolution2d_nhwc_qc8(UInt32(c.padTop), UInt32(padRight), UInt32(padBottom), UInt32(c.padLeft),
                                                         UInt32(kh), UInt32(kw), UInt32(c.strideH), UInt32(c.strideW), 1, 1,
                                                         UInt32(groups), groupIn, groupOut, c.inputChannels, c.outputChannels,
                                                         Int8(c.inputZero), xs, scales, raw.bindMemory(to: Int8.self).baseAddress, bias,
                                                         Int8(c.outputZero), ys, Int8(c.bounds.lowerBound), Int8(c.bounds.upperBound), flags, &created)
            }
            guard status == xnn_status_success, let created else { return .reference }
            if isFullyConnected && !(signed && !wq.isPerTensor) { return .fullyConnected(created, signed: signed) }
            return .convolution(created, signed: signed, inputH: inH, inputW: inW)
        case .add(let a):
            let x1 = model.tensors[step.inputs[0]], x2 = model.tensors[step.inputs[1]]
            let (s1, s2, ys) = (x1.quantization!.scales[0], x2.quantization!.scales[0], output.quantization!.scales[0])
            let status = signed
                ? xnn_create_add_nd_qs8(Int8(a.zero1), s1, Int8(a.zero2), s2, Int8(a.outputZero), ys, Int8(a.bounds.lowerBound), Int8(a.bounds.upperBound), 0, &created)
                : xnn_create_add_nd_qu8(UInt8(a.zero1), s1, UInt8(a.zero2), s2, UInt8(a.outputZero), ys, UInt8(a.bounds.lowerBound), UInt8(a.bounds.upperBound), 0, &created)
            guard status == xnn_status_success, let created else { return .reference }
            return .add(created, signed: signed, shape: x1.shape)
        case .averagePool(let p):
            // Only the average over the whole map (TF-slim's global pooling) is XNNPACK's here.
            let x = model.tensors[step.inputs[0]]
            guard output.shape[1] == 1, output.shape[2] == 1, p.filterH == x.shape[1], p.filterW == x.shape[2], p.padTop == 0, p.padLeft == 0 else { return .reference }
            return globalPool(x: x, y: output, bounds: p.bounds, signed: signed, created: &created)
        case .mean(let m):
            return globalPool(x: model.tensors[step.inputs[0]], y: output, bounds: m.bounds, signed: signed, created: &created)
        case .softmax:
            guard !signed, let xs = model.tensors[step.inputs[0]].quantization?.scales[0], op.options.beta == 1 else { return .reference }
            let channels = output.elementCount
            guard xnn_create_softmax_nc_qu8(channels, channels, channels, xs, UInt8(output.quantization!.zeroPoints[0]), output.quantization!.scales[0], 0, &created) == xnn_status_success,
                  let created else { return .reference }
            return .softmax(created)
        case .quantize(let multiplier?):
            let x = model.tensors[step.inputs[0]]
            guard let xq = x.quantization, let yq = output.quantization, xq.scales == yq.scales, x.type != output.type,
                  abs(xq.zeroPoints[0] - yq.zeroPoints[0]) == 128, (x.type == .uint8) == (xq.zeroPoints[0] > yq.zeroPoints[0]) else { return .reference }
            _ = multiplier
            return .flipSignBit
        default:
            return .reference
        }
    }

    private static func globalPool(x: TFLiteTensor, y: TFLiteTensor, bounds: ClosedRange<Int32>, signed: Bool, created: inout xnn_operator_t?) -> Kernel {
        guard let xq = x.quantization, let yq = y.quantization, x.shape.count == 4 else { return .reference }
        let channels = x.shape[3]
        let status = signed
            ? xnn_create_global_average_pooling_nwc_qs8(channels, channels, channels, Int8(xq.zeroPoints[0]), xq.scales[0], Int8(yq.zeroPoints[0]), yq.scales[0],
                                                        Int8(bounds.lowerBound), Int8(bounds.upperBound), 0, &created)
            : xnn_create_global_average_pooling_nwc_qu8(channels, channels, channels, UInt8(xq.zeroPoints[0]), xq.scales[0], UInt8(yq.zeroPoints[0]), yq.scales[0],
                                                        UInt8(bounds.lowerBound), UInt8(bounds.upperBound), 0, &created)
        guard status == xnn_status_success, let created else { return .reference }
        return .globalAveragePool(created, signed: signed, width: x.shape[1] * x.shape[2])
    }

    /// Runs a batch: one input per image (as ``QuantizedProgram/run(_:keep:)`` takes it); returns
    /// the kept tensors' values per image. Images run one after the other, each operator on the
    /// pool's threads, in buffers kept from run to run (XNNPACK then reuses its indirection
    /// buffers, which it rebuilds whenever an operator's input moves).
    ///
    /// - Throws: ``TFLiteError/damaged(path:reason:)`` for inputs of the wrong size; an XNNPACK
    ///   failure names the operator.
    public func run(_ inputs: [QuantizedProgram.Input], keep: Set<Int>) throws(TFLiteError) -> [QuantizedValues] {
        lock.lock()
        defer { lock.unlock() }
        var results: [QuantizedValues] = []
        results.reserveCapacity(inputs.count)
        for input in inputs { results.append(try runOne(input, keep: keep)) }
        return results
    }

    /// One byte per element of each integer tensor, for one image, allocated on first use.
    private var buffers: [Int: UnsafeMutableRawBufferPointer] = [:]

    private func buffer(_ index: Int) -> UnsafeMutableRawBufferPointer {
        if let b = buffers[index] { return b }
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(program.tensors[index].count, 1), alignment: 64)
        b.initializeMemory(as: UInt8.self, repeating: 0)
        buffers[index] = b
        return b
    }

    private func ints(_ index: Int) -> [Int32] {
        let b = buffer(index)
        return program.tensors[index].type == .int8 ? b.bindMemory(to: Int8.self).map { Int32($0) } : b.bindMemory(to: UInt8.self).map { Int32($0) }
    }

    private func runOne(_ input: QuantizedProgram.Input, keep: Set<Int>) throws(TFLiteError) -> QuantizedValues {
        let tensors = program.tensors
        var floats: [Int: [Float]] = [:]
        let inputInfo = tensors[program.input]
        switch input {
        case .float(let x):
            guard inputInfo.type == .float32, x.count == inputInfo.count else { throw .damaged(path: program.path, reason: "the input takes \(inputInfo.count) \(inputInfo.type.name) values") }
            floats[program.input] = x
        case .quantized(let x):
            guard inputInfo.type != .float32, x.count == inputInfo.count else { throw .damaged(path: program.path, reason: "the input takes \(inputInfo.count) \(inputInfo.type.name) values") }
            let b = buffer(program.input).bindMemory(to: UInt8.self)
            for (i, v) in x.enumerated() { b[i] = UInt8(truncatingIfNeeded: min(max(v, inputInfo.range.lowerBound), inputInfo.range.upperBound)) }
        }
        for (position, step) in program.steps.enumerated() {
            let out = tensors[step.output]
            func failed(_ status: xnn_status) -> TFLiteError {
                .unsupportedOperator(path: program.path, index: step.index, name: "\(step.kind)", reason: "XNNPACK failed with status \(status.rawValue)")
            }
            var status = xnn_status_success
            switch kernels[position] {
            case .convolution(let op, let signed, let h, let w):
                let x = buffer(step.inputs[0]).baseAddress, y = buffer(step.output).baseAddress
                status = signed
                    ? xnn_setup_convolution2d_nhwc_qc8(op, 1, h, w, x?.assumingMemoryBound(to: Int8.self), y?.assumingMemoryBound(to: Int8.self), pool)
                    : xnn_setup_convolution2d_nhwc_qu8(op, 1, h, w, x?.assumingMemoryBound(to: UInt8.self), y?.assumingMemoryBound(to: UInt8.self), pool)
                if status == xnn_status_success { status = xnn_run_operator(op, pool) }
            case .fullyConnected(let op, let signed):
                let x = buffer(step.inputs[0]).baseAddress, y = buffer(step.output).baseAddress
                status = signed
                    ? xnn_setup_fully_connected_nc_qs8(op, 1, x?.assumingMemoryBound(to: Int8.self), y?.assumingMemoryBound(to: Int8.self), pool)
                    : xnn_setup_fully_connected_nc_qu8(op, 1, x?.assumingMemoryBound(to: UInt8.self), y?.assumingMemoryBound(to: UInt8.self), pool)
                if status == xnn_status_success { status = xnn_run_operator(op, pool) }
            case .add(let op, let signed, let shape):
                let a = buffer(step.inputs[0]).baseAddress, b = buffer(step.inputs[1]).baseAddress, y = buffer(step.output).baseAddress
                var dims = [1] + shape.dropFirst()
                status = signed
                    ? xnn_setup_add_nd_qs8(op, dims.count, &dims, dims.count, &dims, a?.assumingMemoryBound(to: Int8.self), b?.assumingMemoryBound(to: Int8.self),
                                           y?.assumingMemoryBound(to: Int8.self), pool)
                    : xnn_setup_add_nd_qu8(op, dims.count, &dims, dims.count, &dims, a?.assumingMemoryBound(to: UInt8.self), b?.assumingMemoryBound(to: UInt8.self),
                                           y?.assumingMemoryBound(to: UInt8.self), pool)
                if status == xnn_status_success { status = xnn_run_operator(op, pool) }
            case .globalAveragePool(let op, let signed, let width):
                let x = buffer(step.inputs[0]).baseAddress, y = buffer(step.output).baseAddress
                status = signed
                    ? xnn_setup_global_average_pooling_nwc_qs8(op, 1, width, x?.assumingMemoryBound(to: Int8.self), y?.assumingMemoryBound(to: Int8.self), pool)
                    : xnn_setup_global_average_pooling_nwc_qu8(op, 1, width, x?.assumingMemoryBound(to: UInt8.self), y?.assumingMemoryBound(to: UInt8.self), pool)
                if status == xnn_status_success { status = xnn_run_operator(op, pool) }
            case .softmax(let op):
                let x = buffer(step.inputs[0]).baseAddress, y = buffer(step.output).baseAddress
                status = xnn_setup_softmax_nc_qu8(op, 1, x?.assumingMemoryBound(to: UInt8.self), y?.assumingMemoryBound(to: UInt8.self), pool)
                if status == xnn_status_success { status = xnn_run_operator(op, pool) }
            case .flipSignBit:
                // uint8 <-> int8 with one scale and zero points 128 apart: q - 128 is the top bit flipped.
                let x = buffer(step.inputs[0]), y = buffer(step.output)
                for i in 0..<y.count { y[i] = x[i] ^ 0x80 }
            case .reference:
                var values = QuantizedValues()
                for i in step.inputs {
                    if tensors[i].type == .float32 { values.float[i] = floats[i] ?? [] } else { values.quantized[i] = ints(i) }
                }
                let result = program.runStep(step, on: values)
                if let f = result.float[step.output] { floats[step.output] = f }
                if let q = result.quantized[step.output] {
                    let y = buffer(step.output)
                    for (i, v) in q.enumerated() where i < y.count { y[i] = UInt8(truncatingIfNeeded: v) }
                }
            }
            guard status == xnn_status_success else { throw failed(status) }
            _ = out
        }
        var values = QuantizedValues()
        for index in keep {
            if tensors[index].type == .float32 {
                if let f = floats[index] { values.float[index] = f }
            } else {
                values.quantized[index] = ints(index)
            }
        }
        return values
    }
}
