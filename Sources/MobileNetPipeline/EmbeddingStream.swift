import Foundation
import MobileNetIO

/// One result of ``ImageBatchPipeline/stream(_:shard:body:)``: a path with its network output,
/// or a path (or list line) with the reason it has none.
public enum StreamedResult: Sendable, Equatable {
    /// The file's network output (for an embedding network, the pooled `[C]` embedding).
    case output(path: String, values: [Float])
    /// The file could not be used: missing, a directory, unreadable, not decodable; or the
    /// line was not a path (then `path` is the list's name and the message gives the line).
    case failure(path: String, message: String)

    /// The result as one line of `mobilenet embed --stream` (no newline), the format
    /// `scripts/spark/embed_spark.py` reads: `{"path": ..., "embedding": [...], "backbone": ...,
    /// "preprocessing": ...}` for an output (each line names what made it, so rows from many
    /// processes can be checked), `{"path": ..., "error": "..."}` for a failure.
    ///
    /// - Parameters:
    ///   - backbone: the backbone identity's key (``/MobileNetStore/BackboneIdentity``'s `key`).
    ///   - preprocessing: the preprocessing identity's key.
    /// - Throws: `EncodingError` for a non-finite value in the output.
    public func jsonLine(backbone: String, preprocessing: String) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        func json<T: Encodable>(_ value: T) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
        switch self {
        case .output(let path, let values):
            return "{\"path\":\(try json(path)),\"embedding\":\(try json(values)),\"backbone\":\(try json(backbone)),\"preprocessing\":\(try json(preprocessing))}"
        case .failure(let path, let message):
            return "{\"path\":\(try json(path)),\"error\":\(try json(message))}"
        }
    }
}

extension ImageBatchPipeline {
    /// Paths read per ``run(_:body:)`` call of ``stream(_:shard:body:)``, in batches: the
    /// stream holds at most this many paths besides the decoded batches.
    public var streamChunk: Int { batchSize * 8 }

    /// Runs the network over the paths of a list as they arrive — the streaming mode for data
    /// engines that pipe paths through a process (Spark `RDD.pipe`, `xargs`, shell pipelines).
    ///
    /// Reads ``streamChunk`` lines of `reader` at a time (those of `shard`), runs them in
    /// batches of ``batchSize`` exactly as ``run(_:body:)`` cuts a list (so results match a
    /// whole-list run bit for bit), and calls `body` once per batch with that batch's results
    /// in list order — the outputs and the failures — as soon as the batch is done. Before a
    /// chunk runs, each path is checked: a missing path or a directory is a failure without
    /// taking a place in a batch (as ``ImageFileList/init(listedIn:shard:)`` leaves it out of
    /// the list), handed to `body` at once (in groups of at most ``streamChunk``), so it may
    /// come ahead of images listed before it that are still in their batch. Bad lines
    /// (``PathListError/badLine(list:line:problem:)``) are failures too.
    /// Nothing about one file or line ends the stream. Memory is bounded whatever the length
    /// of the list: one chunk of paths and at most `lookahead + 1` decoded batches.
    ///
    /// - Throws: ``PathListError/unreadable(list:message:)`` when the list cannot be read,
    ///   network errors, and what `body` throws.
    public func stream(_ reader: PathListReader, shard: Shard = .all, body: ([StreamedResult]) throws -> Void) throws {
        var done = false
        while !done {
            var chunk: [URL] = []
            var early: [StreamedResult] = []
            while chunk.count < streamChunk {
                // Paths refused before decoding are handed over in groups as they come, so a
                // long run of missing files is not held either.
                if early.count >= streamChunk {
                    try body(early)
                    early.removeAll(keepingCapacity: true)
                }
                guard let line = try reader.next() else {
                    done = true
                    break
                }
                guard shard.contains(hash: line.hash) else { continue }
                switch line.path {
                case .failure(let error):
                    early.append(.failure(path: reader.name, message: error.description))
                case .success(let path):
                    switch FileKind(path: path) {
                    case .missing: early.append(.failure(path: path, message: "\(path): \(FileKind.unreachableReason(path) ?? "no such file or directory")"))
                    case .directory: early.append(.failure(path: path, message: "\(path): a directory, not an image file"))
                    default: chunk.append(URL(fileURLWithPath: path))
                    }
                }
            }
            if !early.isEmpty { try body(early) }
            try run(chunk) { batch in
                var results: [StreamedResult] = []
                let size = batch.files.count + batch.failures.count
                var fileIndex = 0
                var failureIndex = 0
                for url in chunk[(batch.processed - size)..<batch.processed] {
                    if fileIndex < batch.files.count, batch.files[fileIndex] == url {
                        results.append(.output(path: url.relativePath, values: batch.outputs[fileIndex]))
                        fileIndex += 1
                    } else if failureIndex < batch.failures.count {
                        results.append(.failure(path: url.relativePath, message: batch.failures[failureIndex].message))
                        failureIndex += 1
                    }
                }
                try body(results)
            }
        }
    }
}
