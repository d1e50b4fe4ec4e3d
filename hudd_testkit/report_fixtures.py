"""A work folder as every step leaves it, made without training a model (shared by the
report tests and ``benchmarks/bench_report.py``): simulator test images that all count as
error-inducing, clustered by their simulator parameters (Ward, so sizes are uneven and
each cluster shares characteristics), class results, heatmaps, RCC folders, the unsafe
set from the improvement images and a ``retrain.json`` with three runs per method."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _heatmaps(T: Path, data: Path, images: list[str], rng) -> None:
    """``input`` (1 × 16 × 16: the image's pixels, centred) and ``conv`` (4 × 4 × 4,
    pooled and scaled at random) relevance, written row by row into memory maps."""
    from PIL import Image

    hm = T / "Heatmaps"
    hm.mkdir(parents=True)
    shapes = {"input": (1, 16, 16), "conv": (4, 4, 4)}
    maps = {
        name: np.lib.format.open_memmap(
            hm / f"{name}.npy", mode="w+", dtype=np.float32, shape=(len(images), int(np.prod(s)))
        )
        for name, s in shapes.items()
    }
    for r, img in enumerate(images):
        with Image.open(data / img) as im:
            a = np.asarray(im.convert("L").resize((16, 16)), dtype=np.float32) / 255 - 0.5
        maps["input"][r] = a.ravel()
        pooled = a.reshape(4, 4, 4, 4).mean(axis=(1, 3))
        maps["conv"][r] = (pooled[None] * rng.uniform(0.5, 2.0, (4, 1, 1))).ravel()
    for m in maps.values():
        m.flush()
    layers = [{"name": n, "shape": list(s), "file": f"{n}.npy"} for n, s in shapes.items()]
    (hm / "layers.json").write_text(
        json.dumps({"layers": layers, "composite": "hudd", "complete": True})
    )
    _write(hm / "index.csv", ["row", "image"], enumerate(images))


def _cluster_files(
    T: Path, data: Path, images: list[str], X: np.ndarray, k: int, gifs: bool, noise: bool
) -> np.ndarray:
    """Ward on the parameters cut into ``k`` clusters, written as the ClusterModule does
    (per layer: linkage, WICD curve, knee plot; the best layer ``conv``; its RCCs; the
    pairs and the 2-D embedding). ``noise``: as a density method leaves it, the last
    cluster becomes the unclustered images (cluster 0) and the summary names HDBSCAN."""
    import fastcluster
    from scipy.cluster.hierarchy import fcluster

    from hudd_core import rcc
    from hudd_core.cluster import LayerClustering, layer_folder, write_layer
    from hudd_core.cluster.analysis import analyse, embedding_of, write_cluster_analysis

    Z = fastcluster.linkage_vector(X, method="ward")
    labels = fcluster(Z, k, criterion="maxclust").astype(int)
    if noise:
        labels[labels == k] = 0
    ks = np.arange(2, max(4, min(len(images) // 2, 2 * k)) + 1)
    wicd = 1.0 / np.sqrt(ks)
    for layer in ("input", "conv"):
        res = LayerClustering(
            layer, Z, ks, wicd, wicd, wicd / 2, np.gradient(wicd), k, "wicd-knee", labels
        )
        write_layer(layer_folder(T, layer), res, images, {"synthetic": True})
    summary = {
        "method": "hudd",
        "best_layer": "conv",
        "selection": "wicd-knee",
        "n_images": len(images),
        "n_clusters": k,
        "inspect_share": min(1.0, 5 * k / len(images)),
        "layers": {
            n: {
                "k": k,
                "wicd": float(wicd[k - 2]),
                "silhouette": 0.5,
                "method": "wicd-knee",
                "approximate": False,
            }
            for n in ("input", "conv")
        },
    }
    _write(
        T / "clusters.csv",
        ["image", "cluster", "layer"],
        [(i, c, "conv") for i, c in zip(images, labels, strict=True)],
    )
    if noise:
        params = {"features": "unit", "reduction": "pca", "clusterer": "hdbscan", "dims": 10,
                  "layers": "spatial", "share": 0.05, "seed": 0}  # fmt: skip
        summary.update(method="hdbscan", method_params=params, selection="label-free score",
                       n_clusters=k - 1, n_unclustered=int(np.sum(labels == 0)))  # fmt: skip
    rcc.write_rcc_folders(T, data, "conv", images, labels, gifs=gifs)
    write_cluster_analysis(T, images, labels, embedding_of(T / "Heatmaps" / "conv.npy"))
    summary["rq1"] = analyse(T, data, images, labels)
    (T / "ClusterAnalysis" / "summary.json").write_text(json.dumps(summary))
    return labels


def _retrain_json(T: Path, labels: np.ndarray, rng, runs: int = 3) -> dict:
    """Accuracy before and after per method, overall and per RCC (``runs`` runs each)."""
    ids, counts = np.unique(labels, return_counts=True)
    before = {"overall": 0.5, "rcc": {}}
    methods = {m: {"accuracy": None, "gain": None, "rcc": {}} for m in ("hudd", "BL1", "BL2")}
    for cid, n in zip(ids.tolist(), counts.tolist(), strict=True):
        before["rcc"][str(cid)] = {"n": n, "accuracy": float(rng.uniform(0, 0.3))}
        for m in methods.values():
            r = rng.uniform(0.2, 0.9, runs).tolist()
            m["rcc"][str(cid)] = {
                "n": n,
                "mean": float(np.mean(r)),
                "std": float(np.std(r, ddof=1)),
                "runs": r,
            }
    for m in methods.values():
        r = rng.uniform(0.5, 0.9, runs)
        m["accuracy"] = {"mean": float(r.mean()), "std": float(r.std(ddof=1)), "runs": r.tolist()}
        g = r - 0.5
        m["gain"] = {"mean": float(g.mean()), "std": float(g.std(ddof=1)), "runs": g.tolist()}
    info = {
        "model": "m.pt",
        "retrained_model": "m_retrained.pt",
        "hp": {},
        "repeats": runs,
        "seed": 0,
        "labelling_budget": 0,
        "balanced_unsafe_set": 0,
        "before": before,
        **methods,
    }
    (T / "retrain.json").write_text(json.dumps(info))
    return info


def make_report_case(
    root: Path,
    n_errors: int,
    n_clusters: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    gifs: bool = True,
    noise: bool = False,
) -> dict:
    """Writes ``root/DataSets`` (simulator: ``n_errors`` test images, half as many
    improvement images) and ``root/T``; returns paths, images, labels and retrain.json.
    ``noise``: a density method's clustering (see :func:`_cluster_files`)."""
    from hudd_core.data.generate import generate

    rng = np.random.default_rng(seed)
    data, T = root / "DataSets", root / "T"
    generate(
        data,
        sizes={"TestSet": n_errors, "ImprovementSet": max(20, n_errors // 2)},
        image_size=image_size,
        seed=seed,
        progress=False,
    )
    meta = _rows(data / "TestSet" / "metadata.csv")
    params = [c for c in meta[0] if c not in ("image", "planted")]
    images = [f"TestSet/{r['image']}" for r in meta]
    X = np.array([[float(r[p]) for p in params] for r in meta])
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    classes = sorted({i.split("/")[1] for i in images})
    predicted = [rng.choice([c for c in classes if c != i.split("/")[1]]) for i in images]
    _write(
        T / "testResult.csv",
        ["image", "result", "expected", "predicted"],
        [(i, "Wrong", i.split("/")[1], p) for i, p in zip(images, predicted, strict=True)],
    )
    _heatmaps(T, data, images, rng)
    labels = _cluster_files(T, data, images, X, n_clusters, gifs, noise)
    pool = [f"ImprovementSet/{r['image']}" for r in _rows(data / "ImprovementSet" / "metadata.csv")]
    rows, start = [], 0
    ids, sizes = np.unique(labels, return_counts=True)
    for cid, n in zip(ids.tolist(), sizes.tolist(), strict=True):  # the pool shared by size
        quota = math.ceil(2 * n) if n > 1 and cid != 0 else 0  # noise: no quota
        take = pool[start : start + min(quota, len(pool) * n // len(images))]
        start += len(take)
        rows += [(img, cid, f"{0.1 + 0.01 * j:.4f}", 0) for j, img in enumerate(take)]
    _write(T / "unsafe_set.csv", ["image", "cluster", "distance", "order"], rows)
    info = _retrain_json(T, labels, rng)
    return {"T": T, "data": data, "images": images, "labels": labels, "retrain": info}
