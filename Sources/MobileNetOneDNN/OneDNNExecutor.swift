import CDNNL
import Foundation
import MobileNetKernels

@inline(__always)
func dnnlCheck(_ status: dnnl_status_t, _ call: @autoclosure () -> String) throws(OneDNNError) {
    guard status == dnnl_success else { throw .library(call: call(), status: Int(status.rawValue)) }
}

/// A plain (non-blocked) memory descriptor. `dims` are oneDNN's logical dims (NCHW order for
/// activations, OIHW / GOIHW for weights) whatever the physical `tag`.
func memoryDescriptor(_ dims: [Int], _ tag: dnnl_format_tag_t) throws(OneDNNError) -> dnnl_memory_desc_t {
    var md = dnnl_memory_desc_t()
    let d = dims.map(Int64.init)
    try dnnlCheck(dnnl_memory_desc_init_by_tag(&md, Int32(d.count), d, dnnl_f32, tag), "dnnl_memory_desc_init_by_tag(\(dims))")
    return md
}

func sameDescriptor(_ a: dnnl_memory_desc_t, _ b: dnnl_memory_desc_t) -> Bool {
    var a = a, b = b
    return dnnl_memory_desc_equal(&a, &b) != 0
}

func byteSize(_ md: dnnl_memory_desc_t) -> Int {
    var md = md
    return Int(dnnl_memory_desc_get_size(&md))
}

/// The implementation oneDNN chose for a primitive descriptor, such as `jit:avx2` or `ref:any`.
func implementationName(_ pd: dnnl_primitive_desc_t) -> String {
    var name: UnsafePointer<CChar>? = nil
    guard dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success, let name else { return "" }
    return String(cString: name)
}

/// Whether an implementation name denotes one of oneDNN's reference (unoptimised) kernels.
func isReferenceImplementation(_ name: String) -> Bool { name.contains("ref") }

func queryDescriptor(_ pd: dnnl_primitive_desc_t, _ what: dnnl_query_t) -> dnnl_memory_desc_t {
    dnnl_primitive_desc_query_md(pd, what, 0)?.pointee ?? dnnl_memory_desc_t()
}

func allocateBytes(_ count: Int) -> UnsafeMutableRawPointer {
    UnsafeMutableRawPointer.allocate(byteCount: max(count, 64), alignment: 64)
}

/// Weights and bias of one convolution: the Keras-layout copy oneDNN reads, and the copies
/// reordered into the formats oneDNN chose (usually one).
final class ConvolutionWeights {
    var biasMemory: dnnl_memory_t?
    var buffers: [UnsafeMutableRawPointer] = []
    var reordered: [(md: dnnl_memory_desc_t, memory: dnnl_memory_t)] = []

    deinit {
        if let biasMemory { dnnl_memory_destroy(biasMemory) }
        for r in reordered { dnnl_memory_destroy(r.memory) }
        for b in buffers { b.deallocate() }
    }
}

/// One step of a planned inference.
enum Step {
    /// A oneDNN primitive with its arguments.
    case primitive(dnnl_primitive_t, [dnnl_exec_arg_t])
    /// `[N, H*W, C]` to `[N, C]`, mean or maximum.
    case globalPool(source: UnsafeMutablePointer<Float>, destination: UnsafeMutablePointer<Float>, batch: Int, positions: Int, channels: Int, maximum: Bool)
    /// `[N, I]` times the node's kernel plus bias, to `[N, O]`.
    case dense(node: Int, source: UnsafeMutablePointer<Float>, destination: UnsafeMutablePointer<Float>, batch: Int)
    /// Softmax over rows of `[N, C]`.
    case softmax(source: UnsafeMutablePointer<Float>, destination: UnsafeMutablePointer<Float>, batch: Int, channels: Int)
    /// `max(x, 0)` over `count` values (a head's hidden Dense activation).
    case relu(source: UnsafeMutablePointer<Float>, destination: UnsafeMutablePointer<Float>, count: Int)
}

/// Everything needed to run the graph at one batch size: primitives, memories bound to planned
/// buffers, and the steps in order.
final class Plan {
    let batch: Int
    var steps: [Step] = []
    var primitives: [dnnl_primitive_t] = []
    var memories: [dnnl_memory_t] = []
    var rawBuffers: [UnsafeMutableRawPointer] = []
    var plainBuffers: [UnsafeMutablePointer<Float>] = []
    var input: UnsafeMutablePointer<Float>
    var inputCount: Int
    /// One plain NHWC (or `[N, C]`) buffer per graph output, in ``Graph/outputs`` order.
    var outputs: [UnsafeMutablePointer<Float>] = []
    /// The shape of each output, batch included.
    var outputShapes: [[Int]] = []
    /// Bytes of the planned activation buffers (diagnostics).
    var activationBytes = 0
    /// Each primitive's node and oneDNN implementation, in execution order (diagnostics).
    var summary: [OneDNNPlanSummary.Primitive] = []

    init(batch: Int, inputCount: Int) {
        self.batch = batch
        self.inputCount = inputCount
        input = UnsafeMutablePointer<Float>.allocate(capacity: inputCount)
        plainBuffers.append(input)
    }

    deinit {
        for p in primitives { dnnl_primitive_destroy(p) }
        for m in memories { dnnl_memory_destroy(m) }
        for b in rawBuffers { b.deallocate() }
        for b in plainBuffers { b.deallocate() }
    }
}

