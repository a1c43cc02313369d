import MobileNetKernels
import MobileNetModel

/// The fast `Float` implementation of ``FineTuningModel`` for real training: the same network
/// (the Keras transfer-learning guide's `base_model.layers[fineTuneAt:]` trainable,
/// BatchNorm in inference mode with γ and β of the unfrozen layers trained, then
/// `GlobalAveragePooling2D` → `Dropout(rate)` → `Dense(classes)` logits), the same variables,
/// Keras 3 paths and ``trainableVariables`` order, on ``GradientKernels`` (OpenBLAS sgemm for
/// the convolutions).
///
/// The frozen part below the fine-tune point is not run here: the caller runs it with the
/// inference model (`MobileNetV2.activations(x, layers: [network.entryLayer])`, oneDNN, BatchNorm
/// folded) and hands the ``entryLayer``'s output to ``forward(entry:training:random:)``. The entry
/// is the last layer before ``fineTuneAt`` that a folded graph can return
/// and through which everything later flows
/// (``/MobileNetModel/MobileNetV2Architecture/fineTuningEntry(_:before:)``: inside a residual
/// block, the block's input); the few frozen layers between it and the fine-tune point (a
/// convolution whose BatchNorm was folded, a `ZeroPadding2D`, the start of a residual block)
/// run forward only here. For the guide's `fine_tune_at = 100` (`block_11_expand_relu`, in the
/// residual block 11) the entry is `block_10_project_BN`, and `block_11_expand` with its
/// BatchNorm runs here, frozen.
///
/// Memory: a training pass keeps only what the backward pass reads: the inputs of trainable
/// convolutions and BatchNorm layers, and the outputs of the ReLU6 layers it differentiates (a
/// BatchNorm followed by its ReLU6 is one fused step, whose BatchNorm output is never stored).
/// Everything else is released as soon as the forward pass has no further use for it, and kept
/// activations are released as the backward pass passes them.
///
/// The network is a value; it is not changed by passes, only by ``apply(_:optimizer:)``. Passes
/// use ``GradientKernels/workers`` threads and OpenBLAS's threads.
public struct FineTuningNetwork: Sendable {
    /// The network, as ``FineTuningModel/configuration`` (top with logits).
    public let configuration: MobileNetV2Configuration
    /// The backbone's Keras layers (`base_model.layers`): `input_layer` at 0 … `out_relu`.
    public let layers: [LayerSpec]
    /// Keras's fine-tune point: `layers[fineTuneAt...]` and the head are trainable (0 or 1: the
    /// whole backbone; `layers.count`: only the head).
    public let fineTuneAt: Int
    /// The head's Dropout rate, `0..<1`, active only in training passes.
    public let dropout: Double
    /// The L2 penalty of the classifier's kernel, as ``FineTuningModel/classifierL2`` (copied
    /// from the reference this network was made from).
    public var classifierL2: Double = 0
    /// The position of ``entryLayer`` in ``layers``.
    public let entryIndex: Int
    /// The variables the network uses (every variable of the layers after ``entryLayer`` and of
    /// the head), trainable or not, by Keras 3 path (`"block_16_project/kernel"`,
    /// `"block_16_depthwise/kernel"`, `"block_16_project_BN/moving_mean"`,
    /// `"predictions/bias"`), row-major in Keras's layouts.
    public private(set) var variables: [String: [Float]]
    /// The trainable variables' paths in Keras's `model.trainable_variables` order (as
    /// ``FineTuningModel/trainableVariables``).
    public let trainableVariables: [String]
    /// The shape of every variable of ``variables``, by path.
    public let variableShapes: [String: [Int]]
    /// The steps after the entry, in order.
    let plan: Plan

    /// The Keras layer whose output the network takes: `input_layer` (the preprocessed image,
    /// for fine-tune points up to 3, `Conv1_relu`) or a layer such as `block_10_project_BN`,
    /// `block_13_expand_relu`, `block_12_add`, `out_relu` (for a head-only network).
    public var entryLayer: String { layers[entryIndex].name }

    /// The per-image shape of the entry activations, `[H, W, C]` (NHWC without the batch).
    public var entryShape: [Int] { layers[entryIndex].outputShape }

