"""Simulator throughput: rendering alone, and rendering + PNG writing (the DataSets layout).

    python benchmarks/bench_simulator.py                  # 64x64 and 32x32, 4096 images
    python benchmarks/bench_simulator.py --n 2048 --sizes 64 --runs 3

Rendering is vectorised NumPy in one thread; ``generate`` also encodes PNGs in a thread pool
(``--workers``). The issue's target: >= 2000 rendered images/s at 64x64 on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from _common import median, time_runs, write_results

from hudd_core.data import simulator as sim
from hudd_core.data.generate import generate


def bench(n: int, size: int, runs: int, workers: int) -> dict:
    rng = np.random.default_rng(0)
    params = sim.sample_params(n, rng, sim.TEST_RATES)
    row = {"N": n, "size": size}
    render_s = median(time_runs(lambda: sim.render(params, size, rng), runs))
    row["render_img_per_s"] = n / render_s
    sample_s = median(time_runs(lambda: sim.sample_params(n, rng, sim.TEST_RATES), runs))
    row["sample_img_per_s"] = n / sample_s
    tmp = Path(tempfile.mkdtemp(prefix="hudd_bench_sim_"))

    runs_done = [0]

    def write() -> None:  # a fresh folder per run: no deletion inside the timing
        runs_done[0] += 1
        generate(
            tmp / f"D{runs_done[0]}",
            sizes={"TestSet": n},
            image_size=size,
            workers=workers,
            progress=False,
        )

    try:
        row["generate_img_per_s"] = n / median(time_runs(write, runs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4096, help="images per run")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 32])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="PNG encoding threads")
    ap.add_argument("--name", default="simulator")
    args = ap.parse_args()
    rows = [bench(args.n, s, args.runs, args.workers) for s in args.sizes]
    cols = ["N", "size", "render_img_per_s", "sample_img_per_s", "generate_img_per_s"]
    note = (
        f"medians of {args.runs} runs; render: one thread, chunks of 256; generate: "
        f"render + PNG (compress_level 1, {args.workers} threads) + metadata.csv"
    )
    write_results(args.name, rows, cols, note=note)


if __name__ == "__main__":
    main()
