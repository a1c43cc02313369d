import Foundation
import MobileNet

/// Locations of test data: the repository's committed fixtures and the read-only shared data
/// (`../shared`, overridable with `MOBILENET_SHARED_DIR`).
public enum TestData {
    /// The repository root, derived from this file's path.
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `Tests/Fixtures` in the repository.
    public static let fixtures = repositoryRoot.appendingPathComponent("Tests/Fixtures")

    /// The shared data directory: `$MOBILENET_SHARED_DIR`, or `../shared` next to the repository.
    public static let sharedDirectory: URL = {
        if let custom = ProcessInfo.processInfo.environment["MOBILENET_SHARED_DIR"], !custom.isEmpty {
            return URL(fileURLWithPath: custom, relativeTo: repositoryRoot).standardizedFileURL
        }
        return repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }()

    /// Whether the shared data is present. Tests that need it are skipped with
    /// ``sharedMissingMessage`` otherwise, unless `MOBILENET_REQUIRE_SHARED=1` (set by CI), in
    /// which case they run and fail loudly.
    public static var sharedAvailable: Bool {
        if ProcessInfo.processInfo.environment["MOBILENET_REQUIRE_SHARED"] == "1" { return true }
        return FileManager.default.fileExists(atPath: shared("data/weights").path)
    }

    /// Why shared-data tests were skipped.
    public static var sharedMissingMessage: Comment {
        "shared data not found at \(sharedDirectory.path): set MOBILENET_SHARED_DIR to the folder holding data/weights"
    }

    /// A file or folder inside the shared data directory.
    public static func shared(_ relativePath: String) -> URL {
        sharedDirectory.appendingPathComponent(relativePath)
    }

    /// The shared ImageNet weights (alpha 1.0, 224) in every Keras layout, with whether they hold the top.
    public static let sharedWeightFiles: [(name: String, includeTop: Bool)] = [
        ("mobilenet_v2_1.0_224_dequant.h5", true),
        ("mobilenet_v2_1.0_224_dequant_no_top.h5", false),
        ("mobilenet_v2_1.0_224_dequant.weights.h5", true),
        ("mobilenet_v2_1.0_224_dequant.keras", true),
    ]

    /// Ids of the photos with Keras reference outputs in `data/reference`.
    public static func referenceIDs() -> [String] {
        let dir = shared("data/reference")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return files.filter { $0.hasSuffix(".input.npy") }.map { String($0.dropLast(".input.npy".count)) }.sorted()
    }

    /// A new empty temporary directory.
    public static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("mobilenet-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

#if canImport(Testing)
import Testing
#endif

extension PreprocessingIdentity {
    /// An identity for store- and index-level tests, where what it says does not matter (the
    /// default pipeline's own, derived from its configuration, is `PreprocessingIdentity.standard`
    /// in MobileNetPipeline).
    public static let testDefault = PreprocessingIdentity(settings: ["resize": "bilinear-half-pixel", "scale": "x/127.5-1"])
}
