#!/usr/bin/env python3
"""Does one request with many large images starve `mobilenet serve`? (issue 32, item 3)

1. Health during decoding: while one `:predict` with N base64 PNGs of 10000x10000 (about 300 KB
   each, 100 megapixels decoded) runs, `GET /v2/health/live` is polled every 50 ms; prints the
   slowest and median health answer and how long the big request took, for N = 2, 6, 16.
2. Shutdown: 12 such images in flight, then SIGTERM with `--shutdown-timeout 5`; prints when the
   process exited and what a request sent 0.5 s after the signal got (an answer, a refused
   connection, or nothing within 10 s).

Usage: .venv-bench/bin/python scripts/bench/serve_starvation.py [--mobilenet .build/release/mobilenet]
Needs Pillow (the bench venv has it) and the shared weights.
"""

import argparse
import base64
import io
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("MOBILENET_SHARED_DIR", ROOT.parent / "shared"))
WEIGHTS = SHARED / "data/weights/mobilenet_v2_1.0_224_dequant.h5"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def big_png():
    image = Image.new("RGB", (10000, 10000), (200, 120, 40))
    for x in range(0, 10000, 500):  # a few stripes so that it is not one colour
        image.paste((40, 90, 200), (x, 0, x + 100, 10000))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def start(binary, *extra):
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--port", str(port), "--weights", str(WEIGHTS), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return server, port
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not become ready")
            time.sleep(0.2)


def post(port, body, result, timeout=600):
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/imagenet:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            result["status"] = r.status
    except urllib.error.HTTPError as error:
        result["status"] = error.code
    except OSError as error:
        result["status"] = f"{type(error).__name__}"
    result["seconds"] = time.monotonic() - started


def health(port):
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=60) as r:
        r.read()
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mobilenet", default=str(ROOT / ".build/release/mobilenet"))
    parser.add_argument("--counts", default="2,6,16")
    args = parser.parse_args()
    png = base64.b64encode(big_png()).decode()
    print(f"PNG 10000x10000: {len(png) * 3 // 4 // 1024} KB")
    print("| images | big request s | health checks | health median ms | health max ms |")
    print("|---:|---:|---:|---:|---:|")
    for count in [int(c) for c in args.counts.split(",")]:
        server, port = start(args.mobilenet, "--max-pixels", "100000000")
        try:
            body = json.dumps({"instances": [{"b64": png}] * count}).encode()
            result = {}
            worker = threading.Thread(target=post, args=(port, body, result))
            worker.start()
            times = []
            while worker.is_alive():
                times.append(health(port))
                time.sleep(0.05)
            worker.join()
            print(f"| {count} | {result['seconds']:.1f} ({result['status']}) | {len(times)} | {statistics.median(times) * 1000:.1f} | {max(times) * 1000:.1f} |", flush=True)
        finally:
            server.terminate()
            server.wait(60)

    server, port = start(args.mobilenet, "--max-pixels", "100000000", "--shutdown-timeout", "5")
    body = json.dumps({"instances": [{"b64": png}] * 12}).encode()
    result, late = {}, {}
    worker = threading.Thread(target=post, args=(port, body, result))
    worker.start()
    time.sleep(1.0)
    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    late_worker = threading.Thread(target=post, args=(port, json.dumps({"instances": [{"b64": ""}]}).encode(), late, 10))
    late_worker.start()
    try:
        code = server.wait(120)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "killed after 120 s"
    exited = time.monotonic() - signalled
    worker.join()
    late_worker.join()
    print(f"\nSIGTERM with 12 images in flight, --shutdown-timeout 5: exited after {exited:.1f} s (code {code}); "
          f"the in-flight request got {result.get('status')}; a request 0.5 s after the signal got {late.get('status')} after {late.get('seconds', 0):.2f} s")


if __name__ == "__main__":
    main()
