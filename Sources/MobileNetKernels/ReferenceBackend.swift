/// The plain-Swift backend: runs every node with ``ReferenceKernels``.
///
/// It is the oracle for faster backends. It is slow in debug builds; run heavy workloads with
/// `-c release`.
public struct ReferenceBackend: InferenceBackend {
    /// `"reference"`.
    public let name = "reference"

    /// Creates the reference backend.
    public init() {}

    /// Validates `graph` and returns an executor for it.
    ///
    /// - Throws: ``GraphError`` when the graph's shapes do not fit.
    public func makeExecutor(for graph: Graph) throws -> any GraphExecutor {
        _ = try graph.validate()
        return ReferenceExecutor(graph: graph)
    }
}

struct ReferenceExecutor: GraphExecutor {
    let graph: Graph
    /// For each node, the index of the last node that reads it, so values can be released early.
    let lastUse: [Int]

    init(graph: Graph) {
        self.graph = graph
        var last = [Int](repeating: -1, count: graph.nodes.count)
        for (index, node) in graph.nodes.enumerated() {
            for i in node.inputs where i >= 0 { last[i] = index }
        }
        for output in graph.outputs where output >= 0 { last[output] = graph.nodes.count }
        self.lastUse = last
    }

    func run(_ input: Tensor) throws -> [Tensor] {
        guard input.rank == graph.inputShape.count + 1, Array(input.shape.dropFirst()) == graph.inputShape, input.shape[0] >= 1 else {
            throw GraphError.inputShape(expected: graph.inputShape, got: input.shape)
        }
        var values = [Tensor?](repeating: nil, count: graph.nodes.count)
        for (index, node) in graph.nodes.enumerated() {
            let inputs = node.inputs.map { $0 == Graph.inputIndex ? input : values[$0]! }
            let result: Tensor
            switch node.operation {
            case .conv2D(let p): result = ReferenceKernels.conv2D(inputs[0], p)
            case .depthwiseConv2D(let p): result = ReferenceKernels.depthwiseConv2D(inputs[0], p)
            case .batchNorm(let p): result = ReferenceKernels.batchNorm(inputs[0], p)
            case .relu6: result = ReferenceKernels.relu6(inputs[0])
            case .add: result = ReferenceKernels.add(inputs[0], inputs[1])
            case .globalAveragePool: result = ReferenceKernels.globalAveragePool(inputs[0])
            case .globalMaxPool: result = ReferenceKernels.globalMaxPool(inputs[0])
            case .dense(let p): result = ReferenceKernels.dense(inputs[0], p)
            case .softmax: result = ReferenceKernels.softmax(inputs[0])
            case .relu: result = ReferenceKernels.relu(inputs[0])
            }
            values[index] = result
            for i in node.inputs where i >= 0 && lastUse[i] == index { values[i] = nil }
        }
        return graph.outputs.map { $0 == Graph.inputIndex ? input : (values[$0] ?? input) }
    }
}
