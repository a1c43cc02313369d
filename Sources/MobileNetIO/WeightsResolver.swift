import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import MobileNetModel

/// The official Keras Applications weight file for one MobileNetV2 configuration: its name,
/// where Keras publishes it and where this package caches it.
public struct OfficialWeightsFile: Sendable, Hashable, CustomStringConvertible {
    /// The file name exactly as Keras builds it, e.g.
    /// `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5`.
    public var fileName: String
    /// The download address: the base URL followed by ``fileName``.
    public var url: URL
    /// The folder this package caches weight files in (created when downloading).
    public var cacheDirectory: URL

    /// Creates the description of an official file.
    ///
    /// - Parameters:
    ///   - fileName: the Keras file name.
    ///   - url: where to download it from.
    ///   - cacheDirectory: the folder it is cached in.
    public init(fileName: String, url: URL, cacheDirectory: URL) {
        self.fileName = fileName
        self.url = url
        self.cacheDirectory = cacheDirectory
    }

    /// Where the file lives once cached: ``cacheDirectory`` followed by ``fileName``.
    public var cachedPath: URL { cacheDirectory.appendingPathComponent(fileName) }

    /// What a user must do to provide the file by hand: download it from ``url`` into
    /// ``cacheDirectory``, or pass its path with `--weights PATH` or `MOBILENET_WEIGHTS`.
    public var instructions: String {
        "Download \(url.absoluteString) and put it in \(cacheDirectory.path)/ (keeping the name \(fileName)), "
            + "or give the path of a weight file with --weights PATH or the MOBILENET_WEIGHTS environment variable."
    }

    /// The file name followed by its URL in parentheses.
    public var description: String { "\(fileName) (\(url.absoluteString))" }
}

/// Why no weight file could be found or downloaded. Every case names the file; ``description``
/// is the sentence shown to users and, for the official files, says where to get the file and
/// the exact folder to put it in.
public enum WeightsResolutionError: Error, Equatable, CustomStringConvertible {
    /// The path given explicitly by the caller (the CLI's `--weights`) is not a file.
    case explicitFileNotFound(path: String)
    /// The weight file given explicitly is not a regular file (a directory, FIFO, device).
    case explicitFileUnusable(path: String, reason: String)
    /// The path in an environment variable (`MOBILENET_WEIGHTS`) is not a file.
    case environmentFileNotFound(variable: String, path: String)
    /// Keras publishes no ImageNet weights for this width multiplier and input size, so
    /// nothing can be downloaded: a file must be given explicitly.
    case noOfficialWeights(alpha: Double, inputSize: Int, includeTop: Bool)
    /// The file is in neither cache folder and downloading is turned off.
    case downloadDisabled(file: OfficialWeightsFile, searched: [String])
    /// The download did not succeed: an HTTP status other than 200 (`httpStatus` set) or a
    /// network error (the text of the error in `reason`).
    case downloadFailed(file: OfficialWeightsFile, httpStatus: Int?, reason: String)
    /// The server announced `expectedBytes` (`Content-Length`) but `receivedBytes` arrived:
    /// the transfer was cut short.
    case sizeMismatch(file: OfficialWeightsFile, expectedBytes: Int64, receivedBytes: Int64)
    /// The downloaded bytes are not a readable Keras HDF5 weight file.
    case invalidDownload(file: OfficialWeightsFile, reason: String)
    /// The cache folder cannot be created or written.
    case cacheUnwritable(file: OfficialWeightsFile, reason: String)

