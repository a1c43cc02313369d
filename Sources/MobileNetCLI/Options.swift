import ArgumentParser
import Foundation
import MobileNet

/// Options that choose the network and its weights, shared by the subcommands.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Keras weight file (.h5, .weights.h5 or .keras).",
        discussion: "Without it: $MOBILENET_WEIGHTS, then the cache ($MOBILENET_CACHE_DIR or ~/.cache/swift-mobilenet, and ~/.keras/models), then the official Keras download.",
        valueName: "path"))
    var weights: String?

    @Option(name: .long, help: "Width multiplier: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for the ImageNet weights.")
    var alpha: Double = 1.0

    @Option(name: .long, help: ArgumentHelp("Model input size: N for NxN, or HxW.", valueName: "size"))
    var inputSize: String = "224"

    @Option(name: .long, help: "Images per inference batch.")
    var batchSize: Int = 16

    @Option(name: .long, help: ArgumentHelp("Inference backend: onednn (fast, the default) or reference (plain Swift, for debugging).", valueName: "name"))
    var backend: BackendChoice = .onednn

    @Option(name: .long, help: ArgumentHelp("Inference threads for the onednn backend (default: all cores).", valueName: "n"))
    var threads: Int?

    @Option(name: .long, help: ArgumentHelp("Largest batch the onednn backend runs at once; bigger batches are split (default: 4, or $MOBILENET_MICRO_BATCH). Changes speed and memory; results only within float rounding.", valueName: "n"))
    var microBatch: Int?

    /// The backend chosen with `--backend`, `--threads` and `--micro-batch`.
    func inferenceBackend() -> any InferenceBackend {
        switch backend {
        case .onednn: OneDNNBackend(threads: threads, microBatch: microBatch)
        case .reference: ReferenceBackend()
        }
    }

    func inputDimensions() throws -> (height: Int, width: Int) {
        let parts = inputSize.lowercased().split(separator: "x").map { Int($0) }
        if parts.count == 1, let n = parts[0] { return (n, n) }
        if parts.count == 2, let h = parts[0], let w = parts[1] { return (h, w) }
        throw ValidationError("--input-size must be N or HxW, got '\(inputSize)'")
    }

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let microBatch, microBatch < 1 { throw ValidationError("--micro-batch must be at least 1") }
        let (h, w) = try inputDimensions()
        guard h >= 32, w >= 32 else { throw ValidationError("--input-size must be at least 32x32") }
        guard alpha > 0 else { throw ValidationError("--alpha must be positive") }
    }

    /// Finds and reads the weight file.
    func loadWeights(includeTop: Bool) async throws -> KerasWeightSet {
        let (h, w) = try inputDimensions()
        // The weights do not depend on the input size; like Keras, use the 224 file for sizes
        // that have no file of their own.
        let size = h == w && MobileNetV2Configuration.officialInputSizes.contains(h) ? h : 224
        let url = try await WeightsResolver().resolve(alpha: alpha, inputSize: size, includeTop: includeTop, explicitPath: weights)
        return try KerasWeightFile.read(contentsOf: url).weights.mobileNetV2Part()
    }
}

/// `--decode-threads`, for the commands that read image files.
struct DecodeOptions: ParsableArguments {
    @Option(name: .customLong("decode-threads"), help: ArgumentHelp("Threads that decode and resize images while the network runs (0: decode in line, no overlap; default: half the cores, at least 1).", valueName: "n"))
    var threads: Int?

    func validate() throws {
        if let threads, threads < 0 { throw ValidationError("--decode-threads must be 0 or more") }
    }
}

/// The values of `--backend`.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case onednn, reference
}

/// Writes a line to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Image file extensions: a file found in a directory with one of them is treated as an image
/// even when it fails to decode (so a broken photo is reported, not silently skipped).
let imageExtensions: Set<String> = ["jpg", "jpeg", "jpe", "png", "gif", "bmp", "webp", "tif", "tiff"]

/// Whether a file found in a directory should be processed: an image extension, or bytes that
/// start like an image (a PNG named `.JPEG`, a JPEG without extension). Other files (notes,
/// sidecars) are skipped with a warning.
func looksLikeImage(_ url: URL) -> Bool {
    if imageExtensions.contains(url.pathExtension.lowercased()) { return true }
    guard let handle = try? FileHandle(forReadingFrom: url) else { return true }
    defer { try? handle.close() }
    let head = (try? handle.read(upToCount: 16)) ?? Data()
    return ImageFormat.detect(head) != nil
}

/// The image files named on the command line: files as given, directories expanded to the
/// regular files they contain (sorted by path; recursively with `recursive`), hidden files and
/// non-image files skipped (with a warning on standard error for the latter).
func collectImageFiles(_ arguments: [String], recursive: Bool) -> (files: [URL], errors: [String]) {
    var files: [URL] = []
    var errors: [String] = []
    let manager = FileManager.default
    for argument in arguments {
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: argument, isDirectory: &isDirectory) else {
            errors.append("\(argument): no such file or directory")
            continue
        }
        guard isDirectory.boolValue else {
            files.append(URL(fileURLWithPath: argument))
            continue
        }
        let root = URL(fileURLWithPath: argument, isDirectory: true)
        var found: [URL] = []
        if recursive {
            let enumerator = manager.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey], options: [.skipsHiddenFiles])
            while let url = enumerator?.nextObject() as? URL {
                if (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true { found.append(url) }
            }
        } else {
            let names = (try? manager.contentsOfDirectory(atPath: root.path)) ?? []
            for name in names where !name.hasPrefix(".") {
                let url = root.appendingPathComponent(name)
                var childIsDirectory: ObjCBool = false
                if manager.fileExists(atPath: url.path, isDirectory: &childIsDirectory), !childIsDirectory.boolValue { found.append(url) }
            }
        }
        for url in found.sorted(by: { $0.path < $1.path }) {
            if looksLikeImage(url) {
                files.append(url)
            } else {
                printError("warning: skipping \(url.relativePath): not an image")
            }
        }
    }
    return (files, errors)
}

/// Runs `model` over `files` in batches with ``ImageBatchPipeline`` (decoding on worker
/// threads while the network runs): a file that fails is reported through `onError` and
/// skipped, `onResult` receives every successful file's output row in input order, and a
/// progress bar is drawn on standard error when it is a terminal.
func runBatches(
    files: [URL], model: MobileNetV2, batchSize: Int, decodeThreads: Int? = nil, preprocessor: ImagePreprocessor? = nil,
    onResult: (URL, [Float]) throws -> Void, onError: (URL, String) -> Void
) throws {
    let pipeline = ImageBatchPipeline(model: model, preprocessor: preprocessor, batchSize: batchSize, decodeThreads: decodeThreads)
    let progress = ProgressBar(total: files.count, unit: "images")
    defer { progress.finish() }
    try pipeline.run(files) { batch in
        progress.clear()
        for failure in batch.failures { onError(failure.url, failure.message) }
        for (file, row) in zip(batch.files, batch.outputs) { try onResult(file, row) }
        progress.update(done: batch.processed)
    }
}

/// Encodes a value as JSON text with sorted keys.
func jsonText<T: Encodable>(_ value: T, pretty: Bool = true) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
