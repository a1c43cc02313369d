/// One stored weight array of a Keras layer.
public struct WeightArray: Sendable, Equatable {
    /// The variable name as stored: `kernel`, `gamma`, ... in legacy files (the `:0` suffix
    /// removed), or the position (`0`, `1`, ...) in Keras 3 files, which store no names.
    public var name: String
    /// The shape in Keras's layout.
    public var shape: [Int]
    /// The values in row-major order.
    public var values: [Float]

    /// Creates a weight array.
    ///
    /// - Precondition: `values.count` equals the product of `shape`.
    public init(name: String, shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "weight \(name): shape \(shape) does not match \(values.count) values")
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// The weights of one Keras layer, in Keras's variable order.
public struct KerasLayerWeights: Sendable, Equatable {
    /// The Keras layer name, such as `block_3_expand`.
    public var name: String
    /// Names of the enclosing models, outermost first (empty at the top level), e.g.
    /// `["mobilenetv2_1.00_224"]` for a MobileNetV2 nested in a transfer-learning model.
    public var modelPath: [String]
    /// The layer's arrays in Keras's order.
    public var arrays: [WeightArray]

    /// Creates the weights of one layer.
    public init(name: String, modelPath: [String] = [], arrays: [WeightArray]) {
        self.name = name
        self.modelPath = modelPath
        self.arrays = arrays
    }
}

/// All weights read from one Keras file (or made in memory), layer by layer. File formats are
/// read by `MobileNetIO`; this type knows nothing of HDF5.
public struct KerasWeightSet: Sendable, Equatable {
    /// Where the weights come from, used in every error message (usually the file path).
    public var source: String
    /// Layers that have weights, in the order the file lists them.
    public var layers: [KerasLayerWeights]

    /// Creates a weight set.
    public init(source: String, layers: [KerasLayerWeights]) {
        self.source = source
        self.layers = layers
    }

    /// The layer called `name` at any nesting level, if exactly one exists.
    public func layer(named name: String) -> KerasLayerWeights? {
        let matches = layers.filter { $0.name == name }
        return matches.count == 1 ? matches[0] : nil
    }

    /// The MobileNetV2 part of the weights: the layers of the (possibly nested) model that
    /// contains the stem convolution `Conv1`. Layers outside it, such as a transfer-learning
    /// head, are left out. Returns `self` when `Conv1` is at the top level.
    ///
    /// - Throws: ``ModelError/missingLayer(layer:source:)`` when no layer `Conv1` exists.
    public func mobileNetV2Part() throws(ModelError) -> KerasWeightSet {
        guard let stem = layers.first(where: { $0.name == "Conv1" }) else {
            throw .missingLayer(layer: "Conv1", source: source)
        }
        let path = stem.modelPath
        let inner = layers.filter { $0.modelPath == path }.map {
            KerasLayerWeights(name: $0.name, modelPath: [], arrays: $0.arrays)
        }
        let described = path.isEmpty ? source : "\(source) (model '\(path.joined(separator: "/"))')"
        return KerasWeightSet(source: described, layers: inner)
    }

    /// The layers outside the MobileNetV2 part (for example the `Dense` head of a transfer-learning model).
    public func layersOutsideMobileNetV2() -> [KerasLayerWeights] {
        guard let path = layers.first(where: { $0.name == "Conv1" })?.modelPath else { return layers }
        return layers.filter { $0.modelPath != path }
    }

    /// The same weights without the `predictions` classifier, to compute embeddings from a
    /// file that has the top (Keras itself refuses such a file for `include_top=False`).
    public func droppingClassifier() -> KerasWeightSet {
        KerasWeightSet(source: source, layers: layers.filter { $0.name != "predictions" })
    }

    /// Whether the weights include the `predictions` classifier.
    public var hasClassifier: Bool { layers.contains { $0.name == "predictions" } }

    /// These weights with the layers of `other` in place of the same-named layers (each keeps
    /// its position and model path here), and the layers of `other` that have no namesake
    /// appended at the top level: for example the backbone's weights with the fine-tuned layers
    /// and the new `predictions` head of a fine-tuned network over them.
    ///
    /// - Throws: ``ModelError/duplicateLayer(_:source:)`` when a layer name of `other` occurs
    ///   more than once here or in `other` (which one to replace would be a guess).
    public func replacingLayers(with other: KerasWeightSet) throws(ModelError) -> KerasWeightSet {
        var replacements: [String: KerasLayerWeights] = [:]
        for layer in other.layers {
            guard replacements[layer.name] == nil else { throw .duplicateLayer(layer.name, source: other.source) }
            replacements[layer.name] = layer
        }
        var used = Set<String>()
        var merged: [KerasLayerWeights] = []
        for layer in layers {
            guard let replacement = replacements[layer.name] else { merged.append(layer); continue }
            guard used.insert(layer.name).inserted else { throw .duplicateLayer(layer.name, source: source) }
            merged.append(KerasLayerWeights(name: layer.name, modelPath: layer.modelPath, arrays: replacement.arrays))
        }
        for layer in other.layers where !used.contains(layer.name) {
            merged.append(KerasLayerWeights(name: layer.name, arrays: layer.arrays))
        }
        return KerasWeightSet(source: "\(source) with \(other.source)", layers: merged)
    }
}
