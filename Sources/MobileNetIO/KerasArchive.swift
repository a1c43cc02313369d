import Foundation
import ZIPFoundation

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
    /// - Returns: the member's bytes, or nil when the archive has no such member.
    /// - Throws: ``WeightFileError/corruptArchive(path:reason:)``: not a ZIP archive, a member
    ///   whose declared or actual size exceeds `limit`, a CRC-32 mismatch (damaged bytes), or a
    ///   member that cannot be inflated.
    public static func member(_ name: String, of url: URL, limit: Int64) throws(WeightFileError) -> Data? {
        // ZIPFoundation loops forever on an entry whose compressed data runs past the end of the
        // file (found by fuzzing): members are read in a child process with a time limit.
        let output = try KerasWeightFile.runInChild(path: url.path, timeout: 10) {
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

    /// ``member(_:of:limit:)`` in this process (inside the weight reader's child).
    static func memberInProcess(_ name: String, of url: URL, limit: Int64) throws(WeightFileError) -> Data? {
        let archive: Archive
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            throw .corruptArchive(path: url.path, reason: "not a readable ZIP archive")
        }
        return try member(name, of: archive, path: url.path, limit: limit)
    }

    static func member(_ name: String, of archive: Archive, path: String, limit: Int64) throws(WeightFileError) -> Data? {
        let url = URL(fileURLWithPath: path)
        guard let entry = archive[name] else { return nil }
        guard entry.uncompressedSize <= limit else {
            throw .corruptArchive(path: url.path, reason: "\(name) declares \(entry.uncompressedSize) bytes, more than the \(limit >> 20) MiB such a member may have")
        }
        struct TooLarge: Error {}
        var data = Data()
        data.reserveCapacity(Int(max(0, entry.uncompressedSize)))
        let checksum: CRC32
        do {
            checksum = try archive.extract(entry, skipCRC32: false) { chunk in
                guard Int64(data.count + chunk.count) <= limit else { throw TooLarge() }
                data.append(chunk)
            }
        } catch is TooLarge {
            throw .corruptArchive(path: url.path, reason: "\(name) inflates to more than the \(limit >> 20) MiB such a member may have")
        } catch {
            throw .corruptArchive(path: url.path, reason: "\(name) cannot be extracted (\(error))")
        }
        guard checksum == entry.checksum else {
            throw .corruptArchive(path: url.path, reason: String(format: "%@ is damaged: its CRC-32 is %08x, the archive records %08x", name, checksum, entry.checksum))
        }
        guard Int64(data.count) == entry.uncompressedSize else {
            throw .corruptArchive(path: url.path, reason: "\(name) has \(data.count) bytes, the archive records \(entry.uncompressedSize)")
        }
        return data
    }
}
