import Foundation
import MobileNetPipeline
import MobileNetIO
import MobileNetModel

/// Errors exporting a classifier as a Keras `.keras` file. Each names the file.
public enum KerasExportError: Error, Equatable, CustomStringConvertible {
    /// The destination exists and overwriting was not asked for.
    case exists(path: String)
    /// The head cannot be expressed as the Keras transfer model (`path` is the destination).
    case unsupportedHead(path: String, message: String)
    /// The backbone weights do not fit the architecture (`path` is the weight source).
    case backboneWeights(path: String, message: String)
    /// Writing the archive failed (`path` is the destination).
    case writeFailed(path: String, message: String)

    /// A one-line message naming the file.
    public var description: String {
        switch self {
        case .exists(let path): "\(path) already exists; pass --overwrite to replace it"
        case .unsupportedHead(let path, let message): "\(path): the head cannot be exported to Keras (\(message))"
        case .backboneWeights(let path, let message): "\(path): backbone weights do not fit the exported MobileNetV2 (\(message))"
        case .writeFailed(let path, let message): "\(path): cannot write the .keras file (\(message))"
        }
    }
}

/// The standard Keras transfer model of a trained classifier, ready to be written as a Keras 3
/// `.keras` archive that `keras.models.load_model` loads:
///
/// `Input → MobileNetV2 base (nested Functional "mobilenetv2_<alpha>_<rows>", include_top=False,
/// frozen) → GlobalAveragePooling2D (or GlobalMaxPooling2D) → Dropout → [Dense(hidden, relu) →
/// Dropout →] Dense(classes, softmax)`.
///
/// `config.json` is generated from ``/MobileNetModel/MobileNetV2Architecture/layers(for:)`` with every layer's
/// Keras 3.15.1 config (the base called with `training=False`, as in the Keras guide);
/// `model.weights.h5` has the Keras 3 layout: a group per layer, weightless ones included,
/// named by the snake-case class name with a per-class counter in layer order
/// (`layers/functional/layers/batch_normalization_12/vars/0...3`), the layer name in the `name`
/// attribute of `vars`. Keras loads weights by these paths.
///
/// The model's input is the preprocessed image (`x / 127.5 − 1`), as for ``KerasTransferModel``.
public struct KerasTransferExport: Sendable {
    /// One `vars` group of `model.weights.h5`: its path, the layer (or model) name, and the arrays `0...n`.
    public struct VariableGroup: Sendable, Equatable {
        /// Group path relative to the root, without `/vars` (`""` for the outer model).
        public var path: String
        /// The `name` attribute of `vars`: the Keras layer or model name.
        public var name: String
        /// The datasets `vars/0`, `vars/1`, ..., in Keras's variable order.
        public var arrays: [WeightArray]
    }

    /// The Keras model config (`config.json`).
    public let config: KerasJSON
    /// Every `vars` group of `model.weights.h5`, in layer order (outer model first).
    public let variableGroups: [VariableGroup]
    /// The nested base model's name, e.g. `mobilenetv2_1.00_224`.
    public let baseModelName: String
    /// Number of layers of the outer model (input, base, pooling, head layers).
    public let outerLayerCount: Int

    /// The Keras version whose format is reproduced (written to `metadata.json`).
    public static let kerasVersion = "3.15.1"

