import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// The reference backward pass checked without TensorFlow: central finite differences on a tiny
/// network, the memory policy, the frozen part and the error cases.
@Suite("Fine-tuning reference backward pass")
struct FineTuningReferenceTests {
    /// alpha 0.35, 33x32 (odd height, even width: `correct_pad` differs per dimension), 3 classes.
    static let tiny = MobileNetV2Configuration(alpha: 0.35, inputHeight: 33, inputWidth: 32, includeTop: true, classes: 3, classifierActivation: .none)

    static func tinyModel(fineTuneAt: Int, dropout: Double = 0.3) throws -> FineTuningModel {
        try FineTuningModel(configuration: tiny, weights: FormulaWeights.weights(for: tiny, seed: 21), fineTuneAt: fineTuneAt, dropout: dropout)
    }

    /// Every trainable variable of the whole network (fine-tune point 1: `Conv1` included), with
    /// Dropout active under a fixed mask: two random coordinates per tensor, central differences
    /// `(L(w + h) − L(w − h)) / 2h` with h = 1e-5 in Double, agree with the backward pass within
    /// 1e-7 + 1e-4 of the gradient.
    @Test("gradients equal central finite differences on a tiny network")
    func finiteDifferences() throws {
        var model = try Self.tinyModel(fineTuneAt: 1)
        let input = DoubleTensor(FormulaWeights.input(seed: 21, batch: 1, height: 33, width: 32))
        let labels = [2]
        let loss = try SoftmaxCrossEntropy(labelSmoothing: 0.1)
        func evaluate(_ m: FineTuningModel) throws -> Double {
            var random = SplitMix64(seed: 5)  // the same Dropout mask every time
            return try loss.evaluate(logits: m.forward(input, training: true, random: &random).logits, labels: labels).loss
        }
        var random = SplitMix64(seed: 5)
        let pass = try model.forward(input, training: true, random: &random)
        #expect(pass.dropoutMask?.contains(0) == true, "the Dropout mask drops nothing; the test would not cover it")
        let gradients = model.backward(pass, logitsGradient: try loss.evaluate(logits: pass.logits, labels: labels).gradient)
        #expect(gradients.count == model.trainableVariables.count)
        #expect(model.trainableVariables.contains("Conv1/kernel") && model.trainableVariables.contains("block_1_depthwise/kernel"))

        var pick = SplitMix64(seed: 99)
        let h = 1e-5
        var checked = 0, worst = 0.0
        for path in model.trainableVariables {
            let original = model.variables[path]!
            let analytic = gradients[path]!.scalars
            for _ in 0..<2 {
                let i = Int(pick.next() % UInt64(original.count))
                var values = original
                values[i] = original[i] + h
                try model.setVariable(path, values)
                let plus = try evaluate(model)
                values[i] = original[i] - h
                try model.setVariable(path, values)
                let minus = try evaluate(model)
                try model.setVariable(path, original)
                let numeric = (plus - minus) / (2 * h)
                let error = abs(numeric - analytic[i])
                worst = max(worst, error / max(abs(analytic[i]), 1e-7))
                #expect(error <= 1e-7 + 1e-4 * abs(analytic[i]), "\(path)[\(i)]: backward \(analytic[i]), finite difference \(numeric)")
                checked += 1
            }
        }
        #expect(checked == 2 * model.trainableVariables.count)
        print("finite differences: \(checked) coordinates of \(model.trainableVariables.count) tensors, worst relative error \(worst)")
    }

    /// Only the inputs of trainable layers are kept; the frozen part's activations are not.
    @Test("a forward pass keeps activations only from the first trainable layer")
    func keptActivations() throws {
        let model = try Self.tinyModel(fineTuneAt: 100)
        var random = SplitMix64(seed: 1)
        let pass = try model.forward(FormulaWeights.input(seed: 21, batch: 1, height: 33, width: 32), training: false, random: &random)
        let trainableInputs = Set(model.layers[100...].flatMap(\.inputs))
        #expect(Set(pass.activations.keys) == trainableInputs)
        let index = Dictionary(uniqueKeysWithValues: model.layers.enumerated().map { ($1.name, $0) })
        // block_11_add reads block_10_project_BN (97): the only frozen activation besides layer 99's.
        #expect(pass.activations.keys.compactMap { index[$0] }.filter { $0 < 99 }.sorted() == [97])
        #expect(pass.activations.count < model.layers.count / 2)
    }

    /// One step changes every trainable variable and no frozen one, BatchNorm moving statistics included.
    @Test("an optimiser step trains layers[N:] and the head, and leaves the frozen part and the moving statistics")
    func frozenPart() throws {
        var model = try Self.tinyModel(fineTuneAt: 116, dropout: 0)
        let before = model.variables
        var random = SplitMix64(seed: 1)
        let result = try model.lossAndGradients(FormulaWeights.input(seed: 21, batch: 2, height: 33, width: 32), labels: [0, 1],
                                                loss: SoftmaxCrossEntropy(), training: true, random: &random)
        var optimizer = Optimizer(.rmsprop(learningRate: 1e-3))
        try model.apply(result.gradients, optimizer: &optimizer)
        let trainable = Set(model.trainableVariables)
        #expect(trainable.contains("block_13_expand/kernel") && !trainable.contains("block_12_project/kernel"))
        #expect(trainable.contains("block_13_expand_BN/gamma") && !trainable.contains("block_13_expand_BN/moving_mean"))
        for (path, values) in model.variables {
            if trainable.contains(path) {
                #expect(values != before[path], "\(path) is trainable but did not change")
            } else {
                #expect(values == before[path], "\(path) is frozen but changed")
            }
        }
        #expect(optimizer.step == 1)
    }

    @Test("bad fine-tune points, dropout rates, inputs and labels are typed errors")
    func errors() throws {
        let weights = try FormulaWeights.weights(for: Self.tiny, seed: 21)
        #expect(throws: FineTuningError.fineTunePointOutOfRange(155, layerCount: 154)) {
            try FineTuningModel(configuration: Self.tiny, weights: weights, fineTuneAt: 155)
        }
        #expect(throws: FineTuningError.invalidDropout(1)) { try FineTuningModel(configuration: Self.tiny, weights: weights, fineTuneAt: 100, dropout: 1) }
        #expect(throws: FineTuningError.self) {
            try FineTuningModel(configuration: Self.tiny, weights: weights.droppingClassifier(), fineTuneAt: 100)
        }
        #expect(throws: FineTuningError.invalidLabelSmoothing(1.5)) { try SoftmaxCrossEntropy(labelSmoothing: 1.5) }
        let model = try FineTuningModel(configuration: Self.tiny, weights: weights, fineTuneAt: 154)
        #expect(model.trainableVariables == ["predictions/kernel", "predictions/bias"])
        var random = SplitMix64(seed: 1)
        #expect(throws: FineTuningError.self) { try model.forward(Tensor(shape: [1, 32, 33, 3]), training: false, random: &random) }
        let input = Tensor(shape: [2, 33, 32, 3])
        #expect(throws: FineTuningError.labels("label 3 is not in 0..<3")) {
            try model.lossAndGradients(input, labels: [0, 3], loss: SoftmaxCrossEntropy(), training: false, random: &random)
        }
        #expect(throws: FineTuningError.labels("1 labels for a batch of 2")) {
            try model.lossAndGradients(input, labels: [0], loss: SoftmaxCrossEntropy(), training: false, random: &random)
        }
    }
}
