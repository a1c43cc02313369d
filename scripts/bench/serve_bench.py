#!/usr/bin/env python3
"""Load measurements of `mobilenet serve`, side by side with the server a Python user would write
(scripts/bench/python_server.py: ONNX Runtime behind Starlette/uvicorn), in one run.

- wrk (Debian) against POST /v1/models/imagenet:predict (one b64 JPEG per request) and against
  the raw-bytes endpoint POST /v1/classify, at concurrency 1, 8 and 32: requests/s, p50, p99,
  errors. Every request carries one of the photos (the flowers folder by default), in turn.
- The offline references on the same photos: `mobilenet classify` throughput (images/s, net of
  its start-up: (N - 1) / (t(N) - t(1))), and for concurrency 1 the budget "decode + one
  inference + 2 ms" from `mobilenet bench --batch-size 1` (inference) and
  `mobilenet bench --decode PHOTOS` (decode + resize + preprocess, median per photo).
- `--soak S`: S seconds at about 80% of the measured concurrency-8 capacity (an open-loop,
  paced client), counting errors and sampling the server's RSS.
- `--faults`: while wrk keeps a steady load, clients that disconnect mid-upload, hundreds of idle
  connections, malformed HTTP, huge headers and a slow (byte-a-second) upload; the steady load
  must see no errors and the server must keep answering.

Usage: .venv-bench/bin/python scripts/bench/serve_bench.py [--duration 20] [--soak 600] [--faults]
Needs: wrk, the release binary (.build/release/mobilenet), the shared weights, and for the
Python server the bench venv (peers.py creates it and the ONNX model) with starlette and uvicorn.
"""

import argparse
import base64
import json
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("MOBILENET_SHARED_DIR", ROOT.parent / "shared"))
WEIGHTS = SHARED / "data/weights/mobilenet_v2_1.0_224_dequant.h5"

