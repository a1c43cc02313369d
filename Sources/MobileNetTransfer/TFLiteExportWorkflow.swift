import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetModel
import MobileNetPipeline
import MobileNetTFLite

/// The quantization `mobilenet export --quantize` asks for (TensorFlow's post-training
/// quantization modes; see ``/MobileNetTFLite/TFLiteExportQuantization``).
public enum TFLiteQuantizationMode: String, Sendable, Hashable, Codable, CaseIterable {
    /// Float32 weights and arithmetic.
    case none
    /// int8 weights, float activations (LiteRT's hybrid kernels).
    case dynamicRange = "dynamic-range"
    /// int8 weights and activations, calibrated on images.
    case int8
}

/// What ``RunnableModel/exportTFLite(_:floatBackend:runtime:progress:)`` writes.
public struct TFLiteExportSettings: Sendable {
    /// The quantization.
    public var quantization: TFLiteQuantizationMode
    /// Calibration images for ``TFLiteQuantizationMode/int8``: preprocessed as the model's
    /// images are, all of them run (TensorFlow recommends 100 to 500 representative images).
    public var calibrationImages: [URL]
    /// The input tensor's type (float32 unless int8).
    public var inputType: TFLiteIOType
    /// The output tensor's type (float32 unless int8).
    public var outputType: TFLiteIOType
    /// The model's name, version, description, author and licence in its TFLite Support metadata.
    public var name: String
    /// See ``name``.
    public var version: String
    /// See ``name``; empty for a generated description.
    public var description: String
    /// See ``name``.
    public var author: String
    /// See ``name``.
    public var license: String

    /// Creates settings.
    public init(quantization: TFLiteQuantizationMode = .none, calibrationImages: [URL] = [], inputType: TFLiteIOType = .float32,
                outputType: TFLiteIOType = .float32, name: String = "MobileNetV2", version: String = "1", description: String = "",
                author: String = "", license: String = "") {
        self.quantization = quantization
        self.calibrationImages = calibrationImages
        self.inputType = inputType
        self.outputType = outputType
        self.name = name
        self.version = version
        self.description = description
        self.author = author
        self.license = license
    }
}

/// A written `.tflite` model and what its calibration saw.
public struct TFLiteExportResult: Sendable {
    /// The file's bytes (checked: our reader recognises it as the same network).
    public var data: Data
    /// Calibration images that were run (0 unless int8).
    public var calibrationImages: Int
    /// Calibration images that could not be decoded (skipped).
    public var calibrationFailures: [EmbeddingFailure]
}

/// Why a model cannot be exported as asked.
public enum TFLiteExportWorkflowError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// int8 without a calibration image, or none of them decoded: how many were tried and
    /// why the first ones failed.
    case noCalibrationImage(tried: Int, reasons: [String])
    /// Integer input or output types without int8 quantization.
    case integerTypesNeedInt8

    /// A one-line message.
    public var description: String {
        switch self {
        case .noCalibrationImage(let tried, let reasons):
            tried == 0 ? "int8 quantization needs calibration images (--calibration DIR) and none were given"
                : "none of the \(tried) calibration images could be read (\(reasons.prefix(3).joined(separator: "; "))\(reasons.count > 3 ? "; ..." : ""))"
        case .integerTypesNeedInt8: "uint8 or int8 input and output types need --quantize int8 (a float model takes and gives float32)"
        }
    }

    /// The same as ``description``.
    public var errorDescription: String? { description }
}

/// The cost of a conversion on labelled images: the accuracy of the model before and after, and
/// how often the two agree.
public struct TFLiteExportComparison: Sendable, Equatable, Codable {
    /// Images both models classified.
    public var images: Int
    /// Top-1 accuracy of the model exported from, 0...1.
    public var referenceAccuracy: Double
    /// Top-1 accuracy of the `.tflite` model (run by this library), 0...1.
    public var exportedAccuracy: Double
    /// The share of images with the same top-1 class, 0...1.
    public var topOneAgreement: Double
    /// The largest difference of a class probability between the two.
    public var maxProbabilityDifference: Double
}

