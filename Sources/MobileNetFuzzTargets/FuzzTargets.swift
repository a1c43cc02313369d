import Foundation
import MobileNet
@_spi(Fuzzing) import MobileNetSavedModel
@_spi(Fuzzing) import MobileNetServing

/// The coverage-guided fuzzing targets (libFuzzer, `make fuzz`): each takes arbitrary bytes,
/// runs one hostile-input path of the library and checks that the result is either a typed
/// error or a well-formed value. A crash, a hang, an unbounded allocation or a broken invariant
/// (a `precondition` here) is a finding. The same functions replay the committed corpus in the
/// normal test suite (`FuzzCorpusTests`).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// Image decoding (every format, EXIF orientation applied), then every resize mode.
    case image
    /// A `.keras` archive (ZIP parsing, member CRC-32 and size limits, config checks).
    case kerasArchive = "keras-archive"
    /// A `mobilenet train` model file (JSON): decoding, head consistency, recorded preprocessing.
    case modelFile = "model-file"
    /// An embedding database (SQLite file): validation, then every read the index makes.
    case store
    /// The weight-file reader's child-to-parent payload (what the parent decodes).
    case weightPayload = "weight-payload"
    /// A `.tflite` file: the flatbuffer Verifier, every index, shape, constant size and
    /// quantization check, TFLite Support metadata, MobileNetV2 recognition and the integer
    /// program's compilation.
    case tflite
    /// SavedModel parts: the bytes as a tensor bundle index (table footer, blocks, checksums,
    /// entries) and as a `saved_model.pb` (protocol buffer, serving signature, the head's data flow).
    case savedModel = "saved-model"
    /// A serving request body: the JSON census (counts, duplicate keys, control characters,
    /// top-level fields) and the TensorFlow Serving predict and KServe v2 infer decoders.
    case request

    /// Runs the target on `data`.
    public func run(_ data: Data) {
        switch self {
        case .image: Self.image(data)
        case .kerasArchive: Self.kerasArchive(data)
        case .modelFile: Self.modelFile(data)
        case .store: Self.store(data)
        case .weightPayload: Self.weightPayload(data)
        case .tflite: Self.tflite(data)
        case .savedModel: Self.savedModel(data)
        case .request: RequestDecodingFuzz.run(data)
        }
    }

    static func savedModel(_ data: Data) {
        if let bundle = try? TensorBundle(indexBytes: data, indexURL: URL(fileURLWithPath: "/nonexistent/fuzz/variables.index")) {
            precondition(bundle.shardCount >= 1, "a bundle without shards")
            for key in bundle.keys { precondition(bundle.shape(of: key) != nil, "a key without an entry") }
        }
        if let graph = SavedModelFolder.inspectGraph(data) {
            if let chain = graph.chain { precondition(!chain.isEmpty && chain.count <= 64, "an unbounded head chain") }
            if let scaling = graph.scaling {
                precondition(scaling.scale.count == 3 && scaling.offset.count == 3 && (scaling.scale + scaling.offset).allSatisfy(\.isFinite) && !scaling.scale.contains(0),
                             "an unchecked input scaling")
            }
        }
    }

    static func tflite(_ data: Data) {
        guard let model = try? TFLiteModel(bytes: data, path: "fuzz.tflite") else { return }
        for tensor in model.tensors {
            precondition(tensor.shape.allSatisfy { $0 >= 0 } && tensor.elementCount <= TFLiteModel.maximumElements, "unchecked shape")
            if let bytes = tensor.data { precondition(bytes.count == tensor.elementCount * tensor.type.byteWidth, "unchecked constant size") }
        }
        _ = try? model.supportMetadata()
        _ = try? TFLiteMobileNetV2(model: model)
        _ = try? QuantizedProgram(model: model)
    }

    // A small pixel limit keeps each run fast; the limit itself is part of what is fuzzed.
    static let decoder = StandardImageDecoder(maxPixels: 250_000)

    static func image(_ data: Data) {
        guard let image = try? decoder.decode(data, source: "fuzz", target: DecodeTarget(height: 32, width: 32)) else { return }
        precondition(image.width > 0 && image.height > 0 && image.pixels.count == image.width * image.height * 3, "decoded image with inconsistent size")
        for method in ResizeMethod.allCases {
            let pixels = ImageResizer.resize(image, height: 8, width: 11, method: method, crop: .none)
            // Float interpolation may step a rounding error outside 0...255 (as TensorFlow's does);
            // anything further, a NaN or a wrong size is a finding.
            let ok = pixels.count == 8 * 11 * 3 && pixels.allSatisfy { $0.isFinite && $0 >= -0.01 && $0 <= 255.01 }
            if !ok {
                FileHandle.standardError.write(Data("finding: \(method) resize of a \(image.width)x\(image.height) image: \(pixels.count) values, range \(pixels.min() ?? 0)...\(pixels.max() ?? 0)\n".utf8))
            }
            precondition(ok, "resize out of range")
        }
        _ = ImageResizer.resize(image, height: 7, width: 5, method: .pilBicubic, crop: .aspectRatio)
    }

    static func kerasArchive(_ data: Data) {
        // Through a file, as weight files are read, and in this process: the library reads
        // archives in a child with a time limit, but here a trap or a hang of the parser is
        // exactly what is looked for (this target's findings in ZIPFoundation, a trap in its
        // in-memory reader and an endless loop on a truncated deflate stream, moved the library
        // to libzip).
        let url = temporaryFile("archive.keras", data)
        defer { unlink(url.path) }
        for name in ["config.json", "model.weights.h5", "metadata.json"] {
            guard let member = try? KerasArchive.member(name, of: url, limit: 1 << 20, isolation: .inProcess) else { continue }
            precondition(member.count <= 1 << 20, "member over its limit")
            if name == "config.json", let config = try? JSONSerialization.jsonObject(with: member) {
                _ = try? KerasTransferModel.checkHead(config: config, dense: [], path: "fuzz.keras")
                _ = KerasTransferModel.inputShape(in: config)
            }
        }
    }

    static func modelFile(_ data: Data) {
        guard let model = try? ClassifierModel.decode(data, path: "fuzz.json") else { return }
        precondition(model.head.inconsistency == nil && model.head.classes == model.classNames.count, "an inconsistent model was accepted")
        _ = model.recordedPreprocessing
        _ = PreprocessingConfiguration(identitySettings: model.preprocessing.settings)
        let probabilities = model.head.probabilities(Matrix(rows: 1, columns: model.head.inputs))
        precondition(probabilities.columns == model.classNames.count, "wrong probability width")
    }

    static func store(_ data: Data) {
        let url = temporaryFile("store.db", data)
        defer { for suffix in ["", "-wal", "-shm", "-journal"] { unlink(url.path + suffix) } }
        guard let store = try? EmbeddingStore(url: url, readOnly: true) else { return }
        _ = try? store.count()
        guard let files = try? store.allFiles() else { return }
        let index = try? ImageIndex(url: url, readOnly: true)
        if let backbone = try? index?.backbone() {
            _ = try? store.embeddings(for: files.map(\.contentSHA256), backbone: backbone, preprocessing: .standard)
            _ = try? index?.searchIndex(preprocessing: .standard)
        }
    }

    static func weightPayload(_ data: Data) {
        _ = KerasWeightFile.decodePayloadForFuzzing(data)
    }

    /// A file in the temporary folder holding `data`, named per process and thread.
    static func temporaryFile(_ name: String, _ data: Data) -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("mobilenet-fuzz-\(getpid())-\(name)")
        try? data.write(to: url)
        return url
    }
}