LUA = r"""
local bodies = {}
local counter = 0
function init(args)
  local list = io.open(args[1]):read("*a")
  for path in list:gmatch("[^\n]+") do
    local f = io.open(path, "rb"); bodies[#bodies + 1] = f:read("*a"); f:close()
  end
  counter = tonumber(args[2]) or 0
end
function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", nil, {["Content-Type"] = args_content_type}, body)
end
"""


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, process, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def rss_kib(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def parse_duration_ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url, path, bodies_list, content_type, concurrency, duration, workdir):
    script = workdir / f"wrk-{content_type.replace('/', '-')}.lua"
    script.write_text(LUA.replace("args_content_type", json.dumps(content_type)))
    threads = min(concurrency, 2)
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--latency", "--timeout", "30s",
               "-s", str(script), url + path, "--", str(bodies_list)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = {"concurrency": concurrency}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    for percentile in ("50", "99"):
        match = re.search(rf"^\s+{percentile}(?:\.000)?%\s+(\S+)", output, re.M)
        result[f"p{percentile}_ms"] = parse_duration_ms(match.group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["errors"] = (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    result["requests"] = int(re.search(r"(\d+) requests in", output).group(1))
    return result


def offline_reference(mobilenet, photos, workdir):
    """`mobilenet classify` images/s on the photos, net of start-up, and the c=1 budget parts."""
    def timed(args):
        start = time.perf_counter()
        subprocess.run([mobilenet, "classify", *args, "--weights", str(WEIGHTS), "--json"], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start
    one = min(timed([str(photos[0])]) for _ in range(2))
    listing = workdir / "photos-dir"
    if not listing.exists():
        listing.mkdir()
        for i, p in enumerate(photos):
            (listing / f"{i:05d}{p.suffix}").symlink_to(p)
    full = min(timed([str(listing)]) for _ in range(2))
    reference = {"classify_images_per_s": (len(photos) - 1) / (full - one), "classify_seconds": full, "startup_seconds": one}
    bench = json.loads(subprocess.run([mobilenet, "bench", "--batch-size", "1", "--iterations", "50", "--weights", str(WEIGHTS), "--json"],
                                      check=True, capture_output=True, text=True).stdout)
    reference["inference_b1_ms"] = bench.get("medianMilliseconds") or bench.get("median_ms") or bench.get("latency", {}).get("median")
    decode = subprocess.run([mobilenet, "bench", "--decode", str(listing), "--json"], capture_output=True, text=True)
    if decode.returncode == 0:
        reference["decode_ms"] = json.loads(decode.stdout).get("decodeMedianMilliseconds")
    return reference


def start_ours(mobilenet, port, workdir, extra, environment=None):
    log_file = open(workdir / "ours.log", "ab")
    process = subprocess.Popen([mobilenet, "serve", "--port", str(port), "--model", f"imagenet={WEIGHTS}", "--log-level", "warning", *extra],
                               stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(environment or {})})
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process


def start_python(python, model, port, workdir):
    log_file = open(workdir / "python.log", "wb")
    process = subprocess.Popen([python, str(ROOT / "scripts/bench/python_server.py"), "--model", str(model), "--port", str(port)],
                               stdout=log_file, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def prepare_bodies(photos, workdir):
    raw, b64 = [], []
    for i, p in enumerate(photos):
        data = p.read_bytes()
        raw_path, json_path = workdir / f"raw-{i:05d}", workdir / f"b64-{i:05d}.json"
        raw_path.write_bytes(data)
        json_path.write_text(json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}))
        raw.append(raw_path)
        b64.append(json_path)
    (workdir / "raw.list").write_text("\n".join(map(str, raw)) + "\n")
    (workdir / "b64.list").write_text("\n".join(map(str, b64)) + "\n")
    return workdir / "raw.list", workdir / "b64.list"


def load_rows(name, url, lists, concurrencies, duration, workdir):
    rows = []
    for endpoint, path, body_list, content_type in [(":predict b64", "/v1/models/imagenet:predict", lists[1], "application/json"),
                                                    ("raw bytes", "/v1/classify?top=5", lists[0], "application/octet-stream")]:
        run_wrk(url, path, body_list, content_type, 2, 3, workdir)  # warm-up
        for c in concurrencies:
            row = run_wrk(url, path, body_list, content_type, c, duration, workdir)
            row.update(server=name, endpoint=endpoint)
            log(f"{name:8s} {endpoint:13s} c={c:<3d} {row['rps']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}")
            rows.append(row)
    return rows


class PacedClient:
    """An open-loop client: `rate` requests/s of raw-bytes classify, spread over threads."""

    def __init__(self, url, bodies, rate, threads=8):
        self.url, self.bodies, self.rate, self.threads = url, bodies, rate, threads
        self.errors, self.ok, self.latencies, self.stop = 0, 0, [], threading.Event()
        self.lock = threading.Lock()

    def worker(self, index):
        import http.client
        host, port = self.url.replace("http://", "").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        interval = self.threads / self.rate
        next_time = time.monotonic() + index * interval / self.threads
        i = index
        while not self.stop.is_set():
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_time += interval
            body = self.bodies[i % len(self.bodies)]
            i += self.threads
            start = time.perf_counter()
            try:
                connection.request("POST", "/v1/classify?top=5", body=body, headers={"Content-Type": "application/octet-stream"})
                response = connection.getresponse()
                response.read()
                good = response.status == 200
            except Exception:  # noqa: BLE001
                good = False
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
            with self.lock:
                self.latencies.append((time.perf_counter() - start) * 1e3)
                if good:
                    self.ok += 1
                else:
                    self.errors += 1

    def run(self, seconds, sample):
        workers = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.threads)]
        for w in workers:
            w.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sample()
            time.sleep(min(10, max(0, end - time.monotonic())))
        self.stop.set()
        for w in workers:
            w.join(timeout=40)


