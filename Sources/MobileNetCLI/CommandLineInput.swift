// What the command line names: its raw bytes (arguments that are not UTF-8) and its image files.
import ArgumentParser
import Foundation
import MobileNet

/// The command-line arguments that are not valid UTF-8, as Swift decoded them (bad bytes
/// replaced by U+FFFD) mapped to their bytes escaped (``ImageFileProblem/escaped(_:)``).
enum RawArguments {
    nonisolated(unsafe) static var undecodable: [String: String] = [:]

    /// Reads the process's raw `argv`; called once at start, before any command runs.
    ///
    /// A value that is not UTF-8 right after an option (`-o caf\xe9.npy`, `--index=...`) would
    /// silently name another file (its bad bytes become U+FFFD), so it is a usage error (exit
    /// 64); one elsewhere is an image path, reported by its bytes while the others run.
    static func record() {
        var previous: String?
        for index in 1..<Int(CommandLine.argc) {
            guard let pointer = CommandLine.unsafeArgv[index] else { continue }
            let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(pointer).assumingMemoryBound(to: UInt8.self), count: strlen(pointer)))
            let text = String(decoding: bytes, as: UTF8.self)
            if String(validating: bytes, as: UTF8.self) == nil {
                let escaped = ImageFileProblem.escaped(bytes)
                let optionValue = text.hasPrefix("-") || (previous.map { $0.hasPrefix("-") && !$0.contains("=") && !booleanFlags.contains($0) } ?? false)
                if optionValue {
                    printError("error: the argument \(escaped) is not valid UTF-8; option values must be UTF-8 (rename the file)")
                    exit(64)
                }
                undecodable[text] = escaped
            }
            previous = text
        }
    }

    /// `arguments` (without the program name) with a negative number after an option that takes
    /// a value joined to it: `--min-similarity -0.5` becomes `--min-similarity=-0.5`, `--shard
    /// -1/2` becomes `--shard=-1/2` (then refused by the option's own check, not "Missing value"),
    /// and `-o -1` becomes `--output=-1` (`-o` is `--output` in every command that has it).
    /// ArgumentParser reads a word starting with `-` as an option, so the value was "missing"
    /// although the user gave one; no option name starts with a digit or a dot, so a word that
    /// does (after its `-`) or that reads as a number (`-inf`, `-nan`) is a value. Nothing after
    /// `--` is touched.
    static func joiningNegativeNumbers(_ arguments: [String]) -> [String] {
        func isNegativeValue(_ word: String) -> Bool {
            guard word.hasPrefix("-") else { return false }
            if Double(word) != nil { return true }
            guard let second = word.dropFirst().first else { return false }
            return second.isASCII && (second.isNumber || second == ".")
        }
        var result: [String] = []
        result.reserveCapacity(arguments.count)
        var ended = false
        for argument in arguments {
            if !ended, let previous = result.last, isNegativeValue(argument) {
                if previous.hasPrefix("--"), previous.count > 2, !previous.contains("="), !booleanFlags.contains(previous) {
                    result[result.count - 1] = previous + "=" + argument
                    continue
                }
                if previous == "-o" {
                    result[result.count - 1] = "--output=" + argument
                    continue
                }
            }
            if argument == "--" { ended = true }
            result.append(argument)
        }
        return result
    }

    /// The options that take no value, after which an argument is a positional (an image path):
    /// every flag of every command, read from ArgumentParser's own description of the tool
    /// (`_dumpHelp()`, the JSON behind `--experimental-dump-help`), so a new flag cannot be
    /// missing from it (a hand-kept list lacked `--no-fuse-depthwise`, and `classify
    /// --no-fuse-depthwise -1.jpg` became `--no-fuse-depthwise=-1.jpg`).
    static let booleanFlags: Set<String> = flags(inToolDescription: MobileNetCommand._dumpHelp())

    /// The flag names (`--name`, `-n`) in an ArgumentParser tool description (ToolInfoV0 JSON),
    /// with `--help` and `-h`.
    static func flags(inToolDescription json: String) -> Set<String> {
        var flags: Set<String> = ["--help", "-h"]
        func visit(_ command: [String: Any]) {
            for argument in command["arguments"] as? [[String: Any]] ?? [] where argument["kind"] as? String == "flag" {
                for name in argument["names"] as? [[String: Any]] ?? [] {
                    guard let text = name["name"] as? String, let kind = name["kind"] as? String else { continue }
                    flags.insert(kind == "long" ? "--" + text : "-" + text)
                }
            }
            for subcommand in command["subcommands"] as? [[String: Any]] ?? [] { visit(subcommand) }
        }
        if let root = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any], let command = root["command"] as? [String: Any] {
            visit(command)
        }
        return flags
    }
}

/// The image files of the command line (``ImageFileList``), with its problems printed on
/// standard error; `missing` lists the paths that do not exist (errors). `offersRecursion`:
/// whether the command has `--recursive`, which a folder of sub-folders is then told to use.
func collectImageFiles(_ arguments: [String], recursive: Bool, offersRecursion: Bool = true) -> (files: [URL], missing: [ImageFileProblem]) {
    var list = ImageFileList(arguments, recursive: recursive)
    // A path argument that is not UTF-8 reached us with its bad bytes replaced by U+FFFD, so it
    // names no file: report it by its real bytes instead of "no such file".
    list.problems = list.problems.map { problem in
        guard problem.kind == .missing, let escaped = RawArguments.undecodable[problem.path] else { return problem }
        return ImageFileProblem(path: escaped, kind: .undecodableName)
    }
    for problem in list.problems {
        var text = "\(problem.isError ? "error" : "warning"): \(problem)"
        if case .onlySubdirectories = problem.kind {
            text += offersRecursion ? "; descend into them with --recursive" : "; name the image files or a folder of images"
        }
        printError(text)
    }
    return (list.files, list.problems.filter(\.isError))
}

/// Fails when nothing can be processed: no image was found in the arguments (the problems
/// were already printed by ``collectImageFiles(_:recursive:offersRecursion:)``).
func requireImages(_ files: [URL], _ arguments: [String], problems: [ImageFileProblem] = []) throws {
    guard files.isEmpty else { return }
    if problems.isEmpty { printError("error: no image found in \(arguments.joined(separator: " "))") }
    throw ExitCode(1)
}

/// An `.npy` output lists its rows' file names one per line in `.files.txt`: a name with a line
/// break cannot be listed, so it is refused before any work.
func validateListableNames(_ files: [URL]) throws {
    if let bad = files.first(where: { $0.relativePath.contains(where: \.isNewline) }) {
        throw ValidationError("the file name \(bad.relativePath.debugDescription) contains a line break, which a .files.txt list cannot hold; use --format csv or jsonl")
    }
}
