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
    /// The pooled embedding of each of ``files`` (`[C]`, 0...6), from the same network pass, when
    /// the pipeline was made with `embeddings: true`; empty otherwise.
    public var embeddings: [[Float]]
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
    /// Whether each batch also carries the pooled embeddings (``ImageBatch/embeddings``), from
    /// the same pass (``/MobileNetModel/MobileNetV2/forward(_:)``).
    public let embeddings: Bool

    /// The most input bytes one network batch may hold (1 GB): a larger batch size is reduced
    /// to fit. With the look-ahead, at most `(lookahead + 1)` batches of decoded input are held.
    public static let maximumBatchBytes = 1 << 30

    /// Decoding threads used by default: half the cores (at least one), leaving the others to
    /// the network's threads. On a 2-core machine: one.
    public static var defaultDecodeThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / 2) }

    /// Creates a pipeline.
    ///
    /// - Parameters:
    ///   - model: the network, run on the calling thread.
    ///   - preprocessor: by default ``/MobileNetIO/ImagePreprocessor`` with its defaults at the
    ///     model's input size (`tf.image.resize` bilinear, EXIF applied, `x / 127.5 - 1`).
    ///   - batchSize: files per network batch (default 16; at least 1, and reduced so one batch
    ///     holds at most ``maximumBatchBytes`` of input).
    ///   - decodeThreads: by default ``defaultDecodeThreads``; 0 decodes inline.
    ///   - lookahead: batches decoded ahead of the running one (default 2, at least 1).
    ///   - embeddings: also deliver the pooled embeddings of each batch (one pass).
    public init(model: MobileNetV2, preprocessor: ImagePreprocessor? = nil, batchSize: Int = 16,
                decodeThreads: Int? = nil, lookahead: Int = 2, embeddings: Bool = false) {
        self.model = model
        self.preprocessor = preprocessor ?? ImagePreprocessor(height: model.configuration.inputHeight, width: model.configuration.inputWidth)
        // One batch's input never exceeds ``maximumBatchBytes`` (the batch size changes speed and
        // memory, not results).
        let imageBytes = max(1, model.configuration.inputHeight * model.configuration.inputWidth * 3 * MemoryLayout<Float>.size)
        self.batchSize = max(1, min(batchSize, Self.maximumBatchBytes / imageBytes))
        self.decodeThreads = max(0, decodeThreads ?? Self.defaultDecodeThreads)
        self.lookahead = max(1, lookahead)
        self.embeddings = embeddings
    }

    /// Creates a pipeline with the batch size and decoding threads of `runtime`.
    public init(model: MobileNetV2, preprocessor: ImagePreprocessor? = nil, runtime: RuntimeOptions, embeddings: Bool = false) {
        self.init(model: model, preprocessor: preprocessor, batchSize: runtime.batchSize, decodeThreads: runtime.decodeThreads, embeddings: embeddings)
    }

    /// Runs the network over `files`, calling `body` once per batch in input order (also for a
    /// batch whose files all failed, with empty ``ImageBatch/outputs``).
    ///
    /// - Throws: errors thrown by the network or by `body` (never for a bad image). The
    ///   workers are stopped and joined before the error propagates.
    public func run(_ files: [URL], body: (ImageBatch) throws -> Void) throws {
        let preprocessor = self.preprocessor
        try runItems(files, chunk: batchSize, prepare: { (url: URL) throws(ImageError) -> [Tensor] in [try preprocessor.tensor(contentsOf: url)] }) { range, slots, outputs in
            var batch = ImageBatch(files: [], outputs: [], embeddings: [], failures: [], processed: range.upperBound, total: files.count)
            var row = 0
            for (index, slot) in zip(range, slots) {
                switch slot {
                case .inputs:
                    batch.files.append(files[index])
                    batch.outputs.append(outputs.output[row])
                    if self.embeddings { batch.embeddings.append(outputs.embedding[row]) }
                    row += 1
                case .failure(let error):
                    batch.failures.append(EmbeddingFailure(url: files[index], error: error))
                }
            }
            try body(batch)
        }
    }

    /// Network outputs of one batch, one row per prepared input tensor.
    struct Rows {
        var output: [[Float]] = []
        var embedding: [[Float]] = []
    }

    /// The engine behind ``run(_:body:)`` and the augmented-view embedding: `items` (files, or
    /// files with view numbers) are prepared into zero or more input tensors each on the
    /// workers, `chunk` items at a time, and each chunk's tensors go through the network at once.
    ///
    /// - Parameters:
    ///   - prepare: decodes an item into its `[1, H, W, 3]` inputs; called concurrently.
    ///   - body: per chunk, its item range, the slots (in item order) and the network rows of
    ///     the successful slots' tensors, in order.
    func runItems<Item: Sendable>(_ items: [Item], chunk: Int, prepare: @escaping @Sendable (Item) throws(ImageError) -> [Tensor],
                                  body: (Range<Int>, [Slot], Rows) throws -> Void) throws {
        guard !items.isEmpty else { return }
        // No chunk can be larger than the input (also keeps the window arithmetic far from overflow).
        let chunk = max(1, min(chunk, items.count))
        let work: @Sendable (Int) -> Slot = { index in
            do throws(ImageError) {
                return .inputs(try prepare(items[index]))
            } catch {
                return .failure(error)
            }
        }
        func deliver(_ range: Range<Int>, _ slots: [Slot]) throws {
            var inputs: [Tensor] = []
            for slot in slots { if case .inputs(let tensors) = slot { inputs += tensors } }
            var rows = Rows()
            if !inputs.isEmpty {
                let batch = Tensor.concatenatingBatches(inputs)
                if embeddings {
                    let out = try model.forward(batch)
                    rows = Rows(output: out.output.rows, embedding: out.embedding.rows)
                } else {
                    rows.output = try model(batch).rows
                }
            }
            try body(range, slots, rows)
        }
        try DecodeQueue.forEachBatch(count: items.count, batchSize: chunk, lookahead: lookahead, decodeThreads: decodeThreads,
                                     prepare: work, body: deliver)
    }

    /// One prepared item: its input tensors, or why it failed.
    enum Slot: Sendable {
        case inputs([Tensor])
        case failure(ImageError)
    }
}

