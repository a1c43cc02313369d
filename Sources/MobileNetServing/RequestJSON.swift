import Foundation

/// The most a request body may hold, counted before it is parsed (``JSONCensus``).
struct JSONBudget: Sendable, Hashable {
    /// The most values of any kind (every number, string, literal, array and object).
    var values: Int
    /// The most objects.
    var objects: Int
    /// The most strings (object keys included).
    var strings: Int
    /// The deepest nesting of arrays and objects.
    var depth: Int
}

/// A count of the values in a JSON text, made in one pass over its bytes, so that a body can
/// be refused before a parser builds anything for it: what a parse costs grows with the number
/// of values, which a hostile body can make one per 2 bytes (`[0,0,0,...]`) or one object per 10
/// (`[{"b64":""},...]`).
///
/// The same pass finds what Foundation's parser would let through silently: a key given twice
/// in one object (the parser keeps the first; RFC 8259 section 4 leaves the meaning to the
/// implementation, and a proxy that keeps the last would see another request) and a raw control
/// character (U+0000...U+001F) inside a string, which RFC 8259 section 7 says must be escaped.
/// It keeps the keys of the top-level object, so that a document can refuse an unknown field
/// before the body is parsed. It allocates only for object keys (at most the body's size).
///
/// Every value of a valid JSON text is counted (an upper bound: a number's digits count once,
/// however long); other invalid JSON is left for the parser to report.
struct JSONCensus: Sendable, Hashable {
    /// Values of every kind.
    var values = 0
    /// Objects.
    var objects = 0
    /// Strings, object keys included.
    var strings = 0
    /// The deepest nesting of arrays and objects.
    var depth = 0
    /// The keys of the top-level object in the order given, escapes resolved (empty when the
    /// top level is not an object).
    var topLevelKeys: [String] = []

    /// What passed the budget first.
    enum Excess: String, Sendable {
        case values, objects, strings, depth
    }

    /// Why a body was stopped.
    enum Finding: Sendable, Hashable {
        /// A count passed the budget.
        case excess(Excess)
        /// A byte below 0x20 inside a string, at this offset of the body.
        case controlCharacter(UInt8, offset: Int)
        /// A key given twice in one object; the offset of its second opening quote.
        case duplicateKey(String, offset: Int)
        /// An object key longer than ``JSONCensus/maximumKeyBytes``; the offset of its opening quote.
        case longKey(bytes: Int, offset: Int)
    }

    /// The longest object key a request may have, in bytes as written (1 KiB): every key of
    /// every API here is a short field name, and a parser hashes each key it reads (the
    /// decoder, as Swift strings, with Unicode normalisation: slow for long unnormalised keys).
    static let maximumKeyBytes = 1024

