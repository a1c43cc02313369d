import Foundation
import MobileNetTestSupport
import Testing

@Suite("Formula weights reproduce the Python generator bit for bit")
struct FormulaWeightsTests {
    struct Check: Decodable {
        struct Splitmix: Decodable { let key: String; let first_outputs: [String] }
        struct ArrayCheck: Decodable { let key: String; let `var`: String; let shape: [Int]; let first_values_f32_bits: [String]; let last_value_f32_bits: String }
        let fnv1a64_examples: [String: String]
        let splitmix64: Splitmix
        let arrays: [ArrayCheck]
    }

    static func load() throws -> Check {
        let data = try Data(contentsOf: TestData.fixtures.appendingPathComponent("keras-random/formula_check.json"))
        return try JSONDecoder().decode(Check.self, from: data)
    }

    @Test func hashAndStream() throws {
        let check = try Self.load()
        for (key, value) in check.fnv1a64_examples {
            #expect(String(FormulaWeights.fnv1a64(key)) == value, "fnv1a64(\(key))")
        }
        var stream = FormulaWeights.Stream(key: check.splitmix64.key)
        for expected in check.splitmix64.first_outputs {
            #expect(String(stream.next()) == expected)
        }
    }

    @Test func arrays() throws {
        for array in try Self.load().arrays {
            let variable = array.var == "input" ? "input" : array.var
            let values = FormulaWeights.values(key: array.key, variable: variable, shape: array.shape)
            let bits = values.prefix(array.first_values_f32_bits.count).map { "0x" + String($0.bitPattern, radix: 16).leftPadded(8) }
            #expect(bits == array.first_values_f32_bits, "\(array.key)")
            #expect("0x" + String(values.last!.bitPattern, radix: 16).leftPadded(8) == array.last_value_f32_bits)
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
