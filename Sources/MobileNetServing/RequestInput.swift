import Foundation
import MobileNetIO

/// One image of a request, as the client sent it.
public enum RequestImage: Sendable, Equatable {
    /// An already preprocessed NHWC image `[inputHeight, inputWidth, 3]`, flattened row-major.
    case tensor([Float])
    /// Encoded image bytes (JPEG, PNG, WebP, GIF, BMP), to be decoded and preprocessed with the
    /// model's own preprocessing; `field` names where it was in the request, for errors.
    case encoded(Data, field: String)
}

/// The JSON reading shared by the TensorFlow Serving and KServe decoders: the body is parsed
/// once with `JSONSerialization` (which refuses nesting deeper than its limit instead of
/// overflowing the stack), and every value is then checked for its type, shape and range with
/// errors naming its place in the request.
enum RequestJSON {
    /// The body's top-level JSON object.
    static func object(_ body: Data) throws(ServingError) -> [String: Any] {
        guard !body.isEmpty else { throw .invalidJSON(reason: "the body is empty") }
        let value: Any
        do { value = try JSONSerialization.jsonObject(with: body, options: []) } catch {
            throw .invalidJSON(reason: Self.reason(error))
        }
        guard let object = value as? [String: Any] else { throw .invalidJSON(reason: "the top level is \(Self.typeName(value)), not an object") }
        return object
    }

    static func reason(_ error: any Error) -> String {
        let text = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String
        return text ?? "not valid JSON"
    }

    /// A JSON number as a Float; nil for strings, arrays, objects and null. (JSON `true` and
    /// `false` come out of `JSONSerialization` as the numbers 1 and 0 and cannot be told apart.)
    static func number(_ value: Any) -> Float? {
        if let n = value as? NSNumber { return n.floatValue }
        if let d = value as? Double { return Float(d) }
        if let i = value as? Int { return Float(i) }
        return nil
    }

    /// A JSON integer; nil for anything else (fractions, strings, booleans).
    static func integer(_ value: Any) -> Int? {
        if let i = value as? Int { return i }
        if let n = value as? NSNumber {
            let d = n.doubleValue
            guard d.rounded() == d, abs(d) < 1e15 else { return nil }
            return Int(d)
        }
        return nil
    }

    /// The JSON type of a parsed value, for messages.
    static func typeName(_ value: Any) -> String {
        switch value {
        case is NSNull: "null"
        case is String: "a string"
        case is [Any]: "an array"
        case is [String: Any]: "an object"
        case is NSNumber, is Double, is Int: "a number"
        default: "a value of another type"
        }
    }

    /// An image tensor `[height][width][3]` of numbers in `range`, flattened row-major.
    ///
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` naming the first bad element.
    static func imageTensor(_ value: Any, height: Int, width: Int, range: ClosedRange<Float>, field: String) throws(ServingError) -> [Float] {
        guard let rows = value as? [Any] else {
            throw .invalidInput(field: field, problem: "expected a \(height)x\(width)x3 array of numbers or {\"b64\": ...}, got \(typeName(value))")
        }
        guard rows.count == height else {
            throw .invalidInput(field: field, problem: "expected \(height) rows (an image of \(height)x\(width)x3), got \(rows.count)")
        }
        // A little slack for the rounding of clients that preprocess in another precision.
        let slack: Float = 1e-3 * max(1, range.upperBound - range.lowerBound)
        var scalars: [Float] = []
        scalars.reserveCapacity(height * width * 3)
        for (y, row) in rows.enumerated() {
            guard let pixels = row as? [Any], pixels.count == width else {
                throw .invalidInput(field: "\(field)[\(y)]", problem: "expected \(width) pixels, got \((row as? [Any]).map { "\($0.count)" } ?? typeName(row))")
            }
            for (x, pixel) in pixels.enumerated() {
                guard let channels = pixel as? [Any], channels.count == 3 else {
                    throw .invalidInput(field: "\(field)[\(y)][\(x)]", problem: "expected 3 channel values (RGB), got \((pixel as? [Any]).map { "\($0.count)" } ?? typeName(pixel))")
                }
                for (c, channel) in channels.enumerated() {
                    guard let v = number(channel), v.isFinite else {
                        throw .invalidInput(field: "\(field)[\(y)][\(x)][\(c)]", problem: "expected a finite number, got \(typeName(channel))")
                    }
                    guard v >= range.lowerBound - slack, v <= range.upperBound + slack else {
                        throw .invalidInput(field: "\(field)[\(y)][\(x)][\(c)]", problem: "\(v) is outside \(range.lowerBound)...\(range.upperBound), the range of this model's preprocessed input; send preprocessed values, or the encoded image as {\"b64\": ...}")
                    }
                    scalars.append(v)
                }
            }
        }
        return scalars
    }

    /// A flat or nested array of numbers, flattened row-major (KServe `data`), at most `limit`
    /// values and `maxDepth` levels of nesting.
    static func flatNumbers(_ value: Any, limit: Int, maxDepth: Int, field: String) throws(ServingError) -> [Float] {
        var out: [Float] = []
        func walk(_ v: Any, depth: Int, path: String) throws(ServingError) {
            if let array = v as? [Any] {
                guard depth < maxDepth else { throw .invalidInput(field: path, problem: "nested more than \(maxDepth) levels deep") }
                for (i, element) in array.enumerated() { try walk(element, depth: depth + 1, path: "\(path)[\(i)]") }
                return
            }
            guard let n = number(v), n.isFinite else { throw .invalidInput(field: path, problem: "expected a finite number, got \(typeName(v))") }
            guard out.count < limit else { throw .invalidInput(field: field, problem: "more than the \(limit) values its shape has") }
            out.append(n)
        }
        try walk(value, depth: 0, path: field)
        return out
    }

    /// Base64 (standard or URL-safe alphabet, padding optional) to bytes; nil when not base64.
    static func base64(_ text: String) -> Data? {
        if let data = Data(base64Encoded: text) { return data }
        var normalised = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            .filter { !$0.isWhitespace }
        if normalised.count % 4 != 0 { normalised += String(repeating: "=", count: 4 - normalised.count % 4) }
        return Data(base64Encoded: normalised)
    }
}

/// Turns request images into network input: tensors are used as sent, encoded images are
/// decoded and preprocessed with the model's preprocessing, several at once on the
/// concurrency pool's threads.
public enum RequestImageDecoder {
    /// The preprocessed images, in order.
    ///
    /// - Parameters:
    ///   - images: the request's images.
    ///   - model: the model they are for (input size, preprocessing).
    ///   - maxPixels: refuse decoded images with more pixels.
    /// - Returns: one ``ServedModel/inputScalarCount``-long array per image.
    /// - Throws: ``ServingError/invalidImage(field:problem:)`` for the first image that cannot
    ///   be decoded (not an image, corrupt, too many pixels), naming its field.
    public static func preprocess(_ images: [RequestImage], for model: ServedModel, maxPixels: Int) async throws(ServingError) -> [[Float]] {
        let preprocessor = model.preprocessor(maxPixels: maxPixels)
        do {
            return try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
                var results = [[Float]](repeating: [], count: images.count)
                for (index, image) in images.enumerated() {
                    switch image {
                    case .tensor(let scalars): results[index] = scalars
                    case .encoded(let data, let field):
                        group.addTask { (index, try decode(data, field: field, preprocessor: preprocessor)) }
                    }
                }
                for try await (index, scalars) in group { results[index] = scalars }
                return results
            }
        } catch let error as ServingError {
            throw error
        } catch {
            throw .invalidImage(field: "image", problem: String(describing: error))
        }
    }

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