    /// Counts `body`, stopping at the first count that passes `budget`, the first raw control
    /// character in a string, the first key longer than ``maximumKeyBytes`` or the first key
    /// repeated in its object.
    ///
    /// - Returns: the counts (up to where it stopped), and why it stopped (nil when the body is
    ///   within the budget and has neither).
    static func count(_ body: Data, within budget: JSONBudget) -> (census: JSONCensus, finding: Finding?) {
        var census = JSONCensus()
        let finding: Finding? = body.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Finding? in
            // One entry per open array (nil) or object (its keys so far, as UTF-8 bytes: keys
            // are compared byte for byte, as JSON parsers do, not by Unicode canonical
            // equivalence as Swift's String is, which also made long unnormalised keys slow).
            var open: [Set<[UInt8]>?] = []
            open.reserveCapacity(budget.depth + 1)
            var inString = false, escaped = false, inScalar = false
            var expectingKey = false, inKey = false, keyStart = 0, keyEscaped = false
            for (offset, byte) in raw.enumerated() {
                if inString {
                    if escaped {
                        escaped = false
                    } else if byte == UInt8(ascii: "\\") {
                        escaped = true
                        keyEscaped = keyEscaped || inKey
                    } else if byte == UInt8(ascii: "\"") {
                        inString = false
                        if inKey {
                            inKey = false
                            expectingKey = false
                            guard offset - keyStart <= maximumKeyBytes else { return .longKey(bytes: offset - keyStart, offset: keyStart - 1) }
                            let key = Self.key(UnsafeRawBufferPointer(rebasing: raw[keyStart..<offset]), escaped: keyEscaped)
                            if open[open.count - 1]!.insert(key).inserted == false {
                                return .duplicateKey(String(decoding: key, as: UTF8.self), offset: keyStart - 1)
                            }
                            if open.count == 1 { census.topLevelKeys.append(String(decoding: key, as: UTF8.self)) }
                        }
                    } else if byte < 0x20 {
                        return .controlCharacter(byte, offset: offset)
                    }
                    continue
                }
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                     UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."):
                    // A number or literal: counted at its first byte.
                    if !inScalar {
                        inScalar = true
                        census.values += 1
                        if census.values > budget.values { return .excess(.values) }
                    }
                    continue
                case UInt8(ascii: "\""):
                    inString = true
                    census.values += 1
                    census.strings += 1
                    if census.values > budget.values { return .excess(.values) }
                    if census.strings > budget.strings { return .excess(.strings) }
                    if expectingKey, let last = open.last, last != nil {
                        (inKey, keyStart, keyEscaped) = (true, offset + 1, false)
                    }
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    let isObject = byte == UInt8(ascii: "{")
                    open.append(isObject ? [] : nil)
                    expectingKey = isObject
                    census.depth = max(census.depth, open.count)
                    census.values += 1
                    if isObject { census.objects += 1 }
                    if census.values > budget.values { return .excess(.values) }
                    if census.objects > budget.objects { return .excess(.objects) }
                    if census.depth > budget.depth { return .excess(.depth) }
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    // Unbalanced brackets are the parser's to report.
                    if !open.isEmpty { open.removeLast() }
                    expectingKey = false
                case UInt8(ascii: ","):
                    if let last = open.last, last != nil { expectingKey = true }
                default:
                    break
                }
                inScalar = false
            }
            return nil
        }
        return (census, finding)
    }

    /// An object key's UTF-8 bytes: as they are, or with its escapes resolved when it has any
    /// (`"\u0069nstances"` is `instances`); an escape the parser would refuse leaves the bytes
    /// as they are, for the parser to report.
    private static func key(_ bytes: UnsafeRawBufferPointer, escaped: Bool) -> [UInt8] {
        guard escaped else { return Array(bytes) }
        var quoted = Data([UInt8(ascii: "\"")])
        quoted.append(contentsOf: bytes)
        quoted.append(UInt8(ascii: "\""))
        return (try? JSONDecoder().decode(String.self, from: quoted)).map { Array($0.utf8) } ?? Array(bytes)
    }
}

/// An object key or array index of a request, for decoding objects whose keys are checked one
/// by one.
struct JSONKey: CodingKey, Hashable {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ name: String) { stringValue = name }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// What a JSON value is, for messages ("a string", "an array", ...); decoded only where a
/// value turned out not to be what the request needed.
struct JSONTypeName: Decodable {
    /// `null`, `a boolean`, `a number`, `a string`, `an array`, `an object`, or a value that
    /// cannot be read (a string with a lone surrogate or invalid UTF-8, a number beyond Double).
    var name: String

    init(from decoder: any Decoder) throws {
        let single = try decoder.singleValueContainer()
        if single.decodeNil() { name = "null"; return }
        if (try? single.decode(Bool.self)) != nil { name = "a boolean"; return }
        if (try? single.decode(Double.self)) != nil { name = "a number"; return }
        if (try? single.decode(String.self)) != nil { name = "a string"; return }
        if (try? decoder.unkeyedContainer()) != nil { name = "an array"; return }
        if (try? decoder.container(keyedBy: JSONKey.self)) != nil { name = "an object"; return }
        name = "a value that cannot be read (a string that is not valid Unicode, or a number out of range)"
    }
}

