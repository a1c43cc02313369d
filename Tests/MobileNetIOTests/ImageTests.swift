import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

@Suite("Image decoding and resizing against Pillow and TensorFlow")
struct ImageTests {
    static let resizeDirectory = TestData.fixtures.appendingPathComponent("resize")

    struct ResizeManifest: Decodable {
        struct Output: Decodable { let file: String; let height: Int; let width: Int }
        let outputs: [Output]
    }

    @Test("PNG decodes to exactly Pillow's pixels")
    func pngDecode() throws {
        let image = try StandardImageDecoder().decode(contentsOf: Self.resizeDirectory.appendingPathComponent("source.png"))
        let expected = try NPY.read(contentsOf: Self.resizeDirectory.appendingPathComponent("source.npy"))
        #expect(expected.shape == [image.height, image.width, 3])
        #expect(image.pixels.map(Float.init) == expected.scalars)
    }

    @Test("bilinear resize equals tf.image.resize (half-pixel centres, no antialias) exactly (README: max |diff| 0.0)")
    func bilinearResize() throws {
        let image = try StandardImageDecoder().decode(contentsOf: Self.resizeDirectory.appendingPathComponent("source.png"))
        let manifest = try JSONDecoder().decode(ResizeManifest.self, from: Data(contentsOf: Self.resizeDirectory.appendingPathComponent("manifest.json")))
        #expect(manifest.outputs.count >= 5)
        for output in manifest.outputs {
            let expected = try NPY.read(contentsOf: Self.resizeDirectory.appendingPathComponent(output.file))
            let ours = Tensor(shape: [output.height, output.width, 3], scalars: ImageResizer.bilinear(image, height: output.height, width: output.width))
            let diff = ours.maxAbsoluteDifference(to: expected)
            print("resize \(output.height)x\(output.width): max |diff| vs tf.image.resize = \(diff)")
            #expect(diff == 0, "\(output.file): max |diff| \(diff)")
        }
    }

    @Test("format is detected from the bytes, not the extension")
    func formatDetection() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let png = try Data(contentsOf: Self.resizeDirectory.appendingPathComponent("source.png"))
        let misnamed = dir.appendingPathComponent("photo.JPEG")
        try png.write(to: misnamed)
        let image = try StandardImageDecoder().decode(contentsOf: misnamed)
        #expect(image.width == 53 && image.height == 37)
    }

    @Test("missing, empty, non-image, truncated and oversized files give typed errors naming the file")
    func badFiles() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let decoder = StandardImageDecoder()
        let missing = dir.appendingPathComponent("missing.jpg")
        #expect(throws: ImageError.notFound(path: missing.path)) { try decoder.decode(contentsOf: missing) }
        let empty = dir.appendingPathComponent("empty.jpg")
        try Data().write(to: empty)
        #expect(throws: ImageError.empty(path: empty.path)) { try decoder.decode(contentsOf: empty) }
        let text = dir.appendingPathComponent("notes.png")
        try Data("not an image".utf8).write(to: text)
        #expect(throws: ImageError.unsupportedFormat(path: text.path, detected: nil)) { try decoder.decode(contentsOf: text) }
        let png = try Data(contentsOf: Self.resizeDirectory.appendingPathComponent("source.png"))
        let truncated = dir.appendingPathComponent("truncated.png")
        try png.prefix(png.count / 2).write(to: truncated)
        #expect { try decoder.decode(contentsOf: truncated) } throws: { ($0 as? ImageError).map { if case .corrupt(truncated.path, _) = $0 { true } else { false } } ?? false }
        var small = StandardImageDecoder()
        small.maxPixels = 100
        #expect { try small.decode(contentsOf: Self.resizeDirectory.appendingPathComponent("source.png")) } throws: {
            ($0 as? ImageError).map { if case .tooLarge = $0 { true } else { false } } ?? false
        }
    }

    @Test("truncated and corrupt JPEGs: typed errors naming the file by default; allowTruncatedJPEG pads with grey",
          .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func badJPEG() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let jpeg = try Data(contentsOf: TestData.shared("data/images/cat.jpg"))
        let header = dir.appendingPathComponent("header-only.jpg")
        try jpeg.prefix(200).write(to: header)
        #expect { try StandardImageDecoder().decode(contentsOf: header) } throws: {
            ($0 as? ImageError).map { if case .corrupt(header.path, _) = $0 { true } else { false } } ?? false
        }
        // A stream that ends early: refused by default (allowTruncatedJPEG is false, like Pillow
        // without LOAD_TRUNCATED_IMAGES), with the error naming the file and saying why.
        let half = dir.appendingPathComponent("half.jpg")
        try jpeg.prefix(jpeg.count / 2).write(to: half)
        #expect(StandardImageDecoder().allowTruncatedJPEG == false)
        #expect(throws: ImageError.corrupt(path: half.path, reason: "the JPEG data ends early (truncated file)")) {
            try StandardImageDecoder().decode(contentsOf: half)
        }
        // A header that claims more rows than the data holds (the data then meets the EOI
        // marker: libjpeg's "premature end of data segment"): the same missing data, refused.
        var claims = jpeg
        let sof = try #require((0..<(claims.count - 9)).first { claims[$0] == 0xFF && (claims[$0 + 1] == 0xC0 || claims[$0 + 1] == 0xC2) })
        let height = Int(claims[sof + 5]) << 8 | Int(claims[sof + 6])
        claims[sof + 5] = UInt8((height * 3) >> 8)
        claims[sof + 6] = UInt8((height * 3) & 0xFF)
        let tall = dir.appendingPathComponent("claims-more-rows.jpg")
        try claims.write(to: tall)
        #expect { try StandardImageDecoder().decode(contentsOf: tall) } throws: {
            guard case .corrupt(tall.path, let reason)? = $0 as? ImageError else { return false }
            return reason.contains("ends before the") && reason.contains("x\(height * 3) image")
        }
        #expect(try StandardImageDecoder(allowTruncatedJPEG: true).decode(contentsOf: tall).height == height * 3)
        // Opted in: libjpeg's behaviour, the full-size image with the missing rows grey, and the
        // rows that were present equal to a full decode's.
        let full = try StandardImageDecoder().decode(contentsOf: TestData.shared("data/images/cat.jpg"))
        let padded = try StandardImageDecoder(allowTruncatedJPEG: true).decode(contentsOf: half)
        #expect(padded.width == full.width && padded.height == full.height)
        let rowBytes = full.width * 3
        #expect(padded.pixels.prefix(rowBytes * 8) == full.pixels.prefix(rowBytes * 8), "the first rows differ from a full decode")
        let lastRow = padded.pixels.suffix(rowBytes)
        #expect(lastRow.allSatisfy { $0 == 128 }, "the missing last row is not libjpeg's grey (128)")
        #expect(padded.pixels != full.pixels)
    }
}

