"""Assignment throughput: nearest member of every RCC for many precomputed heatmaps.

The AssignModule's search (:class:`hudd_core.search.NearestClusterIndex`) with FAISS
(``backend="faiss"``, the default on a CPU: FAISS's exact flat L2 distances, one BLAS GEMM
per batch, then the minimum per cluster) and with our GEMM distance kernels
(``backend="torch"``, the default where CUDA is there without faiss-gpu), against two plain
brute forces, NumPy (float32 ``‖q‖² + ‖m‖² − 2 q·m`` by BLAS, then the minimum over each
cluster's columns) and ``torch.cdist`` (then the same minimum), and against FAISS the
textbook way, one ``IndexFlatL2`` per cluster searched for its nearest member
(``faiss_per_cluster``). Same data, one process, streamed in batches; medians of
``--runs`` interleaved runs, so load from other jobs on a shared machine hits every
contender alike. Accuracy: the largest absolute difference from the exact float64
reference (``nearest_member_reference``) on the first 2000 queries.

D defaults to 1024: the flattened size of the demo's best layer ``features.10`` of the
AlexNet-style model at 32 × 32 (64 × 4 × 4); 200k × 1024 float32 queries are 0.8 GB.

    python benchmarks/bench_assign.py                       # 200k queries x 5k members
    python benchmarks/bench_assign.py --queries 20000 --runs 3 --name assign_small
    python benchmarks/bench_assign.py --clusters 200 --contenders numpy faiss_per_cluster faiss
    python benchmarks/bench_assign.py --device cuda --name assign_gpu
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import median, time_runs, write_results

from hudd_core._ext import cuda_usable
from hudd_core.search import NearestClusterIndex, _faiss_gpu_available, nearest_member_reference


def segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members sorted by cluster: ``(order, clusters, starts)`` for the per-cluster minimum."""
    order = np.argsort(labels, kind="stable")
    clusters, starts = np.unique(labels[order], return_index=True)
    return order, clusters, starts


class NumpyBrute:
    """Plain NumPy float32 brute force: full B × M distance block, min per cluster."""

    def __init__(self, members: np.ndarray, labels: np.ndarray) -> None:
        order, _, self.starts = segments(labels)
        self.m = np.ascontiguousarray(members[order], dtype=np.float32)
        self.m2 = (self.m**2).sum(1)

    def search(self, q: np.ndarray) -> np.ndarray:
        d2 = q @ self.m.T
        d2 *= -2
        d2 += (q**2).sum(1)[:, None]
        d2 += self.m2[None, :]
        per = np.minimum.reduceat(d2, self.starts, axis=1)
        return np.sqrt(np.maximum(per, 0))


class TorchCdist:
    """``torch.cdist`` (float32, its matmul path) on ``device``, then the min per cluster
    (one ``scatter_reduce``, as in the AssignModule)."""

    def __init__(self, members: np.ndarray, labels: np.ndarray, device: str = "cpu") -> None:
        self.m = torch.from_numpy(np.ascontiguousarray(members, dtype=np.float32)).to(device)
        clusters = np.unique(labels)
        self.column = torch.from_numpy(np.searchsorted(clusters, labels)).to(device)
        self.n_clusters = len(clusters)

    def search(self, q: np.ndarray) -> np.ndarray:
        qt = torch.from_numpy(q).to(self.m.device)
        d = torch.cdist(qt, self.m, compute_mode="use_mm_for_euclid_dist")
        out = torch.full((len(q), self.n_clusters), float("inf"), device=d.device)
        out.scatter_reduce_(1, self.column.expand(len(q), -1), d, "amin")
        return out.cpu().numpy()


class FaissPerCluster:
    """One FAISS ``IndexFlatL2`` per cluster, ``search(q, 1)`` in each (a GEMM call per
    cluster: the AssignModule's former CPU path, kept as a contender)."""

    def __init__(self, members: np.ndarray, labels: np.ndarray) -> None:
        import faiss

        self.indexes = []
        for c in np.unique(labels):
            index = faiss.IndexFlatL2(members.shape[1])
            index.add(np.ascontiguousarray(members[labels == c]))
            self.indexes.append(index)

    def search(self, q: np.ndarray) -> np.ndarray:
        cols = [index.search(q, 1)[0][:, 0] for index in self.indexes]
        return np.sqrt(np.maximum(np.stack(cols, axis=1), 0.0))