/// Runs a graph with oneDNN. Plans are built per batch size and cached; execution is
/// serialised by a lock (one stream, shared buffers), so the executor is safe to share.
final class OneDNNExecutor: GraphExecutor, @unchecked Sendable {
    let graph: Graph
    let threads: Int
    let threadPolicy: OneDNNBackend.ThreadPolicy
    /// Chooses the thread count of each micro-batch (``OneDNNBackend/ThreadPolicy``).
    private var threadChooser: ThreadCountChooser
    let layoutPolicy: OneDNNBackend.LayoutPolicy
    /// The activation format convolutions are asked for first (``OneDNNBackend/LayoutPolicy/blocked``
    /// on an AVX-512 CPU: `nChw16c`); nil: oneDNN's choice (`any`), or NHWC for the plain policy.
    let activationTag: dnnl_format_tag_t?
    /// The largest batch one plan runs; bigger inputs are split.
    let microBatch: Int
    /// Whether a 1x1 convolution and the 3x3 depthwise one reading it run as one oneDNN
    /// primitive (`dnnl_post_ops_append_dw`; ``OneDNNBackend/fusesDepthwise``).
    let fusesDepthwise: Bool
    /// Per node, its output shape without the batch dimension.
    let shapes: [[Int]]
    /// Per node, the last node reading its output (`nodes.count` for the graph output).
    let lastUse: [Int]
    /// Per graph-input key (`-1` or node index), the nodes that read it.
    let readers: [Int: [Int]]
    private let lock = NSLock()
    private var engine: dnnl_engine_t?
    private var stream: dnnl_stream_t?
    private var weights: [Int: ConvolutionWeights] = [:]
    private var plans: [PlanKey: Plan] = [:]
    /// A plan is made for one batch size and one thread count: oneDNN's kernels split their work
    /// by the thread count at creation, so a plan runs with the count it was made for.
    struct PlanKey: Hashable {
        var batch: Int
        var threads: Int
        /// Which lane of a data-parallel run owns it (each lane has its own buffers).
        var lane = 0
    }
    /// One stream per lane (the first is made with the executor).
    private var streams: [dnnl_stream_t] = []
    /// Batch sizes of ``plans``, least recently used first.
    private var planOrder: [PlanKey] = []
    /// At most this many plans (each with its own activation buffers) are kept; the least
    /// recently used is dropped. Batches of every size from 1 to ``microBatch`` can occur (a
    /// batch shrinks when some of its files fail to decode), and keeping a plan for each would
    /// let memory grow with the number of distinct sizes.
    /// (With the adaptive thread policy a size can have a plan per thread count and per lane.)
    static let maximumCachedPlans = 6
    /// The plans kept by this executor: ``maximumCachedPlans``, or more with many lanes, so that
    /// one run's plans (two sizes per lane) and the single-batch plans fit without rebuilding.
    var planLimit: Int { max(Self.maximumCachedPlans, 2 * min(threads, max(1, ProcessInfo.processInfo.activeProcessorCount)) + 2) }