/// The work shared by the decoding threads: a next-file counter bounded by the batch the
/// consumer is on, and one slot per file, all under one condition variable.
final class DecodeQueue: @unchecked Sendable {
    let count: Int
    let batchSize: Int
    let lookahead: Int
    let prepare: @Sendable (Int) -> ImageBatchPipeline.Slot
    let condition = NSCondition()
    var next = 0
    var consumerBatch = 0
    var slots: [ImageBatchPipeline.Slot?]
    var stopped = false
    var finishedWorkers = 0

    /// Prepares items `0..<count` with `prepare` and calls `body` on the calling thread once per
    /// batch of `batchSize` (≥ 1; the last may be smaller), in order, with the batch's range and
    /// its slots. With `decodeThreads` workers (0: inline, on the calling thread), at most
    /// `lookahead` batches beyond the one being consumed are prepared ahead, which bounds memory.
    ///
    /// - Throws: what `body` throws; the workers finish the item in hand and are joined first.
    static func forEachBatch(count: Int, batchSize: Int, lookahead: Int, decodeThreads: Int,
                             prepare: @escaping @Sendable (Int) -> ImageBatchPipeline.Slot,
                             body: (Range<Int>, [ImageBatchPipeline.Slot]) throws -> Void) throws {
        guard count > 0 else { return }
        let batchSize = max(1, batchSize)
        let batches = (count + batchSize - 1) / batchSize
        func range(_ b: Int) -> Range<Int> { b * batchSize..<min((b + 1) * batchSize, count) }
        if decodeThreads == 0 {
            for b in 0..<batches { try body(range(b), range(b).map(prepare)) }
            return
        }
        let queue = DecodeQueue(count: count, batchSize: batchSize, lookahead: lookahead, prepare: prepare)
        let workers = min(decodeThreads, count)
        for _ in 0..<workers {
            let thread = Thread { queue.work() }
            thread.stackSize = 4 << 20
            thread.start()
        }
        defer { queue.stopAndJoin(workers: workers) }
        for b in 0..<batches { try body(range(b), queue.take(batch: b, range: range(b))) }
    }

    init(count: Int, batchSize: Int, lookahead: Int, prepare: @escaping @Sendable (Int) -> ImageBatchPipeline.Slot) {
        self.count = count
        self.batchSize = batchSize
        self.lookahead = lookahead
        self.prepare = prepare
        self.slots = Array(repeating: nil, count: count)
    }

    /// A worker's loop: take the next item within the look-ahead window, prepare it, store it.
    func work() {
        condition.lock()
        while true {
            while !stopped && next < count && next >= (consumerBatch + 1 + lookahead) * batchSize {
                condition.wait()
            }
            if stopped || next >= count { break }
            let index = next
            next += 1
            condition.unlock()
            let slot = prepare(index)
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
        let taken = range.compactMap { slots[$0] }
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
