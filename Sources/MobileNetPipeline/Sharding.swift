import Foundation
import MobileNetIO

/// Why a `--shard I/N` value was refused.
public enum ShardError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// Not two decimal numbers separated by `/`, with `0 <= I < N <= Shard.maximumCount`.
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let text):
            "a shard is I/N with decimal digits only, 0 <= I < N and N at most \(Shard.maximumCount) (such as 0/3), got '\(text)'"
        }
    }

    public var errorDescription: String? { description }
}

/// One of `count` disjoint parts of a list of paths, for independent workers that together
/// cover every file exactly once (Kubernetes Indexed Jobs, Slurm job arrays, Spark partitions).
///
/// The partition is a stable hash of each path: shard `i` of `n` holds exactly the paths whose
/// 64-bit FNV-1a hash (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`, the published
/// parameters of Fowler, Noll and Vo) of the path's bytes — the UTF-8 bytes exactly as written in
/// the list, without the line break — taken modulo `n` equals `i`. The assignment depends only on
/// the path and `n`: the same on every machine, run, architecture and input order, and a path
/// listed twice goes to the same shard twice. Paths spelled differently (`./a.jpg` and `a.jpg`)
/// are different paths.
public struct Shard: Sendable, Hashable, CustomStringConvertible {
    /// This shard's number, `0 ..< count`.
    public let index: Int
    /// How many shards the list is cut into (1 ... ``maximumCount``).
    public let count: Int

    /// The most shards a list may be cut into.
    public static let maximumCount = 1_000_000

    /// The whole list (shard 0 of 1).
    public static let all = Shard(uncheckedIndex: 0, count: 1)

    private init(uncheckedIndex: Int, count: Int) {
        self.index = uncheckedIndex
        self.count = count
    }

    /// Shard `index` of `count`.
    ///
    /// - Throws: ``ShardError/invalid(_:)`` unless `0 <= index < count <= maximumCount`.
    public init(index: Int, count: Int) throws(ShardError) {
        guard count >= 1, count <= Self.maximumCount, index >= 0, index < count else { throw .invalid("\(index)/\(count)") }
        self.init(uncheckedIndex: index, count: count)
    }

    /// Parses `I/N`: ASCII decimal digits only on both sides (no sign, space or other
    /// characters; leading zeros allowed, at most 7 digits each).
    ///
    /// - Throws: ``ShardError/invalid(_:)`` for anything else or numbers out of range.
    public init(parsing text: String) throws(ShardError) {
        let parts = text.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        func number(_ part: Substring.UTF8View.SubSequence) -> Int? {
            guard !part.isEmpty, part.count <= 7, part.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
            return part.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        }
        guard parts.count == 2, let i = number(parts[0]), let n = number(parts[1]) else { throw .invalid(text) }
        do {
            try self.init(index: i, count: n)
        } catch {
            throw .invalid(text)
        }
    }

    /// `I/N`.
    public var description: String { "\(index)/\(count)" }

    /// The FNV-1a offset basis (64-bit).
    public static let fnvOffsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    /// The FNV-1a prime (64-bit).
    public static let fnvPrime: UInt64 = 0x0000_0100_0000_01b3

    /// The 64-bit FNV-1a hash of `bytes`, continuing from `hash` (so a long line can be hashed
    /// piece by piece).
    public static func fnv1a64<Bytes: Sequence>(_ bytes: Bytes, continuing hash: UInt64 = fnvOffsetBasis) -> UInt64 where Bytes.Element == UInt8 {
        var h = hash
        for byte in bytes {
            h ^= UInt64(byte)
            h = h &* fnvPrime
        }
        return h
    }

    /// The shard number (`0 ..< count`) of a path, from its UTF-8 bytes.
    public static func assignment(of path: String, count: Int) -> Int {
        assignment(ofHash: fnv1a64(path.utf8), count: count)
    }

    /// The shard number of a path whose FNV-1a hash is `hash`.
    public static func assignment(ofHash hash: UInt64, count: Int) -> Int {
        Int(hash % UInt64(max(1, count)))
    }

    /// Whether `path` (its UTF-8 bytes) belongs to this shard.
    public func contains(_ path: String) -> Bool {
        Self.assignment(of: path, count: count) == index
    }

