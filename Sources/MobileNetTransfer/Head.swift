import Foundation
import MobileNetPipeline

/// A row-major matrix of Doubles: `rows` samples × `columns` features. Training runs in Double
/// so gradients can be checked by finite differences; weights are saved as Float32 like Keras.
public struct Matrix: Sendable, Equatable {
    /// Number of rows (samples).
    public var rows: Int
    /// Number of columns (features).
    public var columns: Int
    /// `rows × columns` values, row-major.
    public var values: [Double]

    /// A matrix from row-major values (`values.count == rows × columns`).
    public init(rows: Int, columns: Int, values: [Double]) {
        precondition(values.count == rows * columns, "Matrix: \(values.count) values for \(rows)x\(columns)")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    /// A matrix of zeros.
    public init(rows: Int, columns: Int) {
        self.init(rows: rows, columns: columns, values: [Double](repeating: 0, count: rows * columns))
    }

    /// A matrix whose rows are `vectors` (all the same length).
    public init(stacking vectors: [[Float]]) {
        let columns = vectors.first?.count ?? 0
        self.init(rows: vectors.count, columns: columns, values: vectors.flatMap { $0.map(Double.init) })
    }

    /// Row `i`.
    public func row(_ i: Int) -> ArraySlice<Double> { values[(i * columns)..<((i + 1) * columns)] }

    /// The rows at `indices`, in that order.
    public func gathering(rows indices: [Int]) -> Matrix {
        var out: [Double] = []
        out.reserveCapacity(indices.count * columns)
        for i in indices { out += row(i) }
        return Matrix(rows: indices.count, columns: columns, values: out)
    }
}

/// A fully connected layer, `y = x · kernel + bias`, with the Keras `Dense` layout: kernel
/// `[inputs, outputs]` row-major, bias `[outputs]`. The activation is applied by the head.
public struct DenseLayer: Sendable, Equatable, Codable {
    /// Input features.
    public var inputs: Int
    /// Output units.
    public var outputs: Int
    /// `[inputs, outputs]`, row-major.
    public var kernel: [Double]
    /// `[outputs]`.
    public var bias: [Double]

    /// A layer with Keras's default initialisation: `glorot_uniform` kernel (uniform in ±√(6 / (in + out)))
    /// drawn from `random`, zero bias.
    public init(inputs: Int, outputs: Int, random: inout SeededRandom) {
        self.inputs = inputs
        self.outputs = outputs
        let limit = (6.0 / Double(inputs + outputs)).squareRoot()
        kernel = (0..<(inputs * outputs)).map { _ in (random.uniform() * 2 - 1) * limit }
        bias = [Double](repeating: 0, count: outputs)
    }

    /// A layer with the given weights.
    public init(inputs: Int, outputs: Int, kernel: [Double], bias: [Double]) {
        precondition(kernel.count == inputs * outputs && bias.count == outputs, "DenseLayer: weight shapes")
        self.inputs = inputs
        self.outputs = outputs
        self.kernel = kernel
        self.bias = bias
    }

