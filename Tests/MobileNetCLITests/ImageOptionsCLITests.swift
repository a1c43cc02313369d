import Foundation
import MobileNetTestSupport
import Testing

@Suite("mobilenet classify/embed image options", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct ImageOptionsCLITests {
    static let decode = TestData.fixtures.appendingPathComponent("images/decode")

    @Test("--resize, --crop, --exif, --background and --jpeg-dct-scaling on WebP, GIF, BMP and JPEG files")
    func options() throws {
        let files = ["webp_lossy_alpha.webp", "gif_transparent.gif", "bmp_24.bmp", "exif_6.jpg"].map { Self.decode.appendingPathComponent($0).path }
        let result = try CLI.run(["classify"] + files + ["--weights", CLI.topWeights, "--top-k", "1", "--json", "--backend", "reference",
                                                        "--resize", "pil-bilinear", "--crop", "aspect", "--exif", "ignore",
                                                        "--background", "ffffff", "--jpeg-dct-scaling"])
        #expect(result.status == 0, "\(result.stderr)")
        for file in files { #expect(result.stdout.contains(file)) }
        let embed = try CLI.run(["embed", files[0], "--weights", CLI.topWeights, "--backend", "reference", "--resize", "area", "--crop", "center"])
        #expect(embed.status == 0, "\(embed.stderr)")
        #expect(embed.stdout.contains("\"embedding\""))
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
