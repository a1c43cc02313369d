import MobileNetKernels
import MobileNetModel

/// Why a fine-tuning model cannot be built or run.
public enum FineTuningError: Error, Equatable, CustomStringConvertible {
    /// The weights do not fit the network (see ``/MobileNetModel/ModelError``).
    case weights(ModelError)
    /// The fine-tune point is not an index into the backbone's layer list `0...layerCount`.
    case fineTunePointOutOfRange(Int, layerCount: Int)
    /// The Dropout rate is not in `0..<1`.
    case invalidDropout(Double)
    /// Label smoothing is not in `0...1`.
    case invalidLabelSmoothing(Double)
    /// The input batch has another shape than `[N, height, width, 3]` with `N ≥ 1`.
    case inputShape(expected: [Int], found: [Int])
    /// The labels do not match the batch, or one is not a class index.
    case labels(String)
    /// The gradients do not belong to this model (another variable set or shape).
    case gradients(String)
    /// The entry activations of a ``FineTuningNetwork`` have another shape than
    /// `[N] + expected` (the per-image output shape of the entry layer) with `N ≥ 1`.
    case entryShape(layer: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case .weights(let error): return error.description
        case .fineTunePointOutOfRange(let n, let count):
            return "fine-tune point \(n) is not a layer index of the backbone (0...\(count); Keras base_model.layers[N:] are trained)"
        case .invalidDropout(let rate): return "dropout rate must be in 0..<1, got \(rate)"
        case .invalidLabelSmoothing(let value): return "label smoothing must be in 0...1, got \(value)"
        case .inputShape(let expected, let found):
            return "input batch has shape \(found), the model takes [N, \(expected[1]), \(expected[2]), \(expected[3])] with N ≥ 1"
        case .labels(let message): return "labels: \(message)"
        case .gradients(let message): return "gradients: \(message)"
        case .entryShape(let layer, let expected, let found):
            return "entry activations have shape \(found), the output of '\(layer)' for a batch is [N, \(expected.map(String.init).joined(separator: ", "))] with N ≥ 1"
        }
    }
}

/// The Keras transfer-learning guide's fine-tuning model with the top of MobileNetV2 unfrozen:
/// `MobileNetV2(include_top=False)` → `GlobalAveragePooling2D` → `Dropout(rate)` →
/// `Dense(classes)` (logits), where `base_model.layers[fineTuneAt:]` and the head are trainable
/// and the layers before the fine-tune point are frozen
/// (https://www.tensorflow.org/tutorials/images/transfer_learning, "Fine tuning";
/// the guide uses `fine_tune_at = 100`).
///
/// This is the plain-Swift reference implementation, in Double: an interpreter over the Keras
/// layer list of ``/MobileNetModel/MobileNetV2Architecture/layers(for:)``, so the architecture
/// is written once. BatchNorm is never folded: gamma and beta of the unfrozen BatchNorm layers
/// are trained while the moving mean and variance stay frozen (Keras `model(x, training=False)`
/// under `tf.GradientTape`: inference-mode BatchNorm with gamma/beta gradients). Only the
/// activations the backward pass reads are kept: inputs of the trainable layers; the frozen
/// part runs forward only and its activations are released as soon as no later layer reads them.
///
/// Variables are keyed by their Keras 3 path (`variable.path`): `"<layer>/<variable>"`, e.g.
/// `"block_16_project/kernel"`, `"block_16_depthwise/kernel"` (Keras 3 calls the depthwise
/// weight `kernel`), `"block_16_project_BN/gamma"`, `"block_16_project_BN/moving_mean"`,
/// `"predictions/kernel"`, `"predictions/bias"`; values are row-major in Keras's layouts.
public struct FineTuningModel: Sendable {
    /// The network: ``/MobileNetModel/MobileNetV2Configuration/includeTop`` true with
    /// `classifierActivation` none (the `predictions` layer gives logits).
    public let configuration: MobileNetV2Configuration
    /// The backbone's Keras layers (`base_model.layers`): `input_layer` at 0 … `out_relu`.
    public let layers: [LayerSpec]
    /// Keras's fine-tune point: `layers[fineTuneAt...]` are trainable (0 or 1: the whole backbone;
    /// `layers.count`: only the head).
    public let fineTuneAt: Int
    /// The Dropout rate before the classifier (the guide: 0.2); active only in training passes.
    public let dropout: Double
    /// Every variable by Keras path, trainable or not, as Double.
    public private(set) var variables: [String: [Double]]
    /// The trainable variables' paths in Keras's `model.trainable_variables` order: layer by
    /// layer from the fine-tune point, each layer's variables in Keras's order, the head last.
    public let trainableVariables: [String]
    /// The shape of every variable, by path.
    public let variableShapes: [String: [Int]]
    /// The L2 penalty of the classifier's kernel (Keras `Dense(kernel_regularizer=L2(l2))`, as the
    /// head phase trained it): a training loss gains `l2 · Σ kernel²` and the kernel's gradient
    /// `2 · l2 · kernel`. 0 (the default): none.
    public var classifierL2: Double = 0

