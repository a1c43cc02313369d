// FineTuningBenchmark: the speed of one fine-tuning step of FineTuningNetwork (forward, backward
// and an RMSprop update of layers[fine_tune_at:] and the head) on entry activations computed
// beforehand, and, separately, of the frozen oneDNN forward pass up to the entry layer.
//
//     swift run -c release FineTuningBenchmark [--batch 32] [--steps 5] [--fine-tune-at 100]
//         [--size 224] [--alpha 1.0] [--classes 5] [--weights FILE | --random-weights]
//
// Default weights: $MOBILENET_SHARED_DIR (else ../shared)/data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5
// with a Glorot-uniform `predictions` head. scripts/bench/finetune_step.sh runs it under
// /usr/bin/time -v for the peak RSS. Only the public API of `import MobileNet` is used.
import Foundation
import MobileNet

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("FineTuningBenchmark: \(message)\n".utf8))
    exit(2)
}

let options: [String: String] = {
    var parsed: [String: String] = [:]
    var arguments = CommandLine.arguments.dropFirst()
    while let flag = arguments.popFirst() {
        guard flag.hasPrefix("--") else { fail("unexpected argument \(flag)") }
        if flag == "--random-weights" { parsed["random-weights"] = "1"; continue }
        guard let value = arguments.popFirst() else { fail("\(flag) needs a value") }
        parsed[String(flag.dropFirst(2))] = value
    }
    return parsed
}()
func integer(_ name: String, _ fallback: Int) -> Int {
    guard let text = options[name] else { return fallback }
    guard let value = Int(text), value > 0 else { fail("--\(name) must be a positive integer, got \(text)") }
    return value
}
let batch = integer("batch", 32), steps = integer("steps", 5), size = integer("size", 224), classes = integer("classes", 5)
let alpha = Double(options["alpha"] ?? "1.0") ?? 1.0
let fineTuneAt = Int(options["fine-tune-at"] ?? "100") ?? 100

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
/// User + system CPU seconds of the process so far (all threads): on a shared machine, with the
/// wall time, what the step costs when it has the cores to itself.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}
func peakRSSMegabytes() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_maxrss) / 1024
}
func loadAverage() -> String { (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?" }

do {
    var configuration = MobileNetV2Configuration(alpha: alpha, inputHeight: size, inputWidth: size, includeTop: false)
    var backboneWeights: KerasWeightSet
    if options["random-weights"] != nil {
        backboneWeights = try KerasWeightSet.random(for: configuration)
    } else {
        let shared = ProcessInfo.processInfo.environment["MOBILENET_SHARED_DIR"] ?? "../shared"
        let path = options["weights"] ?? "\(shared)/data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5"
        backboneWeights = try KerasWeightFile.read(contentsOf: URL(fileURLWithPath: path)).weights.mobileNetV2Part().droppingClassifier()
    }
    let base = try MobileNetV2(configuration: configuration, weights: backboneWeights)
    // A Glorot-uniform head, as Keras initialises Dense(classes).
    let width = base.embeddingWidth
    var random = SplitMix64(seed: 11)
    let limit = Float((6.0 / Double(width + classes)).squareRoot())
    let head = KerasLayerWeights(name: "predictions", arrays: [
        WeightArray(name: "kernel", shape: [width, classes], values: (0..<(width * classes)).map { _ in (2 * random.uniform() - 1) * limit }),
        WeightArray(name: "bias", shape: [classes], values: [Float](repeating: 0, count: classes)),
    ])
    configuration.includeTop = true
    configuration.classes = classes
    configuration.classifierActivation = .none
    var network = try FineTuningNetwork(configuration: configuration, weights: KerasWeightSet(source: "benchmark", layers: backboneWeights.layers + [head]),
                                        fineTuneAt: fineTuneAt, dropout: 0.2)
    let trainable = network.trainableVariables.reduce(0) { $0 + (network.variableShapes[$1]?.reduce(1, *) ?? 0) }
    print("MobileNetV2 alpha \(alpha) \(size)x\(size), batch \(batch), fine_tune_at \(fineTuneAt) (\(network.layers[min(fineTuneAt, network.layers.count - 1)].name)), entry \(network.entryLayer) \(network.entryShape)")
    print("trainable: \(network.trainableVariables.count) variables, \(trainable) values; loop threads \(GradientKernels.workers); load average \(loadAverage())")

    let input = Tensor(shape: [batch, size, size, 3], scalars: (0..<(batch * size * size * 3)).map { _ in 2 * random.uniform() - 1 })
    let labels = (0..<batch).map { $0 % classes }

    // The frozen part on oneDNN, up to the entry.
    func entry() throws -> Tensor {
        network.entryLayer == "input_layer" ? input : try base.activations(input, layers: [network.entryLayer])[network.entryLayer]!
    }
    var entryActivations = try entry()  // warm-up (builds the tap's executor)
    var start = now(), cpu = cpuSeconds()
    for _ in 0..<steps { entryActivations = try entry() }
    let frozen = (now() - start) / Double(steps), frozenCPU = (cpuSeconds() - cpu) / Double(steps)
    print(String(format: "frozen forward (oneDNN, to %@): %.3f s per batch, %.1f images/s; %.3f CPU s per batch", network.entryLayer, frozen, Double(batch) / frozen, frozenCPU))

    let loss = try SoftmaxCrossEntropy()
    var optimizer = Optimizer(.rmsprop(learningRate: 1e-5))
    func step() throws -> (forward: Double, backward: Double, update: Double, loss: Double) {
        let t0 = now()
        let pass = try network.forward(entry: entryActivations, training: true, random: &random)
        let (value, dlogits) = try loss.evaluate(logits: DoubleTensor(pass.logits), labels: labels)
        let t1 = now()
        let gradients = network.backward(pass, logitsGradient: dlogits.floatTensor)
        let t2 = now()
        try network.apply(gradients, optimizer: &optimizer)
        return (t1 - t0, t2 - t1, now() - t2, value)
    }
    _ = try step()  // warm-up
    var totals = (forward: 0.0, backward: 0.0, update: 0.0)
    start = now()
    cpu = cpuSeconds()
    var last = 0.0
    for _ in 0..<steps {
        let t = try step()
        totals.forward += t.forward; totals.backward += t.backward; totals.update += t.update
        last = t.loss
    }
    let perStep = (now() - start) / Double(steps), stepCPU = (cpuSeconds() - cpu) / Double(steps)
    print(String(format: "training step: %.3f s per batch (forward %.3f, backward %.3f, update %.3f), %.1f images/s; loss %.4f",
                 perStep, totals.forward / Double(steps), totals.backward / Double(steps), totals.update / Double(steps), Double(batch) / perStep, last))
    print(String(format: "training step CPU: %.3f CPU s per batch (%.1f images per CPU second; %d cores would give %.1f images/s at full use)",
                 stepCPU, Double(batch) / stepCPU, ProcessInfo.processInfo.activeProcessorCount, Double(batch * ProcessInfo.processInfo.activeProcessorCount) / stepCPU))
    print(String(format: "whole step with the frozen forward: %.1f images/s", Double(batch) / (perStep + frozen)))
    print(String(format: "peak RSS %.0f MB; load average %@", peakRSSMegabytes(), loadAverage()))
} catch {
    fail("\(error)")
}
