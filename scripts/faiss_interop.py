#!/usr/bin/env python3
"""Python side of the FAISS interoperability tests (Tests/MobileNetANNTests).

    faiss_interop.py query INDEX.faiss QUERIES.npy K [--nprobe N] [--ef-search N] [--normalised]
        faiss.read_index, search the queries (L2-normalised here unless --normalised: then the
        exact bytes given, so that both sides search the same float32 values), print JSON
        {"ids": [[...]], "scores": [[...]], "ntotal": n, "d": d}.
    faiss_interop.py build VECTORS.npy FACTORY OUT.faiss
        index_factory(d, FACTORY, METRIC_INNER_PRODUCT) over the rows (as given), train on all,
        add, faiss.write_index.

Versions: scripts/requirements-test.txt (faiss-cpu 1.7.3, the library's version; numpy 1.26.4).
"""
import argparse
import json
import sys

import faiss
import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("query")
    q.add_argument("index")
    q.add_argument("queries")
    q.add_argument("k", type=int)
    q.add_argument("--nprobe", type=int)
    q.add_argument("--ef-search", type=int)
    q.add_argument("--normalised", action="store_true")
    b = sub.add_parser("build")
    b.add_argument("vectors")
    b.add_argument("factory")
    b.add_argument("output")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    if args.command == "query":
        index = faiss.read_index(args.index)
        queries = np.ascontiguousarray(np.load(args.queries), dtype=np.float32)
        if not args.normalised:
            faiss.normalize_L2(queries)
        if args.nprobe is not None:
            faiss.extract_index_ivf(index).nprobe = args.nprobe
        if args.ef_search is not None:
            faiss.downcast_index(index).hnsw.efSearch = args.ef_search
        scores, ids = index.search(queries, args.k)
        json.dump({"ids": ids.tolist(), "scores": scores.tolist(), "ntotal": int(index.ntotal), "d": int(index.d),
                   "faiss": faiss.__version__}, sys.stdout)
    else:
        vectors = np.ascontiguousarray(np.load(args.vectors), dtype=np.float32)
        index = faiss.index_factory(vectors.shape[1], args.factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        faiss.write_index(index, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
