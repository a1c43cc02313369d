// swift-tools-version: 6.1
// swift-mobilenet: MobileNetV2 (arXiv:1801.04381) classification, embeddings and transfer
// learning in Swift, reading the Keras Applications weight files.
import PackageDescription

let package = Package(
    name: "swift-mobilenet",
    products: [
        .library(name: "MobileNet", targets: ["MobileNet"]),
        .executable(name: "mobilenet", targets: ["MobileNetCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
    ],
    targets: [
        // HDF5 (Debian libhdf5-dev), found through pkg-config.
        .systemLibrary(
            name: "CHDF5",
            path: "Sources/CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        // Thin C shims over HDF5, libjpeg-turbo and libpng: macros and setjmp-based error
        // handling cannot be used from Swift directly.
        .target(
            name: "CMobileNetShims",
            dependencies: ["CHDF5"],
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png16")]
        ),
        // Tensors, the reference kernels and the backend seam. Knows nothing of MobileNetV2.
        .target(name: "MobileNetKernels"),
        // The architecture (paper Table 2 / Keras layer names), weights by Keras layer name,
        // BatchNorm folding, ImageNet class names. Knows nothing of file formats.
        .target(name: "MobileNetModel", dependencies: ["MobileNetKernels"]),
        // Weight files (.h5, .weights.h5, .keras), weight resolution and download, image
        // decoding and resizing, .npy output.
        .target(
            name: "MobileNetIO",
            dependencies: [
                "MobileNetModel", "CMobileNetShims",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ]
        ),
        // Umbrella module: `import MobileNet`.
        .target(name: "MobileNet", dependencies: ["MobileNetKernels", "MobileNetModel", "MobileNetIO"]),
        .executableTarget(
            name: "MobileNetCLI",
            dependencies: ["MobileNet", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .target(name: "MobileNetTestSupport", dependencies: ["MobileNet"], path: "Tests/MobileNetTestSupport"),
        .testTarget(name: "MobileNetKernelsTests", dependencies: ["MobileNetKernels", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetModelTests", dependencies: ["MobileNet", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetIOTests", dependencies: ["MobileNet", "MobileNetTestSupport"]),
        .testTarget(name: "MobileNetCLITests", dependencies: ["MobileNet", "MobileNetTestSupport", "MobileNetCLI"]),
    ]
)
