import Foundation

/// Softmax cross-entropy on logits with label smoothing and optional class weights, as Keras
/// `CategoricalCrossentropy(from_logits=True, label_smoothing=ε)` on one-hot labels with the
/// default reduction (`sum_over_batch_size`), and `model.fit(class_weight=…)`'s per-sample weights:
/// `L = (1/N) Σᵢ wᵢ · (−Σⱼ tᵢⱼ · log softmax(zᵢ)ⱼ)`, targets `tᵢⱼ = (1 − ε)·[j = labelᵢ] + ε / classes`,
/// `wᵢ` the weight of labelᵢ's class (1 without class weights; the divisor stays N, as in Keras).
/// Its gradient is `dL/dzᵢⱼ = wᵢ · (softmax(zᵢ)ⱼ − tᵢⱼ) / N`. The log-softmax is computed stably
/// (`z − max z − log Σ exp(z − max z)`).
public struct SoftmaxCrossEntropy: Sendable, Equatable {
    /// Label smoothing ε in 0...1 (0: plain cross-entropy; Keras default 0).
    public let labelSmoothing: Double
    /// Per-class sample weights (Keras `class_weight`, indexed by class), or nil for all 1.
    public let classWeights: [Double]?

    /// A loss with label smoothing `labelSmoothing` and optional class weights.
    ///
    /// - Throws: ``FineTuningError/invalidLabelSmoothing(_:)`` outside 0...1;
    ///   ``FineTuningError/labels(_:)`` for a class weight that is negative or not finite.
    public init(labelSmoothing: Double = 0, classWeights: [Double]? = nil) throws(FineTuningError) {
        guard labelSmoothing >= 0, labelSmoothing <= 1 else { throw .invalidLabelSmoothing(labelSmoothing) }
        if let bad = classWeights?.first(where: { !($0.isFinite && $0 >= 0) }) { throw .labels("class weight \(bad) is not a finite value ≥ 0") }
        self.labelSmoothing = labelSmoothing
        self.classWeights = classWeights
    }

    /// The same loss without class weights (Keras reports the validation loss unweighted).
    public var unweighted: SoftmaxCrossEntropy {
        // Cannot throw: the smoothing was checked when this loss was made.
        (try? SoftmaxCrossEntropy(labelSmoothing: labelSmoothing)) ?? self
    }

    /// The mean loss over the batch and its gradient with respect to the logits.
    ///
    /// - Parameters:
    ///   - logits: `[N, classes]`, N ≥ 1.
    ///   - labels: `N` class indices in `0..<classes`.
    /// - Returns: the loss (≥ 0) and `dL/dlogits` `[N, classes]`.
    /// - Throws: ``FineTuningError/labels(_:)`` when the counts differ, a label is out of range,
    ///   or the class weights are not one per class.
    public func evaluate(logits: DoubleTensor, labels: [Int]) throws(FineTuningError) -> (loss: Double, gradient: DoubleTensor) {
        guard logits.shape.count == 2, logits.shape[0] >= 1 else { throw .labels("logits have shape \(logits.shape), not [N, classes]") }
        let (n, k) = (logits.shape[0], logits.shape[1])
        guard labels.count == n else { throw .labels("\(labels.count) labels for a batch of \(n)") }
        if let bad = labels.first(where: { $0 < 0 || $0 >= k }) { throw .labels("label \(bad) is not in 0..<\(k)") }
        if let classWeights, classWeights.count != k { throw .labels("\(classWeights.count) class weights for \(k) classes") }
        var loss = 0.0
        var gradient = DoubleTensor(shape: logits.shape)
        let off = labelSmoothing / Double(k)
        for i in 0..<n {
            let row = Array(logits.scalars[(i * k)..<((i + 1) * k)])
            let m = row.max() ?? 0
            let logSum = Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
            let w = classWeights?[labels[i]] ?? 1
            for j in 0..<k {
                let logP = row[j] - m - logSum
                let target = (j == labels[i] ? 1 - labelSmoothing : 0) + off
                loss -= w * target * logP
                gradient.scalars[i * k + j] = w * (Foundation.exp(logP) - target) / Double(n)
            }
        }
        return (loss / Double(n), gradient)
    }
}

/// An L2 kernel penalty, as Keras `kernel_regularizer=regularizers.L2(l2)`: `l2 · Σ k²` added to
/// the loss, `2 · l2 · k` to the kernel's gradient. One definition for the head phase
/// (`HeadObjective`) and both fine-tuning models (Double and Float32 variables).
public struct L2Penalty: Sendable, Equatable {
    /// The factor `l2` (≥ 0; 0 adds nothing).
    public let strength: Double

    /// A penalty of factor `strength`.
    public init(_ strength: Double) { self.strength = strength }

    /// `strength · Σ k²` over `kernel`, summed in Double.
    public func loss<Values: Sequence>(of kernel: Values) -> Double where Values.Element: BinaryFloatingPoint {
        strength * kernel.reduce(0.0) { $0 + Double($1) * Double($1) }
    }

    /// Adds `2 · strength · k` to each element of `gradient` (the same length as `kernel`).
    public func addGradient<Value: BinaryFloatingPoint>(of kernel: [Value], to gradient: inout [Value]) {
        precondition(kernel.count == gradient.count, "L2Penalty: \(kernel.count) kernel values for \(gradient.count) gradients")
        for i in gradient.indices { gradient[i] += Value(2 * strength * Double(kernel[i])) }
    }
}
