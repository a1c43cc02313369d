import CMobileNetProcess
import CMobileNetShims
import Foundation
import MobileNetModel

/// How ``KerasWeightFile/read(contentsOf:isolation:)`` runs libhdf5 on a file.
public enum WeightFileIsolation: Sendable, Hashable {
    /// In a forked child process (the default): libhdf5 is not safe on damaged files (a single
    /// changed byte can make it dereference a wild pointer), so a crash, a runaway allocation
    /// (the child's address space is limited) or a hang (killed after `timeout` seconds) becomes
    /// a ``WeightFileError`` naming the file, and the calling process goes on.
    case childProcess(timeout: Double)
    /// In the calling process: faster by the cost of one `fork` (a few milliseconds), for files
    /// that are trusted (written by this program, checked by a hash).
    case inProcess

    /// A child process killed after two minutes.
    public static let `default` = WeightFileIsolation.childProcess(timeout: 120)
}

extension KerasWeightFile {
    /// Reads all layer weights of a file (see ``read(contentsOf:)``), with libhdf5 isolated as
    /// `isolation` says.
    ///
    /// - Throws: ``WeightFileError`` naming the file: the parser's own errors, or
    ///   ``WeightFileError/parserCrashed(path:reason:)`` when the child process died.
    public static func read(contentsOf url: URL, isolation: WeightFileIsolation) throws(WeightFileError) -> (weights: KerasWeightSet, format: KerasWeightFileFormat) {
        switch isolation {
        case .inProcess:
            return try readInProcess(url)
        case .childProcess(let timeout):
            return try readInChild(url, timeout: timeout)
        }
    }

    /// The extra address space the child may use beyond the parent's (4 GiB): the largest
    /// weight file this reader accepts needs a fraction of that.
    static let childAddressSpaceAllowance: UInt64 = 4 << 30

    static func readInChild(_ url: URL, timeout: Double) throws(WeightFileError) -> (weights: KerasWeightSet, format: KerasWeightFileFormat) {
        let path = url.path
        // Cheap checks that need no parser stay in this process (and name the problem better).
        switch FileKind(path: path) {
        case .missing: throw .notFound(path: path)
        case .regular: break
        case let other: throw .unreadable(path: path, reason: other.description)
        }
        let output = try runInChild(path: path, timeout: timeout) {
            do throws(WeightFileError) {
                return WeightPayload.encode(try readInProcess(url))
            } catch {
                return WeightPayload.encode(error)
            }
        }
        switch WeightPayload.decode(output) {
        case .some(.success(let result)): return result
        case .some(.failure(let error)): throw error
        case nil: throw .parserCrashed(path: path, reason: "the reader process ended without a result (out of memory?)")
        }
    }

    /// Runs `body` in a forked child process (address space limited to this process's plus
    /// ``childAddressSpaceAllowance``, stopped after `timeout` seconds of processor time, and
    /// after five times that of wall-clock time as a backstop) and returns the bytes it
    /// produced. A crash or timeout is ``WeightFileError/parserCrashed(path:reason:)`` naming
    /// `path`. Processor time, not wall-clock time, is what a hostile file can make a parser
    /// burn; on a loaded machine (a CI build beside it) a sound 14 MB file once took over 120 s
    /// of wall-clock time to read and was called damaged.
    static func runInChild(path: String, timeout: Double, _ body: () -> Data) throws(WeightFileError) -> Data {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw .unreadable(path: path, reason: "cannot create a pipe: \(String(cString: strerror(errno)))") }
        // No other thread may be inside libhdf5 at the fork: the child inherits its state.
        hdf5Lock.lock()
        let addressSpace = currentAddressSpace()
        let pid = mn_fork()
        if pid == 0 {
            // A crash here ends the child quietly: the parent reports it (no runtime backtrace).
            for signal in [SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP] { _ = Glibc.signal(signal, SIG_DFL) }
            hdf5Lock.unlock()
            close(fds[0])
            if addressSpace > 0 { _ = mn_limit_address_space(addressSpace + childAddressSpaceAllowance) }
            var cpu = rlimit(rlim_cur: rlim_t(max(1, timeout.rounded(.up))), rlim_max: rlim_t(max(1, timeout.rounded(.up)) + 1))
            _ = setrlimit(Int32(RLIMIT_CPU.rawValue), &cpu)
            _ = Glibc.signal(SIGXCPU, SIG_DFL)
            let payload = body()
            payload.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.write(fds[1], raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 { if errno == EINTR { continue }; break }
                    offset += n
                }
            }
            close(fds[1])
            _exit(0)
        }
        hdf5Lock.unlock()
        close(fds[1])
        guard pid > 0 else {
            close(fds[0])
            throw .unreadable(path: path, reason: "cannot start the reader process: \(String(cString: strerror(errno)))")
        }
        let (output, timedOut) = readAll(fds[0], timeout: timeout * 5)
        close(fds[0])
        if timedOut { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if timedOut { throw .parserCrashed(path: path, reason: "reading took longer than \(Int(timeout * 5)) s and was stopped") }
        let signal = status & 0x7f
        if signal == SIGXCPU || signal == SIGKILL {
            throw .parserCrashed(path: path, reason: "reading used more than \(Int(timeout.rounded(.up))) s of processor time and was stopped")
        }
        if signal != 0 {
            let name = signal == SIGSEGV ? "a segmentation fault" : signal == SIGABRT ? "an abort" : signal == SIGBUS ? "a bus error" : "signal \(signal)"
            throw .parserCrashed(path: path, reason: "the HDF5 library or the archive reader crashed (\(name)) on this file")
        }
        return output
    }

    /// The process's virtual memory size in bytes (`/proc/self/statm`), 0 if unknown.
    static func currentAddressSpace() -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = text.split(separator: " ").first.flatMap({ UInt64($0) }) else { return 0 }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Everything readable from `fd` until end of file, or until `timeout` seconds passed.
    static func readAll(_ fd: Int32, timeout: Double) -> (Data, timedOut: Bool) {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return (data, true) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(remaining, 1) * 1000))
            if ready < 0 { if errno == EINTR { continue }; return (data, false) }
            if ready == 0 { continue }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return (data, false) }
            if n == 0 { return (data, false) }
            data.append(contentsOf: buffer.prefix(n))
        }
    }
}