    init(graph: Graph, threads: Int, layoutPolicy: OneDNNBackend.LayoutPolicy, microBatch: Int = OneDNNBackend.defaultMicroBatch,
         threadPolicy: OneDNNBackend.ThreadPolicy = .adaptive, fusesDepthwise: Bool = true) throws(OneDNNError) {
        self.threadPolicy = threadPolicy
        self.fusesDepthwise = fusesDepthwise
        self.graph = graph
        self.microBatch = max(1, microBatch)
        self.threads = threads
        threadChooser = ThreadCountChooser(maximum: threads, adaptive: threadPolicy == .adaptive)
        self.layoutPolicy = layoutPolicy
        activationTag = layoutPolicy == .blocked && Self.hasAVX512 ? dnnl_nChw16c : nil
        do {
            shapes = try graph.validate()
        } catch {
            throw .graph(error)
        }
        var last = [Int](repeating: -1, count: graph.nodes.count)
        var readers: [Int: [Int]] = [:]
        for (index, node) in graph.nodes.enumerated() {
            switch node.operation {
            case .batchNorm: throw .unsupportedOperation(node: node.name, operation: "stand-alone BatchNorm")
            case .relu6: throw .unsupportedOperation(node: node.name, operation: "stand-alone ReLU6")
            case .add where shapes[index].count != 3: throw .unsupportedOperation(node: node.name, operation: "add of rank-\(shapes[index].count) values")
            default: break
            }
            for i in node.inputs {
                if i >= 0 { last[i] = index }
                readers[i, default: []].append(index)
            }
        }
        for output in graph.outputs where output >= 0 { last[output] = graph.nodes.count }
        lastUse = last
        self.readers = readers

        _ = cdnnl_omp_set_num_threads(Int32(threads))
        var engine: dnnl_engine_t?
        try dnnlCheck(dnnl_engine_create(&engine, dnnl_cpu, 0), "dnnl_engine_create")
        self.engine = engine
        var stream: dnnl_stream_t?
        try dnnlCheck(dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)), "dnnl_stream_create")
        self.stream = stream
        if let stream { streams = [stream] }
        try prepareWeights()
        // The batch-1 plan for the count the first run will use (a cold start builds one plan).
        let initial = threadChooser.firstChoice
        _ = cdnnl_omp_set_num_threads(Int32(initial))
        plans[PlanKey(batch: 1, threads: initial)] = try makePlan(batch: 1)
        planOrder = [PlanKey(batch: 1, threads: initial)]
    }

    deinit {
        plans.removeAll()
        weights.removeAll()
        for stream in streams { dnnl_stream_destroy(stream) }
        if let engine { dnnl_engine_destroy(engine) }
    }

    /// Whether oneDNN runs AVX-512 kernels here (``OneDNNBackend/runsAVX512``).
    static var hasAVX512: Bool {
        let isa = dnnl_get_effective_cpu_isa().rawValue
        let avx512 = dnnl_cpu_isa_avx512_core.rawValue
        return isa & avx512 == avx512
    }

    func run(_ input: Tensor) throws -> [Tensor] {
        guard input.rank == graph.inputShape.count + 1, Array(input.shape.dropFirst()) == graph.inputShape, input.shape[0] >= 1 else {
            throw GraphError.inputShape(expected: graph.inputShape, got: input.shape)
        }
        lock.lock()
        defer { lock.unlock() }
        let batch = input.shape[0]
        let imageCount = input.count / batch
        let outputCount = graph.outputs.count
        let chunks = stride(from: 0, to: batch, by: microBatch).map { (start: $0, count: min(microBatch, batch - $0)) }
        // Several micro-batches: one lane per thread, each running whole micro-batches with
        // single-threaded primitives on its own stream (no barrier between primitives at all).
        // One micro-batch: all threads inside each primitive, or one (``ThreadCountChooser``).
        // At most one lane per core: more would only take turns, and each holds a plan's buffers.
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let lanes = threadPolicy == .adaptive && threads > 1 && chunks.count > 1 ? min(threads, cores, chunks.count) : 1
        // Fewer micro-batches than threads (many cores): each lane gets a share of the threads,
        // of at most the cores (more threads than cores would only take turns).
        let laneThreads = max(1, min(threads, cores) / lanes)
        var threadCount = threads
        if lanes == 1 {
            threadCount = chunks.count == 1 ? threadChooser.next(batch: chunks[0].count) : threads
            _ = cdnnl_omp_set_num_threads(Int32(threadCount))
        } else {
            _ = cdnnl_omp_set_num_threads(Int32(laneThreads))
        }
        // Per lane, a plan for each micro-batch size of this run (at most two: the micro-batch
        // and the remainder), all made here: plans are built on this thread only.
        var lanePlans: [[Int: Plan]] = Array(repeating: [:], count: lanes)
        for lane in 0..<lanes {
            for size in Set(chunks.map(\.count)) {
                let key = lanes == 1 ? PlanKey(batch: size, threads: threadCount) : PlanKey(batch: size, threads: laneThreads, lane: lane)
                let plan = try self.plan(key)
                guard plan.outputs.count == outputCount else { throw OneDNNError.library(call: "plan for batch \(size) has \(plan.outputs.count) outputs, the graph \(outputCount)", status: -1) }
                lanePlans[lane][size] = plan
            }
        }
        guard let anyPlan = lanePlans[0].values.first else { throw OneDNNError.library(call: "no plan for batch \(batch)", status: -1) }
        let imageShapes = anyPlan.outputShapes.map { Array($0.dropFirst()) }   // per output, one image
        let perImage = imageShapes.map { $0.reduce(1, *) }
        var results = perImage.map { [Float](repeating: 0, count: batch * $0) }
        while streams.count < lanes {
            var stream: dnnl_stream_t?
            try dnnlCheck(dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)), "dnnl_stream_create")
            guard let stream else { throw OneDNNError.library(call: "dnnl_stream_create", status: -1) }
            streams.append(stream)
        }
        let laneStreams = streams
        try input.scalars.withUnsafeBufferPointer { (source) throws(OneDNNError) in
            guard let base = source.baseAddress else { return }
            var destinations: [UnsafeMutablePointer<Float>] = []
            defer { for (o, pointer) in destinations.enumerated() { results[o] = Array(UnsafeBufferPointer(start: pointer, count: batch * perImage[o])); pointer.deallocate() } }
            destinations = perImage.map { UnsafeMutablePointer<Float>.allocate(capacity: batch * $0) }
            let work = LaneWork(executor: self, source: base, destinations: destinations, chunks: chunks, plans: lanePlans,
                                streams: laneStreams, imageCount: imageCount, perImage: perImage)
            if lanes == 1 {
                for index in chunks.indices {
                    let began = DispatchTime.now().uptimeNanoseconds
                    try work.run(index, lane: 0)
                    if chunks.count == 1 {
                        threadChooser.record(batch: chunks[0].count, threads: threadCount, seconds: Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9)
                    }
                }
            } else {
                // Each lane takes the next micro-batch not yet taken, so a lane whose core is
                // shared (decoding threads, another process) runs fewer of them instead of the
                // whole batch waiting for it.
                let queue = LaneQueue(count: chunks.count)
                DispatchQueue.concurrentPerform(iterations: lanes) { lane in
                    _ = cdnnl_omp_set_num_threads(Int32(laneThreads))
                    do throws(OneDNNError) {
                        while let index = queue.next() {
                            try work.run(index, lane: lane)
                        }
                    } catch {
                        queue.fail(error)
                    }
                }
                if let failure = queue.failure { throw failure }
            }
        }
        return (0..<outputCount).map { Tensor(shape: [batch] + imageShapes[$0], scalars: results[$0]) }
    }

    /// The thread counts chosen so far, for tests and benchmarks: per micro-batch size, the
    /// smoothed seconds per run of each thread count tried.
    var threadTimings: [Int: [Int: Double]] {
        lock.lock()
        defer { lock.unlock() }
        return threadChooser.timings
    }

    /// The primitives of a plan for `batch` images (at most ``microBatch``) at the executor's
    /// thread count.
    func summary(batch: Int) throws(OneDNNError) -> OneDNNPlanSummary {
        lock.lock()
        defer { lock.unlock() }
        _ = cdnnl_omp_set_num_threads(Int32(threads))
        let plan = try self.plan(PlanKey(batch: max(1, min(batch, microBatch)), threads: threads))
        return OneDNNPlanSummary(primitives: plan.summary, activationBytes: plan.activationBytes)
    }

    /// The plan for batch size `batch`, built on first use and cached.
    private func plan(_ key: PlanKey) throws(OneDNNError) -> Plan {
        planOrder.removeAll { $0 == key }
        planOrder.append(key)
        if let cached = plans[key] { return cached }
        while planOrder.count > planLimit {
            plans[planOrder.removeFirst()] = nil
        }
        let plan = try makePlan(batch: key.batch)
        plans[key] = plan
        return plan
    }

    fileprivate func execute(_ plan: Plan, stream: dnnl_stream_t) throws(OneDNNError) {
        var pending = false
        for step in plan.steps {
            switch step {
            case .primitive(let primitive, let arguments):
                let status = arguments.withUnsafeBufferPointer {
                    dnnl_primitive_execute(primitive, stream, Int32($0.count), $0.baseAddress)
                }
                try dnnlCheck(status, "dnnl_primitive_execute")
                pending = true
            default:
                if pending {
                    try dnnlCheck(dnnl_stream_wait(stream), "dnnl_stream_wait")
                    pending = false
                }
                try runSwiftStep(step)
            }
        }
        if pending { try dnnlCheck(dnnl_stream_wait(stream), "dnnl_stream_wait") }
    }

    private func runSwiftStep(_ step: Step) throws(OneDNNError) {
        switch step {
        case .primitive:
            break
        case .globalPool(let source, let destination, let batch, let positions, let channels, let maximum):
            for n in 0..<batch {
                let out = destination + n * channels
                let base = source + n * positions * channels
                out.update(from: base, count: channels)
                for p in 1..<max(positions, 1) {
                    let row = base + p * channels
                    if maximum {
                        for c in 0..<channels { out[c] = max(out[c], row[c]) }
                    } else {
                        for c in 0..<channels { out[c] += row[c] }
                    }
                }
                if !maximum {
                    let scale = 1 / Float(positions)
                    for c in 0..<channels { out[c] *= scale }
                }
            }
        case .dense(let node, let source, let destination, let batch):
            guard case .dense(let p) = graph.nodes[node].operation else { return }
            let inputs = p.kernel.shape[0], outputs = p.kernel.shape[1]
            var failure: dnnl_status_t?
            p.kernel.scalars.withUnsafeBufferPointer { kernelBuffer in
                p.bias.withUnsafeBufferPointer { biasBuffer in
                    guard let kernel = kernelBuffer.baseAddress, let bias = biasBuffer.baseAddress else { return }
                    // out[batch, outputs] = bias + x[batch, inputs] * kernel[inputs, outputs]
                    // (Keras Dense kernel layout).
                    for n in 0..<batch { (destination + n * outputs).update(from: bias, count: outputs) }
                    failure = DenseSlices.run(source: source, kernel: kernel, destination: destination, batch: batch, inputs: inputs,
                                              outputs: outputs, threads: Int(cdnnl_omp_get_max_threads()))
                }
            }
            if let failure { try dnnlCheck(failure, "dnnl_sgemm(\(graph.nodes[node].name), \(inputs)x\(outputs))") }
        case .softmax(let source, let destination, let batch, let channels):
            for n in 0..<batch {
                let x = source + n * channels, y = destination + n * channels
                var m = -Float.infinity
                for c in 0..<channels { m = max(m, x[c]) }
                var sum: Float = 0
                for c in 0..<channels {
                    y[c] = expf(x[c] - m)
                    sum += y[c]
                }
                for c in 0..<channels { y[c] /= sum }
            }
        case .relu(let source, let destination, let count):
            for i in 0..<count { destination[i] = max(source[i], 0) }
        }
    }

    // MARK: - Weights

    /// Copies every convolution's bias into a oneDNN memory. Kernels are not copied here: each
    /// is reordered straight from the graph's tensor into the format a primitive asks for
    /// (``weightsMemory(node:md:)``), so no plain copy of the weights stays in memory.
    private func prepareWeights() throws(OneDNNError) {
        for (index, node) in graph.nodes.enumerated() {
            guard let p = kernelGeometry(node: index)?.parameters else { continue }
            let w = ConvolutionWeights()
            var biasMD = try memoryDescriptor([p.bias.count], dnnl_a)
            let biasBuffer = allocateBytes(p.bias.count * 4)
            w.buffers.append(biasBuffer)
            p.bias.withUnsafeBytes { if let base = $0.baseAddress { biasBuffer.copyMemory(from: base, byteCount: $0.count) } }
            try dnnlCheck(dnnl_memory_create(&w.biasMemory, &biasMD, engine, biasBuffer), "dnnl_memory_create(\(node.name) bias)")
            weights[index] = w
        }
    }

    /// A convolution node's parameters and its kernel's dimensions in oneDNN's order: a Keras
    /// HWIO kernel is `[O, I, H, W]`, stored as `hwio`; a Keras depthwise kernel `[H, W, C, 1]`
    /// is a grouped `[G = C, 1, 1, H, W]`, stored as `hwigo`.
    struct KernelGeometry {
        let parameters: ConvolutionParameters
        let depthwise: Bool
        let dimensions: [Int]
        /// The format of the kernel as the graph (Keras) stores it.
        var kerasFormat: dnnl_format_tag_t { depthwise ? dnnl_hwigo : dnnl_hwio }
        /// The plain oneDNN format (``OneDNNBackend/LayoutPolicy/plain``).
        var plainFormat: dnnl_format_tag_t { depthwise ? dnnl_goihw : dnnl_oihw }
    }

    /// The kernel geometry of node `node`; nil when it is not a convolution.
    func kernelGeometry(node: Int) -> KernelGeometry? {
        switch graph.nodes[node].operation {
        case .conv2D(let p):
            let k = p.kernel.shape
            return KernelGeometry(parameters: p, depthwise: false, dimensions: [k[3], k[2], k[0], k[1]])
        case .depthwiseConv2D(let p):
            let k = p.kernel.shape
            return KernelGeometry(parameters: p, depthwise: true, dimensions: [k[2], 1, 1, k[0], k[1]])
        default:
            return nil
        }
    }

    /// The node's kernel in format `md`, reordered once from the graph's tensor and cached.
    private func weightsMemory(node: Int, md: dnnl_memory_desc_t) throws(OneDNNError) -> dnnl_memory_t {
        guard let w = weights[node], let geometry = kernelGeometry(node: node) else {
            throw .library(call: "weights of node \(node)", status: -1)
        }
        let p = geometry.parameters
        let userMD = try memoryDescriptor(geometry.dimensions, geometry.kerasFormat)
        if let found = w.reordered.first(where: { sameDescriptor($0.md, md) }) { return found.memory }
        let buffer = allocateBytes(byteSize(md))
        w.buffers.append(buffer)
        var target = md
        var memory: dnnl_memory_t?
        try dnnlCheck(dnnl_memory_create(&memory, &target, engine, buffer), "dnnl_memory_create(weights)")
        guard let memory else { throw .library(call: "dnnl_memory_create(weights)", status: -1) }
        w.reordered.append((md, memory))
        // A oneDNN memory over the tensor's own storage, only for the (synchronous) reorder.
        var failure: OneDNNError?
        p.kernel.scalars.withUnsafeBytes { raw in
            do throws(OneDNNError) {
                var sourceMD = userMD
                var user: dnnl_memory_t?
                try dnnlCheck(dnnl_memory_create(&user, &sourceMD, engine, UnsafeMutableRawPointer(mutating: raw.baseAddress)),
                              "dnnl_memory_create(\(graph.nodes[node].name) kernel)")
                defer { dnnl_memory_destroy(user) }
                guard let user else { throw .library(call: "dnnl_memory_create(kernel)", status: -1) }
                try reorderNow(from: user, fromMD: userMD, to: memory, toMD: md, node: graph.nodes[node].name)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return memory
    }

    private func reorderNow(from: dnnl_memory_t, fromMD: dnnl_memory_desc_t, to: dnnl_memory_t, toMD: dnnl_memory_desc_t, node: String) throws(OneDNNError) {
        // One thread: a few thousand to a million floats per kernel, and on a loaded machine
        // each multi-threaded reorder would wait at its barrier for a descheduled worker
        // (52 kernels: a third of a second at load 6 on 2 cores).
        let previousThreads = cdnnl_omp_get_max_threads()
        _ = cdnnl_omp_set_num_threads(1)
        defer { _ = cdnnl_omp_set_num_threads(previousThreads) }
        var a = fromMD, b = toMD
        var pd: dnnl_primitive_desc_t?
        try dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, &a, engine, &b, engine, nil), "dnnl_reorder_primitive_desc_create(\(node) weights)")
        defer { dnnl_primitive_desc_destroy(pd) }
        var primitive: dnnl_primitive_t?
        try dnnlCheck(dnnl_primitive_create(&primitive, pd), "dnnl_primitive_create(reorder)")
        defer { dnnl_primitive_destroy(primitive) }
        let arguments = [dnnl_exec_arg_t(arg: CDNNL_ARG_SRC, memory: from), dnnl_exec_arg_t(arg: CDNNL_ARG_DST, memory: to)]
        try dnnlCheck(dnnl_primitive_execute(primitive, stream, 2, arguments), "dnnl_primitive_execute(reorder)")
        try dnnlCheck(dnnl_stream_wait(stream), "dnnl_stream_wait")
    }

    // MARK: - Planning

    /// Builds every primitive for batch size `batch` and plans the activation buffers.
    private func makePlan(batch: Int) throws(OneDNNError) -> Plan {
        var builder = PlanBuilder(executor: self, batch: batch)
        return try builder.build()
    }

    /// Creates a convolution primitive descriptor, rejecting reference implementations.
    func convolutionDescriptor(
        node: Int, source: dnnl_memory_desc_t, destination: dnnl_memory_desc_t, batch: Int, sum: Bool, depthwise: Int? = nil
    ) throws(OneDNNError) -> dnnl_primitive_desc_t {
        let name = graph.nodes[node].name
        guard let geometry = kernelGeometry(node: node) else { throw .unsupportedOperation(node: name, operation: "not a convolution") }
        let p = geometry.parameters
        var weightsMD = try memoryDescriptor(geometry.dimensions, layoutPolicy == .plain ? geometry.plainFormat : dnnl_format_tag_any)
        var biasMD = try memoryDescriptor([p.bias.count], dnnl_a)
        var src = source, dst = destination
        var desc = dnnl_convolution_desc_t()
        let strides: [Int64] = [Int64(p.stride), Int64(p.stride)]
        let left: [Int64] = [Int64(p.padding.top), Int64(p.padding.left)]
        let right: [Int64] = [Int64(p.padding.bottom), Int64(p.padding.right)]
        try dnnlCheck(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct,
                                                         &src, &weightsMD, &biasMD, &dst, strides, left, right),
                      "dnnl_convolution_forward_desc_init(\(name))")
        var attr: dnnl_primitive_attr_t?
        try dnnlCheck(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create")
        defer { dnnl_primitive_attr_destroy(attr) }
        try dnnlCheck(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "dnnl_primitive_attr_set_scratchpad_mode")
        var postOps: dnnl_post_ops_t?
        try dnnlCheck(dnnl_post_ops_create(&postOps), "dnnl_post_ops_create")
        defer { dnnl_post_ops_destroy(postOps) }
        if sum { try dnnlCheck(dnnl_post_ops_append_sum(postOps, 1), "dnnl_post_ops_append_sum") }
        if p.activation == .relu6 {
            try dnnlCheck(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_clip, 0, 6), "dnnl_post_ops_append_eltwise(clip)")
        }
        if let depthwise, let dw = kernelGeometry(node: depthwise)?.parameters {
            // The depthwise convolution reading this 1x1 one's output, fused (oneDNN computes it
            // row by row from the 1x1 rows it needs, which never all exist in memory), then its
            // own activation.
            var one: Float = 1
            try dnnlCheck(dnnl_post_ops_append_dw(postOps, dnnl_f32, dnnl_f32, dnnl_f32, dnnl_dim_t(dw.kernel.shape[0]), dnnl_dim_t(dw.stride),
                                                  dnnl_dim_t(dw.padding.top), 1, 0, &one), "dnnl_post_ops_append_dw")
            if dw.activation == .relu6 {
                try dnnlCheck(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_clip, 0, 6), "dnnl_post_ops_append_eltwise(clip)")
            }
        }
        try dnnlCheck(dnnl_primitive_attr_set_post_ops(attr, postOps), "dnnl_primitive_attr_set_post_ops")
        var pd: dnnl_primitive_desc_t?
        try dnnlCheck(dnnl_primitive_desc_create(&pd, &desc, attr, engine, nil), "dnnl_primitive_desc_create(\(name), batch \(batch))")
        guard let pd else { throw .library(call: "dnnl_primitive_desc_create(\(name))", status: -1) }
        let implementation = implementationName(pd)
        if isReferenceImplementation(implementation) {
            dnnl_primitive_desc_destroy(pd)
            throw .referenceImplementation(node: name, implementation: implementation)
        }
        return pd
    }

    /// A reorder primitive descriptor from `from` to `to`, rejecting reference implementations.
    func reorderDescriptor(from: dnnl_memory_desc_t, to: dnnl_memory_desc_t, node: String) throws(OneDNNError) -> dnnl_primitive_desc_t {
        var a = from, b = to
        var attr: dnnl_primitive_attr_t?
        try dnnlCheck(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create")
        defer { dnnl_primitive_attr_destroy(attr) }
        try dnnlCheck(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "dnnl_primitive_attr_set_scratchpad_mode")
        var pd: dnnl_primitive_desc_t?
        try dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, &a, engine, &b, engine, attr), "dnnl_reorder_primitive_desc_create(\(node))")
        guard let pd else { throw .library(call: "dnnl_reorder_primitive_desc_create(\(node))", status: -1) }
        let implementation = implementationName(pd)
        if isReferenceImplementation(implementation) {
            dnnl_primitive_desc_destroy(pd)
            throw .referenceImplementation(node: node + " (reorder)", implementation: implementation)
        }
        return pd
    }

    /// A binary add primitive descriptor, rejecting reference implementations.
    func addDescriptor(_ a: dnnl_memory_desc_t, _ b: dnnl_memory_desc_t, node: String) throws(OneDNNError) -> dnnl_primitive_desc_t {
        var a = a, b = b, c = a
        var desc = dnnl_binary_desc_t()
        try dnnlCheck(dnnl_binary_desc_init(&desc, dnnl_binary_add, &a, &b, &c), "dnnl_binary_desc_init(\(node))")
        var attr: dnnl_primitive_attr_t?
        try dnnlCheck(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create")
        defer { dnnl_primitive_attr_destroy(attr) }
        try dnnlCheck(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "dnnl_primitive_attr_set_scratchpad_mode")
        var pd: dnnl_primitive_desc_t?
        try dnnlCheck(dnnl_primitive_desc_create(&pd, &desc, attr, engine, nil), "dnnl_primitive_desc_create(\(node))")
        guard let pd else { throw .library(call: "dnnl_primitive_desc_create(\(node))", status: -1) }
        let implementation = implementationName(pd)
        if isReferenceImplementation(implementation) {
            dnnl_primitive_desc_destroy(pd)
            throw .referenceImplementation(node: node, implementation: implementation)
        }
        return pd
    }

    func weightsFor(node: Int, md: dnnl_memory_desc_t) throws(OneDNNError) -> dnnl_memory_t { try weightsMemory(node: node, md: md) }
    func biasFor(node: Int) -> dnnl_memory_t? { weights[node]?.biasMemory }
    var engineHandle: dnnl_engine_t? { engine }
}

