#!/usr/bin/env bash
# Installs what the tests need besides the build (scripts/setup.sh): Debian's chromium and
# chromium-driver (the browser test of the page at /), nginx (two server replicas behind a
# load balancer), wrk (the load scripts), Java 17 when there is no java (the Spark local-mode
# test), and a virtual environment .venv-test with the Python tools pinned in
# scripts/requirements-test.txt, and .venv-serving-client with TensorFlow Serving's Python gRPC
# client (scripts/requirements-serving-client.txt). Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium chromium-driver nginx-light wrk python3-venv)
command -v java >/dev/null 2>&1 || packages+=(openjdk-17-jre-headless)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "setup-test-tools: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
stamp=.venv-test/.requirements
if [ ! -x .venv-test/bin/python ]; then
    echo "setup-test-tools: creating .venv-test" >&2
    "$python" -m venv .venv-test
fi
if ! cmp -s scripts/requirements-test.txt "$stamp"; then
    echo "setup-test-tools: pip install -r scripts/requirements-test.txt" >&2
    .venv-test/bin/pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
    cp scripts/requirements-test.txt "$stamp"
fi

# TensorFlow Serving's Python client (Tests/Integration/test_grpc.py): its own environment, as
# TensorFlow pins a NumPy the FAISS wheel above cannot take.
stamp=.venv-serving-client/.requirements
if [ ! -x .venv-serving-client/bin/python ]; then
    echo "setup-test-tools: creating .venv-serving-client" >&2
    "$python" -m venv .venv-serving-client
fi
if ! cmp -s scripts/requirements-serving-client.txt "$stamp"; then
    echo "setup-test-tools: pip install -r scripts/requirements-serving-client.txt" >&2
    .venv-serving-client/bin/pip install -q --disable-pip-version-check -r scripts/requirements-serving-client.txt
    .venv-serving-client/bin/pip install -q --disable-pip-version-check --no-deps tensorflow-serving-api==2.21.0
    cp scripts/requirements-serving-client.txt "$stamp"
fi