/// The child's answer, as bytes: a success with the weights, or the parser's error.
enum WeightPayload {
    static func encode(_ result: (weights: KerasWeightSet, format: KerasWeightFileFormat)) -> Data {
        var out = Data([0])
        func string(_ s: String) { let b = Array(s.utf8); integer(UInt64(b.count)); out.append(contentsOf: b) }
        func integer(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        string(result.format.rawValue)
        string(result.weights.source)
        integer(UInt64(result.weights.layers.count))
        for layer in result.weights.layers {
            string(layer.name)
            integer(UInt64(layer.modelPath.count))
            for p in layer.modelPath { string(p) }
            integer(UInt64(layer.arrays.count))
            for array in layer.arrays {
                string(array.name)
                integer(UInt64(array.shape.count))
                for d in array.shape { integer(UInt64(d)) }
                integer(UInt64(array.values.count))
                array.values.withUnsafeBytes { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    static func encode(_ error: WeightFileError) -> Data {
        Data([1]) + ((try? JSONEncoder().encode(error)) ?? Data())
    }

    /// Nil when the bytes are not a complete answer.
    static func decode(_ data: Data) -> Result<(weights: KerasWeightSet, format: KerasWeightFileFormat), WeightFileError>? {
        guard let tag = data.first else { return nil }
        if tag == 1 { return (try? JSONDecoder().decode(WeightFileError.self, from: data.dropFirst())).map { .failure($0) } }
        guard tag == 0 else { return nil }
        var offset = data.startIndex + 1
        func integer() -> UInt64? {
            guard data.endIndex - offset >= 8 else { return nil }
            var v: UInt64 = 0
            withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: data[offset..<offset + 8]) }
            offset += 8
            return UInt64(littleEndian: v)
        }
        // A count read from the bytes, at most `bound`.
        func count(_ bound: Int) -> Int? { integer().flatMap { $0 <= UInt64(bound) ? Int($0) : nil } }
        // A count of items of `size` bytes that must still fit in the bytes left after it.
        func fitting(_ size: Int) -> Int? {
            guard let n = integer() else { return nil }
            return n <= UInt64((data.endIndex - offset) / size) ? Int(n) : nil
        }
        func string() -> String? {
            guard let n = fitting(1) else { return nil }
            defer { offset += n }
            return String(decoding: data[offset..<offset + n], as: UTF8.self)
        }
        guard let formatName = string(), let format = KerasWeightFileFormat(rawValue: formatName), let source = string(),
              let layerCount = count(data.count) else { return nil }
        var layers: [KerasLayerWeights] = []
        for _ in 0..<layerCount {
            guard let name = string(), let pathCount = count(data.count) else { return nil }
            var modelPath: [String] = []
            for _ in 0..<pathCount { guard let p = string() else { return nil }; modelPath.append(p) }
            guard let arrayCount = count(data.count) else { return nil }
            var arrays: [WeightArray] = []
            for _ in 0..<arrayCount {
                guard let arrayName = string(), let rank = count(64) else { return nil }
                var shape: [Int] = []
                for _ in 0..<rank { guard let d = count(Int(Int32.max)) else { return nil }; shape.append(d) }
                var product = 1
                for d in shape {
                    let (p, overflow) = product.multipliedReportingOverflow(by: d)
                    guard !overflow else { return nil }
                    product = p
                }
                guard let n = fitting(4), product == n else { return nil }
                var values = [Float](repeating: 0, count: n)
                values.withUnsafeMutableBytes { $0.copyBytes(from: data[offset..<offset + n * 4]) }
                offset += n * 4
                arrays.append(WeightArray(name: arrayName, shape: shape, values: values))
            }
            layers.append(KerasLayerWeights(name: name, modelPath: modelPath, arrays: arrays))
        }
        guard offset == data.endIndex else { return nil }
        return .success((KerasWeightSet(source: source, layers: layers), format))
    }
}

extension KerasWeightFile {
    /// Decodes bytes as the reader child's answer (for the fuzzing target): nil when they are
    /// not a complete answer.
    public static func decodePayloadForFuzzing(_ data: Data) -> Bool? {
        WeightPayload.decode(data).map { if case .success = $0 { true } else { false } }
    }
}