    /// One or more sentences for users: what is wrong and, for the official files, the URL to
    /// get the file from and the exact folder to put it in (or `--weights PATH` /
    /// `MOBILENET_WEIGHTS`).
    public var description: String {
        switch self {
        case .explicitFileUnusable(let path, let reason):
            return "\(path): not a weight file: \(reason). Give the path of a .h5, .weights.h5 or .keras file"
        case .explicitFileNotFound(let path):
            return "\(path): no such weight file (given with --weights). Give the path of an existing .h5, .weights.h5 or .keras file, "
                + "or leave the option out to use the official Keras weights."
        case .environmentFileNotFound(let variable, let path):
            return "\(path): no such weight file (given by the \(variable) environment variable). Point \(variable) at an existing "
                + ".h5, .weights.h5 or .keras file, or unset it to use the official Keras weights."
        case .noOfficialWeights(let alpha, let inputSize, let includeTop):
            let alphas = MobileNetV2Configuration.officialAlphas.map(formatAlpha).joined(separator: ", ")
            let sizes = MobileNetV2Configuration.officialInputSizes.map(String.init).joined(separator: ", ")
            var text = "Keras publishes no MobileNetV2 ImageNet weights for alpha \(formatAlpha(alpha)) at \(inputSize)x\(inputSize)"
                + " (\(includeTop ? "with" : "without") the top): official files exist for alpha \(alphas) and square input sizes \(sizes)."
            if !includeTop, MobileNetV2Configuration.officialAlphas.contains(alpha) {
                text += " Without the top the weights do not depend on the input size; Keras itself loads the 224 file in this case."
            }
            return text + " Give a weight file explicitly with --weights PATH or the MOBILENET_WEIGHTS environment variable."
        case .downloadDisabled(let file, let searched):
            return "\(file.fileName) was not found (looked in \(searched.joined(separator: ", "))) and downloading is turned off. "
                + file.instructions
        case .downloadFailed(let file, _, let reason):
            return "cannot download \(file.fileName) from \(file.url.absoluteString): \(reason). " + file.instructions
        case .sizeMismatch(let file, let expected, let received):
            return "the download of \(file.fileName) from \(file.url.absoluteString) was cut short: the server announced \(expected) bytes "
                + "but \(received) arrived; nothing was kept. " + file.instructions
        case .invalidDownload(let file, let reason):
            return "the file downloaded from \(file.url.absoluteString) is not a valid Keras weight file (\(reason)); nothing was kept. "
                + file.instructions
        case .cacheUnwritable(let file, let reason):
            return "cannot write \(file.fileName) into the cache folder \(file.cacheDirectory.path): \(reason). Set MOBILENET_CACHE_DIR "
                + "to a writable folder, or download \(file.url.absoluteString) yourself and give its path with --weights PATH "
                + "or the MOBILENET_WEIGHTS environment variable."
        }
    }
}

/// Finds the Keras weight file for a MobileNetV2 configuration, downloading the official file
/// when needed. Looks, in order, at:
///
/// 1. an explicit path from the caller (the CLI's `--weights`);
/// 2. the `MOBILENET_WEIGHTS` environment variable (a file path);
/// 3. this package's cache folder (``cacheDirectory``: `$MOBILENET_CACHE_DIR`, else
///    `$XDG_CACHE_HOME/swift-mobilenet`, else `~/.cache/swift-mobilenet`), then Keras's own
///    cache (``kerasCacheDirectory``: `$KERAS_HOME/models`, else `~/.keras/models`, read only),
///    so files Keras already downloaded are reused;
/// 4. a download of the official Keras Applications file into the cache folder, from
///    `$MOBILENET_WEIGHTS_BASE_URL` or ``defaultBaseURL``.
///
/// A download is streamed to a temporary file in the cache folder, checked (HTTP status 200,
/// byte count equal to `Content-Length`, HDF5 signature, readable by
/// ``KerasWeightFile/read(contentsOf:)``) and only then renamed into place, so the cache never
/// holds a partial or invalid file and a failed download never replaces a cached file. The
/// resolver prints nothing; progress is reported through a callback.
public struct WeightsResolver: Sendable {
    /// Reports download progress: bytes received so far and the total announced by the server
    /// (`nil` when it sends no `Content-Length`). Called on a URLSession queue, never
    /// concurrently with itself.
    public typealias Progress = @Sendable (_ bytesReceived: Int64, _ bytesExpected: Int64?) -> Void

