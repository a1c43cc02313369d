import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet bench`: inference latency and throughput of one configuration, for
/// `scripts/bench/peers.py` and for users choosing a backend and thread count.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure inference latency and throughput (random weights unless --weights is given).",
        discussion: """
            Runs --warmup untimed batches, then --iterations timed batches of --batch-size \
            images of the model input size (a fixed random input, NHWC, -1...1), and prints the \
            median, mean, minimum and 90th-percentile batch latency in milliseconds, images per \
            second, the time to build the model and peak resident memory. The work is the \
            classifier (with the top) unless --no-top is given. With --thread-policy adaptive (the \
            default) the timed batches include the runs that retry the other thread count. \
            With --decode DIR the images there are also decoded, resized and preprocessed on \
            one thread (twice; the second pass is timed, so the files are in the page cache) \
            and the median and mean milliseconds per image are reported: the per-image cost \
            outside the network, as a server or `embed` pays it.
            """
    )

    @OptionGroup(title: "Model") var model: BackboneOptions

    @Option(name: .customLong("model"), help: ArgumentHelp("A model file to time instead (any kind `classify --model` takes, a .tflite included: a quantized one runs on its integer kernels); its own input size.", valueName: "path"))
    var modelFile: String?
    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup

    @Option(name: .long, help: "Timed batches.")
    var iterations: Int = 30

    @Option(name: .long, help: "Untimed batches before timing.")
    var warmup: Int = 3

    @Flag(name: .long, help: "Embedding model (no top, average pooling) instead of the classifier.")
    var noTop = false

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Also time decoding + resizing + preprocessing of the images in this folder (or file), one thread.", valueName: "path"))
    var decode: String?

    struct Report: Encodable {
        let backend: String, threads: Int?, microBatch: Int?
        /// The onednn backend's settings (nil for the reference backend).
        let threadPolicy: String?, layoutPolicy: String?, fusesDepthwise: Bool?
        let alpha: Double, inputHeight: Int, inputWidth: Int, batch: Int, iterations: Int
        let buildSeconds: Double, firstBatchSeconds: Double
        let medianMilliseconds: Double, meanMilliseconds: Double, minMilliseconds: Double, p90Milliseconds: Double
        let imagesPerSecond: Double, peakRSSMegabytes: Double
        var decodeImages: Int?, decodeFailures: Int?, decodeMedianMilliseconds: Double?, decodeMeanMilliseconds: Double?
    }

    /// `, fixed policy, library layout, no depthwise fusion` for the settings that differ from
    /// the defaults, or nothing.
    func onednnSettings(_ report: Report) -> String {
        var parts: [String] = []
        if let policy = report.threadPolicy, policy != OneDNNBackend.ThreadPolicy.adaptive.rawValue { parts.append("\(policy) thread policy") }
        if let layout = report.layoutPolicy, layout != OneDNNBackend.LayoutPolicy.blocked.rawValue { parts.append("\(layout) layout") }
        if report.fusesDepthwise == false { parts.append("no depthwise fusion") }
        return parts.map { ", " + $0 }.joined()
    }

    func validate() throws {
        guard (1...1_000_000).contains(iterations), (0...1_000_000).contains(warmup) else {
            throw ValidationError("--iterations must be between 1 and 1000000 and --warmup between 0 and 1000000")
        }
        let (h, w) = try model.inputDimensions()
        let bytes = Double(runtime.batchSize) * Double(h * w * 3 * 4)
        guard bytes <= Double(ImageBatchPipeline.maximumBatchBytes) else {
            throw ValidationError("--batch-size \(runtime.batchSize) at \(h)x\(w) needs \(String(format: "%.1f", bytes / 1e9)) GB of input; at most 1 GB: use a smaller batch")
        }
    }

    func run() async throws {
        let (h, w) = try model.inputDimensions()
        let configuration = try model.configuration(includeTop: !noTop, pooling: .avg)
        let clock = ContinuousClock()
        let buildStart = clock.now
        let backend = runtime.inferenceBackend()
        let network: MobileNetV2
        if let modelFile {
            network = try await ModelFile.open(URL(fileURLWithPath: modelFile), options: ModelOpenOptions(embeddingOnly: noTop), backend: backend).network
        } else if model.weights != nil {
            network = try await MobileNetV2.load(configuration: configuration, weightsPath: model.weights, backend: backend).model
        } else {
            network = try MobileNetV2(configuration: configuration, weights: KerasWeightSet.random(for: configuration), backend: backend)
        }
        let buildSeconds = Self.seconds(clock.now - buildStart)
        let (inputHeight, inputWidth) = modelFile == nil ? (h, w) : (network.configuration.inputHeight, network.configuration.inputWidth)
        let input = Tensor.randomInput(shape: [runtime.batchSize, inputHeight, inputWidth, 3], seed: 42)
        let firstStart = clock.now
        _ = try network(input)
        let firstBatchSeconds = Self.seconds(clock.now - firstStart)
        for _ in 0..<warmup { _ = try network(input) }
        var times: [Double] = []
        for _ in 0..<iterations {
            let start = clock.now
            _ = try network(input)
            times.append(Self.seconds(clock.now - start) * 1000)
        }
        times.sort()
        let median = times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
        let mean = times.reduce(0, +) / Double(times.count)
        let p90 = times[min(times.count - 1, Int((Double(times.count) * 0.9).rounded(.up)) - 1)]
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let onednn = backend as? OneDNNBackend
        var report = Report(
            backend: network.backendName, threads: network.backendName == "onednn" ? (runtime.threads ?? OneDNNBackend.defaultThreads) : nil,
            microBatch: onednn?.microBatch, threadPolicy: onednn?.threadPolicy.rawValue, layoutPolicy: onednn?.layoutPolicy.rawValue,
            fusesDepthwise: onednn?.fusesDepthwise,
            alpha: network.configuration.alpha, inputHeight: inputHeight, inputWidth: inputWidth, batch: runtime.batchSize, iterations: iterations,
            buildSeconds: buildSeconds, firstBatchSeconds: firstBatchSeconds,
            medianMilliseconds: median, meanMilliseconds: mean, minMilliseconds: times[0], p90Milliseconds: p90,
            imagesPerSecond: Double(runtime.batchSize) / (median / 1000), peakRSSMegabytes: Double(usage.ru_maxrss) / 1024)
        if let decode {
            let list = ImageFileList([decode], recursive: true)
            guard !list.files.isEmpty else { throw ValidationError("--decode \(decode): no image files there") }
            let preprocessor = ImagePreprocessor(height: inputHeight, width: inputWidth)
            var decodeTimes: [Double] = []
            var failures = 0
            for pass in 0..<2 {
                for file in list.files {
                    let start = clock.now
                    do { _ = try preprocessor.tensor(contentsOf: file) } catch {
                        if pass == 1 { failures += 1 }
                        continue
                    }
                    if pass == 1 { decodeTimes.append(Self.seconds(clock.now - start) * 1000) }
                }
            }
            decodeTimes.sort()
            report.decodeImages = decodeTimes.count
            report.decodeFailures = failures
            if !decodeTimes.isEmpty {
                report.decodeMedianMilliseconds = decodeTimes[decodeTimes.count / 2]
                report.decodeMeanMilliseconds = decodeTimes.reduce(0, +) / Double(decodeTimes.count)
            }
        }
        if json {
            print(try jsonText(report, pretty: false))
        } else {
            print("""
                \(network.configuration.description), backend \(report.backend)\(report.threads.map { ", \($0) thread\($0 == 1 ? "" : "s")" } ?? "")\(onednnSettings(report)), batch \(report.batch)\(report.microBatch.map { " (micro-batches of \($0))" } ?? "")
                  build \(String(format: "%.3f", buildSeconds)) s, first batch \(String(format: "%.1f", firstBatchSeconds * 1000)) ms
                  latency ms: median \(String(format: "%.2f", median)), mean \(String(format: "%.2f", mean)), min \(String(format: "%.2f", times[0])), p90 \(String(format: "%.2f", p90))
                  throughput \(String(format: "%.1f", report.imagesPerSecond)) images/s, peak RSS \(String(format: "%.0f", report.peakRSSMegabytes)) MB
                """)
            if let images = report.decodeImages, let median = report.decodeMedianMilliseconds, let mean = report.decodeMeanMilliseconds {
                print("  decode + resize + preprocess of \(images) images: median \(String(format: "%.2f", median)) ms, mean \(String(format: "%.2f", mean)) ms per image\(report.decodeFailures.map { $0 > 0 ? " (\($0) failed)" : "" } ?? "")")
            }
        }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}
