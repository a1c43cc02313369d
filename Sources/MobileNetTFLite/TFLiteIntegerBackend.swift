import Foundation
import MobileNetKernels
import MobileNetModel

/// The inference backend of a fully quantized `.tflite` MobileNetV2: the graph's layers run as
/// the file's integer operators (``QuantizedProgram``), and each graph output a layer of the
/// file gives is its tensor dequantized (`scale * (q - zeroPoint)`). Graph nodes the file does
/// not have — a new head trained on the quantized backbone, global max pooling — run in Float32
/// with ``/MobileNetKernels/ReferenceKernels`` on those dequantized values.
///
/// Images enter as the file expects: a float32 input (before the file's QUANTIZE) gets the
/// preprocessed tensor; a uint8/int8 input gets ``InputMapping`` of it.
public struct TFLiteIntegerBackend: InferenceBackend {
    /// How a preprocessed float value becomes the integer input value.
    public enum InputMapping: Sendable, Equatable {
        /// The file takes floats (its first operator is QUANTIZE).
        case float
        /// `q = clamp(round(x / scale) + zeroPoint)`, TFLite's own quantization.
        case quantize(scale: Float, zeroPoint: Int32, range: ClosedRange<Int32>)
        /// Raw pixels: the preprocessing undone, `pixel = x * std[c] + mean[c]`, then
        /// `q = clamp(floor(pixel + 0.5)) + offset`, for an input whose quantization is the
        /// images' normalisation within one step (TF-slim's uint8 1/128 and 128 for `x / 127.5 - 1`;
        /// int8 2/255 and -1 with `offset` -128), as Coral's and TFLite Support's classifiers feed such models.
        case pixels(offset: Int32, range: ClosedRange<Int32>, mean: [Float], std: [Float])
    }

    /// The integer kernels.
    public enum Kernels: String, Sendable {
        /// XNNPACK's quantized operators (``XNNPACKProgram``), LiteRT's default; the plain-Swift
        /// kernels for the operators it does not run. Falls back to ``reference`` when XNNPACK
        /// cannot initialise.
        case xnnpack
        /// The plain-Swift kernels (``QuantizedProgram/run(_:keep:)``): LiteRT's built-in
        /// kernels bit for bit, about 25 times slower.
        case reference
    }

    /// `tflite-xnnpack` or `tflite-reference`.
    public var name: String { xnnpack == nil ? "tflite-reference" : "tflite-xnnpack" }
    /// The recognised file.
    public let network: TFLiteMobileNetV2
    /// The compiled integer program.
    public let program: QuantizedProgram
    /// How images enter.
    public let inputMapping: InputMapping
    /// The XNNPACK operators, nil with the reference kernels.
    let xnnpack: XNNPACKProgram?
    /// For batches: one single-threaded copy of the operators per thread, each running its
    /// share of the images side by side (an image's operators are too small to keep two threads
    /// busy: batch 32 of the Coral file 137 -> about 160 images/s on 2 cores). Empty with one thread.
    let lanes: [XNNPACKProgram]

