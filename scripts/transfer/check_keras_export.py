"""Checks a `.keras` file written by `mobilenet export` with real Keras (issue 5, Keras round trip).

Versions used: Python 3.11, TensorFlow 2.21.0, Keras 3.15.1, h5py 3.14.0, NumPy 2.x
(the /opt/tfenv virtualenv). CI has no TensorFlow; the Swift tests check the archive's
structure, this script checks that Keras itself accepts it and computes the same numbers.

Three checks:
1. structure: the exported `config.json` equals the config Keras 3 writes for the same model
   built the Keras way (`keras.applications.MobileNetV2(include_top=False, weights=None)` called
   with training=False → GlobalAveragePooling2D → Dropout → [Dense(relu) → Dropout →]
   Dense(softmax)), ignoring `shared_object_id`; and the HDF5 paths of `model.weights.h5` equal
   those of `model.save()` of that model (datasets with their shapes).
2. load: `keras.models.load_model(path)` loads it (every weight is assigned by path).
3. parity (with --images): the probabilities of the loaded Keras model on the images,
   preprocessed as `mobilenet predict` does (JPEG: tf.io.decode_jpeg with
   dct_method="INTEGER_ACCURATE", libjpeg's islow IDCT; others: tf.io.decode_image; EXIF
   ignored; tf.image.resize bilinear without antialiasing to the model's input size;
   x / 127.5 - 1; use photos without EXIF rotation, or a model trained with EXIF ignored),
   against the probabilities of `mobilenet predict --json` (--ours FILE, or run
   with --mobilenet BIN --model MODEL.json). With --model and --weights it also compares the
   loaded export with the same classifier built directly in Keras (MobileNetV2 with the
   backbone weight file + a head with the model file's Dense weights): this isolates the
   export from the image pipeline. A fine-tuned model file (`train --fine-tune-at`, version 2)
   is handled too: the reference base gets the file's fine-tuned layers (base64 float32,
   SHA-256 checked) in place of the backbone file's, and the export must carry them.

Run:
  /opt/tfenv/bin/python scripts/transfer/check_keras_export.py classifier.keras \
      [--images IMG_OR_DIR ...] [--ours predict.json | --mobilenet .build/release/mobilenet \
       --model classifier.json --weights BACKBONE.h5] [--tolerance 1e-4]
Exit status 0 when every check passes; prints the max |diff| of the probabilities.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def strip(value):
    """The config without fields that legitimately differ (object ids)."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def diff(a, b, path="", out=None, limit=40):
    """Differences between two JSON values, as readable lines."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}/{k}: missing in export (keras: {json.dumps(b[k])[:120]})")
            elif k not in b:
                out.append(f"{path}/{k}: extra in export ({json.dumps(a[k])[:120]})")
            else:
                diff(a[k], b[k], f"{path}/{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items in export, {len(b)} in keras")
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out, limit)
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: export {json.dumps(a)} != keras {json.dumps(b)}")
    return out


def h5_layout(data: bytes):
    """Every group and dataset path of a weights file, with dataset shapes and `name` attributes."""
    with tempfile.NamedTemporaryFile(suffix=".h5") as tmp:
        tmp.write(data)
        tmp.flush()
        entries = {}
        with h5py.File(tmp.name, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    entries[name] = ("dataset", tuple(obj.shape), str(obj.dtype))
                else:
                    attr = obj.attrs.get("name")
                    entries[name] = ("group", attr.decode() if isinstance(attr, bytes) else attr)
            f.visititems(visit)
            entries["/"] = ("group", f["vars"].attrs.get("name") if "vars" in f else None)
        return entries


def reference_model(config):
    """The same model built the Keras way, from the exported config's hyper-parameters."""
    outer = config["config"]["layers"]
    base_cfg = next(l for l in outer if l["class_name"] == "Functional")
    name = base_cfg["config"]["name"]  # mobilenetv2_<alpha>_<rows>
    alpha = float(name.split("_")[1])
    shape = base_cfg["config"]["layers"][0]["config"]["batch_shape"][1:]
    keras.backend.clear_session()
    base = keras.applications.MobileNetV2(input_shape=tuple(shape), alpha=alpha, include_top=False, weights=None)
    base.trainable = False
    inputs = keras.Input(tuple(shape))
    x = base(inputs, training=False)
    for layer in outer:
        cls, c = layer["class_name"], layer["config"]
        if cls == "GlobalAveragePooling2D":
            x = keras.layers.GlobalAveragePooling2D()(x)
        elif cls == "GlobalMaxPooling2D":
            x = keras.layers.GlobalMaxPooling2D()(x)
        elif cls == "Dropout":
            x = keras.layers.Dropout(c["rate"])(x)
        elif cls == "Dense":
            x = keras.layers.Dense(c["units"], activation=c["activation"])(x)
    return keras.Model(inputs, x)


