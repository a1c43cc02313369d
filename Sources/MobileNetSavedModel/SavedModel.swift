import Foundation
import MobileNetKernels
import MobileNetModel
import MobileNetTFProtos
import SwiftProtobuf

/// One variable of a SavedModel: the name its `SavedVariable` records (Keras 3: the variable's
/// path, `Conv1/kernel`), its shape, and the key of its value in the variables bundle.
public struct SavedModelVariable: Sendable, Equatable {
    /// The recorded name (`Conv1/kernel`, `block_3_depthwise/kernel`, `dense/bias`).
    public var name: String
    /// The recorded shape.
    public var shape: [Int]
    /// The checkpoint key of its value (`variables/12/.ATTRIBUTES/VARIABLE_VALUE`).
    public var checkpointKey: String
    /// Whether it holds floats (`DT_FLOAT`, `DT_HALF`, `DT_DOUBLE`): weights; other variables
    /// (a Dropout layer's random-seed state, step counters) are state, not weights.
    public var isFloat: Bool
}

/// A SavedModel folder (`saved_model.pb`, `variables/`): what TensorFlow's
/// `tf.saved_model.save`, Keras 3's `model.export` and TF Hub write, and TF Serving serves.
///
/// `saved_model.pb` is parsed by swift-protobuf (the generated code of TensorFlow's
/// `saved_model.proto`, module MobileNetTFProtos) with at most 256 MiB read and
/// the decoder's recursion limit; the variables are read through ``TensorBundle``. The
/// variables are matched to their bundle keys through the checkpoint's object graph
/// (`_CHECKPOINTABLE_OBJECT_GRAPH`, whose node `i` is the SavedObjectGraph's node `i`).
public struct SavedModelFolder: Sendable {
    /// The folder.
    public let url: URL
    /// The serving signature's input shape (`[-1, H, W, 3]`: batch free), when it has one input.
    public let inputShape: [Int]?
    /// The variables, in the object graph's order.
    public let variables: [SavedModelVariable]
    /// The graph's and each function's nodes (name, operation type, input node names), for
    /// recognising what holds no variables: pooling, activations.
    let functions: [[GraphNode]]
    /// The variables' values.
    public let bundle: TensorBundle

    /// The largest `saved_model.pb` read: 256 MiB.
    public static let maximumGraphBytes = 256 << 20

    /// Reads a SavedModel folder.
    ///
    /// - Parameter url: the folder holding `saved_model.pb` and `variables/`.
    /// - Throws: ``SavedModelError``.
    public init(contentsOf url: URL) throws(SavedModelError) {
        self.url = url
        let graphURL = url.appendingPathComponent("saved_model.pb")
        let meta = try Self.metaGraph(try readRegularFile(graphURL, limit: Self.maximumGraphBytes), path: graphURL.path)
        functions = Self.nodes(of: meta)
        inputShape = Self.servingInputShape(meta)
        let index = url.appendingPathComponent("variables/variables.index")
        bundle = try TensorBundle(indexURL: index)
        // Checkpoint keys of the object graph's variables.
        let graphBytes = try bundle.string("_CHECKPOINTABLE_OBJECT_GRAPH")
        let trackable: Tensorflow_TrackableObjectGraph
        do {
            trackable = try Tensorflow_TrackableObjectGraph(serializedBytes: graphBytes)
        } catch {
            throw .damaged(path: index.path, reason: "the checkpoint's object graph does not parse (\(error))")
        }
        let nodes = meta.objectGraphDef.nodes
        guard trackable.nodes.count == nodes.count else {
            throw .damaged(path: index.path, reason: "the checkpoint's object graph has \(trackable.nodes.count) nodes, the SavedModel's \(nodes.count)")
        }
        var variables: [SavedModelVariable] = []
        var seen: [String: Int] = [:]
        for (i, node) in nodes.enumerated() {
            guard case .variable(let variable) = node.kind else { continue }
            guard let key = trackable.nodes[i].attributes.first(where: { $0.name == "VARIABLE_VALUE" })?.checkpointKey else {
                throw .damaged(path: index.path, reason: "variable \(variable.name) has no value in the checkpoint")
            }
            let found = SavedModelVariable(name: variable.name, shape: variable.shape.dim.map { Int($0.size) }, checkpointKey: key,
                                           isFloat: [.dtFloat, .dtHalf, .dtDouble].contains(variable.dtype))
            // Keras 3 exports track each variable twice (`variables` and `_all_variables`), as
            // two nodes of one name and shape saved under two keys: the first is kept.
            if let earlier = seen[found.name] {
                guard variables[earlier].shape == found.shape else {
                    throw .damaged(path: graphURL.path, reason: "two variables named \(found.name) with shapes \(variables[earlier].shape) and \(found.shape)")
                }
                continue
            }
            seen[found.name] = variables.count
            variables.append(found)
        }
        self.variables = variables
    }

