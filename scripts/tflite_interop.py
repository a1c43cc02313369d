#!/usr/bin/env python3
"""LiteRT (ai-edge-litert, pinned in scripts/requirements-test.txt) on a .tflite file the library
wrote: Tests/MobileNetTFLiteTests/TFLiteExportTests.swift runs it to check that LiteRT loads an
exported model, finds its signature, and computes what the library computes.

  scripts/tflite_interop.py MODEL.tflite INPUTS.npy

INPUTS.npy: float32 [N, H, W, 3], the preprocessed images. Each is fed as LiteRT's users feed
it: quantized with the input tensor's scale and zero point (round half away from zero, clamped)
for an integer input. Prints JSON: the input and output tensors' dtype and quantization, the
signature keys, the packed files (zipfile), and per image the raw outputs of the built-in
kernels and of the default (XNNPACK) resolver.
"""
import json
import sys
import zipfile

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def quantize(x, detail):
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.sign(x / scale) * np.floor(np.abs(x / scale) + 0.5) + zero
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def run(path, inputs, resolver):
    it = Interpreter(model_path=path, experimental_op_resolver_type=resolver, num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    outputs = []
    for x in inputs:
        it.set_tensor(i["index"], quantize(x[np.newaxis], i))
        it.invoke()
        outputs.append(it.get_tensor(o["index"])[0].tolist())
    return it, i, o, outputs


def main():
    path, npy = sys.argv[1], sys.argv[2]
    inputs = np.load(npy).astype(np.float32)
    it, i, o, builtin = run(path, inputs, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    _, _, _, xnnpack = run(path, inputs, OpResolverType.AUTO)
    try:
        packed = {name: zipfile.ZipFile(path).read(name).decode() for name in zipfile.ZipFile(path).namelist()}
    except zipfile.BadZipFile:
        packed = {}
    print(json.dumps({
        "input": {"dtype": np.dtype(i["dtype"]).name, "shape": i["shape"].tolist(), "quantization": list(i["quantization"])},
        "output": {"dtype": np.dtype(o["dtype"]).name, "shape": o["shape"].tolist(), "quantization": list(o["quantization"])},
        "signatures": sorted(it.get_signature_list().keys()),
        "packed": packed,
        "builtin": builtin,
        "xnnpack": xnnpack,
    }))


if __name__ == "__main__":
    main()
