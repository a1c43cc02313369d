import Foundation

/// Every setting that changes the pixels the network sees, as one value: how a file is decoded
/// (JPEG IDCT, truncated JPEGs, EXIF orientation, alpha, DCT-domain scaling), cropped, resized
/// and scaled. It is recorded in model files (so a classifier is run with the preprocessing it
/// was trained with, as timm's pretrained configs carry theirs) and is the preprocessing part of
/// the embedding cache key (``identitySettings(height:width:)``).
///
/// The default is the `mobilenet` default: accurate integer IDCT (Pillow's), EXIF orientation
/// applied, alpha dropped, `tf.image.resize` bilinear without crop, then `x / 127.5 - 1`
/// (pixels 0...255 to -1...1). ``preset(_:)`` gives the pipelines Keras users trained with.
public struct PreprocessingConfiguration: Sendable, Hashable, Codable {
    /// The JPEG inverse DCT (``StandardImageDecoder/DCTMethod/accurateInteger`` by default).
    public var jpegIDCT: StandardImageDecoder.DCTMethod
    /// Whether a truncated JPEG is decoded with its missing part grey instead of refused.
    public var allowTruncatedJPEG: Bool
    /// EXIF orientation handling (applied by default; Keras and TF ignore it).
    public var orientation: StandardImageDecoder.OrientationHandling
    /// Composite transparent pixels over this colour; nil drops alpha like Pillow's `convert("RGB")`.
    public var background: RGBColor?
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain (speed mode).
    public var jpegDCTScaling: Bool
    /// The crop done with the resize.
    public var crop: CropMode
    /// The resize algorithm.
    public var resize: ResizeMethod
    /// How resized pixels (0...255) become network input.
    public var scaling: PixelScaling

    /// Creates a configuration; every argument defaults to the `mobilenet` default.
    public init(jpegIDCT: StandardImageDecoder.DCTMethod = .accurateInteger, allowTruncatedJPEG: Bool = false,
                orientation: StandardImageDecoder.OrientationHandling = .apply, background: RGBColor? = nil,
                jpegDCTScaling: Bool = false, crop: CropMode = .none, resize: ResizeMethod = .bilinear,
                scaling: PixelScaling = .minusOneToOne) {
        self.jpegIDCT = jpegIDCT
        self.allowTruncatedJPEG = allowTruncatedJPEG
        self.orientation = orientation
        self.background = background
        self.jpegDCTScaling = jpegDCTScaling
        self.crop = crop
        self.resize = resize
        self.scaling = scaling
    }

    /// The `mobilenet` default (see the type's discussion).
    public static let standard = PreprocessingConfiguration()

    /// The configuration of a named Keras / TensorFlow / Pillow pipeline (see ``PreprocessingPreset``).
    public static func preset(_ preset: PreprocessingPreset) -> PreprocessingConfiguration {
        switch preset {
        case .tensorflow:
            PreprocessingConfiguration(jpegIDCT: .fastInteger, orientation: .ignore, resize: .bilinear)
        case .kerasLoadImg:
            PreprocessingConfiguration(orientation: .ignore, resize: .nearest)
        case .kerasLoadImgBilinear:
            PreprocessingConfiguration(orientation: .ignore, resize: .pilBilinear)
        case .pillowBicubic:
            PreprocessingConfiguration(orientation: .ignore, resize: .pilBicubic)
        }
    }

    /// The decoder these settings describe, refusing images over `maxPixels` (a safety limit,
    /// not a pixel-changing setting).
    public func decoder(maxPixels: Int = 100_000_000) -> StandardImageDecoder {
        StandardImageDecoder(maxPixels: maxPixels, dctMethod: jpegIDCT, orientation: orientation,
                             alpha: background.map { .composite(over: $0) } ?? .drop,
                             dctScaling: jpegDCTScaling, allowTruncatedJPEG: allowTruncatedJPEG)
    }

    /// The settings read back from a decoder and resize/crop/scaling choices.
    public init(decoder: StandardImageDecoder, resize: ResizeMethod, crop: CropMode, scaling: PixelScaling) {
        let background: RGBColor?
        switch decoder.alpha {
        case .drop: background = nil
        case .composite(let colour): background = colour
        }
        self.init(jpegIDCT: decoder.dctMethod, allowTruncatedJPEG: decoder.allowTruncatedJPEG, orientation: decoder.orientation,
                  background: background, jpegDCTScaling: decoder.dctScaling, crop: crop, resize: resize, scaling: scaling)
    }

    /// The settings as `name=value` pairs: the preprocessing part of the embedding cache key.
    /// Two configurations with equal settings give the same input tensors for a `height` x
    /// `width` model. The values of the default are stable across versions (caches and model
    /// files made before stay valid); a setting at its default that was added later
    /// (truncated JPEGs) adds nothing to the key.
    public func identitySettings(height: Int, width: Int) -> [String: String] {
        var settings: [String: String] = [:]
        settings["decode"] = "jpeg-\(jpegIDCT.rawValue)\(jpegDCTScaling ? "-dctscaled" : "")\(allowTruncatedJPEG ? "-truncated" : ""),png,webp,gif,bmp"
        settings["exif"] = orientation.rawValue
        settings["alpha"] = background.map { "composite-\($0.red),\($0.green),\($0.blue)" } ?? "drop"
        switch crop {
        case .none: settings["crop"] = "none"
        case .aspectRatio: settings["crop"] = "aspect"
        case .resizeShorterSide: settings["crop"] = "center-\(crop.shorterSide(height: height, width: width) ?? 0)"
        }
        settings["resize"] = resize == .bilinear ? "bilinear-half-pixel" : resize.rawValue
        switch scaling {
        case .minusOneToOne: settings["scale"] = "x/127.5-1"
        case .zeroToOne: settings["scale"] = "x/255"
        case .none: settings["scale"] = "none"
        case .meanStd(let mean, let std): settings["scale"] = "mean\(mean)-std\(std)"
        }
        return settings
    }

