import Foundation
import Hummingbird
import NIOCore

/// The request context of `mobilenet serve`: Hummingbird's core context and the connection the
/// request came on, so that work for a client that has gone away can be cancelled.
public struct ServingRequestContext: RequestContext {
    /// Hummingbird's per-request storage (logger, allocator, route parameters).
    public var coreContext: CoreRequestContextStorage
    /// The connection's channel: its `closeFuture` completes when the client disconnects.
    public let channel: any Channel

    /// The context of a request on `source`'s connection.
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Notices that a client went away: the end of its input (it closed its socket; Hummingbird
/// allows half-closed connections, so this is not a close of the channel) or the channel
/// becoming inactive. Added to every connection's pipeline by ``MobileNetServer``; reads and
/// events pass through unchanged. Like nginx's default (`proxy_ignore_client_abort off`), a
/// client that closes its sending side has abandoned the request.
final class DisconnectDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer  // never unwrapped: reads are forwarded as they are
    private var promise: EventLoopPromise<Void>?

    /// Completes when the client has gone away (never fails).
    func disconnected(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        if promise == nil { promise = eventLoop.makePromise() }
        return promise!.futureResult
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if promise == nil { promise = context.eventLoop.makePromise() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise?.succeed(())
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { promise?.succeed(()) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.succeed(())
        context.fireChannelInactive()
    }
}

/// Cancels a request's work when its connection closes before the answer is ready: the
/// request leaves its model's queue (``/MobileNetServing/DynamicBatcher`` drops a cancelled
/// request) instead of running for nobody. Under overload, clients that time out and retry
/// would otherwise multiply the work.
enum DisconnectCancellation {
    /// Runs `work`; when the client of `channel` goes away first (``DisconnectDetector``),
    /// cancels it and throws `CancellationError`. Without a detector in the pipeline (the
    /// router tests' channels) it just runs `work`.
    static func run<T: Sendable>(on channel: any Channel, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        let loop = channel.eventLoop
        guard let disconnected = try? await channel.pipeline.handler(type: DisconnectDetector.self).map({ $0.disconnected(on: loop) }).get() else {
            return try await work()
        }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await work() }
            group.addTask {
                await waitFor(disconnected)
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let value = result { return value }
                throw CancellationError()  // the client went away first
            }
            throw CancellationError()
        }
    }

    /// Returns when `future` completes, or at once when the calling task is cancelled.
    static func waitFor(_ future: EventLoopFuture<Void>) async {
        let waiter = Waiter()
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                waiter.install(continuation)
                future.whenComplete { _ in waiter.finish() }
            }
        } onCancel: {
            waiter.finish()
        }
    }

    /// A continuation resumed exactly once, by whichever comes first.
    private final class Waiter: @unchecked Sendable {
        private let lock = NSLock()
        private var continuation: CheckedContinuation<Void, Never>?
        private var done = false

        func install(_ continuation: CheckedContinuation<Void, Never>) {
            lock.lock()
            if done {
                lock.unlock()
                continuation.resume()
                return
            }
            self.continuation = continuation
            lock.unlock()
        }

        func finish() {
            lock.lock()
            guard !done else {
                lock.unlock()
                return
            }
            done = true
            let continuation = self.continuation
            self.continuation = nil
            lock.unlock()
            continuation?.resume()
        }
    }
}
