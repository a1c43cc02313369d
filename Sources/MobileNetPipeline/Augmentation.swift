import Foundation
import MobileNetIO
import MobileNetKernels
import MobileNetStore

/// Random image augmentation for `train --augment N`, seeded so every view is reproducible and
/// can be cached: horizontal flip (p = 0.5), zoom-in crop (scale 0.8…1, random centre),
/// rotation (±10°), brightness (±10% of the range) and contrast (×0.9…1.1 around the image
/// mean), applied in one bilinear resampling pass (edges clamped), like stacking Keras
/// `RandomFlip("horizontal")`, `RandomZoom`, `RandomRotation`, `RandomBrightness` and `RandomContrast`.
public struct ImageAugmenter: Sendable, Hashable {
    /// Largest rotation in degrees.
    public var maxRotationDegrees: Double = 10
    /// Smallest crop side as a fraction of the image (zoom in up to 1 / minScale).
    public var minScale: Double = 0.8
    /// Largest brightness change as a fraction of 255.
    public var maxBrightness: Double = 0.1
    /// Largest contrast change (factor in 1 ± this).
    public var maxContrast: Double = 0.1

    /// The defaults above.
    public init() {}

    /// The cache `view` id of augmented view `index` (0-based) made with `seed`; it changes
    /// whenever the augmentation itself changes (the `v1` part).
    public func viewID(seed: UInt64, index: Int) -> String {
        "aug:v1:rot=\(maxRotationDegrees):scale=\(minScale):b=\(maxBrightness):c=\(maxContrast):seed=\(seed):\(index)"
    }

