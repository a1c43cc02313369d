import Foundation

/// The optimiser and its hyper-parameters, with Keras 3's defaults and update rules
/// (`keras/src/optimizers/{adam,sgd,rmsprop}.py`). `g` is the gradient, `w` the variable,
/// `t` the step count starting at 1; every rule is applied element-wise.
public enum OptimizerSettings: Sendable, Equatable, Codable {
    /// Keras `Adam`: `m ← m + (g − m)(1 − β1)`, `v ← v + (g² − v)(1 − β2)`,
    /// `w ← w − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε)`. Keras defaults β1 0.9, β2 0.999, ε 1e-7.
    case adam(learningRate: Double, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-7)
    /// Keras `SGD` with momentum (not Nesterov): `v ← momentum·v − lr·g`, `w ← w + v` (plain SGD,
    /// `w ← w − lr·g`, when momentum is 0).
    case sgd(learningRate: Double, momentum: Double = 0)
    /// Keras `RMSprop`: `a ← ρ·a + (1 − ρ)·g²`; centered: also `ḡ ← ρ·ḡ + (1 − ρ)·g` and
    /// `d = a − ḡ² + ε`, else `d = a + ε`; `Δ = lr·g / √d`; with momentum `m ← momentum·m + Δ`,
    /// `w ← w − m`, else `w ← w − Δ`. Keras defaults ρ 0.9, momentum 0, ε 1e-7, not centered
    /// (the Keras fine-tuning guide's optimiser).
    case rmsprop(learningRate: Double, rho: Double = 0.9, momentum: Double = 0, epsilon: Double = 1e-7, centered: Bool = false)

    /// The learning rate.
    public var learningRate: Double {
        switch self {
        case .adam(let lr, _, _, _), .sgd(let lr, _), .rmsprop(let lr, _, _, _, _): return lr
        }
    }
}

/// Optimiser state (Adam moments, momentum, RMSprop averages) over a list of parameter arrays:
/// the classifier head's Dense layers, or the trainable variables of a fine-tuned backbone
/// (``FineTuningModel``). Arrays are matched by position; their sizes must not change between steps.
public struct Optimizer: Sendable {
    /// The settings.
    public let settings: OptimizerSettings
    private var first: [[Double]] = []
    private var second: [[Double]] = []
    private var third: [[Double]] = []
    /// Number of updates applied so far (Keras `optimizer.iterations`).
    public private(set) var step = 0

    /// A fresh optimiser (zero state, as Keras creates its slot variables).
    public init(_ settings: OptimizerSettings) { self.settings = settings }

    /// Applies one update to `parameters` given `gradients` of the same shapes.
    ///
    /// - Precondition: `gradients` has one array per parameter array, of the same length, and
    ///   the lengths are those of the first update (a programmer error otherwise).
    public mutating func update(_ parameters: inout [[Double]], gradients: [[Double]]) {
        apply(&parameters, gradients)
    }

    /// Applies one update to `Float` parameters (``FineTuningNetwork``): the same rule, the
    /// optimiser state and the arithmetic in Double, each new value rounded to `Float` (Keras
    /// keeps both in float32; the difference is the rounding of the state).
    ///
    /// - Precondition: as ``update(_:gradients:)-([[Double]],_)``.
    public mutating func update(_ parameters: inout [[Float]], gradients: [[Float]]) {
        apply(&parameters, gradients)
    }

    /// One update of the variables named `paths` in `variables` by the gradients of the same
    /// names: the step of ``FineTuningModel/apply(_:optimizer:)`` and ``FineTuningNetwork/apply(_:optimizer:)``.
    /// The arrays leave the dictionary for the update, so they are updated in place, not copied.
    ///
    /// - Throws: ``FineTuningError/gradients(_:)`` for a path without a gradient or a gradient of
    ///   another length than its variable (checked before anything changes).
    mutating func update<Scalar: BinaryFloatingPoint>(_ variables: inout [String: [Scalar]], paths: [String],
                                                      gradients: [String: [Scalar]]) throws(FineTuningError) {
        var parameters: [[Scalar]] = [], g: [[Scalar]] = []
        for path in paths {
            guard let grad = gradients[path] else { throw .gradients("no gradient for '\(path)'") }
            guard let values = variables[path] else { throw .gradients("no variable '\(path)'") }
            guard grad.count == values.count else { throw .gradients("'\(path)' has \(grad.count) values, the variable \(values.count)") }
            parameters.append(values)
            g.append(grad)
        }
        for path in paths { variables[path] = nil }
        apply(&parameters, g)
        for (path, values) in zip(paths, parameters) { variables[path] = values }
    }

