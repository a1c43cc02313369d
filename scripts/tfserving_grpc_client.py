#!/usr/bin/env python3
"""TensorFlow Serving's own Python gRPC client against `mobilenet serve --grpc-port`.

Runs with the client's documented calls (`tensorflow-serving-api` 2.21.0 and `tf.make_tensor_proto`
from tensorflow-cpu 2.21.0, in .venv-serving-client: scripts/setup-test-tools.sh installs them from
scripts/requirements-serving-client.txt), and prints what it got as JSON for the caller to check
(Tests/Integration/test_grpc.py), or measures gRPC against REST.

  check   HOST:GRPC_PORT HTTP_URL MODEL IMAGE [EMBEDDER]
      Predict (encoded image as DT_STRING, preprocessed DT_FLOAT through the REST answer), Classify,
      GetModelMetadata, GetModelStatus and the error statuses; the REST `:predict` of the same image.
  versions HOST:GRPC_PORT MODEL SECONDS READY_FILE
      Predict without a version in a loop for SECONDS (READY_FILE is created once the first call
      is answered); prints how many calls each version answered and every error (a version
      swap under load).
  bench   HOST:GRPC_PORT HTTP_URL MODEL IMAGE SECONDS CONCURRENCY...
      gRPC Predict against REST `:predict` (both the encoded image), alternated, per concurrency:
      requests/s, p50 and p99 in ms.
"""
import base64
import json
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)


def predict_request(model, image_bytes, version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["input_1"].CopyFrom(tf.make_tensor_proto([image_bytes], shape=[1]))
    return request


def status_code(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name + ": " + error.details()


def rest_predict(url, model, image_bytes):
    body = json.dumps({"instances": [{"b64": base64.b64encode(image_bytes).decode()}]}).encode()
    request = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"][0]


def check(target, url, model, image_path, embedder=None):
    image = open(image_path, "rb").read()
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    out = {}
    # Predict, the encoded image (as TF Serving's image clients send it).
    result = stub.Predict(predict_request(model, image), 30.0)
    out["predict_spec"] = {"name": result.model_spec.name, "version": result.model_spec.version.value, "signature": result.model_spec.signature_name}
    out["predict_keys"] = sorted(result.outputs.keys())
    predictions = tf.make_ndarray(result.outputs["predictions"])
    out["predict_shape"] = list(predictions.shape)
    out["predict"] = predictions[0].tolist()
    out["rest"] = rest_predict(url, model, image)
    # Predict with a preprocessed float tensor (tf.make_tensor_proto writes tensor_content).
    decoded = tf.image.resize(tf.io.decode_image(image, channels=3, expand_animations=False), (224, 224))
    tensor = (decoded.numpy()[None] / 127.5 - 1).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["input_1"].CopyFrom(tf.make_tensor_proto(tensor))
    out["predict_float"] = tf.make_ndarray(stub.Predict(request, 30.0).outputs["predictions"])[0].tolist()
    # Classify with a tf.Example holding the encoded image.
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    example = request.input.example_list.examples.add()
    example.features.feature["image"].bytes_list.value.append(image)
    classes = stub.Classify(request, 30.0).result.classifications[0].classes
    best = max(classes, key=lambda c: c.score)
    out["classify"] = {"count": len(classes), "best_label": best.label, "best_score": best.score}
    # GetModelMetadata: the serving_default signature in a SignatureDefMap.
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    metadata = stub.GetModelMetadata(request, 30.0)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    out["metadata"] = {
        "inputs": {k: [d.size for d in v.tensor_shape.dim] for k, v in signature.inputs.items()},
        "outputs": {k: [d.size for d in v.tensor_shape.dim] for k, v in signature.outputs.items()},
        "method": signature.method_name,
    }
    # GetModelStatus.
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, 30.0)
    out["status"] = [{"version": s.version, "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state)} for s in status.model_version_status]
    # Errors.
    out["errors"] = {
        "unknown_model": status_code(lambda: stub.Predict(predict_request("no-such-model", image), 30.0)),
        "unknown_version": status_code(lambda: stub.Predict(predict_request(model, image, version=99), 30.0)),
        "not_an_image": status_code(lambda: stub.Predict(predict_request(model, b"not an image"), 30.0)),
        "regress": status_code(lambda: stub.Regress(__import__("tensorflow_serving.apis.regression_pb2", fromlist=["x"]).RegressionRequest(), 30.0)),
    }
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([image], shape=[1]))
    out["errors"]["wrong_input_name"] = status_code(lambda: stub.Predict(request, 30.0))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["input_1"].CopyFrom(tf.make_tensor_proto(np.full((1, 224, 224, 3), 200.0, np.float32)))
    out["errors"]["out_of_range"] = status_code(lambda: stub.Predict(request, 30.0))
    if embedder:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = embedder
        request.input.example_list.examples.add().features.feature["image"].bytes_list.value.append(image)
        out["errors"]["classify_embedder"] = status_code(lambda: stub.Classify(request, 30.0))
        result = stub.Predict(predict_request(embedder, image), 30.0)
        out["embedder_keys"] = sorted(result.outputs.keys())
        out["embedding_shape"] = list(tf.make_ndarray(result.outputs["embedding"]).shape)
    print(json.dumps(out))


def versions(target, model, seconds, ready_file):
    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    # A small float tensor of the model's input size, from its metadata.
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = model
    metadata_request.metadata_field.append("signature_def")
    signatures = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(metadata_request, 30.0).metadata["signature_def"].Unpack(signatures)
    dims = [d.size for d in signatures.signature_def["serving_default"].inputs["input_1"].tensor_shape.dim]
    request.inputs["input_1"].CopyFrom(tf.make_tensor_proto(np.zeros([1] + dims[1:], np.float32)))
    answered, errors = {}, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            version = stub.Predict(request, 30.0).model_spec.version.value
            if not answered:
                open(ready_file, "w").close()
            answered[str(version)] = answered.get(str(version), 0) + 1
        except grpc.RpcError as error:
            errors.append(error.code().name + ": " + error.details())
    print(json.dumps({"answered": answered, "errors": errors}))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def load(call, seconds, concurrency):
    latencies, errors, lock = [], [0], threading.Lock()
    end = time.monotonic() + seconds

    def worker():
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                call()
            except Exception:  # noqa: BLE001 (counted, reported)
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"rps": len(latencies) / elapsed, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "errors": errors[0], "n": len(latencies)}


def bench(target, url, model, image_path, seconds, concurrencies):
    image = open(image_path, "rb").read()
    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request(model, image)
    rows = []
    for c in concurrencies:
        for _ in range(2):  # alternated rounds
            rows.append({"api": "grpc", "c": c, **load(lambda: stub.Predict(request, 60.0), seconds, c)})
            rows.append({"api": "rest", "c": c, **load(lambda: rest_predict(url, model, image), seconds, c)})
    print(json.dumps(rows))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "check":
        check(*args)
    elif mode == "versions":
        versions(args[0], args[1], float(args[2]), args[3])
    elif mode == "bench":
        bench(args[0], args[1], args[2], args[3], float(args[4]), [int(c) for c in args[5:]])
    else:
        sys.exit(f"unknown mode {mode}")