    /// The head's Dense layer: `predictions`, as in Keras Applications, so its variables are
    /// `"predictions/kernel"` `[lastChannels, classes]` and `"predictions/bias"` `[classes]`.
    public static let classifierLayer = "predictions"
    static let classifierKernel = path(layer: classifierLayer, variable: "kernel"), classifierBias = path(layer: classifierLayer, variable: "bias")

    /// Builds the model from a configuration and weights.
    ///
    /// - Parameters:
    ///   - configuration: alpha and input size of the backbone, and `classes` of the head
    ///     (`includeTop`, `pooling` and `classifierActivation` are set here: top with logits).
    ///   - weights: every backbone layer and the `predictions` Dense `[lastChannels, classes]`,
    ///     matched strictly (``/MobileNetModel/KerasWeightSet/matched(to:)``).
    ///   - fineTuneAt: index into the backbone's Keras layer list, `0...layers.count`.
    ///   - dropout: the head's Dropout rate, `0..<1`.
    /// - Throws: ``FineTuningError``.
    public init(configuration: MobileNetV2Configuration, weights: KerasWeightSet, fineTuneAt: Int, dropout: Double = 0.2) throws(FineTuningError) {
        var c = configuration
        c.includeTop = true
        c.pooling = nil
        c.classifierActivation = .none
        let all: [LayerSpec]
        let matched: [String: [[Float]]]
        do {
            all = try MobileNetV2Architecture.layers(for: c)
            matched = try weights.matched(to: c)
        } catch { throw .weights(error) }
        guard dropout >= 0, dropout < 1 else { throw .invalidDropout(dropout) }
        let backbone = Array(all.prefix { $0.kind != .globalAveragePool })
        guard fineTuneAt >= 0, fineTuneAt <= backbone.count else { throw .fineTunePointOutOfRange(fineTuneAt, layerCount: backbone.count) }
        var variables: [String: [Double]] = [:], shapes: [String: [Int]] = [:], trainable: [String] = []
        for (index, layer) in all.enumerated() {
            guard let values = matched[layer.name] else { continue }
            for (spec, array) in zip(layer.weights, values) {
                let path = Self.path(layer: layer.name, variable: spec.name)
                variables[path] = array.map(Double.init)
                shapes[path] = spec.shape
                if spec.trainable && index >= fineTuneAt { trainable.append(path) }
            }
        }
        self.configuration = c
        self.layers = backbone
        self.fineTuneAt = fineTuneAt
        self.dropout = dropout
        self.variables = variables
        self.variableShapes = shapes
        self.trainableVariables = trainable
    }

    /// The Keras 3 variable path of a layer's variable (`depthwise_kernel` is `kernel` in Keras 3).
    public static func path(layer: String, variable: String) -> String {
        "\(layer)/\(variable == "depthwise_kernel" ? "kernel" : variable)"
    }

    /// Number of classes of the head.
    public var classes: Int { configuration.classes }

    /// A variable as a tensor, by Keras path, or nil for an unknown path.
    public func variable(_ path: String) -> DoubleTensor? {
        guard let values = variables[path], let shape = variableShapes[path] else { return nil }
        return DoubleTensor(shape: shape, scalars: values)
    }

    // MARK: Forward