def stream(search, queries: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([search(queries[a : a + batch]) for a in range(0, len(queries), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--members", type=int, default=5_000)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--contenders", nargs="+", default=None,
                    help="default: numpy torch_cdist ours_torch faiss_per_cluster faiss "
                         "(+ faiss_gpu where faiss has GPUs)")  # fmt: skip
    ap.add_argument(
        "--device",
        default="cpu",
        help="torch_cdist's device; ours_torch runs on CUDA whenever it is usable",
    )
    ap.add_argument("--name", default="assign")
    args = ap.parse_args()
    if args.contenders is None:
        args.contenders = ["numpy", "torch_cdist", "ours_torch", "faiss_per_cluster", "faiss"]
        if _faiss_gpu_available():
            args.contenders.append("faiss_gpu")

    rng = np.random.default_rng(0)
    # Relevance-like data: non-negative, clustered members, queries spread around them.
    centres = np.abs(rng.standard_normal((args.clusters, args.dim), dtype=np.float32)) * 3
    labels = rng.integers(0, args.clusters, size=args.members)
    members = centres[labels] + np.abs(rng.standard_normal((args.members, args.dim), np.float32))
    queries = np.empty((args.queries, args.dim), dtype=np.float32)
    for a in range(0, args.queries, 50_000):
        b = min(a + 50_000, args.queries)
        queries[a:b] = centres[rng.integers(0, args.clusters, b - a)]
        queries[a:b] += rng.standard_normal((b - a, args.dim), dtype=np.float32) * 2

    makers = {
        "numpy": lambda: NumpyBrute(members, labels).search,
        "torch_cdist": lambda: TorchCdist(members, labels, args.device).search,
        "faiss_per_cluster": lambda: FaissPerCluster(members, labels).search,
        "ours_torch": lambda: NearestClusterIndex(members, labels, backend="torch").search,
        "faiss": lambda: NearestClusterIndex(members, labels, backend="faiss").search,
        "faiss_gpu": lambda: NearestClusterIndex(members, labels, backend="faiss-gpu").search,
    }
    searches = {k: makers[k]() for k in args.contenders}
    check = queries[:2000]
    ref = nearest_member_reference(check, members, labels, np.unique(labels))
    rows = {k: {"contender": k, "queries": args.queries} for k in searches}
    for k, fn in searches.items():
        got = stream(fn, check, args.batch)  # also the warm-up
        rows[k]["max_abs_diff_vs_float64"] = float(np.abs(got - ref).max())
    times: dict[str, list[float]] = {k: [] for k in searches}
    for r in range(args.runs):
        for k, fn in searches.items():
            times[k] += time_runs(lambda f=fn: stream(f, queries, args.batch), 1, warmup=0)
            print(f"run {r}: {k} {times[k][-1]:.2f} s", flush=True)
    base = median(times["numpy"]) if "numpy" in times else None
    for k, row in rows.items():
        t = median(times[k])
        row.update(seconds=t, queries_per_s=args.queries / t)
        if base is not None:
            row["speedup_vs_numpy"] = base / t
            row["speedup_vs_numpy_min"] = min(times["numpy"]) / min(times[k])
    rows_list = list(rows.values())
    cols = ["contender", "queries", "seconds", "queries_per_s", "speedup_vs_numpy",
            "speedup_vs_numpy_min", "max_abs_diff_vs_float64"]  # fmt: skip
    note = (
        f"{args.queries} queries × {args.members} members in {args.clusters} clusters, "
        f"D={args.dim} float32, batches of {args.batch}; medians of {args.runs} interleaved "
        f"runs (*_min: ratio of the fastest runs), {torch.get_num_threads()} threads; "
        f"torch_cdist on {args.device}, ours_torch on {'cuda' if cuda_usable() else 'cpu'}; "
        "ours_torch and faiss* are hudd_core.assign.NearestClusterIndex backends"
    )
    write_results(args.name, rows_list, cols, note)


if __name__ == "__main__":
    main()