    /// The random generator of one view: depends on the seed, the image content and the view index only.
    public static func random(seed: UInt64, contentSHA256: String, index: Int) -> SeededRandom {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in contentSHA256.utf8 { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return SeededRandom(seed: h ^ (seed &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03))
    }

    /// One augmented copy of `image` (same size).
    public func augment(_ image: RGBImage, random: inout SeededRandom) -> RGBImage {
        let flip = random.uniform() < 0.5
        let scale = minScale + (1 - minScale) * random.uniform()
        let angle = (random.uniform() * 2 - 1) * maxRotationDegrees * Double.pi / 180
        let w = Double(image.width), h = Double(image.height)
        // Crop centre: anywhere the (unrotated) crop stays inside the image.
        let cx = w / 2 + (random.uniform() * 2 - 1) * (1 - scale) * w / 2
        let cy = h / 2 + (random.uniform() * 2 - 1) * (1 - scale) * h / 2
        let brightness = (random.uniform() * 2 - 1) * maxBrightness * 255
        let contrast = 1 + (random.uniform() * 2 - 1) * maxContrast
        let (cosA, sinA) = (Foundation.cos(angle), Foundation.sin(angle))
        var sampled = [Double](repeating: 0, count: image.width * image.height * 3)
        var sum = 0.0
        image.pixels.withUnsafeBufferPointer { p in
            func pixel(_ x: Int, _ y: Int, _ c: Int) -> Double {
                Double(p[(min(max(y, 0), image.height - 1) * image.width + min(max(x, 0), image.width - 1)) * 3 + c])
            }
            for oy in 0..<image.height {
                for ox in 0..<image.width {
                    var u = (Double(ox) + 0.5 - w / 2) * scale
                    let v = (Double(oy) + 0.5 - h / 2) * scale
                    if flip { u = -u }
                    let sx = cx + u * cosA - v * sinA - 0.5
                    let sy = cy + u * sinA + v * cosA - 0.5
                    let x0 = Int(sx.rounded(.down)), y0 = Int(sy.rounded(.down))
                    let fx = sx - Double(x0), fy = sy - Double(y0)
                    for c in 0..<3 {
                        let top = pixel(x0, y0, c) * (1 - fx) + pixel(x0 + 1, y0, c) * fx
                        let bottom = pixel(x0, y0 + 1, c) * (1 - fx) + pixel(x0 + 1, y0 + 1, c) * fx
                        let value = top * (1 - fy) + bottom * fy
                        sampled[(oy * image.width + ox) * 3 + c] = value
                        sum += value
                    }
                }
            }
        }
        let mean = sum / Double(max(sampled.count, 1))
        let pixels = sampled.map { UInt8(min(max(((($0 - mean) * contrast + mean) + brightness).rounded(), 0), 255)) }
        return RGBImage(width: image.width, height: image.height, pixels: pixels)
    }
}

/// What ``CachedEmbedder/embedAugmented(_:count:seed:augmenter:progress:)`` returns.
public struct AugmentedEmbeddings: Sendable {
    /// Per file, its `count` view embeddings in view order (files that failed are left out).
    public var views: [URL: [[Float]]]
    /// The files whose views could not be made (the file no longer decodes), with the reason.
    public var failures: [EmbeddingFailure]
    /// Views found in the cache.
    public var cached: Int
    /// Views computed by the network.
    public var computed: Int
}

extension CachedEmbedder {
    /// Embeds `count` augmented views of each image (see ``ImageAugmenter``), through the store
    /// like the originals (view ids from ``ImageAugmenter/viewID(seed:index:)``), committing each
    /// batch. Runs on the same pipeline as ``embed(_:progress:)``: each file is decoded once on a
    /// worker thread, its missing views are made there, and the network runs on the caller's thread.
    ///
    /// - Parameters:
    ///   - images: the files with their content hashes (from ``embed(_:progress:)``).
    ///   - count: augmented views per image (`train --augment N`); 0 or less returns no views.
    ///   - seed: the augmentation seed; with the image content and view index it fixes each view,
    ///     and it is part of the cache view id.
    ///   - augmenter: the augmentation ranges (default ``ImageAugmenter/init()``).
    ///   - progress: called after each batch with (views computed so far, views to compute).
    /// - Returns: the views per file, the files that failed to decode, and the cache counts.
    /// - Throws: ``/MobileNetStore/StoreError`` and network errors (never for a bad image).
    public func embedAugmented(_ images: [(url: URL, contentSHA256: String)], count: Int, seed: UInt64,
                               augmenter: ImageAugmenter = ImageAugmenter(),
                               progress: ((Int, Int) -> Void)? = nil) throws -> AugmentedEmbeddings {
        guard count > 0 else { return AugmentedEmbeddings(views: [:], failures: [], cached: 0, computed: 0) }
        var known: [String: [Int: [Float]]] = [:]   // hash → view index → vector
        var cached = 0
        for index in 0..<count {
            let found = try store?.embeddings(for: images.map(\.contentSHA256), backbone: backbone, preprocessing: preprocessing,
                                               view: augmenter.viewID(seed: seed, index: index)) ?? [:]
            for (hash, vector) in found { known[hash, default: [:]][index] = vector }
            cached += found.count
        }
        struct Job: Sendable { var url: URL; var hash: String; var views: [Int] }
        var jobs: [Job] = []
        var queued = Set<String>()
        for image in images where !queued.contains(image.contentSHA256) {
            queued.insert(image.contentSHA256)
            let missing = (0..<count).filter { known[image.contentSHA256]?[$0] == nil }
            if !missing.isEmpty { jobs.append(Job(url: image.url, hash: image.contentSHA256, views: missing)) }
        }
        let total = jobs.reduce(0) { $0 + $1.views.count }
        var done = 0
        var failures: [EmbeddingFailure] = []
        let preprocessor = self.preprocessor
        let pipeline = ImageBatchPipeline(model: model, preprocessor: preprocessor, batchSize: batchSize, decodeThreads: decodeThreads)
        // About `batchSize` views per network batch.
        try pipeline.runItems(jobs, chunk: max(1, batchSize / count), prepare: { job throws(ImageError) in
            let image = try preprocessor.decoder.decode(contentsOf: job.url, target: nil)
            return job.views.map { index in
                var random = ImageAugmenter.random(seed: seed, contentSHA256: job.hash, index: index)
                return preprocessor.tensor(for: augmenter.augment(image, random: &random))
            }
        }) { range, slots, rows in
            var records: [EmbeddingRecord] = []
            var row = 0
            for (job, slot) in zip(jobs[range], slots) {
                switch slot {
                case .inputs:
                    for index in job.views {
                        let vector = rows.output[row]
                        row += 1
                        known[job.hash, default: [:]][index] = vector
                        records.append(EmbeddingRecord(contentSHA256: job.hash, backbone: backbone.key, preprocessing: preprocessing.key,
                                                       view: augmenter.viewID(seed: seed, index: index), vector: vector))
                    }
                case .failure(let error):
                    failures.append(EmbeddingFailure(url: job.url, error: error))
                }
            }
            try store?.insert(records)
            done += records.count
            progress?(done, total)
        }
        var result: [URL: [[Float]]] = [:]
        for image in images {
            guard let views = known[image.contentSHA256] else { continue }
            let vectors = (0..<count).compactMap { views[$0] }
            if vectors.count == count { result[image.url] = vectors }
        }
        return AugmentedEmbeddings(views: result, failures: failures, cached: cached, computed: done)
    }
}
