// Usage checks of output paths, before any work.
import ArgumentParser
import Foundation
import MobileNet

/// Whether anything is at `path`, a dangling symbolic link included.
func pathIsTaken(_ path: String) -> Bool {
    var info = stat()
    return lstat(path, &info) == 0
}

/// Usage checks for output paths, before any work: each must be a path in an existing folder,
/// not a directory, free unless `overwrite` (a stream, FIFO or device is written through and
/// needs no `--overwrite`), two outputs may not be one file, a file that needs a side file
/// cannot be a stream, FIFO or device, and no output may be one of `inputs` (the same file,
/// by device and inode: `embed x.png -o x.png` would destroy the photo).
func validateOutputs(_ paths: [String], overwrite: Bool, needsSideFile: [String] = [], inputs: [String] = []) throws {
    if paths.contains(where: \.isEmpty) { throw ValidationError("an output path is empty") }
    let resolved = paths.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    if Set(resolved).count < resolved.count { throw ValidationError("two outputs name the same file: \(paths.joined(separator: ", "))") }
    for path in needsSideFile where AtomicFile.isStreamPath(path) || [.fifo, .device, .socket].contains(FileKind(path: path)) {
        throw ValidationError("\(path) is a stream: this output needs a side file beside it; give a file")
    }
    for path in paths where !AtomicFile.isStreamPath(path) {
        let kind = FileKind(path: path)
        if kind == .directory { throw ValidationError("\(path) is a directory; give a file name") }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if FileKind(path: folder) != .directory { throw ValidationError("\(path): the folder \(folder) does not exist") }
        if [.fifo, .device, .socket].contains(kind) { continue }
        if !overwrite && pathIsTaken(path) {
            throw ValidationError("\(path) already exists\(kind == .missing ? " (a dangling symbolic link)" : ""); pass --overwrite to replace it")
        }
    }
    try refuseOutputsAmongInputs(paths, inputs: inputs.map { URL(fileURLWithPath: $0) })
}

/// Runs a usage check inside a command's `run()`: a failure prints `error: ...` and exits 64,
/// as ArgumentParser does for `validate()` (a ValidationError thrown from `run()` would be
/// printed with the top-level usage instead of the subcommand's).
func checkUsage(_ check: () throws -> Void) throws {
    do {
        try check()
    } catch let error as ValidationError {
        printError("error: \(error.message)")
        throw ExitCode(64)
    }
}

/// Refuses, before any work, an output that is the same file as one of the inputs.
func refuseOutputsAmongInputs(_ outputs: [String], inputs: [URL]) throws {
    func identity(_ path: String) -> [UInt64]? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return [UInt64(info.st_dev), UInt64(info.st_ino)]
    }
    let inputIdentities = Dictionary(inputs.compactMap { url in identity(url.path).map { ($0, url.relativePath) } }, uniquingKeysWith: { first, _ in first })
    for output in outputs {
        if let id = identity(output), let input = inputIdentities[id] {
            throw ValidationError("the output \(output) is the input \(input); writing it would destroy it")
        }
    }
}
