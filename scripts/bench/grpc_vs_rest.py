#!/usr/bin/env python3
"""gRPC `Predict` against REST `:predict` of `mobilenet serve`, side by side in one run.

Starts one server (`--grpc-port` beside the REST port) with the ImageNet classifier and runs
TensorFlow Serving's own Python client (scripts/tfserving_grpc_client.py bench, in
.venv-serving-client) with the same encoded photo through both APIs, alternated, two rounds per
concurrency; prints requests/s, p50 and p99 (ms) per API and round, and the gRPC/REST ratios of
the medians.

  .venv-test/bin/python scripts/bench/grpc_vs_rest.py [--seconds 10] [--concurrency 1 8]
      [--weights ../shared/data/weights/mobilenet_v2_1.0_224_dequant.h5] [--image Examples/coffee.jpg]
"""
import argparse
import json
import pathlib
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--weights", default=str(ROOT.parent / "shared/data/weights/mobilenet_v2_1.0_224_dequant.h5"))
    parser.add_argument("--image", default=str(ROOT / "Examples/coffee.jpg"))
    parser.add_argument("--binary", default=str(ROOT / ".build/release/mobilenet"))
    args = parser.parse_args()
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen([args.binary, "serve", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
                               "--model", f"imagenet={args.weights}", "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                sys.exit("the server was not ready")
        out = subprocess.run([str(ROOT / ".venv-serving-client/bin/python"), str(ROOT / "scripts/tfserving_grpc_client.py"), "bench",
                              f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{port}", "imagenet", args.image, str(args.seconds),
                              *map(str, args.concurrency)], capture_output=True, text=True, check=True,
                             env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
        rows = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=60)
    print("| API | concurrency | round | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rounds = {}
    for row in rows:
        key = (row["api"], row["c"])
        rounds.setdefault(key, []).append(row)
        print(f"| {row['api']} | {row['c']} | {len(rounds[key])} | {row['rps']:.1f} | {row['p50']:.1f} | {row['p99']:.1f} | {row['errors']} |")
    print()
    for c in args.concurrency:
        g, r = rounds[("grpc", c)], rounds[("rest", c)]
        med = lambda rows, k: statistics.median(x[k] for x in rows)
        print(f"c={c}: gRPC/REST requests/s {med(g, 'rps') / med(r, 'rps'):.2f}x, p50 {med(g, 'p50'):.1f} vs {med(r, 'p50'):.1f} ms, "
              f"p99 {med(g, 'p99'):.1f} vs {med(r, 'p99'):.1f} ms")


if __name__ == "__main__":
    main()
