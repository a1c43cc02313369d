#!/usr/bin/env python3
"""Approximate (FAISS) against exact (BLAS) similarity search, measured in one process.

    scripts/bench/ann_bench.py OUT_DIR [--count 1000000] [--factory IVF1024,Flat ...]
        [--mobilenet .build/release/mobilenet] [--shared ../shared]

1. Embeds the shared photos (data/imagenet-sample, data/flowers train+val) with
   `mobilenet embed` (MobileNetV2 1.0 224, no top, average pooling) into OUT_DIR/real.npy,
   unless it exists.
2. Runs `mobilenet index bench-ann --real OUT_DIR/real.npy --count N --factory ... --json`:
   N synthetic 1280-d vectors clustered around the real ones (ANNBenchmark.syntheticEmbeddings:
   sub-centres mixing two real embeddings, per-dimension Gaussian-like noise, clipped at 0 like
   ReLU6 averages) plus the real ones; recall@10 of each FAISS index against exact search, single-query
   latency p50/p99 of both, build time and memory. Writes OUT_DIR/ann_bench.json and prints a table.

Standard library only (Python 3.11). The figures of docs/similarity.md came from this script.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--factory", action="append", default=[])
    parser.add_argument("--nprobe", default="4,8,16,32,64")
    parser.add_argument("--ef-search", default="16,32,64,128")
    parser.add_argument("--mobilenet", default=os.path.join(root, ".build/release/mobilenet"))
    parser.add_argument("--shared", default=os.environ.get("MOBILENET_SHARED_DIR", os.path.join(root, "..", "shared")))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    real = os.path.join(args.out, "real.npy")
    if not os.path.exists(real):
        data = os.path.join(args.shared, "data")
        weights = os.path.join(data, "weights", "mobilenet_v2_1.0_224_dequant_no_top.h5")
        subprocess.run([args.mobilenet, "embed", "--recursive", "--weights", weights, "-o", real,
                        os.path.join(data, "imagenet-sample"), os.path.join(data, "flowers")], check=True)
    command = [args.mobilenet, "index", "bench-ann", "--real", real, "--count", str(args.count),
               "--queries", str(args.queries), "--nprobe", args.nprobe, "--ef-search", args.ef_search, "--json"]
    for factory in args.factory:
        command += ["--factory", factory]
    print("running:", " ".join(command), file=sys.stderr)
    start = time.time()
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    report = json.loads(result.stdout)
    report["wallSeconds"] = time.time() - start
    report["command"] = command[1:]
    with open(os.path.join(args.out, "ann_bench.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"{report['vectors']} vectors x {report['dimension']} ({report['realVectors']} real), {report['queries']} queries, "
          f"median pair cosine synthetic {report['medianPairCosineSynthetic']:.2f} / real {report['medianPairCosineReal']:.2f}")
    print(f"exact BLAS: p50 {report['exactP50Milliseconds']:.1f} ms, p99 {report['exactP99Milliseconds']:.1f} ms")
    print("| index | parameter | recall@10 | p50 ms | p99 ms | build s | +RSS MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for index in report["indexes"]:
        for r in index["results"]:
            print(f"| {index['factory']} | {r['parameter']} | {r['recall']:.4f} | {r['p50Milliseconds']:.2f} | {r['p99Milliseconds']:.2f} "
                  f"| {index['buildSeconds']:.0f} | {index['residentGrowthMegabytes']:.0f} | {index['peakRSSMegabytes']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
