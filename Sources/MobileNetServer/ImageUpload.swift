import Foundation
import MobileNetServing
import MultipartKit
import NIOCore

/// The image of a plain-endpoint request (`/v1/classify`, `/v1/embed`, `/v1/similar`): the body
/// itself, or the file of a `multipart/form-data` body (an HTML form, `curl -F image=@cat.jpg`).
///
/// The multipart framing is parsed by Vapor's MultipartKit (RFC 7578); this type only picks the
/// part: the one named `image` or `file`, else the first part that carries a `filename`, else the
/// only part.
enum ImageUpload {
    /// The encoded image in `body`.
    ///
    /// - Parameters:
    ///   - body: the request body (already limited to ``/MobileNetServing/ServingLimits/maxBodyBytes``).
    ///   - contentType: the request's `Content-Type`; raw bytes unless it is `multipart/form-data`.
    /// - Throws: ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` for a multipart
    ///   body without a usable boundary, that does not parse, or that has no image part.
    static func image(from body: Data, contentType: String?) throws(ServingError) -> Data {
        guard let contentType, let boundary = try multipartBoundary(contentType) else { return body }
        let parser = MultipartParser(boundary: boundary)
        var parts: [Part] = []
        var current = Part()
        parser.onHeader = { name, value in
            guard name.lowercased() == "content-disposition" else { return }
            (current.name, current.filename) = (parameter("name", in: value), parameter("filename", in: value))
        }
        parser.onBody = { chunk in current.body.writeBuffer(&chunk) }
        parser.onPartComplete = {
            parts.append(current)
            current = Part()
        }
        do { try parser.execute(ByteBuffer(bytes: body)) } catch {
            throw .invalidInput(field: "body", problem: "the multipart/form-data body does not parse (\(error))")
        }
        let chosen = parts.first { $0.name == "image" || $0.name == "file" }
            ?? parts.first { $0.filename != nil }
            ?? (parts.count == 1 ? parts[0] : nil)
        guard let chosen else {
            throw .invalidInput(field: "body", problem: parts.isEmpty
                ? "the multipart/form-data body has no complete part (is its closing boundary '--\(boundary)--' missing?)"
                : "the multipart/form-data body has \(parts.count) parts and none is named 'image' or 'file' or carries a filename")
        }
        return Data(chosen.body.readableBytesView)
    }

    private struct Part {
        var name: String?
        var filename: String?
        var body = ByteBuffer()
    }

    /// The boundary of a `multipart/form-data` content type; nil for other types.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/invalidInput(field:problem:)`` for a multipart
    ///   type without a boundary, or with one that RFC 2046 does not allow (1 to 70 characters).
    static func multipartBoundary(_ contentType: String) throws(ServingError) -> String? {
        let fields = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let type = fields.first, type.lowercased() == "multipart/form-data" else { return nil }
        guard let boundary = parameter("boundary", in: contentType), (1...70).contains(boundary.utf8.count),
              boundary.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
            throw .invalidInput(field: "Content-Type", problem: "multipart/form-data needs a boundary of 1 to 70 printable characters")
        }
        return boundary
    }

    /// The value of `key=value` or `key="value"` among the `;`-separated parameters of a header value.
    static func parameter(_ key: String, in header: String) -> String? {
        for field in header.split(separator: ";").dropFirst() {
            let pair = field.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, pair[0].lowercased() == key else { continue }
            var value = pair[1]
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            return value
        }
        return nil
    }
}
