import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// The fixtures of `Tests/Fixtures/keras-finetune`, written by
/// `scripts/fixtures/make_finetune_fixtures.py` (TensorFlow 2.21, Keras 3.15.1).
struct FineTuneManifest: Decodable {
    struct Variable: Decodable {
        let path: String, shape: [Int], offset: Int, norm: Double
        init(from decoder: any Decoder) throws {
            var c = try decoder.unkeyedContainer()
            path = try c.decode(String.self)
            shape = try c.decode([Int].self)
            offset = try c.decode(Int.self)
            norm = (try? c.decode(Double.self)) ?? 0
        }
        var count: Int { shape.reduce(1, *) }
    }
    struct Fixture: Decodable, CustomTestStringConvertible, Sendable {
        let name: String, file: String, seed: Int, alpha: Double, input_shape: [Int], fine_tune_at: Int
        let first_trainable_layer: String, labels: [Int], classes: Int, label_smoothing: Double, dropout: Double
        let loss: Double, logits: [[Double]]
        let gradients: [Variable]
        var testDescription: String { name }
        var configuration: MobileNetV2Configuration {
            MobileNetV2Configuration(alpha: alpha, inputHeight: input_shape[0], inputWidth: input_shape[1], includeTop: true,
                                     classes: classes, classifierActivation: .none)
        }
    }
    struct Parameters: Decodable { let learning_rate: Double; let rho: Double?, momentum: Double?, epsilon: Double?, beta_1: Double?, beta_2: Double?
        let centered: Bool?, amsgrad: Bool?, nesterov: Bool? }
    struct Run: Decodable { let optimizer: String; let parameters: Parameters; let steps: [[Variable]] }
    struct OptimizerFixture: Decodable { let fixture: String; let file: String; let variables: [String]; let runs: [Run] }
    let fixtures: [Fixture]
    let optimizer: OptimizerFixture

    static let directory = TestData.fixtures.appendingPathComponent("keras-finetune")
    static let shared: FineTuneManifest? = {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("manifest.json")) else { return nil }
        return try? JSONDecoder().decode(FineTuneManifest.self, from: data)
    }()

    static func values(_ file: String) throws -> [Float] {
        try NPY.read(contentsOf: directory.appendingPathComponent(file)).scalars
    }
}

extension FineTuneManifest.Fixture {
    func model() throws -> FineTuningModel {
        try FineTuningModel(configuration: configuration, weights: FormulaWeights.weights(for: configuration, seed: seed),
                            fineTuneAt: fine_tune_at, dropout: dropout)
    }
}

/// ‖a − b‖ / ‖b‖ (with ‖b‖ floored at `floor`).
func relativeError(_ a: [Double], _ b: [Double], floor: Double = 1e-12) -> Double {
    var d = 0.0, n = 0.0
    for i in a.indices { d += (a[i] - b[i]) * (a[i] - b[i]); n += b[i] * b[i] }
    return d.squareRoot() / max(n.squareRoot(), floor)
}

@Suite("Fine-tuning gradients against TensorFlow")
struct FineTuningGradientTests {
    @Test("the fixture manifest is readable and has the three models")
    func manifest() throws {
        let manifest = try #require(FineTuneManifest.shared, "Tests/Fixtures/keras-finetune/manifest.json is missing or unreadable")
        #expect(manifest.fixtures.map(\.name) == ["a035_33x41_at100", "a035_96x80_at116", "a100_32x32_at146"])
    }

    /// Every trainable variable's gradient equals `tf.GradientTape`'s within 1e-4 of the
    /// tensor's norm; the loss within 1e-5 relative; the trainable variables are Keras's.
    @Test("loss and gradients equal tf.GradientTape's", arguments: FineTuneManifest.shared?.fixtures ?? [])
    func gradients(_ fixture: FineTuneManifest.Fixture) throws {
        let model = try fixture.model()
        #expect(model.layers[fixture.fine_tune_at].name == fixture.first_trainable_layer)
        #expect(model.trainableVariables == fixture.gradients.map(\.path), "trainable variables differ from Keras's model.trainable_variables")
        let c = fixture.configuration
        let input = FormulaWeights.input(seed: fixture.seed, batch: fixture.labels.count, height: c.inputHeight, width: c.inputWidth)
        var random = SplitMix64(seed: 1)
        let result = try model.lossAndGradients(input, labels: fixture.labels, loss: SoftmaxCrossEntropy(labelSmoothing: fixture.label_smoothing),
                                                training: false, random: &random)
        #expect(abs(result.loss - fixture.loss) <= 1e-5 * abs(fixture.loss), "loss \(result.loss), TensorFlow \(fixture.loss)")
        let logitsError = relativeError(result.logits.scalars, fixture.logits.flatMap { $0 })
        #expect(logitsError < 1e-5, "logits differ: relative error \(logitsError)")
        let expected = try FineTuneManifest.values(fixture.file)
        var worst = (0.0, "")
        for variable in fixture.gradients {
            let tf = expected[variable.offset..<(variable.offset + variable.count)].map(Double.init)
            let ours = try #require(result.gradients[variable.path], "no gradient for \(variable.path)")
            #expect(ours.shape == variable.shape, "\(variable.path): shape \(ours.shape), Keras \(variable.shape)")
            let error = relativeError(ours.scalars, tf)
            if error > worst.0 { worst = (error, variable.path) }
            #expect(error < 1e-4, "\(variable.path): ‖ours − tf‖ / ‖tf‖ = \(error) (‖tf‖ = \(variable.norm))")
        }
        #expect(result.gradients.count == fixture.gradients.count)
        print("\(fixture.name): loss \(result.loss) (TensorFlow \(fixture.loss)); worst gradient \(worst.1) at \(worst.0) of its norm")
    }

