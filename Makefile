# The README's two commands: `make example` (classify a bundled photo) and `make test`.
# Both install the system packages first (scripts/setup.sh) and build in release mode: the
# plain-Swift reference kernels are slow in debug builds. `make test` then runs the integration
# tests (scripts/integration-tests.sh: the binary driven by real clients, a browser, nginx),
# which install their own tools (scripts/setup-test-tools.sh).

# Weights for the example: the shared ImageNet file when it is next to the checkout (this
# project's machines), otherwise the usual resolution (MOBILENET_WEIGHTS, the cache, the
# official Keras download).
WEIGHTS ?= $(firstword $(wildcard $(or $(MOBILENET_SHARED_DIR),../shared)/data/weights/mobilenet_v2_1.0_224_dequant.h5))

# The shared data folder for `make tour` (the library tour, Examples/LibraryTour).
SHARED ?= $(or $(MOBILENET_SHARED_DIR),../shared)

.PHONY: setup test-tools build example test tour docs fuzz fuzz-build

setup:
	scripts/setup.sh

# The test tools (scripts/setup-test-tools.sh): chromium + chromium-driver, nginx, wrk, Java 17,
# and .venv-test (pytest, schemathesis, selenium, requests, pyspark, faiss-cpu). Before the Swift
# tests, which call some of them (the Spark local-mode test, the FAISS interop test).
test-tools:
	scripts/setup-test-tools.sh

build: setup
	swift build -c release --product mobilenet

example: build
	.build/release/mobilenet classify Examples/chelsea.png $(if $(WEIGHTS),--weights $(WEIGHTS))

# One release compilation of every module and test: `swift test` would compile again with its
# own flags, and the integration tests reuse this build (MOBILENET_SKIP_BUILD=1).
test: setup test-tools
	swift build -c release --build-tests
	swift test -c release --skip-build
	MOBILENET_SKIP_BUILD=1 scripts/integration-tests.sh

tour: setup
	swift build -c release --product LibraryTour
	.build/release/LibraryTour "$(SHARED)"

# The DocC catalog (Sources/MobileNet/MobileNet.docc) links into the re-exported modules, so
# they are documented together: .build/docs/swift-mobilenet.doccarchive. scripts/docs.sh takes
# the symbol graphs from the release build (`swift package dump-symbol-graph`, no compilation
# after `make test`) and runs docc convert per target and docc merge, as swift-docc-plugin's
# combined documentation does; the plugin compiled every documented module once more (about
# 3.5 min on 2 cores, AMD EPYC AVX2; the script takes about 1 min, 2026-12-07). A DocC warning
# fails it (--warnings-as-errors).
DOC_TARGETS = MobileNet MobileNetProcess MobileNetKernels MobileNetOneDNN MobileNetModel MobileNetTFLite MobileNetSavedModel MobileNetTraining MobileNetIO MobileNetStore MobileNetPipeline MobileNetTransfer MobileNetSearch MobileNetANN MobileNetServing MobileNetServer MobileNetServingGRPC

docs: setup
	scripts/docs.sh $(DOC_TARGETS)

# Coverage-guided fuzzing with libFuzzer and AddressSanitizer: `make fuzz TARGET=image SECONDS=300`
# (targets: image, keras-archive, model-file, store, weight-payload, tflite, saved-model, request). New interesting inputs are
# kept in Tests/Fixtures/fuzz-corpus/$(TARGET), which `make test` replays; a crasher is written
# to .fuzz-artifacts/.
TARGET ?= image
SECONDS ?= 60
FUZZ_BIN = .build-fuzz/release/mobilenet-fuzz

fuzz-build: setup
	swift build -c release --product mobilenet-fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld

fuzz: fuzz-build
	mkdir -p .fuzz-artifacts
	SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 $(FUZZ_BIN) $(TARGET) -max_total_time=$(SECONDS) -rss_limit_mb=4096 -timeout=20 \
		-artifact_prefix=.fuzz-artifacts/ Tests/Fixtures/fuzz-corpus/$(TARGET)

# The package-benchmark suite under both OpenMP waiting behaviours: GNU OpenMP's default
# bounded spin (what the library gets when a program sets nothing) and OMP_WAIT_POLICY=passive.
bench-waiting: setup
	cd Benchmarks && swift package --allow-writing-to-package-directory benchmark
	cd Benchmarks && OMP_WAIT_POLICY=passive swift package --allow-writing-to-package-directory benchmark