    /// Where Keras publishes the MobileNetV2 weights (the `BASE_WEIGHT_PATH` of
    /// `keras.applications.mobilenet_v2`).
    public static let defaultBaseURL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    /// The environment variable holding a weight file path.
    public static let weightsVariable = "MOBILENET_WEIGHTS"
    /// The environment variable overriding the cache folder.
    public static let cacheDirectoryVariable = "MOBILENET_CACHE_DIR"
    /// The environment variable overriding the download base URL (a trailing `/` is added if missing).
    public static let baseURLVariable = "MOBILENET_WEIGHTS_BASE_URL"

    /// The environment the resolver reads its variables from.
    public let environment: [String: String]
    /// The home directory used for `~/.cache`, `~/.keras` and a leading `~/` in paths.
    public let homeDirectory: URL
    /// Whether step 4 (the download) may run; when false a missing file is
    /// ``WeightsResolutionError/downloadDisabled(file:searched:)``.
    public let allowDownload: Bool
    /// Seconds without any data after which a download fails; `nil` uses URLSession's
    /// default (60 s).
    public let timeout: TimeInterval?

    /// Creates a resolver.
    ///
    /// - Parameters:
    ///   - environment: the variables to read (`MOBILENET_WEIGHTS`, `MOBILENET_CACHE_DIR`,
    ///     `XDG_CACHE_HOME`, `KERAS_HOME`, `MOBILENET_WEIGHTS_BASE_URL`, `HOME`); the process
    ///     environment by default. Empty values count as unset.
    ///   - homeDirectory: the home directory; by default `$HOME` from `environment`, else the
    ///     current user's home.
    ///   - allowDownload: whether a missing file may be downloaded.
    ///   - timeout: idle timeout of a download in seconds; `nil` for URLSession's default.
    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        homeDirectory: URL? = nil,
        allowDownload: Bool = true,
        timeout: TimeInterval? = nil
    ) {
        self.environment = environment
        if let homeDirectory {
            self.homeDirectory = homeDirectory
        } else if let home = environment["HOME"], !home.isEmpty {
            self.homeDirectory = URL(fileURLWithPath: home, isDirectory: true)
        } else {
            self.homeDirectory = FileManager.default.homeDirectoryForCurrentUser
        }
        self.allowDownload = allowDownload
        self.timeout = timeout
    }

    // MARK: Names and places

    /// The official file name exactly as Keras builds it:
    /// `"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_" + str(float(alpha)) + "_" + str(rows) + ".h5"`,
    /// with `_no_top` before `.h5` without the top.
    ///
    /// - Parameters:
    ///   - alpha: the width multiplier (formatted like Python's `str(float(alpha))`, e.g. `0.5`, `1.0`).
    ///   - inputSize: the input rows (and columns) in pixels.
    ///   - includeTop: whether the file holds the classifier.
    /// - Returns: e.g. `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5`.
    public static func officialFileName(alpha: Double, inputSize: Int, includeTop: Bool) -> String {
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_\(formatAlpha(alpha))_\(inputSize)\(includeTop ? "" : "_no_top").h5"
    }

    /// Whether Keras publishes ImageNet weights for this alpha and square input size
    /// (``/MobileNetModel/MobileNetV2Configuration/officialAlphas`` and ``/MobileNetModel/MobileNetV2Configuration/officialInputSizes``).
    public static func hasOfficialWeights(alpha: Double, inputSize: Int) -> Bool {
        MobileNetV2Configuration.officialAlphas.contains(alpha) && MobileNetV2Configuration.officialInputSizes.contains(inputSize)
    }

    /// This package's cache folder: `$MOBILENET_CACHE_DIR` (relative paths against the current
    /// directory), else `$XDG_CACHE_HOME/swift-mobilenet` (when absolute, as the XDG
    /// specification requires), else `~/.cache/swift-mobilenet`.
    public var cacheDirectory: URL {
        if let custom = variable(Self.cacheDirectoryVariable) {
            return fileURL(custom, isDirectory: true)
        }
        if let xdg = variable("XDG_CACHE_HOME"), xdg.hasPrefix("/") {
            return URL(fileURLWithPath: xdg, isDirectory: true).appendingPathComponent("swift-mobilenet", isDirectory: true)
        }
        return homeDirectory.appendingPathComponent(".cache/swift-mobilenet", isDirectory: true)
    }

    /// Keras's own download folder, read but never written: `$KERAS_HOME/models`, else
    /// `~/.keras/models` (where `keras.utils.get_file` puts the application weights).
    public var kerasCacheDirectory: URL {
        let base = variable("KERAS_HOME").map { fileURL($0, isDirectory: true) }
            ?? homeDirectory.appendingPathComponent(".keras", isDirectory: true)
        return base.appendingPathComponent("models", isDirectory: true)
    }

    /// The download base URL: `$MOBILENET_WEIGHTS_BASE_URL` or ``defaultBaseURL``, ending in `/`.
    public var baseURL: String {
        let base = variable(Self.baseURLVariable) ?? Self.defaultBaseURL
        return base.hasSuffix("/") ? base : base + "/"
    }

    /// The official file for a configuration, whether or not Keras publishes it (see
    /// ``hasOfficialWeights(alpha:inputSize:)``).
    ///
    /// - Parameters:
    ///   - alpha: the width multiplier.
    ///   - inputSize: the square input size in pixels.
    ///   - includeTop: whether the file holds the classifier.
    public func officialFile(alpha: Double, inputSize: Int, includeTop: Bool) -> OfficialWeightsFile {
        let name = Self.officialFileName(alpha: alpha, inputSize: inputSize, includeTop: includeTop)
        let url = URL(string: baseURL + name) ?? URL(fileURLWithPath: "/invalid-base-url/" + name)
        return OfficialWeightsFile(fileName: name, url: url, cacheDirectory: cacheDirectory)
    }

    /// The cached files looked at in step 3, in order: this package's cache, then Keras's.
    /// The files need not exist.
    ///
    /// - Parameters:
    ///   - alpha: the width multiplier.
    ///   - inputSize: the square input size in pixels.
    ///   - includeTop: whether the file holds the classifier.
    public func cacheCandidates(alpha: Double, inputSize: Int, includeTop: Bool) -> [URL] {
        let name = Self.officialFileName(alpha: alpha, inputSize: inputSize, includeTop: includeTop)
        return [cacheDirectory.appendingPathComponent(name), kerasCacheDirectory.appendingPathComponent(name)]
    }

    // MARK: Resolution

    /// Finds the weight file: the explicit path, else `MOBILENET_WEIGHTS`, else a cached
    /// official file, else a download (see the type's documentation). A cached file is used
    /// when it is a non-empty regular file starting with the HDF5 signature; one that is not
    /// is skipped (and a download replaces it in this package's cache).
    ///
    /// - Parameters:
    ///   - alpha: the width multiplier.
    ///   - inputSize: the square input size in pixels. Keras publishes files for
    ///     ``/MobileNetModel/MobileNetV2Configuration/officialInputSizes`` only; without the top, Keras itself
    ///     loads the 224 file for other sizes, which a caller can do by passing 224.
    ///   - includeTop: whether the classifier is needed (`..._no_top.h5` otherwise).
    ///   - explicitPath: a file given by the user; it must exist. A leading `~/` means the
    ///     home directory; relative paths are against the current directory.
    ///   - progress: called as download bytes arrive.
    /// - Returns: the absolute file URL of the weight file.
    /// - Throws: ``WeightsResolutionError``: a missing explicit or environment file, no
    ///   official weights for the configuration, downloading turned off, or a failed download.
    public func resolve(
        alpha: Double, inputSize: Int, includeTop: Bool, explicitPath: String? = nil, progress: Progress? = nil
    ) async throws(WeightsResolutionError) -> URL {
        if let explicitPath {
            let url = fileURL(explicitPath, isDirectory: false)
            switch FileKind(path: url.path) {
            case .missing: throw .explicitFileNotFound(path: url.path)
            case .regular: break
            case let other: throw .explicitFileUnusable(path: url.path, reason: other.description)
            }
            return url
        }
        if let path = variable(Self.weightsVariable) {
            let url = fileURL(path, isDirectory: false)
            guard isRegularFile(url) else { throw .environmentFileNotFound(variable: Self.weightsVariable, path: url.path) }
            return url
        }
        let candidates = cacheCandidates(alpha: alpha, inputSize: inputSize, includeTop: includeTop)
        if let cached = candidates.first(where: looksLikeHDF5) { return cached }
        guard Self.hasOfficialWeights(alpha: alpha, inputSize: inputSize) else {
            throw .noOfficialWeights(alpha: alpha, inputSize: inputSize, includeTop: includeTop)
        }
        guard allowDownload else {
            throw .downloadDisabled(
                file: officialFile(alpha: alpha, inputSize: inputSize, includeTop: includeTop),
                searched: candidates.map { $0.deletingLastPathComponent().path })
        }
        return try await download(alpha: alpha, inputSize: inputSize, includeTop: includeTop, progress: progress)
    }

    /// The input size whose official file holds the weights for a `height` x `width` model.
    /// The weights do not depend on the input size: a square official size has its own file,
    /// any other size (non-square, odd, 300...) uses the 224 file, as Keras does when it builds
    /// a model of another size.
    public static func weightFileInputSize(height: Int, width: Int) -> Int {
        height == width && MobileNetV2Configuration.officialInputSizes.contains(height) ? height : 224
    }

    /// Finds the weight file for a `height` x `width` model: ``resolve(alpha:inputSize:includeTop:explicitPath:progress:)``
    /// with the size ``weightFileInputSize(height:width:)`` chooses.
    ///
    /// - Throws: ``WeightsResolutionError`` as the other `resolve`.
    public func resolve(
        alpha: Double, inputHeight: Int, inputWidth: Int, includeTop: Bool, explicitPath: String? = nil, progress: Progress? = nil
    ) async throws(WeightsResolutionError) -> URL {
        try await resolve(alpha: alpha, inputSize: Self.weightFileInputSize(height: inputHeight, width: inputWidth),
                          includeTop: includeTop, explicitPath: explicitPath, progress: progress)
    }

    /// Downloads the official file into the cache folder, even if it is already cached: the
    /// bytes go to a temporary file in the cache folder (created with its parents), which is
    /// checked and then renamed over ``OfficialWeightsFile/cachedPath``. On any failure the
    /// temporary file is deleted and an existing cached file is left untouched.
    ///
    /// - Parameters:
    ///   - alpha: the width multiplier, one of ``/MobileNetModel/MobileNetV2Configuration/officialAlphas``.
    ///   - inputSize: the square input size, one of ``/MobileNetModel/MobileNetV2Configuration/officialInputSizes``.
    ///   - includeTop: whether to get the file with the classifier.
    ///   - progress: called as bytes arrive.
    /// - Returns: the cached file.
    /// - Throws: ``WeightsResolutionError``: `noOfficialWeights`, `downloadDisabled` (when
    ///   ``allowDownload`` is false), `cacheUnwritable`, `downloadFailed` (HTTP status other
    ///   than 200, network error, timeout), `sizeMismatch` (fewer or more bytes than the
    ///   `Content-Length`) or `invalidDownload` (not a readable Keras HDF5 file).
    @discardableResult
    public func download(
        alpha: Double, inputSize: Int, includeTop: Bool, progress: Progress? = nil
    ) async throws(WeightsResolutionError) -> URL {
        guard Self.hasOfficialWeights(alpha: alpha, inputSize: inputSize) else {
            throw .noOfficialWeights(alpha: alpha, inputSize: inputSize, includeTop: includeTop)
        }
        let file = officialFile(alpha: alpha, inputSize: inputSize, includeTop: includeTop)
        guard allowDownload else {
            throw .downloadDisabled(file: file, searched: [file.cacheDirectory.path, kerasCacheDirectory.path])
        }
        let fileManager = FileManager.default
        let temporary = file.cacheDirectory.appendingPathComponent(".\(file.fileName).\(UUID().uuidString).part")
        let handle: FileHandle
        do {
            try fileManager.createDirectory(at: file.cacheDirectory, withIntermediateDirectories: true)
            guard fileManager.createFile(atPath: temporary.path, contents: nil) else {
                throw CocoaError(.fileWriteNoPermission)
            }
            handle = try FileHandle(forWritingTo: temporary)
        } catch {
            try? fileManager.removeItem(at: temporary)
            throw .cacheUnwritable(file: file, reason: error.localizedDescription)
        }
        let outcome = await Self.transfer(from: file.url, into: handle, timeout: timeout, progress: progress)
        try? handle.close()
        do throws(WeightsResolutionError) {
            try Self.check(outcome, file: file, temporary: temporary)
            guard rename(temporary.path, file.cachedPath.path) == 0 else {
                throw .cacheUnwritable(file: file, reason: String(cString: strerror(errno)))
            }
        } catch {
            try? fileManager.removeItem(at: temporary)
            throw error
        }
        return file.cachedPath
    }

    // MARK: Helpers

    private func variable(_ name: String) -> String? {
        guard let value = environment[name], !value.isEmpty else { return nil }
        return value
    }

    /// An absolute file URL for a user path: `~/` is the home directory, relative paths are
    /// against the current directory.
    private func fileURL(_ path: String, isDirectory: Bool) -> URL {
        if path == "~" { return homeDirectory }
        if path.hasPrefix("~/") {
            return homeDirectory.appendingPathComponent(String(path.dropFirst(2)), isDirectory: isDirectory).standardizedFileURL
        }
        return URL(fileURLWithPath: path, isDirectory: isDirectory).standardizedFileURL
    }

    /// A regular file (links followed): a FIFO in the cache would block the signature read.
    private func isRegularFile(_ url: URL) -> Bool {
        if case .regular = FileKind(path: url.path) { return true }
        return false
    }

    private static let hdf5Signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]

    private static func startsWithHDF5Signature(_ url: URL) -> Bool {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return false }
        defer { try? handle.close() }
        guard let header = try? handle.read(upToCount: hdf5Signature.count) else { return false }
        return header.elementsEqual(hdf5Signature)
    }

    private func looksLikeHDF5(_ url: URL) -> Bool {
        isRegularFile(url) && Self.startsWithHDF5Signature(url)
    }

    /// Turns the transfer's outcome into success or the matching error, then checks the bytes.
    private static func check(_ outcome: TransferOutcome, file: OfficialWeightsFile, temporary: URL) throws(WeightsResolutionError) {
        if let writeError = outcome.writeError {
            throw .cacheUnwritable(file: file, reason: writeError)
        }
        if let status = outcome.status, status != 200 {
            throw .downloadFailed(file: file, httpStatus: status,
                                  reason: "HTTP status \(status) (\(HTTPURLResponse.localizedString(forStatusCode: status)))")
        }
        if outcome.status != nil, let expected = outcome.expectedBytes, expected != outcome.receivedBytes {
            throw .sizeMismatch(file: file, expectedBytes: expected, receivedBytes: outcome.receivedBytes)
        }
        if let error = outcome.networkError {
            throw .downloadFailed(file: file, httpStatus: nil, reason: error)
        }
        guard outcome.status != nil else {
            throw .downloadFailed(file: file, httpStatus: nil, reason: "the server sent no HTTP response")
        }
        guard startsWithHDF5Signature(temporary) else {
            throw .invalidDownload(file: file, reason: outcome.receivedBytes == 0 ? "it is empty" : "it does not start with the HDF5 signature")
        }
        do {
            _ = try KerasWeightFile.read(contentsOf: temporary)
        } catch {
            let reason = error.description.replacingOccurrences(of: temporary.path + ": ", with: "")
                .replacingOccurrences(of: temporary.path, with: file.fileName)
            throw .invalidDownload(file: file, reason: reason)
        }
    }

    /// Streams `url` into `handle` with a delegate-based data task; never throws.
    private static func transfer(from url: URL, into handle: FileHandle, timeout: TimeInterval?, progress: Progress?) async -> TransferOutcome {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.urlCache = nil
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        if let timeout { configuration.timeoutIntervalForRequest = timeout }
        var request = URLRequest(url: url)
        request.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        if let timeout { request.timeoutInterval = timeout }
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let delegate = DownloadDelegate(handle: handle, progress: progress)
        let session = URLSession(configuration: configuration, delegate: delegate, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        let task = TaskBox(session.dataTask(with: request))
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                delegate.start(continuation)
                task.task.resume()
            }
        } onCancel: {
            task.task.cancel()
        }
    }
}

