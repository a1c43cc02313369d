import ArgumentParser
import Foundation
import MobileNet

/// The `mobilenet` command-line tool.
@main
struct MobileNetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mobilenet",
        abstract: "MobileNetV2 image classification and embeddings with the Keras ImageNet weights.",
        discussion: """
            classify gives ImageNet class probabilities (the model with its top); embed gives one \
            1280-d embedding per image (the model without its top, global average pooled), the \
            input to transfer learning and similarity search.

            Exit status: 0 when every image was processed, 1 when some image or the model failed \
            (the other images are still processed), 64 for a usage error.
            """,
        subcommands: [Classify.self, Embed.self, Summary.self, Bench.self, Index.self, Similar.self, Duplicates.self, Train.self, Evaluate.self, Predict.self, Export.self, Serve.self]
    )

    /// Ends OpenBLAS's spinning start-up threads (``BLASThreads/releaseIdle()``), records the raw
    /// arguments, then runs the command with negative numbers joined to their options
    /// (``RawArguments/joiningNegativeNumbers(_:)``). (OpenMP's waiting is left at GNU OpenMP's
    /// bounded spin; the oneDNN backend adapts its thread count to the machine's load.)
    ///
    /// The one error path of every command: an error a command's `run()` throws is printed as
    /// `error: <its LocalizedError text>` on standard error and the process exits with 1;
    /// ArgumentParser's own (usage errors, `--help`, `ExitCode`) keep its handling (64, 0, the code).
    /// (`ValidationError` and `ExitCode` are not `LocalizedError`s.)
    static func main() async {
        BLASThreads.releaseIdle()
        RawArguments.record()
        let arguments = RawArguments.joiningNegativeNumbers(Array(CommandLine.arguments.dropFirst()))
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            exit(withError: error)
        }
        do {
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch let error as any LocalizedError {
            // The library's typed errors and Foundation's: one line naming the file and problem.
            printError("error: \(errorMessage(error))")
            exit(withError: ExitCode(1))
        } catch {
            // ArgumentParser's own (usage errors, `--help` on a subcommand, `ExitCode`).
            exit(withError: error)
        }
    }
}
