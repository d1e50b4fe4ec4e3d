"""pdist: hudd_core vs SciPy's pdist vs torch.cdist vs the bare GEMM X @ X.T (the limit).

All four run in this one process on the same float32 data; medians of --runs runs.

    python benchmarks/bench_distance.py                 # the issue's sizes
    python benchmarks/bench_distance.py --sizes 2000x2000 --runs 3 --device cuda
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import median, time_runs, write_results
from scipy.spatial.distance import pdist as scipy_pdist

from hudd_core.distance import pdist


def bench(n: int, d: int, runs: int, scipy_runs: int, device: str) -> dict:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    Xt = torch.from_numpy(X).to(device)
    row = {"N": n, "D": d, "device": device}
    row["ours_s"] = median(time_runs(lambda: pdist(Xt), runs))
    row["gemm_s"] = median(time_runs(lambda: Xt @ Xt.T, runs))
    row["torch_cdist_s"] = median(time_runs(lambda: torch.cdist(Xt, Xt), runs))
    if scipy_runs > 0:
        row["scipy_s"] = median(time_runs(lambda: scipy_pdist(X), scipy_runs, warmup=0))
        row["scipy/ours"] = row["scipy_s"] / row["ours_s"]
        ref = scipy_pdist(X[:300].astype(np.float64))
        row["max_rel_err"] = float(np.max(np.abs(pdist(Xt[:300]) - ref) / ref))
    row["ours/gemm"] = row["ours_s"] / row["gemm_s"]
    row["torch_cdist/ours"] = row["torch_cdist_s"] / row["ours_s"]
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["5000x50000", "20000x64"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scipy-runs", type=int, default=3, help="0 skips SciPy (slow)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="distance")
    args = ap.parse_args()
    rows = [
        bench(*map(int, s.split("x")), args.runs, args.scipy_runs, args.device) for s in args.sizes
    ]
    cols = ["N", "D", "device", "ours_s", "gemm_s", "torch_cdist_s", "scipy_s", "ours/gemm",
            "scipy/ours", "torch_cdist/ours", "max_rel_err"]  # fmt: skip
    note = f"medians of {args.runs} runs (SciPy: {args.scipy_runs}), float32, "
    write_results(args.name, rows, cols, note=note + f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