/// A request body's top-level document, decoded by ``RequestJSON/decode(_:from:context:)``.
protocol RequestDocument: Decodable {
    /// Checks the keys of the body's top-level object (in the order given) before the body is
    /// parsed, so that a body with a field the request does not take is refused before the
    /// values under it are read. The default accepts every key.
    ///
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` naming the first key refused.
    static func checkFields(_ topLevelKeys: [String]) throws(ServingError)
}

extension RequestDocument {
    static func checkFields(_ topLevelKeys: [String]) throws(ServingError) {}
}

/// The JSON reading shared by the TensorFlow Serving and KServe decoders.
///
/// The body's values are counted first and a body with more than any request within the
/// limits can need is refused before anything is built for it (``JSONCensus``). It is then
/// parsed once by Foundation's `JSONDecoder` (swift-foundation's scanner: one compact map of
/// the body, nesting limited), straight into the request's own types in the shape the request
/// must have: numbers go to `Float` arrays without an intermediate tree, and every value is
/// checked for its type, shape and range with an error naming its place in the request.
enum RequestJSON {
    /// What a request's decoding needs to know: the model's input and the limits.
    struct Context: Sendable {
        var height: Int
        var width: Int
        var range: ClosedRange<Float>
        var modelName: String
        var outputName: String
        var limits: ServingLimits

        /// How far outside ``range`` a value may be: a little slack for the rounding of
        /// clients that preprocess in another precision.
        var slack: Float { ServedModel.slack(for: range) }

        /// The context of a request for `model` under `limits`.
        init(model: ServedModel, limits: ServingLimits) {
            self.init(height: model.inputHeight, width: model.inputWidth, range: model.inputRange, modelName: model.name, outputName: model.outputName, limits: limits)
        }

        /// A context from its parts (the fuzz target's, without a model).
        init(height: Int, width: Int, range: ClosedRange<Float>, modelName: String, outputName: String, limits: ServingLimits) {
            (self.height, self.width, self.range) = (height, width, range)
            (self.modelName, self.outputName, self.limits) = (modelName, outputName, limits)
        }
    }

    static let contextKey = CodingUserInfoKey(rawValue: "mobilenet.request")!

    /// The most a request body for a model of `height` x `width` inputs may hold under `limits`:
    /// ``ServingLimits/maxImagesPerRequest`` images written as nested tensors (each
    /// `height*width*3` numbers in `1 + height + height*width` arrays), a few objects and
    /// strings per image, room for names and parameters, and 16 levels of nesting (an image
    /// tensor inside a KServe request has 8).
    static func budget(height: Int, width: Int, limits: ServingLimits) -> JSONBudget {
        let images = limits.maxImagesPerRequest
        let perImage = height * width * 3 + height * width + height + 1
        return JSONBudget(values: images * (perImage + 8) + 512, objects: 4 * images + 64, strings: 4 * images + 256, depth: 16)
    }

    /// Decodes a request document from `body`.
    ///
    /// - Throws: ``ServingError/invalidJSON(reason:)`` for an empty body, text that is not
    ///   JSON, or a raw control character inside a string; ``ServingError/invalidInput(field:problem:)``
    ///   (field `body`) for a body with more values, objects, strings or nesting than
    ///   ``budget(height:width:limits:)`` allows, and naming the key for a key given twice in
    ///   one object; what the document's ``RequestDocument/checkFields(_:)`` throws for its
    ///   top-level keys (before the body is parsed); and what the document's decoding throws.
    static func decode<Document: RequestDocument>(_ type: Document.Type, from body: Data, context: Context) throws(ServingError) -> Document {
        guard !body.isEmpty else { throw .invalidJSON(reason: "the body is empty") }
        let budget = budget(height: context.height, width: context.width, limits: context.limits)
        let (census, finding) = JSONCensus.count(body, within: budget)
        switch finding {
        case nil:
            break
        case .excess(.depth):
            throw .invalidInput(field: "body", problem: "arrays and objects nested more than \(budget.depth) levels deep; a request needs fewer")
        case .excess(let excess):
            let limit = excess == .values ? budget.values : excess == .objects ? budget.objects : budget.strings
            throw .invalidInput(field: "body", problem: "more than \(limit) JSON \(excess.rawValue), more than a request of at most \(context.limits.maxImagesPerRequest) images can hold; send fewer images per request")
        case .controlCharacter(let byte, let offset):
            throw .invalidJSON(reason: "not valid JSON (a raw control character 0x\(String(format: "%02X", byte)) inside a string at byte \(offset); JSON strings must escape it, as \\n or \\u00\(String(format: "%02x", byte)))")
        case .longKey(let bytes, let offset):
            throw .invalidInput(field: "body", problem: "an object key of \(bytes) bytes (at byte \(offset)); a request's keys are at most \(JSONCensus.maximumKeyBytes) bytes")
        case .duplicateKey(let key, let offset):
            throw .invalidInput(field: quoted(key), problem: "given twice in one object (the second at byte \(offset)); a request names each field once")
        }
        try Document.checkFields(census.topLevelKeys)
        let decoder = JSONDecoder()
        decoder.userInfo[contextKey] = context
        do { return try decoder.decode(Document.self, from: body) } catch let error as ServingError {
            throw error
        } catch let error as DecodingError {
            if case .dataCorrupted(let context) = error, context.codingPath.isEmpty {
                let detail = context.underlyingError.map { ($0 as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? String(describing: $0) }
                throw .invalidJSON(reason: "not valid JSON" + (detail.map { " (\($0))" } ?? ""))
            }
            // A value of a kind the document's code did not expect (each site names its own; this is the rest).
            let path: [any CodingKey]
            switch error {
            case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context), .dataCorrupted(let context): path = context.codingPath
            @unknown default: path = []
            }
            throw .invalidInput(field: field(path), problem: "not what this request takes here")
        } catch {
            throw .invalidJSON(reason: "not valid JSON")
        }
    }

    /// The decoding context a document reads (set by ``decode(_:from:context:)``).
    ///
    /// - Throws: `DecodingError.dataCorrupted` when the document was decoded without one (not
    ///   through ``decode(_:from:context:)``).
    static func context(_ decoder: any Decoder) throws -> Context {
        guard let context = decoder.userInfo[contextKey] as? Context else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "a request document decoded without its model context"))
        }
        return context
    }

    /// The top-level object of a request.
    ///
    /// - Throws: ``ServingError/invalidJSON(reason:)`` when the top level is not an object.
    static func topLevelObject(_ decoder: any Decoder) throws -> KeyedDecodingContainer<JSONKey> {
        do { return try decoder.container(keyedBy: JSONKey.self) } catch {
            throw ServingError.invalidJSON(reason: "the top level is \(typeName(decoder)), not an object")
        }
    }

    /// What the value `decoder` reads is, for messages.
    static func typeName(_ decoder: any Decoder) -> String {
        (try? JSONTypeName(from: decoder).name) ?? "a value of another kind"
    }

    /// What the next element of `list` is (the element is not consumed when a decode of it failed).
    static func typeName(next list: inout any UnkeyedDecodingContainer) -> String {
        (try? list.decode(JSONTypeName.self).name) ?? "a value of another kind"
    }

    /// What the value at `key` is.
    static func typeName(_ object: KeyedDecodingContainer<JSONKey>, _ key: String) -> String {
        (try? object.decode(JSONTypeName.self, forKey: JSONKey(key)).name) ?? "a value of another kind"
    }

    /// The string at `key`.
    ///
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` naming `field` when it is another kind.
    static func string(_ object: KeyedDecodingContainer<JSONKey>, _ key: String, field: String) throws(ServingError) -> String {
        do { return try object.decode(String.self, forKey: JSONKey(key)) } catch {
            throw .invalidInput(field: field, problem: "expected a string, got \(typeName(object, key))")
        }
    }

