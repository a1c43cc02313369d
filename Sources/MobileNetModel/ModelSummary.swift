/// A Keras-style model summary: one row per layer with its type, output shape and parameter
/// count, and the totals `model.summary()` prints.
public struct ModelSummary: Sendable, CustomStringConvertible {
    /// One row of the summary.
    public struct Row: Sendable, Hashable, Codable {
        /// Keras layer name.
        public var name: String
        /// Keras class name (`Conv2D`, `BatchNormalization`, ...).
        public var type: String
        /// Output shape of one example, without the batch dimension.
        public var outputShape: [Int]
        /// Number of scalars in the layer's weights, trainable or not.
        public var parameters: Int
    }

    /// The Keras model name, e.g. `mobilenetv2_1.00_224`.
    public let modelName: String
    /// Every layer in Keras's order.
    public let rows: [Row]
    /// All parameters (3,538,984 for alpha 1.0 with the 1000-class top).
    public let totalParameters: Int
    /// Parameters updated by training (all but the BatchNorm moving statistics).
    public let trainableParameters: Int

    /// The summary of a list of layers.
    public init(modelName: String, layers: [LayerSpec]) {
        self.modelName = modelName
        self.rows = layers.map { Row(name: $0.name, type: $0.kind.kerasClassName, outputShape: $0.outputShape, parameters: $0.parameterCount) }
        self.totalParameters = layers.reduce(0) { $0 + $1.parameterCount }
        self.trainableParameters = layers.reduce(0) { total, layer in
            total + layer.weights.filter(\.trainable).reduce(0) { $0 + $1.shape.reduce(1, *) }
        }
    }

    /// Parameters not updated by training (the BatchNorm moving mean and variance).
    public var nonTrainableParameters: Int { totalParameters - trainableParameters }

    /// The table as `model.summary()` lays it out.
    public var description: String {
        func shape(_ s: [Int]) -> String { "(None, " + s.map(String.init).joined(separator: ", ") + ")" }
        let nameWidth = max(28, rows.map { $0.name.count + $0.type.count + 3 }.max() ?? 0)
        let shapeWidth = max(22, rows.map { shape($0.outputShape).count }.max() ?? 0)
        func pad(_ s: String, _ w: Int) -> String { s + String(repeating: " ", count: max(1, w - s.count + 1)) }
        var lines = ["Model: \"\(modelName)\""]
        let rule = String(repeating: "-", count: nameWidth + shapeWidth + 14)
        lines.append(rule)
        lines.append(pad("Layer (type)", nameWidth) + pad("Output Shape", shapeWidth) + "Param #")
        lines.append(rule)
        for row in rows {
            lines.append(pad("\(row.name) (\(row.type))", nameWidth) + pad(shape(row.outputShape), shapeWidth) + grouped(row.parameters))
        }
        lines.append(rule)
        lines.append("Total params: \(grouped(totalParameters))")
        lines.append("Trainable params: \(grouped(trainableParameters))")
        lines.append("Non-trainable params: \(grouped(nonTrainableParameters))")
        return lines.joined(separator: "\n")
    }
}

/// `1234567` as `1,234,567`.
func grouped(_ value: Int) -> String {
    let digits = Array(String(value))
    var out = ""
    for (i, d) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(d)
    }
    return out
}