    /// What a forward pass keeps for ``backward(_:logitsGradient:)``: the logits and the
    /// activations the trainable layers read.
    public struct ForwardPass: Sendable {
        /// The logits `[N, classes]`.
        public let logits: DoubleTensor
        /// Kept activations by Keras layer name (`input_layer` for the input): the inputs of
        /// trainable layers. The frozen part's other activations are not kept.
        public let activations: [String: DoubleTensor]
        /// The pooled features `[N, C]` before Dropout.
        public let pooled: DoubleTensor
        /// The shape of the backbone's output `out_relu`, `[N, h, w, C]`.
        public let featuresShape: [Int]
        /// The Dropout mask times `1 / (1 − rate)` (`[N, C]`), nil when Dropout was inactive.
        public let dropoutMask: [Double]?
        /// The batch size.
        public var batch: Int { logits.shape[0] }
    }

    /// Runs the network on a preprocessed batch.
    ///
    /// - Parameters:
    ///   - input: `[N, height, width, 3]` NHWC, preprocessed as for the backbone (-1...1).
    ///   - training: whether Dropout is active (Keras `training=True` for the head). BatchNorm
    ///     always runs in inference mode, as in the guide's `base_model(x, training=False)`.
    ///   - random: draws the Dropout mask (keep with probability `1 − rate`, kept values scaled
    ///     by `1 / (1 − rate)`, Keras `Dropout`); unused when Dropout is inactive.
    /// - Throws: ``FineTuningError/inputShape(expected:found:)``.
    public func forward(_ input: Tensor, training: Bool, random: inout SplitMix64) throws(FineTuningError) -> ForwardPass {
        try forward(DoubleTensor(input), training: training, random: &random)
    }

    /// ``forward(_:training:random:)`` on a Double input (finite-difference checks).
    public func forward(_ input: DoubleTensor, training: Bool, random: inout SplitMix64) throws(FineTuningError) -> ForwardPass {
        let expected = [input.shape.first ?? 0, configuration.inputHeight, configuration.inputWidth, 3]
        guard input.shape.count == 4, input.shape[0] >= 1, input.shape == expected else {
            throw .inputShape(expected: [0, configuration.inputHeight, configuration.inputWidth, 3], found: input.shape)
        }
        // Which values the backward pass reads, and the last layer reading each value.
        var kept = Set<String>()
        var lastUse: [String: Int] = [:]
        for (index, layer) in layers.enumerated() {
            for name in layer.inputs {
                lastUse[name] = index
                if index >= fineTuneAt { kept.insert(name) }
            }
        }
        let last = layers[layers.count - 1].name
        var live: [String: DoubleTensor] = ["input_layer": input]
        var activations: [String: DoubleTensor] = [:]
        for (index, layer) in layers.enumerated() where index > 0 {
            let x = layer.inputs.map { live[$0]! }
            live[layer.name] = apply(layer, x)
            for name in layer.inputs where lastUse[name] == index {
                if kept.contains(name) { activations[name] = live[name] }
                live[name] = nil
            }
        }
        let features = live[last]!
        let pooled = ReferenceGradientKernels.globalAveragePool(features)
        var dropped = pooled
        var mask: [Double]?
        if training && dropout > 0 {
            let scale = 1 / (1 - dropout)
            let m = (0..<pooled.count).map { _ in Double(random.uniform()) < dropout ? 0 : scale }
            for i in dropped.scalars.indices { dropped.scalars[i] *= m[i] }
            mask = m
        }
        let logits = ReferenceGradientKernels.dense(dropped, kernel: variable(Self.classifierKernel)!, bias: variables[Self.classifierBias]!)
        return ForwardPass(logits: logits, activations: activations, pooled: pooled, featuresShape: features.shape, dropoutMask: mask)
    }

    private func tensor(_ layer: LayerSpec, _ variable: String) -> DoubleTensor { self.variable(Self.path(layer: layer.name, variable: variable))! }
    private func values(_ layer: LayerSpec, _ variable: String) -> [Double] { variables[Self.path(layer: layer.name, variable: variable)]! }

    private func convPadding(_ layer: LayerSpec, input: DoubleTensor, kernelSize: Int, stride: Int, same: Bool) -> Padding {
        same ? ReferenceGradientKernels.samePadding(height: input.shape[1], width: input.shape[2], kernel: kernelSize, stride: stride) : .valid
    }