    /// Text from the request as an error message quotes it: at most 64 characters (an unknown
    /// key or a signature name of 60 MB was echoed whole).
    ///
    /// Cut by Unicode scalars, not characters: one character can be a letter with millions of
    /// combining marks.
    static func quoted(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard scalars.dropFirst(64).isEmpty == false else { return text }
        return String(String.UnicodeScalarView(scalars.prefix(64))) + "... (\(text.utf8.count) bytes)"
    }

    /// The request field a coding path names: `instances[0].b64`.
    static func field(_ path: [any CodingKey]) -> String {
        var out = ""
        for key in path {
            if let index = key.intValue { out += "[\(index)]" } else { out += out.isEmpty ? key.stringValue : ".\(key.stringValue)" }
        }
        return out.isEmpty ? "body" : out
    }

    /// An image tensor `[height][width][3]` of numbers in the model's range, flattened row-major.
    ///
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` naming the first bad element.
    static func imageTensor(_ decoder: any Decoder, field: String, context: Context) throws -> [Float] {
        let (height, width, range) = (context.height, context.width, context.range)
        var rows: any UnkeyedDecodingContainer
        do { rows = try decoder.unkeyedContainer() } catch {
            throw ServingError.invalidInput(field: field, problem: "expected a \(height)x\(width)x3 array of numbers or {\"b64\": ...}, got \(typeName(decoder))")
        }
        guard rows.count == height else {
            throw ServingError.invalidInput(field: field, problem: "expected \(height) rows (an image of \(height)x\(width)x3), got \(rows.count ?? 0)")
        }
        let slack = context.slack
        var scalars: [Float] = []
        scalars.reserveCapacity(height * width * 3)
        for y in 0..<height {
            var pixels: any UnkeyedDecodingContainer
            do { pixels = try rows.nestedUnkeyedContainer() } catch {
                throw ServingError.invalidInput(field: "\(field)[\(y)]", problem: "expected \(width) pixels, got \(typeName(next: &rows))")
            }
            guard pixels.count == width else { throw ServingError.invalidInput(field: "\(field)[\(y)]", problem: "expected \(width) pixels, got \(pixels.count ?? 0)") }
            for x in 0..<width {
                var channels: any UnkeyedDecodingContainer
                do { channels = try pixels.nestedUnkeyedContainer() } catch {
                    throw ServingError.invalidInput(field: "\(field)[\(y)][\(x)]", problem: "expected 3 channel values (RGB), got \(typeName(next: &pixels))")
                }
                guard channels.count == 3 else {
                    throw ServingError.invalidInput(field: "\(field)[\(y)][\(x)]", problem: "expected 3 channel values (RGB), got \(channels.count ?? 0)")
                }
                for c in 0..<3 {
                    let place = "\(field)[\(y)][\(x)][\(c)]"
                    let v = try number(&channels, field: place)
                    guard v >= range.lowerBound - slack, v <= range.upperBound + slack else {
                        throw ServingError.invalidInput(field: place, problem: "\(v) is outside \(range.lowerBound)...\(range.upperBound), the range of this model's preprocessed input; send preprocessed values, or the encoded image as {\"b64\": ...}")
                    }
                    scalars.append(v)
                }
            }
        }
        return scalars
    }

    /// The next element of `list` as a finite Float.
    ///
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` naming `field` for anything else
    ///   (a JSON boolean is not a number; nor is one beyond Float's range).
    static func number(_ list: inout any UnkeyedDecodingContainer, field: String) throws(ServingError) -> Float {
        do {
            let v = try list.decode(Float.self)
            if v.isFinite { return v }
        } catch {
            let kind = typeName(next: &list)
            throw .invalidInput(field: field, problem: kind == "a number" ? "a number beyond the range of a 32-bit float" : "expected a finite number, got \(kind)")
        }
        throw .invalidInput(field: field, problem: "a number beyond the range of a 32-bit float")
    }

