"""`mobilenet export -o FILE.tflite` read by LiteRT (ai-edge-litert, scripts/requirements-test.txt):
the files load, their `serving_default` signature runs, the packed label file is where TFLite
Support looks for it, and LiteRT classifies photos as `mobilenet classify --model` does with the
same file. (The Swift suite checks the outputs entry by entry on identical inputs:
Tests/MobileNetTFLiteTests/TFLiteExportTests.swift.)"""

import re
import subprocess
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import BINARY, CHELSEA, COFFEE, NO_TOP_WEIGHTS, SHARED, TOP_WEIGHTS, need

litert = pytest.importorskip("ai_edge_litert.interpreter")


def export(tmp_path, name, *args):
    out = tmp_path / name
    result = subprocess.run([str(BINARY), "export", "-o", str(out), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result.stderr


def our_top(model, image):
    """Top-3 class names `mobilenet classify --model` prints for one image."""
    result = subprocess.run([str(BINARY), "classify", "--model", str(model), str(image), "--top-k", "3"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return re.findall(r"^\s+\d\.\s+\S+\s+(.+?)\s+[\d.]+%$", result.stdout, re.M)


def pixels(image, detail):
    """The photo resized to the input (bilinear), as uint8 pixels or x / 127.5 - 1."""
    _, h, w, _ = detail["shape"]
    x = np.asarray(Image.open(image).convert("RGB").resize((w, h), Image.BILINEAR))[np.newaxis]
    return x.astype(np.uint8) if detail["dtype"] == np.uint8 else (x.astype(np.float32) / 127.5 - 1)


def test_int8_with_uint8_ends_runs_in_litert_with_its_labels(tmp_path):
    need(TOP_WEIGHTS.exists() and (SHARED / "data/imagenet-sample").is_dir(), f"shared weights and photos not found in {SHARED}")
    model, log = export(tmp_path, "imagenet-int8.tflite", "--weights", str(TOP_WEIGHTS), "--quantize", "int8",
                        "--calibration", str(SHARED / "data/imagenet-sample"), "--calibration-limit", "40",
                        "--input-type", "uint8", "--output-type", "uint8")
    assert "int8 (calibrated on 40 images; input uint8, output uint8)" in log
    labels = zipfile.ZipFile(model).read("labels.txt").decode().splitlines()
    assert len(labels) == 1000 and labels[285] == "Egyptian_cat"

    interpreter = litert.Interpreter(model_path=str(model))
    assert list(interpreter.get_signature_list()) == ["serving_default"]
    runner = interpreter.get_signature_runner("serving_default")
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8 and list(detail["shape"]) == [1, 224, 224, 3]
    for image in (CHELSEA, COFFEE):
        probabilities = runner(image=pixels(image, detail))["probabilities"][0]
        assert probabilities.dtype == np.uint8 and probabilities.shape == (1000,)
        ours = our_top(model, image)
        # The same file, preprocessed by Pillow here and by the library there: LiteRT's top-1
        # is among ours.
        assert labels[int(np.argmax(probabilities))] in ours, (image, labels[int(np.argmax(probabilities))], ours)


def test_float32_embedder_gives_the_embedding(tmp_path):
    need(NO_TOP_WEIGHTS.exists(), f"{NO_TOP_WEIGHTS} not found")
    model, log = export(tmp_path, "embedder.tflite", "--weights", str(NO_TOP_WEIGHTS))
    assert "the 1280-d pooled embedding" in log
    interpreter = litert.Interpreter(model_path=str(model))
    runner = interpreter.get_signature_runner("serving_default")
    detail = interpreter.get_input_details()[0]
    embedding = runner(image=pixels(CHELSEA, detail))["embedding"]
    assert embedding.shape == (1, 1280) and np.all(np.isfinite(embedding)) and embedding.min() >= 0
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(model)  # an embedder packs no label file
