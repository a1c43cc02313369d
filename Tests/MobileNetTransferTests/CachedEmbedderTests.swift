import Foundation
import MobileNet
import MobileNetTestSupport
import Synchronization
import Testing

/// A backend that fails after `limit` batches: simulates a run interrupted mid-way.
final class InterruptingBackend: InferenceBackend {
    let name = "interrupting"
    let limit: Int
    let calls = Mutex(0)
    init(limit: Int) { self.limit = limit }
    struct Interrupted: Error {}
    struct Executor: GraphExecutor {
        let inner: any GraphExecutor
        let backend: InterruptingBackend
        func run(_ input: Tensor) throws -> [Tensor] {
            let n = backend.calls.withLock { $0 += 1; return $0 }
            if n > backend.limit { throw Interrupted() }
            return try inner.run(input)
        }
    }
    func makeExecutor(for graph: Graph) throws -> any GraphExecutor {
        Executor(inner: try ReferenceBackend().makeExecutor(for: graph), backend: self)
    }
}

@Suite(.enabled(if: TestData.sharedAvailable, TestData.sharedMissingMessage))
struct CachedEmbedderTests {
    /// Six flower photos, plus a byte copy of the first (same content, other path).
    static func files() throws -> [URL] {
        let dir = try TestData.temporaryDirectory()
        let source = TestData.shared("data/flowers/val/daisy")
        let names = try FileManager.default.contentsOfDirectory(atPath: source.path).sorted().prefix(6)
        var urls: [URL] = []
        for name in names {
            let url = dir.appendingPathComponent(name)
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: url)
            urls.append(url)
        }
        let copy = dir.appendingPathComponent("copy-of-first.jpg")
        try FileManager.default.copyItem(at: urls[0], to: copy)
        return urls + [copy]
    }

    static let configuration = MobileNetV2Configuration(alpha: 1.0, inputHeight: 48, inputWidth: 48, includeTop: false, pooling: .avg)
    static let weightsURL = TestData.shared("data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5")

    @Test func interruptedRunResumesAndResultsEqualUncached() throws {
        let files = try Self.files()
        let weights = try KerasWeightFile.read(contentsOf: Self.weightsURL).weights
        let identity = try BackboneIdentity(configuration: Self.configuration, weightsFile: Self.weightsURL)
        let storeURL = try TestData.temporaryDirectory().appendingPathComponent("cache.sqlite")

        // Interrupted after 2 batches of 2: those 4 images are committed.
        let failing = try MobileNetV2(configuration: Self.configuration, weights: weights, backend: InterruptingBackend(limit: 2))
        let first = try CachedEmbedder(model: failing, backbone: identity, store: try EmbeddingStore(url: storeURL), batchSize: 2)
        #expect(throws: InterruptingBackend.Interrupted.self) { _ = try first.embed(files) }
        #expect(try EmbeddingStore(url: storeURL).count() == 4)

        // The next run computes only the remaining 2 unique images.
        let model = try MobileNetV2(configuration: Self.configuration, weights: weights)
        let resumed = try CachedEmbedder(model: model, backbone: identity, store: try EmbeddingStore(url: storeURL), batchSize: 2)
        let result = try resumed.embed(files)
        #expect(result.cached == 4 && result.computed == 2, "\(result.cached) cached, \(result.computed) computed")
        #expect(result.embeddings.count == 7 && result.failures.isEmpty)
        #expect(result.embeddings[files[0]]?.vector == result.embeddings[files[6]]?.vector)

        // Cached values are exactly what the network computes without a cache.
        let uncached = try CachedEmbedder(model: model, backbone: identity, store: nil, batchSize: 2).embed(files)
        #expect(Set(uncached.embeddings.keys) == Set(result.embeddings.keys))
        // The images computed by the same network instance are bit-identical; those computed by the
        // interrupting backend's instance agree to float rounding.
        #expect(uncached.embeddings[files[4]] == result.embeddings[files[4]])
        var maxDiff: Float = 0
        for file in files {
            guard let a = uncached.embeddings[file]?.vector, let b = result.embeddings[file]?.vector, a.count == b.count else { continue }
            maxDiff = max(maxDiff, zip(a, b).map { abs($0 - $1) }.max() ?? 0)
        }
        #expect(maxDiff <= 1e-4, "max |diff| \(maxDiff)")

        // A third run computes nothing; a changed file is embedded again.
        try (Data(contentsOf: files[1]) + Data(repeating: 0, count: 16)).write(to: files[1])
        let third = try CachedEmbedder(model: model, backbone: identity, store: try EmbeddingStore(url: storeURL), batchSize: 2)
        let thirdResult = try third.embed(files)
        #expect(thirdResult.cached == 5 && thirdResult.computed == 1)
    }

    @Test func augmentedViewsAreSeededAndCached() throws {
        let files = Array(try Self.files().prefix(2))
        let weights = try KerasWeightFile.read(contentsOf: Self.weightsURL).weights
        let identity = try BackboneIdentity(configuration: Self.configuration, weightsFile: Self.weightsURL)
        let model = try MobileNetV2(configuration: Self.configuration, weights: weights)
        let storeURL = try TestData.temporaryDirectory().appendingPathComponent("cache.sqlite")
        let embedder = try CachedEmbedder(model: model, backbone: identity, store: try EmbeddingStore(url: storeURL), batchSize: 4)
        let originals = try embedder.embed(files).embeddings
        let images = files.compactMap { url in originals[url].map { (url: url, contentSHA256: $0.contentSHA256) } }
        var computed = 0
        let firstRun = try embedder.embedAugmented(images, count: 2, seed: 7) { done, _ in computed = done }
        let first = firstRun.views
        #expect(computed == 4 && firstRun.computed == 4 && firstRun.cached == 0 && firstRun.failures.isEmpty)
        #expect(first.count == 2 && first.values.allSatisfy { $0.count == 2 })
        #expect(first[files[0]]?[0] != first[files[0]]?[1])
        #expect(first[files[0]]?[0] != originals[files[0]]?.vector)
        computed = 0
        let again = try CachedEmbedder(model: model, backbone: identity, store: try EmbeddingStore(url: storeURL), batchSize: 4)
            .embedAugmented(images, count: 2, seed: 7) { done, _ in computed = done }
        #expect(computed == 0 && again.cached == 4)
        #expect(again.views == first)
        #expect(try EmbeddingStore(url: storeURL).count() == 6)
    }
}

