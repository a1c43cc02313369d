import MobileNetKernels

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014):
/// a small, seeded, reproducible generator for benchmarks, fuzzing and random test inputs.
/// Not for anything that needs unpredictability.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator state; the next output is derived from `state + 0x9E3779B97F4A7C15`.
    public var state: UInt64

    /// Creates a generator whose first step starts from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform `Float` in 0..<1 with 24 random bits.
    public mutating func uniform() -> Float { Float(next() >> 40) / 16_777_216 }
}

extension KerasWeightSet {
    /// Random weights of the right shapes for `configuration`, for speed measurements: LeCun-
    /// uniform kernels (`±sqrt(3 / fanIn)`), BatchNorm gamma and variance in 0.5..<1.5, beta,
    /// mean and biases in -0.1..<0.1. Predictions made with them mean nothing; inference speed
    /// does not depend on the values.
    ///
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` for an invalid configuration.
    public static func random(for configuration: MobileNetV2Configuration, seed: UInt64 = 7) throws(ModelError) -> KerasWeightSet {
        var generator = SplitMix64(seed: seed)
        let layers = try MobileNetV2Architecture.layers(for: configuration)
        return KerasWeightSet(source: "random weights", layers: layers.filter { !$0.weights.isEmpty }.map { layer in
            KerasLayerWeights(name: layer.name, arrays: layer.weights.map { spec in
                let fanIn = spec.name == "depthwise_kernel" ? spec.shape[0] * spec.shape[1] : spec.shape.dropLast().reduce(1, *)
                let limit = (3 / Float(max(fanIn, 1))).squareRoot()
                let values: [Float] = (0..<spec.shape.reduce(1, *)).map { _ in
                    let u = generator.uniform()
                    switch spec.name {
                    case "gamma", "moving_variance": return 0.5 + u
                    case "beta", "moving_mean", "bias": return (u * 2 - 1) * 0.1
                    default: return (u * 2 - 1) * limit
                    }
                }
                return WeightArray(name: spec.name, shape: spec.shape, values: values)
            })
        })
    }
}

extension Tensor {
    /// A tensor of uniform values in -1..<1 (a stand-in for a preprocessed image batch in
    /// speed measurements), reproducible from `seed`.
    public static func randomInput(shape: [Int], seed: UInt64) -> Tensor {
        var generator = SplitMix64(seed: seed)
        return Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in generator.uniform() * 2 - 1 })
    }
}
