#!/usr/bin/env python3
"""Side-by-side speed of swift-mobilenet and the Python stacks on this machine.

One invocation:
  1. creates a virtual environment (default `.venv-bench` in the repository, git-ignored) and
     pip-installs the peers into it: TensorFlow + Keras, tf2onnx, ONNX Runtime, LiteRT
     (ai-edge-litert, XNNPACK), Pillow; PyTorch + torchvision only with `--torch` (PyPI's only
     torch wheel here is the CUDA build, about 7 GB with its dependencies);
     `--reuse-packages-of /opt/tfenv/bin/python` reuses an existing TensorFlow install;
  2. builds the Keras MobileNetV2 (alpha 1.0, 224x224, with the top) and exports it to ONNX
     (tf2onnx, from a SavedModel) and TFLite (TFLiteConverter); random weights unless the
     shared ImageNet weights are found (speed does not depend on the values);
  3. measures, each peer in its own process: batch-1 latency at 1 and 2 threads, batch-32
     throughput (2 threads), cold start (process start to the first classification printed)
     and peak RSS; our numbers come from `mobilenet bench` and `mobilenet classify`;
  4. end to end: embedding every JPEG of the flowers folder (550 files) with our
     `mobilenet embed` vs Keras `image_dataset_from_directory` + `predict` and ONNX Runtime +
     Pillow (wall time of the whole process, images per second);
  5. repeats steps 3 and 4 `--rounds` times (default 3), each round running every system in turn, and
     prints a table of the medians over rounds with the ratio of ours to each peer (the
     per-round values follow as JSON);
  6. quantized TFLite (issue 31): the same Keras model converted by TFLiteConverter to full-integer
     int8 (per-channel weights, uint8 input and output, calibrated on data/imagenet-sample) and,
     when present, the shared Coral uint8 file: LiteRT's default (XNNPACK) run of each file
     ("litert-int8", "litert-coral") against ours on the same file (`mobilenet bench --model`,
     "ours-int8", "ours-coral"), batch-1 latency and batch-32 throughput, and `mobilenet embed
     --model` of the flowers with the int8 file; the table adds ours-int8 / litert-int8,
     ours-coral / litert-coral and ours-int8 / ours (our integer path against our float one);
  7. does all of that in two conditions (`--conditions quiet,loaded`): a quiet machine, and a
     loaded one, where a competing busy process (one Python thread spinning, pinned to CPU 0
     with taskset when available) runs for the whole condition, the same for every system.
     Loaded rows are marked "(loaded)".

  python3 scripts/bench/peers.py [--rounds 3] [--iterations 30] [--torch] [--skip-e2e] [--conditions quiet,loaded] [--quantized-only]

The machine is shared and noisy: ratios are from one run. See docs/performance.md.
"""
import argparse
import shutil
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("MOBILENET_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))
WEIGHTS = os.path.join(SHARED, "data/weights/mobilenet_v2_1.0_224_dequant.h5")
WEIGHTS_NO_TOP = os.path.join(SHARED, "data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5")
FLOWERS = os.path.join(SHARED, "data/flowers")
IMAGE = os.path.join(ROOT, "Examples/chelsea.png")
CORAL = os.path.join(SHARED, "data/tflite/mobilenet_v2_1.0_224_quant.tflite")
SAMPLE = os.path.join(SHARED, "data/imagenet-sample")
PACKAGES = ["tensorflow==2.21.*", "keras==3.15.*", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "pillow", "numpy"]


def log(message):
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def ensure_venv(args):
    """Creates the venv, installs the peers and re-runs this script inside it."""
    venv = os.path.abspath(args.venv)
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if not os.path.exists(python):
        base = args.reuse_packages_of or sys.executable
        log("creating " + venv)
        subprocess.run([base, "-m", "venv", venv], check=True)
        if args.reuse_packages_of:
            # The base may itself be a venv (whose packages --system-site-packages would not
            # see): add its site-packages after the new venv's own with a .pth file.
            theirs = subprocess.run([base, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True).stdout.strip()
            ours = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True).stdout.strip()
            with open(os.path.join(ours, "zz_reused_packages.pth"), "w") as f:
                f.write(theirs + "\n")
    packages = list(PACKAGES) + (["torch", "torchvision"] if args.torch else [])
    missing = subprocess.run([python, "-c", "import tensorflow, keras, tf2onnx, onnxruntime, ai_edge_litert, PIL"
                              + (", torch, torchvision" if args.torch else "")], capture_output=True).returncode != 0
    if missing:
        log("pip install " + " ".join(packages))
        subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- workers (one process each)

def load_peer(peer, threads, workdir):
    """Returns run(batch ndarray) -> ndarray for a peer with `threads` threads."""
    import numpy as np
    if peer == "keras":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras
        model = keras.models.load_model(os.path.join(workdir, "model.keras"))
        function = tf.function(lambda x: model(x, training=False), jit_compile=False)
        return lambda x: function(tf.constant(x)).numpy()
    if peer == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(os.path.join(workdir, "model.onnx"), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if peer in ("litert", "litert-int8", "litert-coral"):
        from ai_edge_litert.interpreter import Interpreter
        path = {"litert": os.path.join(workdir, "model.tflite"), "litert-int8": os.path.join(workdir, "model-int8.tflite"), "litert-coral": CORAL}[peer]
        interpreter = Interpreter(model_path=path, num_threads=threads)
        state = {"batch": None}

        def run(x):
            detail = interpreter.get_input_details()[0]
            if state["batch"] != x.shape[0]:
                interpreter.resize_tensor_input(detail["index"], list(x.shape))
                interpreter.allocate_tensors()
                state["batch"] = x.shape[0]
                detail = interpreter.get_input_details()[0]
            if detail["dtype"] != np.float32:
                # An integer input gets the images through its quantization, as LiteRT's users feed it.
                scale, zero = detail["quantization"]
                info = np.iinfo(detail["dtype"])
                x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])
            interpreter.set_tensor(detail["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        return run
    if peer == "torch":
        import torch
        import torchvision
        torch.set_num_threads(threads)
        model = torchvision.models.mobilenet_v2().eval()

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
        return run
    raise SystemExit(f"unknown peer {peer}")


def worker_speed(args):
    import numpy as np
    run = load_peer(args.peer, args.threads, args.workdir)
    x = np.random.default_rng(42).uniform(-1, 1, (args.batch, 224, 224, 3)).astype(np.float32)
    for _ in range(args.warmup):
        run(x)
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    print(json.dumps({"medianMilliseconds": median, "imagesPerSecond": args.batch / (median / 1000), "peakRSSMegabytes": peak_rss_mb()}))


def worker_cold(args):
    """Process start to the first classification printed: import, load the model, read and
    preprocess one image, classify, print."""
    import numpy as np
    from PIL import Image
    run = load_peer(args.peer, args.threads, args.workdir)
    image = Image.open(IMAGE).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(image, dtype=np.float32) / 127.5 - 1)[None]
    probabilities = run(x)
    print("top-1", int(np.argmax(probabilities)), "rss", peak_rss_mb(), flush=True)


def worker_e2e(args):
    """Embeds every image of the flowers folder; prints the number of images."""
    import numpy as np
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(FLOWERS) for f in fs if f.lower().endswith((".jpg", ".jpeg")))
    if args.peer == "keras":
        import tensorflow as tf
        import keras
        model = keras.applications.MobileNetV2(include_top=False, pooling="avg", weights=WEIGHTS_NO_TOP if os.path.exists(WEIGHTS_NO_TOP) else None)
        dataset = keras.utils.image_dataset_from_directory(FLOWERS, labels=None, image_size=(224, 224), batch_size=32, shuffle=False)
        dataset = dataset.map(keras.applications.mobilenet_v2.preprocess_input).prefetch(tf.data.AUTOTUNE)
        embeddings = model.predict(dataset, verbose=0)
    else:
        from PIL import Image
        run = load_peer("onnxruntime", args.threads, args.workdir + "/no_top")
        embeddings = []
        for start in range(0, len(files), 32):
            batch = []
            for path in files[start:start + 32]:
                image = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
                batch.append(np.asarray(image, dtype=np.float32) / 127.5 - 1)
            embeddings.append(run(np.stack(batch)))
        embeddings = np.concatenate(embeddings)
    print(json.dumps({"images": int(embeddings.shape[0]), "peakRSSMegabytes": peak_rss_mb()}))


