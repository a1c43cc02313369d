import Foundation
import MobileNetKernels

/// Embedding tables as files other tools read: a NumPy `.npy` matrix with a side file that
/// names its rows. The pair is written with ``AtomicFile/writeGroup(_:overwrite:)``, so a row
/// list can never describe another write's matrix, even when the writer is killed midway.
public enum EmbeddingFiles {
    /// The side file listing the rows of an `.npy` written by ``writeNPY(names:rows:width:to:overwrite:)``:
    /// `<path>.files.txt`.
    public static func namesURL(for url: URL) -> URL { URL(fileURLWithPath: url.path + ".files.txt") }

    /// Writes `rows` as a float32 `.npy` of shape `[N, width]` (an empty result keeps its width:
    /// `(0, width)`) and `names` one per line, in row order, in `<url>.files.txt`.
    ///
    /// - Parameters:
    ///   - names: one name per row (relative image paths); none may contain a line break.
    ///   - rows: the embeddings, each of `width` values.
    ///   - width: the embedding width (1280 for MobileNetV2 at alpha 1.0).
    ///   - url: the `.npy` destination; it cannot be a stream (the side file goes beside it).
    ///   - overwrite: replace existing files; `false` refuses if either file exists, checked
    ///     when the files are put in place.
    /// - Throws: ``AtomicFileError`` naming the file (a name with a line break names the list).
    public static func writeNPY(names: [String], rows: [[Float]], width: Int, to url: URL, overwrite: Bool) throws(AtomicFileError) {
        precondition(names.count == rows.count && rows.allSatisfy { $0.count == width }, "one name per row of width values")
        let namesURL = namesURL(for: url)
        // A name with a line break would shift every later row: refuse it (the .csv and JSON
        // lines formats quote such names).
        if let bad = names.first(where: { $0.contains(where: \.isNewline) }) {
            throw .io(path: namesURL.path, reason: "the file name \(bad.debugDescription) contains a line break; use --format csv or jsonl")
        }
        let tensor = Tensor(shape: [rows.count, width], scalars: rows.flatMap { $0 })
        let list = Data((names.joined(separator: "\n") + (names.isEmpty ? "" : "\n")).utf8)
        try AtomicFile.writeGroup([(NPY.encode(tensor), url), (list, namesURL)], overwrite: overwrite)
    }
}
