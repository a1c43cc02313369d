// What the commands print: standard error lines, tables of outside text, counts, progress, JSON.
import ArgumentParser
import Foundation
import MobileNet

/// Writes a line to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// A file name or other text from the outside as a table shows it: control characters (an escape
/// sequence in a file name would drive the terminal) written as `\x1b`; the rest as it is.
/// JSON output is escaped by its encoder.
func displayed(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return text }
    return text.unicodeScalars.map { scalar in
        scalar.properties.generalCategory == .control ? String(format: "\\x%02x", scalar.value) : String(scalar)
    }.joined()
}

/// `1 image`, `2 images`.
func counted(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

/// A progress bar on standard error (a terminal only) for a library call's (done, total) reports.
final class ProgressReporter {
    private var bar: ProgressBar?
    private let start = Date()
    /// The callback to hand to the library.
    func update(_ done: Int, _ total: Int) {
        if bar == nil { bar = ProgressBar(total: total, unit: "images", start: start) }
        bar?.update(done: done)
    }
    /// Clears the bar.
    func finish() { bar?.finish() }
    deinit { bar?.finish() }
}

/// Encodes a value as JSON text with sorted keys.
func jsonText<T: Encodable>(_ value: T, pretty: Bool = true) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// The message of an error: its `LocalizedError` description when it has one.
func errorMessage(_ error: any Error) -> String {
    (error as? LocalizedError)?.errorDescription ?? String(describing: error)
}
