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

    /// The identity of `configuration` for a `height` x `width` model.
    public init(_ configuration: PreprocessingConfiguration, height: Int, width: Int) {
        self.init(settings: configuration.identitySettings(height: height, width: width))
    }
}