    /// Prepares the integer program of `network`.
    ///
    /// - Parameters:
    ///   - network: the recognised file.
    ///   - normalization: how the images are preprocessed, `(pixel - mean[c]) / std[c]` on pixels
    ///     0...255 (default `x / 127.5 - 1`): a uint8/int8 input whose quantization is the same
    ///     map within one step gets raw pixels (``InputMapping/pixels(offset:range:mean:std:)``).
    ///   - kernels: XNNPACK (the default) or the plain-Swift reference.
    ///   - threads: XNNPACK's threads (default: every core).
    /// - Throws: ``TFLiteError`` for an operator the integer kernels do not run.
    public init(network: TFLiteMobileNetV2, normalization: (mean: [Float], std: [Float]) = ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5]), kernels: Kernels = .xnnpack,
                threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws(TFLiteError) {
        self.network = network
        program = try QuantizedProgram(model: network.model)
        let compiled = program
        xnnpack = kernels == .xnnpack ? XNNPACKProgram(model: network.model, program: compiled, threads: threads) : nil
        var lanes: [XNNPACKProgram] = []
        if xnnpack != nil && threads > 1 {
            for _ in 0..<threads { if let lane = XNNPACKProgram(model: network.model, program: compiled, threads: 1) { lanes.append(lane) } }
        }
        self.lanes = lanes
        let input = network.model.tensors[network.model.inputs[0]]
        if input.type == .float32 {
            inputMapping = .float
        } else {
            let scale = input.quantization?.scales.first ?? 1, zero = Int32(input.quantization?.zeroPoints.first ?? 0)
            let range: ClosedRange<Int32> = input.type == .uint8 ? 0...255 : -128...127
            let offset: Int32 = input.type == .uint8 ? 0 : -128
            // Does q = pixel + offset dequantize to the normalised pixel within one step, at both ends, in every channel?
            let (mean, std) = normalization
            let valid = mean.count == 3 && std.count == 3 && !std.contains(0) && (mean + std).allSatisfy(\.isFinite)
            func error(_ pixel: Float, _ c: Int) -> Float { abs(scale * Float(Int32(pixel) + offset - zero) - (pixel - mean[c]) / std[c]) }
            if valid, (0..<3).allSatisfy({ error(0, $0) <= scale * 1.001 && error(255, $0) <= scale * 1.001 }) {
                inputMapping = .pixels(offset: offset, range: range, mean: mean, std: std)
            } else {
                inputMapping = .quantize(scale: scale, zeroPoint: zero, range: range)
            }
        }
    }

    /// Maps the graph's nodes to the file's tensors and returns the executor.
    ///
    /// - Throws: ``/MobileNetKernels/GraphError`` for an invalid graph; ``TFLiteError`` when a
    ///   backbone layer of the graph is not one of the file's.
    public func makeExecutor(for graph: Graph) throws -> any GraphExecutor {
        let shapes = try graph.validate()
        var sources: [Int: Int] = [:] // node → tensor
        for (index, node) in graph.nodes.enumerated() {
            guard let tensor = network.layerTensors[node.name] ?? network.layerTensors[node.name + "_logits"] else { continue }
            let t = network.model.tensors[tensor]
            guard t.elementCount == shapes[index].reduce(1, *) else { continue }
            // A head the graph carries must be the file's own (a new head may reuse the names).
            if case .dense(let p) = node.operation {
                guard let layer = network.head?.layers.first(where: { $0.name == node.name }), layer.kernel == p.kernel, layer.bias == p.bias else { continue }
            }
            if node.operation == .softmax, network.layerTensors[node.name] == nil { continue }
            sources[index] = tensor
        }
        // Every other node needed must be a head operation computed from mapped values.
        func check(_ index: Int) throws {
            if index == Graph.inputIndex || sources[index] != nil { return }
            let node = graph.nodes[index]
            switch node.operation {
            case .dense, .relu, .softmax, .globalAveragePool, .globalMaxPool:
                for i in node.inputs { try check(i) }
            default:
                throw TFLiteError.unsupportedOperator(path: network.model.path, index: -1, name: node.name,
                                                      reason: "the layer is not one of the file's, and only head layers run outside its integer operators")
            }
        }
        for output in graph.outputs { try check(output) }
        // The mapped nodes the outputs need (the file's tensors to keep), found once per graph.
        var needed = Set<Int>()
        func collect(_ index: Int) {
            if index == Graph.inputIndex || needed.contains(index) { return }
            needed.insert(index)
            if sources[index] == nil { graph.nodes[index].inputs.forEach(collect) }
        }
        graph.outputs.forEach(collect)
        let mapped = needed.filter { sources[$0] != nil }
        return IntegerExecutor(graph: graph, shapes: shapes, sources: sources, order: mapped.sorted(),
                               keep: Set(mapped.compactMap { sources[$0] }), backend: self)
    }
}

private struct IntegerExecutor: GraphExecutor {
    let graph: Graph
    let shapes: [[Int]]
    /// Graph node → the file's tensor that gives its value.
    let sources: [Int: Int]
    /// The mapped nodes the outputs need, in node order.
    let order: [Int]
    /// Their tensors: what a run keeps.
    let keep: Set<Int>
    let backend: TFLiteIntegerBackend