    /// Number of classes of the head.
    public var classes: Int { configuration.classes }

    /// Builds the network from a configuration and weights, as ``FineTuningModel/init(configuration:weights:fineTuneAt:dropout:)``.
    ///
    /// - Parameters:
    ///   - configuration: alpha and input size of the backbone, and `classes` of the head.
    ///   - weights: every backbone layer and the `predictions` Dense `[lastChannels, classes]`,
    ///     matched strictly (``/MobileNetModel/KerasWeightSet/matched(to:)``); the layers before
    ///     the entry are checked but not kept.
    ///   - fineTuneAt: index into the backbone's Keras layer list, `0...layers.count`.
    ///   - dropout: the head's Dropout rate, `0..<1`.
    /// - Throws: ``FineTuningError``: ``FineTuningError/weights(_:)``,
    ///   ``FineTuningError/fineTunePointOutOfRange(_:layerCount:)``, ``FineTuningError/invalidDropout(_:)``.
    public init(configuration: MobileNetV2Configuration, weights: KerasWeightSet, fineTuneAt: Int, dropout: Double = 0.2) throws(FineTuningError) {
        self.init(try FineTuningModel(configuration: configuration, weights: weights, fineTuneAt: fineTuneAt, dropout: dropout))
    }

    /// The fast network with the reference model's variables (rounded to `Float`), fine-tune
    /// point and Dropout rate: for checking one against the other, or continuing in `Float`.
    public init(_ reference: FineTuningModel) {
        let layers = reference.layers
        let entry = MobileNetV2Architecture.fineTuningEntry(layers, before: reference.fineTuneAt)
        var variables: [String: [Float]] = [:], shapes: [String: [Int]] = [:]
        for layer in layers[(entry + 1)...] {
            for spec in layer.weights {
                let path = FineTuningModel.path(layer: layer.name, variable: spec.name)
                variables[path] = reference.variables[path]!.map(Float.init)
                shapes[path] = spec.shape
            }
        }
        for path in [FineTuningModel.classifierKernel, FineTuningModel.classifierBias] {
            variables[path] = reference.variables[path]!.map(Float.init)
            shapes[path] = reference.variableShapes[path]!
        }
        self.configuration = reference.configuration
        self.layers = layers
        self.fineTuneAt = reference.fineTuneAt
        self.dropout = reference.dropout
        self.classifierL2 = reference.classifierL2
        self.entryIndex = entry
        self.variables = variables
        self.variableShapes = shapes
        self.trainableVariables = reference.trainableVariables
        self.plan = Plan(layers: layers, entry: entry, fineTuneAt: reference.fineTuneAt)
    }

    /// A variable as a tensor, by Keras path, or nil for a path the network does not hold.
    public func variable(_ path: String) -> Tensor? {
        guard let values = variables[path], let shape = variableShapes[path] else { return nil }
        return Tensor(shape: shape, scalars: values)
    }

    // MARK: Forward

    /// What a training pass keeps for ``backward(_:logitsGradient:)``.
    public struct ForwardPass: Sendable {
        /// The logits `[N, classes]`.
        public let logits: Tensor
        /// Kept activations by layer index (nil where nothing is kept).
        var values: [[Float]?]
        /// The pooled features `[N, C]` before Dropout.
        let pooled: [Float]
        /// The Dropout mask times `1 / (1 − rate)` (`[N, C]`), nil when Dropout was inactive.
        let dropoutMask: [Float]?
        /// The layers whose outputs are kept for the backward pass, in Keras order.
        public let keptLayers: [String]
        /// The bytes of the kept activations.
        public var keptBytes: Int { values.reduce(0) { $0 + ($1?.count ?? 0) } * MemoryLayout<Float>.stride }
        /// The batch size.
        public var batch: Int { logits.shape[0] }
    }

