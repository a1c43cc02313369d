import MobileNetIO
import MobileNetStore

extension PreprocessingIdentity {
    /// The identity of an ``MobileNetIO/ImagePreprocessor``: every setting that changes the
    /// pixels the network sees (decoder options, EXIF handling, alpha handling, crop, resize,
    /// scaling). Two pipelines with equal identities produce the same input tensors, so their
    /// embeddings may share a cache entry.
    ///
    /// A decoder other than ``MobileNetIO/StandardImageDecoder`` is identified by its type name.
    public init(_ preprocessor: ImagePreprocessor) {
        var settings: [String: String] = [:]
        if let decoder = preprocessor.decoder as? StandardImageDecoder {
            settings["decode"] = "jpeg-\(decoder.dctMethod.rawValue)\(decoder.dctScaling ? "-dctscaled" : ""),png,webp,gif,bmp"
            settings["exif"] = decoder.orientation.rawValue
            switch decoder.alpha {
            case .drop: settings["alpha"] = "drop"
            case .composite(let c): settings["alpha"] = "composite-\(c.red),\(c.green),\(c.blue)"
            }
        } else {
            settings["decode"] = "custom-\(type(of: preprocessor.decoder))"
        }
        switch preprocessor.crop {
        case .none: settings["crop"] = "none"
        case .aspectRatio: settings["crop"] = "aspect"
        case .resizeShorterSide:
            settings["crop"] = "center-\(preprocessor.crop.shorterSide(height: preprocessor.height, width: preprocessor.width) ?? 0)"
        }
        settings["resize"] = preprocessor.resize == .bilinear ? "bilinear-half-pixel" : preprocessor.resize.rawValue
        switch preprocessor.scaling {
        case .minusOneToOne: settings["scale"] = "x/127.5-1"
        case .zeroToOne: settings["scale"] = "x/255"
        case .none: settings["scale"] = "none"
        case .meanStd(let mean, let std): settings["scale"] = "mean\(mean)-std\(std)"
        }
        self.init(settings: settings)
    }
}
