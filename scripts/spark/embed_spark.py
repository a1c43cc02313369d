#!/usr/bin/env python3
"""Embed images on an Apache Spark cluster with the `mobilenet` binary on every executor.

Each Spark partition of the path list is piped through one `mobilenet embed --stream`
process (paths on its standard input, one JSON line per image on its standard output, see
docs/distributed.md), and the results are written as Parquet with the columns

    path           string         the image path as listed
    vector         array<float>   the 1280-d embedding (float32, bit-identical to `mobilenet embed`), null on error
    error          string         why the image has no vector (missing, not decodable, ...), null on success
    backbone       string         the backbone identity (alpha, input size, pooling, weight file SHA-256), null on error
    preprocessing  string         the preprocessing identity (decode, EXIF, resize, crop, scaling), null on error

A failing image is a row with an error, never a failed task. A task fails only when the
binary itself cannot run (missing weights, a crash), with its standard error in the message.

Usage (local mode, or any cluster where every executor sees the images at the same paths,
e.g. NFS, a mounted bucket, or node-local copies):

    spark-submit --master 'local[2]' scripts/spark/embed_spark.py \
        --input /data/photos --output /data/photos.parquet \
        --binary .build/release/mobilenet --weights /data/mobilenet_v2_1.0_224.h5

On a cluster, ship the binary and the weights with the job (`--files` copies them into every
executor's working directory; pass their bare names) or install them on the nodes:

    spark-submit --master yarn --files .build/release/mobilenet,/data/w.h5 \
        scripts/spark/embed_spark.py --input paths.txt --output hdfs:///emb.parquet \
        --binary mobilenet --weights w.h5 --partitions 64

Arguments after `--` are passed to `mobilenet embed` (image options such as `--preset
tensorflow`, `--threads 4`, `--batch-size 32`).
Written for PySpark 4.x (tested with pyspark 4.3.0 from PyPI, Java 17).
"""

import argparse
import json
import os
import stat
import subprocess
import sys
import threading


def list_paths(source):
    """The image paths of a folder (recursively, sorted, hidden files skipped) or of a list file (one per line)."""
    if os.path.isdir(source):
        found = []
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(os.path.join(root, f) for f in files if not f.startswith("."))
        return sorted(found)
    with open(source, "rb") as handle:
        lines = (line.rstrip(b"\r\n") for line in handle)
        return [line.decode("utf-8", "surrogateescape") for line in lines if line]


def resolve_file(name):
    """A file shipped with `spark-submit --files` (bare name) or a path on the node."""
    if os.path.exists(name):
        return os.path.abspath(name)
    try:
        from pyspark import SparkFiles
        shipped = SparkFiles.get(os.path.basename(name))
        if os.path.exists(shipped):
            return shipped
    except Exception:
        pass
    return name


def embed_partition(paths, binary, weights, extra):
    """Runs one `mobilenet embed --stream` over a partition's paths; yields result rows."""
    executable = resolve_file(binary)
    if os.path.isfile(executable) and not os.access(executable, os.X_OK):
        # `--files` does not always keep the executable bit.
        os.chmod(executable, os.stat(executable).st_mode | stat.S_IXUSR)
    command = [executable, "embed", "--stream"]
    if weights:
        command += ["--weights", resolve_file(weights)]
    command += list(extra)
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = []

    def feed():
        try:
            for path in paths:
                process.stdin.write(path.encode("utf-8", "surrogateescape") + b"\n")
            process.stdin.close()
        except BrokenPipeError:
            pass

    def drain():
        for line in process.stderr:
            errors.append(line.decode("utf-8", "replace"))
            del errors[:-50]

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
    for thread in threads:
        thread.start()
    for line in process.stdout:
        record = json.loads(line)
        if "embedding" in record:
            yield (record["path"], [float(v) for v in record["embedding"]], None, record.get("backbone"), record.get("preprocessing"))
        else:
            yield (record["path"], None, record.get("error", "unknown error"), None, None)
    status = process.wait()
    for thread in threads:
        thread.join()
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {status}: {''.join(errors[-20:])}")


def main(argv=None, spark=None):
    """Runs the job; with `spark` (an existing SparkSession) it is used and left running."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a folder of images or a file listing one path per line")
    parser.add_argument("--output", required=True, help="the Parquet output (a folder, as Spark writes it)")
    parser.add_argument("--binary", default="mobilenet", help="the mobilenet executable (a path, or a name shipped with --files)")
    parser.add_argument("--weights", help="the weight file (a path on every node, or a name shipped with --files)")
    parser.add_argument("--partitions", type=int, default=0, help="Spark partitions (default: the default parallelism); one mobilenet process each")
    parser.add_argument("--master", help="Spark master when not run by spark-submit (e.g. local[2])")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)

    if (args.master or "").startswith("local"):
        # Local mode talks to its own Python workers: bind to loopback (a host name that
        # resolves to 127.0.0.1 makes Spark pick another interface, which may not answer).
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    own_session = spark is None
    if own_session:
        builder = SparkSession.builder.appName("mobilenet-embed")
        if args.master:
            builder = builder.master(args.master)
        spark = builder.getOrCreate()
    # The executors' Python workers import this module for embed_partition (needed when it is
    # imported, as by test_local.py; harmless under spark-submit).
    spark.sparkContext.addPyFile(os.path.abspath(__file__))
    paths = list_paths(args.input)
    partitions = args.partitions or spark.sparkContext.defaultParallelism
    binary, weights = args.binary, args.weights
    rdd = spark.sparkContext.parallelize(paths, max(1, min(partitions, len(paths) or 1)))
    rows = rdd.mapPartitions(lambda part: embed_partition(part, binary, weights, extra))
    schema = StructType([
        StructField("path", StringType(), False),
        StructField("vector", ArrayType(FloatType(), False), True),
        StructField("error", StringType(), True),
        StructField("backbone", StringType(), True),
        StructField("preprocessing", StringType(), True),
    ])
    frame = spark.createDataFrame(rows, schema)
    frame.write.mode("overwrite" if args.overwrite else "errorifexists").parquet(args.output)
    written = spark.read.parquet(args.output)
    failed = written.filter(written.error.isNotNull()).count()
    print(f"embed_spark: {written.count()} rows ({failed} errors) in {args.output}", file=sys.stderr)
    if own_session:
        spark.stop()


if __name__ == "__main__":
    main()
