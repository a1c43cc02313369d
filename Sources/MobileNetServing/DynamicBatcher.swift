import Foundation
import MobileNetKernels

/// How a ``DynamicBatcher`` groups requests, with the meaning of TensorFlow Serving's batching
/// parameters.
public struct BatchingConfiguration: Sendable, Hashable {
    /// The most images in one network run (TF Serving `max_batch_size`; default 8). A request
    /// with more images is run in several batches of at most this size.
    public var maxBatchSize: Int
    /// How long the first waiting image may wait for others to fill the batch before the network
    /// runs on what is there (TF Serving `batch_timeout_micros`; default 5 ms).
    public var batchTimeout: Duration
    /// The most images waiting (not yet running) for the model; a request that would exceed it
    /// is refused with ``ServingError/queueFull(model:limit:)`` (TF Serving
    /// `max_enqueued_batches` x `max_batch_size`; default 128).
    public var maxQueuedImages: Int
    /// The longest a request may wait in the queue before its batch starts (default 30 s): a
    /// request that waited longer is not run and fails with ``ServingError/timedOut(model:waited:)``,
    /// so an overloaded server sheds old work instead of answering requests their clients gave up on.
    public var requestTimeout: Duration

    /// Creates a configuration; sizes below 1 are raised to 1, a negative batch timeout to zero
    /// and a request timeout below 1 ms to 1 ms.
    public init(maxBatchSize: Int = 8, batchTimeout: Duration = .milliseconds(5), maxQueuedImages: Int = 128, requestTimeout: Duration = .seconds(30)) {
        self.maxBatchSize = max(1, maxBatchSize)
        self.batchTimeout = max(.zero, batchTimeout)
        self.maxQueuedImages = max(1, maxQueuedImages)
        self.requestTimeout = max(.milliseconds(1), requestTimeout)
    }
}

/// Receives what a ``DynamicBatcher`` does, for metrics. Called on the batcher's thread (or the
/// submitting task for refusals); ``queueDepthChanged(model:depth:)`` is called with the
/// batcher's lock held, so that depths arrive in order: implementations must be quick and
/// thread-safe, and must not call back into the batcher.
public protocol BatcherObserver: Sendable {
    /// A network run over `size` images of `model` took `duration`.
    func batchRan(model: String, size: Int, duration: Duration)
    /// The number of images waiting for `model` changed to `depth`.
    func queueDepthChanged(model: String, depth: Int)
    /// A request of `images` images for `model` was refused because the queue was full.
    func requestRejected(model: String, images: Int)
}

/// Counts of a batcher's work since it started.
public struct BatcherStatistics: Sendable, Hashable {
    /// Network runs.
    public var runs = 0
    /// Images run.
    public var images = 0
    /// Requests accepted.
    public var requests = 0
    /// Requests refused because the queue was full.
    public var rejected = 0
    /// The largest batch run.
    public var largestBatch = 0
    /// Requests that waited past ``BatchingConfiguration/requestTimeout`` and were not run.
    public var timedOut = 0
    /// Requests whose task was cancelled while they waited (taken out of the queue, not run).
    public var cancelled = 0
}

/// Runs concurrent requests for one model together: requests wait in a bounded queue, and one
/// dedicated thread takes up to ``BatchingConfiguration/maxBatchSize`` images at a time, waiting
/// at most ``BatchingConfiguration/batchTimeout`` after the first for the batch to fill, runs
/// the network once, and hands each request its rows. The network runs on that one thread only,
/// so requests never compete for the inference threads; decoding happens in the callers' tasks.
///
/// A request is never split across two concurrent runs and its images stay in order. The
/// queue is FIFO. After ``shutdown()`` new requests are refused and the waiting ones still run.
public final class DynamicBatcher: @unchecked Sendable {
    /// The model this batcher runs.
    public let model: ServedModel
    /// The batching parameters.
    public let configuration: BatchingConfiguration
    private let observer: (any BatcherObserver)?

    // Everything below is guarded by `condition`.
    private let condition = NSCondition()
    private var queue: [Pending] = []
    private var queuedImages = 0
    private var stopping = false
    private var finished = false
    private var stats = BatcherStatistics()

    private var nextID: UInt64 = 0
    /// Requests announced by ``submit(preparing:)`` whose images are still being prepared.
    private var preparing = 0
    /// Queued requests that came through ``submit(_:)`` without an announcement.
    private var unannouncedQueued = 0

    private struct Pending {
        var id: UInt64
        var images: [[Float]]
        var announced: Bool
        var enqueued: ContinuousClock.Instant
        var continuation: CheckedContinuation<ServedOutputs, any Error>
    }

