import Foundation
import MobileNetPipeline

/// A self-contained HTML report (inline SVG, no scripts or external files): the training curves
/// (loss and accuracy, training and validation, per epoch) and the confusion matrix as a heat map,
/// with the per-class metrics table.
public enum HTMLReport {
    /// The report as HTML text.
    ///
    /// - Parameters:
    ///   - title: heading (e.g. the model file name).
    ///   - history: per-epoch metrics (empty for an evaluation-only report).
    ///   - bestEpoch: the epoch whose weights were kept (1-based), marked on the curves; nil for
    ///     no mark.
    ///   - evaluation: the metrics shown as the confusion matrix and table.
    ///   - fineTuningHistory: per-epoch metrics of the fine-tuning phase, drawn after the head
    ///     phase's on the same curves (a dashed line marks where fine-tuning starts).
    ///   - fineTuningBestEpoch: the fine-tuning epoch whose weights were kept (1-based, counted
    ///     within the fine-tuning phase).
    ///   - misclassified: validation images the classifier gets wrong, shown as thumbnails (at
    ///     most ``maximumThumbnails``, most confident mistakes first; ~16 KB each) with their true
    ///     and predicted classes and the probability.
    public static func render(title: String, history: [EpochRecord], bestEpoch: Int?, evaluation: EvaluationReport,
                              fineTuningHistory: [EpochRecord] = [], fineTuningBestEpoch: Int? = nil,
                              misclassified: [Misclassification] = []) -> String {
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>\(escape(title))</title>
            <style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
            td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
            .charts{display:flex;flex-wrap:wrap;gap:2em}</style></head><body>
            <h1>\(escape(title))</h1>
            <p>\(String(format: "accuracy %.2f%% · top-%d %.2f%% · loss %.4f · macro F1 %.4f · %d images", evaluation.accuracy * 100, evaluation.k, evaluation.topKAccuracy * 100, evaluation.loss, evaluation.macroF1, evaluation.count))</p>

            """
        if !history.isEmpty || !fineTuningHistory.isEmpty {
            let all = history + fineTuningHistory
            let boundary = fineTuningHistory.isEmpty ? nil : history.count
            let best = fineTuningHistory.isEmpty ? bestEpoch : fineTuningBestEpoch.map { $0 + history.count }
            html += "<h2>Training</h2>"
            if boundary != nil {
                html += String(format: "<p>Head on the frozen base: epochs 1–%d; fine-tuning: epochs %d–%d (after the dashed grey line).</p>", history.count, history.count + 1, all.count)
            }
            html += "<div class=\"charts\">"
            html += lineChart(title: "loss", series: [("loss", "#1f77b4", all.map(\.loss)), ("val_loss", "#ff7f0e", all.compactMap(\.validationLoss))], bestEpoch: best, boundary: boundary)
            html += lineChart(title: "accuracy", series: [("accuracy", "#1f77b4", all.map(\.accuracy)), ("val_accuracy", "#ff7f0e", all.compactMap(\.validationAccuracy))], bestEpoch: best, boundary: boundary)
            html += "</div>\n"
        }
        html += "<h2>Confusion matrix</h2>\n" + confusionMatrix(evaluation)
        html += "<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
        for m in evaluation.perClass {
            html += "<tr><td>\(escape(m.name))</td>" + String(format: "<td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%d</td></tr>", m.precision, m.recall, m.f1, m.support)
        }
        html += "</table>\n"
        html += misclassifiedSection(misclassified, evaluated: evaluation.count)
        html += "</body></html>\n"
        return html
    }

    /// The most thumbnails a report embeds.
    public static let maximumThumbnails = 60

    static func misclassifiedSection(_ items: [Misclassification], evaluated: Int) -> String {
        var html = "<h2>Misclassified validation images</h2>\n"
        guard !items.isEmpty else { return html + "<p>None: every validation image is classified correctly.</p>\n" }
        let shown = items.prefix(maximumThumbnails)
        html += "<p>\(items.count) of \(evaluated) images" + (items.count > shown.count ? ", the \(shown.count) most confident mistakes shown" : "") + ".</p>\n"
        html += "<div style=\"display:flex;flex-wrap:wrap;gap:12px\">"
        for item in shown {
            let image = Thumbnail.dataURL(contentsOf: item.url).map { "<img src=\"\($0)\" alt=\"\(escape(item.url.lastPathComponent))\">" } ?? "<div>(cannot be read)</div>"
            html += "<figure style=\"margin:0;width:150px;font-size:12px\">" + image
            html += "<figcaption title=\"\(escape(item.url.path))\">\(escape(item.url.lastPathComponent))<br>true: \(escape(item.trueClass))"
            html += String(format: " (%.1f%%)", item.trueClassProbability * 100) + "<br>predicted: \(escape(item.predictedClass))"
            html += String(format: " (%.1f%%)", item.probability * 100) + "</figcaption></figure>"
        }
        return html + "</div>\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func lineChart(title: String, series: [(String, String, [Double])], bestEpoch: Int?, boundary: Int? = nil) -> String {
        let width = 420.0, height = 260.0, left = 50.0, bottom = 30.0, top = 24.0, right = 10.0
        let all = series.flatMap(\.2).filter { $0.isFinite }
        let epochs = series.map(\.2.count).max() ?? 0
        guard epochs > 0, var lo = all.min(), var hi = all.max() else { return "" }
        if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
        func x(_ i: Int) -> Double { left + (width - left - right) * (epochs == 1 ? 0.5 : Double(i) / Double(epochs - 1)) }
        func y(_ v: Double) -> Double { top + (height - top - bottom) * (1 - (v - lo) / (hi - lo)) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(title)\">"
        svg += "<text x=\"\(left)\" y=\"16\" font-size=\"14\">\(title)</text>"
        svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
        for t in 0...4 {
            let v = lo + (hi - lo) * Double(t) / 4
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.3f</text>", left - 4, y(v) + 3, v)
        }
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\">epoch (1…%d)</text>", (left + width) / 2, height - 8, epochs)
        if let bestEpoch, bestEpoch >= 1, bestEpoch <= epochs {
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"/>", x(bestEpoch - 1), top, x(bestEpoch - 1), height - bottom)
        }
        if let boundary, boundary >= 1, boundary < epochs {
            let bx = (x(boundary - 1) + x(boundary)) / 2
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" stroke-dasharray=\"2 2\"/>", bx, top, bx, height - bottom)
        }
        for (index, (name, color, values)) in series.enumerated() where !values.isEmpty {
            let points = values.enumerated().map { String(format: "%.1f,%.1f", x($0.offset), y($0.element)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>"
            svg += String(format: "<text x=\"%.1f\" y=\"16\" font-size=\"11\" ", width - 160 + Double(index) * 80) + "fill=\"\(color)\">\(name)</text>"
        }
        return svg + "</svg>\n"
    }

    static func confusionMatrix(_ report: EvaluationReport) -> String {
        let n = report.classNames.count
        let cell = 56.0, labelWidth = 110.0, header = 90.0
        let size = (labelWidth + cell * Double(n) + 10, header + cell * Double(n) + 10)
        let maxCount = max(1, report.confusion.flatMap { $0 }.max() ?? 1)
        var svg = String(format: "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" role=\"img\" aria-label=\"confusion matrix\">", size.0, size.1)
        svg += "<text x=\"\(labelWidth)\" y=\"14\" font-size=\"12\">predicted →  (rows: true class)</text>"
        for (j, name) in report.classNames.enumerated() {
            svg += String(format: "<text transform=\"translate(%.1f,%.1f) rotate(-45)\" font-size=\"11\">", labelWidth + cell * (Double(j) + 0.4), header - 6) + escape(name) + "</text>"
        }
        for (i, row) in report.confusion.enumerated() {
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">", labelWidth - 6, header + cell * (Double(i) + 0.55)) + escape(report.classNames[i]) + "</text>"
            for (j, count) in row.enumerated() {
                let intensity = Double(count) / Double(maxCount)
                let shade = Int(255 - 200 * intensity)
                let fill = i == j ? "rgb(\(shade),\(shade),255)" : "rgb(255,\(shade),\(shade))"
                svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" ", labelWidth + cell * Double(j), header + cell * Double(i), cell, cell) + "fill=\"\(fill)\" stroke=\"#fff\"/>"
                svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" ", labelWidth + cell * (Double(j) + 0.5), header + cell * (Double(i) + 0.58)) + "fill=\"\(intensity > 0.6 ? "#fff" : "#000")\">\(count)</text>"
            }
        }
        return svg + "</svg>\n"
    }
}