    private func apply(_ layer: LayerSpec, _ x: [DoubleTensor]) -> DoubleTensor {
        typealias K = ReferenceGradientKernels
        switch layer.kind {
        case .conv2D(_, let k, let s):
            return K.conv2D(x[0], kernel: tensor(layer, "kernel"), stride: s, padding: convPadding(layer, input: x[0], kernelSize: k, stride: s, same: true))
        case .depthwiseConv2D(let k, let s, let same):
            return K.depthwiseConv2D(x[0], kernel: tensor(layer, "depthwise_kernel"), stride: s,
                                     padding: convPadding(layer, input: x[0], kernelSize: k, stride: s, same: same))
        case .batchNorm(let eps):
            return K.batchNorm(x[0], gamma: values(layer, "gamma"), beta: values(layer, "beta"), mean: values(layer, "moving_mean"),
                               variance: values(layer, "moving_variance"), epsilon: Double(eps))
        case .relu6: return K.relu6(x[0])
        case .zeroPadding(let p): return K.zeroPadding(x[0], p)
        case .add: return K.add(x[0], x[1])
        case .input, .globalAveragePool, .globalMaxPool, .dense:
            preconditionFailure("layer \(layer.name) (\(layer.kind.kerasClassName)) is not part of the backbone body")
        }
    }

    // MARK: Backward

    /// The gradients of the loss with respect to every trainable variable, by Keras path
    /// (the keys are exactly ``trainableVariables``), in the variables' shapes and layouts.
    public typealias Gradients = [String: DoubleTensor]

    /// Backpropagates `logitsGradient` (`dL/dlogits`, `[N, classes]`) through the head and the
    /// trainable layers, from the last layer down to the fine-tune point; nothing is computed
    /// below it. A value read by several layers (a block output feeding the next block and its
    /// residual `Add`) sums their gradients.
    ///
    /// - Returns: the gradient of every trainable variable.
    /// - Precondition: `pass` came from ``forward(_:training:random:)-(Tensor,_,_)`` of this model and
    ///   `logitsGradient` has its logits' shape (a programmer error).
    public func backward(_ pass: ForwardPass, logitsGradient: DoubleTensor) -> Gradients {
        typealias K = ReferenceGradientKernels
        precondition(logitsGradient.shape == pass.logits.shape, "backward: logits gradient \(logitsGradient.shape) for logits \(pass.logits.shape)")
        var grads: Gradients = [:]
        // Head: Dense, Dropout, pooling.
        var dropped = pass.pooled
        if let mask = pass.dropoutMask { for i in dropped.scalars.indices { dropped.scalars[i] *= mask[i] } }
        let dense = K.denseBackward(dropped, kernel: variable(Self.classifierKernel)!, dy: logitsGradient)
        grads[Self.classifierKernel] = dense.dkernel
        grads[Self.classifierBias] = DoubleTensor(shape: [dense.dbias.count], scalars: dense.dbias)
        guard fineTuneAt < layers.count else { return grads }
        var dpooled = dense.dx
        if let mask = pass.dropoutMask { for i in dpooled.scalars.indices { dpooled.scalars[i] *= mask[i] } }
        let last = layers[layers.count - 1].name
        var upstream: [String: DoubleTensor] = [last: K.globalAveragePoolBackward(dpooled, inputShape: pass.featuresShape)]
        let index = Dictionary(uniqueKeysWithValues: layers.enumerated().map { ($1.name, $0) })
        func accumulate(_ name: String, _ g: DoubleTensor) {
            guard index[name]! >= fineTuneAt else { return }
            if var existing = upstream[name] {
                for i in existing.scalars.indices { existing.scalars[i] += g.scalars[i] }
                upstream[name] = existing
            } else {
                upstream[name] = g
            }
        }
        for i in stride(from: layers.count - 1, through: max(fineTuneAt, 1), by: -1) {
            let layer = layers[i]
            guard let dy = upstream.removeValue(forKey: layer.name) else { continue }
            let inputs = layer.inputs
            let needInput = inputs.map { index[$0]! >= fineTuneAt && index[$0]! > 0 }
            let x = inputs.first.flatMap { pass.activations[$0] }
            switch layer.kind {
            case .conv2D(_, let k, let s):
                let r = K.conv2DBackward(x!, kernel: tensor(layer, "kernel"), stride: s,
                                         padding: convPadding(layer, input: x!, kernelSize: k, stride: s, same: true), dy: dy, inputGradient: needInput[0])
                grads[Self.path(layer: layer.name, variable: "kernel")] = r.dkernel
                if let dx = r.dx { accumulate(inputs[0], dx) }
            case .depthwiseConv2D(let k, let s, let same):
                let r = K.depthwiseConv2DBackward(x!, kernel: tensor(layer, "depthwise_kernel"), stride: s,
                                                  padding: convPadding(layer, input: x!, kernelSize: k, stride: s, same: same), dy: dy, inputGradient: needInput[0])
                grads[Self.path(layer: layer.name, variable: "kernel")] = r.dkernel
                if let dx = r.dx { accumulate(inputs[0], dx) }
            case .batchNorm(let eps):
                let r = K.batchNormBackward(x!, gamma: values(layer, "gamma"), mean: values(layer, "moving_mean"),
                                            variance: values(layer, "moving_variance"), epsilon: Double(eps), dy: dy, inputGradient: needInput[0])
                grads[Self.path(layer: layer.name, variable: "gamma")] = DoubleTensor(shape: [r.dgamma.count], scalars: r.dgamma)
                grads[Self.path(layer: layer.name, variable: "beta")] = DoubleTensor(shape: [r.dbeta.count], scalars: r.dbeta)
                if let dx = r.dx { accumulate(inputs[0], dx) }
            case .relu6:
                if needInput[0] { accumulate(inputs[0], K.relu6Backward(x!, dy: dy)) }
            case .zeroPadding(let p):
                if needInput[0] { accumulate(inputs[0], K.zeroPaddingBackward(dy, p)) }
            case .add:
                for (name, need) in zip(inputs, needInput) where need { accumulate(name, dy) }
            case .input, .globalAveragePool, .globalMaxPool, .dense:
                preconditionFailure("layer \(layer.name) is not part of the backbone body")
            }
        }
        // A trainable variable no gradient reached (cannot happen in MobileNetV2) gets zeros.
        for path in trainableVariables where grads[path] == nil {
            grads[path] = DoubleTensor(shape: variableShapes[path]!)
        }
        return grads
    }

