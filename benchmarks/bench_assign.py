"""Assignment throughput: nearest member of every RCC for many improvement heatmaps.

FAISS (IndexFlatL2 per cluster) vs a NumPy brute force (full distance matrix, then the
minimum per cluster) vs our GEMM distance kernels (torch backend), same data, one process.

    python benchmarks/bench_assign.py                       # 200k queries x 5k members
    python benchmarks/bench_assign.py --queries 20000 --runs 1
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import median, time_runs, write_results

from hudd_core.assign import NearestClusterIndex


def stream(index: NearestClusterIndex, queries: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate(
        [index.search(queries[a : a + batch]) for a in range(0, len(queries), batch)]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--members", type=int, default=5_000)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--numpy-queries",
        type=int,
        default=20_000,
        help="the NumPy brute force runs on this many queries (rate extrapolated)",
    )
    ap.add_argument("--backends", nargs="+", default=["faiss", "torch"])
    ap.add_argument("--name", default="assign")
    args = ap.parse_args()  # fmt: skip

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32) * 3
    labels = rng.integers(0, args.clusters, size=args.members)
    members = centres[labels] + rng.standard_normal((args.members, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32) * 2

    nq = min(args.numpy_queries, args.queries)
    ref_index = NearestClusterIndex(members, labels, backend="numpy")
    t_np = median(time_runs(lambda: stream(ref_index, queries[:nq], args.batch), 1, warmup=0))
    ref = stream(ref_index, queries[:2000], args.batch)
    rows = [{"backend": "numpy", "queries": nq, "seconds": t_np, "queries_per_s": nq / t_np}]
    for backend in args.backends:
        index = NearestClusterIndex(members, labels, backend=backend)
        t = median(time_runs(lambda i=index: stream(i, queries, args.batch), args.runs, 0))
        err = float(np.abs(stream(index, queries[:2000], args.batch) - ref).max())
        rows.append({"backend": backend, "queries": args.queries, "seconds": t,
                     "queries_per_s": args.queries / t, "max_abs_diff_vs_numpy": err})  # fmt: skip
    for row in rows:
        row["speedup_vs_numpy"] = row["queries_per_s"] / rows[0]["queries_per_s"]
        print(row, flush=True)
    cols = ["backend", "queries", "seconds", "queries_per_s", "speedup_vs_numpy",
            "max_abs_diff_vs_numpy"]  # fmt: skip
    note = f"{args.members} members in {args.clusters} clusters, D={args.dim}, "
    write_results(args.name, rows, cols, note + f"batches of {args.batch}; {args.runs} runs")


if __name__ == "__main__":
    main()
