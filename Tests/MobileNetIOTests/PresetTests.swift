import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// The named presets against the real Python pipelines on the shared photos
/// (`Tests/Fixtures/presets`, written by `scripts/fixtures/make_preset_fixtures.py` with
/// TensorFlow 2.21.0, Keras 3.15.1 and Pillow 13.0.0): every image's 224x224 input must be
/// bit-identical (SHA-256 of the float32 bytes), before and after `x / 127.5 - 1`.
@Suite("Preprocessing presets against TensorFlow, Keras and Pillow")
struct PresetTests {
    struct Manifest: Decodable {
        struct Result: Decodable { let sha256: String; let scaled_sha256: String; let shape: [Int] }
        struct Array: Decodable { let preset: String; let image: String; let file: String }
        let results: [String: [String: Result]]
        let arrays: [Array]
    }

    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: TestData.fixtures.appendingPathComponent("presets/manifest.json")))
    }

    static func sha256(_ values: [Float]) -> String {
        SHA256.hex(values.withUnsafeBytes { Data($0) })
    }

    @Test("every preset is bit-exact with its Python pipeline on all shared JPEGs", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage),
          arguments: PreprocessingPreset.allCases)
    func presetMatchesPython(preset: PreprocessingPreset) throws {
        let manifest = try Self.manifest()
        let expected = try #require(manifest.results[preset.rawValue], "no fixtures for \(preset.rawValue)")
        #expect(expected.count >= 100)
        let preprocessor = ImagePreprocessor(configuration: .preset(preset), height: 224, width: 224)
        var mismatches: [String] = []
        for (path, result) in expected.sorted(by: { $0.key < $1.key }) {
            let url = TestData.shared(path)
            let image = try preprocessor.decoder.decode(contentsOf: url, target: preprocessor.decodeTarget)
            let pixels = preprocessor.resizedPixels(for: image)
            let scaled = try preprocessor.tensor(contentsOf: url).scalars
            if Self.sha256(pixels) != result.sha256 || Self.sha256(scaled) != result.scaled_sha256 { mismatches.append(path) }
        }
        print("preset \(preset.rawValue): \(expected.count - mismatches.count)/\(expected.count) images bit-exact")
        #expect(mismatches.isEmpty, "\(preset.rawValue): \(mismatches.count) images differ, e.g. \(mismatches.prefix(3))")
        // The full arrays give the size of a difference.
        for array in manifest.arrays where array.preset == preset.rawValue {
            let reference = try NPY.read(contentsOf: TestData.fixtures.appendingPathComponent("presets/\(array.file)"))
            let image = try preprocessor.decoder.decode(contentsOf: TestData.shared(array.image), target: preprocessor.decodeTarget)
            let ours = Tensor(shape: [224, 224, 3], scalars: preprocessor.resizedPixels(for: image))
            let diff = ours.maxAbsoluteDifference(to: reference)
            #expect(diff == 0, "\(preset.rawValue) \(array.image): max |diff| \(diff)")
        }
    }

    @Test("the default differs from the tensorflow preset (IDCT, EXIF), and options override a preset")
    func presetsAreDistinct() {
        let tf = PreprocessingConfiguration.preset(.tensorflow)
        #expect(tf.jpegIDCT == .fastInteger && tf.orientation == .ignore && tf.resize == .bilinear)
        #expect(PreprocessingConfiguration.standard.differences(from: tf).count == 2)
        #expect(PreprocessingConfiguration.preset(.pillowBicubic).resize == .pilBicubic)
        // Codable round trip (what model files record).
        let data = try? JSONEncoder().encode(PreprocessingConfiguration.preset(.kerasLoadImgBilinear))
        #expect(data.flatMap { try? JSONDecoder().decode(PreprocessingConfiguration.self, from: $0) } == .preset(.kerasLoadImgBilinear))
    }
}

@Suite("Preprocessing configuration: identity round trip")
struct PreprocessingIdentityRoundTripTests {
    @Test("every preset and some hand-made settings are recovered from their identity settings (old model files)")
    func roundTrip() {
        var configurations = PreprocessingPreset.allCases.map { PreprocessingConfiguration.preset($0) } + [.standard]
        configurations.append(PreprocessingConfiguration(jpegIDCT: .fastInteger, allowTruncatedJPEG: true, background: RGBColor(red: 1, green: 2, blue: 3),
                                                         jpegDCTScaling: true, crop: .aspectRatio, resize: .area, scaling: .zeroToOne))
        for c in configurations {
            let settings = c.identitySettings(height: 224, width: 224)
            #expect(PreprocessingConfiguration(identitySettings: settings) == c, "\(settings)")
        }
        // Centre crops record the side length; mean/std scalings are not recovered (nil, not a guess).
        let centre = PreprocessingConfiguration(crop: .resizeShorterSide(nil))
        #expect(PreprocessingConfiguration(identitySettings: centre.identitySettings(height: 224, width: 224))?.crop == .resizeShorterSide(256))
        #expect(PreprocessingConfiguration(identitySettings: PreprocessingConfiguration(scaling: .imageNetMeanStd).identitySettings(height: 224, width: 224)) == nil)
        #expect(PreprocessingConfiguration(identitySettings: ["decode": "custom-X"]) == nil)
    }
}
