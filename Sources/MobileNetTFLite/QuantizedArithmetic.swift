import Foundation

/// TensorFlow Lite's fixed-point requantization, as its reference kernels compute it
/// (`tensorflow/lite/kernels/internal/common.h`, `quantization_util.cc`; gemmlowp's
/// `SaturatingRoundingDoublingHighMul` and `RoundingDivideByPOT`): a real multiplier
/// `M = input scale * weight scale / output scale` becomes a 31-bit fixed-point mantissa and a
/// power-of-two shift, and `acc * M` is computed with two roundings, half away from zero. The
/// plain-Swift integer kernels follow it bit for bit, so their outputs are LiteRT's built-in
/// kernels'.
public enum QuantizedArithmetic {
    /// A real multiplier as TFLite stores it: `multiplier * 2^(shift - 31)`.
    public struct Multiplier: Sendable, Equatable {
        /// The mantissa in Q0.31, 2^30 ... 2^31 - 1 (0 for a zero multiplier).
        public var multiplier: Int32
        /// The power of two; positive shifts left.
        public var shift: Int

        /// Creates a multiplier from its mantissa and shift.
        public init(multiplier: Int32, shift: Int) {
            self.multiplier = multiplier
            self.shift = shift
        }
    }

    /// The requantization multipliers integer kernels take: 2^-32 ... 256 (XNNPACK's limits; a
    /// scale outside them is a damaged or hostile file, refused when the program is compiled).
    public static let multiplierRange: ClosedRange<Double> = 0x1p-32...255.99

    /// TFLite's `QuantizeMultiplier`: `frexp`, the mantissa rounded to 31 bits (half away from
    /// zero), a mantissa of exactly 2^31 halved, a shift below -31 flushed to zero.
    ///
    /// - Parameter real: a finite, non-negative multiplier.
    public static func quantizeMultiplier(_ real: Double) -> Multiplier {
        guard real != 0, real.isFinite else { return Multiplier(multiplier: 0, shift: 0) }
        let exponent = real.exponent + 1 // frexp: real = q * 2^exponent, q in [0.5, 1)
        let q = real / Double(sign: .plus, exponent: exponent, significand: 1)
        var fixed = Int64((q * Double(1 << 31)).rounded(.toNearestOrAwayFromZero))
        var shift = exponent
        if fixed == 1 << 31 {
            fixed /= 2
            shift += 1
        }
        if shift < -31 {
            shift = 0
            fixed = 0
        }
        if shift > 30 {
            shift = 30
            fixed = (1 << 31) - 1
        }
        return Multiplier(multiplier: Int32(fixed), shift: shift)
    }

    /// gemmlowp's `SaturatingRoundingDoublingHighMul`: the high 32 bits of `2 * a * b`, rounded
    /// to nearest (ties away from zero), saturating the one overflow (`Int32.min * Int32.min`).
    @inline(__always)
    public static func saturatingRoundingDoublingHighMul(_ a: Int32, _ b: Int32) -> Int32 {
        if a == b && a == Int32.min { return Int32.max }
        let ab = Int64(a) * Int64(b)
        let nudge: Int64 = ab >= 0 ? 1 << 30 : 1 - (1 << 30)
        return Int32(truncatingIfNeeded: (ab + nudge) / (1 << 31))
    }

    /// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest, ties away from zero.
    @inline(__always)
    public static func roundingDivideByPOT(_ x: Int32, _ exponent: Int) -> Int32 {
        let mask = Int32(truncatingIfNeeded: (Int64(1) << exponent) - 1)
        let remainder = x & mask
        let threshold = (mask >> 1) + (x < 0 ? 1 : 0)
        return (x >> Int32(exponent)) + (remainder > threshold ? 1 : 0)
    }

    /// TFLite's `MultiplyByQuantizedMultiplier`: `x * multiplier * 2^(shift - 31)`, the left
    /// shift applied before the high multiplication (wrapping, as the C++ does), the right
    /// shift after it, rounded.
    @inline(__always)
    public static func multiply(_ x: Int32, by m: Multiplier) -> Int32 {
        let left = m.shift > 0 ? m.shift : 0
        let right = m.shift > 0 ? 0 : -m.shift
        return roundingDivideByPOT(saturatingRoundingDoublingHighMul(x &* (Int32(1) << Int32(left)), m.multiplier), right)
    }

    /// The requantization of LiteRT's optimized integer kernels on x86 (its built-in CONV_2D,
    /// DEPTHWISE_CONV_2D and FULLY_CONNECTED, through ruy): the same fixed-point multiplier, but
    /// both steps round half up (add half, then an arithmetic shift) instead of half away from
    /// zero: `floor((floor((x * multiplier + 2^30) / 2^31) + 2^(r-1)) / 2^r)` for a right shift `r`.
    /// On the Coral model's first projection it reproduces LiteRT exactly where ``multiply(_:by:)``
    /// differs by 1 in 484 of 200,704 outputs (`scripts/fixtures/make_tflite_fixtures.py`).
    @inline(__always)
    public static func multiplyRoundingUp(_ x: Int32, by m: Multiplier) -> Int32 {
        let left = m.shift > 0 ? m.shift : 0
        let right = m.shift > 0 ? 0 : -m.shift
        let high = ((Int64(x) << Int64(left)) &* Int64(m.multiplier) &+ (1 << 30)) >> 31
        let result = right == 0 ? high : (high + (Int64(1) << Int64(right - 1))) >> Int64(right)
        return Int32(truncatingIfNeeded: result)
    }

    /// TFLite's `CalculateActivationRangeQuantized`: the quantized bounds of a fused activation
    /// on an output of `scale` and `zeroPoint` in `typeRange` (`quantize(f) = zeroPoint +
    /// round(f / scale)`, the rounding half away from zero, in Float as TFLite computes it).
    public static func activationRange(_ activation: TFLiteOperatorOptions.Activation, scale: Float, zeroPoint: Int,
                                       typeRange: ClosedRange<Int32>) -> ClosedRange<Int32> {
        func quantize(_ f: Float) -> Int32 { Int32(zeroPoint) + Int32((f / scale).rounded(.toNearestOrAwayFromZero)) }
        let (lo, hi) = (typeRange.lowerBound, typeRange.upperBound)
        switch activation {
        case .relu: return max(lo, quantize(0))...hi
        case .relu6: return max(lo, quantize(0))...max(max(lo, quantize(0)), min(hi, quantize(6)))
        case .reluN1To1: return max(lo, quantize(-1))...max(max(lo, quantize(-1)), min(hi, quantize(1)))
        default: return typeRange
        }
    }
}
