import Foundation
import MobileNetPipeline

/// Precision, recall and F1 of one class.
public struct ClassMetrics: Sendable, Equatable, Codable {
    /// Class name.
    public var name: String
    /// TP / (TP + FP); 0 when nothing was predicted as this class (scikit-learn's `zero_division=0`).
    public var precision: Double
    /// TP / (TP + FN); 0 when the class has no samples.
    public var recall: Double
    /// Harmonic mean of precision and recall; 0 when both are 0.
    public var f1: Double
    /// Number of samples of this class.
    public var support: Int
}

/// Classification metrics of a model on labelled data.
public struct EvaluationReport: Sendable, Equatable, Codable {
    /// Class names, in label order.
    public var classNames: [String]
    /// Number of samples.
    public var count: Int
    /// Share of samples whose top-1 class is the label.
    public var accuracy: Double
    /// k of ``topKAccuracy``.
    public var k: Int
    /// Share of samples whose label is among the k most probable classes.
    public var topKAccuracy: Double
    /// Mean cross-entropy (natural log) of the label's probability.
    public var loss: Double
    /// Per-class precision, recall, F1.
    public var perClass: [ClassMetrics]
    /// Macro-averaged F1.
    public var macroF1: Double
    /// `confusion[true][predicted]` counts.
    public var confusion: [[Int]]

    /// Computes the metrics from probabilities `[n, classes]` and labels.
    public init(probabilities: Matrix, labels: [Int], classNames: [String], k: Int = 5) {
        let classes = classNames.count
        self.classNames = classNames
        count = labels.count
        self.k = min(max(1, k), classes)
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        var correct = 0, topK = 0
        var loss = 0.0
        for r in 0..<labels.count {
            let row = Array(probabilities.row(r))
            let ranked = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }
            let predicted = ranked[0]
            confusion[labels[r]][predicted] += 1
            if predicted == labels[r] { correct += 1 }
            if ranked.prefix(self.k).contains(labels[r]) { topK += 1 }
            loss -= Foundation.log(max(row[labels[r]], 1e-7))
        }
        let n = Double(max(labels.count, 1))
        accuracy = Double(correct) / n
        topKAccuracy = Double(topK) / n
        self.loss = loss / n
        self.confusion = confusion
        perClass = (0..<classes).map { c in
            let tp = Double(confusion[c][c])
            let predicted = Double((0..<classes).reduce(0) { $0 + confusion[$1][c] })
            let support = confusion[c].reduce(0, +)
            let precision = predicted > 0 ? tp / predicted : 0
            let recall = support > 0 ? tp / Double(support) : 0
            let f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
            return ClassMetrics(name: classNames[c], precision: precision, recall: recall, f1: f1, support: support)
        }
        macroF1 = perClass.reduce(0) { $0 + $1.f1 } / Double(max(classes, 1))
    }

    /// The metrics as a terminal table: summary line, per-class table, confusion matrix
    /// (rows: true class, columns: predicted class).
    public var table: String {
        var lines: [String] = []
        lines.append(String(format: "accuracy %.4f  top-%d accuracy %.4f  loss %.4f  macro F1 %.4f  (%d images)", accuracy, k, topKAccuracy, loss, macroF1, count))
        let width = max(5, classNames.map(\.count).max() ?? 5)
        func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
        func left(_ s: String, _ w: Int) -> String { s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }
        lines.append("")
        lines.append(pad("class", width) + "  precision  recall      f1  support")
        for m in perClass {
            lines.append(pad(m.name, width) + String(format: "  %9.4f  %6.4f  %6.4f  %7d", m.precision, m.recall, m.f1, m.support))
        }
        lines.append("")
        lines.append("confusion matrix (rows: true, columns: predicted)")
        let cell = max(5, classNames.map(\.count).max() ?? 5)
        lines.append(pad("", width) + classNames.map { "  " + left($0, cell) }.joined())
        for (c, row) in confusion.enumerated() {
            lines.append(pad(classNames[c], width) + row.map { "  " + left(String($0), cell) }.joined())
        }
        return lines.joined(separator: "\n")
    }
}
