#!/usr/bin/env python3
"""A TF Serving base folder's versions swapped under load: `mobilenet serve --model flowers=BASE`
(the Keras 3 export fixture as version 1) while TensorFlow Serving's Python client calls gRPC
`Predict` without a version in a loop (scripts/tfserving_grpc_client.py versions), and a REST
client does the same with `:predict`; meanwhile version 2 is renamed into place, then version 1
removed, then version 3 added. Prints which version answered how many calls and every error.

  .venv-test/bin/python scripts/bench/version_swap.py [--seconds 20] [--policy all|latest]
"""
import argparse
import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "Tests/Fixtures/savedmodel/keras3-export/1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--policy", default="all")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="version-swap-"))
    base = work / "base"
    base.mkdir()

    def add(version):
        shutil.copytree(FIXTURE, work / f"staging-{version}")
        (work / f"staging-{version}").rename(base / str(version))

    add(1)
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen([str(ROOT / ".build/release/mobilenet"), "serve", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
                               "--model", f"flowers={base}", "--poll-seconds", "0.2", "--model-version-policy", args.policy, "--log-level", "info"],
                              stderr=open(work / "server.log", "wb"))
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        grpc_result, ready = {}, work / "ready"
        client = threading.Thread(target=lambda: grpc_result.update(json.loads(subprocess.run(
            [str(ROOT / ".venv-serving-client/bin/python"), str(ROOT / "scripts/tfserving_grpc_client.py"), "versions", f"127.0.0.1:{grpc_port}", "flowers",
             str(args.seconds), str(ready)], capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}).stdout.strip().splitlines()[-1])))
        client.start()
        while not ready.exists():
            time.sleep(0.05)
        rest = {"answered": {}, "errors": []}
        body = json.dumps({"instances": [[[[0.0, 0.0, 0.0]] * 96] * 96]}).encode()
        stop = time.monotonic() + args.seconds - 1

        def rest_loop():
            while time.monotonic() < stop:
                for version in ("", ):
                    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/flowers:predict", data=body, headers={"Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(request, timeout=30) as r:
                            r.read()
                        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/flowers", timeout=30).read())
                        top = max(int(s["version"]) for s in status["model_version_status"] if s["state"] == "AVAILABLE")
                        rest["answered"][str(top)] = rest["answered"].get(str(top), 0) + 1
                    except Exception as error:  # noqa: BLE001 (reported)
                        rest["errors"].append(str(error))

        rest_thread = threading.Thread(target=rest_loop)
        rest_thread.start()
        events = []
        t0 = time.monotonic()
        for at, action in ((args.seconds * 0.25, lambda: add(2)), (args.seconds * 0.5, lambda: shutil.rmtree(base / "1")), (args.seconds * 0.7, lambda: add(3))):
            time.sleep(max(0, t0 + at - time.monotonic()))
            action()
            events.append(round(time.monotonic() - t0, 1))
        client.join()
        rest_thread.join()
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/flowers", timeout=30).read())
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(json.dumps({"policy": args.policy, "events_s": {"add 2": events[0], "remove 1": events[1], "add 3": events[2]},
                      "grpc": grpc_result, "rest_calls": sum(rest["answered"].values()), "rest_errors": rest["errors"][:5],
                      "final_status": [(s["version"], s["state"]) for s in status["model_version_status"]]}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
