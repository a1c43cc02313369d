import Foundation

/// Softmax cross-entropy on logits with label smoothing, as Keras
/// `CategoricalCrossentropy(from_logits=True, label_smoothing=ε)` on one-hot labels with the
/// default reduction (the mean over the batch):
/// `L = (1/N) Σᵢ −Σⱼ tᵢⱼ · log softmax(zᵢ)ⱼ`, targets `tᵢⱼ = (1 − ε)·[j = labelᵢ] + ε / classes`.
/// Its gradient is `dL/dzᵢⱼ = (softmax(zᵢ)ⱼ − tᵢⱼ) / N`. The log-softmax is computed stably
/// (`z − max z − log Σ exp(z − max z)`).
public struct SoftmaxCrossEntropy: Sendable, Equatable {
    /// Label smoothing ε in 0...1 (0: plain cross-entropy; Keras default 0).
    public let labelSmoothing: Double

    /// A loss with label smoothing `labelSmoothing`.
    ///
    /// - Throws: ``FineTuningError/invalidLabelSmoothing(_:)`` outside 0...1.
    public init(labelSmoothing: Double = 0) throws(FineTuningError) {
        guard labelSmoothing >= 0, labelSmoothing <= 1 else { throw .invalidLabelSmoothing(labelSmoothing) }
        self.labelSmoothing = labelSmoothing
    }

    /// The mean loss over the batch and its gradient with respect to the logits.
    ///
    /// - Parameters:
    ///   - logits: `[N, classes]`, N ≥ 1.
    ///   - labels: `N` class indices in `0..<classes`.
    /// - Returns: the loss (≥ 0) and `dL/dlogits` `[N, classes]`.
    /// - Throws: ``FineTuningError/labels(_:)`` when the counts differ or a label is out of range.
    public func evaluate(logits: DoubleTensor, labels: [Int]) throws(FineTuningError) -> (loss: Double, gradient: DoubleTensor) {
        guard logits.shape.count == 2, logits.shape[0] >= 1 else { throw .labels("logits have shape \(logits.shape), not [N, classes]") }
        let (n, k) = (logits.shape[0], logits.shape[1])
        guard labels.count == n else { throw .labels("\(labels.count) labels for a batch of \(n)") }
        if let bad = labels.first(where: { $0 < 0 || $0 >= k }) { throw .labels("label \(bad) is not in 0..<\(k)") }
        var loss = 0.0
        var gradient = DoubleTensor(shape: logits.shape)
        let off = labelSmoothing / Double(k)
        for i in 0..<n {
            let row = Array(logits.scalars[(i * k)..<((i + 1) * k)])
            let m = row.max() ?? 0
            let logSum = Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
            for j in 0..<k {
                let logP = row[j] - m - logSum
                let target = (j == labels[i] ? 1 - labelSmoothing : 0) + off
                loss -= target * logP
                gradient.scalars[i * k + j] = (Foundation.exp(logP) - target) / Double(n)
            }
        }
        return (loss / Double(n), gradient)
    }
}