def soak(url, pid, photos, rate, seconds):
    bodies = [p.read_bytes() for p in photos]
    samples = []
    client = PacedClient(url, bodies, rate)
    client.run(seconds, lambda: samples.append((round(time.monotonic()), rss_kib(pid))))
    samples.append((round(time.monotonic()), rss_kib(pid)))
    lat = sorted(client.latencies)
    result = {"seconds": seconds, "target_rps": rate, "achieved_rps": client.ok / seconds, "ok": client.ok, "errors": client.errors,
              "p50_ms": lat[len(lat) // 2] if lat else None, "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
              "rss_start_mb": samples[0][1] / 1024, "rss_end_mb": samples[-1][1] / 1024,
              "rss_max_mb": max(s[1] for s in samples) / 1024, "rss_samples_mb": [round(s[1] / 1024, 1) for s in samples]}
    log(f"soak: {result['ok']} ok, {result['errors']} errors, {result['achieved_rps']:.1f}/{rate:.1f} req/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, RSS {result['rss_start_mb']:.0f} -> {result['rss_end_mb']:.0f} MB (max {result['rss_max_mb']:.0f})")
    return result


def faults(url, pid, lists, workdir):
    """Hostile clients against a server under steady wrk load; returns what each saw."""
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    report = {}
    outcome = {}

    def steady():
        outcome["wrk"] = run_wrk(url, "/v1/classify?top=5", lists[0], "application/octet-stream", 4, 40, workdir)

    background = threading.Thread(target=steady)
    background.start()
    time.sleep(2)
    photo = pathlib.Path(lists[0].read_text().split()[0]).read_bytes()

    # 1. Clients that disconnect mid-upload.
    for _ in range(50):
        s = socket.create_connection((host, port))
        s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(photo)}\r\n\r\n".encode() + photo[: len(photo) // 2])
        s.close()
    report["mid_upload_disconnects"] = 50

    # 2. Many idle connections (held open, nothing sent).
    idle = [socket.create_connection((host, port)) for _ in range(400)]
    report["idle_connections"] = len(idle)

    # 3. Malformed HTTP.
    malformed = [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x00\xff\xfe\r\n\r\n",
                 b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n",
                 b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                 b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"]
    answers = []
    for payload in malformed:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(payload)
        try:
            answers.append(s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)")
        except (socket.timeout, ConnectionError) as error:
            answers.append(f"({type(error).__name__})")
        s.close()
    report["malformed_answers"] = answers

    # 4. Huge headers (1 MB in one header, and 5000 headers).
    huge = []
    for payload in [b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
                    b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(5000)) + b"\r\n"]:
        s = socket.create_connection((host, port), timeout=10)
        try:
            s.sendall(payload)
            huge.append(s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)")
        except (socket.timeout, ConnectionError) as error:
            huge.append(f"({type(error).__name__})")
        s.close()
    report["huge_header_answers"] = huge

    # 5. A slow upload (a byte every 0.2 s for 5 s) while others are served.
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: {len(photo)}\r\n\r\n".encode())
    for i in range(25):
        s.sendall(photo[i:i + 1])
        time.sleep(0.2)
    s.close()

    # The server still answers a normal request while the idle connections are open.
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url + "/v1/classify", data=photo, method="POST"), timeout=30) as r:
        report["normal_request_during_faults"] = {"status": r.status, "ms": round((time.perf_counter() - start) * 1e3, 1)}
    background.join()
    report["steady_load"] = outcome["wrk"]
    # Idle connections are closed by the server's idle timeout, not kept forever.
    closed = 0
    for s in idle:
        s.settimeout(0.01)
        try:
            closed += s.recv(1) == b""
        except (socket.timeout, BlockingIOError):
            pass
        except ConnectionError:
            closed += 1
        s.close()
    report["idle_connections_closed_by_server_after_40s"] = closed
    report["rss_mb_after"] = rss_kib(pid) / 1024
    log(f"faults: {json.dumps(report)}")
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mobilenet", default=str(ROOT / ".build/release/mobilenet"))
    parser.add_argument("--python", default=str(ROOT / ".venv-bench/bin/python"), help="the Python with onnxruntime, starlette, uvicorn, Pillow")
    parser.add_argument("--onnx", default=str(ROOT / ".venv-bench/models/model.onnx"), help="the ONNX model peers.py exports")
    parser.add_argument("--photos", default=str(SHARED / "data/flowers"))
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--soak", type=int, default=0, help="seconds of soak at 80%% of capacity (0: none)")
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--skip-python", action="store_true")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=ARGS",
                        help="also measure our server with other serve options and NAME=VALUE environment variables, e.g. 't1=--threads 1' (repeatable)")
    args = parser.parse_args()

    photos = sorted(p for p in pathlib.Path(args.photos).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="serve-bench-"))
    lists = prepare_bodies(photos, workdir)
    log(f"{len(photos)} photos from {args.photos}; wrk {args.duration} s per row")
    results = {"photos": len(photos), "machine_cores": os.cpu_count()}
    results["offline"] = offline_reference(args.mobilenet, photos, workdir)
    log(f"offline: {json.dumps(results['offline'])}")

    port = free_port()
    ours = start_ours(args.mobilenet, port, workdir, ["--max-batch-size", str(args.max_batch_size)])
    url = f"http://127.0.0.1:{port}"
    results["rows"] = load_rows("mobilenet", url, lists, concurrencies, args.duration, workdir)
    results["ours_rss_mb"] = rss_kib(ours.pid) / 1024
    stop(ours)
    for variant in args.variant:
        # LABEL=ARGS: our server again with other serve options or environment variables
        # (`NAME=VALUE` words), in the same run: "t1=--threads 1", "spin=GOMP_SPINCOUNT=1000".
        label, _, words = variant.partition("=")
        environment, extra = {}, []
        for word in words.split():
            if re.match(r"^[A-Z_][A-Z0-9_]*=", word):
                name, _, value = word.partition("=")
                environment[name] = value
            else:
                extra.append(word)
        port = free_port()
        process = start_ours(args.mobilenet, port, workdir, ["--max-batch-size", str(args.max_batch_size), *extra], environment)
        results["rows"] += load_rows(label, f"http://127.0.0.1:{port}", lists, concurrencies, args.duration, workdir)
        stop(process)
    if not args.skip_python:
        port = free_port()
        python = start_python(args.python, args.onnx, port, workdir)
        results["rows"] += load_rows("python", f"http://127.0.0.1:{port}", lists, concurrencies, args.duration, workdir)
        results["python_rss_mb"] = rss_kib(python.pid) / 1024
        stop(python)

    if args.soak or args.faults:
        port = free_port()
        ours = start_ours(args.mobilenet, port, workdir, ["--max-batch-size", str(args.max_batch_size), "--idle-timeout", "30"])
        url = f"http://127.0.0.1:{port}"
        if args.soak:
            capacity = max(r["rps"] for r in results["rows"] if r["server"] == "mobilenet" and r["endpoint"] == "raw bytes" and r["concurrency"] >= 8)
            results["soak"] = soak(url, ours.pid, photos, 0.8 * capacity, args.soak)
        if args.faults:
            results["faults"] = faults(url, ours.pid, lists, workdir)
        stop(ours)
        results["ours_exit_code_on_sigterm"] = ours.returncode

    print_table(results)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


