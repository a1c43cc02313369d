import ArgumentParser
import Foundation
import MobileNet

extension TFLiteQuantizationMode: ExpressibleByArgument {}
extension TFLiteIOType: ExpressibleByArgument {}

/// `mobilenet export`: a trained classifier as a Keras `.keras` transfer model, or any model as a
/// `.tflite` file (float32, dynamic range, or int8 calibrated on the user's images).
struct Export: AsyncParsableCommand {
    enum Format: String, ExpressibleByArgument, CaseIterable { case keras, tflite }

    static let configuration = CommandConfiguration(
        abstract: "Export a model as a Keras .keras transfer model or a TFLite .tflite file (float32, dynamic range or int8).",
        discussion: """
            .keras (--format keras, or an output ending in .keras): a `mobilenet train` model file as \
            Input → MobileNetV2 base (nested model mobilenetv2_<alpha>_<size>, include_top=False, frozen) \
            → GlobalAveragePooling2D → Dropout → [Dense(relu) → Dropout →] Dense(classes, softmax), \
            Keras 3 format; its input is the preprocessed image (x / 127.5 - 1). The backbone weight \
            file must be the one the head was trained on (same SHA-256): --weights, else the recorded path.

            .tflite (--format tflite, or an output ending in .tflite): any model --model opens (a \
            `mobilenet train` model, head-only or fine-tuned; Keras weights or models; a .tflite), or \
            without --model the weights --weights names (the ImageNet classifier by default); written with LiteRT's built-in operators and \
            TFLite Support metadata (class names packed as labels.txt, the input normalisation), so \
            LiteRT and `mobilenet classify --model` use it as it is. \
            --quantize dynamic-range stores int8 weights; --quantize int8 --calibration DIR quantizes \
            weights (per channel) and activations (ranges seen on 100-500 of your images), as \
            TensorFlow's converter does; --input-type/--output-type uint8|int8 make the ends integer \
            (uint8 input takes raw pixels 0...255). --validation DIR (one subfolder per class) \
            reports the accuracy before and after and how often the two agree.
            """
    )

    @OptionGroup(title: "Model") var model: ModelOptions

    @Option(name: [.short, .long], help: ArgumentHelp("The file to write (.keras or .tflite).", valueName: "path"))
    var output: String

    @Option(name: .long, help: ArgumentHelp("keras or tflite (default: from the output's extension; keras otherwise).", valueName: "format"))
    var format: Format?

    @Flag(name: .long, help: "Replace an existing output file.")
    var overwrite = false

    @Option(name: .long, help: ArgumentHelp("TFLite quantization: none (float32), dynamic-range (int8 weights) or int8 (weights and activations; needs --calibration).", valueName: "mode"))
    var quantize: TFLiteQuantizationMode = .none

    @Option(name: .long, help: ArgumentHelp("Images (a folder, searched recursively, or files) the int8 activation ranges are measured on.", valueName: "path"))
    var calibration: [String] = []

    @Option(name: .long, help: ArgumentHelp("Calibration images used at most, 1...100000, spread evenly over those found (default 500; TensorFlow suggests 100-500).", valueName: "n"))
    var calibrationLimit: Int?

    @Option(name: .long, help: ArgumentHelp("TFLite input type: float32 (the preprocessed image), uint8 (raw pixels 0...255 for the default scaling) or int8 (pixel - 128); integer types with --quantize int8.", valueName: "type"))
    var inputType: TFLiteIOType = .float32

    @Option(name: .long, help: ArgumentHelp("TFLite output type: float32, uint8 or int8 (integer types with --quantize int8).", valueName: "type"))
    var outputType: TFLiteIOType = .float32

    @Option(name: .long, help: ArgumentHelp("A folder with one subfolder of images per class: report accuracy of the model and of the written .tflite, and their top-1 agreement.", valueName: "dir"))
    var validation: String?

    @Option(name: .long, help: ArgumentHelp("The model's name in the TFLite metadata (default: the output file's name).", valueName: "text"))
    var name: String?

    @Option(name: .long, help: ArgumentHelp("The model's version in the TFLite metadata (default 1).", valueName: "text"))
    var metadataVersion: String?

    @Option(name: .long, help: ArgumentHelp("Author in the TFLite metadata.", valueName: "text"))
    var author: String?

    @Option(name: .long, help: ArgumentHelp("Licence in the TFLite metadata.", valueName: "text"))
    var license: String?

    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup
    @OptionGroup var decode: DecodeOptions
    @OptionGroup(title: "Image preprocessing (default: what the model was trained with)") var image: ImageOptions