/// The dense layer `out[N, O] += x[N, I] * kernel[I, O]` (row-major, the Keras Dense kernel
/// layout) as fixed slices of ``columns`` output columns, each one single-threaded oneDNN SGEMM,
/// spread over the OpenMP threads of the run (``cdnnl_parallel_slices``). At batch 1 the layer
/// is a matrix-vector product over a 1280x1000 kernel (5 MB) that ran on the calling thread
/// while the other threads waited, about 7% of an inference at 2 threads. The slices are the
/// same whatever the thread count, and a multi-threaded SGEMM would instead split its sums
/// differently for each count: so the logits do not depend on the count the adaptive policy
/// picked (tested bit for bit, as for the convolutions).
package struct DenseSlices {
    /// Output columns per slice: a multiple of every SIMD width, and few enough slices that
    /// each SGEMM call's fixed cost (about a microsecond) stays small.
    package static let columns = 256

    var source: UnsafePointer<Float>
    var kernel: UnsafePointer<Float>
    var destination: UnsafeMutablePointer<Float>
    var batch: Int
    var inputs: Int
    var outputs: Int
    /// One status per slice, written by the thread that ran it.
    var statuses: UnsafeMutablePointer<dnnl_status_t>

    /// Runs all slices of `destination[batch, outputs] += source[batch, inputs] * kernel[inputs, outputs]`
    /// (row-major) on `threads` OpenMP threads; returns the first failing SGEMM status, or nil.
    package static func run(source: UnsafePointer<Float>, kernel: UnsafePointer<Float>, destination: UnsafeMutablePointer<Float>,
                    batch: Int, inputs: Int, outputs: Int, threads: Int) -> dnnl_status_t? {
        let slices = (outputs + columns - 1) / columns
        guard slices > 0, batch > 0, inputs > 0 else { return nil }
        // On the stack for any usual layer (four slices for 1000 classes): no heap allocation per
        // inference.
        return withUnsafeTemporaryAllocation(of: dnnl_status_t.self, capacity: slices) { buffer in
            guard let statuses = buffer.baseAddress else { return nil }
            statuses.initialize(repeating: dnnl_success, count: slices)
            var work = DenseSlices(source: source, kernel: kernel, destination: destination, batch: batch, inputs: inputs, outputs: outputs,
                                   statuses: statuses)
            withUnsafeMutablePointer(to: &work) { context in
                _ = cdnnl_parallel_slices(Int32(slices), Int32(max(1, threads)), { context, slice in
                    guard let work = context?.assumingMemoryBound(to: DenseSlices.self).pointee else { return }
                    work.statuses[Int(slice)] = work.runSlice(Int(slice))
                }, context)
            }
            return buffer.first { $0 != dnnl_success }
        }
    }

    /// Slice `slice`: output columns `slice * columns ..< min(outputs, (slice + 1) * columns)`,
    /// computed on the calling thread alone.
    func runSlice(_ slice: Int) -> dnnl_status_t {
        let first = slice * Self.columns
        let width = min(Self.columns, outputs - first)
        // One thread inside this slice, whatever the thread's OpenMP count (the region's
        // master thread keeps the run's count for the primitives after the layer).
        let previousThreads = cdnnl_omp_get_max_threads()
        if previousThreads != 1 { _ = cdnnl_omp_set_num_threads(1) }
        defer { if previousThreads != 1 { _ = cdnnl_omp_set_num_threads(previousThreads) } }
        return dnnl_sgemm(CChar(UInt8(ascii: "N")), CChar(UInt8(ascii: "N")), dnnl_dim_t(batch), dnnl_dim_t(width), dnnl_dim_t(inputs),
                          1, source, dnnl_dim_t(inputs), kernel + first, dnnl_dim_t(outputs), 1, destination + first, dnnl_dim_t(outputs))
    }
}