    /// The scaling the graph applies to its input before the first convolution, followed back
    /// through the data flow from the convolution that reads the input: each `Mul`, `RealDiv`,
    /// `Sub`, `AddV2`/`Add` by a constant (a scalar or one value per channel) composed in graph
    /// order, through `Identity`, `Cast` and `Pad`. The Keras `Rescaling` layer, a
    /// `preprocess_input` in the graph and TF Hub's `hub_input/Mul` and `hub_input/Sub` are such
    /// chains. Identity when the input goes to the convolution as it is.
    ///
    /// - Throws: ``SavedModelError/notAMobileNetV2(path:reason:)`` naming an operation between the
    ///   input and the first convolution that is not such a scaling, or two functions that scale
    ///   differently.
    public func inputScaling() throws(SavedModelError) -> SavedModelInputScaling {
        try Self.inputScaling(in: functions, path: url.path)
    }

    static func inputScaling(in functions: [[GraphNode]], path: String) throws(SavedModelError) -> SavedModelInputScaling {
        var found: SavedModelInputScaling?
        let network: Set<String> = ["Conv2D", "DepthwiseConv2dNative", "Relu", "Relu6", "FusedBatchNormV3", "FusedBatchNorm", "BiasAdd", "Mean",
                                    "MatMul", "Softmax", "AvgPool", "MaxPool", "ReadVariableOp", "Squeeze", "Reshape"]
        for nodes in functions {
            let byName = Dictionary(nodes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            convolutions: for conv in nodes where conv.op == "Conv2D" {
                var scaling = SavedModelInputScaling.identity
                var steps: [(op: String, constant: [Float], constantFirst: Bool)] = []
                var name = conv.inputs.first ?? ""
                var hops = 0
                while let node = byName[name], node.op != "Placeholder" {
                    hops += 1
                    guard hops < 64 else { continue convolutions }
                    switch node.op {
                    case "Identity", "Cast", "Pad", "PadV2":
                        name = node.inputs.first ?? ""
                    case "Mul", "RealDiv", "Sub", "AddV2", "Add":
                        guard node.inputs.count == 2 else { continue convolutions }
                        let constants = node.inputs.map { byName[$0]?.constant }
                        guard let i = constants.firstIndex(where: { $0 != nil }), let constant = constants[i], constant.count == 1 || constant.count == 3 else {
                            // Two tensors (a residual add): this convolution is inside the network.
                            continue convolutions
                        }
                        steps.append((node.op, constant, i == 0))
                        name = node.inputs[1 - i]
                    default:
                        if network.contains(node.op) { continue convolutions }
                        throw .notAMobileNetV2(path: path, reason: "the input goes through \(node.op) (\(node.name)) before the first convolution; only a scaling by constants (Mul, RealDiv, Sub, AddV2) is understood")
                    }
                }
                for step in steps.reversed() {
                    let c = (0..<3).map { step.constant.count == 1 ? step.constant[0] : step.constant[$0] }
                    for k in 0..<3 {
                        switch (step.op, step.constantFirst) {
                        case ("Mul", _): scaling.scale[k] *= c[k]; scaling.offset[k] *= c[k]
                        case ("RealDiv", false): scaling.scale[k] /= c[k]; scaling.offset[k] /= c[k]
                        case ("Sub", false): scaling.offset[k] -= c[k]
                        case ("Sub", true): scaling.scale[k] = -scaling.scale[k]; scaling.offset[k] = c[k] - scaling.offset[k]
                        case ("AddV2", _), ("Add", _): scaling.offset[k] += c[k]
                        default:
                            throw .notAMobileNetV2(path: path, reason: "the input is divided into a constant (\(step.op)) before the first convolution")
                        }
                    }
                }
                guard (scaling.scale + scaling.offset).allSatisfy(\.isFinite), !scaling.scale.contains(0) else {
                    throw .notAMobileNetV2(path: path, reason: "the graph's input scaling \(scaling) is not finite or zero")
                }
                if let earlier = found, !earlier.isClose(to: scaling) {
                    throw .notAMobileNetV2(path: path, reason: "two functions scale the input differently (\(earlier) and \(scaling))")
                }
                found = scaling
            }
        }
        return found ?? .identity
    }

    /// The head after global average pooling, followed through the data flow: from the one
    /// `Mean` of a function, each `MatMul` → `BiasAdd` → activation (`Relu`, `Softmax`, or none)
    /// in turn, through `Identity` nodes (Dropout at inference). Nil when no function holds
    /// such a chain; an activation this library does not compute is returned by name.
    func denseChain() -> [String]? { Self.denseChain(in: functions) }

    static func denseChain(in functions: [[GraphNode]]) -> [String]? {
        for nodes in functions {
            let means = nodes.filter { $0.op == "Mean" }
            guard means.count == 1 else { continue }
            var consumers: [String: [GraphNode]] = [:]
            for node in nodes { for input in node.inputs { consumers[input, default: []].append(node) } }
            func next(_ name: String) -> GraphNode? {
                var current = consumers[name] ?? []
                // Skip identities (Dropout at inference, name scopes) and TF-slim's squeezes.
                while current.count == 1, ["Identity", "Squeeze", "Reshape"].contains(current[0].op) { current = consumers[current[0].name] ?? [] }
                return current.count == 1 ? current[0] : nil
            }
            var chain: [String] = []
            var position = means[0].name
            // Dense layers (MatMul), or TF-slim's logits (a 1x1 Conv2D on the pooled [N, 1, 1, C]).
            while let matmul = next(position), matmul.op == "MatMul" || matmul.op == "Conv2D", let bias = next(matmul.name), bias.op == "BiasAdd" {
                if let activation = next(bias.name), ["Relu", "Softmax", "Sigmoid", "Tanh", "Elu", "Selu", "Relu6", "LeakyRelu"].contains(activation.op) {
                    chain.append(activation.op)
                    position = activation.name
                } else {
                    chain.append("")
                    position = bias.name
                }
                guard chain.count <= 64 else { return nil }
            }
            if !chain.isEmpty { return chain }
        }
        return nil
    }
}

/// The affine map a graph applies to its input before the network: per channel (R, G, B),
/// `network input = scale[c] * x + offset[c]`, where `x` is what the serving signature takes.
public struct SavedModelInputScaling: Sendable, Equatable, CustomStringConvertible {
    /// The factor per channel.
    public var scale: [Float]
    /// The offset per channel.
    public var offset: [Float]