# ---------------------------------------------------------------- export

def export_models(workdir):
    """Keras MobileNetV2 to .keras, ONNX (tf2onnx) and TFLite; the no-top variant to ONNX."""
    import tensorflow as tf
    import keras
    for include_top, sub in [(True, ""), (False, "no_top")]:
        directory = os.path.join(workdir, sub)
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(os.path.join(directory, "model.onnx")):
            continue
        weights = WEIGHTS if include_top else WEIGHTS_NO_TOP
        model = keras.applications.MobileNetV2(include_top=include_top, pooling=None if include_top else "avg",
                                               weights=weights if os.path.exists(weights) else None)
        model.save(os.path.join(directory, "model.keras"))
        saved = os.path.join(directory, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved, "--output",
                        os.path.join(directory, "model.onnx"), "--opset", "17"], check=True, capture_output=True)
        if include_top:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            with open(os.path.join(directory, "model.tflite"), "wb") as f:
                f.write(converter.convert())
            # Full-integer int8 (per-channel weights, uint8 ends), calibrated on the ImageNet
            # sample photos (random images without the shared data).
            import numpy as np
            if os.path.isdir(SAMPLE):
                photos = sorted(os.path.join(SAMPLE, f) for f in os.listdir(SAMPLE))
                calibration = [np.asarray(keras.utils.load_img(p, target_size=(224, 224)), dtype=np.float32) / 127.5 - 1 for p in photos]
            else:
                calibration = list(np.random.default_rng(0).uniform(-1, 1, (32, 224, 224, 3)).astype(np.float32))
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[np.newaxis]] for x in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
            with open(os.path.join(directory, "model-int8.tflite"), "wb") as f:
                f.write(converter.convert())
        log(f"exported {'with' if include_top else 'without'} top to {directory}")


