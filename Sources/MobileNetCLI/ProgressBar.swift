import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress display on standard error: a bar, the count, the rate and the estimated
/// time left, redrawn in place. Drawn only when standard error is a terminal, so pipes, files
/// and CI logs get no progress noise.
final class ProgressBar {
    let total: Int
    let unit: String
    let enabled: Bool
    private let start: Date
    private var drawn = false

    /// - Parameters:
    ///   - total: the number of items the work has.
    ///   - unit: what the items are called ("images").
    ///   - enabled: whether to draw; by default when standard error is a terminal and there is
    ///     more than one item.
    ///   - start: when the work began (the rate counts from it); now by default.
    init(total: Int, unit: String, enabled: Bool? = nil, start: Date = Date()) {
        self.start = start
        self.total = total
        self.unit = unit
        self.enabled = enabled ?? (isatty(STDERR_FILENO) != 0 && total > 1)
    }

    /// Redraws the line with `done` items finished.
    func update(done: Int) {
        guard enabled else { return }
        let line = Self.line(done: done, total: total, elapsed: Date().timeIntervalSince(start), unit: unit)
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        drawn = true
    }

    /// Erases the line, so that other output can be printed; the next ``update(done:)`` redraws it.
    func clear() {
        guard drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        drawn = false
    }

    /// Erases the line for good.
    func finish() { clear() }

    /// The text of the line, for example `[########----------------]  123/550 images  35.2 images/s  ETA 0:12`.
    /// The rate and ETA are left out until some time has passed and an item is done.
    static func line(done: Int, total: Int, elapsed: TimeInterval, unit: String, barWidth: Int = 24) -> String {
        let fraction = total > 0 ? min(1, max(0, Double(done) / Double(total))) : 1
        let filled = Int((fraction * Double(barWidth)).rounded(.down))
        var text = "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: barWidth - filled) + "]"
        text += "  \(done)/\(total) \(unit)"
        if done > 0 && elapsed > 0 {
            let rate = Double(done) / elapsed
            text += "  " + String(format: "%.1f", rate) + " \(unit)/s"
            let remaining = Double(max(0, total - done)) / rate
            text += "  ETA " + duration(remaining)
        }
        return text
    }

    /// `m:ss`, or `h:mm:ss` from one hour.
    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded(.up))
        let (h, m, r) = (s / 3600, (s / 60) % 60, s % 60)
        return h > 0 ? String(format: "%d:%02d:%02d", h, m, r) : String(format: "%d:%02d", m, r)
    }
}