    /// Builds the export of `head` on the MobileNetV2 base of `configuration` with `backbone` weights.
    ///
    /// - Parameters:
    ///   - head: the trained head (its first Dense must take the base's embedding width).
    ///   - backbone: the base weights by Keras layer name (a `predictions` layer is ignored).
    ///   - configuration: alpha and input size of the base (top and pooling are ignored).
    ///   - pooling: the global pooling between base and head.
    ///   - destination: the file to be written, named in errors about the head.
    /// - Throws: ``KerasExportError`` for a head Keras cannot express or weights that do not fit.
    public init(head: ClassifierHead, backbone: KerasWeightSet, configuration: MobileNetV2Configuration,
                pooling: Pooling = .avg, destination: URL) throws(KerasExportError) {
        var base = configuration
        base.includeTop = false
        base.pooling = nil
        let specs: [LayerSpec]
        do { specs = try MobileNetV2Architecture.layers(for: base) } catch {
            throw .unsupportedHead(path: destination.path, message: "invalid base configuration: \(error)")
        }
        let headLayers = try Self.kerasHead(head, path: destination.path)
        let baseName = base.kerasModelName
        let featureShape = specs.last?.outputShape ?? []
        guard let width = featureShape.last, head.inputs == width else {
            throw .unsupportedHead(path: destination.path, message: "the head takes \(head.inputs)-d embeddings but the base gives \(featureShape.last ?? 0)-d ones")
        }

        // The base: its layers' configs and weights.
        var keys = KeyCounter()
        var groups: [VariableGroup] = []
        var innerLayers: [KerasJSON] = []
        var shapes: [String: [Int]] = [:]
        for spec in specs {
            let inputShapes = spec.inputs.map { shapes[$0] ?? [] }
            innerLayers.append(Self.layerEntry(spec, inputShapes: inputShapes, trainable: false))
            shapes[spec.name] = spec.outputShape
            let arrays = try Self.baseArrays(spec, backbone: backbone)
            groups.append(VariableGroup(path: "layers/functional/layers/" + keys.next(Self.snakeCase(spec.kind.kerasClassName)), name: spec.name, arrays: arrays))
        }
        let inputShape = [base.inputHeight, base.inputWidth, 3]

        // The outer model.
        var outerKeys = KeyCounter()
        var outer: [KerasJSON] = []
        var outerGroups: [VariableGroup] = []
        let inputName = "input_layer_1"
        outer.append(Self.inputEntry(name: inputName, shape: inputShape))
        outerGroups.append(VariableGroup(path: "layers/" + outerKeys.next("input_layer"), name: inputName, arrays: []))
        outer.append(.object([
            ("module", .string("keras.src.models.functional")), ("class_name", .string("Functional")),
            ("config", .object([
                ("name", .string(baseName)), ("trainable", .bool(false)), ("layers", .array(innerLayers)),
                ("input_layers", Self.history(specs.first?.name ?? "input_layer")),
                ("output_layers", Self.history(specs.last?.name ?? "out_relu")),
            ])),
            ("registered_name", .string("Functional")), ("build_config", .object([("input_shape", .null)])),
            ("compile_config", .object([])), ("name", .string(baseName)),
            ("inbound_nodes", .array([Self.node([Self.tensor(inputShape, from: inputName)], kwargs: [("training", .bool(false)), ("mask", .null)])])),
        ]))
        outerGroups.append(VariableGroup(path: "layers/" + outerKeys.next("functional"), name: baseName, arrays: []))
        outerGroups += groups

        var previous = baseName
        var shape = featureShape
        let poolingClass = pooling == .avg ? "GlobalAveragePooling2D" : "GlobalMaxPooling2D"
        let poolingName = Self.snakeCase(poolingClass)
        outer.append(Self.entry(className: poolingClass, config: [
            ("name", .string(poolingName)), ("trainable", .bool(true)), ("dtype", Self.policy),
            ("data_format", .string("channels_last")), ("keepdims", .bool(false)),
        ], buildInputShape: nil, name: poolingName, inbound: [Self.tensor(shape, from: previous)]))
        outerGroups.append(VariableGroup(path: "layers/" + outerKeys.next(poolingName), name: poolingName, arrays: []))
        previous = poolingName
        shape = [width]

        var names = KeyCounter()
        for layer in headLayers {
            switch layer {
            case .dropout(let rate):
                let name = names.next("dropout")
                outer.append(Self.entry(className: "Dropout", config: [
                    ("name", .string(name)), ("trainable", .bool(true)), ("dtype", Self.policy),
                    ("rate", .double(rate)), ("seed", .null), ("noise_shape", .null),
                ], buildInputShape: nil, name: name, inbound: [Self.tensor(shape, from: previous)], kwargs: [("training", .bool(false))]))
                outerGroups.append(VariableGroup(path: "layers/" + outerKeys.next("dropout"), name: name, arrays: []))
                previous = name
            case .dense(let dense, let activation):
                let name = names.next("dense")
                outer.append(Self.entry(className: "Dense", config: [
                    ("name", .string(name)), ("trainable", .bool(true)), ("dtype", Self.policy),
                    ("units", .int(dense.outputs)), ("activation", .string(activation)), ("use_bias", .bool(true)),
                    ("kernel_initializer", Self.glorotUniform), ("bias_initializer", Self.initializer("Zeros")),
                    ("kernel_regularizer", .null), ("bias_regularizer", .null), ("kernel_constraint", .null),
                    ("bias_constraint", .null), ("quantization_config", .null),
                ], buildInputShape: Self.shapeJSON(shape), name: name, inbound: [Self.tensor(shape, from: previous)]))
                outerGroups.append(VariableGroup(path: "layers/" + outerKeys.next("dense"), name: name, arrays: [
                    WeightArray(name: "kernel", shape: [dense.inputs, dense.outputs], values: dense.kernel.map { Float($0) }),
                    WeightArray(name: "bias", shape: [dense.outputs], values: dense.bias.map { Float($0) }),
                ]))
                previous = name
                shape = [dense.outputs]
            }
        }

        config = .object([
            ("module", .string("keras.src.models.functional")), ("class_name", .string("Functional")),
            ("config", .object([
                ("name", .string("functional")), ("trainable", .bool(true)), ("layers", .array(outer)),
                ("input_layers", Self.history(inputName)), ("output_layers", Self.history(previous)),
            ])),
            ("registered_name", .string("Functional")), ("build_config", .object([("input_shape", .null)])),
            ("compile_config", .object([])),
        ])
        // The outer model's own `vars` group (name "functional") comes first.
        variableGroups = [VariableGroup(path: "", name: "functional", arrays: [])] + outerGroups
        baseModelName = baseName
        outerLayerCount = outer.count
    }

