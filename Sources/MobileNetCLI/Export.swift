import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet export --model MODEL.json -o classifier.keras`: the trained classifier as a Keras
/// 3 transfer model that `keras.models.load_model` loads.
struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a trained classifier as a Keras .keras file (the standard Keras transfer model).",
        discussion: """
            Writes Input → MobileNetV2 base (nested model mobilenetv2_<alpha>_<size>, include_top=False, \
            frozen) → GlobalAveragePooling2D → Dropout → [Dense(relu) → Dropout →] Dense(classes, softmax) \
            with the backbone weights and the trained head, in the Keras 3 .keras format. The model's input \
            is the preprocessed image (x / 127.5 - 1); its outputs are in the model file's class order, \
            printed on standard error. The backbone weight file must be the one the head was trained on \
            (same SHA-256): --weights, else the path recorded at training, else the normal resolution.
            """
    )

    @Option(name: .customLong("model"), help: ArgumentHelp("A `mobilenet train` model file.", valueName: "path"))
    var modelFile: String

    @Option(name: .long, help: ArgumentHelp("Backbone weight file the head was trained on (default: the recorded path).", valueName: "path"))
    var weights: String?

    @Option(name: [.short, .long], help: ArgumentHelp("The .keras file to write.", valueName: "path"))
    var output: String

    @Flag(name: .long, help: "Replace an existing output file.")
    var overwrite = false

    func validate() throws {
        try validateOutputs([output], overwrite: overwrite, inputs: [modelFile] + (weights.map { [$0] } ?? []))
    }

    func run() async throws {
        do {
            // Opened as every command opens a model; the backbone file is the one the head was
            // trained on (same SHA-256), and only its raw weights are needed.
            let opened = try await ModelFile.open(URL(fileURLWithPath: modelFile), options: ModelOpenOptions(backboneWeightsPath: weights, embeddingOnly: true),
                                                  backend: ReferenceBackend())
            guard let saved = opened.trainedModel else {
                throw ValidationError("\(modelFile) is a \(opened.kind.rawValue) file; export takes a `mobilenet train` model file (a Keras model is already one)")
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
    }
}