/// One run's micro-batches, shared by its lanes: each micro-batch is run by the lane that took
/// it, with that lane's plan (buffers) for its size and that lane's stream, and writes only its
/// rows of the outputs.
private struct LaneWork: @unchecked Sendable {
    let executor: OneDNNExecutor
    let source: UnsafePointer<Float>
    let destinations: [UnsafeMutablePointer<Float>]
    let chunks: [(start: Int, count: Int)]
    /// Per lane, its plan for each micro-batch size of the run.
    let plans: [[Int: Plan]]
    let streams: [dnnl_stream_t]
    let imageCount: Int
    let perImage: [Int]

    /// Runs micro-batch `index` on lane `lane`: input in, network, outputs out.
    func run(_ index: Int, lane: Int) throws(OneDNNError) {
        let (start, n) = chunks[index]
        guard let plan = plans[lane][n] else { throw .library(call: "no plan for batch \(n) on lane \(lane)", status: -1) }
        plan.input.update(from: source + start * imageCount, count: min(plan.inputCount, n * imageCount))
        try executor.execute(plan, stream: streams[lane])
        for o in destinations.indices {
            (destinations[o] + start * perImage[o]).update(from: plan.outputs[o], count: n * perImage[o])
        }
    }
}

/// The micro-batches of one run, handed out in order to whichever lane asks next, and the first
/// error of any lane (after which no more are handed out).
private final class LaneQueue: @unchecked Sendable {
    private let lock = NSLock()
    private let count: Int
    private var taken = 0
    private var error: OneDNNError?