@Suite("End to end on real photos", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct EndToEndTests {
    struct KerasSample: Decodable {
        struct File: Decodable { let file: String; let synset: String; let true_index: Int; let top5: [Int] }
        let files: [File]
        let top1_correct: Int
        let top5_correct: Int
    }

    @Test("ImageNet sample: top-1/top-5 accuracy equals Keras's on the same files (same preprocessing)")
    func imagenetSample() throws {
        let keras = try JSONDecoder().decode(KerasSample.self, from: Data(contentsOf: TestData.fixtures.appendingPathComponent("imagenet-sample-keras.json")))
        let weights = try KerasWeightFile.read(contentsOf: TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5")).weights
        let model = try MobileNetV2(configuration: MobileNetV2Configuration(), weights: weights)
        // Keras ignores EXIF orientation: so must we for identical predictions.
        let preprocessor = ImagePreprocessor(height: 224, width: 224, decoder: StandardImageDecoder(orientation: .ignore))
        var top1 = 0, top5 = 0, sameTop1AsKeras = 0
        let directory = TestData.shared("data/imagenet-sample")
        for batchStart in stride(from: 0, to: keras.files.count, by: 20) {
            let files = keras.files[batchStart..<min(batchStart + 20, keras.files.count)]
            let input = Tensor.concatenatingBatches(try files.map { try preprocessor.tensor(contentsOf: directory.appendingPathComponent($0.file)) })
            let output = try model(input)
            for (file, row) in zip(files, output.rows) {
                let predicted = ImageNetClasses.topK(row, k: 5)
                #expect(ImageNetClasses.all[file.true_index].synset == file.synset)
                if predicted.first?.index == file.true_index { top1 += 1 }
                if predicted.contains(where: { $0.index == file.true_index }) { top5 += 1 }
                if predicted.first?.index == file.top5.first { sameTop1AsKeras += 1 }
            }
        }
        print("imagenet-sample: top-1 \(top1)/\(keras.files.count), top-5 \(top5)/\(keras.files.count); Keras: top-1 \(keras.top1_correct), top-5 \(keras.top5_correct); same top-1 as Keras on \(sameTop1AsKeras)")
        #expect(top1 == keras.top1_correct)
        #expect(top5 == keras.top5_correct)
        #expect(sameTop1AsKeras == keras.files.count)
    }
}
