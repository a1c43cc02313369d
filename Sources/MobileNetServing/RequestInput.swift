import Foundation
import MobileNetIO
import NIOPosix
import Synchronization

/// One image of a request, as the client sent it.
public enum RequestImage: Sendable, Equatable {
    /// An already preprocessed NHWC image `[inputHeight, inputWidth, 3]`, flattened row-major.
    case tensor([Float])
    /// Encoded image bytes (JPEG, PNG, WebP, GIF, BMP), to be decoded and preprocessed with the
    /// model's own preprocessing; `field` names where it was in the request, for errors.
    case encoded(Data, field: String)
}

/// Where the CPU-heavy part of a request runs: parsing its JSON, base64 and decoding its
/// images happen on SwiftNIO's blocking thread pool (`NIOThreadPool.singleton`, one thread per
/// core), never on Swift's cooperative threads, which the HTTP server's tasks and every other
/// request share: a request with many large images queues on the pool while health checks and
/// other routes still answer.
///
/// A cancelled task (client gone, shutdown timeout) stops waiting at once: work still queued is
/// not run, and work already running finishes on its pool thread with nobody waiting for it
/// (one image's decode at most per thread), so a graceful shutdown keeps its timeout.
public enum RequestWork {
    /// Runs `body` on the blocking pool and returns its result.
    ///
    /// - Throws: what `body` throws; `CancellationError` when the task is cancelled before
    ///   `body` has returned.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws(ServingError) -> T) async throws -> T {
        let outcome = Outcome<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                guard outcome.wait(with: continuation) else { return }
                NIOThreadPool.singleton.submit { state in
                    guard state == .active, !outcome.isFinished else {
                        outcome.finish(.failure(CancellationError()))
                        return
                    }
                    outcome.finish(Result { () throws(ServingError) in try body() }.mapError { $0 as any Error })
                }
            }
        } onCancel: {
            outcome.finish(.failure(CancellationError()))
        }
    }

    /// The one answer of a ``run(_:)``: the first of the pool's result and the cancellation
    /// resumes the caller; the other is dropped.
    private final class Outcome<T: Sendable>: Sendable {
        private struct State {
            var continuation: CheckedContinuation<T, any Error>?
            var early: Result<T, any Error>?
            var finished = false
        }
        private let state = Mutex(State())

        var isFinished: Bool { state.withLock { $0.finished } }

        /// Keeps the continuation; false (and the continuation resumed) when the answer came first.
        func wait(with continuation: CheckedContinuation<T, any Error>) -> Bool {
            let early: Result<T, any Error>? = state.withLock { s in
                if let early = s.early { return early }
                s.continuation = continuation
                return nil
            }
            if let early {
                continuation.resume(with: early)
                return false
            }
            return true
        }

        /// Resumes the caller with `result`, unless it has been answered already.
        func finish(_ result: Result<T, any Error>) {
            let continuation: CheckedContinuation<T, any Error>? = state.withLock { s in
                guard !s.finished else { return nil }
                s.finished = true
                guard let continuation = s.continuation else {
                    s.early = result
                    return nil
                }
                s.continuation = nil
                return continuation
            }
            continuation?.resume(with: result)
        }
    }

    /// ``run(_:)`` for a function that throws ``ServingError`` only: cancellation is reported as
    /// ``ServingError/inferenceFailed(model:reason:)`` of `model` (nobody is left to read it).
    public static func run<T: Sendable>(for model: String, _ body: @escaping @Sendable () throws(ServingError) -> T) async throws(ServingError) -> T {
        do { return try await run(body) } catch let error as ServingError { throw error } catch {
            throw .inferenceFailed(model: model, reason: "the request was cancelled (\(error))")
        }
    }
}

/// Turns request images into network input: tensors are used as sent, encoded images are
/// decoded and preprocessed with the model's preprocessing, several at once on the blocking
/// pool's threads (``RequestWork``).
public enum RequestImageDecoder {
    /// The preprocessed images, in order.
    ///
    /// - Parameters:
    ///   - images: the request's images.
    ///   - model: the model they are for (input size, preprocessing).
    ///   - maxPixels: refuse decoded images with more pixels.
    /// - Returns: one ``ServedModel/inputScalarCount``-long array per image.
    /// - Throws: ``ServingError/invalidImage(field:problem:)`` for the first image that cannot
    ///   be decoded (not an image, corrupt, too many pixels), naming its field;
    ///   ``ServingError/inferenceFailed(model:reason:)`` when the task is cancelled.
    public static func preprocess(_ images: [RequestImage], for model: ServedModel, maxPixels: Int) async throws(ServingError) -> [[Float]] {
        let preprocessor = model.preprocessor(maxPixels: maxPixels)
        if images.count == 1, case .encoded(let data, let field) = images[0] {
            return [try await RequestWork.run(for: model.name) { () throws(ServingError) in try decode(data, field: field, preprocessor: preprocessor) }]
        }
        do {
            return try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
                var results = [[Float]](repeating: [], count: images.count)
                // At most `imagesDecodedAtOnce` images of one request in the pool at a time: the
                // pool's queue is first come, first served, so a request of many large images
                // queued at once would hold every other request's decode behind all of its own.
                var running = 0
                for (index, image) in images.enumerated() {
                    switch image {
                    case .tensor(let scalars): results[index] = scalars
                    case .encoded(let data, let field):
                        if running == imagesDecodedAtOnce, let (done, scalars) = try await group.next() {
                            results[done] = scalars
                            running -= 1
                        }
                        group.addTask { (index, try await RequestWork.run { () throws(ServingError) in try decode(data, field: field, preprocessor: preprocessor) }) }
                        running += 1
                    }
                }
                for try await (index, scalars) in group { results[index] = scalars }
                return results
            }
        } catch let error as ServingError {
            throw error
        } catch {
            throw .inferenceFailed(model: model.name, reason: "the request was cancelled (\(error))")
        }
    }

    /// How many images of one request are decoded at the same time (2): enough to use both
    /// cores of a small machine for one request, few enough that another request's image waits
    /// for at most two decodes of this one (one upload of 64 images of 100 megapixels held
    /// every other request's decode for minutes when all 64 were queued at once).
    public static let imagesDecodedAtOnce = 2

    /// Decodes and preprocesses one encoded image.
    ///
    /// - Returns: `[height, width, 3]` values flattened, scaled as the preprocessor says.
    /// - Throws: ``ServingError/invalidImage(field:problem:)``.
    public static func decode(_ data: Data, field: String, preprocessor: ImagePreprocessor) throws(ServingError) -> [Float] {
        guard !data.isEmpty else { throw .invalidImage(field: field, problem: "the image is empty (no bytes)") }
        let image: RGBImage
        do {
            image = try preprocessor.decoder.decode(data, source: field, target: preprocessor.decodeTarget)
        } catch {
            throw .invalidImage(field: field, problem: problem(error, field: field))
        }
        guard image.width > 0, image.height > 0 else { throw .invalidImage(field: field, problem: "the image has no pixels") }
        return preprocessor.tensor(for: image).scalars
    }

    /// The decoder's message without the leading `field: ` it repeats.
    private static func problem(_ error: ImageError, field: String) -> String {
        let text = error.description
        return text.hasPrefix(field + ": ") ? String(text.dropFirst(field.count + 2)) : text
    }
}
