import Foundation
import MobileNetIO
import MobileNetKernels

/// Prepares network inputs on worker threads, batch by batch and in order, without running a
/// network: the input side of ``ImageBatchPipeline`` for callers that run their own network on
/// each batch (fine-tuning runs the frozen part and a trainable network on it).
///
/// While the caller handles batch `b`, ``decodeThreads`` workers prepare batches
/// `b + 1 ... b + lookahead`; at most `(lookahead + 1) * batchSize` prepared items are held.
/// Results never depend on the number of threads: `prepare` gets the item's index, so any
/// randomness it draws can be derived from the index alone.
public struct PreparedBatches: Sendable {
    /// Items per batch (at least 1).
    public let batchSize: Int
    /// Worker threads besides the caller's; 0 prepares inline on the calling thread.
    public let decodeThreads: Int
    /// Batches prepared ahead of the one the caller is handling (at least 1).
    public let lookahead: Int

    /// Creates a runner.
    ///
    /// - Parameters:
    ///   - batchSize: items per batch (at least 1).
    ///   - decodeThreads: by default ``ImageBatchPipeline/defaultDecodeThreads``; 0 prepares inline.
    ///   - lookahead: batches prepared ahead (default 2, at least 1).
    public init(batchSize: Int, decodeThreads: Int? = nil, lookahead: Int = 2) {
        self.batchSize = max(1, batchSize)
        self.decodeThreads = max(0, decodeThreads ?? ImageBatchPipeline.defaultDecodeThreads)
        self.lookahead = max(1, lookahead)
    }

    /// One prepared item: its `[1, H, W, 3]` input, or why it failed.
    public typealias Prepared = Result<Tensor, ImageError>

    /// Prepares `count` items, `batchSize` at a time, and calls `body` once per batch in order
    /// with the batch's index range and the prepared items (one per index, in order).
    ///
    /// - Parameters:
    ///   - count: the number of items (indices `0..<count`).
    ///   - prepare: makes item `index`'s input; called concurrently from the workers.
    ///   - body: called on the calling thread, once per batch.
    /// - Throws: errors thrown by `body` (never by `prepare`: its failures are delivered). The
    ///   workers are stopped and joined before the error propagates.
    public func run(count: Int, prepare: @escaping @Sendable (Int) throws(ImageError) -> Tensor,
                    body: (Range<Int>, [Prepared]) throws -> Void) throws {
        guard count > 0 else { return }
        let chunk = min(batchSize, count)
        let work: @Sendable (Int) -> ImageBatchPipeline.Slot = { index in
            do throws(ImageError) {
                return .inputs([try prepare(index)])
            } catch {
                return .failure(error)
            }
        }
        func convert(_ slots: [ImageBatchPipeline.Slot]) -> [Prepared] {
            slots.map { slot in
                switch slot {
                case .inputs(let tensors): .success(tensors[0])
                case .failure(let error): .failure(error)
                }
            }
        }
        try DecodeQueue.forEachBatch(count: count, batchSize: chunk, lookahead: lookahead, decodeThreads: decodeThreads,
                                     prepare: work) { range, slots in try body(range, convert(slots)) }
    }
}
