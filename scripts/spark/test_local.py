#!/usr/bin/env python3
"""Local-mode test of scripts/spark/embed_spark.py (run by Tests/MobileNetCLITests/SparkJobTests.swift).

Embeds a dozen shared photos, one broken file and one missing path on Spark `local[2]` (two
partitions, so two `mobilenet embed --stream` processes), then checks:
  - every photo's vector is bit-identical (float32 bit patterns) to a single-machine
    `mobilenet embed PHOTOS... -o single.npy` of the same files;
  - the broken file and the missing path are rows with an error (the job did not fail);
  - the backbone and preprocessing identities are set and the same on every row.
Prints one JSON line of figures (wall times, images/s of Spark and of the single process).

Exit status: 0 passed, 1 failed, 77 skipped (pyspark or java missing; the caller decides).
Usage: test_local.py --binary .build/release/mobilenet --weights W_no_top.h5 --images DIR [--count 12]
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def read_npy_float32(path):
    """A float32 little-endian C-order 2-D .npy file as (rows, width, raw bytes per row)."""
    with open(path, "rb") as handle:
        data = handle.read()
    assert data[:6] == b"\x93NUMPY", f"{path}: not an .npy file"
    major = data[6]
    header_length = struct.unpack("<H", data[8:10])[0] if major == 1 else struct.unpack("<I", data[8:12])[0]
    start = (10 if major == 1 else 12) + header_length
    header = data[10 if major == 1 else 12:start].decode("latin1")
    assert "'descr': '<f4'" in header and "'fortran_order': False" in header, header
    shape = header.split("'shape': (")[1].split(")")[0]
    rows, width = (int(v) for v in shape.split(",")[:2])
    body = data[start:]
    return [body[i * width * 4:(i + 1) * width * 4] for i in range(rows)], width


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args()

    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("skip: pyspark is not installed (scripts/setup-test-tools.sh installs it into .venv-test)")
        return 77
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print("skip: no java on PATH (Debian: apt-get install openjdk-17-jre-headless)")
        return 77
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    sys.path.insert(0, HERE)
    import embed_spark

    work = tempfile.mkdtemp(prefix="mobilenet-spark-")
    try:
        photos = sorted(f for f in os.listdir(args.images) if f.lower().endswith((".jpg", ".jpeg", ".png")))[:args.count]
        folder = os.path.join(work, "photos")
        os.mkdir(folder)
        for name in photos:
            os.symlink(os.path.join(os.path.abspath(args.images), name), os.path.join(folder, name))
        broken = os.path.join(folder, "zz-broken.jpg")
        with open(broken, "wb") as handle:
            handle.write(b"\xff\xd8\xff\xe0 this is not a JPEG")
        good = [os.path.join(folder, name) for name in photos]
        missing = os.path.join(folder, "zz-missing.jpg")
        listing = os.path.join(work, "paths.txt")
        with open(listing, "w") as handle:
            handle.write("\n".join(good + [broken, missing]) + "\n")

        single = os.path.join(work, "single.npy")
        started = time.monotonic()
        run = subprocess.run([args.binary, "embed", *good, "--weights", args.weights, "-o", single], capture_output=True, text=True)
        single_seconds = time.monotonic() - started
        if run.returncode != 0:
            print(f"FAIL: single-machine embed exited {run.returncode}: {run.stderr}")
            return 1
        rows, width = read_npy_float32(single)
        with open(single + ".files.txt") as handle:
            names = handle.read().splitlines()
        expected = dict(zip(names, rows))

        output = os.path.join(work, "out.parquet")
        from pyspark.sql import SparkSession
        started = time.monotonic()
        spark = SparkSession.builder.master("local[2]").appName("mobilenet-embed-test").getOrCreate()
        startup_seconds = time.monotonic() - started
        started = time.monotonic()
        embed_spark.main(["--input", listing, "--output", output, "--binary", args.binary, "--weights", args.weights,
                          "--partitions", "2"], spark=spark)
        spark_seconds = time.monotonic() - started
        result = {row["path"]: row for row in spark.read.parquet(output).collect()}
        spark.stop()

        problems = []
        if sorted(result) != sorted(good + [broken, missing]):
            problems.append(f"rows for {sorted(result)}, expected {sorted(good + [broken, missing])}")
        identical = 0
        identities = set()
        for path in good:
            row = result.get(path)
            if row is None or row["vector"] is None:
                problems.append(f"{path}: no vector ({row and row['error']})")
                continue
            identities.add((row["backbone"], row["preprocessing"]))
            bits = struct.pack(f"<{len(row['vector'])}f", *row["vector"])
            if len(row["vector"]) != width or bits != expected.get(path):
                differing = sum(1 for a, b in zip(struct.iter_unpack("<I", bits), struct.iter_unpack("<I", expected.get(path, b""))) if a != b)
                problems.append(f"{path}: vector differs from single-machine embed ({differing} of {width} values)")
            else:
                identical += 1
        for path in (broken, missing):
            row = result.get(path)
            if row is None or row["error"] is None or row["vector"] is not None:
                problems.append(f"{path}: expected an error row, got {row}")
        if len(identities) != 1 or None in next(iter(identities), (None,)):
            problems.append(f"identities {identities}")
        figures = {
            "images": len(good), "identical": identical,
            "single_embed_seconds": round(single_seconds, 3), "single_images_per_second": round(len(good) / single_seconds, 2),
            "spark_startup_seconds": round(startup_seconds, 3), "spark_job_seconds": round(spark_seconds, 3), "spark_job_images_per_second": round(len(good) / spark_seconds, 2),
            "errors": {os.path.basename(p): result[p]["error"] for p in (broken, missing) if p in result},
        }
        print(json.dumps(figures))
        if problems:
            print("FAIL:\n  " + "\n  ".join(problems))
            return 1
        print(f"ok: {identical} vectors bit-identical, 2 failures reported as rows")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