    /// Runs the trainable part on the entry activations of a batch.
    ///
    /// - Parameters:
    ///   - entry: the output of ``entryLayer`` for the batch, `[N] + entryShape` NHWC with
    ///     `N ≥ 1` (for `input_layer`, the image preprocessed to -1...1).
    ///   - training: whether Dropout is active (Keras `training=True` for the head). BatchNorm
    ///     always runs in inference mode.
    ///   - random: draws the Dropout mask exactly as ``FineTuningModel/forward(_:training:random:)-(Tensor,_,_)``
    ///     (one `uniform()` per pooled value in row-major order; dropped when below the rate,
    ///     kept values scaled by `1 / (1 − rate)`); unused when Dropout is inactive.
    /// - Returns: the logits and the activations the backward pass reads.
    /// - Throws: ``FineTuningError/entryShape(layer:expected:found:)``.
    public func forward(entry: Tensor, training: Bool, random: inout SplitMix64) throws(FineTuningError) -> ForwardPass {
        try run(entry: entry, training: training, keep: true, random: &random)
    }

    /// The logits `[N, classes]` of an inference pass (no Dropout, nothing kept).
    ///
    /// - Parameter entry: `[N] + entryShape`, as for ``forward(entry:training:random:)``.
    /// - Throws: ``FineTuningError/entryShape(layer:expected:found:)``.
    public func logits(entry: Tensor) throws(FineTuningError) -> Tensor {
        var unused = SplitMix64(seed: 0)
        return try run(entry: entry, training: false, keep: false, random: &unused).logits
    }

    private func run(entry: Tensor, training: Bool, keep: Bool, random: inout SplitMix64) throws(FineTuningError) -> ForwardPass {
        guard entry.shape.count == entryShape.count + 1, entry.shape[0] >= 1, Array(entry.shape.dropFirst()) == entryShape else {
            throw .entryShape(layer: entryLayer, expected: entryShape, found: entry.shape)
        }
        let n = entry.shape[0]
        var values = [[Float]?](repeating: nil, count: layers.count)
        values[entryIndex] = entry.scalars
        for (s, step) in plan.steps.enumerated() {
            values[step.output] = compute(step, values, batch: n)
            for input in step.inputs where plan.lastForwardUse[input] == s && !(keep && plan.kept[input]) {
                values[input] = nil
            }
        }
        let last = layers.count - 1
        let featureShape = layers[last].outputShape
        let (positions, c) = (featureShape[0] * featureShape[1], featureShape[2])
        var pooled = [Float](repeating: 0, count: n * c)
        values[last]!.withUnsafeBufferPointer { x in
            pooled.withUnsafeMutableBufferPointer { GradientKernels.globalAveragePool(x.baseAddress!, batch: n, positions: positions, channels: c, into: $0.baseAddress!) }
        }
        if !(keep && plan.kept[last]) { values[last] = nil }
        var mask: [Float]?
        var dropped = pooled
        if training && dropout > 0 {
            let scale = Float(1 / (1 - dropout))
            let m = (0..<pooled.count).map { _ in Double(random.uniform()) < dropout ? 0 : scale }
            for i in dropped.indices { dropped[i] *= m[i] }
            mask = m
        }
        let logits = dense(dropped, batch: n)
        let kept = keep ? layers.indices.filter { values[$0] != nil }.map { layers[$0].name } : []
        return ForwardPass(logits: logits, values: keep ? values : [], pooled: pooled, dropoutMask: mask, keptLayers: kept)
    }

    private func dense(_ x: [Float], batch n: Int) -> Tensor {
        let kernel = variables[FineTuningModel.classifierKernel]!, bias = variables[FineTuningModel.classifierBias]!
        let (cin, k) = (kernel.count / bias.count, bias.count)
        var y = [Float](repeating: 0, count: n * k)
        x.withUnsafeBufferPointer { xp in
            kernel.withUnsafeBufferPointer { kp in
                y.withUnsafeMutableBufferPointer { GradientKernels.pointwise(xp.baseAddress!, rows: n, inputChannels: cin, kernel: kp.baseAddress!, outputChannels: k, into: $0.baseAddress!) }
            }
        }
        for b in 0..<n { for j in 0..<k { y[b * k + j] += bias[j] } }
        return Tensor(shape: [n, k], scalars: y)
    }

