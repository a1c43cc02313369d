import Foundation
import MobileNetServing
import Testing

/// The hand-written JSON of the float-heavy responses against `JSONEncoder`, the reference.
@Suite("Response JSON")
struct ServingJSONTests {
    static let awkward: [Float] = [0, -0.0, 1, 6, 0.5, 1e-7, 1.17549435e-38, 1.4e-45, 3.4028235e38, -2.5e-3, 0.1, 1.0 / 3, 123456.79,
                                   .nan, .infinity, -.infinity]

    @Test("floats: byte-identical to JSONEncoder (shortest round-trip digits; NaN and infinities as its strings)")
    func floats() throws {
        var random = SystemRandomNumberGenerator()
        let values = Self.awkward + (0..<2000).map { _ in Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &random)) }
        for value in values {
            var fast = ""
            ServingJSON.append(value, to: &fast)
            let reference = String(decoding: ServingJSON.encode([value]), as: UTF8.self).dropFirst().dropLast()
            #expect(fast == reference, "\(value.bitPattern)")
        }
    }

    @Test("strings: byte-identical to JSONEncoder (quotes, backslashes, control characters, slashes, non-ASCII)")
    func strings() {
        for text in ["imagenet", "a\"b\\c", "tab\there\nnew\rret", "\u{01}\u{1f}\u{7f}", "a/b", "café 🐈", ""] {
            var fast = ""
            ServingJSON.append(string: text, to: &fast)
            #expect(fast == String(decoding: ServingJSON.encode([text]), as: UTF8.self).dropFirst().dropLast(), "\(text)")
        }
    }

    @Test("a TF Serving predict response: byte-identical to JSONEncoder's of the same rows")
    func predictResponse() throws {
        struct Row: Encodable { var predictions: [[Float]] }
        struct Columnar: Encodable { var outputs: [[Float]] }
        let rows: [[Float]] = [Array(Self.awkward.prefix(13)), (0..<1000).map { Float($0) / 997 }]
        let outputs = ServedOutputs(embeddings: rows, probabilities: rows)
        #expect(TFServing.encodePredictResponse(outputs, format: .row) == ServingJSON.encode(Row(predictions: rows)))
        #expect(TFServing.encodePredictResponse(outputs, format: .columnar) == ServingJSON.encode(Columnar(outputs: rows)))
        let embedding = EmbeddingResponse(model: "embed\"er", dimension: 13, embedding: rows[0])
        #expect(embedding.jsonData == ServingJSON.encode(embedding))
    }
}
