import ArgumentParser
import Foundation
import MobileNet

extension ResizeMethod: ExpressibleByArgument {}

/// The values of `--crop`.
enum CropChoice: String, ExpressibleByArgument, CaseIterable {
    /// No crop (the default).
    case none
    /// Centre crop to the model's aspect ratio first (Keras `crop_to_aspect_ratio` / `keep_aspect_ratio`).
    case aspect
    /// torchvision: resize the shorter side to size/0.875 (256 for 224), then centre crop.
    case center

    var mode: CropMode {
        switch self {
        case .none: .none
        case .aspect: .aspectRatio
        case .center: .resizeShorterSide(nil)
        }
    }
}

/// Options that choose how image files become model input, shared by `classify` and `embed`.
struct ImageOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Resize: bilinear (tf.image.resize, the default), nearest (Pillow, load_img's default), pil-bilinear (Pillow BILINEAR, antialiased: load_img(interpolation=\"bilinear\")), pil-bicubic (Pillow BICUBIC, antialiased: PIL Image.resize's default, load_img(interpolation=\"bicubic\")), tf-antialias (tf.image.resize antialias=True) or area.",
        valueName: "mode"))
    var resize: ResizeMethod = .bilinear

    @Option(name: .long, help: ArgumentHelp("Crop: none (the default), aspect (centre crop to the model's aspect ratio, as Keras crop_to_aspect_ratio) or center (torchvision: shorter side to size/0.875, then centre crop).", valueName: "mode"))
    var crop: CropChoice = .none

    @Option(name: .long, help: ArgumentHelp("EXIF orientation: apply (rotate as a viewer shows the photo, the default) or ignore (the stored pixels, as Keras and tf.io.decode_image).", valueName: "mode"))
    var exif: StandardImageDecoder.OrientationHandling = .apply

    @Option(name: .long, help: ArgumentHelp("Composite transparent images over this colour (RRGGBB, white or black) instead of dropping alpha as Pillow's convert(\"RGB\").", valueName: "colour"))
    var background: String?

    @Option(name: .long, help: ArgumentHelp("JPEG inverse DCT: islow (accurate integer, libjpeg's and Pillow's default) or ifast (fast integer, tf.io.decode_jpeg's default, for parity with TF pipelines).", valueName: "method"))
    var jpegIdct: StandardImageDecoder.DCTMethod = .accurateInteger

    @Option(name: .long, help: ArgumentHelp("Refuse images with more pixels than this (decompression bombs).", valueName: "n"))
    var maxPixels: Int = 100_000_000

    @Flag(name: .long, help: "Speed mode: decode large JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain (slightly different pixels; see the README).")
    var jpegDctScaling = false

    func validate() throws {
        guard maxPixels >= 1 else { throw ValidationError("--max-pixels must be at least 1") }
        if let background, RGBColor(parsing: background) == nil {
            throw ValidationError("--background must be RRGGBB (hexadecimal), white or black, got '\(background)'")
        }
    }

    /// The preprocessor for a `height` x `width` model.
    func preprocessor(height: Int, width: Int) -> ImagePreprocessor {
        var decoder = StandardImageDecoder(maxPixels: maxPixels, dctMethod: jpegIdct, orientation: exif, dctScaling: jpegDctScaling)
        if let background, let colour = RGBColor(parsing: background) { decoder.alpha = .composite(over: colour) }
        return ImagePreprocessor(height: height, width: width, decoder: decoder, resize: resize, crop: crop.mode)
    }
}

extension StandardImageDecoder.OrientationHandling: ExpressibleByArgument {}
extension StandardImageDecoder.DCTMethod: ExpressibleByArgument {}