    /// A `[Float]` of `count` elements written by `body` (every element must be written).
    private static func array(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { body(buffer.baseAddress!) }
            initialized = count
        }
    }

    private func window(_ step: Plan.Step, batch: Int) -> GradientKernels.Window {
        let s = step.inputShape
        return GradientKernels.Window(batch: batch, height: s[0], width: s[1], channels: s[2], kernelHeight: step.kernelSize,
                                      kernelWidth: step.kernelSize, stride: step.stride, padding: step.padding)
    }

    private func compute(_ step: Plan.Step, _ values: [[Float]?], batch n: Int) -> [Float] {
        let x = values[step.inputs[0]]!
        let count = n * step.outputShape.reduce(1, *)
        let s = step.inputShape
        return x.withUnsafeBufferPointer { xb -> [Float] in
            let xp = xb.baseAddress!
            switch step.operation {
            case .convolution(let path):
                let g = window(step, batch: n)
                return variables[path]!.withUnsafeBufferPointer { k in
                    Self.array(count) { GradientKernels.convolution(xp, g, kernel: k.baseAddress!, outputChannels: step.outputShape[2], into: $0) }
                }
            case .depthwise(let path):
                let g = window(step, batch: n)
                return variables[path]!.withUnsafeBufferPointer { k in Self.array(count) { GradientKernels.depthwise(xp, g, kernel: k.baseAddress!, into: $0) } }
            case .batchNorm(let layer, let epsilon, let relu6):
                let c = s[s.count - 1]
                let v = bnVariables(layer)
                return Self.array(count) {
                    GradientKernels.batchNorm(xp, rows: count / c, channels: c, gamma: v.gamma, beta: v.beta, mean: v.mean, variance: v.variance,
                                              epsilon: epsilon, relu6: relu6, into: $0)
                }
            case .relu6:
                return Self.array(count) { GradientKernels.relu6(xp, count: count, into: $0) }
            case .zeroPadding(let p):
                return Self.array(count) { GradientKernels.zeroPadding(xp, batch: n, height: s[0], width: s[1], channels: s[2], p, into: $0) }
            case .add:
                return values[step.inputs[1]]!.withUnsafeBufferPointer { b in Self.array(count) { GradientKernels.add(xp, b.baseAddress!, count: count, into: $0) } }
            }
        }
    }

    private func bnVariables(_ layer: String) -> (gamma: [Float], beta: [Float], mean: [Float], variance: [Float]) {
        (variables[layer + "/gamma"]!, variables[layer + "/beta"]!, variables[layer + "/moving_mean"]!, variables[layer + "/moving_variance"]!)
    }

    // MARK: Backward

    /// Backpropagates `logitsGradient` (`dL/dlogits`, `[N, classes]`) through the head and the
    /// trainable layers, as ``FineTuningModel/backward(_:logitsGradient:)``: a value read by two
    /// layers (a block output and its residual `Add`) sums their gradients; nothing is computed
    /// below the fine-tune point. The pass's activations are released as it goes (pass it as a
    /// temporary, or do not use it again, to free them early).
    ///
    /// - Returns: the gradient of every trainable variable by Keras path (exactly the keys
    ///   ``trainableVariables``), in the variables' shapes.
    /// - Precondition: `pass` came from ``forward(entry:training:random:)`` of this network and
    ///   `logitsGradient` has its logits' shape (a programmer error).
    public func backward(_ pass: consuming ForwardPass, logitsGradient: Tensor) -> [String: Tensor] {
        precondition(logitsGradient.shape == pass.logits.shape, "backward: logits gradient \(logitsGradient.shape) for logits \(pass.logits.shape)")
        precondition(pass.values.count == layers.count, "backward: the pass was not a training pass of this network")
        let n = pass.batch
        var gradients: [String: Tensor] = [:]
        // Head: Dense, Dropout.
        let kernel = variables[FineTuningModel.classifierKernel]!
        let k = classes, c = kernel.count / k
        var dropped = pass.pooled
        if let mask = pass.dropoutMask { for i in dropped.indices { dropped[i] *= mask[i] } }
        let dlogits = logitsGradient.scalars
        var dkernel = [Float](repeating: 0, count: c * k), dpooled = [Float](repeating: 0, count: n * c)
        dropped.withUnsafeBufferPointer { x in
            dlogits.withUnsafeBufferPointer { dy in
                kernel.withUnsafeBufferPointer { w in
                    dkernel.withUnsafeMutableBufferPointer { GradientKernels.pointwiseBackwardWeights(x.baseAddress!, rows: n, inputChannels: c, dy: dy.baseAddress!, outputChannels: k, into: $0.baseAddress!) }
                    dpooled.withUnsafeMutableBufferPointer { GradientKernels.pointwiseBackwardData(dy.baseAddress!, rows: n, inputChannels: c, kernel: w.baseAddress!, outputChannels: k, into: $0.baseAddress!) }
                }
            }
        }
        var dbias = [Float](repeating: 0, count: k)
        for j in 0..<k {
            var s = 0.0
            for b in 0..<n { s += Double(dlogits[b * k + j]) }
            dbias[j] = Float(s)
        }
        gradients[FineTuningModel.classifierKernel] = Tensor(shape: [c, k], scalars: dkernel)
        gradients[FineTuningModel.classifierBias] = Tensor(shape: [k], scalars: dbias)

        let last = layers.count - 1
        var upstream = [[Float]?](repeating: nil, count: layers.count)
        if plan.needsGradient[last] {
            if let mask = pass.dropoutMask { for i in dpooled.indices { dpooled[i] *= mask[i] } }
            let shape = layers[last].outputShape
            let positions = shape[0] * shape[1]
            upstream[last] = dpooled.withUnsafeBufferPointer { dy in
                Self.array(n * positions * c) { GradientKernels.globalAveragePoolBackward(dy.baseAddress!, batch: n, positions: positions, channels: c, into: $0) }
            }
        }
        for s in plan.steps.indices.reversed() {
            let step = plan.steps[s]
            guard step.active, var dy = upstream[step.output] else { continue }
            upstream[step.output] = nil
            let count = dy.count
            let shape = step.inputShape
            let inputCount = n * shape.reduce(1, *)
            switch step.operation {
            case .convolution(let path), .depthwise(let path):
                let g = window(step, batch: n)
                let x = pass.values[step.inputs[0]]!
                let kernel = variables[path]!
                var dk = [Float](repeating: 0, count: kernel.count)
                var dx: [Float]? = step.inputGradients[0] ? Self.array(inputCount, { _ in }) : nil  // overwritten by the kernel
                x.withUnsafeBufferPointer { xp in
                    kernel.withUnsafeBufferPointer { kp in
                        dy.withUnsafeBufferPointer { gp in
                            dk.withUnsafeMutableBufferPointer { dkp in
                                func run(_ dxp: UnsafeMutablePointer<Float>?) {
                                    if case .depthwise = step.operation {
                                        GradientKernels.depthwiseBackward(xp.baseAddress!, g, kernel: kp.baseAddress!, dy: gp.baseAddress!, dkernel: dkp.baseAddress!, dx: dxp)
                                    } else {
                                        GradientKernels.convolutionBackward(xp.baseAddress!, g, kernel: kp.baseAddress!, outputChannels: step.outputShape[2],
                                                                            dy: gp.baseAddress!, dkernel: dkp.baseAddress!, dx: dxp)
                                    }
                                }
                                if dx != nil { dx!.withUnsafeMutableBufferPointer { run($0.baseAddress!) } } else { run(nil) }
                            }
                        }
                    }
                }
                gradients[path] = Tensor(shape: variableShapes[path]!, scalars: dk)
                if let dx { accumulate(&upstream, step.inputs[0], dx) }
            case .batchNorm(let layer, let epsilon, let relu6):
                let x = pass.values[step.inputs[0]] ?? dy  // read only for dγ (kept when trainable)
                let v = bnVariables(layer)
                let ch = shape[shape.count - 1]
                var dgamma = [Float](repeating: 0, count: ch), dbeta = [Float](repeating: 0, count: ch)
                let y = relu6 ? pass.values[step.output]! : []
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeBufferPointer { yp in
                        dgamma.withUnsafeMutableBufferPointer { gp in
                            dbeta.withUnsafeMutableBufferPointer { bp in
                                dy.withUnsafeMutableBufferPointer { dyp in
                                    // dx overwrites dy in place.
                                    GradientKernels.batchNormBackward(xp.baseAddress!, rows: count / ch, channels: ch, gamma: v.gamma, mean: v.mean, variance: v.variance,
                                                                      epsilon: epsilon, relu6Output: relu6 ? yp.baseAddress! : nil, dy: dyp.baseAddress!,
                                                                      dgamma: step.trainable ? gp.baseAddress! : nil, dbeta: step.trainable ? bp.baseAddress! : nil,
                                                                      dx: step.inputGradients[0] ? dyp.baseAddress! : nil)
                                }
                            }
                        }
                    }
                }
                if step.trainable {
                    gradients[layer + "/gamma"] = Tensor(shape: [ch], scalars: dgamma)
                    gradients[layer + "/beta"] = Tensor(shape: [ch], scalars: dbeta)
                }
                if step.inputGradients[0] { accumulate(&upstream, step.inputs[0], dy) }
            case .relu6:
                let y = pass.values[step.output]!
                y.withUnsafeBufferPointer { yp in
                    dy.withUnsafeMutableBufferPointer { GradientKernels.relu6Backward(output: yp.baseAddress!, dy: $0.baseAddress!, count: count, into: $0.baseAddress!) }
                }
                accumulate(&upstream, step.inputs[0], dy)
            case .zeroPadding(let p):
                let dx = dy.withUnsafeBufferPointer { gp in
                    Self.array(inputCount) { GradientKernels.zeroPaddingBackward(gp.baseAddress!, batch: n, height: shape[0], width: shape[1], channels: shape[2], p, into: $0) }
                }
                accumulate(&upstream, step.inputs[0], dx)
            case .add:
                for (input, needed) in zip(step.inputs, step.inputGradients) where needed { accumulate(&upstream, input, dy) }
            }
            for value in plan.releasedAfterBackward[s] { pass.values[value] = nil }
        }
        for path in trainableVariables where gradients[path] == nil {
            gradients[path] = Tensor(shape: variableShapes[path]!)
        }
        return gradients
    }

    private func accumulate(_ upstream: inout [[Float]?], _ value: Int, _ g: [Float]) {
        guard var existing = upstream[value] else { upstream[value] = g; return }
        upstream[value] = nil
        precondition(existing.count == g.count, "gradient sizes differ")
        existing.withUnsafeMutableBufferPointer { e in
            g.withUnsafeBufferPointer { GradientKernels.add(e.baseAddress!, $0.baseAddress!, count: g.count, into: e.baseAddress!) }
        }
        upstream[value] = existing
    }

    /// The loss, the logits and the gradient of every trainable variable for one batch: a
    /// training pass, ``SoftmaxCrossEntropy`` (in Double on the logits) and ``backward(_:logitsGradient:)``.
    ///
    /// - Parameters:
    ///   - entry: `[N] + entryShape`, the ``entryLayer``'s output for the batch.
    ///   - labels: `N` class indices in `0..<classes`.
    ///   - loss: the loss (label smoothing, class weights); ``classifierL2`` is added to it.
    ///   - training: whether Dropout is active.
    ///   - random: the Dropout mask's generator.
    /// - Throws: ``FineTuningError/entryShape(layer:expected:found:)``, ``FineTuningError/labels(_:)``.
    public func lossAndGradients(entry: Tensor, labels: [Int], loss: SoftmaxCrossEntropy, training: Bool,
                                 random: inout SplitMix64) throws(FineTuningError) -> (loss: Double, logits: Tensor, gradients: [String: Tensor]) {
        let pass = try forward(entry: entry, training: training, random: &random)
        let logits = pass.logits
        let (crossEntropy, dlogits) = try loss.evaluate(logits: DoubleTensor(logits), labels: labels)
        var value = crossEntropy
        var gradients = backward(pass, logitsGradient: dlogits.floatTensor)
        let kernelPath = FineTuningModel.classifierKernel
        if classifierL2 != 0, let kernel = variables[kernelPath], var g = gradients[kernelPath] {
            let penalty = L2Penalty(classifierL2)
            value += penalty.loss(of: kernel)
            penalty.addGradient(of: kernel, to: &g.scalars)
            gradients[kernelPath] = g
        }
        return (value, logits, gradients)
    }

    // MARK: Updates

    /// Applies one optimiser step to the trainable variables (``trainableVariables`` order), with
    /// Keras's update rule (``Optimizer/update(_:gradients:)-([[Float]],_)``).
    ///
    /// - Throws: ``FineTuningError/gradients(_:)`` when a trainable variable has no gradient or
    ///   one of another size (nothing is changed then).
    public mutating func apply(_ gradients: [String: Tensor], optimizer: inout Optimizer) throws(FineTuningError) {
        try optimizer.update(&variables, paths: trainableVariables, gradients: gradients.mapValues(\.scalars))
    }

    /// Replaces a variable's values.
    ///
    /// - Throws: ``FineTuningError/gradients(_:)`` for a path the network does not hold or another value count.
    public mutating func setVariable(_ path: String, _ values: [Float]) throws(FineTuningError) {
        try replaceVariable(&variables, path, values)
    }

    // MARK: Weights

    /// The weights of the trained layers, `layers[fineTuneAt...]` (all their variables: kernels,
    /// γ, β and the frozen moving statistics) and the `predictions` head, in Keras order, as a
    /// top-level ``/MobileNetModel/KerasWeightSet`` with Keras variable names (`kernel`,
    /// `depthwise_kernel`, `gamma`, `beta`, `moving_mean`, `moving_variance`, `bias`).
    ///
    /// Merged over the backbone's weights (``/MobileNetModel/KerasWeightSet/replacingLayers(with:)``)
    /// they give the fine-tuned network, which the inference model loads with
    /// `includeTop: true, classes: classes, classifierActivation: .none` (or `.softmax`).
    public func trainedWeights() -> KerasWeightSet {
        var result: [KerasLayerWeights] = []
        let trained = layers[min(fineTuneAt, layers.count)...].filter { !$0.weights.isEmpty }
        for layer in trained {
            result.append(KerasLayerWeights(name: layer.name, arrays: layer.weights.map { spec in
                WeightArray(name: spec.name, shape: spec.shape, values: variables[FineTuningModel.path(layer: layer.name, variable: spec.name)]!)
            }))
        }
        let head = FineTuningModel.classifierLayer
        result.append(KerasLayerWeights(name: head, arrays: [
            WeightArray(name: "kernel", shape: variableShapes[FineTuningModel.classifierKernel]!, values: variables[FineTuningModel.classifierKernel]!),
            WeightArray(name: "bias", shape: variableShapes[FineTuningModel.classifierBias]!, values: variables[FineTuningModel.classifierBias]!),
        ]))
        return KerasWeightSet(source: "fine-tuned layers (fine_tune_at \(fineTuneAt))", layers: result)
    }
}

