import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel

/// One batch delivered by ``ImageBatchPipeline/run(_:body:)``.
public struct ImageBatch: Sendable {
    /// The files of this batch that decoded, in input order.
    public var files: [URL]
    /// The network output for each of ``files``, in the same order: one row per file, with
    /// what the model's configuration says: probabilities or logits (`[classes]`), a pooled
    /// embedding (`[channels]`), or without pooling the flattened NHWC feature map
    /// (`[H * W * C]`).
    public var outputs: [[Float]]
    /// The files of this batch that could not be read or decoded, with their typed errors.
    public var failures: [EmbeddingFailure]
    /// How many input files have been handled so far, this batch included (successes and failures).
    public var processed: Int
    /// How many input files the run has in all.
    public var total: Int
}

/// Runs a network over image files with decoding and preprocessing on worker threads while the
/// calling thread runs the network on batches, in input order.
///
/// Files are cut into consecutive chunks of ``batchSize``; each chunk becomes one network batch
/// (`[n, H, W, 3]` NHWC, preprocessed by ``preprocessor``, so values in -1...1 with the default
/// scaling) made of the chunk's files that decoded. While the network runs on batch `b`,
/// ``decodeThreads`` workers prepare batches `b + 1 ... b + lookahead`, so decoding overlaps
/// inference and memory stays bounded (at most `(lookahead + 1) * batchSize` decoded inputs).
///
/// A file that cannot be read or decoded never stops the run: it is reported in
/// ``ImageBatch/failures`` and left out of its batch. Results do not depend on the number of
/// threads: the same files give bit-identical outputs with 0 (inline) or any number of workers.
public struct ImageBatchPipeline {
    /// The network; called only from the thread that calls ``run(_:body:)``.
    public let model: MobileNetV2
    /// Turns a file into a `[1, H, W, 3]` input tensor; called concurrently from the workers.
    public let preprocessor: ImagePreprocessor
    /// Files per network batch (at least 1).
    public let batchSize: Int
    /// Decoding threads besides the caller's. 0 decodes inline on the calling thread, one
    /// batch at a time (no overlap).
    public let decodeThreads: Int
    /// Batches decoded ahead of the one the network is running (at least 1).
    public let lookahead: Int