    /// The `metadata.json` member: the Keras version and the save time (local time, as Keras writes it).
    public func metadataJSON(date: Date = Date()) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone.current
        formatter.dateFormat = "yyyy-MM-dd@HH:mm:ss"
        return KerasJSON.object([("keras_version", .string(Self.kerasVersion)), ("date_saved", .string(formatter.string(from: date)))]).rendered
    }

    /// Writes `model.weights.h5` (a new file) with every group of ``variableGroups``.
    ///
    /// - Throws: ``/MobileNetIO/HDF5WriteError`` naming the file.
    public func writeWeights(to url: URL) throws(HDF5WriteError) {
        let writer = try HDF5Writer(creating: url)
        for group in variableGroups {
            let vars = group.path.isEmpty ? "vars" : group.path + "/vars"
            try writer.createGroup(vars)
            try writer.setStringAttribute("name", to: group.name, onGroup: vars)
            for (index, array) in group.arrays.enumerated() {
                try writer.writeFloat32("\(vars)/\(index)", shape: array.shape, values: array.values)
            }
        }
        try writer.close()
    }

    /// Writes the `.keras` archive (`metadata.json`, `config.json`, `model.weights.h5`, stored
    /// uncompressed like Keras does) atomically: everything is written next to `url` first and
    /// then renamed into place, so readers never see a partial file.
    ///
    /// - Parameters:
    ///   - url: the `.keras` file to write.
    ///   - overwrite: replace an existing file; without it an existing file is an error
    ///     (checked again at the final rename, without replacing).
    ///   - date: the `date_saved` of `metadata.json` and the archive entries' modification date
    ///     (default now).
    /// - Throws: ``KerasExportError`` naming the destination.
    public func writeArchive(to url: URL, overwrite: Bool, date: Date = Date()) throws(KerasExportError) {
        let path = url.path
        let fileManager = FileManager.default
        if !overwrite, fileManager.fileExists(atPath: path) { throw .exists(path: path) }
        let directory = url.deletingLastPathComponent()
        // The staging folder carries the process id, so one left by a killed export is removed here.
        let prefix = ".\(url.lastPathComponent).export-"
        AtomicFile.removeStaleTemporaries(in: directory.path, prefix: prefix, directories: true)
        let staging = directory.appendingPathComponent("\(prefix)\(getpid())-\(UUID().uuidString)", isDirectory: true)
        do {
            try fileManager.createDirectory(at: staging, withIntermediateDirectories: false)
        } catch {
            throw .writeFailed(path: path, message: "cannot create a temporary folder in \(directory.path): \(error.localizedDescription)")
        }
        defer { try? fileManager.removeItem(at: staging) }
        let weightsURL = staging.appendingPathComponent("model.weights.h5")
        let archiveURL = staging.appendingPathComponent("archive.keras")
        do {
            try writeWeights(to: weightsURL)
        } catch {
            throw .writeFailed(path: path, message: error.description)
        }
        do {
            try ZipArchive.write([
                ("metadata.json", .data(Data(metadataJSON(date: date).utf8)), false),
                ("config.json", .data(Data(config.rendered.utf8)), false),
                ("model.weights.h5", .file(weightsURL), false),
            ], to: archiveURL, modificationDate: date)
        } catch {
            throw .writeFailed(path: path, message: "ZIP: \(error.reason)")
        }
        // Put in place as every output is (AtomicFile): a symbolic link is replaced, never
        // written through; a device or FIFO is written into, never replaced by a regular file;
        // without `overwrite` an existing file is refused at the moment of placing.
        do {
            let bytes = try Data(contentsOf: archiveURL)
            try AtomicFile.write(bytes, to: url, overwrite: overwrite)
        } catch let error as AtomicFileError {
            if case .exists = error { throw .exists(path: path) }
            throw .writeFailed(path: path, message: error.description)
        } catch {
            throw .writeFailed(path: path, message: error.localizedDescription)
        }
    }

    /// Exports a trained classifier model file's head with its backbone weights to `url`; for a
    /// fine-tuned model (``ClassifierModel/fineTuning``) the base carries the fine-tuned layers.
    ///
    /// - Parameters:
    ///   - model: the `mobilenet train` model (alpha, input size and pooling come from its backbone identity).
    ///   - backbone: the base weights (already checked against `model.backbone`).
    ///   - url: the `.keras` file to write.
    ///   - overwrite: replace an existing file.
    /// - Returns: the export that was written.
    /// - Throws: ``KerasExportError`` naming the file.
    @discardableResult
    public static func write(_ model: ClassifierModel, backbone: KerasWeightSet, to url: URL, overwrite: Bool) throws(KerasExportError) -> KerasTransferExport {
        if !overwrite, FileManager.default.fileExists(atPath: url.path) { throw .exists(path: url.path) }
        let identity = model.backbone
        guard let pooling = Pooling(rawValue: identity.pooling) else {
            throw .unsupportedHead(path: url.path, message: "backbone pooling '\(identity.pooling)'")
        }
        let configuration = MobileNetV2Configuration(alpha: identity.alpha, inputHeight: identity.inputHeight, inputWidth: identity.inputWidth, includeTop: false)
        // A fine-tuned model: the base with its fine-tuned layers (the exported base is frozen,
        // as after training; its weights are the fine-tuned ones).
        var base = backbone
        if let fineTuning = model.fineTuning {
            do { base = try fineTuning.applied(to: backbone) } catch { throw .backboneWeights(path: url.path, message: error.description) }
        }
        let export = try KerasTransferExport(head: model.head, backbone: base, configuration: configuration, pooling: pooling, destination: url)
        try export.writeArchive(to: url, overwrite: overwrite)
        return export
    }

    /// The members of a `.keras` archive in archive order, each with its bytes and whether it is
    /// stored uncompressed (as Keras stores them); for checking an exported file.
    ///
    /// - Throws: ``/MobileNetIO/WeightFileError/corruptArchive(path:reason:)`` naming the file.
    public static func archiveMembers(of url: URL) throws(WeightFileError) -> [(name: String, data: Data, stored: Bool)] {
        do {
            let archive = try ZipArchive(contentsOf: url)
            return try archive.members.map { member throws(ZipArchiveError) in
                (member.name, try archive.read(member.name, limit: KerasArchive.maximumWeightsBytes) ?? Data(), !member.isCompressed)
            }
        } catch {
            throw .corruptArchive(path: url.path, reason: error.reason)
        }
    }

    // MARK: Head

    enum KerasHeadLayer {
        case dropout(Double)
        case dense(DenseLayer, activation: String)
    }

    /// Our head as Keras layers: a Dense followed by ReLU becomes `Dense(activation="relu")`,
    /// the last Dense gets softmax, any other Dense is linear.
    static func kerasHead(_ head: ClassifierHead, path: String) throws(KerasExportError) -> [KerasHeadLayer] {
        if let problem = head.inconsistency { throw .unsupportedHead(path: path, message: problem) }
        var result: [KerasHeadLayer] = []
        let layers = head.layers
        guard let lastDense = layers.lastIndex(where: { if case .dense = $0 { return true } else { return false } }) else {
            throw .unsupportedHead(path: path, message: "no Dense layer")
        }
        guard lastDense == layers.count - 1 else {
            throw .unsupportedHead(path: path, message: "layers after the last Dense")
        }
        var index = 0
        while index < layers.count {
            switch layers[index] {
            case .dropout(let rate):
                result.append(.dropout(rate))
            case .dense(let dense):
                if index == lastDense {
                    result.append(.dense(dense, activation: "softmax"))
                } else if index + 1 < layers.count, case .relu = layers[index + 1] {
                    result.append(.dense(dense, activation: "relu"))
                    index += 1
                } else {
                    result.append(.dense(dense, activation: "linear"))
                }
            case .relu:
                throw .unsupportedHead(path: path, message: "layer \(index): ReLU not directly after a Dense")
            }
            index += 1
        }
        return result
    }

    // MARK: Base weights

    /// The arrays of one base layer in Keras's order, matched by variable name when the file
    /// stores names (legacy `.h5`) and by position otherwise (Keras 3 files); shapes are checked.
    static func baseArrays(_ spec: LayerSpec, backbone: KerasWeightSet) throws(KerasExportError) -> [WeightArray] {
        guard !spec.weights.isEmpty else { return [] }
        let matches = backbone.layers.filter { $0.name == spec.name }
        guard matches.count == 1, let layer = matches.first else {
            throw .backboneWeights(path: backbone.source, message: matches.isEmpty ? "no weights for layer '\(spec.name)'" : "layer '\(spec.name)' appears \(matches.count) times")
        }
        guard layer.arrays.count == spec.weights.count else {
            throw .backboneWeights(path: backbone.source, message: "layer '\(spec.name)' has \(layer.arrays.count) arrays, expected \(spec.weights.count)")
        }
        let byName = Dictionary(layer.arrays.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var arrays: [WeightArray] = []
        for (index, weight) in spec.weights.enumerated() {
            let array = byName[weight.name] ?? layer.arrays[index]
            guard array.shape == weight.shape else {
                throw .backboneWeights(path: backbone.source, message: "layer '\(spec.name)' \(weight.name) has shape \(array.shape), expected \(weight.shape)")
            }
            arrays.append(WeightArray(name: weight.name, shape: weight.shape, values: array.values))
        }
        return arrays
    }

    // MARK: Keras config pieces

    /// Keras `naming.to_snake_case` of the classes used here (the weights-file group names).
    static func snakeCase(_ className: String) -> String {
        // re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name), then re.sub("([a-z])([A-Z])", r"\1_\2", ...).lower()
        let chars = Array(className)
        var first: [Character] = []
        for (i, c) in chars.enumerated() {
            if i > 0, c.isUppercase, i + 1 < chars.count, chars[i + 1].isLowercase || chars[i + 1].isNumber {
                first.append("_")
            }
            first.append(c)
        }
        var second: [Character] = []
        for (i, c) in first.enumerated() {
            if i > 0, c.isUppercase, first[i - 1].isLowercase { second.append("_") }
            second.append(c)
        }
        return String(second).lowercased()
    }

    /// Per-class counters: `dense`, `dense_1`, `dense_2`, ... (Keras `_get_unique_name`).
    struct KeyCounter {
        var used: [String: Int] = [:]
        mutating func next(_ base: String) -> String {
            if let n = used[base] {
                used[base] = n + 1
                return "\(base)_\(n + 1)"
            }
            used[base] = 0
            return base
        }
    }

    static let policy: KerasJSON = .object([
        ("module", .string("keras")), ("class_name", .string("DTypePolicy")),
        ("config", .object([("name", .string("float32"))])), ("registered_name", .null),
    ])

    static func initializer(_ className: String, _ config: [(key: String, value: KerasJSON)] = []) -> KerasJSON {
        .object([("module", .string("keras.initializers")), ("class_name", .string(className)),
                 ("config", .object(config)), ("registered_name", .null)])
    }

    static let glorotUniform = initializer("GlorotUniform", [("seed", .null), ("input_axes", .null), ("output_axes", .null)])

    static func shapeJSON(_ shape: [Int]) -> KerasJSON { .array([.null] + shape.map { .int($0) }) }

    static func history(_ layer: String) -> KerasJSON { .array([.string(layer), .int(0), .int(0)]) }

    static func tensor(_ shape: [Int], from layer: String) -> KerasJSON {
        .object([("class_name", .string("__keras_tensor__")), ("config", .object([
            ("shape", shapeJSON(shape)), ("dtype", .string("float32")), ("keras_history", history(layer)),
        ]))])
    }

    static func node(_ args: [KerasJSON], kwargs: [(key: String, value: KerasJSON)]) -> KerasJSON {
        .object([("args", .array(args)), ("kwargs", .object(kwargs))])
    }

    static func inputEntry(name: String, shape: [Int]) -> KerasJSON {
        .object([
            ("module", .string("keras.layers")), ("class_name", .string("InputLayer")),
            ("config", .object([("batch_shape", shapeJSON(shape)), ("dtype", .string("float32")), ("sparse", .bool(false)),
                                ("ragged", .bool(false)), ("name", .string(name)), ("optional", .bool(false))])),
            ("registered_name", .null), ("name", .string(name)), ("inbound_nodes", .array([])),
        ])
    }

    /// A layer entry of a Functional config: layers whose class overrides `build` carry a
    /// `build_config` (`buildInputShape`); the others (ReLU, pooling, Dropout) do not.
    static func entry(className: String, config: [(key: String, value: KerasJSON)], buildInputShape: KerasJSON?, name: String,
                      inbound: [KerasJSON], kwargs: [(key: String, value: KerasJSON)] = []) -> KerasJSON {
        var members: [(key: String, value: KerasJSON)] = [
            ("module", .string("keras.layers")), ("class_name", .string(className)), ("config", .object(config)), ("registered_name", .null),
        ]
        if let buildInputShape { members.append(("build_config", .object([("input_shape", buildInputShape)]))) }
        members += [("name", .string(name)), ("inbound_nodes", .array([node(inbound, kwargs: kwargs)]))]
        return .object(members)
    }

    /// The Keras 3.15.1 config entry of one MobileNetV2 layer, as `keras.applications.MobileNetV2` builds it.
    static func layerEntry(_ spec: LayerSpec, inputShapes: [[Int]], trainable: Bool) -> KerasJSON {
        let name = spec.name
        let common: [(key: String, value: KerasJSON)] = [("name", .string(name)), ("trainable", .bool(trainable)), ("dtype", policy)]
        let input = inputShapes.first ?? []
        let inbound = zip(spec.inputs, inputShapes).map { tensor($1, from: $0) }
        func pair(_ n: Int) -> KerasJSON { .array([.int(n), .int(n)]) }
        switch spec.kind {
        case .input:
            return inputEntry(name: name, shape: spec.outputShape)
        case .conv2D(let filters, let kernelSize, let stride):
            // Keras builds every convolution with padding="same" except the last one, `Conv_1`,
            // which uses the default "valid" (the same result for its 1x1 kernel).
            let padding = name == "Conv_1" ? "valid" : "same"
            return entry(className: "Conv2D", config: common + [
                ("filters", .int(filters)), ("kernel_size", pair(kernelSize)), ("strides", pair(stride)),
                ("padding", .string(padding)), ("data_format", .string("channels_last")), ("dilation_rate", pair(1)),
                ("groups", .int(1)), ("activation", .string("linear")), ("use_bias", .bool(false)),
                ("kernel_initializer", glorotUniform), ("bias_initializer", initializer("Zeros")),
                ("kernel_regularizer", .null), ("bias_regularizer", .null), ("activity_regularizer", .null),
                ("kernel_constraint", .null), ("bias_constraint", .null),
            ], buildInputShape: shapeJSON(input), name: name, inbound: inbound)
        case .depthwiseConv2D(let kernelSize, let stride, let same):
            return entry(className: "DepthwiseConv2D", config: common + [
                ("depth_multiplier", .int(1)), ("kernel_size", pair(kernelSize)), ("strides", pair(stride)),
                ("padding", .string(same ? "same" : "valid")), ("data_format", .string("channels_last")), ("dilation_rate", pair(1)),
                ("activation", .string("linear")), ("use_bias", .bool(false)),
                ("depthwise_initializer", glorotUniform), ("bias_initializer", initializer("Zeros")),
                ("depthwise_regularizer", .null), ("bias_regularizer", .null), ("activity_regularizer", .null),
                ("depthwise_constraint", .null), ("bias_constraint", .null),
            ], buildInputShape: shapeJSON(input), name: name, inbound: inbound)
        case .batchNorm(let epsilon):
            return entry(className: "BatchNormalization", config: common + [
                ("axis", .int(-1)), ("momentum", .double(0.999)), ("epsilon", .double(Double("\(epsilon)") ?? Double(epsilon))),
                ("center", .bool(true)), ("scale", .bool(true)),
                ("beta_initializer", initializer("Zeros")), ("gamma_initializer", initializer("Ones")),
                ("moving_mean_initializer", initializer("Zeros")), ("moving_variance_initializer", initializer("Ones")),
                ("beta_regularizer", .null), ("gamma_regularizer", .null), ("beta_constraint", .null), ("gamma_constraint", .null),
                ("synchronized", .bool(false)), ("renorm", .bool(false)), ("renorm_clipping", .null), ("renorm_momentum", .double(0.99)),
            ], buildInputShape: shapeJSON(input), name: name, inbound: inbound, kwargs: [("mask", .null)])
        case .relu6:
            return entry(className: "ReLU", config: common + [
                ("max_value", .double(6)), ("negative_slope", .double(0)), ("threshold", .double(0)),
            ], buildInputShape: nil, name: name, inbound: inbound)
        case .zeroPadding(let p):
            return entry(className: "ZeroPadding2D", config: common + [
                ("padding", .array([.array([.int(p.top), .int(p.bottom)]), .array([.int(p.left), .int(p.right)])])),
                ("data_format", .string("channels_last")),
            ], buildInputShape: shapeJSON(input), name: name, inbound: inbound)
        case .add:
            return entry(className: "Add", config: common, buildInputShape: .array(inputShapes.map(shapeJSON)), name: name,
                         inbound: [.array(inbound)])
        case .globalAveragePool, .globalMaxPool:
            let className = spec.kind.kerasClassName
            return entry(className: className, config: common + [("data_format", .string("channels_last")), ("keepdims", .bool(false))],
                         buildInputShape: nil, name: name, inbound: inbound)
        case .dense(let units, let activation):
            return entry(className: "Dense", config: common + [
                ("units", .int(units)), ("activation", .string(activation == .softmax ? "softmax" : "linear")), ("use_bias", .bool(true)),
                ("kernel_initializer", glorotUniform), ("bias_initializer", initializer("Zeros")),
                ("kernel_regularizer", .null), ("bias_regularizer", .null), ("kernel_constraint", .null),
                ("bias_constraint", .null), ("quantization_config", .null),
            ], buildInputShape: shapeJSON(input), name: name, inbound: inbound)
        }
    }
}

extension KerasExportError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
