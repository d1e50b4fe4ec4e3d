"""ClusterModule: hudd_core vs a straightforward SciPy implementation of the same rules.

Workload: N error images × 3 layers of D relevance values (synthetic, float32, with
planted cluster structure), written as a work folder ``T/Heatmaps`` plus tiny test images.

* ours: ``run_cluster`` (the whole module: distances, Ward, WICD and silhouette for every
  k, knee, best layer, all files, RCC folders and GIFs), and the clustering alone
  (``cluster_layer`` per layer, what the reference computes);
* reference, per layer: SciPy ``pdist`` of the rows, ``squareform``, rows / row max, SciPy
  ``pdist`` again, SciPy ``linkage(method="ward")``, then for every k up to the limit
  ``fcluster(maxclust=k)`` and WICD in Python/NumPy, the 4th-order gradient and kneed;
  lowest WICD wins. The reference is slow at large N: ``--ref-layers`` times it on fewer
  layers and scales to 3 (the layers have the same size, so its cost is per layer).

    python benchmarks/bench_cluster.py                       # N = 2000 and 5000, D = 20000
    python benchmarks/bench_cluster.py --sizes 500 --dim 2000 --ref-layers 1   # quick
    python benchmarks/bench_cluster.py --approximate --sizes 10000 50000 --dim 2000 \
        --name cluster_approx                                 # the approximate path
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import median, time_runs, write_results
from PIL import Image
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform

from hudd_core.cluster import approximate_reason, cluster_layer, run_cluster
from hudd_core.cluster.knee import best_layer, gradient4

LAYERS = ("conv1", "conv2", "fc")


def planted_groups(rng: np.random.Generator, n: int, k: int = 20) -> np.ndarray:
    """``n`` group labels of ``k`` groups of uneven sizes."""
    return rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 0.7)))


def planted_layer(path: Path, groups: np.ndarray, dim: int, spread: float,
                  rng: np.random.Generator) -> None:  # fmt: skip
    """An N × dim float32 ``.npy`` of relevance-like rows around one centre per group."""
    X = np.lib.format.open_memmap(path, "w+", np.float32, (len(groups), dim))
    centres = rng.standard_normal((groups.max() + 1, dim), dtype=np.float32) * spread
    for a in range(0, len(groups), 512):
        g = groups[a : a + 512]
        noise = rng.standard_normal((len(g), dim), dtype=np.float32)
        X[a : a + 512] = np.abs(centres[g] + noise)  # relevance-like: mostly positive
    X.flush()


def make_workdir(root: Path, n: int, dim: int, seed: int = 0) -> Path:
    """``root/T/Heatmaps`` with three N × dim layers (about 20 planted groups of uneven
    sizes, different spreads per layer) and ``root/DataSets/TestSet`` images."""
    rng = np.random.default_rng(seed)
    hm = root / "T" / "Heatmaps"
    hm.mkdir(parents=True)
    groups = planted_groups(rng, n)
    meta = []
    for li, name in enumerate(LAYERS):
        planted_layer(hm / f"{name}.npy", groups, dim, 0.5 + li, rng)
        meta.append({"name": name, "shape": [dim], "file": f"{name}.npy"})
    (hm / "layers.json").write_text(json.dumps({"layers": meta, "complete": True}))
    test = root / "DataSets" / "TestSet" / "c"
    test.mkdir(parents=True)
    with open(hm / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "image"])
        for i in range(n):
            Image.new("L", (16, 16), int(groups[i] * 12)).save(test / f"{i:05d}.png")
            w.writerow([i, f"TestSet/c/{i:05d}.png"])
    return root


def reference_layer(X: np.ndarray) -> tuple[int, float]:
    """The straightforward implementation: (k, WICD at k) of one layer."""
    from kneed import KneeLocator

    D = squareform(pdist(X))
    Z = linkage(pdist(D / D.max(axis=1, keepdims=True)), method="ward")
    n = len(X)
    ks = list(range(2, min(500, max(2, n // 2)) + 1))
    wicd = []
    for k in ks:
        labels = fcluster(Z, k, criterion="maxclust")
        total = 0.0
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            if len(idx) > 1:
                sub = D[np.ix_(idx, idx)]
                total += sub.sum() / (len(idx) * (len(idx) - 1)) * len(idx) / n
        wicd.append(total / len(np.unique(labels)))
    knee = KneeLocator(ks, gradient4(wicd), curve="concave", direction="increasing").knee
    k = int(knee) if knee is not None else ks[0]
    return k, wicd[ks.index(k)]


def bench(n: int, dim: int, ref_layers: int, device: str, runs: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    try:
        make_workdir(root, n, dim)
        T, data = root / "T", root / "DataSets"
        row = {"N": n, "D": dim, "layers": len(LAYERS), "device": device}
        t0 = time.perf_counter()
        run_cluster(T, data, device=device, progress=False)
        row["ours_module_s"] = time.perf_counter() - t0
        shutil.rmtree(T / "ClusterAnalysis")
        ours = {}

        def cluster_all() -> None:
            for name in LAYERS:
                X = np.load(T / "Heatmaps" / f"{name}.npy", mmap_mode="r")
                res = cluster_layer(X, name=name, device=device)
                ours[name] = (res.k, res.at_k())

        row["ours_cluster_s"] = median(time_runs(cluster_all, runs, warmup=0))
        ref = {}
        t0 = time.perf_counter()
        for name in LAYERS[:ref_layers]:
            ref[name] = reference_layer(np.load(T / "Heatmaps" / f"{name}.npy"))
        row["ref_s"] = (time.perf_counter() - t0) * len(LAYERS) / ref_layers
        row["ref_layers_timed"] = ref_layers
        row["ref/ours_cluster"] = row["ref_s"] / row["ours_cluster_s"]
        row["ref/ours_module"] = row["ref_s"] / row["ours_module_s"]
        row["same_k"] = all(ours[m][0] == ref[m][0] for m in ref)
        row["max_wicd_rel_diff"] = max(abs(ours[m][1][0] / ref[m][1] - 1) for m in ref)
        if ref_layers == len(LAYERS):
            row["same_best"] = best_layer({m: v[1] for m, v in ours.items()}) == best_layer(
                {m: (w, 0.0) for m, (_, w) in ref.items()}
            )
        row["k_" + "/".join(LAYERS)] = "/".join(str(ours[m][0]) for m in LAYERS)
        print(row, flush=True)
        return row
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_approximate(n: int, dim: int, device: str) -> dict:
    """One layer of ``n`` planted rows on the approximate path (forced): time, the
    process's peak RSS, k, and the ARI of its clusters against the planted groups (and
    of the exact path where it fits, for comparison)."""
    import resource

    from sklearn.metrics import adjusted_rand_score

    root = Path(tempfile.mkdtemp(prefix="bench_cluster_approx_"))
    try:
        rng = np.random.default_rng(0)
        groups = planted_groups(rng, n)
        planted_layer(root / "layer.npy", groups, dim, 1.0, rng)
        X = np.load(root / "layer.npy", mmap_mode="r")
        row = {"N": n, "D": dim, "device": device}
        for path, threshold in (("approximate", 0), ("exact", None)):
            if path == "exact" and approximate_reason(n, None):
                row["exact"] = approximate_reason(n, None)
                continue
            t0 = time.perf_counter()
            res = cluster_layer(X, name="layer", device=device, approx_threshold=threshold)
            row[f"{path}_s"] = time.perf_counter() - t0
            row[f"{path}_k"] = res.k
            row[f"{path}_ari"] = adjusted_rand_score(groups, res.labels)
            row[f"{path}_peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(row, flush=True)
        return row
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", type=int, default=[2000, 5000])
    ap.add_argument("--dim", type=int, default=20000)
    ap.add_argument(
        "--ref-layers",
        nargs="+",
        type=int,
        default=[3, 1],
        help="layers the reference is timed on, per size (scaled to 3)",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs of ours (median)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--name", default="cluster")
    ap.add_argument("--approximate", action="store_true",
                    help="time the approximate path on one layer per size instead")  # fmt: skip
    args = ap.parse_args()
    from hudd_core._ext import resolve_device

    device = str(resolve_device(args.device, torch.device("cpu")))
    if args.approximate:
        rows = [bench_approximate(n, args.dim, device) for n in args.sizes]
        cols = ["N", "D", "device", "approximate_s", "approximate_k", "approximate_ari",
                "approximate_peak_rss_MB", "exact_s", "exact_k", "exact_ari",
                "exact_peak_rss_MB", "exact"]  # fmt: skip
        note = ("cluster_layer on one planted layer (20 groups of uneven sizes), the "
                "approximate path forced (approx_threshold=0), then the exact path where it "
                "fits in memory; ARI against the planted groups; peak RSS of this process "
                "after each path (cumulative).")  # fmt: skip
        write_results(args.name, rows, cols, note=note)
        return
    ref_layers = (args.ref_layers * len(args.sizes))[: len(args.sizes)]
    rows = [
        bench(n, args.dim, r, device, args.runs)
        for n, r in zip(args.sizes, ref_layers, strict=True)
    ]
    cols = [
        "N",
        "D",
        "layers",
        "device",
        "ours_module_s",
        "ours_cluster_s",
        "ref_s",
        "ref_layers_timed",
        "ref/ours_cluster",
        "ref/ours_module",
        "same_k",
        "same_best",
        "max_wicd_rel_diff",
        "k_" + "/".join(LAYERS),
    ]
    note = (
        "ours_module_s: run_cluster (distances, Ward, WICD+silhouette for every k, knee, best "
        "layer, all files, RCC folders, GIFs); ours_cluster_s: cluster_layer per layer "
        "(median of --runs); "
        "ref_s: SciPy pdist/squareform/rows-max/pdist/linkage + fcluster and WICD in Python "
        "for every k, timed on ref_layers_timed layers and scaled to 3. "
        f"{torch.get_num_threads()} torch threads."
    )
    write_results(args.name, rows, cols, note=note)


if __name__ == "__main__":
    main()