    private mutating func apply<Scalar: BinaryFloatingPoint>(_ parameters: inout [[Scalar]], _ gradients: [[Scalar]]) {
        precondition(gradients.count == parameters.count && zip(parameters, gradients).allSatisfy { $0.count == $1.count },
                     "Optimizer.update: gradients do not match the parameters")
        if first.isEmpty {
            first = parameters.map { [Double](repeating: 0, count: $0.count) }
            second = first
            third = first
        }
        precondition(first.count == parameters.count && zip(first, parameters).allSatisfy { $0.count == $1.count },
                     "Optimizer.update: parameter sizes changed since the first update")
        step += 1
        let settings = self.settings, t = Double(step)
        for p in parameters.indices {
            // Take the state out so that each array is uniquely referenced while it is updated.
            var m = first[p], v = second[p], c = third[p]
            (first[p], second[p], third[p]) = ([], [], [])
            parameters[p].withUnsafeMutableBufferPointer { w in
                gradients[p].withUnsafeBufferPointer { g in
                    m.withUnsafeMutableBufferPointer { m in
                        v.withUnsafeMutableBufferPointer { v in
                            c.withUnsafeMutableBufferPointer { c in
                                Self.rule(settings, step: t, w, g, m, v, c)
                            }
                        }
                    }
                }
            }
            (first[p], second[p], third[p]) = (m, v, c)
        }
    }

    /// Keras's update of one array: `w` the variable, `g` its gradient, `m`, `v`, `c` the state
    /// (Adam moments / momentum, squared averages, RMSprop's centred averages).
    private static func rule<Scalar: BinaryFloatingPoint>(_ settings: OptimizerSettings, step t: Double, _ w: UnsafeMutableBufferPointer<Scalar>,
                                                          _ g: UnsafeBufferPointer<Scalar>, _ m: UnsafeMutableBufferPointer<Double>,
                                                          _ v: UnsafeMutableBufferPointer<Double>, _ c: UnsafeMutableBufferPointer<Double>) {
        switch settings {
        case .adam(let lr, let b1, let b2, let eps):
            let alpha = lr * (1 - Foundation.pow(b2, t)).squareRoot() / (1 - Foundation.pow(b1, t))
            for i in w.indices {
                let g = Double(g[i])
                m[i] += (g - m[i]) * (1 - b1)
                v[i] += (g * g - v[i]) * (1 - b2)
                w[i] = Scalar(Double(w[i]) - m[i] * alpha / (v[i].squareRoot() + eps))
            }
        case .sgd(let lr, let momentum):
            for i in w.indices {
                if momentum == 0 {
                    w[i] = Scalar(Double(w[i]) - lr * Double(g[i]))
                } else {
                    m[i] = momentum * m[i] - lr * Double(g[i])
                    w[i] = Scalar(Double(w[i]) + m[i])
                }
            }
        case .rmsprop(let lr, let rho, let momentum, let eps, let centered):
            for i in w.indices {
                let g = Double(g[i])
                v[i] = rho * v[i] + (1 - rho) * g * g
                var denominator = v[i] + eps
                if centered {
                    c[i] = rho * c[i] + (1 - rho) * g
                    denominator -= c[i] * c[i]
                }
                let increment = lr * g / denominator.squareRoot()
                if momentum > 0 {
                    m[i] = momentum * m[i] + increment
                    w[i] = Scalar(Double(w[i]) - m[i])
                } else {
                    w[i] = Scalar(Double(w[i]) - increment)
                }
            }
        }
    }
}

/// Replaces `variables[path]` with `values` of the same count (``FineTuningModel/setVariable(_:_:)``,
/// ``FineTuningNetwork/setVariable(_:_:)``).
///
/// - Throws: ``FineTuningError/gradients(_:)`` for a path not held or another value count.
func replaceVariable<Scalar>(_ variables: inout [String: [Scalar]], _ path: String, _ values: [Scalar]) throws(FineTuningError) {
    guard let old = variables[path] else { throw .gradients("no variable '\(path)'") }
    guard old.count == values.count else { throw .gradients("'\(path)' has \(old.count) values, got \(values.count)") }
    variables[path] = values
}
