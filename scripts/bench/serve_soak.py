"""A paced soak of `mobilenet serve` alone (no wrk table, no Python server): the resident size
sampled every 10 s while an open-loop client posts the flowers photos (raw bytes to
/v1/classify) at RATE requests/s from 8 threads, so batch sizes vary with the arrivals.

    .venv-bench/bin/python scripts/bench/serve_soak.py --seconds 600 --rate 40 [--env GLIBC_TUNABLES=...]

Uses serve_bench.py's client and RSS sampling; prints one JSON object."""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import serve_bench as sb  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("MOBILENET_SHARED_DIR", ROOT.parent / "shared"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mobilenet", default=str(ROOT / ".build/release/mobilenet"))
    parser.add_argument("--weights", default=str(SHARED / "data/weights/mobilenet_v2_1.0_224_dequant.h5"))
    parser.add_argument("--photos", default=str(SHARED / "data/flowers"))
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--rate", type=float, default=40)
    parser.add_argument("--port", type=int, default=8631)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server's environment")
    args = parser.parse_args()
    env = dict(os.environ, **dict(a.split("=", 1) for a in args.env))
    photos = sorted(pathlib.Path(args.photos).rglob("*.jpg"))
    server = subprocess.Popen([args.mobilenet, "serve", "--port", str(args.port), "--max-batch-size", str(args.max_batch_size),
                               "--model", f"imagenet={args.weights}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(900):
            try:
                urllib.request.urlopen(url + "/v2/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        result = sb.soak(url, server.pid, photos, args.rate, args.seconds)
        result["env"] = args.env
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
