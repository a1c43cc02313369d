import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Answers `Expect: 100-continue` (RFC 9110 §10.1.1) with an interim `100 Continue` as soon as
/// the request head arrives, so a client that waits for it before sending the body does not
/// stall. curl sends the header with every upload over 1 MB and otherwise waits one second
/// before sending anyway (measured: a 2.4 MB PNG to `/v1/classify` took 1.24-2.05 s, 0.24 s
/// without the header). A request whose declared `Content-Length` exceeds the body limit gets
/// no `100 Continue`: its final answer is the 413, and the client need not send the body.
/// Hummingbird 2 does not do this itself; added to every connection's pipeline by
/// ``MobileNetServer`` (after the HTTP parts are decoded, so it sees `HTTPRequestPart`s).
final class ContinueResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    /// The server's request body limit in bytes.
    let maxBodyBytes: Int

    init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let request) = unwrapInboundIn(data),
           let expectation = request.headerFields[.expect], expectation.lowercased() == "100-continue" {
            let declared = request.headerFields[.contentLength].flatMap { Int($0) }
            if declared.map({ $0 <= maxBodyBytes }) ?? true {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
        }
        context.fireChannelRead(data)
    }
}

/// Ends the connection after a final response that says `Connection: close` (the 413 for a body
/// over the limit, the 408 for a body too slow), which Hummingbird 2 sends but does not act on:
/// without this the connection stayed open, and a client that never sent the refused body (it
/// waited for `100 Continue`) left the server waiting for it until the idle timeout.
///
/// Once the response is written the server's side is shut for writing (the client reads the
/// answer and sees the end), and the connection is closed 2 s later whatever the client does, so
/// a client still sending the refused body is not read without bound; a plain close at once
/// could reset the connection before the client has read the answer. Added to every
/// connection's pipeline by ``MobileNetServer``.
final class ConnectionCloser: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// How long the server keeps reading (and dropping) after shutting its side.
    static let linger: TimeAmount = .seconds(2)

    private var closeAfterResponse = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response) where response.status.code >= 200:
            closeAfterResponse = response.headerFields[.connection]?.lowercased().contains("close") ?? false
        case .end where closeAfterResponse:
            let written = promise ?? context.eventLoop.makePromise(of: Void.self)
            let channel = context.channel
            written.futureResult.whenComplete { _ in
                channel.close(mode: .output, promise: nil)
                channel.eventLoop.scheduleTask(in: Self.linger) { channel.close(promise: nil) }
            }
            context.write(data, promise: written)
            return
        default:
            break
        }
        context.write(data, promise: promise)
    }
}

