#!/usr/bin/env bash
# The integration tests: the release `mobilenet` binary driven from the outside by real
# clients (Tests/Integration, pytest): schemathesis against /openapi.json, a real browser
# (chromium + selenium) on the page at /, TensorFlow Serving's documented requests with
# Python `requests` and curl, two replicas behind nginx. Run by `make test` after the Swift
# tests; `scripts/integration-tests.sh -k browser` passes options to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-tools.sh
# The same build as `swift test -c release` (tests enabled), so after the Swift tests this is
# a no-op instead of a second compilation of every module without testing.
swift build -c release --build-tests
export MOBILENET_BINARY="${MOBILENET_BINARY:-$PWD/.build/release/mobilenet}"
exec .venv-test/bin/python -m pytest Tests/Integration -q -p no:cacheprovider "$@"