    /// A scaling of `scale[c] * x + offset[c]` (three values each: R, G, B).
    public init(scale: [Float], offset: [Float]) {
        self.scale = scale
        self.offset = offset
    }

    /// No scaling: the input goes to the network as it is.
    public static let identity = SavedModelInputScaling(scale: [1, 1, 1], offset: [0, 0, 0])

    /// Whether it is the identity (to float rounding).
    public var isIdentity: Bool { isClose(to: .identity) }

    /// Equal to `other` within a relative 1e-5.
    public func isClose(to other: SavedModelInputScaling) -> Bool {
        zip(scale + offset, other.scale + other.offset).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0), abs($1)) }
    }

    public var description: String {
        scale == scale.map({ _ in scale[0] }) && offset == offset.map({ _ in offset[0] }) ? "x * \(scale[0]) + \(offset[0])" : "x * \(scale) + \(offset)"
    }
}

/// One node of a TensorFlow graph or function: name, operation type, the nodes it reads, and
/// for a small float `Const` (at most 4 values: a scalar or a per-channel vector) its values.
struct GraphNode: Sendable {
    var name: String
    var op: String
    var inputs: [String]
    var constant: [Float]? = nil
}

/// A Keras 3 model exported as a SavedModel (`model.export(dir)`), recognised as MobileNetV2:
/// its variables are named by Keras layer (`Conv1/kernel`, `bn_Conv1/moving_mean`,
/// `block_16_project/kernel`, `Conv_1_bn/gamma`), so they become a ``/MobileNetModel/KerasWeightSet``
/// that the usual Keras matching checks; a chain of Dense layers after the backbone (a transfer
/// model's head: their kernels chain from the 1280-d embedding) becomes a
/// ``/MobileNetModel/DenseHead``, with the activations the graph applies after each (followed
/// through the data flow from the pooling's `Mean`: `Softmax`, `Relu`, none). The input size is
/// the serving signature's.
public struct SavedModelMobileNetV2: Sendable {
    /// The folder.
    public let folder: SavedModelFolder
    /// The MobileNetV2 base layers' weights (Keras names).
    public let backboneWeights: KerasWeightSet
    /// The Dense layers after the pooling: a transfer model's head, or Keras's `predictions`
    /// top; nil for MobileNetV2 without its top.
    public let head: DenseHead?
    /// The input height and width the signature fixes; nil when it takes any size (TF Hub's
    /// modules without a serving signature take `[N, H, W, 3]` of any `H`, `W`).
    public let inputSize: (height: Int, width: Int)?
    /// What the graph does to its input before the first convolution (``SavedModelFolder/inputScaling()``).
    public let inputScaling: SavedModelInputScaling
    /// Whether the model is a TF Hub-style module with TF-slim variable names
    /// (`MobilenetV2/Conv/weights`, ...), whose input is TF Hub's image contract: float RGB
    /// 0...1 (`x / 255`), scaled to -1...1 inside the graph (`hub_input/Mul`, `hub_input/Sub`).
    public let isTFSlimModule: Bool