def print_table(results):
    offline = results["offline"]
    print(f"\nOffline on the same {results['photos']} photos: mobilenet classify {offline['classify_images_per_s']:.1f} images/s (net of start-up); "
          f"batch-1 inference {offline.get('inference_b1_ms')} ms; decode {offline.get('decode_ms')} ms per photo")
    print("\n| endpoint | concurrency | mobilenet req/s | p50 ms | p99 ms | errors | Python req/s | p50 ms | p99 ms | ratio req/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = results["rows"]
    for endpoint in (":predict b64", "raw bytes"):
        for c in sorted({r["concurrency"] for r in rows}):
            py = next((r for r in rows if r["server"] == "python" and r["endpoint"] == endpoint and r["concurrency"] == c), None)
            for label in dict.fromkeys(r["server"] for r in rows if r["server"] != "python"):
                ours = next((r for r in rows if r["server"] == label and r["endpoint"] == endpoint and r["concurrency"] == c), None)
                if not ours:
                    continue
                name = endpoint if label == "mobilenet" else f"{endpoint} ({label})"
                cells = [name, str(c), f"{ours['rps']:.1f}", f"{ours['p50_ms']:.1f}", f"{ours['p99_ms']:.1f}", str(ours["errors"])]
                cells += [f"{py['rps']:.1f}", f"{py['p50_ms']:.1f}", f"{py['p99_ms']:.1f}", f"{ours['rps'] / py['rps']:.2f}x"] if py else ["-"] * 4
                print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