    /// A flat or nested array of numbers, flattened row-major (KServe `data`), at most `limit`
    /// values and `maxDepth` levels of nesting. The arrays at one depth must all hold numbers or
    /// all hold arrays (a tensor's do): the first element at each depth decides, so that the
    /// values are read without trying each one as two kinds.
    ///
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` naming the first bad element.
    static func flatNumbers(_ decoder: any Decoder, limit: Int, maxDepth: Int, field: String) throws -> [Float] {
        var top: any UnkeyedDecodingContainer
        do { top = try decoder.unkeyedContainer() } catch {
            throw ServingError.invalidInput(field: field, problem: "expected an array of numbers, got \(typeName(decoder))")
        }
        var out: [Float] = []
        out.reserveCapacity(min(limit, 1 << 24))
        var holdsArrays = [Bool?](repeating: nil, count: maxDepth + 1)
        func walk(_ list: inout any UnkeyedDecodingContainer, depth: Int, path: String) throws {
            guard depth < maxDepth else { throw ServingError.invalidInput(field: path, problem: "nested more than \(maxDepth) levels deep") }
            var index = 0
            while !list.isAtEnd {
                let place = "\(path)[\(index)]"
                if holdsArrays[depth] == nil {
                    // The first element at this depth: a number, else an array.
                    if let v = try? list.decode(Float.self) {
                        holdsArrays[depth] = false
                        guard v.isFinite else { throw ServingError.invalidInput(field: place, problem: "a number beyond the range of a 32-bit float") }
                        guard out.count < limit else { throw ServingError.invalidInput(field: field, problem: "more than the \(limit) values its shape has") }
                        out.append(v)
                        index += 1
                        continue
                    }
                    guard var inner = try? list.nestedUnkeyedContainer() else {
                        _ = try number(&list, field: place)  // throws, naming what it is
                        continue
                    }
                    holdsArrays[depth] = true
                    try walk(&inner, depth: depth + 1, path: place)
                    index += 1
                    continue
                }
                if holdsArrays[depth] == true {
                    var inner: any UnkeyedDecodingContainer
                    do { inner = try list.nestedUnkeyedContainer() } catch {
                        throw ServingError.invalidInput(field: place, problem: "expected an array (the elements before it are arrays), got \(typeName(next: &list))")
                    }
                    try walk(&inner, depth: depth + 1, path: place)
                } else {
                    guard out.count < limit else { throw ServingError.invalidInput(field: field, problem: "more than the \(limit) values its shape has") }
                    out.append(try number(&list, field: place))
                }
                index += 1
            }
        }
        try walk(&top, depth: 0, path: field)
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