    /// Recognises the model in a folder.
    ///
    /// - Throws: ``SavedModelError/notAMobileNetV2(path:reason:)`` naming the variable or layer
    ///   that does not fit; ``SavedModelError`` for a damaged folder.
    public init(folder: SavedModelFolder) throws(SavedModelError) {
        self.folder = folder
        let path = folder.url.path
        guard let shape = folder.inputShape, shape.count == 4, shape[3] == 3, shape[1] > 0 || shape[1] == -1, shape[2] > 0 || shape[2] == -1 else {
            throw .notAMobileNetV2(path: path, reason: "the serving signature does not take one image batch [N, H, W, 3] (\(folder.inputShape.map { "\($0)" } ?? "no single input"))")
        }
        inputSize = shape[1] > 0 && shape[2] > 0 ? (shape[1], shape[2]) : nil
        inputScaling = try folder.inputScaling()
        isTFSlimModule = folder.variables.contains { $0.isFloat && $0.name.hasPrefix("MobilenetV2/") }
        // Keras layer → its variables (Keras array names), in the object graph's order.
        var layers: [String: [(array: String, variable: SavedModelVariable)]] = [:]
        var order: [String] = []
        for variable in folder.variables where variable.isFloat {
            let layer: String, array: String
            if isTFSlimModule {
                guard let keras = Self.kerasName(ofSlim: variable.name) else {
                    throw .notAMobileNetV2(path: path, reason: "variable \(variable.name) is not one of TF-slim's MobileNetV2 (MobilenetV2/Conv/weights, MobilenetV2/expanded_conv_N/expand|depthwise|project/..., MobilenetV2/Conv_1/..., MobilenetV2/Logits/Conv2d_1c_1x1/...)")
                }
                (layer, array) = keras
            } else {
                guard let slash = variable.name.lastIndex(of: "/") else {
                    throw .notAMobileNetV2(path: path, reason: "variable \(variable.name) is not named layer/variable (a Keras 3 export)")
                }
                (layer, array) = (String(variable.name[..<slash]), String(variable.name[variable.name.index(after: slash)...]))
            }
            if layers[layer] == nil { order.append(layer) }
            layers[layer, default: []].append((array, variable))
        }
        let architecture = Set(try Self.mobileNetLayerNames())
        var backbone: [KerasLayerWeights] = []
        var dense: [(name: String, kernel: (shape: [Int], values: [Float]), bias: [Float])] = []
        for layer in order {
            let variables = layers[layer]!
            var arrays: [WeightArray] = []
            for (array, variable) in variables {
                var (shape, values) = try folder.bundle.floats(variable.checkpointKey)
                guard shape == variable.shape else {
                    throw .damaged(path: path, reason: "\(variable.name) has shape \(shape) in the checkpoint and \(variable.shape) in the graph")
                }
                // TF-slim's logits are a 1x1 convolution: [1, 1, C, K] is a Dense kernel [C, K].
                if isTFSlimModule, layer == Self.slimLogitsLayer, array == "kernel" {
                    guard shape.count == 4, shape[0] == 1, shape[1] == 1 else {
                        throw .notAMobileNetV2(path: path, reason: "\(variable.name) has shape \(shape), not a 1x1 convolution [1, 1, C, K]")
                    }
                    shape = [shape[2], shape[3]]
                }
                arrays.append(WeightArray(name: array, shape: shape, values: values))
            }
            // TF-slim's batch norm may have no scale (gamma): it is then 1. Its variables come
            // in the object graph's order; Keras's is gamma, beta, moving_mean, moving_variance.
            if isTFSlimModule, let beta = arrays.first(where: { $0.name == "beta" }) {
                if !arrays.contains(where: { $0.name == "gamma" }) {
                    arrays.append(WeightArray(name: "gamma", shape: beta.shape, values: [Float](repeating: 1, count: beta.values.count)))
                }
                let order = ["gamma", "beta", "moving_mean", "moving_variance"]
                arrays.sort { (order.firstIndex(of: $0.name) ?? 4) < (order.firstIndex(of: $1.name) ?? 4) }
            }
            if architecture.contains(layer) {
                backbone.append(KerasLayerWeights(name: layer, arrays: arrays))
            } else if let kernel = arrays.first(where: { $0.name == "kernel" && $0.shape.count == 2 }),
                      let bias = arrays.first(where: { $0.name == "bias" && $0.shape.count == 1 }), arrays.count == 2 {
                dense.append((layer, (kernel.shape, kernel.values), bias.values))
            } else {
                throw .notAMobileNetV2(path: path, reason: "layer \(layer) (\(arrays.map { "\($0.name) \($0.shape)" }.joined(separator: ", "))) is neither a MobileNetV2 layer nor a Dense layer")
            }
        }
        backboneWeights = KerasWeightSet(source: path, layers: backbone)
        guard !dense.isEmpty else {
            head = nil
            return
        }
        // The head: Dense layers chained from the embedding (by their kernels' shapes), their
        // activations from the graph's data flow after the pooling.
        guard let activations = folder.denseChain() else {
            throw .notAMobileNetV2(path: path, reason: "no global average pooling (Mean) followed by the Dense layers in the graph")
        }
        guard activations.count == dense.count else {
            throw .notAMobileNetV2(path: path, reason: "the graph applies \(activations.count) Dense layers after the pooling; the variables hold \(dense.count)")
        }
        let width = backbone.first { $0.name == "Conv_1" }?.arrays.first { $0.name == "kernel" }?.shape.last ?? 1280
        var chain: [DenseHead.Layer] = []
        var remaining = dense
        var inputs = width
        for op in activations {
            let next = remaining.indices.filter { remaining[$0].kernel.shape[0] == inputs }
            guard next.count == 1 else {
                throw .notAMobileNetV2(path: path, reason: next.isEmpty
                    ? "the Dense layers \(remaining.map(\.name)) do not chain from the \(inputs)-d input"
                    : "Dense layers \(next.map { remaining[$0].name }) all take \(inputs) inputs: the head is not one chain")
            }
            let layer = remaining.remove(at: next[0])
            let activation: DenseHead.Activation
            switch op {
            case "Softmax": activation = .softmax
            case "Relu": activation = .relu
            // TF Hub's classification modules end in logits; a classifier here gives
            // probabilities (as TFLite files do): the softmax of those logits.
            case "" where isTFSlimModule && remaining.isEmpty: activation = .softmax
            case "": activation = .linear
            default: throw .notAMobileNetV2(path: path, reason: "Dense layer \(layer.name) is followed by \(op); this library computes relu and softmax")
            }
            guard layer.bias.count == layer.kernel.shape[1] else {
                throw .damaged(path: path, reason: "\(layer.name): bias of \(layer.bias.count) for \(layer.kernel.shape[1]) units")
            }
            chain.append(DenseHead.Layer(name: layer.name, kernel: Tensor(shape: layer.kernel.shape, scalars: layer.kernel.values), bias: layer.bias,
                                         activation: activation))
            inputs = layer.kernel.shape[1]
        }
        do {
            head = try DenseHead(layers: chain, source: path)
        } catch {
            throw .notAMobileNetV2(path: path, reason: "the head: \(error)")
        }
    }

