import Foundation
import MobileNetServing
import MultipartKit
import NIOCore

/// The image of a plain-endpoint request (`/v1/classify`, `/v1/embed`, `/v1/similar`): the body
/// itself, or the file of a `multipart/form-data` body (an HTML form, `curl -F image=@cat.jpg`).
///
/// The multipart framing is parsed by Vapor's MultipartKit (RFC 7578); this type only picks the
/// part: the one named `image`, else the one named `file`, else the one part that carries a
/// `filename`, else the only part (two parts where one is picked are refused).
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
        if let offset = nonASCIIHeaderNameByte(in: body, boundary: boundary) {
            throw .invalidInput(field: "body", problem: "a part header name of the multipart/form-data body has a byte that is not ASCII (0x\(String(body[body.startIndex + offset], radix: 16, uppercase: true)) at byte \(offset))")
        }
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
        // `image` wins wherever it is, then `file` (a first part named `file` does not shadow a
        // later `image`), then a part with a filename; two parts at the tier that decides are
        // refused rather than one picked (a form is not a batch).
        let tiers: [(what: String, matches: (Part) -> Bool)] = [
            ("named 'image'", { $0.name == "image" }), ("named 'file'", { $0.name == "file" }), ("carrying a filename", { $0.filename != nil }),
        ]
        for tier in tiers {
            let found = parts.filter(tier.matches)
            if found.count > 1 {
                throw .invalidInput(field: "body", problem: "the multipart/form-data body has \(found.count) parts \(tier.what); send one image per request (a batch goes to /v1/models/NAME:predict)")
            }
            if let chosen = found.first { return Data(chosen.body.readableBytesView) }
        }
        guard parts.count == 1 else {
            throw .invalidInput(field: "body", problem: parts.isEmpty
                ? "the multipart/form-data body has no complete part (is its closing boundary '--\(boundary)--' missing?)"
                : "the multipart/form-data body has \(parts.count) parts and none is named 'image' or 'file' or carries a filename")
        }
        return Data(parts[0].body.readableBytesView)
    }

    /// Refuses a JSON `Content-Type` (`application/json`, `text/json`, `...+json`): a plain
    /// endpoint takes the encoded image itself (any other type, or none: `curl --data-binary`
    /// sends `application/x-www-form-urlencoded`) or a `multipart/form-data` upload, and a JSON
    /// body sent here is a TensorFlow Serving or KServe request sent to the wrong route.
    ///
    /// - Throws: ``/MobileNetServing/ServingError/unsupportedMediaType(type:accepted:)``.
    static func checkMediaType(_ contentType: String?) throws(ServingError) {
        guard let contentType else { return }
        // Two Content-Type fields arrive joined by a comma: a JSON type among them counts.
        let types = contentType.split(separator: ",").map {
            ($0.split(separator: ";", maxSplits: 1).first.map(String.init) ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        }
        guard let type = types.first(where: { $0 == "application/json" || $0 == "text/json" || $0.hasSuffix("+json") }) else { return }
        throw .unsupportedMediaType(type: String(type.prefix(64)), accepted: "this route takes the encoded image as the body (or a multipart/form-data upload); JSON requests go to /v1/models/NAME:predict (TensorFlow Serving) or /v2/models/NAME/infer (KServe)")
    }

    /// The offset of the first byte ≥ 0x80 in a part header name of `body`, or nil when there is
    /// none. MultipartKit 4.7.1 looks such a byte up in a 128-entry table and traps (an index out
    /// of range: one request would stop the server), so it must not reach the parser.
    ///
    /// The parser reads header names only right after a delimiter `--BOUNDARY` CR LF, and after
    /// each header line's CR LF, up to the line's `:` (or a CR that ends the headers). This scan
    /// looks at every `--BOUNDARY` CR LF in the body (a superset of the delimiters the parser
    /// matches), follows the header lines as the parser does, and checks the bytes in name
    /// position, up to a byte the parser refuses there (a control character, a space, DEL).
    /// RFC 7578 header names are ASCII; values (a UTF-8 `filename`) are not checked.
    static func nonASCIIHeaderNameByte(in body: Data, boundary: String) -> Int? {
        let bytes = [UInt8](body)
        let delimiter = [UInt8]("--\(boundary)\r\n".utf8)
        let cr: UInt8 = 13, lf: UInt8 = 10, colon: UInt8 = 58
        var start = 0
        while start + delimiter.count <= bytes.count {
            guard let found = firstIndex(of: delimiter, in: bytes, from: start) else { return nil }
            var i = found + delimiter.count
            start = found + 1
            headers: while i < bytes.count {
                // A header name, up to its colon; a CR at its start ends the headers.
                var nameLength = 0
                while i < bytes.count {
                    let byte = bytes[i]
                    if byte == colon && nameLength > 0 { break }
                    if byte == cr && nameLength == 0 { break headers }
                    if byte >= 0x80 { return i }
                    // A control character, a space, DEL or a leading colon: the parser refuses
                    // the line (a syntax error) and reads no further name of this block.
                    if byte < 0x21 || byte == 0x7F || byte == colon { break headers }
                    nameLength += 1
                    i += 1
                }
                // The value, up to CR; then LF starts the next name.
                while i < bytes.count && bytes[i] != cr { i += 1 }
                guard i + 1 < bytes.count, bytes[i + 1] == lf else { break }
                i += 2
            }
        }
        return nil
    }

    /// The first index at or after `start` where `pattern` (not empty) occurs in `bytes`.
    private static func firstIndex(of pattern: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard let first = pattern.first, pattern.count <= bytes.count else { return nil }
        var i = start
        while i + pattern.count <= bytes.count {
            if bytes[i] == first && bytes[i..<(i + pattern.count)].elementsEqual(pattern) { return i }
            i += 1
        }
        return nil
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