    /// Starts the batcher's thread.
    ///
    /// - Parameters:
    ///   - model: the model to run.
    ///   - configuration: batch size, timeout and queue limit.
    ///   - observer: told about runs and the queue depth (metrics), or nil.
    public init(model: ServedModel, configuration: BatchingConfiguration = BatchingConfiguration(), observer: (any BatcherObserver)? = nil) {
        self.model = model
        self.configuration = configuration
        self.observer = observer
        let thread = Thread { [self] in self.work() }
        thread.name = "mobilenet-batcher-\(model.name)"
        thread.start()
    }

    /// Counts of the work done so far.
    public var statistics: BatcherStatistics {
        condition.lock()
        defer { condition.unlock() }
        return stats
    }

    /// The number of images waiting to run (not counting a batch that is running).
    public var queueDepth: Int {
        condition.lock()
        defer { condition.unlock() }
        return queuedImages
    }

    /// Queues preprocessed images and returns their outputs once the network has run them.
    ///
    /// - Parameter images: each ``ServedModel/inputScalarCount`` values, the NHWC image
    ///   `[inputHeight, inputWidth, 3]` preprocessed for the model; at least one image.
    /// - Returns: one row per image, in order.
    /// - Throws: ``ServingError/queueFull(model:limit:)`` when the queue cannot take the images
    ///   now; ``ServingError/invalidInput(field:problem:)`` for no images, wrongly sized ones,
    ///   or more images than the queue can ever hold; ``ServingError/shuttingDown(model:)``
    ///   after ``shutdown()``; ``ServingError/timedOut(model:waited:)`` when the request waited
    ///   longer than ``BatchingConfiguration/requestTimeout``; `CancellationError` when the
    ///   calling task is cancelled before its batch starts (the request leaves the queue and is
    ///   not run); ``ServingError/inferenceFailed(model:reason:)`` when the network fails.
    public func submit(_ images: [[Float]]) async throws -> ServedOutputs {
        try await submit(images, announced: false)
    }

    /// Announces a request, prepares its images with `prepare` (decoding, preprocessing), then
    /// queues them as ``submit(_:)`` does.
    ///
    /// While a request is being prepared, a batch that is waiting to fill waits for it (at most
    /// ``BatchingConfiguration/batchTimeout``); when every request the batcher knows of is queued
    /// and they all came through here, the batch runs at once instead of waiting on speculation.
    /// So a lone request pays no batch timeout, and under load batches still fill: the network
    /// is never idle while work is queued (work-conserving batching).
    ///
    /// - Parameter prepare: makes the images (each ``ServedModel/inputScalarCount`` values).
    /// - Returns: one row per image, in order.
    /// - Throws: what `prepare` throws, and as ``submit(_:)``.
    public func submit(preparing prepare: () async throws -> [[Float]]) async throws -> ServedOutputs {
        changePreparing(by: 1)
        let images: [[Float]]
        do { images = try await prepare() } catch {
            changePreparing(by: -1)
            throw error
        }
        return try await submit(images, announced: true)
    }

    private func changePreparing(by delta: Int) {
        condition.lock()
        preparing += delta
        condition.broadcast()
        condition.unlock()
    }

    private func submit(_ images: [[Float]], announced: Bool) async throws -> ServedOutputs {
        // An announced request is no longer "preparing" once it is queued or refused (enqueue does it under the lock).
        let problem: ServingError?
        if images.isEmpty {
            problem = .invalidInput(field: "inputs", problem: "no images given")
        } else if let bad = images.firstIndex(where: { $0.count != model.inputScalarCount }) {
            problem = .invalidInput(field: "inputs[\(bad)]", problem: "\(images[bad].count) values, not the \(model.inputScalarCount) of a \(model.inputHeight)x\(model.inputWidth)x3 image")
        } else if images.count > configuration.maxQueuedImages {
            problem = .invalidInput(field: "inputs", problem: "\(images.count) images, more than the \(configuration.maxQueuedImages) model '\(model.name)' can queue; send fewer per request")
        } else {
            problem = nil
        }
        if let problem {
            if announced { changePreparing(by: -1) }
            throw problem
        }
        let id = takeID()
        return try await withTaskCancellationHandler {
            try await enqueue(images, id: id, announced: announced)
        } onCancel: {
            cancel(id)
        }
    }

