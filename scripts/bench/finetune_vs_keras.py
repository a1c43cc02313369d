#!/usr/bin/env python3
"""Fine-tuning side by side (issue 15): `mobilenet train --fine-tune-at 100` against the Keras
baseline (`scripts/bench/keras_finetune_baseline.py`) on the same machine in the same run.

The same recipe on both sides: `../shared/data/flowers` (train / val as given), the shared no-top
weights, 224x224, batch 32; phase 1 the head (Dropout 0.2 -> Dense) with Adam 1e-3 on the frozen
base's pooled outputs, up to 20 epochs; phase 2 `base.layers[100:]` unfrozen with RMSprop 1e-4
(`--fine-tune-optimizer`), a random horizontal flip per image and epoch (plus `RandomRotation(F)`
with `--rotation F`), up to `--fine-tune-epochs`; ours' defaults;
early stopping on val_loss (patience 3, best weights restored) in both phases; BatchNorm in
inference mode (Keras: `--bn inference`, which also keeps gamma/beta fixed; ours trains them).

Each round runs ours, then Keras (`--order keras-first` reverses it), one process at a time,
each under `/usr/bin/time -v` (peak RSS of the whole process). Reported per run: validation
accuracy after the head and after fine-tuning, phase-2 training throughput (training images per
second of wall time, decoding/augmentation and the frozen part included, validation excluded;
Keras: epochs 2..n, epoch 1 builds its graph), peak RSS and wall time. Standard library only; run
it with any Python 3 (Keras runs in `--python`).

  python3 scripts/bench/finetune_vs_keras.py --rounds 1 --fine-tune-epochs 10 --json out.json

Versions used for the committed figures: TensorFlow 2.21.0, Keras 3.15.1, Python 3.11.7.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    return Path(os.environ.get("MOBILENET_SHARED_DIR", ROOT.parent / "shared"))


def timed(command, env=None):
    """Runs `command` under /usr/bin/time -v; returns (stdout, stderr, peak RSS MiB, wall s)."""
    started = time.perf_counter()
    process = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.stderr.write(process.stderr[-4000:])
        raise SystemExit(f"{command[0]} failed with status {process.returncode}")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", process.stderr)
    return process.stdout, process.stderr, int(match.group(1)) / 1024 if match else float("nan"), wall


def run_ours(args, work: Path):
    data = shared_dir() / "data/flowers"
    command = [str(args.mobilenet), "train", str(data / "train"), "--validation-dir", str(data / "val"),
               "--weights", str(args.weights), "--no-cache", "--fine-tune-at", str(args.fine_tune_at),
               "--fine-tune-epochs", str(args.fine_tune_epochs), "--fine-tune-optimizer", args.fine_tune_optimizer,
               "--fine-tune-rotation", str(args.rotation), "--seed", str(args.seed),
               "-o", str(work / "ours.json"), "--overwrite", "--json"]
    _, stderr, rss, wall = timed(command)
    line = re.search(r"fine-tuned in ([\d.]+) s \((\d+) epochs, best epoch (\d+), ([\d.]+) images/s\): "
                     r"val_accuracy ([\d.]+) with the head only, ([\d.]+) fine-tuned", stderr)
    if not line:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit("mobilenet train printed no fine-tuning summary")
    epochs = [float(m) for m in re.findall(r"fine-tune epoch \d+/\d+ .* - ([\d.]+) images/s", stderr)]
    return {"system": "swift-mobilenet", "head_val_accuracy": float(line.group(5)),
            "fine_tuned_val_accuracy": float(line.group(6)), "fine_tune_epochs": int(line.group(2)),
            "best_epoch": int(line.group(3)), "fine_tune_images_per_second": float(line.group(4)),
            "epoch_images_per_second": epochs, "fine_tune_seconds": float(line.group(1)),
            "peak_rss_mib": rss, "wall_seconds": wall}


def run_keras(args, work: Path):
    out = work / "keras.json"
    command = [str(args.python), str(ROOT / "scripts/bench/keras_finetune_baseline.py"),
               "--weights", str(args.weights), "--fine-tune-at", str(args.fine_tune_at),
               "--fine-tune-epochs", str(args.fine_tune_epochs), "--rotation", str(args.rotation),
               "--seed", str(args.seed), "--bn", "inference", "--fine-tune-optimizer", args.fine_tune_optimizer,
               "--json", str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    _, _, rss, wall = timed(command, env=env)
    result = json.loads(out.read_text())
    phase2 = result["fine_tune_phase"]
    return {"system": "keras", "head_val_accuracy": result["head_val_accuracy"],
            "fine_tuned_val_accuracy": result["fine_tuned_val_accuracy"],
            "fine_tune_epochs": phase2["epochs_run"], "best_epoch": phase2["best_epoch"],
            "fine_tune_images_per_second": result["fine_tune_images_per_second"],
            "peak_rss_mib": rss, "wall_seconds": wall, "versions": result["versions"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mobilenet", type=Path, default=ROOT / ".build/release/mobilenet")
    p.add_argument("--python", type=Path, default=ROOT / ".venv-bench/bin/python")
    p.add_argument("--weights", type=Path, default=shared_dir() / "data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--fine-tune-epochs", type=int, default=10)
    p.add_argument("--fine-tune-at", type=int, default=100)
    p.add_argument("--rotation", type=float, default=0.0, help="RandomRotation factor in phase 2 (0: flips only, ours' default)")
    p.add_argument("--fine-tune-optimizer", choices=["rmsprop", "adam", "sgd"], default="rmsprop",
                   help="phase 2 optimizer at the head's rate / 10 (ours' default rmsprop)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--order", choices=["ours-first", "keras-first"], default="ours-first")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if not args.mobilenet.exists():
        raise SystemExit(f"{args.mobilenet} not found: swift build -c release --product mobilenet")
    if not args.weights.exists():
        raise SystemExit(f"{args.weights} not found (MOBILENET_SHARED_DIR)")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = [run_ours, run_keras] if args.order == "ours-first" else [run_keras, run_ours]
            for run in order:
                result = run(args, Path(tmp))
                result["round"] = round_ + 1
                runs.append(result)
                print(json.dumps(result), flush=True)
    summary = {}
    for system in ("swift-mobilenet", "keras"):
        mine = [r for r in runs if r["system"] == system]
        summary[system] = {key: statistics.median(r[key] for r in mine)
                           for key in ("head_val_accuracy", "fine_tuned_val_accuracy", "fine_tune_images_per_second",
                                       "peak_rss_mib", "wall_seconds")}
    ours, keras = summary["swift-mobilenet"], summary["keras"]
    summary["ratios"] = {"throughput": ours["fine_tune_images_per_second"] / keras["fine_tune_images_per_second"],
                         "peak_rss": ours["peak_rss_mib"] / keras["peak_rss_mib"],
                         "wall": ours["wall_seconds"] / keras["wall_seconds"],
                         "fine_tuned_accuracy_points": 100 * (ours["fine_tuned_val_accuracy"] - keras["fine_tuned_val_accuracy"])}
    print("| | head val acc | fine-tuned val acc | phase-2 images/s | peak RSS MiB | wall s |")
    print("|---|---|---|---|---|---|")
    for system in ("swift-mobilenet", "keras"):
        s = summary[system]
        print(f"| {system} | {s['head_val_accuracy']:.4f} | {s['fine_tuned_val_accuracy']:.4f} | "
              f"{s['fine_tune_images_per_second']:.2f} | {s['peak_rss_mib']:.0f} | {s['wall_seconds']:.0f} |")
    r = summary["ratios"]
    print(f"ours / Keras: throughput {r['throughput']:.2f}x, peak RSS {r['peak_rss']:.2f}x, wall {r['wall']:.2f}x, "
          f"fine-tuned accuracy {r['fine_tuned_accuracy_points']:+.1f} points")
    if args.json:
        document = {"script": "scripts/bench/finetune_vs_keras.py", "settings": {k: str(v) for k, v in vars(args).items()},
                    "runs": runs, "summary": summary, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "load_average_at_end": os.getloadavg(), "cpus": os.cpu_count()}
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
