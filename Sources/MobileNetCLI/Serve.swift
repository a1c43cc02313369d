import ArgumentParser
import Foundation
import Logging
import MobileNet
import MobileNetServer
import MobileNetServing

/// `mobilenet serve`: the models over HTTP, for TensorFlow Serving REST and KServe v2 clients.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve models over HTTP: TensorFlow Serving REST (/v1/models/NAME:predict) and KServe v2 (/v2/models/NAME/infer).",
        discussion: """
            Each --model NAME=PATH serves a file under NAME; its kind is detected from the \
            contents: a weight file with the top (ImageNet classifier), without it (embedder, \
            1280-d), a `mobilenet train` model file, or a Keras transfer model (.keras/.h5). \
            Without --model, `imagenet` is served from --weights or the default weights. Weight \
            files use --input-size and the image options; model files keep their own. Each \
            --index NAME=DB serves an image index for POST /v1/similar; its backbone's weights \
            are found among the --model files, else as `mobilenet similar` finds them; --ann \
            NAME=FILE makes that index's queries go through a FAISS file built from it \
            (`mobilenet index build-ann`; nprobe and ef_search query parameters).

            Concurrent requests for a model are run together, up to --max-batch-size images, \
            waiting at most --batch-timeout-ms for a batch to fill; beyond --max-queue waiting \
            images requests get 503 with Retry-After. --batch-size is not used (see \
            --max-batch-size). SIGTERM or SIGINT stops gracefully. Routes: GET /openapi.json.
            """
    )

    @Option(name: .customLong("model"), help: ArgumentHelp("A model to serve, NAME=PATH (repeatable).", valueName: "name=path"))
    var models: [String] = []

    @Option(name: .customLong("labels"), help: ArgumentHelp("Class names for a served model, NAME=FILE (one name per line, in output order; repeatable): a .tflite without its label file, or names for a Keras model.", valueName: "name=file"))
    var labels: [String] = []

    @Option(name: .customLong("index"), help: ArgumentHelp("An image index for POST /v1/similar, NAME=DB (repeatable; built with mobilenet index add and the same image options).", valueName: "name=db"))
    var indexes: [String] = []

    @Option(name: .customLong("ann"), help: ArgumentHelp("Approximate search for an --index: NAME=FILE, a FAISS file built from it (mobilenet index build-ann or Python faiss.write_index).", valueName: "name=file"))
    var anns: [String] = []

    @Option(name: .long, help: "The address to listen on (0.0.0.0 for every interface).")
    var host = "127.0.0.1"

    @Option(name: .long, help: "The TCP port (8501 is TensorFlow Serving's REST port).")
    var port = ServerConfiguration.defaultPort

    @Option(name: .customLong("grpc-port"), help: ArgumentHelp("Also serve TensorFlow Serving's gRPC API (PredictionService, ModelService) on this port (8500 is TF Serving's; 0 any free port). Off by default.", valueName: "port"))
    var grpcPort: Int?

    @Option(name: .customLong("model-version-policy"), help: ArgumentHelp("Which version folders of a TF Serving base folder are served, as TF Serving's model_version_policy: all (every one, at most 16; a removed folder is retired), latest (the highest; a new one replaces it), latest:N (the N highest) or specific:V,V,... (those versions, when their folders exist).", valueName: "policy"))
    var versionPolicy = "all"

    @Option(name: .customLong("poll-seconds"), help: ArgumentHelp("How often TF Serving base folders are listed for new and removed version folders (TF Serving's --file_system_poll_wait_seconds); 0 never.", valueName: "s"))
    var pollSeconds: Double = 1

    @Option(name: .long, help: ArgumentHelp("Most connections open at once, HTTP and gRPC together; more are closed as they arrive (default: the file-descriptor limit, raised to its hard limit, less 128).", valueName: "n"))
    var maxConnections: Int?

    @Option(name: .long, help: ArgumentHelp("Most images per network run (TF Serving max_batch_size).", valueName: "n"))
    var maxBatchSize = 8

    @Option(name: .customLong("batch-timeout-ms"), help: ArgumentHelp("How long a request waits for others to fill a batch (TF Serving batch_timeout_micros, in milliseconds).", valueName: "ms"))
    var batchTimeoutMilliseconds = 5.0

    @Option(name: .customLong("max-queue"), help: ArgumentHelp("Most images waiting per model; more get 503 with Retry-After.", valueName: "n"))
    var maxQueue = 128

    @Option(name: .long, help: ArgumentHelp("Largest request body in bytes (more get 413).", valueName: "bytes"))
    var maxBodyBytes = 64 << 20

    @Option(name: .long, help: ArgumentHelp("Most images (instances) in one request.", valueName: "n"))
    var maxImagesPerRequest = 64

    @Option(name: .customLong("request-timeout"), help: ArgumentHelp("Seconds a request may wait in a model's queue before it is dropped with 503 (not run).", valueName: "s"))
    var requestTimeoutSeconds: Double = 30

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Seconds an idle connection is kept open.", valueName: "s"))
    var idleTimeoutSeconds: Double = 60

    @Option(name: .customLong("body-timeout"), help: ArgumentHelp("Seconds a request body may take to arrive before the request gets 408 and the connection closes.", valueName: "s"))
    var bodyTimeoutSeconds: Double = 60

    @Option(name: .customLong("shutdown-timeout"), help: ArgumentHelp("Seconds a graceful shutdown (SIGTERM) may take before open connections are cancelled.", valueName: "s"))
    var shutdownTimeoutSeconds: Double = 25

    @Option(name: .long, help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel = "info"

    @OptionGroup(title: "Model") var model: BackboneOptions

    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup

    @OptionGroup(title: "Image preprocessing") var image: ImageOptions

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        guard !host.isEmpty else { throw ValidationError("--host must not be empty") }
        if let grpcPort {
            guard (0...65535).contains(grpcPort) else { throw ValidationError("--grpc-port must be between 0 and 65535, got \(grpcPort)") }
            guard grpcPort != port || port == 0 else { throw ValidationError("--grpc-port must differ from --port (\(port))") }
        }
        if let maxConnections, !(1...10_000_000).contains(maxConnections) {
            throw ValidationError("--max-connections must be between 1 and 10000000, got \(maxConnections)")
        }
        do { _ = try ModelVersionPolicy(parsing: versionPolicy) } catch { throw ValidationError(error.description) }
        guard pollSeconds.isFinite, pollSeconds == 0 || (0.01...86400).contains(pollSeconds) else {
            throw ValidationError("--poll-seconds must be 0 (never) or between 0.01 and 86400, got \(pollSeconds)")
        }
        guard (1...RuntimeOptionGroup.maximumBatchSize).contains(maxBatchSize) else {
            throw ValidationError("--max-batch-size must be between 1 and \(RuntimeOptionGroup.maximumBatchSize), got \(maxBatchSize)")
        }
        guard batchTimeoutMilliseconds.isFinite, (0...60_000).contains(batchTimeoutMilliseconds) else {
            throw ValidationError("--batch-timeout-ms must be between 0 and 60000, got \(batchTimeoutMilliseconds)")
        }
        guard requestTimeoutSeconds.isFinite, (0.001...3600).contains(requestTimeoutSeconds) else {
            throw ValidationError("--request-timeout must be between 0.001 and 3600 seconds, got \(requestTimeoutSeconds)")
        }
        guard idleTimeoutSeconds.isFinite, (0.1...86400).contains(idleTimeoutSeconds) else {
            throw ValidationError("--idle-timeout must be between 0.1 and 86400 seconds, got \(idleTimeoutSeconds)")
        }
        guard bodyTimeoutSeconds.isFinite, (0.1...86400).contains(bodyTimeoutSeconds) else {
            throw ValidationError("--body-timeout must be between 0.1 and 86400 seconds, got \(bodyTimeoutSeconds)")
        }
        guard shutdownTimeoutSeconds.isFinite, (0.1...3600).contains(shutdownTimeoutSeconds) else {
            throw ValidationError("--shutdown-timeout must be between 0.1 and 3600 seconds, got \(shutdownTimeoutSeconds)")
        }
        guard maxQueue >= 1 else { throw ValidationError("--max-queue must be at least 1, got \(maxQueue)") }
        guard maxBodyBytes >= 1 else { throw ValidationError("--max-body-bytes must be at least 1, got \(maxBodyBytes)") }
        guard (1...4096).contains(maxImagesPerRequest) else { throw ValidationError("--max-images-per-request must be between 1 and 4096, got \(maxImagesPerRequest)") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level must be trace, debug, info, notice, warning, error or critical, got '\(logLevel)'") }
        guard runtime.batchSize == 16 else { throw ValidationError("serve does not use --batch-size; give --max-batch-size") }
        if !models.isEmpty, model.weights != nil {
            throw ValidationError("--weights sets the default imagenet model, which is not served with --model; give it as --model imagenet=\(model.weights ?? "")")
        }
        for text in models {
            do { _ = try ModelSpecification(parsing: text) } catch { throw ValidationError("--model \(errorMessage(error))") }
        }
        var parsedIndexes: [IndexSpecification] = []
        for text in indexes {
            do { parsedIndexes.append(try IndexSpecification(parsing: text)) } catch { throw ValidationError("--index \(errorMessage(error))") }
        }
        do { _ = try IndexSpecification.attachingANN(anns, to: parsedIndexes) } catch { throw ValidationError(errorMessage(error)) }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            return handler
        }
        let logger = Logger(label: "mobilenet.serve")
        let specifications = try models.map { try ModelSpecification(parsing: $0) }
        let indexSpecifications = try IndexSpecification.attachingANN(anns, to: try indexes.map { try IndexSpecification(parsing: $0) })
        let size = model.inputSizeOption == nil ? nil : try model.inputDimensions()
        var loading = ModelLoadingOptions(backend: runtime.inferenceBackend(), inputHeight: size?.height, inputWidth: size?.width,
                                          preprocessing: image.isSet ? image.configuration() : nil, defaultWeightsPath: model.weights,
                                          defaultAlpha: model.alpha, alpha: model.alphaOption)
        loading.versionPolicy = try ModelVersionPolicy(parsing: versionPolicy)  // checked in validate()
        for text in labels {
            // NAME=FILE, as --model NAME=PATH: the name must be a served model's.
            let spec = try ModelSpecification(parsing: text)
            try checkUsage {
                guard specifications.contains(where: { $0.name == spec.name }) else {
                    throw ValidationError("--labels \(text): no model is served as '\(spec.name)' (give --model \(spec.name)=PATH)")
                }
                guard loading.classNames[spec.name] == nil else { throw ValidationError("--labels \(text): '\(spec.name)' has labels already") }
            }
            loading.classNames[spec.name] = try ModelFile.labels(contentsOf: URL(fileURLWithPath: spec.path))
        }
        let configuration = ServerConfiguration(
            host: host, port: port,
            limits: ServingLimits(maxBodyBytes: maxBodyBytes, maxImagePixels: image.maxPixels, maxImagesPerRequest: maxImagesPerRequest),
            batching: BatchingConfiguration(maxBatchSize: maxBatchSize, batchTimeout: .microseconds(Int64(batchTimeoutMilliseconds * 1000)), maxQueuedImages: maxQueue,
                                            requestTimeout: .milliseconds(Int64(requestTimeoutSeconds * 1000))),
            idleTimeout: .milliseconds(Int64(idleTimeoutSeconds * 1000)), shutdownTimeout: .milliseconds(Int64(shutdownTimeoutSeconds * 1000)),
            bodyTimeout: .milliseconds(Int64(bodyTimeoutSeconds * 1000)),
            // The user's own allocator tuning wins over the server's fixed threshold.
            malloc: MallocTuning.tunedByEnvironment() ? nil : .server,
            grpcPort: grpcPort, pollInterval: pollSeconds == 0 ? nil : .milliseconds(Int64(pollSeconds * 1000)), maxConnections: maxConnections)
        do {
            try await MobileNetServer.run(specifications: specifications, indexes: indexSpecifications, loading: loading, configuration: configuration, logger: logger)
        }
    }
}