/// The steps of a ``FineTuningNetwork`` after its entry, and what each pass keeps and releases.
struct Plan: Sendable {
    /// One operation: a Keras layer, or a BatchNorm and the ReLU6 after it fused.
    struct Step: Sendable {
        enum Operation: Sendable {
            /// `Conv2D` with the kernel at this path.
            case convolution(String)
            /// `DepthwiseConv2D` with the kernel at this path.
            case depthwise(String)
            /// Inference-mode BatchNorm of this layer, with the next ReLU6 fused when `relu6`.
            case batchNorm(layer: String, epsilon: Float, relu6: Bool)
            case relu6
            case zeroPadding(Padding)
            case add
        }
        var operation: Operation
        /// The first layer of the step.
        var first: Int
        /// The layer whose output the step produces (the ReLU6 of a fused step).
        var output: Int
        /// The layers whose outputs it reads.
        var inputs: [Int]
        /// Per-image shapes of `inputs[0]` and of the output.
        var inputShape: [Int], outputShape: [Int]
        /// Convolution window (1 and `.valid` for other steps).
        var kernelSize = 1, stride = 1, padding = Padding.valid
        /// Whether the step has trainable variables (its first layer is at or after the fine-tune point).
        var trainable = false
        /// Per input, whether the backward pass computes its gradient.
        var inputGradients: [Bool] = []
        /// Whether the backward pass does anything for this step.
        var active = false
    }

