// swift-tools-version: 6.1
// swift-mobilenet: MobileNetV2 (arXiv:1801.04381) classification, embeddings and transfer
// learning in Swift, reading the Keras Applications weight files.
import PackageDescription

let package = Package(
    name: "swift-mobilenet",
    products: [
        .library(name: "MobileNet", targets: ["MobileNet"]),
        .executable(name: "mobilenet", targets: ["MobileNetCLI"]),
        .executable(name: "mobilenet-fuzz", targets: ["MobileNetFuzz"]),
        .library(name: "MobileNetServing", targets: ["MobileNetServing"]),
        .library(name: "MobileNetServer", targets: ["MobileNetServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // SavedModel folders: TensorFlow's protocol buffers (generated code committed).
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        // `swift package generate-documentation` (the DocC catalog in Sources/MobileNet/MobileNet.docc).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
        // `mobilenet serve` (MobileNetServer): HTTP, metrics, logging, graceful shutdown.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // The HTTP-types channel parts Hummingbird's pipeline carries (`Expect: 100-continue`).
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.1"),
        // HTTP request and response types (what Hummingbird's routes and the server's errors use).
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        // multipart/form-data uploads to the plain endpoints.
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
        // TensorFlow Serving's gRPC API (PredictionService, ModelService): grpc-swift 2 over
        // SwiftNIO's HTTP/2, messages through swift-protobuf (generated code committed).
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
    ],
    targets: [
        // HDF5 (Debian libhdf5-dev), found through pkg-config.
        .systemLibrary(
            name: "CHDF5",
            path: "Sources/CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        // Process-level concerns in C, linking nothing but libc: the fork lock every BLAS call
        // shares (OpenBLAS is not fork-safe), a child's address-space limit, glibc malloc tuning.
        .target(name: "CMobileNetProcess"),
        // The same in Swift: the BLAS thread pool and the allocator's settings.
        .target(name: "MobileNetProcess", dependencies: ["CMobileNetProcess"]),
        // Thin C shims over HDF5, libjpeg-turbo, libpng, libwebp, giflib and stb_image (BMP):
        // macros and setjmp-based error handling cannot be used from Swift directly.
        .target(
            name: "CMobileNetShims",
            dependencies: ["CHDF5"],
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png16"), .linkedLibrary("webp"), .linkedLibrary("webpdemux"), .linkedLibrary("gif")]
        ),
        // Tensors, the reference kernels and the backend seam. Knows nothing of MobileNetV2.
        .target(name: "MobileNetKernels"),
        // oneDNN 2.x (Debian libdnnl-dev 2.6.3; no pkg-config file): the C API, pinned to 2.x.
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        // TensorFlow Lite's flatbuffer schema (schema/schema.fbs) read through the C++ that flatc
        // generates from it (generated/, committed; scripts/generate-tflite-schema.sh) and its
        // Verifier: Debian's libflatbuffers-dev 2.0.8, header-only.
        .target(name: "CMobileNetTFLite", exclude: ["schema"], cxxSettings: [.headerSearchPath(".")]),
        // `.tflite` models: the checked reader, MobileNetV2 recognised in the graph, and the
        // integer kernels of quantized files (TFLite's requantization, the oracle in plain Swift).
        .target(name: "MobileNetTFLite", dependencies: ["MobileNetKernels", "MobileNetModel", "CMobileNetTFLite", "CXNNPACK", "CZip"]),
        // TensorFlow's and TensorFlow Serving's protocol buffers (SavedModel, tensor bundle,
        // the serving APIs' messages): the Swift swift-protobuf generates from their schema (a
        // descriptor set in schema/), generated once by scripts/generate-tensorflow-protos.sh.
        .target(name: "MobileNetTFProtos", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")], exclude: ["schema"]),
        // SavedModel folders (Keras 3 exports, TF Hub modules, TF Serving's version folders):
        // saved_model.pb through swift-protobuf, the variables' tensor bundle read with every
        // table offset, size and checksum checked.
        .target(name: "MobileNetSavedModel", dependencies: ["MobileNetKernels", "MobileNetModel", "MobileNetTFProtos", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // XNNPACK's quantized operators (Debian libxnnpack-dev 0.0~git20220216 and libpthreadpool-dev;
        // no pkg-config file): the fast integer kernels of quantized .tflite files.
        .systemLibrary(name: "CXNNPACK", path: "Sources/CXNNPACK", providers: [.apt(["libxnnpack-dev", "libpthreadpool-dev"])]),
        // The fast CPU backend on oneDNN behind the `InferenceBackend` seam. Knows nothing of MobileNetV2.
        .target(name: "MobileNetOneDNN", dependencies: ["MobileNetKernels", "CDNNL"]),
        // The architecture (paper Table 2 / Keras layer names), weights by Keras layer name,
        // BatchNorm folding, ImageNet class names. Knows nothing of file formats.
        // Knows no backend: the default one (oneDNN) is chosen in the umbrella module.
        .target(name: "MobileNetModel", dependencies: ["MobileNetKernels"]),
        // Training the network itself: plain-Swift reference forward and backward passes (Double),
        // the fine-tuning model (Keras `base_model.layers[N:]` trainable), softmax cross-entropy
        // with label smoothing, and Keras's optimisers; the fast Float network for real training
        // (`FineTuningNetwork`, OpenBLAS sgemm). Knows nothing of file formats.
        .target(name: "MobileNetTraining", dependencies: ["MobileNetModel", "MobileNetKernels", "CBLAS", "CMobileNetProcess"]),
        // Weight files (.h5, .weights.h5, .keras), weight resolution and download, image
        // decoding and resizing, .npy output.
        .target(
            name: "MobileNetIO",
            dependencies: [
                "MobileNetKernels", "MobileNetModel", "CMobileNetShims", "CMobileNetProcess", "CZip",
            ]
        ),
        // libzip (Debian libzip-dev), found through pkg-config: the ZIP container of .keras files; and
        // zlib (zlib1g-dev): the CRC-32 of files packed into exported .tflite models.
        .systemLibrary(
            name: "CZip",
            path: "Sources/CZip",
            pkgConfig: "libzip",
            providers: [.apt(["libzip-dev", "zlib1g-dev"])]
        ),
        // SQLite 3 (Debian libsqlite3-dev), found through pkg-config.
        .systemLibrary(
            name: "CSQLite",
            path: "Sources/CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // The embedding store: SQLite cache of embeddings keyed by content hash, backbone and
        // preprocessing identity; shared by transfer learning and similarity search.
        .target(name: "MobileNetStore", dependencies: ["CSQLite"]),
        // Running the network over files: image file lists, the backbone loader, the pipelined
        // batch runner, the cached embedder, augmented views, filling and querying an image
        // index. Transfer learning and the served models sit on it.
        .target(name: "MobileNetPipeline", dependencies: ["MobileNetKernels", "MobileNetModel", "MobileNetIO", "MobileNetStore", "MobileNetSearch", "MobileNetTFLite", "MobileNetSavedModel"]),
        // Transfer learning: data sets from folders, the classifier head and its training,
        // evaluation, the model file, Keras import and export, the training workflow.
        .target(
            name: "MobileNetTransfer",
            dependencies: ["MobileNetKernels", "MobileNetModel", "MobileNetIO", "MobileNetStore", "MobileNetPipeline", "MobileNetTraining", "MobileNetTFLite", "MobileNetSavedModel"]
        ),
        // OpenBLAS (Debian libopenblas-dev), found through pkg-config: similarity search.
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Exact similarity search and near-duplicate grouping over embeddings, the image index's
        // store side and merges: no image stack (filling an index from files is MobileNetPipeline's).
        .target(name: "MobileNetSearch", dependencies: ["CBLAS", "CMobileNetProcess", "MobileNetStore"]),
        // FAISS 1.7.3 (Debian libfaiss-dev: headers and a static libfaiss.a without FAISS's C API):
        // a C interface over its C++ API that turns every C++ exception into an error code and
        // message, and reads untrusted index files in a forked, memory-limited child first.
        // libfaiss.a needs BLAS/LAPACK (OpenBLAS, which includes LAPACK) and OpenMP (libgomp, the
        // runtime oneDNN already loads).
        .target(
            name: "CMobileNetFaiss",
            dependencies: ["CMobileNetProcess"],
            cxxSettings: [.headerSearchPath("compat")],
            linkerSettings: [.linkedLibrary("faiss"), .linkedLibrary("openblas"), .linkedLibrary("gomp"), .linkedLibrary("stdc++")]
        ),
        // Approximate nearest-neighbour search (FAISS IVF / HNSW) over an EmbeddingIndex's
        // vectors: building, .faiss files (read isolated and checked), search.
        .target(name: "MobileNetANN", dependencies: ["CMobileNetFaiss", "MobileNetSearch", "MobileNetIO", "MobileNetStore", "MobileNetPipeline"]),
        // Umbrella module: `import MobileNet`.
        .target(name: "MobileNet", dependencies: ["MobileNetKernels", "MobileNetOneDNN", "MobileNetModel", "MobileNetIO", "MobileNetStore", "MobileNetPipeline", "MobileNetTraining", "MobileNetTransfer", "MobileNetSearch", "MobileNetANN", "MobileNetProcess", "MobileNetTFLite", "MobileNetSavedModel"]),
        // Model serving without HTTP: the served models and their registry, TensorFlow Serving
        // REST and KServe v2 request decoding and response encoding, the dynamic batcher.
        .target(name: "MobileNetServing", dependencies: ["MobileNetModel", "MobileNetIO", "MobileNetSavedModel", "MobileNetStore", "MobileNetPipeline", "MobileNetTransfer", "MobileNetSearch", "MobileNetANN", "MobileNetKernels",
                                                   .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")]),
        // TensorFlow Serving's gRPC API over MobileNetServing: PredictionService (Predict,
        // Classify, GetModelMetadata) and ModelService (GetModelStatus) with grpc-swift 2 (the
        // service code generated by scripts/generate-tensorflow-protos.sh, committed).
        .target(name: "MobileNetServingGRPC", dependencies: [
            "MobileNetServing", "MobileNetTFProtos",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            // GRPCNIOTransportCore (HTTP/2 server transport without TLS) through the one product
            // that exports it without NIOSSL: the Posix product's TLS support builds two copies
            // of BoringSSL and swift-crypto (seven minutes of a clean CI build).
            .product(name: "GRPCNIOTransportHTTP2TransportServices", package: "grpc-swift-nio-transport"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // `mobilenet serve`: the HTTP face (Hummingbird 2) over MobileNetServing, with Prometheus
        // metrics, structured logging and graceful shutdown.
        .target(
            name: "MobileNetServer",
            dependencies: [
                "MobileNetServing",
                "MobileNetServingGRPC",
                "MobileNetSavedModel",
                "MobileNetANN",
                "MobileNetIO",
                "MobileNetProcess",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "MultipartKit", package: "multipart-kit"),
            ]
        ),
        .executableTarget(
            name: "MobileNetCLI",
            dependencies: ["MobileNet", "MobileNetServing", "MobileNetServer", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // A runnable tour of the library API on the shared data (`make tour`).
        .executableTarget(name: "LibraryTour", dependencies: ["MobileNet"], path: "Examples/LibraryTour"),
        // Our outputs on .tflite files against LiteRT's (scripts/fixtures/make_tflite_models.py --shared).
        .executableTarget(name: "TFLiteParity", dependencies: ["MobileNet"], path: "Examples/TFLiteParity"),
        // The speed and peak memory of a fine-tuning step (scripts/bench/finetune_step.sh).
        .executableTarget(name: "FineTuningBenchmark", dependencies: ["MobileNet"], path: "Examples/FineTuningBenchmark"),
        // Coverage-guided fuzzing (libFuzzer): the targets, and a driver that replays a corpus in
        // normal builds and fuzzes when built with -sanitize=fuzzer -DFUZZING (`make fuzz`).
        .target(name: "MobileNetFuzzTargets", dependencies: ["MobileNet", "MobileNetSavedModel", "MobileNetServing"]),
        .executableTarget(name: "MobileNetFuzz", dependencies: ["MobileNetFuzzTargets"]),
        .target(name: "MobileNetTestSupport", dependencies: ["MobileNet"], path: "Tests/MobileNetTestSupport"),
        .testTarget(name: "MobileNetTFLiteTests", dependencies: ["MobileNet", "MobileNetTFLite", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetSavedModelTests", dependencies: ["MobileNet", "MobileNetSavedModel", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetKernelsTests", dependencies: ["MobileNetKernels", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetModelTests", dependencies: ["MobileNet", "MobileNetModel", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetTrainingTests", dependencies: ["MobileNet", "MobileNetTraining", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetIOTests", dependencies: ["MobileNet", "MobileNetFuzzTargets", "MobileNetServing", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetStoreTests", dependencies: ["MobileNetStore", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetTransferTests", dependencies: ["MobileNet", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetSearchTests", dependencies: ["MobileNetSearch", "MobileNetProcess", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetProcessTests", dependencies: ["MobileNetProcess"]),
        .testTarget(name: "MobileNetANNTests", dependencies: ["MobileNet", "MobileNetANN", "MobileNetSearch", "MobileNetIO", "MobileNetTraining", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetOneDNNTests", dependencies: ["MobileNet", "MobileNetOneDNN", "MobileNetTestSupport"]),
        .testTarget(
            name: "MobileNetServerTests",
            dependencies: ["MobileNet", "MobileNetServing", "MobileNetServer", "MobileNetServingGRPC", "MobileNetTFProtos", "MobileNetTestSupport",
                           .product(name: "GRPCCore", package: "grpc-swift-2"), .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
                           .product(name: "Hummingbird", package: "hummingbird"), .product(name: "Logging", package: "swift-log"),
                           .product(name: "HTTPTypes", package: "swift-http-types"), .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        .testTarget(name: "MobileNetCLITests", dependencies: ["MobileNet", "MobileNetTestSupport", "MobileNetCLI"]),
    ]
)