extension TFLiteExportSettings {
    /// Calibration images used at most by default, spread evenly over those given
    /// (``/MobileNetPipeline/ImageFileList/evenlySpaced(_:count:)``): TensorFlow's guidance is
    /// 100 to 500 representative images.
    public static let defaultCalibrationLimit = 500
    /// Fewer calibration images than this give unstable activation ranges (TensorFlow's guidance).
    public static let recommendedMinimumCalibrationImages = 100
}

extension RunnableModel {
    /// Writes this model as a `.tflite` file: the float graph (backbone, pooling, head; for an
    /// embedder the pooled embedding) through ``/MobileNetTFLite/TFLiteExporter``, with TFLite
    /// Support metadata: the class names as the packed `labels.txt`, the input normalisation of
    /// the model's preprocessing (``/MobileNetIO/PreprocessingConfiguration/scaling``), name and version.
    ///
    /// For int8, calibration runs the float graph on `floatBackend` over every calibration image
    /// (preprocessed as this model's images) and records each activation's range; images that do
    /// not decode are skipped and reported. The bytes are read back by ``/MobileNetTFLite/TFLiteModel``
    /// and recognised as MobileNetV2 before they are returned.
    ///
    /// - Parameters:
    ///   - settings: quantization, calibration images, types, metadata.
    ///   - floatBackend: the float kernels that run the calibration (oneDNN).
    ///   - runtime: batch size and decoding threads of the calibration.
    ///   - progress: (images handled, images) after each calibration batch.
    /// - Throws: ``TFLiteExportWorkflowError``, ``/MobileNetTFLite/TFLiteExportError`` (a graph
    ///   the exporter does not write), ``/MobileNetTFLite/TFLiteError`` if the result does not
    ///   read back, the backend's errors.
    public func exportTFLite(_ settings: TFLiteExportSettings, floatBackend: any InferenceBackend, runtime: RuntimeOptions,
                             progress: ((Int, Int) -> Void)? = nil) throws -> TFLiteExportResult {
        let graph = network.graph
        var quantization: TFLiteExportQuantization = .none
        var calibrated = 0
        var failures: [EmbeddingFailure] = []
        switch settings.quantization {
        case .none, .dynamicRange:
            guard settings.inputType == .float32, settings.outputType == .float32 else { throw TFLiteExportWorkflowError.integerTypesNeedInt8 }
            quantization = settings.quantization == .none ? .none : .dynamicRange
        case .int8:
            let calibrator = try TFLiteCalibrator(graph: graph, backend: floatBackend)
            let files = settings.calibrationImages
            let preprocessor = self.preprocessor()
            try PreparedBatches(batchSize: runtime.batchSize, decodeThreads: runtime.decodeThreads).run(count: files.count, prepare: { index throws(ImageError) in
                try preprocessor.tensor(contentsOf: files[index])
            }) { range, prepared in
                var tensors: [Tensor] = []
                for (index, item) in zip(range, prepared) {
                    switch item {
                    case .success(let tensor): tensors.append(tensor)
                    case .failure(let error): failures.append(EmbeddingFailure(url: files[index], error: error))
                    }
                }
                if !tensors.isEmpty { try calibrator.observe(Tensor.concatenatingBatches(tensors)) }
                calibrated += tensors.count
                progress?(range.upperBound, files.count)
            }
            guard calibrated > 0 else { throw TFLiteExportWorkflowError.noCalibrationImage(tried: files.count, reasons: failures.map(\.message)) }
            quantization = .fullInteger(try calibrator.calibration())
        }
        let scaling = (preprocessingConfiguration ?? .standard).scaling.pixelMeanStd
        let low = zip(scaling.mean, scaling.std).map { (0 - $0) / $1 }.min() ?? -1
        let high = zip(scaling.mean, scaling.std).map { (255 - $0) / $1 }.max() ?? 1
        let uniform = Set(scaling.mean).count == 1 && Set(scaling.std).count == 1
        let c = configuration
        let what = isClassifier ? "\(classes.count)-class classifier" : "image embedder (\(embeddingWidth)-d)"
        let metadata = TFLiteExportMetadata(
            name: settings.name, version: settings.version,
            description: settings.description.isEmpty
                ? "MobileNetV2 alpha \(c.alpha) at \(c.inputHeight)x\(c.inputWidth), \(what), exported by swift-mobilenet from \(source.lastPathComponent)"
                : settings.description,
            author: settings.author, license: settings.license,
            classNames: isClassifier ? classNames : nil,
            mean: uniform ? [scaling.mean[0]] : scaling.mean, std: uniform ? [scaling.std[0]] : scaling.std)
        let options = TFLiteExportOptions(quantization: quantization, inputType: settings.inputType, outputType: settings.outputType,
                                          inputRange: min(low, high)...max(low, high), metadata: metadata)
        let data = try TFLiteExporter.write(graph, options: options)
        // The file must read back as the network it was written from.
        let recognised = try TFLiteMobileNetV2(model: try TFLiteModel(bytes: data, path: source.lastPathComponent + " (exported)"))
        guard recognised.configuration.alpha == c.alpha, recognised.configuration.inputHeight == c.inputHeight,
              recognised.configuration.inputWidth == c.inputWidth, recognised.classes == (isClassifier ? classes.count : 0) else {
            throw TFLiteExportError.unsupported(reason: "the written file reads back as another network (\(recognised.configuration), \(recognised.classes) classes)")
        }
        return TFLiteExportResult(data: data, calibrationImages: calibrated, calibrationFailures: failures)
    }