    /// Decoding threads used by default: half the cores (at least one), leaving the others to
    /// the network's threads. On a 2-core machine: one.
    public static var defaultDecodeThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / 2) }

    /// Creates a pipeline.
    ///
    /// - Parameters:
    ///   - preprocessor: by default ``MobileNetIO/ImagePreprocessor`` with its defaults at the
    ///     model's input size (`tf.image.resize` bilinear, EXIF applied, `x / 127.5 - 1`).
    ///   - decodeThreads: by default ``defaultDecodeThreads``.
    public init(model: MobileNetV2, preprocessor: ImagePreprocessor? = nil, batchSize: Int = 16,
                decodeThreads: Int? = nil, lookahead: Int = 2) {
        self.model = model
        self.preprocessor = preprocessor ?? ImagePreprocessor(height: model.configuration.inputHeight, width: model.configuration.inputWidth)
        self.batchSize = max(1, batchSize)
        self.decodeThreads = max(0, decodeThreads ?? Self.defaultDecodeThreads)
        self.lookahead = max(1, lookahead)
    }

    /// Runs the network over `files`, calling `body` once per batch in input order (also for a
    /// batch whose files all failed, with empty ``ImageBatch/outputs``).
    ///
    /// - Throws: errors thrown by the network or by `body` (never for a bad image). The
    ///   workers are stopped and joined before the error propagates.
    public func run(_ files: [URL], body: (ImageBatch) throws -> Void) throws {
        guard !files.isEmpty else { return }
        // No batch can be larger than the input (also keeps the window arithmetic far from overflow).
        let batchSize = min(self.batchSize, files.count)
        let batches = (files.count + batchSize - 1) / batchSize
        if decodeThreads == 0 {
            for b in 0..<batches {
                let range = b * batchSize..<min((b + 1) * batchSize, files.count)
                let slots = range.map { Self.prepare(files[$0], preprocessor) }
                try deliver(batch: range, slots: slots, files: files, body: body)
            }
            return
        }
        let queue = DecodeQueue(files: files, batchSize: batchSize, lookahead: lookahead, preprocessor: preprocessor)
        let workers = min(decodeThreads, files.count)
        for _ in 0..<workers {
            let thread = Thread { queue.work() }
            thread.stackSize = 4 << 20
            thread.start()
        }
        defer { queue.stopAndJoin(workers: workers) }
        for b in 0..<batches {
            let range = b * batchSize..<min((b + 1) * batchSize, files.count)
            let slots = queue.take(batch: b, range: range)
            try deliver(batch: range, slots: slots, files: files, body: body)
        }
    }

    private func deliver(batch range: Range<Int>, slots: [Slot], files: [URL], body: (ImageBatch) throws -> Void) throws {
        var inputs: [Tensor] = []
        var batch = ImageBatch(files: [], outputs: [], failures: [], processed: range.upperBound, total: files.count)
        for (index, slot) in zip(range, slots) {
            switch slot {
            case .input(let tensor):
                inputs.append(tensor)
                batch.files.append(files[index])
            case .failure(let failure):
                batch.failures.append(failure)
            }
        }
        if !inputs.isEmpty { batch.outputs = try model(Tensor.concatenatingBatches(inputs)).rows }
        try body(batch)
    }

    enum Slot: Sendable {
        case input(Tensor)
        case failure(EmbeddingFailure)
    }

    static func prepare(_ url: URL, _ preprocessor: ImagePreprocessor) -> Slot {
        do {
            return .input(try preprocessor.tensor(contentsOf: url))
        } catch {
            return .failure(EmbeddingFailure(url: url, message: error.description))
        }
    }
}

/// The work shared by the decoding threads: a next-file counter bounded by the batch the
/// consumer is on, and one slot per file, all under one condition variable.
private final class DecodeQueue: @unchecked Sendable {
    let files: [URL]
    let batchSize: Int
    let lookahead: Int
    let preprocessor: ImagePreprocessor
    let condition = NSCondition()
    var next = 0
    var consumerBatch = 0
    var slots: [ImageBatchPipeline.Slot?]
    var stopped = false
    var finishedWorkers = 0

    init(files: [URL], batchSize: Int, lookahead: Int, preprocessor: ImagePreprocessor) {
        self.files = files
        self.batchSize = batchSize
        self.lookahead = lookahead
        self.preprocessor = preprocessor
        self.slots = Array(repeating: nil, count: files.count)
    }

    /// A worker's loop: take the next file within the look-ahead window, decode it, store it.
    func work() {
        condition.lock()
        while true {
            while !stopped && next < files.count && next >= (consumerBatch + 1 + lookahead) * batchSize {
                condition.wait()
            }
            if stopped || next >= files.count { break }
            let index = next
            next += 1
            condition.unlock()
            let slot = ImageBatchPipeline.prepare(files[index], preprocessor)
            condition.lock()
            slots[index] = slot
            condition.broadcast()
        }
        finishedWorkers += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until every file of batch `b` is prepared, hands the slots over and frees them.
    func take(batch b: Int, range: Range<Int>) -> [ImageBatchPipeline.Slot] {
        condition.lock()
        defer { condition.unlock() }
        consumerBatch = b
        condition.broadcast()
        while range.contains(where: { slots[$0] == nil }) { condition.wait() }
        let taken = range.map { slots[$0]! }
        for i in range { slots[i] = nil }
        return taken
    }

    /// Stops the workers (they finish the file in hand) and waits for all of them to exit.
    func stopAndJoin(workers: Int) {
        condition.lock()
        stopped = true
        condition.broadcast()
        while finishedWorkers < workers { condition.wait() }
        condition.unlock()
    }
}
