import MobileNetModel

/// SplitMix64: a small, fast, seeded generator. Everything random in training (weight
/// initialisation, shuffling, dropout masks, the validation split, augmentation) draws from it,
/// so the same seed gives a bit-identical model on any machine.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var generator: SplitMix64

    /// A generator started from `seed`.
    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    /// The next 64 random bits (``/MobileNetModel/SplitMix64``).
    public mutating func next() -> UInt64 { generator.next() }

    /// A uniform Double in [0, 1) (53 random bits).
    public mutating func uniform() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// A uniform integer in `0..<bound` (bound > 0), without modulo bias.
    public mutating func below(_ bound: Int) -> Int {
        Int(next(upperBound: UInt64(bound)))
    }

    /// Fisher–Yates shuffle of `array` in place, deterministic for a given generator state.
    public mutating func shuffle<T>(_ array: inout [T]) {
        guard array.count > 1 else { return }
        for i in stride(from: array.count - 1, to: 0, by: -1) {
            array.swapAt(i, below(i + 1))
        }
    }
}
