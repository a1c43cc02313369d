"""Real clients, as the TensorFlow Serving and KServe documentation write them: Python
`requests` (TF Serving's resnet_client.py sends the JSON without a Content-Type) and curl."""

import base64
import json
import shutil
import subprocess

import requests

from conftest import CHELSEA, COFFEE, need

EGYPTIAN_CAT, ESPRESSO = 285, 967


def b64(path):
    return base64.b64encode(path.read_bytes()).decode("utf-8")


def argmax(row):
    return max(range(len(row)), key=row.__getitem__)


def test_tf_serving_resnet_client_as_documented(server):
    # tensorflow/serving example/resnet_client.py, with our model name.
    server_url = server.url + "/v1/models/imagenet:predict"
    predict_request = '{"instances" : [{"b64": "%s"}]}' % b64(CHELSEA)
    response = requests.post(server_url, data=predict_request)
    response.raise_for_status()
    prediction = response.json()["predictions"][0]
    assert len(prediction) == 1000
    assert argmax(prediction) == EGYPTIAN_CAT
    assert abs(sum(prediction) - 1) < 1e-4


def test_tf_serving_row_and_columnar_formats_and_metadata(server):
    status = requests.get(server.url + "/v1/models/imagenet").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = requests.get(server.url + "/v1/models/imagenet/metadata").json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) and list(signature["outputs"])

    rows = requests.post(server.url + "/v1/models/imagenet:predict",
                         json={"signature_name": "serving_default", "instances": [{"b64": b64(CHELSEA)}, {"b64": b64(COFFEE)}]})
    assert rows.status_code == 200, rows.text
    assert [argmax(p) for p in rows.json()["predictions"]] == [EGYPTIAN_CAT, ESPRESSO]

    columns = requests.post(server.url + "/v1/models/imagenet:predict", json={"inputs": [{"b64": b64(COFFEE)}]})
    assert columns.status_code == 200, columns.text
    assert argmax(columns.json()["outputs"][0]) == ESPRESSO

    wrong = requests.post(server.url + "/v1/models/imagenet:predict", json={"signature_name": "predict_images", "instances": [{"b64": b64(COFFEE)}]})
    assert wrong.status_code == 400 and "serving_default" in wrong.json()["error"]
    missing = requests.post(server.url + "/v1/models/resnet:predict", json={"instances": [{"b64": b64(COFFEE)}]})
    assert missing.status_code == 404 and "imagenet" in missing.json()["error"]