    /// Compares this model with another one of the same classes (an exported `.tflite` reopened)
    /// on labelled images: accuracy of each, top-1 agreement, largest probability difference.
    ///
    /// - Parameters:
    ///   - exported: the other model (its class names must be this model's).
    ///   - folder: labelled images, read with this model's class names (``ImageFolder/init(root:classNames:)``).
    ///   - runtime: batch size and decoding threads.
    /// - Returns: the comparison, and the images either model could not read.
    /// - Throws: ``ModelFileError/notAClassifier(path:)``, ``ModelFileError/classNames(path:reason:)``
    ///   for other classes, network errors.
    public func compare(with exported: RunnableModel, folder: ImageFolder, runtime: RuntimeOptions) throws -> (comparison: TFLiteExportComparison, failures: [EmbeddingFailure]) {
        guard isClassifier else { throw ModelFileError.notAClassifier(path: source.path) }
        guard exported.classNames == classNames, folder.classNames == classNames else {
            throw ModelFileError.classNames(path: exported.source.path, reason: "its classes are not those of \(source.lastPathComponent)")
        }
        let files = folder.images.map(\.url)
        let (reference, failedReference) = try classProbabilities(files, store: nil, runtime: runtime)
        let (other, failedOther) = try exported.classProbabilities(files, store: nil, runtime: runtime)
        var images = 0, correctReference = 0, correctExported = 0, agree = 0
        var worst = 0.0
        func top(_ row: [Float]) -> Int { row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) } ?? 0 }
        for image in folder.images {
            guard let a = reference[image.url], let b = other[image.url] else { continue }
            images += 1
            let (ta, tb) = (top(a), top(b))
            if ta == image.label { correctReference += 1 }
            if tb == image.label { correctExported += 1 }
            if ta == tb { agree += 1 }
            worst = max(worst, zip(a, b).map { Double(abs($0 - $1)) }.max() ?? 0)
        }
        guard images > 0 else { throw ClassifierTrainingError.noValidationImage }
        let n = Double(images)
        let failedURLs = Set(failedReference.map(\.url))
        return (TFLiteExportComparison(images: images, referenceAccuracy: Double(correctReference) / n, exportedAccuracy: Double(correctExported) / n,
                                       topOneAgreement: Double(agree) / n, maxProbabilityDifference: worst),
                failedReference + failedOther.filter { !failedURLs.contains($0.url) })
    }
}
