import NIOCore
import Synchronization

/// Closes a new connection at once when ``Count/limit`` connections are already open, so the
/// process keeps file descriptors to spare: with every descriptor in use, `accept` fails with
/// `EMFILE` on each wake-up of the event loop while the listening socket stays readable, and the
/// server spun at 67-87% CPU (48,000 failed `accept4` calls in 5 s, measured) until a client let
/// go. Closed at once, the extra connections leave the backlog and the loop sleeps.
///
/// Added first to every connection's pipeline, before any protocol handler (it reads nothing:
/// inbound data passes through untouched), by the HTTP server and the gRPC listener of
/// `mobilenet serve`, which share one ``Count`` so that the limit bounds the process's
/// connections of both protocols together.
package final class ConnectionLimiter: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = NIOAny

    /// The open connections of one process's servers, shared by every connection's limiter.
    package final class Count: Sendable {
        package let open = Atomic<Int>(0)
        /// The most connections open at once (at least 1).
        package let limit: Int
        package init(limit: Int) { self.limit = max(1, limit) }
    }

    private let count: Count
    private var counted = false

    package init(count: Count) { self.count = count }

    package func handlerAdded(context: ChannelHandlerContext) {
        // Added while the connection is set up: count it now (channelActive may have passed).
        guard !counted else { return }
        counted = true
        if count.open.add(1, ordering: .relaxed).newValue > count.limit {
            context.close(promise: nil)
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        release()
    }

    private func release() {
        guard counted else { return }
        counted = false
        count.open.subtract(1, ordering: .relaxed)
    }
}