    var resolvedFormat: Format { format ?? (output.lowercased().hasSuffix(".tflite") ? .tflite : .keras) }

    func validate() throws {
        try validateOutputs([output], overwrite: overwrite, inputs: [model.modelFile, model.weights].compactMap { $0 })
        if output == "-" { throw ValidationError("-o - is not a file: export writes a .keras or .tflite file (/dev/stdout for a pipe)") }
        let lowered = output.lowercased()
        if let format, (format == .keras && lowered.hasSuffix(".tflite")) || (format == .tflite && lowered.hasSuffix(".keras")) {
            throw ValidationError("--format \(format.rawValue) does not fit the output \(output): name it .\(format.rawValue) or leave --format out")
        }
        let tfliteOnly = [(quantize != .none, "--quantize"), (!calibration.isEmpty, "--calibration"), (calibrationLimit != nil, "--calibration-limit"),
                          (inputType != .float32, "--input-type"), (outputType != .float32, "--output-type"), (validation != nil, "--validation"),
                          (name != nil, "--name"), (metadataVersion != nil, "--metadata-version"), (author != nil, "--author"),
                          (license != nil, "--license")].filter(\.0).map(\.1)
        if resolvedFormat == .keras {
            guard model.modelFile != nil else { throw ValidationError("--model is required for a .keras export: a `mobilenet train` model file") }
            if let first = tfliteOnly.first { throw ValidationError("\(first) applies to a .tflite export (-o FILE.tflite or --format tflite)") }
            return
        }
        if quantize == .int8 && calibration.isEmpty { throw ValidationError("--quantize int8 needs --calibration DIR: 100-500 images like those the model will see") }
        if quantize != .int8 && !calibration.isEmpty { throw ValidationError("--calibration applies to --quantize int8") }
        if quantize != .int8 && calibrationLimit != nil { throw ValidationError("--calibration-limit applies to --quantize int8") }
        if quantize != .int8 && (inputType != .float32 || outputType != .float32) {
            throw ValidationError("--input-type and --output-type uint8/int8 need --quantize int8")
        }
        if let limit = calibrationLimit, !(1...100_000).contains(limit) {
            throw ValidationError("--calibration-limit must be between 1 and 100000, got \(limit)")
        }
        for path in calibration where !FileManager.default.fileExists(atPath: path) {
            throw ValidationError("--calibration \(path): no such file or directory")
        }
        if let validation {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: validation, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--validation \(validation): not a directory (one subfolder of images per class)")
            }
        }
    }

    func run() async throws {
        switch resolvedFormat {
        case .keras: try await exportKeras()
        case .tflite: try await exportTFLite()
        }
    }

    private func exportKeras() async throws {
        guard let modelFile = model.modelFile else { return }
        // Opened as every command opens a model; the backbone file is the one the head was
        // trained on (same SHA-256), and only its raw weights are needed.
        let opened = try await ModelFile.open(URL(fileURLWithPath: modelFile), options: ModelOpenOptions(backboneWeightsPath: model.weights, embeddingOnly: true),
                                              backend: ReferenceBackend())
        guard let saved = opened.trainedModel else {
            try checkUsage {
                throw ValidationError("\(modelFile) is a \(opened.kind.rawValue) file; a .keras export takes a `mobilenet train` model file (a Keras model is already one; -o FILE.tflite exports any model to TFLite)")
            }
            return
        }
        let identity = saved.backbone
        let backbone = try KerasWeightFile.read(contentsOf: opened.weightsURL).weights.mobileNetV2Part().droppingClassifier()
        let export = try KerasTransferExport.write(saved, backbone: backbone, to: URL(fileURLWithPath: output), overwrite: overwrite)
        let head = saved.head.layers.map { layer -> String in
            switch layer {
            case .dropout(let rate): "Dropout(\(rate))"
            case .dense(let d): "Dense(\(d.outputs))"
            case .relu: "relu"
            }
        }.joined(separator: " → ")
        printError("wrote \(output): Keras \(KerasTransferExport.kerasVersion) transfer model \(export.baseModelName) → global \(identity.pooling) pooling → \(head), softmax")
        printError("outputs in class order: \(saved.classNames.joined(separator: ", "))")
        printError("input: images resized to \(identity.inputHeight)x\(identity.inputWidth) and scaled with x / 127.5 - 1 (keras.applications.mobilenet_v2.preprocess_input)")
    }

    private func exportTFLite() async throws {
        // Everything a mistake in the arguments would stop is checked before any work: the
        // calibration images are listed, the validation folder read.
        var images: [URL] = []
        if quantize == .int8 {
            let list = ImageFileList(calibration, recursive: true)
            for problem in list.problems where problem.isError { printError("warning: \(problem) (skipped)") }
            images = ImageFileList.evenlySpaced(list.files, count: calibrationLimit ?? TFLiteExportSettings.defaultCalibrationLimit)
            try checkUsage {
                if images.isEmpty { throw ValidationError("--calibration \(calibration.joined(separator: " ")): no image files found") }
            }
        }
        let backend = runtime.inferenceBackend()
        // Without --model: the weights --weights names (a file with the top is the ImageNet
        // classifier, one without it the embedder); with neither, the ImageNet classifier.
        var source = try await model.openModel(backend: backend, includeTop: model.modelFile == nil && model.weights == nil,
                                               preprocessing: image.modelPreprocessing)
        var validationFolder: ImageFolder?
        if let validation {
            let root = URL(fileURLWithPath: validation, isDirectory: true)
            guard source.isClassifier else { throw ModelFileError.notAClassifier(path: source.source.path) }
            // A Keras model records no class names: as `evaluate` does, the folder's sorted
            // subfolders name them (and the written file packs those names).
            if source.kind == .kerasModel && model.labelsFile == nil {
                source = try source.withClassNames(ofFolder: root)
                printError("note: \(source.source.lastPathComponent) records no class names; using the subfolders of \(validation): \(source.classNames.prefix(10).joined(separator: ", "))")
            }
            validationFolder = try ImageFolder(root: root, classNames: source.classNames)
        } else if source.kind == .kerasModel && model.labelsFile == nil && source.isClassifier {
            printError("warning: \(source.source.lastPathComponent) records no class names: the .tflite packs class0 ... class\(source.classes.count - 1); give them with --labels FILE")
        }
        let settings = TFLiteExportSettings(quantization: quantize, calibrationImages: images, inputType: inputType, outputType: outputType,
                                            name: name ?? URL(fileURLWithPath: output).deletingPathExtension().lastPathComponent,
                                            version: metadataVersion ?? "1", author: author ?? "", license: license ?? "")
        let progress = ProgressReporter()
        let result = try source.exportTFLite(settings, floatBackend: backend, runtime: runtime.runtime(decode), progress: progress.update)
        progress.finish()
        for failure in result.calibrationFailures { printError("error: \(failure.message) (skipped)") }
        if quantize == .int8 && result.calibrationImages < TFLiteExportSettings.recommendedMinimumCalibrationImages {
            printError("warning: \(result.calibrationImages) calibration image\(result.calibrationImages == 1 ? "" : "s"); TensorFlow suggests 100-500 for stable activation ranges")
        }
        let url = URL(fileURLWithPath: output)
        try AtomicFile.write(result.data, to: url, overwrite: overwrite)
        let c = source.configuration
        let kind = switch quantize {
        case .none: "float32"
        case .dynamicRange: "dynamic range (int8 weights, float activations)"
        case .int8: "int8 (calibrated on \(result.calibrationImages) images; input \(inputType.rawValue), output \(outputType.rawValue))"
        }
        printError("wrote \(output): \(result.data.count) bytes, MobileNetV2 alpha \(c.alpha) \(c.inputHeight)x\(c.inputWidth), \(kind)")
        if source.isClassifier {
            printError("outputs: \(source.classes.count) class probabilities, names packed as labels.txt (\(source.classNames.prefix(5).joined(separator: ", "))\(source.classes.count > 5 ? ", ..." : ""))")
        } else {
            printError("output: the \(source.embeddingWidth)-d pooled embedding")
        }
        guard let validationFolder else { return }
        let exported = try await ModelFile.open(url, options: ModelOpenOptions(preprocessing: source.preprocessingConfiguration), backend: backend)
        let (comparison, failures) = try source.compare(with: exported, folder: validationFolder, runtime: runtime.runtime(decode))
        for failure in failures { printError("error: \(failure.message) (skipped)") }
        func percent(_ x: Double) -> String { String(format: "%.2f%%", x * 100) }
        print("validation images       \(comparison.images)")
        print("accuracy, source model  \(percent(comparison.referenceAccuracy))")
        print("accuracy, .tflite       \(percent(comparison.exportedAccuracy))")
        print("top-1 agreement         \(percent(comparison.topOneAgreement))")
        print("max |probability diff|  \(String(format: "%.4f", comparison.maxProbabilityDifference))")
    }
}
