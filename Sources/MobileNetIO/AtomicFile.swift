import Foundation

/// Writes files so that readers never see a partial file and an existing file is replaced only
/// by a complete new one: the data goes to a temporary file in the same directory, which is
/// then renamed over the destination (an atomic `rename(2)` on one file system).
public enum AtomicFile {
    /// Writes `data` to `url` atomically.
    ///
    /// - Throws: the underlying file-system error; the destination is then left untouched.
    public static func write(_ data: Data, to url: URL) throws {
        try data.write(to: url, options: .atomic)
    }
}
