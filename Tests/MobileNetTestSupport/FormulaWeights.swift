import MobileNet

/// The deterministic "formula" weights of `scripts/fixtures/formula_weights.py`, reproduced
/// bit for bit: FNV-1a 64 of a key seeds a SplitMix64 stream; `u = (z >> 40) / 2^24`; values
/// are computed in Double and rounded to Float. BatchNorm statistics are random (gamma and
/// variance in 0.5..<1.5, beta and mean in -0.25..<0.25), so a wrong folding shows. The Keras fixtures were produced with the same
/// weights, so Swift and Keras run the very same network.
public enum FormulaWeights {
    /// FNV-1a 64-bit hash of the UTF-8 bytes of `key`.
    public static func fnv1a64(_ key: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    /// The SplitMix64 stream for `key`.
    public struct Stream {
        var generator: SplitMix64
        public init(key: String) { generator = SplitMix64(seed: FormulaWeights.fnv1a64(key)) }
        public mutating func next() -> UInt64 { generator.next() }
        public mutating func nextUniform() -> Double { Double(next() >> 40) / 16_777_216.0 }
    }

    /// The values of one array, in row-major order.
    public static func values(key: String, variable: String, shape: [Int]) -> [Float] {
        var stream = Stream(key: key)
        let count = shape.reduce(1, *)
        let fanIn: Int
        switch variable {
        case "kernel": fanIn = shape.dropLast().reduce(1, *)
        case "depthwise_kernel": fanIn = shape[0] * shape[1]
        default: fanIn = 1
        }
        // 3.0 (LeCun-uniform variance) for convolution kernels keeps the random network well
        // conditioned; 192.0 for Dense kernels spreads the logits (see formula_weights.py).
        let limit = ((shape.count == 2 ? 192.0 : 3.0) / Double(fanIn)).squareRoot()
        return (0..<count).map { _ in
            let u = stream.nextUniform()
            switch variable {
            case "kernel", "depthwise_kernel": return Float((2.0 * u - 1.0) * limit)
            case "bias": return Float((2.0 * u - 1.0) * 0.1)
            case "gamma", "moving_variance": return Float(0.5 + u)
            case "beta", "moving_mean": return Float((2.0 * u - 1.0) * 0.25)
            default: return Float(2.0 * u - 1.0)
            }
        }
    }

    /// Formula weights for every layer of a MobileNetV2 configuration, keyed `"<seed>:<layer>/<variable>"`.
    public static func weights(for configuration: MobileNetV2Configuration, seed: Int) throws -> KerasWeightSet {
        let layers = try MobileNetV2Architecture.layers(for: configuration)
        return KerasWeightSet(source: "formula weights (seed \(seed))", layers: layers.filter { !$0.weights.isEmpty }.map { layer in
            KerasLayerWeights(name: layer.name, arrays: layer.weights.map { spec in
                WeightArray(name: spec.name, shape: spec.shape,
                            values: values(key: "\(seed):\(layer.name)/\(spec.name)", variable: spec.name, shape: spec.shape))
            })
        })
    }

    /// The formula input batch `[N, H, W, 3]` in -1...1 (key `"<seed>:input"`).
    public static func input(seed: Int, batch: Int, height: Int, width: Int) -> Tensor {
        let shape = [batch, height, width, 3]
        return Tensor(shape: shape, scalars: values(key: "\(seed):input", variable: "input", shape: shape))
    }
}
