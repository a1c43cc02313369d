import Foundation

/// Reading members of a Keras 3 `.keras` archive (a ZIP file) safely: each member's CRC-32 is
/// checked against the archive's central directory, and a member may not inflate beyond a
/// limit, checked while it is streamed (a ZIP bomb stops at the limit, it is never held whole).
public enum KerasArchive {
    /// The largest `model.weights.h5` member read: 256 MiB. The weights of the widest official
    /// MobileNetV2 (alpha 1.4, 6.2 million parameters) are 25 MB; a transfer model's head adds
    /// `1280 x classes` floats (5 MB per 1000 classes).
    public static let maximumWeightsBytes: Int64 = 256 << 20
    /// The largest `config.json` or `metadata.json` read: 32 MiB (MobileNetV2's is 160 KB).
    public static let maximumJSONBytes: Int64 = 32 << 20

    /// The bytes of member `name` of the archive at `url`.
    ///
    /// - Parameters:
    ///   - name: the member's path in the archive, such as `model.weights.h5`.
    ///   - url: the `.keras` file.
    ///   - limit: the most bytes the member may inflate to.
    ///   - isolation: where the ZIP parser runs: by default in a child process killed after 10
    ///     seconds, so that a parser trap or hang on a damaged archive becomes an error naming
    ///     the file; ``WeightFileIsolation/inProcess`` for trusted files (and for fuzzing, where
    ///     a trap or hang is the finding).
    /// - Returns: the member's bytes, or nil when the archive has no such member.
    /// - Throws: ``WeightFileError/corruptArchive(path:reason:)``: not a ZIP archive, a member
    ///   whose declared or actual size exceeds `limit` or the file, a CRC-32 mismatch (damaged
    ///   bytes), or a member that cannot be inflated; ``WeightFileError/parserCrashed(path:reason:)``
    ///   when the isolated parser died or ran out of time.
    public static func member(_ name: String, of url: URL, limit: Int64, isolation: WeightFileIsolation = .childProcess(timeout: 10)) throws(WeightFileError) -> Data? {
        guard case .childProcess(let timeout) = isolation else { return try memberInProcess(name, of: url, limit: limit) }
        // Defence in depth: libzip is fuzzed by OSS-Fuzz, but it is C parsing a file from the
        // internet, so by default it runs in a child process with a time limit.
        let output = try KerasWeightFile.runInChild(path: url.path, timeout: timeout) {
            do throws(WeightFileError) {
                guard let data = try memberInProcess(name, of: url, limit: limit) else { return Data([2]) }
                return Data([0]) + data
            } catch {
                return Data([1]) + ((try? JSONEncoder().encode(error)) ?? Data())
            }
        }
        switch output.first {
        case 0: return output.dropFirst()
        case 2: return nil
        case 1:
            if let error = try? JSONDecoder().decode(WeightFileError.self, from: output.dropFirst()) { throw error }
            fallthrough
        default:
            throw .parserCrashed(path: url.path, reason: "the archive reader ended without a result")
        }
    }

    /// ``member(_:of:limit:isolation:)`` in this process (inside the weight reader's child).
    static func memberInProcess(_ name: String, of url: URL, limit: Int64, prefix: [UInt8] = []) throws(WeightFileError) -> Data? {
        do {
            return try ZipArchive(contentsOf: url).read(name, limit: limit, prefix: prefix)
        } catch where error.isChecksumMismatch {
            throw .corruptArchive(path: url.path, reason: "\(name) is damaged: its CRC-32 does not match the archive's record")
        } catch {
            throw .corruptArchive(path: url.path, reason: error.reason)
        }
    }
}