    /// The configuration whose ``identitySettings(height:width:)`` are `settings` (for model
    /// files that recorded only the identity); nil when a value is not one this build writes.
    public init?(identitySettings settings: [String: String]) {
        var c = PreprocessingConfiguration()
        guard let decode = settings["decode"], decode.hasSuffix(",png,webp,gif,bmp") else { return nil }
        let jpeg = decode.dropLast(",png,webp,gif,bmp".count).split(separator: "-").map(String.init)
        guard jpeg.first == "jpeg", jpeg.count >= 2, let idct = StandardImageDecoder.DCTMethod(rawValue: jpeg[1]) else { return nil }
        c.jpegIDCT = idct
        for flag in jpeg.dropFirst(2) {
            switch flag {
            case "dctscaled": c.jpegDCTScaling = true
            case "truncated": c.allowTruncatedJPEG = true
            default: return nil
            }
        }
        guard let exif = settings["exif"].flatMap(StandardImageDecoder.OrientationHandling.init(rawValue:)) else { return nil }
        c.orientation = exif
        switch settings["alpha"] {
        case "drop": c.background = nil
        case let value? where value.hasPrefix("composite-"):
            let parts = value.dropFirst("composite-".count).split(separator: ",").compactMap { UInt8($0) }
            guard parts.count == 3 else { return nil }
            c.background = RGBColor(red: parts[0], green: parts[1], blue: parts[2])
        default: return nil
        }
        switch settings["crop"] {
        case "none": c.crop = .none
        case "aspect": c.crop = .aspectRatio
        case let value? where value.hasPrefix("center-"):
            guard let side = Int(value.dropFirst("center-".count)) else { return nil }
            c.crop = .resizeShorterSide(side)
        default: return nil
        }
        switch settings["resize"] {
        case "bilinear-half-pixel": c.resize = .bilinear
        case let value?:
            guard let method = ResizeMethod(rawValue: value), method != .bilinear else { return nil }
            c.resize = method
        case nil: return nil
        }
        switch settings["scale"] {
        case "x/127.5-1": c.scaling = .minusOneToOne
        case "x/255": c.scaling = .zeroToOne
        case "none": c.scaling = .none
        default: return nil
        }
        guard settings.count == 6 else { return nil }
        self = c
    }

    /// A one-line description for messages, such as
    /// `resize bilinear, crop none, EXIF apply, JPEG islow, alpha drop, scale x/127.5-1`.
    public var summary: String {
        identitySettings(height: 224, width: 224).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    /// The settings that differ between `self` and `other`, as `name: self → other` lines.
    public func differences(from other: PreprocessingConfiguration) -> [String] {
        let a = identitySettings(height: 224, width: 224), b = other.identitySettings(height: 224, width: 224)
        return Set(a.keys).union(b.keys).sorted().compactMap { key in
            a[key] == b[key] ? nil : "\(key): \(a[key] ?? "-") → \(b[key] ?? "-")"
        }
    }
}

/// The named pipelines Keras users trained with, for `--preset NAME`. Each is checked against
/// its reference (`scripts/fixtures/make_preset_fixtures.py`).
public enum PreprocessingPreset: String, Sendable, Hashable, Codable, CaseIterable {
    /// `tf.io.decode_image` + `tf.image.resize(method="bilinear")`: what
    /// `keras.utils.image_dataset_from_directory` gives (fast integer IDCT, EXIF ignored,
    /// half-pixel bilinear without antialiasing), then `x / 127.5 - 1`.
    case tensorflow
    /// `keras.utils.load_img(path, target_size=size)`: Pillow decoding, NEAREST resize (its
    /// default), EXIF ignored.
    case kerasLoadImg = "keras-load-img"
    /// `keras.utils.load_img(path, target_size=size, interpolation="bilinear")`: Pillow BILINEAR
    /// (antialiased when downscaling), EXIF ignored; how `data/reference` inputs were made.
    case kerasLoadImgBilinear = "keras-load-img-bilinear"
    /// `PIL.Image.open(path).convert("RGB").resize(size)`: Pillow's default BICUBIC (antialiased
    /// when downscaling), EXIF ignored; also `load_img(interpolation="bicubic")`. Many
    /// third-party Keras models were trained on such inputs.
    case pillowBicubic = "pillow-bicubic"
}

extension ImagePreprocessor {
    /// A preprocessor for a `height` x `width` model with the given settings.
    ///
    /// - Parameters:
    ///   - configuration: the decoder, resize, crop and scaling settings.
    ///   - height: model input height in pixels.
    ///   - width: model input width in pixels.
    ///   - maxPixels: refuse images with more pixels (decompression bombs; default 100,000,000).
    public init(configuration: PreprocessingConfiguration, height: Int, width: Int, maxPixels: Int = 100_000_000) {
        self.init(height: height, width: width, decoder: configuration.decoder(maxPixels: maxPixels),
                  resize: configuration.resize, crop: configuration.crop, scaling: configuration.scaling)
    }

    /// The settings of this preprocessor; nil when its decoder is not a ``StandardImageDecoder``.
    public var configuration: PreprocessingConfiguration? {
        guard let decoder = decoder as? StandardImageDecoder else { return nil }
        return PreprocessingConfiguration(decoder: decoder, resize: resize, crop: crop, scaling: scaling)
    }
}