def test_kserve_v2_bytes_and_health(server):
    assert requests.get(server.url + "/v2/health/live").json() == {"live": True}
    assert requests.get(server.url + "/v2/health/ready").status_code == 200
    assert requests.get(server.url + "/v2/models/imagenet/ready").status_code == 200
    body = {"id": "42", "inputs": [{"name": "input_1", "shape": [1], "datatype": "BYTES", "data": [b64(CHELSEA)]}]}
    response = requests.post(server.url + "/v2/models/imagenet/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "42" and answer["model_name"] == "imagenet"
    output = answer["outputs"][0]
    assert output["shape"] == [1, 1000] and output["datatype"] == "FP32"
    assert argmax(output["data"]) == EGYPTIAN_CAT


def test_curl_raw_bytes_multipart_and_json(server, workdir):
    need(shutil.which("curl"), "curl is missing")

    def curl(*args):
        result = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    raw = curl("--data-binary", f"@{CHELSEA}", server.url + "/v1/classify?top=3")
    form = curl("-F", f"image=@{CHELSEA}", server.url + "/v1/classify?top=3")
    assert raw == form
    assert raw["predictions"][0]["label"] == "Egyptian_cat" and raw["predictions"][0]["synset"] == "n02124075"

    embedding = curl("--data-binary", f"@{COFFEE}", server.url + "/v1/embed?model=embedder")
    assert embedding["dimension"] == 1280 and len(embedding["embedding"]) == 1280
    assert min(embedding["embedding"]) >= 0 and max(embedding["embedding"]) <= 6

    similar = curl("-F", f"file=@{CHELSEA}", server.url + "/v1/similar?index=photos&top=3")
    assert len(similar["matches"]) == 3 and similar["matches"][0]["similarity"] > 0.5

    request = workdir / "request.json"
    request.write_text(json.dumps({"instances": [{"b64": b64(COFFEE)}]}))
    predicted = curl("-d", f"@{request}", "-X", "POST", server.url + "/v1/models/imagenet:predict")
    assert argmax(predicted["predictions"][0]) == ESPRESSO


def test_broken_http_framing_is_a_400_not_a_500(server):
    import socket
    host, port = "127.0.0.1", server.port
    cases = {
        "bad chunk size": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n",
        "negative length": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "garbage request line": b"GARBAGE\r\n\r\n",
        "unknown HTTP version": b"GET / HTTP/9.9\r\n\r\n",
        "a 1 MB header": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
    }
    for name, payload in cases.items():
        with socket.create_connection((host, port), timeout=30) as s:
            try:
                s.sendall(payload)
                status = s.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
            except ConnectionError:
                status = "(connection closed)"
        assert " 5" not in status[8:12], f"{name}: {status}"
        assert status.startswith("HTTP/1.1 4") or status == "(connection closed)", f"{name}: {status}"
    assert requests.get(server.url + "/v2/health/live").status_code == 200


def test_expect_100_continue_is_answered_before_the_body(server, workdir):
    """curl sends `Expect: 100-continue` with uploads over 1 MB and waits (1 s) for the interim
    answer before sending the body; the server gives it at once, and not for a body it will refuse."""
    import socket
    photo = CHELSEA.read_bytes()
    head = (f"POST /v1/classify?top=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(photo)}\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        interim = s.recv(64)  # nothing of the body sent yet: only the interim answer can come
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        s.sendall(photo)
        answer = b""
        while b"Egyptian_cat" not in answer and len(answer) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n" or interim.endswith(b"\r\n"), interim
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"Egyptian_cat" in answer
    # A declared body over the limit: no 100 Continue, the final 413 at once.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\nExpect: 100-continue\r\n\r\n")
        status = s.recv(64).split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 413"), status
    # curl itself: a 1.5 MB upload goes out at once (no "Done waiting for 100-continue").
    need(shutil.which("curl"), "curl is missing")
    big = workdir / "padded.png"
    big.write_bytes(photo + b"\0" * (1_500_000 - len(photo)))
    result = subprocess.run(["curl", "-sSv", "--fail-with-body", "--data-binary", f"@{big}", server.url + "/v1/classify?top=1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Expect: 100-continue" in result.stderr and "HTTP/1.1 100 Continue" in result.stderr, result.stderr
    assert "Done waiting for 100-continue" not in result.stderr
    assert json.loads(result.stdout)["predictions"][0]["label"] == "Egyptian_cat"


def test_a_trickled_body_gets_408_at_the_body_timeout(shared, workdir):
    """A client sending a byte every 0.5 s keeps resetting the idle timeout; the body timeout
    still ends the request (408, connection closed), and the server answers others meanwhile."""
    import socket
    import time
    from conftest import NO_TOP_WEIGHTS, Server
    server = Server(["--model", f"embedder={NO_TOP_WEIGHTS}", "--body-timeout", "2", "--idle-timeout", "30"], workdir / "trickle.log")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            start, answer = time.monotonic(), b""
            s.settimeout(0.5)
            while time.monotonic() - start < 20 and not answer:
                try:
                    s.sendall(b"x")
                except OSError:
                    pass
                try:
                    answer = s.recv(4096)
                except socket.timeout:
                    pass
            waited = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"connection: close" in answer.lower() and b"body timeout" in answer
        assert 1.5 < waited < 15, waited
        assert requests.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0