# ---------------------------------------------------------------- driver

def run_json(command, env=None):
    """Runs a command that prints a JSON object; adds its peak RSS (MB, from /usr/bin/time,
    because ru_maxrss read inside a child started by this Python is not its own) as peakRSSMegabytes."""
    timer = ["/usr/bin/time", "-f", "RSSKB %M"] if os.path.exists("/usr/bin/time") else []
    result = subprocess.run(timer + command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        log("failed: " + " ".join(command) + "\n" + result.stderr[-2000:])
        return None
    lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return None
    value = json.loads(lines[-1])
    rss = next((int(l.split()[1]) / 1024 for l in result.stderr.splitlines() if l.startswith("RSSKB")), None)
    if rss is not None:
        value["peakRSSMegabytes"] = rss
    return value


def timed(command, env=None):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        log("failed: " + " ".join(command) + "\n" + result.stderr[-2000:])
        return None
    return elapsed


def measure_rss(command, env=None):
    """Wall seconds and peak RSS (MB) of a command via /usr/bin/time when present."""
    if os.path.exists("/usr/bin/time"):
        start = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-f", "RSSKB %M", *command], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        rss = next((int(l.split()[1]) / 1024 for l in result.stderr.splitlines() if l.startswith("RSSKB")), None)
        return (elapsed if result.returncode == 0 else None), rss
    return timed(command, env), None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=os.path.join(ROOT, ".venv-bench"))
    parser.add_argument("--reuse-packages-of", help="base the venv on this Python and also see its packages, to skip reinstalling TensorFlow (e.g. /opt/tfenv/bin/python)")
    parser.add_argument("--torch", action="store_true", help="also measure PyTorch (installs the ~7 GB CUDA wheel)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--batch-iterations", type=int, default=5)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--quantized-only", action="store_true",
                        help="only the rows of issue 31: our float and integer paths, LiteRT float and on the quantized files (no Keras, ONNX Runtime, passive or cold start); about a third of the time")
    parser.add_argument("--rounds", type=int, default=3, help="repeat every measurement this many times, interleaved; the table shows the medians")
    parser.add_argument("--mobilenet", default=os.path.join(ROOT, ".build/release/mobilenet"), help="our CLI (built with swift build -c release)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".venv-bench", "models"))
    parser.add_argument("--conditions", default="quiet,loaded", help="comma-separated: quiet (nothing else running), loaded (a busy process on one core)")
    parser.add_argument("--worker", choices=["speed", "cold", "e2e"], help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.worker:
        {"speed": worker_speed, "cold": worker_cold, "e2e": worker_e2e}[args.worker](args)
        return
    ensure_venv(args)
    if not os.path.exists(args.mobilenet):
        raise SystemExit(f"{args.mobilenet} not found: run `swift build -c release` first (or pass --mobilenet)")
    export_models(args.workdir)

    peers = ["litert"] if args.quantized_only else ["keras", "onnxruntime", "litert"] + (["torch"] if args.torch else [])
    quantized = [("ours-int8", "litert-int8", os.path.join(args.workdir, "model-int8.tflite"))]
    if os.path.exists(CORAL):
        quantized.append(("ours-coral", "litert-coral", CORAL))
    me = [sys.executable, os.path.abspath(__file__), "--workdir", args.workdir]
    results = {}  # metric -> {system: [value per round]}

    condition = {"suffix": ""}

    def put(metric, system, value):
        if value is not None:
            results.setdefault(metric + condition["suffix"], {}).setdefault(system, []).append(value)

    for name in [c.strip() for c in args.conditions.split(",") if c.strip()]:
        if name not in ("quiet", "loaded"):
            raise SystemExit(f"unknown condition {name!r}: use quiet and/or loaded")
        condition["suffix"] = " (loaded)" if name == "loaded" else ""
        competitor = None
        if name == "loaded":
            spin = [sys.executable, "-c", "while True: pass"]
            competitor = subprocess.Popen((["taskset", "-c", "0"] if shutil.which("taskset") else []) + spin)
            log("loaded: a busy process on CPU 0")
        try:
            measure_rounds(args, me, peers, quantized, put)
        finally:
            if competitor:
                competitor.kill()
                competitor.wait()

    print_table(results, peers, quantized)


# Our binary as it is (GNU OpenMP's bounded spin, adaptive threads), and as it ran before the
# thread work: OpenMP waiting passively, a fixed thread count ("passive" column).
OURS = [("ours", None, []), ("passive", dict(os.environ, OMP_WAIT_POLICY="passive"), ["--thread-policy", "fixed"])]


def measure_rounds(args, me, peers, quantized, put):
    """Every measurement, `args.rounds` times, each round running every system in turn."""
    # Rounds interleave every system, so a burst of load on this shared machine hits all of
    # them alike; the table shows the median over rounds.
    ours_variants = OURS[:1] if args.quantized_only else OURS
    for round_index in range(args.rounds):
        log(f"round {round_index + 1} of {args.rounds}")
        for threads in [1, 2]:
            for name, env, extra in ours_variants:
                ours = run_json([args.mobilenet, "bench", "--threads", str(threads), "--batch-size", "1", "--iterations", str(args.iterations), "--json", *extra], env)
                if ours:
                    put(f"batch-1 latency, {threads} thread(s) (ms)", name, ours["medianMilliseconds"])
            for peer in peers:
                r = run_json(me + ["--worker", "speed", "--peer", peer, "--threads", str(threads), "--batch", "1", "--iterations", str(args.iterations)])
                if r:
                    put(f"batch-1 latency, {threads} thread(s) (ms)", peer, r["medianMilliseconds"])
            for ours_name, peer, model in quantized:
                ours = run_json([args.mobilenet, "bench", "--model", model, "--threads", str(threads), "--batch-size", "1", "--iterations", str(args.iterations), "--json"])
                if ours:
                    put(f"batch-1 latency, {threads} thread(s) (ms)", ours_name, ours["medianMilliseconds"])
                r = run_json(me + ["--worker", "speed", "--peer", peer, "--threads", str(threads), "--batch", "1", "--iterations", str(args.iterations)])
                if r:
                    put(f"batch-1 latency, {threads} thread(s) (ms)", peer, r["medianMilliseconds"])
            log(f"batch-1 latency at {threads} thread(s) done")
        for name, env, extra in ours_variants:
            ours = run_json([args.mobilenet, "bench", "--threads", "2", "--batch-size", "32", "--iterations", str(args.batch_iterations), "--warmup", "1", "--json", *extra], env)
            if ours:
                put("batch-32 throughput, 2 threads (images/s)", name, ours["imagesPerSecond"])
                put("peak RSS, batch 32 (MB)", name, ours["peakRSSMegabytes"])
        for peer in peers:
            r = run_json(me + ["--worker", "speed", "--peer", peer, "--threads", "2", "--batch", "32", "--iterations", str(args.batch_iterations), "--warmup", "1"])
            if r:
                put("batch-32 throughput, 2 threads (images/s)", peer, r["imagesPerSecond"])
                put("peak RSS, batch 32 (MB)", peer, r["peakRSSMegabytes"])
        for ours_name, peer, model in quantized:
            ours = run_json([args.mobilenet, "bench", "--model", model, "--threads", "2", "--batch-size", "32", "--iterations", str(args.batch_iterations), "--warmup", "1", "--json"])
            if ours:
                put("batch-32 throughput, 2 threads (images/s)", ours_name, ours["imagesPerSecond"])
                put("peak RSS, batch 32 (MB)", ours_name, ours["peakRSSMegabytes"])
            if peer == "litert-coral":
                continue  # its RESHAPE to [1, 1001] fixes the batch: LiteRT's XNNPACK delegate cannot resize it to 32
            r = run_json(me + ["--worker", "speed", "--peer", peer, "--threads", "2", "--batch", "32", "--iterations", str(args.batch_iterations), "--warmup", "1"])
            if r:
                put("batch-32 throughput, 2 threads (images/s)", peer, r["imagesPerSecond"])
                put("peak RSS, batch 32 (MB)", peer, r["peakRSSMegabytes"])
        log("batch-32 throughput done")

        weights = ["--weights", WEIGHTS] if os.path.exists(WEIGHTS) and not args.quantized_only else []
        if weights:
            for name, env, extra in ours_variants:
                seconds, rss = measure_rss([args.mobilenet, "classify", IMAGE, *weights, "--threads", "2", *extra], env)
                put("cold start, classify 1 image (s)", name, seconds)
                put("peak RSS, classify 1 image (MB)", name, rss)
        for peer in [] if args.quantized_only else peers:
            seconds, rss = measure_rss(me + ["--worker", "cold", "--peer", peer, "--threads", "2"])
            put("cold start, classify 1 image (s)", peer, seconds)
            put("peak RSS, classify 1 image (MB)", peer, rss)
        if not args.quantized_only:
            log("cold start done")

        if not args.skip_e2e and os.path.isdir(FLOWERS):
            count = sum(1 for d, _, fs in os.walk(FLOWERS) for f in fs if f.lower().endswith((".jpg", ".jpeg")))
            out = os.path.join(args.workdir, "flowers.npy")
            no_top = ["--weights", WEIGHTS_NO_TOP] if os.path.exists(WEIGHTS_NO_TOP) else []
            if no_top:
                for name, env, extra in ours_variants:
                    seconds = timed([args.mobilenet, "embed", FLOWERS, "--recursive", *no_top, "-o", out, "--overwrite", "--batch-size", "32", *extra], env)
                    put(f"embed flowers folder, {count} JPEGs (images/s)", name, count / seconds if seconds else None)
                seconds = timed([args.mobilenet, "embed", FLOWERS, "--recursive", "--model", quantized[0][2], "-o", out, "--overwrite", "--batch-size", "32"])
                put(f"embed flowers folder, {count} JPEGs (images/s)", "ours-int8", count / seconds if seconds else None)
            for peer in [] if args.quantized_only else ["keras", "onnxruntime"]:
                seconds = timed(me + ["--worker", "e2e", "--peer", peer, "--threads", "2"])
                put(f"embed flowers folder, {count} JPEGs (images/s)", peer, count / seconds if seconds else None)
            log("end-to-end done")


def print_table(results, peers, quantized=()):
    systems = ["ours", "passive"] + peers + [name for pair in quantized for name in pair[:2]]
    pairs = [("ours", p) for p in ["passive"] + peers] + [(a, b) for a, b, _ in quantized] + ([("ours-int8", "ours")] if quantized else [])
    header = ["metric"] + systems + [f"{a} vs {b}" for a, b in pairs]
    rows = []
    runs = results
    results = {metric: {system: statistics.median(v) for system, v in values.items()} for metric, values in runs.items()}
    for metric, values in results.items():
        row = [metric] + [("%.3g" % values[s]) if values.get(s) is not None else "-" for s in systems]
        for x, y in pairs:
            a, b = values.get(x), values.get(y)
            row.append("%.2fx" % (a / b) if a and b else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    print("Ratios: a / b (for ms, s and MB lower is better; for images/s higher is better).")
    for r in [header, ["-" * w for w in widths]] + rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    print(json.dumps({"medians": results, "rounds": runs}))


if __name__ == "__main__":
    main()
