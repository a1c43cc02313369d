"""Retrieval quality of similarity search on the flowers data set (issue 6): for each
validation photo, the share of its top-5 neighbours among the training photos (cosine
similarity of embeddings) that have the same class, averaged over the validation photos.

Input: `mobilenet embed data/flowers/train --recursive -o train.npy` and the same for val
(the class is the parent folder name in the .files.txt lists).

Run: python3 scripts/bench/retrieval_quality.py train.npy val.npy   (needs numpy)
"""
import sys
from pathlib import Path

import numpy as np


def load(path):
    names = [line for line in Path(path + ".files.txt").read_text().split("\n") if line]
    emb = np.load(path).astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, np.array([Path(n).parent.name for n in names])


def main() -> None:
    train, train_labels = load(sys.argv[1])
    val, val_labels = load(sys.argv[2])
    sim = val @ train.T
    top5 = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    same = train_labels[top5] == val_labels[:, None]
    print(f"{len(val)} queries over {len(train)} training photos")
    print(f"top-5 neighbours of the same class: {same.mean():.4f}; top-1: {same[:, 0].mean():.4f}")
    for label in sorted(set(val_labels)):
        rows = val_labels == label
        print(f"  {label:11s} {same[rows].mean():.4f}")


if __name__ == "__main__":
    main()
