import CDNNL
import MobileNetKernels

/// Builds a ``Plan`` for one batch size: one primitive per convolution (and per unfused add),
/// reorders only where two neighbouring primitives chose different formats, Swift steps for the
/// tail, and a buffer plan in which a buffer is reused as soon as the value in it is dead.
struct PlanBuilder {
    /// An activation held in oneDNN memory; `buffer` is its planned buffer (`nil`: external,
    /// the plan's input).
    struct Value {
        var md: dnnl_memory_desc_t
        var memory: dnnl_memory_t
        var buffer: Int?
    }

    let executor: OneDNNExecutor
    let batch: Int
    let plan: Plan
    var graph: Graph { executor.graph }

    private var values: [Int: Value] = [:]
    private var conversions: [Int: [Value]] = [:]
    private var plain: [Int: UnsafeMutablePointer<Float>] = [:]
    private var capacities: [Int] = []
    private var freeBuffers: [Int] = []
    private var owner: [Int: Int] = [:]
    private var bindings: [(memory: dnnl_memory_t, buffer: Int)] = []
    private var scratchpads: [dnnl_memory_t] = []
    private var scratchpadBytes = 0
    /// Linear convolutions whose result is added to a dead skip value in place: conv node to
    /// (add node, skip value).
    private var fused: [Int: (add: Int, skip: Int)] = [:]
    /// 1x1 convolutions whose only reader is a 3x3 depthwise one, computed by one fused
    /// primitive (``OneDNNExecutor/fusesDepthwise``): 1x1 node to depthwise node.
    private var depthwiseFusion: [Int: Int] = [:]

    init(executor: OneDNNExecutor, batch: Int) {
        self.executor = executor
        self.batch = batch
        self.plan = Plan(batch: batch, inputCount: batch * executor.graph.inputShape.reduce(1, *))
    }

    private func dims(of shape: [Int]) -> [Int] {
        // [H, W, C] to oneDNN's logical [N, C, H, W].
        [batch, shape[2], shape[0], shape[1]]
    }

    private func shape(of key: Int) -> [Int] { key == Graph.inputIndex ? graph.inputShape : executor.shapes[key] }

    mutating func build() throws(OneDNNError) -> Plan {
        guard !graph.nodes.isEmpty else {
            plan.outputs = graph.outputs.map { _ in plan.input }
            plan.outputShapes = graph.outputs.map { _ in [batch] + graph.inputShape }
            return plan
        }
        if graph.inputShape.count == 3 {
            var md = try memoryDescriptor(dims(of: graph.inputShape), dnnl_nhwc)
            var memory: dnnl_memory_t?
            try dnnlCheck(dnnl_memory_create(&memory, &md, executor.engineHandle, plan.input), "dnnl_memory_create(input)")
            guard let memory else { throw .library(call: "dnnl_memory_create(input)", status: -1) }
            plan.memories.append(memory)
            values[Graph.inputIndex] = Value(md: md, memory: memory, buffer: nil)
        }
        plain[Graph.inputIndex] = plan.input
        findFusableAdds()
        if executor.fusesDepthwise { findFusableDepthwise() }

        let outputSet = Set(graph.outputs)
        for index in graph.nodes.indices {
            try buildNode(index)
            // An output is copied out to plain memory as soon as it is computed, before its
            // buffer can be reused.
            if outputSet.contains(index) { _ = try plainValue(index) }
            release(after: index)
        }
        for output in graph.outputs {
            guard let pointer = plain[output] else { throw .library(call: "output \(output) was not computed", status: -1) }
            plan.outputs.append(pointer)
            plan.outputShapes.append([batch] + shape(of: output))
        }

        for capacity in capacities { plan.rawBuffers.append(allocateBytes(capacity)) }
        plan.activationBytes = capacities.reduce(0, +)
        for binding in bindings {
            try dnnlCheck(dnnl_memory_set_data_handle(binding.memory, plan.rawBuffers[binding.buffer]), "dnnl_memory_set_data_handle")
        }
        if !scratchpads.isEmpty {
            let scratchpad = allocateBytes(scratchpadBytes)
            plan.rawBuffers.append(scratchpad)
            for memory in scratchpads {
                try dnnlCheck(dnnl_memory_set_data_handle(memory, scratchpad), "dnnl_memory_set_data_handle(scratchpad)")
            }
        }
        return plan
    }