    /// The layer name TF-slim's logits (`MobilenetV2/Logits/Conv2d_1c_1x1`) get as the head.
    static let slimLogitsLayer = "Logits"

    /// The Keras layer and array names of a TF-slim MobileNetV2 variable: `MobilenetV2/Conv` is
    /// `Conv1`, `expanded_conv` block 0 (`expanded_conv_depthwise`, `expanded_conv_project`),
    /// `expanded_conv_N` is `block_N` (`expand`, `depthwise`, `project`), `Conv_1` is `Conv_1`;
    /// `weights` is `kernel` (`depthwise_weights`: `depthwise_kernel`), each `BatchNorm` the
    /// layer's `_BN` (`bn_Conv1`, `Conv_1_bn`); the logits `Logits` (`weights`, `biases`: a Dense
    /// kernel and bias). Nil for any other name.
    static func kerasName(ofSlim name: String) -> (layer: String, array: String)? {
        var parts = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 3, parts.removeFirst() == "MobilenetV2" else { return nil }
        let batchNorm: Set<String> = ["gamma", "beta", "moving_mean", "moving_variance"]
        // The array, and whether it belongs to the layer's batch norm.
        let last = parts.removeLast()
        let isBatchNorm = parts.last == "BatchNorm"
        if isBatchNorm {
            parts.removeLast()
            guard batchNorm.contains(last) else { return nil }
        }
        let array: String
        switch (isBatchNorm, last) {
        case (true, _): array = last
        case (false, "weights"): array = "kernel"
        case (false, "depthwise_weights"): array = "depthwise_kernel"
        case (false, "biases"): array = "bias"
        default: return nil
        }
        switch parts.count {
        case 1 where parts[0] == "Conv" && array != "bias": return (isBatchNorm ? "bn_Conv1" : "Conv1", array)
        case 1 where parts[0] == "Conv_1" && array != "bias": return (isBatchNorm ? "Conv_1_bn" : "Conv_1", array)
        case 2 where parts == ["Logits", "Conv2d_1c_1x1"] && !isBatchNorm && (array == "kernel" || array == "bias"): return (slimLogitsLayer, array)
        case 2 where parts[0].hasPrefix("expanded_conv"):
            let part = parts[1]
            guard ["expand", "depthwise", "project"].contains(part), (part == "depthwise") == (array == "depthwise_kernel" || isBatchNorm && part == "depthwise"),
                  array != "bias" else { return nil }
            let block: String
            if parts[0] == "expanded_conv" {
                guard part != "expand" else { return nil }
                block = "expanded_conv"
            } else {
                let suffix = parts[0].dropFirst("expanded_conv_".count)
                guard parts[0].hasPrefix("expanded_conv_"), let n = Int(suffix), (1...16).contains(n), String(n) == suffix else { return nil }
                block = "block_\(n)"
            }
            return ("\(block)_\(part)\(isBatchNorm ? "_BN" : "")", array)
        default: return nil
        }
    }

