/// A JSON value whose object keys keep their order, rendered the way Python's `json.dumps`
/// renders Keras configs (`", "` and `": "` separators, ASCII only, `6.0` for integral floats),
/// so an exported `config.json` reads like the one Keras writes.
public indirect enum KerasJSON: Sendable {
    /// `null` (Python `None`).
    case null
    /// `true` / `false`.
    case bool(Bool)
    /// An integer.
    case int(Int)
    /// A float (always rendered with a decimal point or exponent, like Python's `repr`).
    case double(Double)
    /// A string.
    case string(String)
    /// A list.
    case array([KerasJSON])
    /// An object, keys in order.
    case object([(key: String, value: KerasJSON)])

    /// The value rendered as compact JSON text, like `json.dumps(value)`.
    public var rendered: String {
        var out = ""
        render(into: &out)
        return out
    }

    func render(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += Self.pythonRepr(d)
        case .string(let s): Self.quote(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += ", " }
                item.render(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, member) in members.enumerated() {
                if i > 0 { out += ", " }
                Self.quote(member.key, into: &out)
                out += ": "
                member.value.render(into: &out)
            }
            out += "}"
        }
    }

    /// Python's `repr(float)` for the values configs hold: `6.0`, `0.001`, `1e-07`; non-finite
    /// values as Python's `json.dumps` writes them (`NaN`, `Infinity`).
    static func pythonRepr(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d > 0 ? "Infinity" : "-Infinity" }
        if d == d.rounded(), abs(d) < 1e16 { return String(Int64(d)) + ".0" }
        return String(d)
    }

    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for unit in s.utf16 {
            switch unit {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
            default:
                let hex = String(unit, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            }
        }
        out += "\""
    }
}
