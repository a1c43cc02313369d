#!/usr/bin/env bash
# The integration tests: the release `mobilenet` binary driven from the outside by real
# clients (Tests/Integration, pytest): schemathesis against /openapi.json, a real browser
# (chromium + selenium) on the page at /, TensorFlow Serving's documented requests with
# Python `requests` and curl, two replicas behind nginx. Run by `make test` after the Swift
# tests; `scripts/integration-tests.sh -k browser` passes options to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-tools.sh
# `make test` has just built everything (`swift build -c release --build-tests`) and says so
# with MOBILENET_SKIP_BUILD=1; run on its own, this builds the binary with the same flags.
if [[ "${MOBILENET_SKIP_BUILD:-0}" != 1 || ! -x .build/release/mobilenet ]]; then
    swift build -c release --build-tests
fi
export MOBILENET_BINARY="${MOBILENET_BINARY:-$PWD/.build/release/mobilenet}"
exec .venv-test/bin/python -m pytest Tests/Integration -q -p no:cacheprovider "$@"
