import Foundation

/// Runs an executable to completion and collects what it writes, for tests of the CLI and of
/// external tools.
public enum Subprocess {
    /// Exit status and everything written to standard output and standard error.
    public struct Result: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// An executable that is not there (or not executable).
    public struct MissingExecutable: Error, CustomStringConvertible {
        public let path: String
        public init(path: String) { self.path = path }
        public var description: String { "\(path): no such executable" }
    }

    /// Runs `executable` with `arguments` and waits for it to exit.
    ///
    /// Standard output and standard error are drained at the same time, on two threads: reading
    /// one to its end before the other deadlocks as soon as the child fills the other pipe
    /// (64 KiB on Linux) and blocks. Standard input is `/dev/null`.
    ///
    /// - Parameter environment: the child's whole environment; `nil` inherits this process's.
    public static func run(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: executable.path) else { throw MissingExecutable(path: executable.path) }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let errorReader = Collector(err.fileHandleForReading)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            errorReader.readToEnd()
            done.signal()
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: errorReader.data, as: UTF8.self))
    }

    /// Reads one pipe to its end on another thread; `data` is read after the thread has finished.
    private final class Collector: @unchecked Sendable {
        let handle: FileHandle
        private(set) var data = Data()
        init(_ handle: FileHandle) { self.handle = handle }
        func readToEnd() { data = handle.readDataToEndOfFile() }
    }
}