    init(count: Int) { self.count = count }

    /// The next micro-batch index, or nil when all are taken or a lane failed.
    func next() -> Int? {
        lock.withLock {
            guard error == nil, taken < count else { return nil }
            taken += 1
            return taken - 1
        }
    }

    func fail(_ error: OneDNNError) { lock.withLock { if self.error == nil { self.error = error } } }
    var failure: OneDNNError? { lock.withLock { error } }
}

/// Picks the OpenMP thread count of each run, between 1 and a maximum, by measuring: with GNU
/// OpenMP's default bounded spin-wait, all cores are fastest on a quiet machine (the worker
/// threads are awake between the 55 primitives of an inference), but when another process keeps
/// a core busy each primitive waits for the worker that shares it, and one thread is faster
/// (measured on 2 cores: batch 1 at 2 threads 5.5 ms quiet, 14-15 ms loaded; 1 thread 9.5-10 ms in
/// both). So each micro-batch size keeps a smoothed time per run for the maximum and for one
/// thread; the faster is used, and the other is tried again every ``probeInterval`` runs (and
/// again at once after a try that won, until its recent times show it), so the choice follows
/// the machine's load as it changes. Results do not depend on the thread count
/// (oneDNN's convolutions split output elements, not sums, across threads, and the dense layer
/// is cut into the same column slices at every count, ``DenseSlices``; tested bit for bit at 1
/// and 2 threads, checked by hand up to 8; with 9 or more, oneDNN's AVX-512 jit kernels split
/// some sums: differences up to about 1e-5).
package struct ThreadCountChooser {
    let maximum: Int
    let adaptive: Bool
    /// Runs between two tries of the count not in use, at first; it doubles (up to
    /// ``longestProbeInterval``) each time the other count loses by more than 20%, and falls back
    /// when it wins, so a heavily loaded machine does not pay for hopeless tries.
    package static let probeInterval = 16
    package static let longestProbeInterval = 256
    /// How many recent times per count are kept; their median is the count's time (one slow run,
    /// a page fault or a preemption, does not flip the choice).
    static let window = 5
    /// Per micro-batch size, per thread count, the recent seconds per run (newest last).
    private var recent: [Int: [Int: [Double]]] = [:]
    private var runs: [Int: Int] = [:]
    private var intervals: [Int: Int] = [:]
    private var nextProbe: [Int: Int] = [:]
    /// The count tried first: one when any other thread is runnable (a first run at all cores
    /// would wait at each primitive for a worker that shares its core with that thread: with one
    /// busy process on a 2-core machine, `classify` of one image took 0.315 s against 0.276 s
    /// starting at one thread, median of 20 interleaved runs, 2026-12-02), else the maximum.
    package let firstChoice: Int

    /// `runnableThreads`: threads runnable on the machine, this one included (default: read now).
    package init(maximum: Int, adaptive: Bool, runnableThreads: Int? = ThreadCountChooser.runnableThreads()) {
        self.maximum = max(1, maximum)
        self.adaptive = adaptive
        let busy = (runnableThreads ?? 1) - 1  // this thread is one of them
        firstChoice = adaptive && busy >= 1 ? 1 : max(1, maximum)
    }

    /// Threads runnable on the machine right now (the fourth field of `/proc/loadavg`), or nil.
    package static func runnableThreads() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 4, let running = fields[3].split(separator: "/").first else { return nil }
        return Int(running)
    }

    /// Per micro-batch size, per thread count, the median of the recent seconds per run.
    var timings: [Int: [Int: Double]] {
        recent.mapValues { $0.mapValues(Self.median) }
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? .infinity : sorted[sorted.count / 2]
    }

    private func best(batch: Int) -> Int {
        let times = recent[batch, default: [:]]
        return Self.median(times[maximum] ?? []) <= Self.median(times[1] ?? []) ? maximum : 1
    }

    /// The thread count for the next run of a micro-batch of `batch` images.
    package mutating func next(batch: Int) -> Int {
        guard adaptive, maximum > 1 else { return maximum }
        let count = runs[batch, default: 0]
        runs[batch] = count + 1
        // Each count three times, the first choice first (the first run of a plan only warms
        // it up and is not recorded).
        let other = firstChoice == 1 ? maximum : 1
        if count < 6 { return count < 3 ? firstChoice : other }
        let best = best(batch: batch)
        if count >= nextProbe[batch, default: 6 + Self.probeInterval] {
            return best == 1 ? maximum : 1
        }
        return best
    }

    /// Records how long a run took.
    package mutating func record(batch: Int, threads: Int, seconds: Double) {
        guard adaptive, maximum > 1 else { return }
        let count = runs[batch, default: 0]
        if count == 1 || count == 4 { return }
        let probed = count > 6 && count - 1 >= nextProbe[batch, default: 6 + Self.probeInterval]
        var values = recent[batch, default: [:]][threads, default: []]
        values.append(seconds)
        if values.count > Self.window { values.removeFirst(values.count - Self.window) }
        recent[batch, default: [:]][threads] = values
        if probed {
            let held = Self.median(recent[batch]?[threads == 1 ? maximum : 1] ?? [])
            if seconds < held && best(batch: batch) != threads {
                // The probe won but its count's window still holds older, slower times (from
                // when the machine was loaded, say): probe again at once, so the window turns
                // within a few runs instead of one probe per interval.
                intervals[batch] = Self.probeInterval
                nextProbe[batch] = count
            } else {
                var interval = intervals[batch, default: Self.probeInterval]
                interval = seconds > 1.2 * held ? min(Self.longestProbeInterval, interval * 2) : Self.probeInterval
                intervals[batch] = interval
                nextProbe[batch] = count + interval
            }
        }
    }
}
