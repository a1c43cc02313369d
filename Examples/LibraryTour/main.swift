// LibraryTour: the MobileNet library in five steps, on the project's shared data folder.
//
//     swift run -c release LibraryTour [SHARED_DIR]    # default: $MOBILENET_SHARED_DIR, else ../shared
//
// (a) classify and embed two photos in one pass, (b) tap a layer by its Keras name, (c) derive
// the embedding network without reading weights again, (d) train, save, reload and run a
// classifier for two flower classes, (e) index photos, search them and group near-duplicates,
// (f) open a quantized .tflite (the Coral model) and run it in integer arithmetic.
// Only the public API of `import MobileNet` is used.
import Foundation
import MobileNet

// Nothing to set up: the oneDNN backend's adaptive thread policy handles a busy machine
// (docs/performance.md), so a host program needs no environment variable.

/// Stops the tour with a message on standard error and exit status 1.
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("LibraryTour: \(message)\n".utf8))
    exit(1)
}

// MARK: - The shared data

let sharedPath = CommandLine.arguments.dropFirst().first ?? ProcessInfo.processInfo.environment["MOBILENET_SHARED_DIR"] ?? "../shared"
let data = URL(fileURLWithPath: sharedPath).absoluteURL.standardizedFileURL.appendingPathComponent("data")
let weightsFile = data.appendingPathComponent("weights/mobilenet_v2_1.0_224_dequant.h5")
let images = data.appendingPathComponent("images")
let photos = [images.appendingPathComponent("cat.jpg"), images.appendingPathComponent("grace_hopper.jpg")]
let flowers = data.appendingPathComponent("flowers")
for required in [weightsFile, flowers.appendingPathComponent("train/daisy"), flowers.appendingPathComponent("val/roses"),
                 data.appendingPathComponent("tflite/mobilenet_v2_1.0_224_quant.tflite")] + photos
where !FileManager.default.fileExists(atPath: required.path) {
    fail("\(required.path) not found: pass the shared data folder (the one holding data/) as argument 1 or set MOBILENET_SHARED_DIR")
}

/// A scratch folder for the model file and the index, removed at the end.
let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("LibraryTour-\(UUID().uuidString)")

