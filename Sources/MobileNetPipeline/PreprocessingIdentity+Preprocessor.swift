import MobileNetIO
import MobileNetStore

extension PreprocessingIdentity {
    /// The identity of an ``/MobileNetIO/ImagePreprocessor``: its
    /// ``/MobileNetIO/PreprocessingConfiguration/identitySettings(height:width:)``. Two pipelines
    /// with equal identities produce the same input tensors, so their embeddings may share a
    /// cache entry. A decoder other than ``/MobileNetIO/StandardImageDecoder`` is identified by
    /// its type name.
    public init(_ preprocessor: ImagePreprocessor) {
        if let configuration = preprocessor.configuration {
            self.init(configuration, height: preprocessor.height, width: preprocessor.width)
            return
        }
        var settings = PreprocessingConfiguration(crop: preprocessor.crop, resize: preprocessor.resize, scaling: preprocessor.scaling)
            .identitySettings(height: preprocessor.height, width: preprocessor.width)
        settings["decode"] = "custom-\(type(of: preprocessor.decoder))"
        for key in ["exif", "alpha"] { settings[key] = nil }
        self.init(settings: settings)
    }

    /// The default pipeline's identity (``/MobileNetIO/PreprocessingConfiguration/standard``: the
    /// accurate integer JPEG IDCT, EXIF orientation applied, alpha dropped, no crop,
    /// `tf.image.resize` bilinear, `x / 127.5 - 1`), derived from the configuration's
    /// ``/MobileNetIO/PreprocessingConfiguration/identitySettings(height:width:)``, never written
    /// out twice (it was a hand copy in the store module).
    public static let standard = PreprocessingIdentity(PreprocessingConfiguration.standard, height: 224, width: 224)

    /// The identity of `configuration` for a `height` x `width` model.
    public init(_ configuration: PreprocessingConfiguration, height: Int, width: Int) {
        self.init(settings: configuration.identitySettings(height: height, width: width))
    }
}
