#!/usr/bin/env python3
"""Quantized .tflite inference side by side: swift-mobilenet (XNNPACK through `mobilenet bench
--model`) and LiteRT (ai-edge-litert, its default XNNPACK delegate), on the same files, batch 1
at 1 and 2 threads, alternated over rounds; plus our own float model (the shared Keras weights
on oneDNN) at batch 1 and our int8 and float images/s at batch 32. Medians over rounds; peak
RSS of our process beside each row. One run, one machine: say which CPU.

  .venv/bin/python scripts/bench/tflite_peers.py [--rounds 3] [--iterations 50] [FILE.tflite ...]

Default files: the shared Coral model and, when made by
`scripts/fixtures/make_tflite_models.py --shared`, .build/tflite-models/*int8-uint8io.tflite.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("MOBILENET_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))
BINARY = os.path.join(ROOT, ".build/release/mobilenet")
WEIGHTS = os.path.join(SHARED, "data/weights/mobilenet_v2_1.0_224_dequant.h5")


def litert_latency(path, threads, iterations):
    """Median invoke latency in ms, in a fresh process (as each of ours is)."""
    code = f"""
import time, statistics, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path={path!r}, num_threads={threads})
it.allocate_tensors()
d = it.get_input_details()[0]
x = np.random.default_rng(0).integers(0, 255, d['shape']).astype(d['dtype'])
it.set_tensor(d['index'], x)
for _ in range(3): it.invoke()
times = []
for _ in range({iterations}):
    t = time.perf_counter(); it.invoke(); times.append((time.perf_counter() - t) * 1000)
print(statistics.median(times))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def ours(args):
    out = subprocess.run([BINARY, "bench", "--json"] + args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            flags = open("/proc/cpuinfo").read()
            isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
            vnni = ", VNNI" if "avx512_vnni" in flags or "avx_vnni" in flags else ", no VNNI"
            return line.split(":", 1)[1].strip() + f" ({isa}{vnni}, {os.cpu_count()} cores)"
    return "unknown"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    files = args.files or [os.path.join(SHARED, "data/tflite/mobilenet_v2_1.0_224_quant.tflite")] + [
        os.path.join(ROOT, ".build/tflite-models", f) for f in ["mobilenet_v2_1.0_224_int8-uint8io.tflite"]
        if os.path.exists(os.path.join(ROOT, ".build/tflite-models", f))]
    rows = {}
    for _ in range(args.rounds):
        for path in files:
            name = os.path.basename(path)
            for threads in (1, 2):
                r = ours(["--model", path, "--batch-size", "1", "--threads", str(threads), "--iterations", str(args.iterations)])
                rows.setdefault((name, threads, "ours"), []).append((r["medianMilliseconds"], r["peakRSSMegabytes"]))
                rows.setdefault((name, threads, "litert"), []).append((litert_latency(path, threads, args.iterations), None))
            r = ours(["--model", path, "--batch-size", "32", "--threads", "2", "--iterations", "5", "--warmup", "1"])
            rows.setdefault((name, 32, "ours"), []).append((r["imagesPerSecond"], r["peakRSSMegabytes"]))
        for threads in (1, 2):
            r = ours(["--weights", WEIGHTS, "--batch-size", "1", "--threads", str(threads), "--iterations", str(args.iterations)])
            rows.setdefault(("float (oneDNN)", threads, "ours"), []).append((r["medianMilliseconds"], r["peakRSSMegabytes"]))
        r = ours(["--weights", WEIGHTS, "--batch-size", "32", "--threads", "2", "--iterations", "5", "--warmup", "1"])
        rows.setdefault(("float (oneDNN)", 32, "ours"), []).append((r["imagesPerSecond"], r["peakRSSMegabytes"]))
    print(f"CPU: {cpu()}; {args.rounds} rounds, medians")
    print("| model | batch-1 ms, 1 thread: ours / LiteRT (ratio) | batch-1 ms, 2 threads: ours / LiteRT (ratio) | batch 32, 2 threads: ours images/s | our peak RSS MB |")
    print("|---|---|---|---|---|")
    names = [os.path.basename(p) for p in files] + ["float (oneDNN)"]
    for name in names:
        cells = []
        for threads in (1, 2):
            o = statistics.median(v for v, _ in rows[(name, threads, "ours")])
            if (name, threads, "litert") in rows:
                l = statistics.median(v for v, _ in rows[(name, threads, "litert")])
                cells.append(f"{o:.2f} / {l:.2f} ({o / l:.2f}x)")
            else:
                cells.append(f"{o:.2f}")
        b32 = statistics.median(v for v, _ in rows[(name, 32, "ours")])
        rss = max(m for key in rows if key[0] == name and key[2] == "ours" for _, m in rows[key])
        print(f"| {name} | {cells[0]} | {cells[1]} | {b32:.1f} | {rss:.0f} |")
    print(json.dumps({f"{k[0]}|{k[1]}|{k[2]}": v for k, v in rows.items()}))


if __name__ == "__main__":
    main()