def decode_array(array: dict) -> np.ndarray:
    """One fine-tuned array of a model file: base64 little-endian float32, SHA-256 checked."""
    import base64
    import hashlib

    raw = base64.b64decode(array["float32LE"])
    if hashlib.sha256(raw).hexdigest() != array["sha256"]:
        raise ValueError(f"{array['name']}: SHA-256 does not match")
    return np.frombuffer(raw, dtype="<f4").reshape(array["shape"])


def apply_fine_tuned_layers(base, saved) -> int:
    """Replaces the base layers a fine-tuned model file carries (`fineTuning.layers`); returns
    how many layers were replaced (0 for a head-only file)."""
    layers = (saved.get("fineTuning") or {}).get("layers", [])
    for layer in layers:
        target = base.get_layer(layer["name"])
        target.set_weights([decode_array(a) for a in layer["arrays"]])
    return len(layers)


def reference_classifier(model_file: Path, weights: str):
    """The classifier built directly in Keras: MobileNetV2 loading the backbone weight file
    (with the fine-tuned layers of a fine-tuned model file put in their place), then the head
    of a `mobilenet train` model file (Dense weights from its JSON)."""
    saved = json.loads(model_file.read_text())
    b = saved["backbone"]
    shape = (b["inputHeight"], b["inputWidth"], 3)
    base = keras.applications.MobileNetV2(input_shape=shape, alpha=float(b["alpha"]), include_top=False, weights=None)
    base.load_weights(weights)
    replaced = apply_fine_tuned_layers(base, saved)
    if replaced:
        print(f"reference: {replaced} fine-tuned base layers from {model_file} (from layer {saved['fineTuning']['fineTuneAt']}, {saved['fineTuning'].get('firstLayer')})")
    inputs = keras.Input(shape)
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x) if b.get("pooling", "avg") == "avg" else keras.layers.GlobalMaxPooling2D()(x)
    layers = saved["head"]["layers"]
    dense = [i for i, l in enumerate(layers) if "dense" in l]
    for i, layer in enumerate(layers):
        if "dense" in layer:
            d = layer["dense"].get("_0", layer["dense"])  # Swift Codable: {"dense": {"_0": {...}}}
            relu = i + 1 < len(layers) and "relu" in layers[i + 1]
            act = "softmax" if i == dense[-1] else ("relu" if relu else "linear")
            lyr = keras.layers.Dense(d["outputs"], activation=act)
            x = lyr(x)
            lyr.set_weights([np.array(d["kernel"], np.float32).reshape(d["inputs"], d["outputs"]), np.array(d["bias"], np.float32)])
    return keras.Model(inputs, x)