    /// The loss, the logits and the gradient of every trainable variable for one batch: a
    /// forward pass, ``SoftmaxCrossEntropy`` and ``backward(_:logitsGradient:)``.
    ///
    /// - Parameters:
    ///   - input: `[N, height, width, 3]`, preprocessed.
    ///   - labels: `N` class indices in `0..<classes`.
    ///   - loss: the loss (label smoothing, class weights); ``classifierL2`` is added to it.
    ///   - training: whether Dropout is active.
    ///   - random: the Dropout mask's generator.
    /// - Throws: ``FineTuningError`` for a bad input shape or labels.
    public func lossAndGradients(_ input: Tensor, labels: [Int], loss: SoftmaxCrossEntropy, training: Bool,
                                 random: inout SplitMix64) throws(FineTuningError) -> (loss: Double, logits: DoubleTensor, gradients: Gradients) {
        let pass = try forward(input, training: training, random: &random)
        let (crossEntropy, dlogits) = try loss.evaluate(logits: pass.logits, labels: labels)
        var value = crossEntropy
        var gradients = backward(pass, logitsGradient: dlogits)
        if classifierL2 != 0, let kernel = variables[Self.classifierKernel], var g = gradients[Self.classifierKernel] {
            let penalty = L2Penalty(classifierL2)
            value += penalty.loss(of: kernel)
            penalty.addGradient(of: kernel, to: &g.scalars)
            gradients[Self.classifierKernel] = g
        }
        return (value, pass.logits, gradients)
    }

    // MARK: Updates

    /// Applies one optimiser step to the trainable variables (``trainableVariables`` order).
    ///
    /// - Throws: ``FineTuningError/gradients(_:)`` when a trainable variable has no gradient or
    ///   one of another size (nothing is changed then).
    public mutating func apply(_ gradients: Gradients, optimizer: inout Optimizer) throws(FineTuningError) {
        try optimizer.update(&variables, paths: trainableVariables, gradients: gradients.mapValues(\.scalars))
    }

    /// Replaces a variable's values (for example to perturb one for a finite-difference check).
    ///
    /// - Throws: ``FineTuningError/gradients(_:)`` for an unknown path or another value count.
    public mutating func setVariable(_ path: String, _ values: [Double]) throws(FineTuningError) {
        try replaceVariable(&variables, path, values)
    }
}