    /// Whether a path whose FNV-1a hash is `hash` belongs to this shard.
    public func contains(hash: UInt64) -> Bool {
        Self.assignment(ofHash: hash, count: count) == index
    }
}

/// Why a line of a path list cannot be used.
public enum PathListProblem: Sendable, Hashable, CustomStringConvertible {
    /// The line is longer than ``PathListReader/maximumLineBytes`` (it was skipped without being held).
    case tooLong(bytes: Int)
    /// The line is not valid UTF-8; `escaped` shows its first bytes (``ImageFileProblem/escaped(_:)``).
    case notUTF8(escaped: String)
    /// The line holds a NUL byte, which no path can hold.
    case nulByte

    public var description: String {
        switch self {
        case .tooLong(let bytes): "a line of \(bytes) bytes, longer than any path (\(PathListReader.maximumLineBytes) bytes at most)"
        case .notUTF8(let escaped): "a line that is not valid UTF-8 (\(escaped))"
        case .nulByte: "a line holding a NUL byte"
        }
    }
}

/// One non-empty line of a path list.
public struct PathListLine: Sendable, Hashable {
    /// 1-based line number in the list.
    public var number: Int
    /// The 64-bit FNV-1a hash of the line's bytes (without `\n` and a `\r` before it), computed
    /// also for lines that are too long or not UTF-8, so a bad line belongs to exactly one
    /// ``Shard`` and is reported once across all shards.
    public var hash: UInt64
    /// The path, or why the line is not one.
    public var path: Result<String, PathListError>

    /// A line.
    public init(number: Int, hash: UInt64, path: Result<String, PathListError>) {
        self.number = number
        self.hash = hash
        self.path = path
    }
}

/// Errors of a path list (`--files-from`).
public enum PathListError: Error, Sendable, Hashable, CustomStringConvertible, LocalizedError {
    /// The list cannot be opened or read.
    case unreadable(list: String, message: String)
    /// One line cannot be used (the others can).
    case badLine(list: String, line: Int, problem: PathListProblem)

    public var description: String {
        switch self {
        case .unreadable(let list, let message): "\(list): cannot read the file list (\(message))"
        case .badLine(let list, let line, let problem): "\(list), line \(line): \(problem); skipped"
        }
    }

    public var errorDescription: String? { description }
}

/// Reads a list of paths, one per line, as a stream: memory stays bounded (one 64 KiB buffer
/// plus the current line, itself at most ``maximumLineBytes``) however long the list is, so a
/// 10 GB list can be piped through. `\n` ends a line and a `\r` before it is dropped (CRLF
/// lists); empty lines are skipped; a last line without `\n` counts; a UTF-8 byte-order mark at
/// the start is skipped. Paths are taken
/// byte-for-byte (no trimming of spaces, which file names may hold). Hostile lines — too long,
/// not UTF-8, holding NUL — are delivered as ``PathListError/badLine(list:line:problem:)``
/// values, never thrown, so one bad line never stops the list.
///
/// Not thread-safe: call ``next()`` from one thread.
public final class PathListReader {
    /// The longest line accepted as a path: 4096 bytes, Linux's `PATH_MAX`.
    public static let maximumLineBytes = 4096

    /// The list's name in messages (`standard input` for `-`).
    public let name: String
    private let descriptor: Int32
    private let ownsDescriptor: Bool
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0
    private var end = 0
    private var atEnd = false
    private var lineNumber = 0
    private var checkedByteOrderMark = false

    /// Reads from an open file descriptor (not closed by the reader unless `closeWhenDone`).
    public init(fileDescriptor: Int32, name: String, closeWhenDone: Bool = false) {
        self.descriptor = fileDescriptor
        self.name = name
        self.ownsDescriptor = closeWhenDone
    }

