import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

@Suite("mobilenet classify/embed image options", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct ImageOptionsCLITests {
    static let decode = TestData.fixtures.appendingPathComponent("images/decode")

    struct Classification: Decodable {
        struct Result: Decodable { let file: String; let predictions: [Prediction] }
        struct Prediction: Decodable { let index: Int; let probability: Double }
        let results: [Result]
    }

    /// The CLI must pass every option to the library: its top-1 class and probability equal the
    /// library's with the same settings. The files are chosen so that each option changes the
    /// model input (checked below), so an option the CLI dropped would show.
    @Test("--resize, --crop, --exif and --background reach the library: the CLI's probabilities equal the library's with the same settings")
    func options() throws {
        let files = ["webp_lossy_alpha.webp", "gif_transparent.gif", "bmp_24.bmp", "exif_6.jpg"].map { Self.decode.appendingPathComponent($0).path }
        let result = try CLI.run(["classify"] + files + ["--weights", CLI.topWeights, "--top-k", "1", "--json", "--backend", "reference",
                                                        "--resize", "pil-bilinear", "--crop", "aspect", "--exif", "ignore",
                                                        "--background", "ffffff", "--jpeg-dct-scaling"])
        #expect(result.status == 0, "\(result.stderr)")
        let document = try JSONDecoder().decode(Classification.self, from: Data(result.stdout.utf8))
        #expect(document.results.map(\.file) == files)

        var decoder = StandardImageDecoder(orientation: .ignore, alpha: .composite(over: RGBColor(red: 255, green: 255, blue: 255)))
        decoder.dctScaling = true
        let preprocessor = ImagePreprocessor(height: 224, width: 224, decoder: decoder, resize: .pilBilinear, crop: .aspectRatio)
        let model = try MobileNetV2(configuration: MobileNetV2Configuration(),
                                    weights: KerasWeightFile.read(contentsOf: URL(fileURLWithPath: CLI.topWeights)).weights, backend: ReferenceBackend())
        for (file, cli) in zip(files, document.results) {
            let row = try model(preprocessor.tensor(contentsOf: URL(fileURLWithPath: file))).rows[0]
            let top = ImageNetClasses.topK(row, k: 1)[0]
            #expect(cli.predictions.first?.index == top.index, "\(file)")
            #expect(abs((cli.predictions.first?.probability ?? -1) - Double(row[top.index])) < 1e-6, "\(file)")
        }
        // Each option changes the input of some file, so the comparison above would catch it being ignored.
        func input(_ file: String, _ change: (inout ImagePreprocessor) -> Void) throws -> [Float] {
            var other = preprocessor
            change(&other)
            return try other.tensor(contentsOf: Self.decode.appendingPathComponent(file)).scalars
        }
        let exif6 = try input("exif_6.jpg") { _ in }
        #expect(try input("exif_6.jpg") { $0.decoder = StandardImageDecoder(orientation: .apply, alpha: decoder.alpha) } != exif6)
        #expect(try input("exif_6.jpg") { $0.resize = .bilinear } != exif6)
        #expect(try input("exif_6.jpg") { $0.crop = .none } != exif6)
        let alpha = try input("webp_lossy_alpha.webp") { _ in }
        #expect(try input("webp_lossy_alpha.webp") { $0.decoder = StandardImageDecoder(orientation: .ignore) } != alpha)

        let embed = try CLI.run(["embed", files[0], "--weights", CLI.topWeights, "--backend", "reference", "--resize", "area", "--crop", "center"])
        #expect(embed.status == 0, "\(embed.stderr)")
        #expect(embed.stdout.contains("\"embedding\""))
    }

    /// The fixtures are too small for DCT scaling to apply; a 512x341 photo embedded at 96x96 is
    /// decoded at half size with it.
    @Test("--jpeg-dct-scaling reaches the library: different embeddings, equal to the library's DCT-scaled ones")
    func dctScaling() throws {
        let photo = TestData.shared("data/images/cat.jpg")
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func embedding(_ extra: [String]) throws -> [Float] {
            let output = dir.appendingPathComponent("e\(extra.count).npy")
            let result = try CLI.run(["embed", photo.path, "--weights", CLI.noTopWeights, "--backend", "reference", "--input-size", "96", "-o", output.path] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            return try NPY.read(contentsOf: output).scalars
        }
        let plain = try embedding([]), scaled = try embedding(["--jpeg-dct-scaling"])
        #expect(plain != scaled)
        var decoder = StandardImageDecoder()
        decoder.dctScaling = true
        let model = try MobileNetV2(configuration: MobileNetV2Configuration(inputHeight: 96, inputWidth: 96, includeTop: false, pooling: .avg),
                                    weights: KerasWeightFile.read(contentsOf: URL(fileURLWithPath: CLI.noTopWeights)).weights, backend: ReferenceBackend())
        #expect(try model(ImagePreprocessor(height: 96, width: 96, decoder: decoder).tensor(contentsOf: photo)).scalars == scaled)
        #expect(try model(ImagePreprocessor(height: 96, width: 96).tensor(contentsOf: photo)).scalars == plain)
    }

    @Test("invalid values are usage errors (exit 64) naming the option")
    func invalid() throws {
        for arguments in [["--resize", "bicubic"], ["--crop", "square"], ["--exif", "maybe"], ["--background", "red-ish"],
                          ["--jpeg-idct", "float"], ["--max-pixels", "0"]] {
            let result = try CLI.run(["classify", CLI.example, "--weights", CLI.topWeights] + arguments)
            #expect(result.status == 64, "\(arguments)")
            #expect(result.stderr.contains(arguments[0]), "\(result.stderr)")
        }
    }

    @Test("--jpeg-idct ifast decodes JPEGs differently from islow; --max-pixels refuses big images but not the batch")
    func idctAndPixelLimit() throws {
        let jpeg = Self.decode.appendingPathComponent("jpeg_420.jpg").path
        let png = Self.decode.appendingPathComponent("png_rgb.png").path
        func embedding(_ extra: [String]) throws -> String {
            let result = try CLI.run(["embed", jpeg, "--weights", CLI.noTopWeights, "--input-size", "64"] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            return result.stdout
        }
        let accurate = try embedding([])
        #expect(try embedding(["--jpeg-idct", "islow"]) == accurate)
        #expect(try embedding(["--jpeg-idct", "ifast"]) != accurate)
        // 48x36 = 1,728 pixels is over the limit, 41x29 = 1,189 is not.
        let limited = try CLI.run(["embed", jpeg, png, "--weights", CLI.noTopWeights, "--input-size", "64", "--max-pixels", "1500"])
        #expect(limited.status == 1)
        #expect(limited.stderr.contains(jpeg) && !limited.stderr.contains(png), "\(limited.stderr)")
        #expect(!limited.stdout.contains(jpeg) && limited.stdout.contains(png))
        let large = try CLI.run(["embed", jpeg, "--weights", CLI.noTopWeights, "--input-size", "64", "--max-pixels", "100000000"])
        #expect(large.status == 0)
    }
}
