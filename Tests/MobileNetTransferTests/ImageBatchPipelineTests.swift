import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// The pipelined batch runner: decoding on worker threads must not change a single bit, the
/// order, or how failures are reported.
@Suite("ImageBatchPipeline")
struct ImageBatchPipelineTests {
    static let configuration = MobileNetV2Configuration(alpha: 0.35, inputHeight: 32, inputWidth: 32, includeTop: false, pooling: .avg)

    static func model() throws -> MobileNetV2 {
        try MobileNetV2(configuration: configuration, weights: KerasWeightSet.random(for: configuration, seed: 11))
    }

    /// Twelve decodable fixture images of several formats with two broken files among them.
    static func files() throws -> (all: [URL], broken: Set<URL>) {
        let decode = TestData.fixtures.appendingPathComponent("images/decode")
        let names = ["jpeg_420.jpg", "png_rgb.png", "webp_lossy.webp", "gif_plain.gif", "bmp_24.bmp", "exif_6.jpg",
                     "jpeg_progressive.jpg", "png_interlaced.png", "webp_lossless.webp", "bmp_8.bmp", "exif_3.jpg", "gif_interlaced.gif"]
        var all = names.map { decode.appendingPathComponent($0) }
        let dir = try TestData.temporaryDirectory()
        let truncated = dir.appendingPathComponent("truncated.jpg")
        try Data(try Data(contentsOf: all[0]).prefix(100)).write(to: truncated)
        let missing = dir.appendingPathComponent("does-not-exist.png")
        all.insert(truncated, at: 3)
        all.insert(missing, at: 9)
        return (all, [truncated, missing])
    }

    @Test("outputs are bit-identical for 0, 1 and 3 decoding threads, in input order, failures in their batch")
    func threadsDoNotChangeResults() throws {
        let model = try Self.model()
        let (files, broken) = try Self.files()
        let preprocessor = ImagePreprocessor(height: 32, width: 32)
        // The oracle: every good file on its own, straight through the network.
        var expected: [URL: [Float]] = [:]
        for file in files where !broken.contains(file) {
            expected[file] = try model(preprocessor.tensor(contentsOf: file)).rows[0]
        }
        for threads in [0, 1, 3] {
            for (batchSize, lookahead) in [(1, 1), (4, 1), (5, 2), (64, 2)] {
                let pipeline = ImageBatchPipeline(model: model, preprocessor: preprocessor, batchSize: batchSize, decodeThreads: threads, lookahead: lookahead)
                var seen: [URL] = []
                var failed: [URL] = []
                var processed: [Int] = []
                try pipeline.run(files) { batch in
                    #expect(batch.files.count == batch.outputs.count)
                    #expect(batch.total == files.count)
                    // Each batch holds exactly the next chunk of the input, minus its failures.
                    let chunk = files[(processed.last ?? 0)..<batch.processed]
                    #expect(chunk.count <= batchSize)
                    #expect(batch.files + batch.failures.map(\.url) == chunk.filter { !broken.contains($0) } + chunk.filter { broken.contains($0) })
                    for (file, row) in zip(batch.files, batch.outputs) {
                        // Batched inference may round differently from batch 1 in the last bits.
                        let reference = expected[file] ?? []
                        let diff = zip(row, reference).map { abs($0 - $1) }.max() ?? .infinity
                        #expect(row.count == reference.count && diff <= 1e-5, "\(file.lastPathComponent): \(diff)")
                    }
                    seen += batch.files
                    failed += batch.failures.map(\.url)
                    for failure in batch.failures { #expect(failure.message.contains(failure.url.lastPathComponent)) }
                    processed.append(batch.processed)
                }
                #expect(seen == files.filter { !broken.contains($0) }, "threads \(threads), batch \(batchSize)")
                #expect(Set(failed) == broken)
                #expect(processed.last == files.count && processed == processed.sorted())
            }
        }
        // Bit-identical across thread counts for the same batching.
        func outputs(_ threads: Int) throws -> [[Float]] {
            var rows: [[Float]] = []
            try ImageBatchPipeline(model: model, preprocessor: preprocessor, batchSize: 4, decodeThreads: threads).run(files) { rows += $0.outputs }
            return rows
        }
        let inline = try outputs(0)
        #expect(try outputs(1) == inline)
        #expect(try outputs(3) == inline)
    }

    struct Stop: Error {}

    @Test("an error thrown by the caller stops the workers and propagates")
    func errorsPropagate() throws {
        let model = try Self.model()
        let (files, _) = try Self.files()
        for threads in [0, 2] {
            var batches = 0
            #expect(throws: Stop.self) {
                try ImageBatchPipeline(model: model, batchSize: 2, decodeThreads: threads).run(files) { _ in
                    batches += 1
                    if batches == 2 { throw Stop() }
                }
            }
            #expect(batches == 2)
        }
        // A batch size far larger than the input (even Int.max) is one batch, no overflow.
        for threads in [0, 2] {
            var sizes: [Int] = []
            try ImageBatchPipeline(model: model, batchSize: .max, decodeThreads: threads).run(files) { sizes.append($0.processed) }
            #expect(sizes == [files.count])
        }
        // No files: the body is never called.
        try ImageBatchPipeline(model: model).run([]) { _ in Issue.record("called for an empty input") }
    }

    @Test("the README's library example runs as written (paths aside)", .enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
    func readmeLibraryExample() async throws {
        let weightsPath = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant.h5").path
        let (model, _) = try await MobileNetV2.load(configuration: MobileNetV2Configuration(), weightsPath: weightsPath, backend: OneDNNBackend())
        let input = try ImagePreprocessor(configuration: .preset(.tensorflow), height: 224, width: 224)
            .tensor(contentsOf: TestData.repositoryRoot.appendingPathComponent("Examples/chelsea.png"))
        let out = try model.forward(input)
        #expect(out.features.shape == [1, 7, 7, 1280] && out.embedding.shape == [1, 1280])
        #expect(ImageNetClasses.topK(try #require(out.probabilities).rows[0], k: 5).first?.name == "Egyptian_cat")
        let taps = try model.activations(input, layers: ["block_13_expand_relu"])
        #expect(taps["block_13_expand_relu"]?.shape == [1, 14, 14, 576])
        let embedder = try model.withoutClassifier()
        #expect(try embedder(input).maxAbsoluteDifference(to: out.embedding) <= 1e-5)

        let files = ImageFileList([TestData.repositoryRoot.appendingPathComponent("Examples").path], recursive: true).files
        #expect(files.count == 2)
        var count = 0
        try ImageBatchPipeline(model: model, runtime: .default, embeddings: true).run(files) { batch in
            for (_, probabilities) in zip(batch.files, batch.outputs) { #expect(probabilities.count == 1000); count += 1 }
            #expect(batch.embeddings.count == batch.files.count)
            #expect(batch.failures.isEmpty)
        }
        #expect(count == files.count)
    }
}