    /// Adds the steps of node `index` (nothing for an add done in place by its convolution).
    private mutating func buildNode(_ index: Int) throws(OneDNNError) {
        let node = graph.nodes[index]
        if values[index] != nil || plain[index] != nil { return }
        switch node.operation {
        case .conv2D, .depthwiseConv2D:
            try buildConvolution(index)
        case .add:
            try buildAdd(index)
        case .globalAveragePool, .globalMaxPool:
            let input = node.inputs[0]
            let s = shape(of: input)
            let source = try plainValue(input)
            let destination = allocatePlain(batch * s[2])
            var maximum = false
            if case .globalMaxPool = node.operation { maximum = true }
            plan.steps.append(.globalPool(source: source, destination: destination, batch: batch, positions: s[0] * s[1], channels: s[2], maximum: maximum))
            plain[index] = destination
        case .dense(let p):
            let source = try plainValue(node.inputs[0])
            let destination = allocatePlain(batch * p.kernel.shape[1])
            plan.steps.append(.dense(node: index, source: source, destination: destination, batch: batch))
            plain[index] = destination
        case .softmax:
            let s = executor.shapes[index]
            let channels = s.last ?? 1
            let count = s.reduce(1, *)
            let source = try plainValue(node.inputs[0])
            let destination = allocatePlain(batch * count)
            plan.steps.append(.softmax(source: source, destination: destination, batch: batch * count / max(channels, 1), channels: channels))
            plain[index] = destination
        case .relu:
            let count = executor.shapes[index].reduce(1, *)
            let source = try plainValue(node.inputs[0])
            let destination = allocatePlain(batch * count)
            plan.steps.append(.relu(source: source, destination: destination, count: batch * count))
            plain[index] = destination
        case .batchNorm, .relu6:
            throw .unsupportedOperation(node: node.name, operation: "\(node.operation)")
        }
    }

    /// Residual adds whose one input is a linear convolution read only by the add, and whose
    /// other input dies at the add: the convolution accumulates into the skip value's buffer.
    private mutating func findFusableAdds() {
        var skips: Set<Int> = []
        for (index, node) in graph.nodes.enumerated() {
            guard case .add = node.operation, node.inputs.count == 2 else { continue }
            for (conv, skip) in [(node.inputs[1], node.inputs[0]), (node.inputs[0], node.inputs[1])] {
                // A convolution whose own value is a graph output keeps its own buffer.
                guard conv >= 0, skip >= 0, conv != skip, skip < conv, fused[conv] == nil, !skips.contains(skip), !graph.outputs.contains(conv),
                      executor.readers[conv] == [index], executor.lastUse[skip] == index else { continue }
                let linear: Bool
                switch graph.nodes[conv].operation {
                case .conv2D(let p), .depthwiseConv2D(let p): linear = p.activation == .none
                default: linear = false
                }
                guard linear else { continue }
                fused[conv] = (index, skip)
                skips.insert(skip)
                break
            }
        }
    }