    func run(_ input: Tensor) throws -> [Tensor] {
        guard input.rank == 4, Array(input.shape.dropFirst()) == graph.inputShape, input.shape[0] >= 1 else {
            throw GraphError.inputShape(expected: graph.inputShape, got: input.shape)
        }
        let batch = input.shape[0]
        let imageSize = graph.inputShape.reduce(1, *)
        let (program, mapping, order, keep, sources) = (backend.program, backend.inputMapping, order, keep, sources)
        // One image per task: the integer kernels run an image on one thread; images of a batch in parallel.
        @Sendable func dequantized(_ result: QuantizedValues) -> [Int: [Float]] {
            var row: [Int: [Float]] = [:]
            for n in order {
                let tensor = sources[n]!
                if let f = result.float[tensor] {
                    row[n] = f
                } else if let q = result.quantized[tensor] {
                    let info = program.tensors[tensor]
                    row[n] = q.map { Float(Double(info.scale) * Double($0 - info.zeroPoint)) }
                }
            }
            return row
        }
        if let xnnpack = backend.xnnpack {
            let inputs = (0..<batch).map { Self.programInput(input, image: $0, size: imageSize, mapping: mapping) }
            let lanes = backend.lanes
            if batch < 2 || lanes.count < 2 {
                return try finish(rows: try xnnpack.run(inputs, keep: keep).map(dequantized), batch: batch, input: input)
            }
            // Contiguous shares of the batch, one per lane, side by side.
            let share = (batch + lanes.count - 1) / lanes.count
            var parts = [Result<[[Int: [Float]]], any Error>](repeating: .success([]), count: lanes.count)
            parts.withUnsafeMutableBufferPointer { slots in
                let slots = UncheckedSendable(slots)
                DispatchQueue.concurrentPerform(iterations: lanes.count) { lane in
                    let range = min(lane * share, batch)..<min((lane + 1) * share, batch)
                    slots.value[lane] = Result { try lanes[lane].run(Array(inputs[range]), keep: keep).map(dequantized) }
                }
            }
            return try finish(rows: try parts.flatMap { try $0.get() }, batch: batch, input: input)
        }
        var perImage = [Result<[Int: [Float]], any Error>](repeating: .success([:]), count: batch)
        perImage.withUnsafeMutableBufferPointer { slots in
            let slots = UncheckedSendable(slots)
            DispatchQueue.concurrentPerform(iterations: batch) { b in
                slots.value[b] = Result {
                    dequantized(try program.run(Self.programInput(input, image: b, size: imageSize, mapping: mapping), keep: keep))
                }
            }
        }
        return try finish(rows: try perImage.map { try $0.get() }, batch: batch, input: input)
    }

    /// The graph's outputs from the mapped nodes' values of each image: the rest (a head the
    /// file does not have) in Float32 with the reference kernels.
    private func finish(rows: [[Int: [Float]]], batch: Int, input: Tensor) throws -> [Tensor] {
        var tensors: [Int: Tensor] = [:]
        for n in order { tensors[n] = Tensor(shape: [batch] + shapes[n], scalars: rows.flatMap { $0[n] ?? [] }) }
        func value(_ index: Int) -> Tensor {
            if let t = tensors[index] { return t }
            let node = graph.nodes[index]
            let x = value(node.inputs[0])
            let result: Tensor
            switch node.operation {
            case .dense(let p): result = ReferenceKernels.dense(x, p)
            case .relu: result = ReferenceKernels.relu(x)
            case .softmax: result = ReferenceKernels.softmax(x)
            case .globalAveragePool: result = ReferenceKernels.globalAveragePool(x)
            case .globalMaxPool: result = ReferenceKernels.globalMaxPool(x)
            default: result = x // refused by makeExecutor
            }
            tensors[index] = result
            return result
        }
        return graph.outputs.map { $0 == Graph.inputIndex ? input : value($0) }
    }

    /// Image `b` of the batch as the program's input (``TFLiteIntegerBackend/InputMapping``).
    static func programInput(_ input: Tensor, image b: Int, size: Int, mapping: TFLiteIntegerBackend.InputMapping) -> QuantizedProgram.Input {
        let pixels = input.scalars[(b * size)..<((b + 1) * size)]
        switch mapping {
        case .float:
            return .float(Array(pixels))
        case .quantize(let scale, let zero, let range):
            return .quantized(pixels.map { x in
                let q = (x / scale).rounded(.toNearestOrAwayFromZero)
                let v = q.isFinite ? Int32(min(max(q, -1e6), 1e6)) : 0
                return min(max(v + zero, range.lowerBound), range.upperBound)
            })
        case .pixels(let offset, let range, let mean, let std):
            return .quantized(pixels.enumerated().map { i, x in
                let c = i % 3
                let p = (x * std[c] + mean[c] + 0.5).rounded(.down)
                let v = p.isFinite ? Int32(min(max(p, 0), 255)) : 0
                return min(max(v + offset, range.lowerBound), range.upperBound)
            })
        }
    }
}