/// What a transfer produced.
struct TransferOutcome: Sendable {
    var status: Int?
    var expectedBytes: Int64?
    var receivedBytes: Int64 = 0
    var networkError: String?
    var writeError: String?
}

/// Lets the cancellation handler reach the task.
private final class TaskBox: @unchecked Sendable {
    let task: URLSessionDataTask
    init(_ task: URLSessionDataTask) { self.task = task }
}

/// Receives the response and body of one data task, writing the body to a file. Callbacks
/// come from the session's serial delegate queue; the lock guards against the completion
/// racing with `start`.
private final class DownloadDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    private let lock = NSLock()
    private let handle: FileHandle
    private let progress: WeightsResolver.Progress?
    private var outcome = TransferOutcome()
    private var sawResponse = false
    private var continuation: CheckedContinuation<TransferOutcome, Never>?
    private var finished = false

    init(handle: FileHandle, progress: WeightsResolver.Progress?) {
        self.handle = handle
        self.progress = progress
    }

    func start(_ continuation: CheckedContinuation<TransferOutcome, Never>) {
        lock.lock()
        if finished {
            let outcome = self.outcome
            lock.unlock()
            continuation.resume(returning: outcome)
        } else {
            self.continuation = continuation
            lock.unlock()
        }
    }

    /// Records status and announced length; returns whether the body should be received.
    private func record(_ response: URLResponse?) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if sawResponse { return outcome.status == 200 }
        sawResponse = true
        guard let http = response as? HTTPURLResponse else { return false }
        outcome.status = http.statusCode
        let encoding = (http.value(forHTTPHeaderField: "Content-Encoding") ?? "identity").lowercased()
        // A Content-Length counts encoded bytes; the check only makes sense for identity.
        if http.expectedContentLength >= 0, encoding == "identity" {
            outcome.expectedBytes = http.expectedContentLength
        }
        return http.statusCode == 200
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void
    ) {
        let proceed = record(response)
        if proceed { progress?(0, currentExpected()) }
        completionHandler(proceed ? .allow : .cancel)
    }

    private func currentExpected() -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        return outcome.expectedBytes
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard record(dataTask.response) else {
            dataTask.cancel()
            return
        }
        lock.lock()
        if outcome.writeError != nil {
            lock.unlock()
            return
        }
        do {
            try handle.write(contentsOf: data)
        } catch {
            outcome.writeError = error.localizedDescription
            lock.unlock()
            dataTask.cancel()
            return
        }
        outcome.receivedBytes += Int64(data.count)
        let received = outcome.receivedBytes
        let expected = outcome.expectedBytes
        lock.unlock()
        progress?(received, expected)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        lock.lock()
        if !sawResponse, let http = task.response as? HTTPURLResponse {
            sawResponse = true
            outcome.status = http.statusCode
        }
        if let error, outcome.networkError == nil {
            outcome.networkError = error.localizedDescription
        }
        finished = true
        let continuation = self.continuation
        self.continuation = nil
        let outcome = self.outcome
        lock.unlock()
        continuation?.resume(returning: outcome)
    }
}

extension WeightsResolutionError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
