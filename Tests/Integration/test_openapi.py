"""schemathesis against the server's own OpenAPI document: no generated request gets a 5xx,
with random path names (mostly 404s) and with the served names (the models and the index)."""

import pathlib
import sys

import pytest
import subprocess

CONFIG = pathlib.Path(__file__).with_name("schemathesis.toml")


@pytest.mark.parametrize("names", ["random", "served"])
def test_schemathesis_finds_no_server_error(server, workdir, names):
    schemathesis = pathlib.Path(sys.executable).with_name("schemathesis")
    command = [str(schemathesis)] + (["--config-file", str(CONFIG)] if names == "served" else []) + [
        "run", server.url + "/openapi.json",
        "--checks", "not_a_server_error",
        "--phases", "coverage,fuzzing",
        "--max-examples", "40" if names == "served" else "15", "--seed", "20261201",
        # One worker: with two, schemathesis' threads hit CPython 3.11.7's "AST constructor
        # recursion depth mismatch" SystemError now and then (gh-106905, fixed in 3.11.8), a
        # runtime error of the tool that failed the test without any server error.
        "--request-timeout", "60", "--workers", "1",
        "--suppress-health-check", "all",
        "--generation-database", "none"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    (workdir / f"schemathesis-{names}.txt").write_text(result.stdout + result.stderr)
    summary = result.stdout[result.stdout.rfind("SUMMARY"):]
    print(summary)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "generated" in summary
    # The server is still there and answers.
    assert "mobilenet_http_requests_total" in server.metrics()
