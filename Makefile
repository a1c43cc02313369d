# The README's two commands: `make example` (classify a bundled photo) and `make test`.
# Both install the system packages first (scripts/setup.sh) and build in release mode: the
# plain-Swift reference kernels are slow in debug builds.

# Weights for the example: the shared ImageNet file when it is next to the checkout (this
# project's machines), otherwise the usual resolution (MOBILENET_WEIGHTS, the cache, the
# official Keras download).
WEIGHTS ?= $(firstword $(wildcard $(or $(MOBILENET_SHARED_DIR),../shared)/data/weights/mobilenet_v2_1.0_224_dequant.h5))

.PHONY: setup build example test

setup:
	scripts/setup.sh

build: setup
	swift build -c release --product mobilenet

example: build
	.build/release/mobilenet classify Examples/chelsea.png $(if $(WEIGHTS),--weights $(WEIGHTS))

test: setup
	swift test -c release