    private func takeID() -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        nextID += 1
        return nextID
    }

    private func enqueue(_ images: [[Float]], id: UInt64, announced: Bool) async throws -> ServedOutputs {
        try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            if announced {
                preparing -= 1
                condition.broadcast()
            }
            // Checked under the lock: a cancellation after this point finds the request queued.
            if Task.isCancelled {
                condition.unlock()
                continuation.resume(throwing: CancellationError())
                return
            }
            if stopping {
                condition.unlock()
                continuation.resume(throwing: ServingError.shuttingDown(model: model.name))
                return
            }
            guard queuedImages + images.count <= configuration.maxQueuedImages else {
                stats.rejected += 1
                condition.unlock()
                observer?.requestRejected(model: model.name, images: images.count)
                continuation.resume(throwing: ServingError.queueFull(model: model.name, limit: configuration.maxQueuedImages))
                return
            }
            queue.append(Pending(id: id, images: images, announced: announced, enqueued: .now, continuation: continuation))
            queuedImages += images.count
            if !announced { unannouncedQueued += 1 }
            stats.requests += 1
            // Reported under the lock, so that the gauge sees the depths in the order they happened.
            observer?.queueDepthChanged(model: model.name, depth: queuedImages)
            condition.signal()
            condition.unlock()
        }
    }

    /// Takes a request whose task was cancelled out of the queue (a request already running is
    /// answered as usual).
    private func cancel(_ id: UInt64) {
        condition.lock()
        guard let position = queue.firstIndex(where: { $0.id == id }) else {
            condition.unlock()
            return
        }
        let pending = queue.remove(at: position)
        queuedImages -= pending.images.count
        if !pending.announced { unannouncedQueued -= 1 }
        stats.cancelled += 1
        observer?.queueDepthChanged(model: model.name, depth: queuedImages)
        condition.unlock()
        pending.continuation.resume(throwing: CancellationError())
    }

    /// Stops taking requests; the waiting ones still run, then the thread ends. Returns at once;
    /// ``waitUntilFinished()`` waits for the thread.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks until the thread has ended after ``shutdown()`` (every accepted request answered).
    public func waitUntilFinished() {
        condition.lock()
        while !finished { condition.wait() }
        condition.unlock()
    }

    // MARK: - The batcher's thread

    private func work() {
        condition.lock()
        while true {
            while queue.isEmpty && !stopping { condition.wait() }
            if queue.isEmpty { break }  // stopping, nothing left
            // Wait for the batch to fill, until the first request has waited batchTimeout, while
            // requests are being prepared or a queued one came without an announcement.
            let deadline = queue[0].enqueued + configuration.batchTimeout
            while queuedImages < configuration.maxBatchSize && !stopping && (preparing > 0 || unannouncedQueued > 0) && !queue.isEmpty {
                let left = ContinuousClock.now.duration(to: deadline)
                guard left > .zero else { break }
                _ = condition.wait(until: Date(timeIntervalSinceNow: left.seconds))
            }
            // Requests that waited past the request timeout are answered with an error, not run.
            let now = ContinuousClock.now
            var expired: [Pending] = []
            while let first = queue.first, first.enqueued.duration(to: now) > configuration.requestTimeout {
                expired.append(queue.removeFirst())
                queuedImages -= first.images.count
                if !first.announced { unannouncedQueued -= 1 }
            }
            stats.timedOut += expired.count
            var batch: [Pending] = []
            var count = 0
            while let next = queue.first, batch.isEmpty || count + next.images.count <= configuration.maxBatchSize {
                batch.append(queue.removeFirst())
                count += next.images.count
                if !next.announced { unannouncedQueued -= 1 }
            }
            queuedImages -= count
            observer?.queueDepthChanged(model: model.name, depth: queuedImages)
            condition.unlock()
            for pending in expired {
                pending.continuation.resume(throwing: ServingError.timedOut(model: model.name, waited: pending.enqueued.duration(to: now)))
            }
            if !batch.isEmpty { run(batch) }
            condition.lock()
        }
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// Runs the requests' images in chunks of at most maxBatchSize (one chunk unless a single
    /// request is bigger) and answers each request.
    private func run(_ batch: [Pending]) {
        let images = batch.flatMap(\.images)
        var outputs = ServedOutputs(embeddings: [], probabilities: model.kind.isClassifier ? [] : nil)
        do {
            var start = 0
            while start < images.count {
                let end = min(images.count, start + configuration.maxBatchSize)
                let clock = ContinuousClock()
                let began = clock.now
                var scalars: [Float] = []
                scalars.reserveCapacity((end - start) * model.inputScalarCount)
                for image in images[start..<end] { scalars += image }
                let chunk = try model.run(Tensor(shape: [end - start, model.inputHeight, model.inputWidth, 3], scalars: scalars))
                let took = began.duration(to: clock.now)
                outputs.embeddings += chunk.embeddings
                if let p = chunk.probabilities { outputs.probabilities = (outputs.probabilities ?? []) + p }
                condition.lock()
                stats.runs += 1
                stats.images += end - start
                stats.largestBatch = max(stats.largestBatch, end - start)
                condition.unlock()
                observer?.batchRan(model: model.name, size: end - start, duration: took)
                start = end
            }
        } catch {
            let failure = ServingError.inferenceFailed(model: model.name, reason: (error as? LocalizedError)?.errorDescription ?? String(describing: error))
            for pending in batch { pending.continuation.resume(throwing: failure) }
            return
        }
        var offset = 0
        for pending in batch {
            pending.continuation.resume(returning: outputs.rows(offset..<(offset + pending.images.count)))
            offset += pending.images.count
        }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
