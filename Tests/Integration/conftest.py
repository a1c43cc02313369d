"""Fixtures of the integration tests: the release `mobilenet` binary as a real server process.

Settings (environment):
- MOBILENET_BINARY: the binary (scripts/integration-tests.sh sets .build/release/mobilenet).
- MOBILENET_SHARED_DIR: the shared data folder (default ../shared next to the checkout).
- MOBILENET_REQUIRE_SHARED=1: missing shared data or tools fail the tests instead of skipping them.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("MOBILENET_SHARED_DIR", ROOT.parent / "shared"))
REQUIRE = os.environ.get("MOBILENET_REQUIRE_SHARED") == "1"
BINARY = pathlib.Path(os.environ.get("MOBILENET_BINARY", ROOT / ".build/release/mobilenet"))
TOP_WEIGHTS = SHARED / "data/weights/mobilenet_v2_1.0_224_dequant.h5"
NO_TOP_WEIGHTS = SHARED / "data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5"
CHELSEA = ROOT / "Examples/chelsea.png"
COFFEE = ROOT / "Examples/coffee.jpg"


def need(condition, message):
    """Skips (or, with MOBILENET_REQUIRE_SHARED=1, fails) when `condition` is false."""
    if not condition:
        if REQUIRE:
            pytest.fail(message + " (MOBILENET_REQUIRE_SHARED=1: it must be there)")
        pytest.skip(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `mobilenet serve` process on a loopback port, ready when started."""

    def __init__(self, args, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([str(BINARY), "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mobilenet serve exited with {self.process.returncode}: {pathlib.Path(log_path).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mobilenet serve was not ready within 120 s")
            time.sleep(0.2)

    def metrics(self):
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return response.read().decode()

    def rss_kib(self):
        for line in pathlib.Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def workdir():
    path = pathlib.Path(tempfile.mkdtemp(prefix="mobilenet-integration-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared():
    need(BINARY.exists(), f"{BINARY} is missing: build it with swift build -c release --product mobilenet")
    need(TOP_WEIGHTS.exists() and NO_TOP_WEIGHTS.exists(), f"the shared data is missing at {SHARED} (set MOBILENET_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def photo_index(shared, workdir):
    """An image index of the shared photos in data/images, built with `mobilenet index add`."""
    db = workdir / "photos.db"
    subprocess.run([str(BINARY), "index", "add", str(shared / "data/images"), "--index", str(db), "--weights", str(NO_TOP_WEIGHTS)],
                   check=True, capture_output=True)
    return db


@pytest.fixture(scope="session")
def server(shared, photo_index, workdir):
    """One server with the ImageNet classifier, the embedder and the photo index."""
    s = Server(["--model", f"imagenet={TOP_WEIGHTS}", "--model", f"embedder={NO_TOP_WEIGHTS}", "--index", f"photos={photo_index}"],
               workdir / "server.log")
    yield s
    assert s.stop() == 0, "the server did not shut down cleanly on SIGTERM"


def post_json(url, payload, timeout=60):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
