// swift-tools-version: 6.1
// Benchmarks of swift-mobilenet with ordo-one/package-benchmark, as a package of its own so that
// the main package does not depend on the benchmark tooling.
//
//   cd Benchmarks && swift package --allow-writing-to-package-directory benchmark
//
// (see README.md, "Performance"). The MallocInterposer trait counts allocations.
import PackageDescription

let package = Package(
    name: "swift-mobilenet-benchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(url: "https://github.com/ordo-one/package-benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(name: "swift-mobilenet", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "InferenceBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "MobileNet", package: "swift-mobilenet"),
            ],
            path: "Benchmarks/InferenceBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "SearchBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "MobileNet", package: "swift-mobilenet"),
            ],
            path: "Benchmarks/SearchBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