    /// Pairs of a 1x1 convolution (stride 1, no padding) and the 3x3 depthwise convolution that is
    /// its only reader, with stride 1 or 2 and the padding oneDNN's fused depthwise post-op
    /// implies: `top = left` (0 or 1) and an output of `ceil(input / stride)` positions, which
    /// covers Keras's `same` padding at stride 1 and MobileNetV2's `ZeroPadding2D(((0, 1), (0, 1)))`
    /// + `valid` at stride 2 (an inverted residual block's expansion and depthwise layers, paper
    /// section 3.3). The 1x1 output must not be a graph output (it is never stored).
    private mutating func findFusableDepthwise() {
        for (index, node) in graph.nodes.enumerated() {
            guard case .conv2D(let p) = node.operation, p.kernel.shape[0] == 1, p.kernel.shape[1] == 1, p.stride == 1, p.padding == .valid,
                  !graph.outputs.contains(index), let readers = executor.readers[index], readers.count == 1, let dw = readers.first,
                  case .depthwiseConv2D(let d) = graph.nodes[dw].operation, graph.nodes[dw].inputs == [index],
                  d.kernel.shape[0] == 3, d.kernel.shape[1] == 3, d.stride == 1 || d.stride == 2,
                  d.padding.top == d.padding.left, d.padding.top <= 1 else { continue }
            let input = executor.shapes[index], output = executor.shapes[dw]
            let expected = [(input[0] + d.stride - 1) / d.stride, (input[1] + d.stride - 1) / d.stride]
            let bottom = (expected[0] - 1) * d.stride + 3 - input[0] - d.padding.top
            let right = (expected[1] - 1) * d.stride + 3 - input[1] - d.padding.left
            guard Array(output.prefix(2)) == expected, d.padding.bottom == bottom, d.padding.right == right else { continue }
            depthwiseFusion[index] = dw
        }
    }

