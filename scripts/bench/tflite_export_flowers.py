#!/usr/bin/env python3
"""What `mobilenet export --quantize int8` costs, against TensorFlow's converter (issue 30).

For each `mobilenet train` model file given (a head-only and a fine-tuned flowers classifier):

1. `mobilenet export` writes it as .keras (the Keras transfer model), as float32 .tflite and as
   int8 .tflite calibrated on data/flowers/train (uint8 input and output, as Coral needs);
2. TensorFlow's TFLiteConverter converts the .keras model to int8 with the same calibration
   images (the representative dataset, preprocessed here as `keras.utils.load_img` does:
   bilinear to 224x224, x / 127.5 - 1) and the same uint8 ends;
3. on data/flowers/val: accuracy of Keras (float), of `mobilenet evaluate` on the model file
   (float) and on our int8 file (our integer kernels), of LiteRT on our int8 file and on
   TensorFlow's (built-in kernels and XNNPACK; the photos preprocessed here, quantized with
   the input's scale and zero point), and the share of photos where LiteRT's top-1 on our file
   equals its top-1 on TensorFlow's;
4. the file sizes, and LiteRT's latency (1 thread, XNNPACK, alternated rounds, medians) on
   both int8 files.

  .venv/bin/python scripts/bench/tflite_export_flowers.py head.json ft.json [--weights NO_TOP.h5] [--json out.json]

Versions: scripts/requirements-fixtures.txt (TF 2.21, Keras 3, ai-edge-litert 2.3.0).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts/fixtures"))
from _common import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402


def images(folder):
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    items = [(f, i) for i, c in enumerate(classes) for f in sorted((folder / c).iterdir()) if f.is_file()]
    return classes, items


def load(path):
    img = keras.utils.load_img(path, target_size=(224, 224), interpolation="bilinear")
    return np.asarray(img, dtype=np.float32) / 127.5 - 1


def mobilenet(binary, *args):
    result = subprocess.run([binary, *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"mobilenet {' '.join(args)} failed:\n{result.stderr}")
    return result


def quantize(x, detail):
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.sign(x / scale) * np.floor(np.abs(x / scale) + 0.5) + zero, info.min, info.max).astype(detail["dtype"])


def litert_top1(path, inputs, resolver):
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver, num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    tops = []
    for x in inputs:
        it.set_tensor(i["index"], quantize(x[np.newaxis], i))
        it.invoke()
        tops.append(int(np.argmax(it.get_tensor(o["index"])[0])))
    return tops


def latency(paths, rounds=3, runs=30):
    interpreters = {}
    for name, path in paths.items():
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.full(d["shape"], 128, dtype=d["dtype"]))
        it.invoke()
        interpreters[name] = it
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, it in interpreters.items():
            for _ in range(runs):
                t = time.perf_counter()
                it.invoke()
                times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(v) for name, v in times.items()}


def accuracy(tops, labels):
    return sum(int(t == l) for t, l in zip(tops, labels)) / len(labels)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--binary", default=str(REPO / ".build/release/mobilenet"))
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    shared = Path(args.shared)
    weights = args.weights or str(shared / "data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5")
    train_dir, val_dir = shared / "data/flowers/train", shared / "data/flowers/val"
    _, calibration_items = images(train_dir)
    calibration = np.stack([load(f) for f, _ in calibration_items])
    classes, val_items = images(val_dir)
    val = np.stack([load(f) for f, _ in val_items])
    labels = [l for _, l in val_items]
    report = {"cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "), "models": {}}
    for model_file in args.models:
        stem = Path(model_file).with_suffix("")
        keras_file, ours, ours_f32, theirs = [Path(f"{stem}{s}") for s in (".keras", "-ours-int8.tflite", "-ours-float32.tflite", "-tf-int8.tflite")]
        for path in (keras_file, ours, ours_f32):
            path.unlink(missing_ok=True)
        mobilenet(args.binary, "export", "--model", model_file, "--weights", weights, "-o", str(keras_file))
        mobilenet(args.binary, "export", "--model", model_file, "--weights", weights, "-o", str(ours_f32))
        mobilenet(args.binary, "export", "--model", model_file, "--weights", weights, "-o", str(ours), "--quantize", "int8",
                  "--calibration", str(train_dir), "--input-type", "uint8", "--output-type", "uint8")
        model = keras.models.load_model(keras_file)
        keras_tops = list(np.argmax(model.predict(val, batch_size=32, verbose=0), axis=1))
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[np.newaxis]] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        theirs.write_bytes(converter.convert())

        def ours_evaluate(path):
            out = mobilenet(args.binary, "evaluate", "--model", str(path), str(val_dir), "--no-cache", "--weights", weights).stdout
            return float(re.search(r"accuracy ([0-9.]+)", out).group(1))

        row = {
            "keras_float": accuracy(keras_tops, labels),
            "ours_float_model_file": ours_evaluate(model_file),
            "ours_int8_run_by_us": ours_evaluate(ours),
        }
        tops = {}
        for name, path in (("ours_int8", ours), ("tf_int8", theirs)):
            for resolver_name, resolver in (("builtin", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), ("xnnpack", OpResolverType.AUTO)):
                tops[f"{name}_litert_{resolver_name}"] = litert_top1(path, val, resolver)
                row[f"{name}_litert_{resolver_name}"] = accuracy(tops[f"{name}_litert_{resolver_name}"], labels)
        row["litert_top1_agreement_ours_vs_tf"] = sum(a == b for a, b in zip(tops["ours_int8_litert_builtin"], tops["tf_int8_litert_builtin"])) / len(labels)
        row["litert_top1_agreement_ours_int8_vs_keras_float"] = sum(a == b for a, b in zip(tops["ours_int8_litert_builtin"], keras_tops)) / len(labels)
        row["bytes"] = {"ours_int8": ours.stat().st_size, "tf_int8": theirs.stat().st_size, "ours_float32": ours_f32.stat().st_size}
        row["litert_latency_ms_1_thread"] = latency({"ours_int8": ours, "tf_int8": theirs})
        report["models"][model_file] = row
        print(json.dumps({model_file: row}, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
