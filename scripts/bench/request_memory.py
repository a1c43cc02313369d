#!/usr/bin/env python3
"""What one JSON request costs `mobilenet serve` in memory: for each body, a fresh server (release
binary, the shared weights), its resident memory when ready, one request, and its peak (VmHWM)
after it; printed as a table with the peak's growth per byte of body.

The bodies are the hostile ones of issue 32 and the largest a client can send within the default
limits (64 MiB body, 64 images per request):
- `objects`: {"instances": [{"b64": ""} x 2,000,000]} (21 MB; took 7.2 GB before the count)
- `numbers-max`: one instance of numbers, as many as the count lets through (just under the budget)
- `numbers-64mb`: 64 MB of `0,` (refused by the count)
- `tensors`: as many 224x224x3 tensors (8-character numbers) as fit in 64 MiB, a valid request
- `b64-64mb`: one base64 string of 64 MiB less a little (not an image)

Usage: python3 scripts/bench/request_memory.py [--mobilenet .build/release/mobilenet] [--only NAME,...]
"""

import argparse
import base64
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("MOBILENET_SHARED_DIR", ROOT.parent / "shared"))
WEIGHTS = SHARED / "data/weights/mobilenet_v2_1.0_224_dequant.h5"
LIMIT = 64 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def bodies(names):
    values_budget = 64 * (224 * 224 * 3 + 224 * 224 + 224 + 1 + 8) + 512
    make = {
        "objects": lambda: b'{"instances":[' + b",".join([b'{"b64":""}'] * 2_000_000) + b"]}",
        "numbers-max": lambda: b'{"instances":[[' + b"0," * (values_budget - 10) + b"0]]}",
        "numbers-64mb": lambda: b'{"instances":[[' + b"0," * ((LIMIT - 64) // 2) + b"0]]}",
        "tensors": lambda: tensors(),
        "b64-64mb": lambda: b'{"instances":[{"b64":"' + base64.b64encode(b"\0" * ((LIMIT - 64) * 3 // 4 - 3)) + b'"}]}',
    }
    for name in names:
        yield name, make[name]()


def tensors():
    pixel = b"[0.123456,-0.65432,0.999999]"
    row = b"[" + b",".join([pixel] * 224) + b"]"
    image = b"[" + b",".join([row] * 224) + b"]"
    count = (LIMIT - 64) // (len(image) + 1)
    return b'{"instances":[' + b",".join([image] * count) + b"]}"


def measure(binary, name, body):
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--port", str(port), "--weights", str(WEIGHTS)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not become ready")
                time.sleep(0.2)
        ready = status(server.pid, "VmRSS")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/imagenet:predict", data=body,
                                         headers={"Content-Type": "application/json"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=600) as r:
                code, text = r.status, r.read()[:120]
        except urllib.error.HTTPError as error:
            code, text = error.code, error.read()[:160]
        took = time.monotonic() - started
        peak = status(server.pid, "VmHWM")
        return {"body": name, "bytes": len(body), "status": code, "seconds": took, "ready_mb": ready / 2**20,
                "peak_mb": peak / 2**20, "per_byte": (peak - ready) / len(body), "answer": text.decode("utf-8", "replace")}
    finally:
        server.terminate()
        server.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mobilenet", default=str(ROOT / ".build/release/mobilenet"))
    parser.add_argument("--only", default="objects,numbers-max,numbers-64mb,tensors,b64-64mb")
    args = parser.parse_args()
    print("| body | size MB | status | seconds | RSS ready MB | peak MB | peak growth / body byte |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, body in bodies(args.only.split(",")):
        r = measure(args.mobilenet, name, body)
        print(f"| {r['body']} | {r['bytes'] / 1e6:.1f} | {r['status']} | {r['seconds']:.2f} | {r['ready_mb']:.0f} | {r['peak_mb']:.0f} | {r['per_byte']:.1f} |", flush=True)
        print(f"    {r['answer']}", file=sys.stderr)


if __name__ == "__main__":
    main()