    /// `x · kernel + bias`: `[n, inputs]` → `[n, outputs]`.
    public func forward(_ x: Matrix) -> Matrix {
        var out = Matrix(rows: x.rows, columns: outputs)
        kernel.withUnsafeBufferPointer { w in
            x.values.withUnsafeBufferPointer { xv in
                out.values.withUnsafeMutableBufferPointer { o in
                    for r in 0..<x.rows {
                        let orow = r * outputs
                        for j in 0..<outputs { o[orow + j] = bias[j] }
                        for k in 0..<inputs {
                            let a = xv[r * inputs + k]
                            if a == 0 { continue }
                            let wrow = k * outputs
                            for j in 0..<outputs { o[orow + j] += a * w[wrow + j] }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Backward pass: given `x` and `dL/dy`, returns `dL/dx`, `dL/dkernel`, `dL/dbias`.
    public func backward(input x: Matrix, outputGradient g: Matrix) -> (input: Matrix, kernel: [Double], bias: [Double]) {
        var dx = Matrix(rows: x.rows, columns: inputs)
        var dw = [Double](repeating: 0, count: inputs * outputs)
        var db = [Double](repeating: 0, count: outputs)
        for r in 0..<x.rows {
            let grow = r * outputs
            for j in 0..<outputs { db[j] += g.values[grow + j] }
            for k in 0..<inputs {
                let a = x.values[r * inputs + k]
                let wrow = k * outputs
                var s = 0.0
                for j in 0..<outputs {
                    let gj = g.values[grow + j]
                    dw[wrow + j] += a * gj
                    s += kernel[wrow + j] * gj
                }
                dx.values[r * inputs + k] = s
            }
        }
        return (dx, dw, db)
    }
}

/// One layer of a classifier head, in Keras terms.
public enum HeadLayer: Sendable, Equatable, Codable {
    /// Keras `Dropout(rate)`: in training, each value is zeroed with probability `rate` and the
    /// others are scaled by `1 / (1 - rate)`; identity at inference.
    case dropout(rate: Double)
    /// Keras `Dense(units)` without activation (the activation follows as its own layer).
    case dense(DenseLayer)
    /// ReLU, `max(0, x)` (Keras `Dense(..., activation="relu")` of a hidden layer).
    case relu
}

/// The classifier on top of the frozen backbone's pooled embedding: a stack of ``HeadLayer``s
/// whose last layer is a Dense producing the logits; softmax turns them into probabilities.
///
/// Default (the Keras transfer-learning guide): `Dropout(0.2) → Dense(classes, softmax)`.
/// With a hidden layer: `Dropout → Dense(hidden, relu) → Dropout → Dense(classes, softmax)`.
public struct ClassifierHead: Sendable, Equatable, Codable {
    /// Layers, input first.
    public var layers: [HeadLayer]

    /// A head from explicit layers.
    public init(layers: [HeadLayer]) { self.layers = layers }

    /// A freshly initialised head (Keras `glorot_uniform` kernels, zero biases, seeded).
    ///
    /// - Parameters:
    ///   - inputs: embedding size (1280 for MobileNetV2 at alpha ≤ 1).
    ///   - classes: number of classes.
    ///   - hidden: units of an optional hidden ReLU layer.
    ///   - dropout: dropout rate before each Dense (Keras guide: 0.2); 0 adds no dropout layers.
    ///   - random: the seeded generator the kernels are drawn from (advanced in place).
    public init(inputs: Int, classes: Int, hidden: Int? = nil, dropout: Double = 0.2, random: inout SeededRandom) {
        var layers: [HeadLayer] = []
        var width = inputs
        if let hidden, hidden > 0 {
            if dropout > 0 { layers.append(.dropout(rate: dropout)) }
            layers.append(.dense(DenseLayer(inputs: width, outputs: hidden, random: &random)))
            layers.append(.relu)
            width = hidden
        }
        if dropout > 0 { layers.append(.dropout(rate: dropout)) }
        layers.append(.dense(DenseLayer(inputs: width, outputs: classes, random: &random)))
        self.layers = layers
    }

    /// Number of classes (units of the last Dense).
    public var classes: Int {
        for layer in layers.reversed() { if case .dense(let d) = layer { return d.outputs } }
        return 0
    }

    /// Embedding size the head expects.
    public var inputs: Int {
        for layer in layers { if case .dense(let d) = layer { return d.inputs } }
        return 0
    }

    /// The Dense layers, input first.
    public var denseLayers: [DenseLayer] {
        layers.compactMap { if case .dense(let d) = $0 { return d } else { return nil } }
    }

    /// Why the head cannot run, or nil when it is consistent: every Dense has
    /// `inputs × outputs` kernel values and `outputs` biases, each Dense takes the previous one's
    /// outputs, dropout rates are in 0..<1, and there is at least one Dense.
    public var inconsistency: String? {
        var width: Int?
        for (index, layer) in layers.enumerated() {
            switch layer {
            case .dense(let d):
                let (size, overflow) = d.inputs.multipliedReportingOverflow(by: d.outputs)
                guard d.inputs > 0, d.outputs > 0, !overflow, d.kernel.count == size, d.bias.count == d.outputs else {
                    return "layer \(index): Dense \(d.inputs)→\(d.outputs) with \(d.kernel.count) kernel and \(d.bias.count) bias values"
                }
                if let width, width != d.inputs { return "layer \(index): Dense takes \(d.inputs) inputs after \(width) outputs" }
                width = d.outputs
            case .dropout(let rate):
                guard rate >= 0, rate < 1 else { return "layer \(index): dropout rate \(rate)" }
            case .relu:
                continue
            }
        }
        return width == nil ? "no Dense layer" : nil
    }

    /// Number of trainable parameters.
    public var parameterCount: Int { denseLayers.reduce(0) { $0 + $1.kernel.count + $1.bias.count } }

    /// Logits at inference (dropout off): `[n, inputs]` → `[n, classes]`.
    public func logits(_ x: Matrix) -> Matrix {
        var h = x
        for layer in layers {
            switch layer {
            case .dropout: continue
            case .dense(let d): h = d.forward(h)
            case .relu: h.values = h.values.map { max(0, $0) }
            }
        }
        return h
    }

    /// Softmax probabilities at inference: `[n, inputs]` → `[n, classes]`, rows summing to 1.
    public func probabilities(_ x: Matrix) -> Matrix { Self.softmax(logits(x)) }

    /// Row-wise softmax, computed stably (max subtracted).
    public static func softmax(_ z: Matrix) -> Matrix {
        var out = z
        for r in 0..<z.rows {
            let row = z.row(r)
            let m = row.max() ?? 0
            var sum = 0.0
            for j in 0..<z.columns { let e = Foundation.exp(z.values[r * z.columns + j] - m); out.values[r * z.columns + j] = e; sum += e }
            for j in 0..<z.columns { out.values[r * z.columns + j] /= sum }
        }
        return out
    }

    /// The same head with every weight rounded to Float32 (how it is saved and exported).
    public func roundedToFloat32() -> ClassifierHead {
        ClassifierHead(layers: layers.map { layer in
            guard case .dense(let d) = layer else { return layer }
            return .dense(DenseLayer(inputs: d.inputs, outputs: d.outputs,
                                     kernel: d.kernel.map { Double(Float($0)) }, bias: d.bias.map { Double(Float($0)) }))
        })
    }
}