    /// The Keras layer names of MobileNetV2's base (any alpha: names do not depend on it). The
    /// top's `predictions` is a Dense layer after the pooling like a transfer model's, and is
    /// read as the head.
    static func mobileNetLayerNames() throws(SavedModelError) -> [String] {
        do {
            return try MobileNetV2Architecture.layers(for: MobileNetV2Configuration(alpha: 1.0, inputHeight: 224, inputWidth: 224, includeTop: false)).map(\.name)
        } catch {
            throw .notAMobileNetV2(path: "", reason: "\(error)")
        }
    }
}

extension SavedModelFolder {
    /// The serving meta graph of a `saved_model.pb` (tagged `serve`, else the first).
    static func metaGraph(_ data: Data, path: String) throws(SavedModelError) -> Tensorflow_MetaGraphDef {
        let model: Tensorflow_SavedModel
        do {
            var options = BinaryDecodingOptions()
            options.messageDepthLimit = 100
            model = try Tensorflow_SavedModel(serializedBytes: data, options: options)
        } catch {
            throw .damaged(path: path, reason: "the protocol buffer does not parse (\(error))")
        }
        guard let meta = model.metaGraphs.first(where: { $0.metaInfoDef.tags.contains("serve") }) ?? model.metaGraphs.first else {
            throw .damaged(path: path, reason: "no meta graph")
        }
        return meta
    }

