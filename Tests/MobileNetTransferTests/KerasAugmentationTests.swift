import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// `KerasAugmentation` against Keras 3.15.1 itself (fixtures from
/// scripts/fixtures/make_augmentation_fixtures.py) and against properties that hold whatever
/// Keras does: flip twice is the identity, angle 0 is the identity, 180° is the point
/// reflection about the centre, seeded views are reproducible and spread over the range.
@Suite("KerasAugmentation")
struct KerasAugmentationTests {
    static let directory = TestData.fixtures.appendingPathComponent("keras-augmentation")

    /// Largest |Swift − Keras| allowed on pixels in 0...255. Measured on x86-64 Linux: 0 (bit for
    /// bit on all 16 cases); a libm whose `cosf`/`sinf` round differently moves the sampling
    /// coordinates by an ulp, which a NumPy port of the same algorithm (NumPy's cos) measured at
    /// 4.9e-4 on the noise images. A wrong reflection (`d c b | a b c d`) or centre (`w/2`) gives
    /// differences of 30 to 240.
    static let tolerance: Float = 1e-3

    struct Manifest: Decodable {
        struct Case: Decodable {
            var input: String
            var factor: Double
            var angle_degrees: Double
            var flip: Bool
            var fill_mode: String
            var fill_value: Float
            var output: String
        }
        var versions: [String: String]
        var cases: [Case]
    }

    static func image(_ name: String) throws -> (height: Int, width: Int, pixels: [Float]) {
        let t = try NPY.read(contentsOf: directory.appendingPathComponent(name))
        #expect(t.shape.count == 3 && t.shape[2] == 3, "\(name): shape \(t.shape)")
        return (t.shape[0], t.shape[1], t.scalars)
    }