@Suite struct ImageAugmenterTests {
    /// With rotation, zoom, brightness and contrast turned off, a view is the image or its mirror, exactly.
    @Test func neutralAugmentationIsIdentityOrMirror() {
        var augmenter = ImageAugmenter()
        augmenter.maxRotationDegrees = 0
        augmenter.minScale = 1
        augmenter.maxBrightness = 0
        augmenter.maxContrast = 0
        let pixels = (0..<(5 * 3 * 3)).map { UInt8(($0 * 37) % 256) }
        let image = RGBImage(width: 5, height: 3, pixels: pixels)
        var mirrored: [UInt8] = []
        for y in 0..<3 { for x in (0..<5).reversed() { mirrored += pixels[((y * 5 + x) * 3)..<((y * 5 + x) * 3 + 3)] } }
        var sawMirror = false, sawSame = false
        for index in 0..<16 {
            var random = ImageAugmenter.random(seed: 1, contentSHA256: "abc", index: index)
            let out = augmenter.augment(image, random: &random)
            #expect(out.pixels == pixels || out.pixels == mirrored)
            sawMirror = sawMirror || out.pixels == mirrored
            sawSame = sawSame || out.pixels == pixels
        }
        #expect(sawMirror && sawSame)
    }

    @Test func sameSeedSameView() {
        let image = RGBImage(width: 8, height: 6, pixels: (0..<(8 * 6 * 3)).map { UInt8(($0 * 11) % 256) })
        var a = ImageAugmenter.random(seed: 3, contentSHA256: "h", index: 1)
        var b = ImageAugmenter.random(seed: 3, contentSHA256: "h", index: 1)
        var c = ImageAugmenter.random(seed: 4, contentSHA256: "h", index: 1)
        let augmenter = ImageAugmenter()
        let va = augmenter.augment(image, random: &a)
        #expect(va == augmenter.augment(image, random: &b))
        #expect(va != augmenter.augment(image, random: &c))
    }
}

@Suite("Preprocessing identity")
struct PreprocessingIdentityTests {
    @Test("the default pipeline's identity is the documented standard one; other settings change the key")
    func standardMatchesDefaultPipeline() {
        let standard = PreprocessingIdentity(ImagePreprocessor(height: 224, width: 224))
        #expect(standard == .standard)
        var decoder = StandardImageDecoder()
        decoder.orientation = .ignore
        #expect(PreprocessingIdentity(ImagePreprocessor(height: 224, width: 224, decoder: decoder)).key != PreprocessingIdentity.standard.key)
        #expect(PreprocessingIdentity(ImagePreprocessor(height: 224, width: 224, resize: .pilBilinear)).key != PreprocessingIdentity.standard.key)
        #expect(PreprocessingIdentity(ImagePreprocessor(height: 224, width: 224, crop: .aspectRatio)).key != PreprocessingIdentity.standard.key)
    }
}