    /// The graph's and each function's nodes.
    static func nodes(of meta: Tensorflow_MetaGraphDef) -> [[GraphNode]] {
        func nodes(_ defs: [Tensorflow_NodeDef]) -> [GraphNode] {
            // Inputs are `node`, `node:0` or `node:output:0`; `^node` is a control input.
            defs.map { def in
                GraphNode(name: def.name, op: def.op, inputs: def.input.filter { !$0.hasPrefix("^") }.map { String($0.split(separator: ":").first ?? "") },
                          constant: def.op == "Const" ? def.attr["value"].flatMap(smallFloats) : nil)
            }
        }
        return [nodes(meta.graphDef.node)] + meta.graphDef.library.function.map { nodes($0.nodeDef) }
    }

    /// The values of a float constant of at most 4 elements (`float_val`, broadcast when it
    /// holds one value, or `tensor_content`); nil for anything else.
    static func smallFloats(_ value: Tensorflow_AttrValue) -> [Float]? {
        guard case .tensor(let tensor) = value.value, tensor.dtype == .dtFloat else { return nil }
        let count = Int(tensor.tensorShape.dim.reduce(Int64(1)) { $0 * max(0, min($1.size, 5)) })
        guard count >= 1, count <= 4 else { return nil }
        if !tensor.tensorContent.isEmpty {
            guard tensor.tensorContent.count == count * 4 else { return nil }
            return (0..<count).map { i in
                Float(bitPattern: tensor.tensorContent.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)) })
            }
        }
        if tensor.floatVal.count == count { return tensor.floatVal }
        if tensor.floatVal.count == 1 { return Array(repeating: tensor.floatVal[0], count: count) }
        return nil
    }

    /// The serving signature's input shape (TF Serving's default key, else Keras 3's `serve`),
    /// else the input of the root object's `__call__` (a TF Hub module without a signature:
    /// its first concrete function's input signature).
    static func servingInputShape(_ meta: Tensorflow_MetaGraphDef) -> [Int]? {
        let signature = meta.signatureDef["serving_default"] ?? meta.signatureDef["serve"]
        if let signature {
            guard signature.inputs.count == 1, let input = signature.inputs.values.first, !input.tensorShape.unknownRank else { return nil }
            return input.tensorShape.dim.map { Int($0.size) }
        }
        let graph = meta.objectGraphDef
        guard let root = graph.nodes.first, let call = root.children.first(where: { $0.localName == "__call__" }),
              call.nodeID >= 0, Int(call.nodeID) < graph.nodes.count, case .function(let function) = graph.nodes[Int(call.nodeID)].kind,
              let name = function.concreteFunctions.first, let concrete = graph.concreteFunctions[name] else { return nil }
        // The first tensor spec of the (args, kwargs) structure: the image batch.
        func firstSpec(_ value: Tensorflow_StructuredValue, depth: Int) -> Tensorflow_TensorSpecProto? {
            guard depth < 16 else { return nil }
            switch value.kind {
            case .tensorSpecValue(let spec): return spec
            case .tupleValue(let tuple): return tuple.values.lazy.compactMap { firstSpec($0, depth: depth + 1) }.first
            case .listValue(let list): return list.values.lazy.compactMap { firstSpec($0, depth: depth + 1) }.first
            default: return nil
            }
        }
        guard let spec = firstSpec(concrete.canonicalizedInputSignature, depth: 0), !spec.shape.unknownRank else { return nil }
        return spec.shape.dim.map { Int($0.size) }
    }

    /// The hostile-input path of a `saved_model.pb` without its folder, for the fuzz target:
    /// parse, the serving input shape (or `__call__`'s), the head's chain through the data flow,
    /// the input scaling before the first convolution.
    @_spi(Fuzzing) public static func inspectGraph(_ data: Data) -> (inputShape: [Int]?, chain: [String]?, scaling: SavedModelInputScaling?)? {
        guard let meta = try? metaGraph(data, path: "fuzz") else { return nil }
        let functions = nodes(of: meta)
        return (servingInputShape(meta), denseChain(in: functions), try? inputScaling(in: functions, path: "fuzz"))
    }

    /// Whether `url` is a folder: a SavedModel (holding `saved_model.pb`) or a TF Serving base
    /// folder (numeric version folders holding SavedModels).
    public static func isFolder(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// The versions of a TF Serving base folder, ascending: its sub-folders with decimal names
    /// (at most 18 digits, as TF Serving accepts) that hold a `saved_model.pb`. Nil when `url`
    /// cannot be listed; empty for a folder without versions (a SavedModel folder itself).
    public static func versions(in url: URL) -> [Int]? {
        versionFolders(in: url).map { Array($0.keys).sorted() }
    }

    /// The version folders of a TF Serving base folder by version: `7/` and `07/` are both
    /// version 7, as TF Serving parses the names (the plain `7` wins when both are there).
    /// Nil when `url` cannot be listed.
    public static func versionFolders(in url: URL) -> [Int: URL]? {
        let manager = FileManager.default
        guard let names = try? manager.contentsOfDirectory(atPath: url.path) else { return nil }
        var found: [Int: URL] = [:]
        for name in names.sorted(by: { $0.count < $1.count || ($0.count == $1.count && $0 < $1) }) {
            guard !name.isEmpty, name.count <= 18, name.allSatisfy({ $0.isASCII && $0.isNumber }), let version = Int(name), found[version] == nil,
                  manager.fileExists(atPath: url.appendingPathComponent(name).appendingPathComponent("saved_model.pb").path) else { continue }
            found[version] = url.appendingPathComponent(name)
        }
        return found
    }

    /// Whether `url` is a TF Serving base folder: a folder without its own `saved_model.pb`
    /// holding at least one version folder.
    public static func isBaseFolder(_ url: URL) -> Bool {
        isFolder(url) && !FileManager.default.fileExists(atPath: url.appendingPathComponent("saved_model.pb").path) && !(versions(in: url) ?? []).isEmpty
    }

    /// The SavedModel folder `url` names: itself when it holds `saved_model.pb`; in a TF Serving
    /// base folder (`BASE/1/`, `BASE/2/`, ...), version `version`, else the highest version that
    /// holds a `saved_model.pb` (TF Serving's default policy, "latest").
    ///
    /// - Returns: the folder and its version number (nil for a plain SavedModel folder).
    /// - Throws: ``SavedModelError/unreadable(path:reason:)`` when there is none, or no such version.
    public static func resolve(_ url: URL, version: Int? = nil) throws(SavedModelError) -> (url: URL, version: Int?) {
        let manager = FileManager.default
        if manager.fileExists(atPath: url.appendingPathComponent("saved_model.pb").path) {
            if let version { throw .unreadable(path: url.path, reason: "a SavedModel folder, not a TF Serving base folder with version \(version)") }
            return (url, nil)
        }
        guard let folders = versionFolders(in: url) else {
            throw .unreadable(path: url.path, reason: "not a readable folder")
        }
        let versions = folders.keys.sorted()
        if let version {
            guard versions.contains(version) else {
                throw .unreadable(path: url.path, reason: "no version \(version) (versions: \(versions.isEmpty ? "none" : versions.map(String.init).joined(separator: ", ")))")
            }
            return (folders[version]!, version)
        }
        guard let latest = versions.last else {
            throw .unreadable(path: url.path, reason: "neither a SavedModel folder (no saved_model.pb) nor a TF Serving base folder (no numeric version folder with one)")
        }
        return (folders[latest]!, latest)
    }
}