    /// Keras's RMSprop, Adam and SGD with momentum, two steps with the fixture's tape gradients.
    @Test("optimizer steps equal Keras's (RMSprop, Adam, SGD with momentum)")
    func optimizerSteps() throws {
        let manifest = try #require(FineTuneManifest.shared)
        let fixture = try #require(manifest.fixtures.first { $0.name == manifest.optimizer.fixture })
        let model = try fixture.model()
        let gradientValues = try FineTuneManifest.values(fixture.file)
        let recorded = try FineTuneManifest.values(manifest.optimizer.file)
        let names = manifest.optimizer.variables
        let gradients: [[Double]] = try names.map { name in
            let v = try #require(fixture.gradients.first { $0.path == name })
            return gradientValues[v.offset..<(v.offset + v.count)].map(Double.init)
        }
        #expect(manifest.optimizer.runs.map(\.optimizer) == ["rmsprop", "adam", "sgd"])
        for run in manifest.optimizer.runs {
            let p = run.parameters
            // Our defaults are Keras's: the fixture records the values Keras used.
            let settings: OptimizerSettings, kerasSettings: OptimizerSettings
            switch run.optimizer {
            case "rmsprop":
                settings = .rmsprop(learningRate: p.learning_rate)
                kerasSettings = .rmsprop(learningRate: p.learning_rate, rho: try #require(p.rho), momentum: try #require(p.momentum), epsilon: try #require(p.epsilon))
            case "adam":
                settings = .adam(learningRate: p.learning_rate)
                kerasSettings = .adam(learningRate: p.learning_rate, beta1: try #require(p.beta_1), beta2: try #require(p.beta_2), epsilon: try #require(p.epsilon))
            default:
                settings = .sgd(learningRate: p.learning_rate, momentum: try #require(p.momentum))
                kerasSettings = settings
            }
            #expect(p.centered != true && p.amsgrad != true && p.nesterov != true)
            #expect(settings == kerasSettings, "\(run.optimizer): defaults \(settings), Keras \(kerasSettings)")
            var optimizer = Optimizer(settings)
            let initial = names.map { model.variables[$0]! }
            var parameters = initial
            for (stepIndex, step) in run.steps.enumerated() {
                optimizer.update(&parameters, gradients: gradients)
                for (k, variable) in step.enumerated() {
                    #expect(variable.path == names[k])
                    let keras = recorded[variable.offset..<(variable.offset + variable.count)].map(Double.init)
                    // Compare the total change from the initial weights; Keras works in float32, so
                    // allow its rounding of the weights (2^-24 of each value) on top of 1e-4 of the change.
                    var diff2 = 0.0, change2 = 0.0, weight2 = 0.0
                    for i in keras.indices {
                        let ours = parameters[k][i] - initial[k][i], theirs = keras[i] - initial[k][i]
                        diff2 += (ours - theirs) * (ours - theirs)
                        change2 += theirs * theirs
                        weight2 += initial[k][i] * initial[k][i]
                    }
                    let (diff, changeNorm, weightNorm) = (diff2.squareRoot(), change2.squareRoot(), weight2.squareRoot())
                    #expect(changeNorm > 0, "\(run.optimizer) step \(stepIndex + 1) \(variable.path): Keras did not change it")
                    #expect(diff <= 1e-4 * changeNorm + 1.2e-7 * weightNorm,
                            "\(run.optimizer) step \(stepIndex + 1) \(variable.path): ‖Δours − Δkeras‖ = \(diff), ‖Δkeras‖ = \(changeNorm)")
                }
            }
        }

        // The comparison can fail: RMSprop with ε outside the square root (`lr·g / (√a + ε)`, the
        // TF1 / PyTorch placement) is told apart from Keras's first step on these gradients.
        let rmsprop = try #require(manifest.optimizer.runs.first { $0.optimizer == "rmsprop" })
        var distinguished = false
        for (k, variable) in rmsprop.steps[0].enumerated() {
            let keras = recorded[variable.offset..<(variable.offset + variable.count)].map(Double.init)
            let initial = model.variables[names[k]]!
            var diff2 = 0.0, change2 = 0.0, weight2 = 0.0
            for i in keras.indices {
                let g = gradients[k][i]
                let wrong = -rmsprop.parameters.learning_rate * g / ((0.1 * g * g).squareRoot() + 1e-7)
                let theirs = keras[i] - initial[i]
                diff2 += (wrong - theirs) * (wrong - theirs)
                change2 += theirs * theirs
                weight2 += initial[i] * initial[i]
            }
            if diff2.squareRoot() > 1e-4 * change2.squareRoot() + 1.2e-7 * weight2.squareRoot() { distinguished = true }
        }
        #expect(distinguished, "the tolerance cannot tell where RMSprop's epsilon goes")
    }
}
