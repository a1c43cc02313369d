"""The server a Python user would write for the same job, for scripts/bench/serve_bench.py:
ONNX Runtime (the Keras MobileNetV2 with its top, converted with tf2onnx by peers.py) behind
Starlette on uvicorn, decoding with Pillow as Keras's `load_img` does (RGB, bilinear resize to
224x224) and preprocessing with `mobilenet_v2.preprocess_input` (x / 127.5 - 1).

Routes, with the same request and response shapes as `mobilenet serve`:
- POST /v1/models/imagenet:predict  {"instances": [{"b64": "..."}, ...]} -> {"predictions": [[1000 floats], ...]}
- POST /v1/classify?top=5           raw image bytes -> {"predictions": [{"rank", "index", "probability"}, ...]}

Run: .venv-bench/bin/python scripts/bench/python_server.py --model .venv-bench/models/model.onnx --port 8601
(Measured with starlette 1.10.0, uvicorn 0.54.0, onnxruntime 1.32.0, Pillow 13.0.0; the versions are printed at start.)
"""

import argparse
import base64
import io
import sys

import numpy as np
import onnxruntime as ort
import PIL
import starlette
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route


def make_app(model_path, threads):
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def preprocess(data):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BILINEAR)
        return np.asarray(image, dtype=np.float32) / 127.5 - 1

    def predict(batch):
        return session.run(None, {input_name: np.stack(batch)})[0]

    # Decoding runs on the event loop and inference in Starlette's thread pool, as the
    # Starlette documentation suggests for blocking work.
    async def tf_predict(request):
        body = await request.json()
        try:
            batch = [preprocess(base64.b64decode(instance["b64"])) for instance in body["instances"]]
        except Exception as error:  # noqa: BLE001
            return JSONResponse({"error": str(error)}, status_code=400)
        probabilities = await run_in_threadpool(predict, batch)
        return JSONResponse({"predictions": probabilities.tolist()})

    async def classify(request):
        data = await request.body()
        top = int(request.query_params.get("top", 5))
        try:
            x = preprocess(data)
        except Exception as error:  # noqa: BLE001
            return JSONResponse({"error": str(error)}, status_code=400)
        p = (await run_in_threadpool(predict, [x]))[0]
        order = np.argsort(-p)[:top]
        return JSONResponse({"predictions": [{"rank": r + 1, "index": int(i), "probability": float(p[i])} for r, i in enumerate(order)]})

    async def ready(request):
        return JSONResponse({"ready": True})

    return Starlette(routes=[
        Route("/v1/models/imagenet:predict", tf_predict, methods=["POST"]),
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model.onnx (with the top)")
    parser.add_argument("--port", type=int, default=8601)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default, all cores)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]} starlette {starlette.__version__} uvicorn {uvicorn.__version__} "
          f"onnxruntime {ort.__version__} Pillow {PIL.__version__} numpy {np.__version__}", flush=True)
    uvicorn.run(make_app(args.model, args.threads), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
