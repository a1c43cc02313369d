"""Stateless replicas: two `mobilenet serve` processes behind nginx (Debian) on loopback give the
same answers as one, share the requests, and a replica that goes away does not fail requests."""

import base64
import os
import pathlib
import shutil
import subprocess
import time

import pytest
import requests

from conftest import CHELSEA, COFFEE, ROOT, TOP_WEIGHTS, Server, free_port, need


def count_requests(metrics_text):
    total = 0
    for line in metrics_text.splitlines():
        if line.startswith("mobilenet_http_requests_total") and 'route="/v1/models/{name}"' in line and 'status="200"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


@pytest.fixture(scope="module")
def replicas(shared, workdir):
    need(shutil.which("nginx"), "nginx is missing (scripts/setup-test-tools.sh installs nginx-light)")
    servers = [Server(["--model", f"imagenet={TOP_WEIGHTS}", "--max-batch-size", "8"], workdir / f"replica{i}.log") for i in range(2)]
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    template = (ROOT / "scripts/serve/nginx-replicas.conf").read_text()
    upstreams = "\n".join(f"        server 127.0.0.1:{s.port} max_fails=1 fail_timeout=30s;" for s in servers)
    (prefix / "nginx.conf").write_text(template.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port)).replace("@UPSTREAMS@", upstreams)
                                        .replace("@USER@", "user root;" if os.geteuid() == 0 else ""))
    nginx = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert nginx.poll() is None, nginx.stderr.read().decode()
        assert time.monotonic() < deadline, "nginx did not come up"
        time.sleep(0.2)
    yield url, servers, prefix / "error.log"
    nginx.terminate()
    nginx.wait(timeout=20)
    for s in servers:
        s.stop()


def predict(url, path, error_log=None):
    body = {"instances": [{"b64": base64.b64encode(path.read_bytes()).decode()}]}
    response = requests.post(url + "/v1/models/imagenet:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text[-300:] + (error_log.read_text()[-2000:] if error_log and error_log.exists() else "")
    return response.content


def test_two_replicas_behind_nginx_answer_alike_and_share_the_load(replicas):
    url, servers, error_log = replicas
    direct = {path: predict(servers[0].url, path) for path in (CHELSEA, COFFEE)}
    assert direct[CHELSEA] == predict(servers[1].url, CHELSEA)  # same bytes from either replica
    before = [count_requests(s.metrics()) for s in servers]
    for i in range(12):
        path = (CHELSEA, COFFEE)[i % 2]
        assert predict(url, path, error_log) == direct[path]
    after = [count_requests(s.metrics()) for s in servers]
    served = [a - b for a, b in zip(after, before)]
    assert sum(served) == 12 and min(served) >= 3, served

    # One replica goes away (SIGTERM): nginx sends everything to the other, no request fails.
    assert servers[1].stop() == 0
    for i in range(6):
        path = (CHELSEA, COFFEE)[i % 2]
        assert predict(url, path, error_log) == direct[path]
