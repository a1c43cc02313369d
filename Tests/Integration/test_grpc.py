"""TensorFlow Serving's gRPC API (`mobilenet serve --grpc-port`) called by TensorFlow Serving's own
Python client (tensorflow-serving-api, in .venv-serving-client; scripts/tfserving_grpc_client.py
makes the documented calls), and a TF Serving base folder served with its version folders:
a new version folder is picked up while requests run, a removed one is retired, and no request
fails meanwhile."""

import json
import math
import os
import pathlib
import shutil
import subprocess
import threading
import time
import urllib.request

from conftest import BINARY, COFFEE, NO_TOP_WEIGHTS, ROOT, TOP_WEIGHTS, Server, free_port, need

CLIENT_PYTHON = ROOT / ".venv-serving-client/bin/python"
CLIENT = ROOT / "scripts/tfserving_grpc_client.py"
FIXTURE = ROOT / "Tests/Fixtures/savedmodel/keras3-export/1"


def client(*args, timeout=300):
    need(CLIENT_PYTHON.exists(), f"{CLIENT_PYTHON} is missing: run scripts/setup-test-tools.sh")
    result = subprocess.run([str(CLIENT_PYTHON), str(CLIENT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_tf_serving_python_client_over_grpc(shared, workdir):
    grpc_port = free_port()
    server = Server(["--model", f"imagenet={TOP_WEIGHTS}", "--model", f"embedder={NO_TOP_WEIGHTS}", "--grpc-port", str(grpc_port)],
                    workdir / "grpc-server.log")
    try:
        out = client("check", f"127.0.0.1:{grpc_port}", server.url, "imagenet", COFFEE, "embedder")
    finally:
        assert server.stop() == 0
    assert out["predict_spec"] == {"name": "imagenet", "version": 1, "signature": "serving_default"}
    assert out["predict_keys"] == ["predictions"] and out["predict_shape"] == [1, 1000]
    # The same image through REST and gRPC: the same probabilities.
    assert max(abs(a - b) for a, b in zip(out["predict"], out["rest"])) < 1e-6
    # A float tensor preprocessed by TensorFlow (tf.image.resize, x / 127.5 - 1): the same class.
    assert out["predict_float"].index(max(out["predict_float"])) == out["predict"].index(max(out["predict"]))
    assert out["classify"]["count"] == 1000 and out["classify"]["best_label"] == "espresso"
    assert math.isclose(out["classify"]["best_score"], max(out["predict"]), rel_tol=1e-6)
    assert out["metadata"] == {"inputs": {"input_1": [-1, 224, 224, 3]}, "outputs": {"predictions": [-1, 1000]}, "method": "tensorflow/serving/predict"}
    assert out["status"] == [{"version": 1, "state": "AVAILABLE"}]
    errors = out["errors"]
    assert errors["unknown_model"].startswith("NOT_FOUND") and "no-such-model" in errors["unknown_model"]
    assert errors["unknown_version"].startswith("NOT_FOUND") and "99" in errors["unknown_version"]
    assert errors["not_an_image"].startswith("INVALID_ARGUMENT") and "string_val[0]" in errors["not_an_image"]
    assert errors["wrong_input_name"].startswith("INVALID_ARGUMENT") and "input_1" in errors["wrong_input_name"]
    assert errors["out_of_range"].startswith("INVALID_ARGUMENT") and "outside" in errors["out_of_range"]
    assert errors["regress"].startswith("UNIMPLEMENTED")
    assert errors["classify_embedder"].startswith("INVALID_ARGUMENT") and "embedder" in errors["classify_embedder"]
    assert out["embedder_keys"] == ["embedding"] and out["embedding_shape"] == [1, 1280]


def add_version(base, version):
    """Copies the fixture in as version `version` the way TF Serving's guide says: to a hidden
    folder first, then renamed into place (a half-copied folder is never seen)."""
    staging = base / f".staging-{version}"
    shutil.copytree(FIXTURE, staging)
    staging.rename(base / str(version))


def wait_for(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_version_folders_are_served_swapped_under_load_and_retired(shared, workdir):
    base = workdir / "versions-base"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    add_version(base, 1)
    grpc_port = free_port()
    server = Server(["--model", f"flowers={base}", "--grpc-port", str(grpc_port), "--poll-seconds", "0.2"], workdir / "versions-server.log")
    try:
        status = lambda: [(s["version"], s["state"]) for s in get_json(server.url + "/v1/models/flowers")["model_version_status"]]
        assert status() == [("1", "AVAILABLE")]
        # Requests run without a version the whole time; version 2 arrives, then version 1 goes.
        results, ready = {}, workdir / "versions-client-ready"
        ready.unlink(missing_ok=True)
        load = threading.Thread(target=lambda: results.update(client("versions", f"127.0.0.1:{grpc_port}", "flowers", 15, ready)))
        load.start()
        assert wait_for(ready.exists, 120), "the client answered no call"
        time.sleep(1)
        add_version(base, 2)
        assert wait_for(lambda: ("2", "AVAILABLE") in status()), status()
        assert get_json(server.url + "/v1/models/flowers/versions/1")["model_version_status"][0]["version"] == "1"
        time.sleep(2)
        shutil.rmtree(base / "1")
        assert wait_for(lambda: status() == [("2", "AVAILABLE"), ("1", "END")]), status()
        load.join()
        with urllib.request.urlopen(server.url + "/v1/models/flowers/versions/1", timeout=30) as response:
            raise AssertionError(f"version 1 still answers: {response.status}")
    except urllib.error.HTTPError as error:
        assert error.code == 404, error
    finally:
        assert server.stop() == 0
    # Every request was answered, first by version 1, then by version 2.
    assert results["errors"] == [], results["errors"][:5]
    assert results["answered"].get("1", 0) > 0 and results["answered"].get("2", 0) > 0, results
    log = (workdir / "versions-server.log").read_text()
    assert "model version loaded" in log and "model version retired" in log