    var steps: [Step]
    /// Per layer index: the last step reading its output in the forward pass (-1: none).
    var lastForwardUse: [Int]
    /// Per layer index: whether a training pass keeps its output for the backward pass.
    var kept: [Bool]
    /// Per layer index: whether its output needs a gradient (its producer's backward is active).
    var needsGradient: [Bool]
    /// Per step: the kept values whose last backward reader is this step.
    var releasedAfterBackward: [[Int]]

    init(layers: [LayerSpec], entry: Int, fineTuneAt: Int) {
        let index = Dictionary(uniqueKeysWithValues: layers.enumerated().map { ($1.name, $0) })
        var readers = [Int](repeating: 0, count: layers.count)
        for layer in layers { for input in layer.inputs { readers[index[input]!] += 1 } }
        var producer = [Int](repeating: -1, count: layers.count)
        var steps: [Step] = []
        var i = entry + 1
        while i < layers.count {
            let layer = layers[i]
            let inputs = layer.inputs.map { index[$0]! }
            let inShape = layers[inputs[0]].outputShape
            var step = Step(operation: .add, first: i, output: i, inputs: inputs, inputShape: inShape, outputShape: layer.outputShape)
            switch layer.kind {
            case .conv2D(_, let k, let s):
                step.operation = .convolution(FineTuningModel.path(layer: layer.name, variable: "kernel"))
                (step.kernelSize, step.stride) = (k, s)
                step.padding = ReferenceGradientKernels.samePadding(height: inShape[0], width: inShape[1], kernel: k, stride: s)
            case .depthwiseConv2D(let k, let s, let same):
                step.operation = .depthwise(FineTuningModel.path(layer: layer.name, variable: "depthwise_kernel"))
                (step.kernelSize, step.stride) = (k, s)
                step.padding = same ? ReferenceGradientKernels.samePadding(height: inShape[0], width: inShape[1], kernel: k, stride: s) : .valid
            case .batchNorm(let epsilon):
                let fuse = i + 1 < layers.count && layers[i + 1].kind == .relu6 && layers[i + 1].inputs == [layer.name] && readers[i] == 1
                step.operation = .batchNorm(layer: layer.name, epsilon: epsilon, relu6: fuse)
                if fuse {
                    step.output = i + 1
                    step.outputShape = layers[i + 1].outputShape
                }
            case .relu6: step.operation = .relu6
            case .zeroPadding(let p): step.operation = .zeroPadding(p)
            case .add: step.operation = .add
            case .input, .globalAveragePool, .globalMaxPool, .dense:
                preconditionFailure("layer \(layer.name) is not part of the backbone body")
            }
            step.trainable = i >= fineTuneAt && !layer.weights.isEmpty
            step.inputGradients = inputs.map { producer[$0] >= 0 && steps[producer[$0]].active }
            step.active = step.trainable || step.inputGradients.contains(true)
            producer[step.output] = steps.count
            steps.append(step)
            i = step.output + 1
        }
        var lastForwardUse = [Int](repeating: -1, count: layers.count)
        var kept = [Bool](repeating: false, count: layers.count)
        var lastBackwardReader = [Int](repeating: Int.max, count: layers.count)
        for (s, step) in steps.enumerated() {
            for input in step.inputs { lastForwardUse[input] = s }
            guard step.active else { continue }
            var reads: [Int] = []
            switch step.operation {
            case .convolution, .depthwise: reads = [step.inputs[0]]
            case .batchNorm(_, _, let relu6):
                if step.trainable { reads.append(step.inputs[0]) }
                if relu6 { reads.append(step.output) }
            case .relu6: reads = [step.output]
            case .zeroPadding, .add: break
            }
            for value in reads {
                kept[value] = true
                lastBackwardReader[value] = min(lastBackwardReader[value], s)
            }
        }
        var released = [[Int]](repeating: [], count: steps.count)
        for (value, s) in lastBackwardReader.enumerated() where s != Int.max { released[s].append(value) }
        self.steps = steps
        self.lastForwardUse = lastForwardUse
        self.kept = kept
        self.needsGradient = producer.map { $0 >= 0 && steps[$0].active }
        self.releasedAfterBackward = released
    }
}