    static func maxDiff(_ a: [Float], _ b: [Float]) -> Float {
        guard a.count == b.count else { return .infinity }
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    /// A seeded noise image `[height, width, 3]` in 0...255.
    static func noise(height: Int, width: Int, seed: UInt64) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<height * width * 3).map { _ in Float(random.uniform() * 255) }
    }

    @Test("flip then rotation equals Keras RandomFlip + RandomRotation (reflect and constant, bilinear) for fixed angles")
    func matchesKeras() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: Self.directory.appendingPathComponent("manifest.json")))
        #expect(manifest.versions["keras"] == "3.15.1")
        #expect(manifest.cases.count == 16)
        var worst: Float = 0
        for c in manifest.cases {
            let (height, width, input) = try Self.image(c.input)
            let expected = try NPY.read(contentsOf: Self.directory.appendingPathComponent(c.output))
            #expect(expected.shape == [height, width, 3])
            let fill: KerasAugmentation.FillMode = c.fill_mode == "reflect" ? .reflect : .constant(c.fill_value)
            #expect(["reflect", "constant"].contains(c.fill_mode))
            // RandomRotation(factor=(f, f)) draws exactly f·360 degrees; ours too.
            let augmentation = try KerasAugmentation(rotationFactor: (c.factor, c.factor), fillMode: fill)
            let view = augmentation.view(seed: 1, epoch: 0, index: 0)
            #expect(Double(view.angleDegrees) == c.angle_degrees, "\(c.output): angle \(view.angleDegrees) vs Keras \(c.angle_degrees)")
            let output = augmentation.apply(KerasAugmentation.View(flip: c.flip, angleDegrees: view.angleDegrees),
                                            to: input, height: height, width: width)
            let diff = Self.maxDiff(output, expected.scalars)
            worst = max(worst, diff)
            #expect(diff <= Self.tolerance, "\(c.output) (\(c.input), \(c.angle_degrees)°, flip \(c.flip), \(c.fill_mode)): max |diff| \(diff)")
            // The cases are not trivial: every one but the unflipped 0° changes the image.
            if c.flip || c.angle_degrees != 0 { #expect(Self.maxDiff(input, expected.scalars) > 10, "\(c.output) is trivial") }
        }
        print("KerasAugmentation vs Keras \(manifest.versions["keras"] ?? "?"): max |diff| \(worst) over \(manifest.cases.count) cases (0...255)")
    }

    @Test("reflect is d c b a | a b c d | d c b a about the edge pixel, as TensorFlow's MapCoordinate<FILL_REFLECT>")
    func reflectCoordinates() {
        let size4: [(Float, Float)] = [(-1, 0), (-2, 1), (-3, 2), (-4, 3), (-5, 3), (-8, 0), (-9, 0), (-10, 1),
                                       (0, 0), (3, 3), (4, 3), (5, 2), (7, 0), (8, 0), (9, 1), (12, 3),
                                       (-0.5, 0), (3.5, 3), (-1.5, 0.5), (4.25, 2.75), (1.25, 1.25)]
        for (input, expected) in size4 {
            #expect(KerasAugmentation.reflectCoordinate(input, size: 4) == expected, "reflect(\(input), 4)")
        }
        #expect(KerasAugmentation.reflectCoordinate(-3.7, size: 1) == 0)
        #expect(KerasAugmentation.reflectCoordinate(.nan, size: 5) == 0)
    }

    @Test("flip twice is the identity; angle 0 is the identity; values stay in the input range")
    func identities() throws {
        for (height, width) in [(1, 1), (1, 7), (13, 17), (24, 31), (6, 6)] {
            let image = Self.noise(height: height, width: width, seed: UInt64(height * 100 + width))
            let once = KerasAugmentation.flippedHorizontally(image, height: height, width: width)
            #expect(KerasAugmentation.flippedHorizontally(once, height: height, width: width) == image)
            if width > 1 { #expect(once != image) }
            // Row 0, column 0 is the last column of row 0.
            #expect(Array(once[0..<3]) == Array(image[(width - 1) * 3..<width * 3]))
            for fill in [KerasAugmentation.FillMode.reflect, .constant(0), .constant(200)] {
                #expect(KerasAugmentation.rotated(image, height: height, width: width, degrees: 0, fillMode: fill) == image)
            }
            let rotated = KerasAugmentation.rotated(image, height: height, width: width, degrees: 37, fillMode: .reflect)
            let (lo, hi) = (image.min() ?? 0, image.max() ?? 0)
            #expect(rotated.allSatisfy { $0 >= lo - 1e-3 && $0 <= hi + 1e-3 })
        }
        // Four channels (or one) work the same way.
        let gray = (0..<35).map(Float.init)
        #expect(KerasAugmentation.rotated(gray, height: 5, width: 7, degrees: 0, fillMode: .reflect) == gray)
        #expect(KerasAugmentation.flippedHorizontally(gray, height: 5, width: 7)[0] == 6)
    }

    @Test("180° is the point reflection about ((w-1)/2, (h-1)/2); 90° on a square maps (x, y) to (n-1-y, x)")
    func centreAndDirection() {
        let (height, width) = (9, 14)
        let image = Self.noise(height: height, width: width, seed: 5)
        let turned = KerasAugmentation.rotated(image, height: height, width: width, degrees: 180, fillMode: .reflect)
        var expected = image
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 { expected[(y * width + x) * 3 + c] = image[((height - 1 - y) * width + (width - 1 - x)) * 3 + c] }
            }
        }
        #expect(Self.maxDiff(turned, expected) <= 1e-3)
        let n = 11
        let square = Self.noise(height: n, width: n, seed: 6)
        let quarter = KerasAugmentation.rotated(square, height: n, width: n, degrees: 90, fillMode: .reflect)
        var expectedQuarter = square
        for y in 0..<n {
            for x in 0..<n {
                // Output (x, y) samples input column n-1-y of row x.
                for c in 0..<3 { expectedQuarter[(y * n + x) * 3 + c] = square[(x * n + (n - 1 - y)) * 3 + c] }
            }
        }
        #expect(Self.maxDiff(quarter, expectedQuarter) <= 1e-3)
    }

    @Test("views: reproducible per (seed, epoch, index), new each epoch, flips about half, angles spread over ±factor·360°")
    func seededViews() throws {
        let augmentation = try KerasAugmentation(rotationFactor: 0.2)
        #expect(augmentation.angleRangeDegrees == -72...72)
        let views = (0..<4000).map { augmentation.view(seed: 42, epoch: 0, index: $0) }
        #expect(views == (0..<4000).map { augmentation.view(seed: 42, epoch: 0, index: $0) })
        let nextEpoch = (0..<4000).map { augmentation.view(seed: 42, epoch: 1, index: $0) }
        let otherSeed = (0..<4000).map { augmentation.view(seed: 43, epoch: 0, index: $0) }
        #expect(zip(views, nextEpoch).filter { $0.angleDegrees == $1.angleDegrees }.count < 5)
        #expect(zip(views, otherSeed).filter { $0.angleDegrees == $1.angleDegrees }.count < 5)
        let angles = views.map { Double($0.angleDegrees) }
        #expect(angles.allSatisfy { (-72...72).contains($0) })
        #expect((angles.min() ?? 0) < -70 && (angles.max() ?? 0) > 70)
        let mean = angles.reduce(0, +) / Double(angles.count)
        #expect(abs(mean) < 3, "mean angle \(mean)")   // σ of the mean: 72/√3/√4000 ≈ 0.66
        // Ten equal bins each hold about a tenth (± 5σ).
        var bins = [Int](repeating: 0, count: 10)
        for a in angles { bins[min(9, Int((a + 72) / 14.4))] += 1 }
        #expect(bins.allSatisfy { abs($0 - 400) < 100 }, "\(bins)")
        let flips = views.filter(\.flip).count
        #expect(abs(flips - 2000) < 160, "\(flips) flips of 4000")
        // Without flip the same angles, never a flip.
        var noFlip = augmentation
        noFlip.horizontalFlip = false
        let unflipped = (0..<4000).map { noFlip.view(seed: 42, epoch: 0, index: $0) }
        #expect(unflipped.allSatisfy { !$0.flip })
        #expect(unflipped.map(\.angleDegrees) == views.map(\.angleDegrees))
        // An asymmetric range is sorted and respected.
        let skewed = try KerasAugmentation(rotationFactor: (0.3, -0.1))
        #expect(skewed.angleRangeDegrees == -36...108)
        #expect((0..<500).allSatisfy { (-36...108).contains(Double(skewed.view(seed: 1, epoch: 2, index: $0).angleDegrees)) })
    }

    @Test("factors outside -1...1 or not finite are rejected with a message")
    func rejectsBadFactors() {
        for bad in [1.5, -2, Double.nan, Double.infinity] {
            #expect(throws: KerasAugmentationError.self) { _ = try KerasAugmentation(rotationFactor: bad) }
        }
        #expect(throws: KerasAugmentationError.self) { _ = try KerasAugmentation(rotationFactor: (0, 1.01)) }
        #expect((try? KerasAugmentation(rotationFactor: -1)) != nil)
        #expect(KerasAugmentationError.rotationFactorOutOfRange(lower: 0, upper: 3).description.contains("-1...1"))
    }

    @Test("concurrent use from worker threads gives the serial result; the preprocessor path augments before scaling")
    func concurrentAndPreprocessor() throws {
        let augmentation = try KerasAugmentation(rotationFactor: 0.2)
        let (height, width) = (16, 12)
        let images = (0..<8).map { Self.noise(height: height, width: width, seed: UInt64($0)) }
        let serial = images.indices.map { augmentation.augment(images[$0], height: height, width: width, seed: 7, epoch: 3, index: $0) }
        final class Box: @unchecked Sendable { var results: [[Float]]; let lock = NSLock(); init(_ n: Int) { results = Array(repeating: [], count: n) } }
        let box = Box(images.count)
        DispatchQueue.concurrentPerform(iterations: images.count) { i in
            let out = augmentation.augment(images[i], height: height, width: width, seed: 7, epoch: 3, index: i)
            box.lock.lock(); box.results[i] = out; box.lock.unlock()
        }
        #expect(box.results == serial)
        // ImagePreprocessor.tensor(for:augmentation:view:) = resize, augment, then x / 127.5 - 1.
        var random = SeededRandom(seed: 9)
        let rgb = RGBImage(width: 20, height: 15, pixels: (0..<20 * 15 * 3).map { _ in UInt8(random.below(256)) })
        let preprocessor = ImagePreprocessor(height: 10, width: 14)
        #expect(preprocessor.tensor(for: rgb, augmentation: augmentation, view: .identity).scalars == preprocessor.tensor(for: rgb).scalars)
        let view = KerasAugmentation.View(flip: true, angleDegrees: 30)
        let expected = augmentation.apply(view, to: preprocessor.resizedPixels(for: rgb), height: 10, width: 14).map { $0 / 127.5 - 1 }
        let tensor = preprocessor.tensor(for: rgb, augmentation: augmentation, view: view)
        #expect(tensor.shape == [1, 10, 14, 3])
        #expect(Self.maxDiff(tensor.scalars, expected) <= 1e-6)
    }
}