    /// Opens the list at `path`; `-` is standard input.
    ///
    /// - Throws: ``PathListError/unreadable(list:message:)`` when it cannot be opened or is a directory.
    public convenience init(path: String) throws(PathListError) {
        if path == "-" {
            self.init(fileDescriptor: STDIN_FILENO, name: "standard input")
            return
        }
        if FileKind(path: path) == .directory { throw .unreadable(list: path, message: "a directory, not a list of paths") }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .unreadable(list: path, message: String(cString: strerror(errno))) }
        self.init(fileDescriptor: fd, name: path, closeWhenDone: true)
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    /// Refills the buffer; false at the end of the input.
    private func fill() throws(PathListError) -> Bool {
        if atEnd { return false }
        start = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if n > 0 {
                end = n
                if !checkedByteOrderMark { try skipByteOrderMark() }
                return true
            }
            if n == 0 {
                atEnd = true
                end = 0
                return false
            }
            if errno == EINTR { continue }
            throw .unreadable(list: name, message: String(cString: strerror(errno)))
        }
    }

    /// A UTF-8 byte-order mark at the very start of the list (Windows editors write one) is not
    /// part of the first path: skipped, before the path's shard hash is computed.
    private func skipByteOrderMark() throws(PathListError) {
        checkedByteOrderMark = true
        // A pipe may deliver the first bytes one at a time: gather three before deciding.
        while end < 3 {
            let n = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + end, $0.count - end) }
            if n > 0 { end += n; continue }
            if n == 0 { break }
            if errno == EINTR { continue }
            throw .unreadable(list: name, message: String(cString: strerror(errno)))
        }
        if end >= 3, buffer[0] == 0xEF, buffer[1] == 0xBB, buffer[2] == 0xBF { start = 3 }
    }

    /// The next non-empty line, or nil at the end of the list.
    ///
    /// - Throws: ``PathListError/unreadable(list:message:)`` when reading fails (an I/O error,
    ///   not a bad line).
    public func next() throws(PathListError) -> PathListLine? {
        while true {
            var line: [UInt8] = []
            var length = 0
            var hash = Shard.fnvOffsetBasis
            var sawAny = false
            var pendingCR = false
            // Accumulates bytes up to the next "\n"; a "\r" is held back until we know whether
            // the line ends right after it.
            func take(_ bytes: ArraySlice<UInt8>) {
                for byte in bytes {
                    if pendingCR {
                        append(UInt8(ascii: "\r"))
                        pendingCR = false
                    }
                    if byte == UInt8(ascii: "\r") { pendingCR = true } else { append(byte) }
                }
            }
            func append(_ byte: UInt8) {
                hash = (hash ^ UInt64(byte)) &* Shard.fnvPrime
                length += 1
                if length <= Self.maximumLineBytes { line.append(byte) }
            }
            var ended = false
            while !ended {
                if start >= end {
                    guard try fill() else { break }
                }
                sawAny = true
                let newline = buffer[start..<end].firstIndex(of: UInt8(ascii: "\n"))
                take(buffer[start..<(newline ?? end)])
                if let newline {
                    start = newline + 1
                    ended = true
                } else {
                    start = end
                }
            }
            // A "\r" at the end of the input without "\n" is dropped too (a CRLF list cut short).
            guard sawAny || ended else { return nil }
            lineNumber += 1
            if length == 0 {
                if !ended && atEnd { return nil }
                continue
            }
            let result: Result<String, PathListError>
            if length > Self.maximumLineBytes {
                result = .failure(.badLine(list: name, line: lineNumber, problem: .tooLong(bytes: length)))
            } else if line.contains(0) {
                result = .failure(.badLine(list: name, line: lineNumber, problem: .nulByte))
            } else if let text = String(validating: line, as: UTF8.self) {
                result = .success(text)
            } else {
                result = .failure(.badLine(list: name, line: lineNumber, problem: .notUTF8(escaped: ImageFileProblem.escaped(Array(line.prefix(200))))))
            }
            return PathListLine(number: lineNumber, hash: hash, path: result)
        }
    }

    /// Reads the rest of the list, keeping the lines of `shard`: the paths in list order and
    /// the bad lines (also only those of `shard`).
    ///
    /// - Throws: ``PathListError/unreadable(list:message:)``.
    public func readAll(shard: Shard = .all) throws(PathListError) -> (paths: [String], problems: [PathListError]) {
        var paths: [String] = []
        var problems: [PathListError] = []
        while let line = try next() {
            guard shard.contains(hash: line.hash) else { continue }
            switch line.path {
            case .success(let path): paths.append(path)
            case .failure(let problem): problems.append(problem)
            }
        }
        return (paths, problems)
    }
}