func tour() async throws {
    let backend = OneDNNBackend()      // the fast backend; ReferenceBackend() is the plain-Swift oracle
    let runtime = RuntimeOptions.default

    // (a) The ImageNet classifier. One `forward` pass gives the probabilities *and* the 1280-d
    // embedding. Input: NHWC [N, 224, 224, 3], pixels 0...255 scaled to -1...1 (x / 127.5 - 1).
    let configuration = MobileNetV2Configuration()    // alpha 1.0, 224x224, with the top
    let (classifier, _) = try await MobileNetV2.load(configuration: configuration, weightsPath: weightsFile.path, backend: backend)
    let preprocessor = ImagePreprocessor(configuration: .standard, height: 224, width: 224)
    let batch = Tensor.concatenatingBatches(try photos.map { try preprocessor.tensor(contentsOf: $0) })
    let output = try classifier.forward(batch)
    print("(a) classify + embed in one pass: input \(batch.shape), embedding \(output.embedding.shape) (width \(classifier.embeddingWidth))")
    for (photo, row) in zip(photos, output.probabilities?.rows ?? []) {
        let top3 = ImageNetClasses.topK(row, k: 3).map { "\($0.name) \(String(format: "%.1f%%", 100 * $0.score))" }
        print("    \(photo.lastPathComponent): \(top3.joined(separator: ", "))")
    }

    // Many files: decoded on worker threads while the network runs, batches in input order;
    // `embeddings: true` adds the pooled embedding of the same pass. A bad file never stops the run.
    let listing = ImageFileList([images.path], recursive: false)   // skips manifest.json with a warning
    var classified = 0, embedded = 0
    try ImageBatchPipeline(model: classifier, preprocessor: preprocessor, runtime: runtime, embeddings: true).run(listing.files) { batch in
        classified += batch.outputs.count
        embedded += batch.embeddings.count
        for failure in batch.failures { print("    skipped: \(failure.message)") }
    }
    print("    pipeline over data/images: \(classified) photos classified and \(embedded) embedded")

    // (b) Any Keras layer's output by name, as `keras.Model(model.input, model.get_layer(name).output)`.
    let taps = try classifier.activations(batch, layers: ["block_13_expand_relu"])
    print("(b) tap block_13_expand_relu: shape \(taps["block_13_expand_relu"]?.shape ?? [])")

    // (c) The embedding network (include_top=False, pooling="avg") from the same weights.
    let embedder = try classifier.withoutClassifier()
    let embeddings = try embedder(batch)
    print("(c) withoutClassifier(): output \(embeddings.shape), max |diff| to (a)'s embedding \(embeddings.maxAbsoluteDifference(to: output.embedding))")
    // A backbone is that network plus its identity (configuration + SHA-256 of the weight file),
    // the key of cached embeddings and of saved models.
    let backbone = Backbone(network: embedder, identity: try BackboneIdentity(configuration: embedder.configuration, weightsFile: weightsFile),
                            weightsURL: weightsFile)

    // (d) Transfer learning on a small subset: 2 classes x 12 training and 2 x 6 validation images,
    // copied into class folders (the layout of Keras `image_dataset_from_directory`).
    let manager = FileManager.default
    for (split, count) in [("train", 12), ("val", 6)] {
        for className in ["daisy", "roses"] {
            let source = flowers.appendingPathComponent("\(split)/\(className)")
            let target = scratch.appendingPathComponent("flowers/\(split)/\(className)")
            try manager.createDirectory(at: target, withIntermediateDirectories: true)
            for name in try manager.contentsOfDirectory(atPath: source.path).sorted().prefix(count) {
                try manager.copyItem(at: source.appendingPathComponent(name), to: target.appendingPathComponent(name))
            }
        }
    }
    print("(d) transfer learning: daisy vs roses, 2 x 12 training and 2 x 6 validation images")
    var settings = TrainingSettings()   // Dropout(0.2) -> Dense(softmax), Adam 1e-3, seed 42
    settings.epochs = 20                // early stopping (patience 3) may end sooner
    let training = ClassifierTraining(dataDirectory: scratch.appendingPathComponent("flowers/train"),
                                      validationDirectory: scratch.appendingPathComponent("flowers/val"), settings: settings)
    let outcome = try training.run(backbone: backbone, store: nil, runtime: runtime) { event in
        if case .epoch(let record) = event, record.epoch % 5 == 0 {
            print("    epoch \(record.epoch): loss \(String(format: "%.4f", record.loss)), val_accuracy \(String(format: "%.3f", record.validationAccuracy ?? 0))")
        }
    }
    let modelFile = scratch.appendingPathComponent("flowers.json")
    try outcome.model.write(to: modelFile, overwrite: false)   // records classes, backbone, preprocessing, head
    print("    validation accuracy \(String(format: "%.3f", outcome.evaluation.accuracy)) on \(outcome.validationImages) images; saved \(modelFile.lastPathComponent)")

    // The same classifier as the standard Keras 3 transfer model (`keras.models.load_model` reads it).
    let backboneWeights = try KerasWeightFile.read(contentsOf: weightsFile).weights.mobileNetV2Part().droppingClassifier()
    try KerasTransferExport.write(outcome.model, backbone: backboneWeights, to: scratch.appendingPathComponent("flowers.keras"), overwrite: false)
    print("    exported flowers.keras (\(KerasTransferExport.kerasVersion) format)")

    // Load it back (the backbone weight file must have the recorded SHA-256) and predict.
    let trained = try await ModelFile.open(modelFile, backend: backend)
    let queries = ["daisy", "roses"].map { className in
        let folder = scratch.appendingPathComponent("flowers/val/\(className)")
        return folder.appendingPathComponent((try? manager.contentsOfDirectory(atPath: folder.path).sorted().last) ?? "")
    }
    let (predictions, failures) = try trained.predict(queries, k: 1, store: nil, runtime: runtime)
    for (file, classes) in predictions {
        let best = classes.first.map { "\($0.className) \(String(format: "%.3f", $0.probability))" } ?? "-"
        print("    predict \(file.deletingLastPathComponent().lastPathComponent)/\(file.lastPathComponent): \(best)")
    }
    for failure in failures { print("    skipped: \(failure.message)") }

    // (e) A persistent image index (SQLite): add the photos of data/images, search, find near-duplicates.
    let index = try ImageIndex(url: scratch.appendingPathComponent("photos.db"))
    let added = try index.add(listing.files, backbone: backbone, preprocessor: preprocessor, runtime: runtime)
    print("(e) indexed \(added.embeddings.count) photos (\(added.failures.count) failed)")
    let (results, _) = try index.similar(to: [photos[0]], top: 3, backbone: backbone, preprocessor: preprocessor, runtime: runtime)
    for (query, matches) in results {
        let names = matches.map { "\(URL(fileURLWithPath: $0.identifier).lastPathComponent) \(String(format: "%.3f", $0.similarity))" }
        print("    similar to \(query.lastPathComponent): \(names.joined(separator: ", "))")
    }
    let search = try index.searchIndex(preprocessing: PreprocessingIdentity(preprocessor)).index
    let groups = NearDuplicates.groups(in: search)    // cosine >= 0.88 (NearDuplicates.defaultThreshold)
    print("    \(groups.count) near-duplicate groups; the first: \(groups.first?.map { URL(fileURLWithPath: $0.file).lastPathComponent } ?? [])")

    // (f) A .tflite model is one more model file: ModelFile recognises MobileNetV2 in its graph.
    // The Coral file is uint8 (TF-slim, 1001 classes with `background` first, labels packed in
    // it): it runs on XNNPACK's integer operators; its probabilities are uint8 outputs / 256.
    let coral = try await ModelFile.open(data.appendingPathComponent("tflite/mobilenet_v2_1.0_224_quant.tflite"), backend: backend)
    let coralBatch = Tensor.concatenatingBatches(try photos.map { try coral.preprocessor().tensor(contentsOf: $0) })
    let coralOutputs = try coral.run(coralBatch)
    print("(f) \(coral.kind.rawValue) on \(coral.network.backendName): \(coral.classes.count) classes, embedding width \(coral.embeddingWidth)")
    for (photo, row) in zip(photos, coralOutputs.probabilities ?? []) {
        let top = coral.topK(row, k: 2).map { "\($0.name) (\($0.synset)) \(String(format: "%.1f%%", 100 * $0.score))" }
        print("    \(photo.lastPathComponent): \(top.joined(separator: ", "))")
    }
}

do {
    try await tour()
    try? FileManager.default.removeItem(at: scratch)
    print("done")
} catch {
    try? FileManager.default.removeItem(at: scratch)
    fail((error as? LocalizedError)?.errorDescription ?? String(describing: error))
}