    /// The 1x1 convolution `index` with its depthwise reader `dw` fused into one primitive;
    /// false (nothing added) when oneDNN has no fast kernel for the pair, which then runs as two.
    private mutating func buildFusedDepthwise(_ index: Int, dw: Int, inputValue: Value, anySource: dnnl_memory_desc_t,
                                              preferredSource: dnnl_memory_desc_t?, destination: dnnl_memory_desc_t) throws(OneDNNError) -> Bool {
        guard let pd = try? makeConvolution(index, inputValue: inputValue, anySource: anySource, preferredSource: preferredSource,
                                            destination: destination, sum: false, depthwise: dw) else { return false }
        defer { dnnl_primitive_desc_destroy(pd) }
        let dstMD = queryDescriptor(pd, dnnl_query_dst_md)
        let want = dims(of: executor.shapes[dw]).map(Int64.init)
        guard dstMD.ndims == 4, withUnsafeBytes(of: dstMD.dims, { Array($0.bindMemory(to: Int64.self).prefix(4)) }) == want else { return false }
        let dwWeightsMD = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, CDNNL_ARG_DW_WEIGHTS)?.pointee ?? dnnl_memory_desc_t()
        let sourceMemory = try dnnlValue(graph.nodes[index].inputs[0], as: queryDescriptor(pd, dnnl_query_src_md), node: graph.nodes[index].name)
        let weightsMemory = try executor.weightsFor(node: index, md: queryDescriptor(pd, dnnl_query_weights_md))
        let dwWeightsMemory = try executor.weightsFor(node: dw, md: dwWeightsMD)
        let destinationMemory = try newValue(dw, md: dstMD)
        var arguments = [
            dnnl_exec_arg_t(arg: CDNNL_ARG_SRC, memory: sourceMemory),
            dnnl_exec_arg_t(arg: CDNNL_ARG_WEIGHTS, memory: weightsMemory),
            dnnl_exec_arg_t(arg: CDNNL_ARG_BIAS, memory: executor.biasFor(node: index)),
            dnnl_exec_arg_t(arg: CDNNL_ARG_DW_WEIGHTS, memory: dwWeightsMemory),
            dnnl_exec_arg_t(arg: CDNNL_ARG_DW_BIAS, memory: executor.biasFor(node: dw)),
            dnnl_exec_arg_t(arg: CDNNL_ARG_DST, memory: destinationMemory),
        ]
        try appendPrimitive(pd, arguments: &arguments, node: graph.nodes[index].name + "+" + graph.nodes[dw].name)
        return true
    }

    private mutating func buildConvolution(_ index: Int) throws(OneDNNError) {
        let node = graph.nodes[index]
        let input = node.inputs[0]
        guard let inputValue = values[input] else {
            throw .unsupportedOperation(node: node.name, operation: "convolution of a value computed outside oneDNN")
        }
        let plainLayout = executor.layoutPolicy == .plain
        let anySource = try memoryDescriptor(dims(of: shape(of: input)), plainLayout ? dnnl_nhwc : dnnl_format_tag_any)
        let anyDestination = try memoryDescriptor(dims(of: executor.shapes[index]), plainLayout ? dnnl_nhwc : dnnl_format_tag_any)
        // The preferred activation format (blocked policy): for the output, and for the input
        // unless it is the network's own NHWC input (the first convolution reads it as it is).
        var preferredSource: dnnl_memory_desc_t?
        var preferredDestination: dnnl_memory_desc_t?
        if let tag = executor.activationTag {
            preferredDestination = try memoryDescriptor(dims(of: executor.shapes[index]), tag)
            if input != Graph.inputIndex { preferredSource = try memoryDescriptor(dims(of: shape(of: input)), tag) }
        }

        if let dw = depthwiseFusion[index] {
            if try buildFusedDepthwise(index, dw: dw, inputValue: inputValue, anySource: anySource, preferredSource: preferredSource,
                                       destination: preferredDestination ?? anyDestination) { return }
        }
        var pd: dnnl_primitive_desc_t?
        var fusion = fused[index]
        if let f = fusion, let skip = values[f.skip] {
            pd = try? makeConvolution(index, inputValue: inputValue, anySource: anySource, preferredSource: preferredSource, destination: skip.md, sum: true)
        }
        if pd == nil {
            fusion = nil
            fused[index] = nil
            if let preferredDestination {
                pd = try? makeConvolution(index, inputValue: inputValue, anySource: anySource, preferredSource: preferredSource,
                                          destination: preferredDestination, sum: false)
            }
        }
        if pd == nil {
            pd = try makeConvolution(index, inputValue: inputValue, anySource: anySource, preferredSource: nil, destination: anyDestination, sum: false)
        }
        guard let pd else { throw .library(call: "convolution \(node.name)", status: -1) }
        defer { dnnl_primitive_desc_destroy(pd) }

        let sourceMemory = try dnnlValue(input, as: queryDescriptor(pd, dnnl_query_src_md), node: node.name)
        let weightsMemory = try executor.weightsFor(node: index, md: queryDescriptor(pd, dnnl_query_weights_md))
        let destinationMemory: dnnl_memory_t
        if let f = fusion, let skip = values[f.skip], let buffer = skip.buffer {
            destinationMemory = skip.memory
            values[index] = skip
            values[f.add] = skip
            owner[buffer] = f.add
        } else {
            destinationMemory = try newValue(index, md: queryDescriptor(pd, dnnl_query_dst_md))
        }
        var arguments = [
            dnnl_exec_arg_t(arg: CDNNL_ARG_SRC, memory: sourceMemory),
            dnnl_exec_arg_t(arg: CDNNL_ARG_WEIGHTS, memory: weightsMemory),
            dnnl_exec_arg_t(arg: CDNNL_ARG_BIAS, memory: executor.biasFor(node: index)),
            dnnl_exec_arg_t(arg: CDNNL_ARG_DST, memory: destinationMemory),
        ]
        try appendPrimitive(pd, arguments: &arguments, node: node.name)
    }

    /// The convolution's primitive descriptor: first with the producer's format as source (no
    /// reorder), then with the preferred format (blocked policy), then with a source format of
    /// oneDNN's choice.
    private func makeConvolution(_ index: Int, inputValue: Value, anySource: dnnl_memory_desc_t, preferredSource: dnnl_memory_desc_t?,
                                 destination: dnnl_memory_desc_t, sum: Bool, depthwise: Int? = nil) throws(OneDNNError) -> dnnl_primitive_desc_t {
        if executor.layoutPolicy != .plain,
           let pd = try? executor.convolutionDescriptor(node: index, source: inputValue.md, destination: destination, batch: batch, sum: sum,
                                                        depthwise: depthwise) {
            return pd
        }
        if let preferredSource, let pd = try? executor.convolutionDescriptor(node: index, source: preferredSource, destination: destination, batch: batch,
                                                                             sum: sum, depthwise: depthwise) {
            return pd
        }
        return try executor.convolutionDescriptor(node: index, source: anySource, destination: destination, batch: batch, sum: sum, depthwise: depthwise)
    }

    private mutating func buildAdd(_ index: Int) throws(OneDNNError) {
        let node = graph.nodes[index]
        guard let a = values[node.inputs[0]], values[node.inputs[1]] != nil else {
            throw .unsupportedOperation(node: node.name, operation: "add of values computed outside oneDNN")
        }
        let pd = try executor.addDescriptor(a.md, a.md, node: node.name)
        defer { dnnl_primitive_desc_destroy(pd) }
        let second = try dnnlValue(node.inputs[1], as: a.md, node: node.name)
        let destination = try newValue(index, md: queryDescriptor(pd, dnnl_query_dst_md))
        var arguments = [
            dnnl_exec_arg_t(arg: CDNNL_ARG_SRC, memory: a.memory),
            dnnl_exec_arg_t(arg: CDNNL_ARG_SRC_1, memory: second),
            dnnl_exec_arg_t(arg: CDNNL_ARG_DST, memory: destination),
        ]
        try appendPrimitive(pd, arguments: &arguments, node: node.name)
    }

    /// Creates the primitive, binds its scratchpad and appends it as a step.
    private mutating func appendPrimitive(_ pd: dnnl_primitive_desc_t, arguments: inout [dnnl_exec_arg_t], node: String) throws(OneDNNError) {
        let scratchpadMD = queryDescriptor(pd, dnnl_query_scratchpad_md)
        let size = byteSize(scratchpadMD)
        if size > 0 {
            var md = scratchpadMD
            var memory: dnnl_memory_t?
            try dnnlCheck(dnnl_memory_create(&memory, &md, executor.engineHandle, nil), "dnnl_memory_create(scratchpad)")
            guard let memory else { throw .library(call: "dnnl_memory_create(scratchpad)", status: -1) }
            plan.memories.append(memory)
            scratchpads.append(memory)
            scratchpadBytes = max(scratchpadBytes, size)
            arguments.append(dnnl_exec_arg_t(arg: CDNNL_ARG_SCRATCHPAD, memory: memory))
        }
        var primitive: dnnl_primitive_t?
        try dnnlCheck(dnnl_primitive_create(&primitive, pd), "dnnl_primitive_create(\(node))")
        guard let primitive else { throw .library(call: "dnnl_primitive_create(\(node))", status: -1) }
        plan.primitives.append(primitive)
        plan.steps.append(.primitive(primitive, arguments))
        plan.summary.append(OneDNNPlanSummary.Primitive(node: node, implementation: implementationName(pd)))
    }

    // MARK: - Values and buffers

    /// A buffer of at least `bytes` for value `key`: the smallest free one that fits, else the
    /// largest free one grown, else a new one.
    private mutating func acquire(bytes: Int, for key: Int) -> Int {
        var chosen: Int? = freeBuffers.filter { capacities[$0] >= bytes }.min { capacities[$0] < capacities[$1] }
        if chosen == nil { chosen = freeBuffers.max { capacities[$0] < capacities[$1] } }
        let buffer: Int
        if let chosen {
            freeBuffers.removeAll { $0 == chosen }
            capacities[chosen] = max(capacities[chosen], bytes)
            buffer = chosen
        } else {
            capacities.append(bytes)
            buffer = capacities.count - 1
        }
        owner[buffer] = key
        return buffer
    }

    private mutating func makeMemory(_ md: dnnl_memory_desc_t, buffer: Int) throws(OneDNNError) -> dnnl_memory_t {
        var md = md
        var memory: dnnl_memory_t?
        try dnnlCheck(dnnl_memory_create(&memory, &md, executor.engineHandle, nil), "dnnl_memory_create")
        guard let memory else { throw .library(call: "dnnl_memory_create", status: -1) }
        plan.memories.append(memory)
        bindings.append((memory, buffer))
        return memory
    }

    private mutating func newValue(_ key: Int, md: dnnl_memory_desc_t) throws(OneDNNError) -> dnnl_memory_t {
        let buffer = acquire(bytes: byteSize(md), for: key)
        let memory = try makeMemory(md, buffer: buffer)
        values[key] = Value(md: md, memory: memory, buffer: buffer)
        return memory
    }

    /// Value `key` in format `md`: itself, or a reordered copy made once.
    private mutating func dnnlValue(_ key: Int, as md: dnnl_memory_desc_t, node: String) throws(OneDNNError) -> dnnl_memory_t {
        guard let value = values[key] else { throw .unsupportedOperation(node: node, operation: "input computed outside oneDNN") }
        if sameDescriptor(value.md, md) { return value.memory }
        if let found = conversions[key]?.first(where: { sameDescriptor($0.md, md) }) { return found.memory }
        let pd = try executor.reorderDescriptor(from: value.md, to: md, node: node)
        defer { dnnl_primitive_desc_destroy(pd) }
        let buffer = acquire(bytes: byteSize(md), for: key)
        let memory = try makeMemory(md, buffer: buffer)
        conversions[key, default: []].append(Value(md: md, memory: memory, buffer: buffer))
        var arguments = [dnnl_exec_arg_t(arg: CDNNL_ARG_SRC, memory: value.memory), dnnl_exec_arg_t(arg: CDNNL_ARG_DST, memory: memory)]
        try appendPrimitive(pd, arguments: &arguments, node: node)
        return memory
    }

    private mutating func allocatePlain(_ count: Int) -> UnsafeMutablePointer<Float> {
        let pointer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        plan.plainBuffers.append(pointer)
        return pointer
    }

    /// Value `key` as plain NHWC (or `[N, C]`) floats, reordered out of oneDNN once.
    private mutating func plainValue(_ key: Int) throws(OneDNNError) -> UnsafeMutablePointer<Float> {
        if let pointer = plain[key] { return pointer }
        guard let value = values[key] else { throw .unsupportedOperation(node: "\(key)", operation: "missing value") }
        let s = shape(of: key)
        let pointer = allocatePlain(batch * s.reduce(1, *))
        var md = try memoryDescriptor(dims(of: s), dnnl_nhwc)
        var memory: dnnl_memory_t?
        try dnnlCheck(dnnl_memory_create(&memory, &md, executor.engineHandle, pointer), "dnnl_memory_create(plain)")
        guard let memory else { throw .library(call: "dnnl_memory_create(plain)", status: -1) }
        plan.memories.append(memory)
        let name = graph.nodes[key].name
        let pd = try executor.reorderDescriptor(from: value.md, to: md, node: name)
        defer { dnnl_primitive_desc_destroy(pd) }
        var arguments = [dnnl_exec_arg_t(arg: CDNNL_ARG_SRC, memory: value.memory), dnnl_exec_arg_t(arg: CDNNL_ARG_DST, memory: memory)]
        try appendPrimitive(pd, arguments: &arguments, node: name)
        plain[key] = pointer
        return pointer
    }

    /// Returns to the pool the buffers of values that node `index` was the last to read.
    private mutating func release(after index: Int) {
        for key in Set(graph.nodes[index].inputs) where key >= 0 && executor.lastUse[key] == index {
            var held: [Int] = []
            if let buffer = values[key]?.buffer { held.append(buffer) }
            for c in conversions[key] ?? [] { if let b = c.buffer { held.append(b) } }
            for buffer in held where owner[buffer] == key {
                owner[buffer] = nil
                freeBuffers.append(buffer)
            }
        }
    }
}