def check_structure(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        config = json.loads(z.read("config.json"))
        metadata = json.loads(z.read("metadata.json"))
        weights = z.read("model.weights.h5")
    problems = []
    if sorted(names) != ["config.json", "metadata.json", "model.weights.h5"]:
        problems.append(f"archive members {names}")
    if "keras_version" not in metadata:
        problems.append(f"metadata.json without keras_version: {metadata}")
    reference = reference_model(config)
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = Path(tmp) / "reference.keras"
        reference.save(ref_path)
        with zipfile.ZipFile(ref_path) as z:
            ref_config = json.loads(z.read("config.json"))
            ref_weights = z.read("model.weights.h5")
    problems += ["config " + line for line in diff(strip(config), strip(ref_config))]
    ours, theirs = h5_layout(weights), h5_layout(ref_weights)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            problems.append(f"weights /{key}: export {ours.get(key)} != keras {theirs.get(key)}")
    return problems


def preprocess(file: Path, height: int, width: int) -> np.ndarray:
    data = tf.io.read_file(str(file))
    if file.read_bytes()[:3] == b"\xff\xd8\xff":
        # libjpeg's accurate integer IDCT, as `mobilenet` decodes (TF's default is INTEGER_FAST).
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
    else:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (height, width), method="bilinear", antialias=False)
    return (image.numpy() / 127.5 - 1.0).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keras_file", type=Path)
    parser.add_argument("--images", nargs="*", default=[])
    parser.add_argument("--ours", type=Path, help="output of `mobilenet predict --json --top-k <classes>`")
    parser.add_argument("--mobilenet", help="the mobilenet binary, to run predict")
    parser.add_argument("--model", help="the model file given to mobilenet export")
    parser.add_argument("--weights", help="the backbone weight file given to mobilenet export")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--skip-structure", action="store_true")
    args = parser.parse_args()

    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, h5py {h5py.__version__}, numpy {np.__version__}")
    ok = True
    if not args.skip_structure:
        problems = check_structure(args.keras_file)
        for line in problems:
            print("structure:", line)
        print(f"structure: {'OK' if not problems else f'{len(problems)} differences'} (config.json and model.weights.h5 paths vs Keras's own save)")
        ok &= not problems

    model = keras.models.load_model(args.keras_file)
    print(f"load_model: OK ({model.name}, {model.count_params()} parameters, output {model.output_shape})")

    files = []
    for item in args.images:
        p = Path(item)
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    if files:
        classes = model.output_shape[-1]
        if args.ours:
            ours = json.loads(args.ours.read_text())
        else:
            cmd = [args.mobilenet, "predict", "--model", args.model, "--json", "--top-k", str(classes), "--no-cache"]
            if args.weights:
                cmd += ["--weights", args.weights]
            run = subprocess.run(cmd + [str(f) for f in files], capture_output=True, text=True)
            if run.returncode != 0:
                print(f"mobilenet predict exited with {run.returncode}: {run.stderr.strip()[-2000:]}")
            if not run.stdout.strip():
                return 1
            ours = json.loads(run.stdout)
        for message in ours.get("errors", []):
            print(f"parity: mobilenet predict error: {message}")
        # Class order: the model file's class names are the Keras output order.
        names = None
        if args.model and not args.ours:
            names = json.loads(Path(args.model).read_text())["classNames"]
        h, w = model.input_shape[1:3]
        by_file = {r["file"]: r for r in ours["results"]}
        worst = 0.0
        for f in files:
            result = by_file.get(str(f)) or by_file.get(os.path.relpath(f))
            if result is None:
                print(f"parity: {f}: no result from mobilenet predict")
                ok = False
                continue
            probs = {p["className"]: p["probability"] for p in result["predictions"]}
            order = names or sorted(probs)
            ours_vec = np.array([probs[n] for n in order])
            keras_vec = model.predict(preprocess(f, h, w)[None], verbose=0)[0].astype(np.float64)
            d = float(np.max(np.abs(ours_vec - keras_vec)))
            worst = max(worst, d)
            print(f"parity: {f}: max |diff| {d:.3g} (top: {order[int(np.argmax(keras_vec))]} {keras_vec.max():.4f})")
        print(f"parity: {len(files)} images, max |diff| Keras load_model vs mobilenet predict = {worst:.3g} (tolerance {args.tolerance})")
        if args.model and args.weights:
            batch = np.stack([preprocess(f, h, w) for f in files])
            reference = reference_classifier(Path(args.model), args.weights)
            d = float(np.max(np.abs(model.predict(batch, verbose=0) - reference.predict(batch, verbose=0))))
            print(f"reference: max |diff| loaded export vs the classifier built in Keras from {args.weights} + the head = {d:.3g}")
            ok &= d <= args.tolerance
        ok &= worst <= args.tolerance
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
