import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// The fast `Float` network (``FineTuningNetwork``) against the Double reference
/// (``FineTuningModel``), the TensorFlow fixtures, the oneDNN model that feeds it, and the
/// optimiser: same logits, loss, gradients and steps.
@Suite("Fine-tuning network (Float, fast backward)")
struct FineTuningNetworkTests {
    /// alpha 0.35, 33x41 (odd, non-square: `correct_pad` is ((1,1),(1,1)) then differs per
    /// dimension further down), 3 classes.
    static let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 33, inputWidth: 41, includeTop: true, classes: 3,
                                                        classifierActivation: .none)
    static let seed = 31
    static let layers = (try? MobileNetV2Architecture.layers(for: configuration).prefix { $0.kind != .globalAveragePool }).map(Array.init) ?? []
    static func index(_ name: String) -> Int { layers.firstIndex { $0.name == name } ?? -1 }

    /// Fine-tune points: the whole network (0, 1), inside the stem (3: entry `input_layer`, Conv1
    /// and bn_Conv1 frozen here), the guide's 100 (inside residual block 11), 2 frozen layers
    /// between a tappable entry and the point (`block_13_depthwise_BN`: pad and depthwise), the
    /// start of a block (116), a residual add, and the head alone.
    static let points: [Int] = [0, 1, 3, 100, index("block_13_depthwise_BN"), 116, index("block_15_add"), layers.count]

    static func weights() throws -> KerasWeightSet { try FormulaWeights.weights(for: configuration, seed: seed) }

    static func input(batch: Int) -> Tensor { FormulaWeights.input(seed: seed, batch: batch, height: 33, width: 41) }

    /// The entry activations from the Double reference itself: a reference model whose first
    /// trainable layer is the one after the entry keeps the entry's output. For `out_relu` (a
    /// head-only network), which no reference pass keeps, the plain-Swift Float backend without
    /// folding.
    static func referenceEntry(configuration: MobileNetV2Configuration, weights: KerasWeightSet, layers: [LayerSpec], entry: Int, input: Tensor) throws -> Tensor {
        if entry == 0 { return input }
        if entry == layers.count - 1 {
            var backbone = configuration
            backbone.includeTop = false
            return try MobileNetV2(configuration: backbone, weights: weights.droppingClassifier(), backend: ReferenceBackend(), foldBatchNorm: false).features(input)
        }
        let tap = try FineTuningModel(configuration: configuration, weights: weights, fineTuneAt: entry + 1, dropout: 0)
        var random = SplitMix64(seed: 1)
        return try #require(try tap.forward(input, training: false, random: &random).activations[layers[entry].name]).floatTensor
    }

    static func referenceEntry(_ model: FineTuningModel, entry: Int, input: Tensor) throws -> Tensor {
        try referenceEntry(configuration: model.configuration, weights: weights(), layers: model.layers, entry: entry, input: input)
    }

    static func referenceEntry(fixture: FineTuneManifest.Fixture, model: FineTuningModel, entry: Int, input: Tensor) throws -> Tensor {
        try referenceEntry(configuration: fixture.configuration, weights: FormulaWeights.weights(for: fixture.configuration, seed: fixture.seed),
                           layers: model.layers, entry: entry, input: input)
    }

    // MARK: The entry rule

    /// The rule of `MobileNetV2Architecture.isTappableWithFoldedBatchNorm` is what the folded
    /// graph really offers: the same tappable list, every tappable layer returned by
    /// `activations`, every other one refused with `layerNotTappable`.
    @Test("the folded-BatchNorm tap rule equals what MobileNetV2.activations accepts (oneDNN)")
    func tapRule() throws {
        var backbone = Self.configuration
        backbone.includeTop = false
        let model = try MobileNetV2(configuration: backbone, weights: Self.weights().droppingClassifier())
        #expect(model.foldsBatchNorm)
        let layers = model.layers
        let rule = MobileNetV2Architecture.tappableLayersWithFoldedBatchNorm(layers)
        #expect(rule == model.tappableLayers)
        #expect(rule.contains("block_10_project_BN") && rule.contains("block_11_add") && !rule.contains("block_11_expand_BN") && !rule.contains("block_13_pad"))
        let x = Self.input(batch: 1)
        for (i, layer) in layers.enumerated() where i > 0 {
            if MobileNetV2Architecture.isTappableWithFoldedBatchNorm(layers, at: i) {
                let value = try #require(try model.activations(x, layers: [layer.name])[layer.name])
                #expect(value.shape == [1] + layer.outputShape, "\(layer.name)")
            } else {
                #expect(throws: ModelError.self, "\(layer.name) should not be tappable") { try model.activations(x, layers: [layer.name]) }
            }
        }
        // Unfolded, every layer but the ZeroPadding2D ones (always part of the convolution after them).
        let unfolded = try MobileNetV2(configuration: backbone, weights: Self.weights().droppingClassifier(), backend: ReferenceBackend(), foldBatchNorm: false)
        #expect(unfolded.tappableLayers == layers.filter { !$0.name.hasSuffix("_pad") }.map(\.name))
    }

    /// Keras's `base_model.layers[100]` is `block_11_expand_relu` (the guide's fine_tune_at),
    /// inside residual block 11, so the entry is the block's input `block_10_project_BN`.
    @Test("fine_tune_at 100 is block_11_expand_relu; its entry is block_10_project_BN")
    func guideEntry() throws {
        let layers = Self.layers
        #expect(layers[100].name == "block_11_expand_relu")
        #expect(layers[MobileNetV2Architecture.fineTuningEntry(layers, before: 100)].name == "block_10_project_BN")
        // The same at alpha 1.0, 224x224 (the guide's model).
        let full = try MobileNetV2Architecture.layers(for: MobileNetV2Configuration(alpha: 1, inputHeight: 224, inputWidth: 224, includeTop: false))
        #expect(full[100].name == "block_11_expand_relu" && full[MobileNetV2Architecture.fineTuningEntry(full, before: 100)].name == "block_10_project_BN")
        // Other points: no residual (entry the last tappable layer), a residual add, the stem, the head.
        let entry = { (n: Int) in layers[MobileNetV2Architecture.fineTuningEntry(layers, before: n)].name }
        #expect(entry(Self.index("block_13_depthwise_BN")) == "block_13_expand_relu")
        #expect(entry(Self.index("block_16_project")) == "block_16_depthwise_relu")
        #expect(entry(Self.index("block_15_add")) == "block_14_add")
        #expect(entry(3) == "input_layer" && entry(4) == "Conv1_relu" && entry(0) == "input_layer")
        #expect(entry(layers.count) == "out_relu")
        for n in 0...layers.count {
            let e = MobileNetV2Architecture.fineTuningEntry(layers, before: n)
            #expect(e == 0 || (e < n && MobileNetV2Architecture.isTappableWithFoldedBatchNorm(layers, at: e)))
            // Nothing after the entry reads a layer before it.
            #expect(layers[(e + 1)...].allSatisfy { $0.inputs.allSatisfy { Self.index($0) >= e } })
        }
    }

    // MARK: Against the Double reference

    /// Loss, logits and every gradient (Dropout active, label smoothing) equal the reference's
    /// within 1e-4 of each tensor's norm.
    @Test("loss, logits and gradients equal the Double reference's", arguments: points)
    func gradientsMatchReference(fineTuneAt: Int) throws {
        let reference = try FineTuningModel(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: fineTuneAt, dropout: 0.3)
        let network = FineTuningNetwork(reference)
        #expect(network.trainableVariables == reference.trainableVariables)
        let input = Self.input(batch: 2)
        let entry = try Self.referenceEntry(reference, entry: network.entryIndex, input: input)
        #expect(entry.shape == [2] + network.entryShape)
        let labels = [2, 0]
        let loss = try SoftmaxCrossEntropy(labelSmoothing: 0.1)
        var r1 = SplitMix64(seed: 9), r2 = SplitMix64(seed: 9)
        let expected = try reference.lossAndGradients(input, labels: labels, loss: loss, training: true, random: &r1)
        let ours = try network.lossAndGradients(entry: entry, labels: labels, loss: loss, training: true, random: &r2)
        #expect(r1.state == r2.state, "the Dropout masks were drawn differently")
        #expect(abs(ours.loss - expected.loss) <= 1e-5 * abs(expected.loss), "loss \(ours.loss), reference \(expected.loss)")
        let logitsError = relativeError(ours.logits.scalars.map(Double.init), expected.logits.scalars)
        #expect(logitsError < 1e-5, "logits: relative error \(logitsError)")
        #expect(Set(ours.gradients.keys) == Set(reference.trainableVariables))
        var worst = (0.0, "")
        for path in reference.trainableVariables {
            let g = try #require(ours.gradients[path]), e = try #require(expected.gradients[path])
            #expect(g.shape == e.shape, "\(path)")
            let error = relativeError(g.scalars.map(Double.init), e.scalars)
            if error > worst.0 { worst = (error, path) }
            #expect(error < 1e-4, "\(path): ‖fast − reference‖ / ‖reference‖ = \(error)")
        }
        print("fine-tune at \(fineTuneAt) (entry \(network.entryLayer)): \(reference.trainableVariables.count) gradients, worst \(worst.1) at \(worst.0)")
    }

    @Test("class weights and the classifier's L2 (--balanced, --l2 in phase 2): the fast network equals the reference; the penalty adds l2·Σk² and 2·l2·k")
    func classWeightsAndL2() throws {
        let l2 = 0.01, weights = [0.5, 2.0, 1.25]
        var reference = try FineTuningModel(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: 140, dropout: 0)
        let plain = reference
        reference.classifierL2 = l2
        let network = FineTuningNetwork(reference)
        #expect(network.classifierL2 == l2)
        let input = Self.input(batch: 3)
        let entry = try Self.referenceEntry(reference, entry: network.entryIndex, input: input)
        let labels = [2, 0, 1]
        let weighted = try SoftmaxCrossEntropy(labelSmoothing: 0.1, classWeights: weights)
        var r1 = SplitMix64(seed: 9), r2 = SplitMix64(seed: 9), r3 = SplitMix64(seed: 9)
        let expected = try reference.lossAndGradients(input, labels: labels, loss: weighted, training: true, random: &r1)
        let ours = try network.lossAndGradients(entry: entry, labels: labels, loss: weighted, training: true, random: &r2)
        #expect(abs(ours.loss - expected.loss) <= 1e-5 * abs(expected.loss), "loss \(ours.loss), reference \(expected.loss)")
        for path in reference.trainableVariables {
            let g = try #require(ours.gradients[path]), e = try #require(expected.gradients[path])
            let error = relativeError(g.scalars.map(Double.init), e.scalars)
            #expect(error < 1e-4, "\(path): ‖fast − reference‖ / ‖reference‖ = \(error)")
        }
        // The penalty alone: the same weighted loss without it differs by l2·Σk² and, on the
        // kernel only, by 2·l2·k.
        let unpenalised = try plain.lossAndGradients(input, labels: labels, loss: weighted, training: true, random: &r3)
        let kernel = try #require(reference.variables["predictions/kernel"])
        let penalty = l2 * kernel.reduce(0) { $0 + $1 * $1 }
        #expect(abs(expected.loss - unpenalised.loss - penalty) <= 1e-12 * max(1, penalty))
        for path in reference.trainableVariables {
            let a = try #require(expected.gradients[path]).scalars, b = try #require(unpenalised.gradients[path]).scalars
            let difference = zip(a, b).map { $0 - $1 }
            let wanted = path == "predictions/kernel" ? kernel.map { 2 * l2 * $0 } : [Double](repeating: 0, count: a.count)
            #expect(zip(difference, wanted).allSatisfy { abs($0 - $1) <= 1e-12 }, "\(path)")
        }
    }

    @Test("class weights: the batch loss is (1/N) Σ wᵢ·lossᵢ and each row's gradient is scaled by its weight (Keras sum_over_batch_size)")
    func weightedCrossEntropy() throws {
        let logits = DoubleTensor(shape: [3, 3], scalars: [0.3, -1.2, 2.0, 1.5, 0.1, -0.4, -0.2, 0.9, 0.0])
        let labels = [2, 0, 1], weights = [0.5, 2.0, 1.25]
        let plain = try SoftmaxCrossEntropy(labelSmoothing: 0.1)
        let weighted = try SoftmaxCrossEntropy(labelSmoothing: 0.1, classWeights: weights)
        let (loss, gradient) = try weighted.evaluate(logits: logits, labels: labels)
        var expectedLoss = 0.0
        for i in 0..<3 {
            let row = DoubleTensor(shape: [1, 3], scalars: Array(logits.scalars[(i * 3)..<(i * 3 + 3)]))
            let (rowLoss, rowGradient) = try plain.evaluate(logits: row, labels: [labels[i]])
            expectedLoss += weights[labels[i]] * rowLoss / 3
            for j in 0..<3 { #expect(abs(gradient.scalars[i * 3 + j] - weights[labels[i]] * rowGradient.scalars[j] / 3) < 1e-15) }
        }
        #expect(abs(loss - expectedLoss) < 1e-12)
        // Keras 3.15 (TensorFlow 2.21), float32:
        //   keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        //       to_categorical([2, 0, 1], 3), logits, sample_weight=[1.25, 0.5, 2.0])  -> 0.6395270228385925
        //   and without sample_weight                                                  -> 0.4763214886188507
        #expect(abs(loss - 0.6395270228385925) < 1e-6, "\(loss)")
        #expect(abs(try plain.evaluate(logits: logits, labels: labels).loss - 0.4763214886188507) < 1e-6)
        #expect(weighted.unweighted == plain)
        #expect(throws: FineTuningError.self) { try SoftmaxCrossEntropy(classWeights: [1, -1, 1]) }
        #expect(throws: FineTuningError.self) { try SoftmaxCrossEntropy(classWeights: [1, 1]).evaluate(logits: logits, labels: labels) }
    }

    /// The committed `tf.GradientTape` gradients (the reference's own fixtures), same tolerance.
    @Test("gradients equal tf.GradientTape's (the reference's fixtures)", arguments: FineTuneManifest.shared?.fixtures ?? [])
    func gradientsMatchTensorFlow(_ fixture: FineTuneManifest.Fixture) throws {
        let model = try fixture.model()
        let network = FineTuningNetwork(model)
        #expect(network.trainableVariables == fixture.gradients.map(\.path))
        let c = fixture.configuration
        let input = FormulaWeights.input(seed: fixture.seed, batch: fixture.labels.count, height: c.inputHeight, width: c.inputWidth)
        let entry = try Self.referenceEntry(fixture: fixture, model: model, entry: network.entryIndex, input: input)
        var random = SplitMix64(seed: 1)
        let result = try network.lossAndGradients(entry: entry, labels: fixture.labels, loss: SoftmaxCrossEntropy(labelSmoothing: fixture.label_smoothing),
                                                  training: false, random: &random)
        #expect(abs(result.loss - fixture.loss) <= 1e-5 * abs(fixture.loss), "loss \(result.loss), TensorFlow \(fixture.loss)")
        #expect(relativeError(result.logits.scalars.map(Double.init), fixture.logits.flatMap { $0 }) < 1e-5)
        let expected = try FineTuneManifest.values(fixture.file)
        for variable in fixture.gradients {
            let tf = expected[variable.offset..<(variable.offset + variable.count)].map(Double.init)
            let ours = try #require(result.gradients[variable.path])
            #expect(ours.shape == variable.shape)
            let error = relativeError(ours.scalars.map(Double.init), tf)
            #expect(error < 1e-4, "\(variable.path): ‖ours − tf‖ / ‖tf‖ = \(error)")
        }
    }

    // MARK: Fed by oneDNN

    /// The caller's path: the folded oneDNN model gives the entry activations, the network the
    /// logits; they equal the reference forward pass on the image.
    @Test("oneDNN activations at entryLayer give the reference logits", arguments: [3, 100, index("block_13_depthwise_BN"), 116, layers.count])
    func oneDNNEntry(fineTuneAt: Int) throws {
        let reference = try FineTuningModel(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: fineTuneAt)
        let network = try FineTuningNetwork(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: fineTuneAt)
        var backbone = Self.configuration
        backbone.includeTop = false
        let model = try MobileNetV2(configuration: backbone, weights: Self.weights().droppingClassifier())
        let x = Self.input(batch: 2)
        let entry = network.entryLayer == "input_layer" ? x : try #require(try model.activations(x, layers: [network.entryLayer])[network.entryLayer])
        let logits = try network.logits(entry: entry)
        var random = SplitMix64(seed: 1)
        let expected = try reference.forward(x, training: false, random: &random).logits
        let error = relativeError(logits.scalars.map(Double.init), expected.scalars)
        #expect(error < 1e-4, "entry \(network.entryLayer): logits relative error \(error)")
        // A wrongly shaped entry is a typed error naming the layer.
        #expect(throws: FineTuningError.entryShape(layer: network.entryLayer, expected: network.entryShape, found: [2, 5, 5, 7])) {
            try network.logits(entry: Tensor(shape: [2, 5, 5, 7]))
        }
    }

    // MARK: Optimiser steps and trained weights

    /// Two steps of RMSprop, Adam and SGD with momentum from the same weights: the network's
    /// variables move as the reference's (each with its own gradients).
    @Test("optimizer steps equal the reference's (RMSprop, Adam, SGD with momentum)",
          arguments: [OptimizerSettings.rmsprop(learningRate: 1e-3), .adam(learningRate: 1e-3), .sgd(learningRate: 0.05, momentum: 0.9)])
    func optimizerSteps(_ settings: OptimizerSettings) throws {
        var reference = try FineTuningModel(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: 116, dropout: 0)
        var network = FineTuningNetwork(reference)
        let initial = reference.variables
        let input = Self.input(batch: 2)
        let entry = try Self.referenceEntry(reference, entry: network.entryIndex, input: input)
        var o1 = Optimizer(settings), o2 = Optimizer(settings)
        var random = SplitMix64(seed: 1)
        for _ in 0..<2 {
            let e = try reference.lossAndGradients(input, labels: [1, 2], loss: SoftmaxCrossEntropy(), training: false, random: &random)
            try reference.apply(e.gradients, optimizer: &o1)
            let g = try network.lossAndGradients(entry: entry, labels: [1, 2], loss: SoftmaxCrossEntropy(), training: false, random: &random)
            try network.apply(g.gradients, optimizer: &o2)
        }
        #expect(o2.step == 2)
        for path in reference.trainableVariables {
            let ours = network.variables[path]!.map(Double.init), theirs = reference.variables[path]!, start = initial[path]!
            let changeOurs = zip(ours, start).map { $0 - $1 }, changeTheirs = zip(theirs, start).map { $0 - $1 }
            let weightNorm = start.reduce(0) { $0 + $1 * $1 }.squareRoot()
            var diff = 0.0, change = 0.0
            for i in ours.indices { diff += (changeOurs[i] - changeTheirs[i]) * (changeOurs[i] - changeTheirs[i]); change += changeTheirs[i] * changeTheirs[i] }
            #expect(change > 0, "\(path) did not change")
            // 1e-4 of the change, plus Float rounding of the weights (2^-24 of each value).
            #expect(diff.squareRoot() <= 1e-4 * change.squareRoot() + 1.2e-7 * weightNorm, "\(settings) \(path): ‖Δfast − Δref‖ = \(diff.squareRoot()), ‖Δref‖ = \(change.squareRoot())")
        }
        // Frozen variables the network holds did not move.
        for (path, values) in network.variables where !reference.trainableVariables.contains(path) {
            #expect(values == initial[path]!.map(Float.init), "\(path) is frozen but changed")
        }
    }

    /// After a step, the trained layers and head merged over the backbone's weights build a
    /// oneDNN model whose logits are the network's.
    @Test("trainedWeights merged over the base weights give a oneDNN model with the network's logits")
    func trainedWeights() throws {
        var network = try FineTuningNetwork(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: 100, dropout: 0.2)
        var backbone = Self.configuration
        backbone.includeTop = false
        let base = try MobileNetV2(configuration: backbone, weights: Self.weights().droppingClassifier())
        let x = Self.input(batch: 2)
        let entry = try #require(try base.activations(x, layers: [network.entryLayer])[network.entryLayer])
        var random = SplitMix64(seed: 3)
        var optimizer = Optimizer(.rmsprop(learningRate: 1e-2))
        let step = try network.lossAndGradients(entry: entry, labels: [0, 2], loss: SoftmaxCrossEntropy(), training: true, random: &random)
        try network.apply(step.gradients, optimizer: &optimizer)

        let trained = network.trainedWeights()
        let expectedLayers = Self.layers[100...].filter { !$0.weights.isEmpty }.map(\.name) + ["predictions"]
        #expect(trained.layers.map(\.name) == expectedLayers)
        let merged = try Self.weights().replacingLayers(with: trained)
        #expect(merged.layers.count == (try Self.weights()).layers.count)
        let tuned = try MobileNetV2(configuration: Self.configuration, weights: merged)
        let logits = try #require(try tuned.forward(x).logits)
        let ours = try network.logits(entry: entry)
        let error = relativeError(logits.scalars.map(Double.init), ours.scalars.map(Double.init))
        #expect(error < 1e-4, "oneDNN on the merged weights vs the network: relative error \(error)")
        // The step changed the logits (so the comparison can tell trained from original weights).
        let before = try MobileNetV2(configuration: Self.configuration, weights: Self.weights()).forward(x).logits!
        #expect(relativeError(before.scalars.map(Double.init), ours.scalars.map(Double.init)) > 1e-3)
    }

    /// A training pass keeps what the backward pass reads and no more: nothing below the entry,
    /// no BatchNorm output that a fused ReLU6 follows, fewer bytes than the reference keeps.
    @Test("a training pass keeps only what the backward pass reads")
    func keptActivations() throws {
        let reference = try FineTuningModel(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: 100)
        let network = FineTuningNetwork(reference)
        let input = Self.input(batch: 1)
        let entry = try Self.referenceEntry(reference, entry: network.entryIndex, input: input)
        var random = SplitMix64(seed: 1)
        let pass = try network.forward(entry: entry, training: true, random: &random)
        let kept = pass.keptLayers.map(Self.index)
        #expect(kept.allSatisfy { $0 >= 100 }, "kept below the fine-tune point: \(pass.keptLayers)")
        #expect(!pass.keptLayers.contains { $0.hasSuffix("_expand_BN") || $0.hasSuffix("depthwise_BN") || $0 == "block_10_project_BN" })
        let referencePass = try reference.forward(input, training: true, random: &random)
        let referenceBytes = referencePass.activations.values.reduce(0) { $0 + $1.count } * MemoryLayout<Float>.stride
        #expect(pass.keptBytes < referenceBytes, "kept \(pass.keptBytes) bytes, the reference (as Float) \(referenceBytes)")
        print("fine-tune at 100: kept \(pass.keptLayers.count) activations, \(pass.keptBytes) bytes (reference \(referencePass.activations.count), \(referenceBytes))")
    }

    @Test("bad gradients are typed errors and change nothing")
    func errors() throws {
        var network = try FineTuningNetwork(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: 140)
        let before = network.variables
        var optimizer = Optimizer(.sgd(learningRate: 0.1))
        #expect(throws: FineTuningError.self) { try network.apply([:], optimizer: &optimizer) }
        var wrong = [String: Tensor]()
        for path in network.trainableVariables { wrong[path] = Tensor(shape: [1]) }
        #expect(throws: FineTuningError.self) { try network.apply(wrong, optimizer: &optimizer) }
        #expect(network.variables == before && optimizer.step == 0)
        #expect(throws: FineTuningError.fineTunePointOutOfRange(155, layerCount: 154)) {
            try FineTuningNetwork(configuration: Self.configuration, weights: Self.weights(), fineTuneAt: 155)
        }
    }
}
