import ArgumentParser
import Foundation
import MobileNet

extension ResizeMethod: ExpressibleByArgument {}
extension PreprocessingPreset: ExpressibleByArgument {}
extension StandardImageDecoder.OrientationHandling: ExpressibleByArgument {}
extension StandardImageDecoder.DCTMethod: ExpressibleByArgument {}

/// The values of `--crop`.
/// `--scaling`: how pixels 0...255 become the network's input (``PixelScaling``).
enum ScalingChoice: String, ExpressibleByArgument, CaseIterable {
    /// Keras `mobilenet_v2.preprocess_input`: `x / 127.5 - 1` (the default).
    case minusOneToOne = "minus-one-to-one"
    /// TF Hub image models: `x / 255`.
    case zeroToOne = "zero-to-one"
    /// torchvision: `(x / 255 - mean) / std` with ImageNet's statistics.
    case imageNetMeanStd = "imagenet-mean-std"
    /// The pixels as they are, 0...255.
    case none

    var scaling: PixelScaling {
        switch self {
        case .minusOneToOne: .minusOneToOne
        case .zeroToOne: .zeroToOne
        case .imageNetMeanStd: .imageNetMeanStd
        case .none: .none
        }
    }
}

enum CropChoice: String, ExpressibleByArgument, CaseIterable {
    /// No crop (the default).
    case none
    /// Centre crop to the model's aspect ratio first (Keras `crop_to_aspect_ratio` / `keep_aspect_ratio`).
    case aspect
    /// torchvision: resize the shorter side to size/0.875, then centre crop.
    case center

    var mode: CropMode {
        switch self {
        case .none: .none
        case .aspect: .aspectRatio
        case .center: .resizeShorterSide(nil)
        }
    }
}

/// How image files become model input, shared by every command that reads images. Each option
/// left out keeps the value of `--preset`, else of the model file's recorded preprocessing
/// (predict, evaluate), else the default.
struct ImageOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A named pipeline: tensorflow (tf.io.decode_image + tf.image.resize, as image_dataset_from_directory), keras-load-img (load_img, nearest), keras-load-img-bilinear, pillow-bicubic (PIL Image.resize's default). Single options below override it.", valueName: "name"))
    var preset: PreprocessingPreset?

    @Option(name: .long, help: ArgumentHelp(
        "Resize: bilinear (tf.image.resize, the default), nearest (Pillow, load_img's default), pil-bilinear (Pillow BILINEAR, antialiased: load_img(interpolation=\"bilinear\")), pil-bicubic (Pillow BICUBIC, antialiased: PIL Image.resize's default, load_img(interpolation=\"bicubic\")), tf-antialias (tf.image.resize antialias=True) or area.",
        valueName: "mode"))
    var resize: ResizeMethod?

    @Option(name: .long, help: ArgumentHelp("Crop: none (the default), aspect (centre crop to the model's aspect ratio, as Keras crop_to_aspect_ratio) or center (torchvision: shorter side to size/0.875, then centre crop).", valueName: "mode"))
    var crop: CropChoice?

    @Option(name: .long, help: ArgumentHelp("EXIF orientation: apply (rotate as a viewer shows the photo, the default) or ignore (the stored pixels, as Keras and tf.io.decode_image).", valueName: "mode"))
    var exif: StandardImageDecoder.OrientationHandling?

    @Option(name: .long, help: ArgumentHelp("Composite transparent images over this colour (RRGGBB, white or black) instead of dropping alpha as Pillow's convert(\"RGB\").", valueName: "colour"))
    var background: String?

    @Option(name: .long, help: ArgumentHelp("JPEG inverse DCT: islow (accurate integer, libjpeg's and Pillow's default) or ifast (fast integer, tf.io.decode_jpeg's default, for parity with TF pipelines).", valueName: "method"))
    var jpegIdct: StandardImageDecoder.DCTMethod?

    @Option(name: .long, help: ArgumentHelp("Pixel scaling: minus-one-to-one (x / 127.5 - 1, Keras preprocess_input, the default), zero-to-one (x / 255, TF Hub), imagenet-mean-std (torchvision) or none (0...255). A .tflite model uses its metadata's normalisation unless this is given; a quantized one gets the raw pixels when its input quantization is this scaling, else the scaled values quantized.", valueName: "mode"))
    var scaling: ScalingChoice?

    @Option(name: .long, help: ArgumentHelp("Refuse images with more pixels than this (decompression bombs).", valueName: "n"))
    var maxPixels: Int = 100_000_000

    @Flag(name: .long, inversion: .prefixedNo, help: "Speed mode: decode large JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain (slightly different pixels; see the README).")
    var jpegDctScaling: Bool?

    func validate() throws {
        guard maxPixels >= 1 else { throw ValidationError("--max-pixels must be at least 1") }
        if let background, RGBColor(parsing: background) == nil {
            throw ValidationError("--background must be RRGGBB (hexadecimal), white or black, got '\(background)'")
        }
    }

    /// Whether any option was given (a preset or a single setting).
    var isSet: Bool { preset != nil || resize != nil || crop != nil || exif != nil || background != nil || jpegIdct != nil || jpegDctScaling != nil || scaling != nil }

    /// The settings: `base` (the recorded or default preprocessing), replaced by `--preset`,
    /// then each single option given.
    func configuration(base: PreprocessingConfiguration = .standard) -> PreprocessingConfiguration {
        var c = preset.map { PreprocessingConfiguration.preset($0) } ?? base
        if let resize { c.resize = resize }
        if let crop { c.crop = crop.mode }
        if let exif { c.orientation = exif }
        if let background { c.background = RGBColor(parsing: background) }
        if let jpegIdct { c.jpegIDCT = jpegIdct }
        if let jpegDctScaling { c.jpegDCTScaling = jpegDctScaling }
        if let scaling { c.scaling = scaling.scaling }
        return c
    }

    /// What a model is opened with (``ModelOptions/openModel(backend:includeTop:embeddingOnly:pooling:classNames:preprocessing:)``):
    /// the settings when any option was given (a `.tflite` file's integer input follows its
    /// scaling), else nil (the model's own).
    var modelPreprocessing: PreprocessingConfiguration? { isSet ? configuration() : nil }

    /// The preprocessor for a `height` x `width` model.
    func preprocessor(height: Int, width: Int, base: PreprocessingConfiguration = .standard) -> ImagePreprocessor {
        ImagePreprocessor(configuration: configuration(base: base), height: height, width: width, maxPixels: maxPixels)
    }

    /// The preprocessor for a trained classifier: its recorded preprocessing unless options
    /// override it, with a warning naming each changed setting.
    func preprocessor(for classifier: RunnableModel) -> ImagePreprocessor {
        let recorded = classifier.preprocessingConfiguration ?? .standard
        let chosen = configuration(base: recorded)
        let changes = recorded.differences(from: chosen)
        // Only a trained model records the preprocessing it was trained with.
        if isSet, !changes.isEmpty, classifier.kind == .trainedModel {
            printError("warning: the image options override the preprocessing the model was trained with (\(changes.joined(separator: "; "))); predictions may be worse")
        }
        return classifier.preprocessor(override: chosen, maxPixels: maxPixels)
    }
}
