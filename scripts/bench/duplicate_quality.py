"""Measures near-duplicate detection quality on the benchmark of make_duplicate_benchmark.py.

Input: the benchmark folder (with manifest.json) and `mobilenet embed DIR -o emb.npy` output
(emb.npy and emb.npy.files.txt). Prints the cosine-similarity distributions of duplicate pairs
(same group) and distinct pairs, and, per threshold, pair precision/recall of the grouping that
`mobilenet duplicates` makes (connected components of pairs at or above the threshold).

Run: python3 scripts/bench/duplicate_quality.py BENCH_DIR emb.npy   (needs numpy)
"""
import json
import sys
from pathlib import Path

import numpy as np

# Source photos that are themselves near-duplicates (the same picture processed twice in
# tf_flowers, checked by eye): their groups are merged in the ground truth.
KNOWN_SOURCE_DUPLICATES = [
    ("fl_sunflowers_14741866338_bdc8bfc8d5_n", "fl_sunflowers_14925398441_107f3e0304_n"),
]


def components(similarity: np.ndarray, threshold: float) -> np.ndarray:
    n = similarity.shape[0]
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(np.triu(similarity >= threshold, k=1))
    for i, j in zip(rows, cols):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)])


def main() -> None:
    bench, emb_path = Path(sys.argv[1]), Path(sys.argv[2])
    manifest = json.loads((bench / "manifest.json").read_text())
    names = [Path(line).name for line in Path(str(emb_path) + ".files.txt").read_text().split("\n") if line]
    emb = np.load(emb_path).astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    merge = {b: a for a, b in KNOWN_SOURCE_DUPLICATES}
    groups = np.array([merge.get(manifest[n], manifest[n]) for n in names])
    sim = emb @ emb.T
    same = groups[:, None] == groups[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), k=1)
    dup = sim[same & upper]
    distinct = sim[~same & upper]
    q = [0, 0.001, 0.01, 0.05, 0.5]
    print(f"{len(names)} images, {len(set(groups))} groups, {dup.size} duplicate pairs, {distinct.size} distinct pairs")
    print("duplicate pairs: min %.4f, quantiles %s" % (dup.min(), ", ".join(f"{p}:{np.quantile(dup, p):.4f}" for p in q[1:])))
    print("distinct pairs:  max %.4f, quantiles %s" % (distinct.max(), ", ".join(f"{1 - p}:{np.quantile(distinct, 1 - p):.4f}" for p in [0.0001, 0.001, 0.01, 0.5])))
    by_variant = {}
    for i, n in enumerate(names):
        variant = n.split("__")[1].split(".")[0]
        if variant == "orig":
            continue
        original = next(j for j, m in enumerate(names) if groups[j] == groups[i] and "__orig" in m)
        by_variant.setdefault(variant, []).append(sim[i, original])
    for variant, values in sorted(by_variant.items()):
        print(f"  {variant:7s} vs original: min {min(values):.4f}, mean {np.mean(values):.4f}")
    print("threshold  pair-precision  pair-recall  (grouping by connected components)")
    for threshold in [0.80, 0.82, 0.84, 0.85, 0.86, 0.88, 0.90, 0.92, 0.94]:
        comp = components(sim, threshold)
        predicted = (comp[:, None] == comp[None, :]) & upper
        tp = np.sum(predicted & same)
        precision = tp / max(1, np.sum(predicted))
        recall = tp / max(1, np.sum(same & upper))
        print(f"  {threshold:.2f}      {precision:.4f}          {recall:.4f}")


if __name__ == "__main__":
    main()
