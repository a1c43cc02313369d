import Foundation
import MobileNetKernels
import MobileNetModel
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
/// `saved_model.proto`, `Sources/MobileNetSavedModel/Generated`) with at most 256 MiB read and
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
                // Skip identities (Dropout at inference, name scopes).
                while current.count == 1, current[0].op == "Identity" { current = consumers[current[0].name] ?? [] }
                return current.count == 1 ? current[0] : nil
            }
            var chain: [String] = []
            var position = means[0].name
            while let matmul = next(position), matmul.op == "MatMul", let bias = next(matmul.name), bias.op == "BiasAdd" {
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

/// One node of a TensorFlow graph or function: name, operation type, the nodes it reads.
struct GraphNode: Sendable {
    var name: String
    var op: String
    var inputs: [String]
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
    /// The serving signature's input height and width.
    public let inputSize: (height: Int, width: Int)

    /// Recognises the model in a folder.
    ///
    /// - Throws: ``SavedModelError/notAMobileNetV2(path:reason:)`` naming the variable or layer
    ///   that does not fit; ``SavedModelError`` for a damaged folder.
    public init(folder: SavedModelFolder) throws(SavedModelError) {
        self.folder = folder
        let path = folder.url.path
        guard let shape = folder.inputShape, shape.count == 4, shape[3] == 3, shape[1] > 0, shape[2] > 0 else {
            throw .notAMobileNetV2(path: path, reason: "the serving signature does not take one image batch [N, H, W, 3] (\(folder.inputShape.map { "\($0)" } ?? "no single input"))")
        }
        inputSize = (shape[1], shape[2])
        // Keras layer → its variables, in the object graph's order.
        var layers: [String: [SavedModelVariable]] = [:]
        var order: [String] = []
        for variable in folder.variables where variable.isFloat {
            guard let slash = variable.name.lastIndex(of: "/") else {
                throw .notAMobileNetV2(path: path, reason: "variable \(variable.name) is not named layer/variable (a Keras 3 export)")
            }
            let layer = String(variable.name[..<slash])
            if layers[layer] == nil { order.append(layer) }
            layers[layer, default: []].append(variable)
        }
        let architecture = Set(try Self.mobileNetLayerNames())
        var backbone: [KerasLayerWeights] = []
        var dense: [(name: String, kernel: (shape: [Int], values: [Float]), bias: [Float])] = []
        for layer in order {
            let variables = layers[layer]!
            var arrays: [WeightArray] = []
            for variable in variables {
                let (shape, values) = try folder.bundle.floats(variable.checkpointKey)
                guard shape == variable.shape else {
                    throw .damaged(path: path, reason: "\(variable.name) has shape \(shape) in the checkpoint and \(variable.shape) in the graph")
                }
                arrays.append(WeightArray(name: String(variable.name[variable.name.index(after: variable.name.lastIndex(of: "/")!)...]), shape: shape, values: values))
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
            defs.map { GraphNode(name: $0.name, op: $0.op, inputs: $0.input.filter { !$0.hasPrefix("^") }.map { String($0.split(separator: ":").first ?? "") }) }
        }
        return [nodes(meta.graphDef.node)] + meta.graphDef.library.function.map { nodes($0.nodeDef) }
    }

    /// The serving signature's input shape (TF Serving's default key, else Keras 3's `serve`).
    static func servingInputShape(_ meta: Tensorflow_MetaGraphDef) -> [Int]? {
        let signature = meta.signatureDef["serving_default"] ?? meta.signatureDef["serve"]
        guard let signature, signature.inputs.count == 1, let input = signature.inputs.values.first, !input.tensorShape.unknownRank else { return nil }
        return input.tensorShape.dim.map { Int($0.size) }
    }

    /// The hostile-input path of a `saved_model.pb` without its folder, for the fuzz target:
    /// parse, the serving input shape, the head's chain through the data flow.
    @_spi(Fuzzing) public static func inspectGraph(_ data: Data) -> (inputShape: [Int]?, chain: [String]?)? {
        guard let meta = try? metaGraph(data, path: "fuzz") else { return nil }
        let functions = nodes(of: meta)
        return (servingInputShape(meta), denseChain(in: functions))
    }

    /// Whether `url` is a folder: a SavedModel (holding `saved_model.pb`) or a TF Serving base
    /// folder (numeric version folders holding SavedModels).
    public static func isFolder(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
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
        guard let names = try? manager.contentsOfDirectory(atPath: url.path) else {
            throw .unreadable(path: url.path, reason: "not a readable folder")
        }
        // Version folders: decimal names TF Serving accepts (at most 18 digits).
        let versions = names.compactMap { name -> Int? in
            guard !name.isEmpty, name.count <= 18, name.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return Int(name)
        }.filter { manager.fileExists(atPath: url.appendingPathComponent("\($0)/saved_model.pb").path) }.sorted()
        if let version {
            guard versions.contains(version) else {
                throw .unreadable(path: url.path, reason: "no version \(version) (versions: \(versions.isEmpty ? "none" : versions.map(String.init).joined(separator: ", ")))")
            }
            return (url.appendingPathComponent("\(version)"), version)
        }
        guard let latest = versions.last else {
            throw .unreadable(path: url.path, reason: "neither a SavedModel folder (no saved_model.pb) nor a TF Serving base folder (no numeric version folder with one)")
        }
        return (url.appendingPathComponent("\(latest)"), latest)
    }
}
