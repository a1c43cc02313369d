#!/usr/bin/env bash
# Creates (or updates) .venv-test in the repository root with the Python tools the tests call,
# listed in scripts/requirements-test.txt. Idempotent: an existing venv is reused and pip only
# installs what is missing or at another version. Usage: scripts/setup-test-tools.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-test"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup-test-tools: creating $venv" >&2
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/scripts/requirements-test.txt"
