"""ClusterModule (HUDD step 3): per-layer Ward clustering of the error-inducing images'
heatmaps, the number of clusters from the WICD knee, the best layer, and the root-cause
clusters (RCCs) as folders, GIFs and tables.

Per layer, the reference scheme (DESIGN.md): D = Euclidean distances of the heatmaps
(GEMM, :mod:`hudd_core.distance`, on the GPU when usable); each row of D divided by its
maximum; Ward linkage (fastcluster) on the Euclidean distances between those rows. Then
WICD (on the raw distances D) and the silhouette (on the second-level distances Ward ran
on) for every k in the range come from one walk up the tree (:mod:`hudd_core.wicd`), and
k is the knee of the gradient of the WICD measured on the row-normalised matrix S (each
row of D divided by its maximum, S[i][j] for j > i, as the published toolset's
clusterModule.HACluster) (:mod:`hudd_core.knee`). The best layer has the lowest WICD on
the raw D at its k; ``input`` is never chosen.

The exact path needs about :data:`BYTES_PER_PAIR` bytes per pair of error images (the
condensed first and second levels, the silhouette's copy and, while the second level is
built, the dense normalised rows and their Gram matrix). It runs whenever that fits in
the memory available; otherwise, or above ``approx_threshold`` error images when one is
given, an approximate path runs instead, announced by a warning and recorded in the
summary (``clustering``): the heatmaps are projected to
``approx_dims`` dimensions (Gaussian random projection, which keeps Euclidean distances
within a small factor), Ward runs on them with ``fastcluster.linkage_vector`` (no second
level: it needs N² memory), and WICD/silhouette are estimated on a random sample of
``approx_sample`` images (raw distances for WICD, projected ones for the silhouette).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(m, 0.1, (20, 30)) for m in (0, 3, 6)]).astype("f4")
    >>> res = cluster_layer(X, name="fc", device="cpu")
    >>> res.k, np.bincount(res.labels)[1:].tolist()  # the gradient's knee: past the elbow
    (4, [20, 20, 7, 13])
    >>> res.ks[np.argmax(res.silhouette)]  # what --selection silhouette would take
    np.int64(3)
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import fastcluster
import numpy as np

from hudd_core import wicd as _wicd
from hudd_core.cluster_methods import inspect_share, layer_rows
from hudd_core.config import DEFAULTS, parse_k_range
from hudd_core.distance import second_level_pdist
from hudd_core.fileio import (
    atomic_write_json,
    file_digest,
    fresh_tmp_dir,
    replace_dir,
    safe_component,
    write_csv,
)
from hudd_core.knee import best_layer, choose_k
from hudd_core.store import read_heatmap_index

DEFAULT_K_RANGE = parse_k_range(DEFAULTS["k_range"])
BYTES_PER_PAIR = 32  # peak working memory of the exact path, per pair of error images
MEMORY_HEADROOM = 0.8  # share of the available memory the exact path may plan to use
_SIGNATURE_VERSION = 2


@dataclass
class LayerClustering:
    """One layer's clustering: the tree, the curves over ``ks``, the chosen k and labels."""

    layer: str
    linkage: np.ndarray
    ks: np.ndarray
    wicd: np.ndarray  # on the row-normalised S: the curve behind the knee
    wicd_raw: np.ndarray  # on the raw D: what the best layer compares
    silhouette: np.ndarray
    gradient: np.ndarray
    k: int
    method: str  # wicd-knee | silhouette | fallback-silhouette
    labels: np.ndarray  # cluster id 1..k per image (row order)
    approximate: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.labels.shape[0]

    def at_k(self) -> tuple[float, float]:
        """``(WICD on the raw distances, silhouette)`` at the chosen k."""
        i = int(self.k - self.ks[0])
        return float(self.wicd_raw[i]), float(self.silhouette[i])


def k_bounds(n: int, k_range: tuple[int, int] = DEFAULT_K_RANGE) -> tuple[int, int]:
    """The k range actually scanned for ``n`` images: ``k_range`` capped by
    ``clamp(n // 2, 2, ...)`` (DESIGN.md: k = 2 .. clamp(N/2, 2, 500)) and by ``n``.

    Example:
        >>> k_bounds(30), k_bounds(5000), k_bounds(3)
        ((2, 15), (2, 500), (2, 2))
    """
    lo, hi = int(k_range[0]), int(k_range[1])
    if lo < 1 or hi < lo:
        raise ValueError(f"invalid k range {lo}:{hi}")
    hi = min(hi, max(2, n // 2), n)
    lo = min(lo, hi)
    return lo, hi


def exact_memory(n: int) -> int:
    """Bytes the exact path needs for ``n`` error images (:data:`BYTES_PER_PAIR` a pair).

    Example:
        >>> exact_memory(20000) / 2**30  # GiB
        5.96...
    """
    return BYTES_PER_PAIR * n * (n - 1) // 2


def available_memory() -> int:
    """The memory the system can still give (``MemAvailable``), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def approximate_reason(n: int, approx_threshold: int | None, memory: int | None = None) -> str:
    """Why ``n`` error images take the approximate path, or ``""`` for the exact one:
    ``approx_threshold`` (when given) is exceeded, or the exact path's memory does not
    fit in ``MEMORY_HEADROOM`` of ``memory`` (default: what is available now)."""
    if approx_threshold is not None and n > approx_threshold:
        return f"{n} error images exceed --approx-threshold {approx_threshold}"
    need = exact_memory(n)
    have = available_memory() if memory is None else memory
    if need > MEMORY_HEADROOM * have:
        return (
            f"the exact clustering of {n} error images needs {need / 2**30:.1f} GiB "
            f"({BYTES_PER_PAIR} bytes a pair), more than {MEMORY_HEADROOM:.0%} of the "
            f"{have / 2**30:.1f} GiB available"
        )
    return ""


def _linkage_exact(X, device, progress: bool):
    second, first = second_level_pdist(X, device=device, progress=progress)
    # Ward on the second level consumes its input (preserve_input=False saves N² memory);
    # the silhouette is measured on that same second-level distance, so copy it first.
    sil_d = second.copy()
    Z = fastcluster.linkage(second, method="ward", preserve_input=False)
    return Z, first, sil_d


def random_projection(X, dims: int, seed: int, device: str | None = "auto") -> np.ndarray:
    """``X @ R`` with R a D × dims Gaussian matrix scaled by 1/sqrt(dims), block by block
    (X may be a memmap larger than RAM). Returns N × dims float32."""
    import torch

    from hudd_core._ext import resolve_device

    dev = resolve_device(device, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    R = (torch.randn(X.shape[1], dims, generator=gen) / dims**0.5).to(dev)
    out = np.empty((X.shape[0], dims), dtype=np.float32)
    step = max(1, (256 << 20) // max(1, 4 * X.shape[1]))
    for a in range(0, X.shape[0], step):
        block = torch.from_numpy(np.ascontiguousarray(X[a : a + step], dtype=np.float32))
        out[a : a + step] = (block.to(dev) @ R).cpu().numpy()
    return out


def _linkage_approximate(X, dims, sample, seed, device, name, reason):
    from hudd_core.distance import pdist

    n = X.shape[0]
    warnings.warn(
        f"{name}: {reason}; approximate clustering "
        f"(random projection to {min(dims, X.shape[1])} dims, fastcluster.linkage_vector Ward, "
        f"WICD/silhouette estimated on {min(sample, n)} sampled images)",
        RuntimeWarning,
        stacklevel=3,
    )
    P = random_projection(X, dims, seed, device) if X.shape[1] > dims else np.asarray(X, "f4")
    Z = fastcluster.linkage_vector(P.astype(np.float64), method="ward")
    pts = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    first = pdist(np.asarray(X[pts]), device=device)
    sil_d = pdist(P[pts], device="cpu")
    return Z, first, sil_d, pts


def cluster_layer(
    X,
    *,
    name: str = "layer",
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    selection: str = "wicd-knee",
    device: str | None = "auto",
    approx_threshold: int | None = None,
    approx_dims: int = 256,
    approx_sample: int = 4000,
    seed: int = 0,
    progress: bool = False,
    approximate: str | None = None,
) -> LayerClustering:
    """Clusters the rows of ``X`` (N × D heatmaps) as HUDD does and picks k.

    Args:
        X: N × D array or memmap (N ≥ 1; a single image is one cluster, ``k = 1``,
            method ``single-image``, an empty linkage).
        k_range: ``(lo, hi)`` numbers of clusters to scan, capped by :func:`k_bounds`.
        selection: ``"wicd-knee"`` (reference) or ``"silhouette"``.
        device: where distances are computed (``"auto"``: the GPU when usable).
        approx_threshold: above this many rows, the approximate path (with a warning);
            ``None``: only when the exact path does not fit in memory.
        approximate: the caller's decision (:func:`approximate_reason`, ``""`` for exact),
            so that a cached layer's signature and the path it took agree; ``None``:
            decided here.

    Returns:
        A :class:`LayerClustering`; ``labels`` are 1..k, numbered in dendrogram order.
    """
    n = int(X.shape[0])
    if n < 1:
        raise ValueError(f"{name}: no error image to cluster")
    if n == 1:
        return single_image(name, X)
    lo, hi = k_bounds(n, k_range)
    points = None
    reason = approximate_reason(n, approx_threshold) if approximate is None else approximate
    if reason:
        Z, first, sil_d, points = _linkage_approximate(
            X, approx_dims, approx_sample, seed, device, name, reason
        )
    else:
        Z, first, sil_d = _linkage_exact(X, device, progress)
    ks, wicd_raw, wicd_s = _wicd.wicd_curves(Z, first, lo, hi, points)
    _, sil = _wicd.silhouette_curve(Z, sil_d, lo, hi, points)
    choice = choose_k(ks, wicd_s, sil, selection, name)
    return LayerClustering(
        layer=name,
        linkage=Z,
        ks=ks,
        wicd=wicd_s,
        wicd_raw=wicd_raw,
        silhouette=sil,
        gradient=choice.gradient,
        k=choice.k,
        method=choice.method,
        labels=_wicd.labels_at(Z, choice.k),
        approximate=points is not None,
        extra={"approximate_reason": reason} if reason else {},
    )


def single_image(name: str, X) -> LayerClustering:
    """The clustering of one error image: one cluster (k = 1, WICD 0), no tree. Its
    heatmap must still be finite (the same check as the distances')."""
    if not np.isfinite(np.asarray(X[:1], dtype=np.float64)).all():
        raise ValueError(f"{name}: row 0 contains NaN or inf")
    zero = np.zeros(1)
    return LayerClustering(
        layer=name,
        linkage=np.zeros((0, 4)),
        ks=np.array([1]),
        wicd=zero,
        wicd_raw=zero.copy(),
        silhouette=zero.copy(),
        gradient=zero.copy(),
        k=1,
        method="single-image",
        labels=np.array([1], dtype=np.int64),
    )


# --- files -------------------------------------------------------------------------------


def _signature(
    heatmap: Path, n: int, lo: int, hi: int, selection: str, approx: bool, seed: int
) -> dict:
    """What a layer's results depend on: rerunning with the same signature reuses them."""
    st = heatmap.stat()
    sig = {
        "version": _SIGNATURE_VERSION,
        "heatmap_size": st.st_size,
        "heatmap_mtime_ns": st.st_mtime_ns,
        "n": n,
        "k_range": [lo, hi],
        "selection": selection,
        "approximate": approx,
    }
    if approx:  # the projection and the sample follow the seed
        sig["seed"] = seed
    return sig


def write_layer(folder: Path, res: LayerClustering, images: list[str], signature: dict) -> None:
    """``T/ClusterAnalysis/<layer>/``: linkage.npy, wicd.csv, clusters.csv, knee.png and
    layer.json (written last in a temporary folder renamed into place)."""
    from hudd_core.plots import knee_plot

    tmp = fresh_tmp_dir(folder)
    np.save(tmp / "linkage.npy", res.linkage)
    write_csv(
        tmp / "wicd.csv",
        ["k", "wicd", "wicd_raw", "silhouette"],
        (
            [int(k), repr(float(w)), repr(float(r)), repr(float(s))]
            for k, w, r, s in zip(res.ks, res.wicd, res.wicd_raw, res.silhouette, strict=True)
        ),
    )
    write_csv(
        tmp / "clusters.csv", ["image", "cluster"], zip(images, res.labels.tolist(), strict=True)
    )
    knee_plot(res, tmp / "knee.png")
    wicd_k, sil_k = res.at_k()
    info = {
        "layer": res.layer,
        "n": res.n,
        "k": res.k,
        "method": res.method,
        "wicd": wicd_k,
        "silhouette": sil_k,
        "approximate": res.approximate,
        "approximate_reason": res.extra.get("approximate_reason", ""),
        "signature": signature,
        "files": {n: file_digest(tmp / n) for n in _CACHED_FILES},  # verified on reuse
    }
    (tmp / "layer.json").write_text(json.dumps(info, indent=2))
    replace_dir(tmp, folder)


_CACHED_FILES = ("linkage.npy", "wicd.csv", "clusters.csv")


def load_layer(folder: Path) -> LayerClustering:
    """Reads back what :func:`write_layer` wrote."""
    info = json.loads((folder / "layer.json").read_text())
    table = np.loadtxt(folder / "wicd.csv", delimiter=",", skiprows=1, ndmin=2)
    with open(folder / "clusters.csv", newline="") as f:
        labels = np.array([int(r["cluster"]) for r in csv.DictReader(f)], dtype=np.int64)
    from hudd_core.knee import gradient4

    return LayerClustering(
        layer=info["layer"],
        linkage=np.load(folder / "linkage.npy"),
        ks=table[:, 0].astype(np.int64),
        wicd=table[:, 1],
        wicd_raw=table[:, 2],
        silhouette=table[:, 3],
        gradient=gradient4(table[:, 1]),
        k=int(info["k"]),
        method=info["method"],
        labels=labels,
        approximate=bool(info["approximate"]),
        extra={
            "signature": info.get("signature"),
            "approximate_reason": info.get("approximate_reason", ""),
        },
    )


def _cached(folder: Path, signature: dict) -> LayerClustering | None:
    try:
        info = json.loads((folder / "layer.json").read_text())
        files = info.get("files", {})
        whole = all(files.get(n) == file_digest(folder / n) for n in _CACHED_FILES)
        if info.get("signature") == signature and whole:  # a damaged cache is recomputed
            return load_layer(folder)
    except (OSError, ValueError, KeyError):
        pass
    return None


# Largest number of error images whose distance matrix --export-distances writes.
EXPORT_LIMITS = {"csv": 5000, "xlsx": 1000}


def check_export(n: int, fmt: str) -> None:
    """A ValueError when ``fmt`` is no export format or ``n`` images exceed its limit."""
    if fmt not in EXPORT_LIMITS:
        raise ValueError(f"--export-distances must be csv or xlsx, got {fmt!r}")
    if n > EXPORT_LIMITS[fmt]:
        raise ValueError(
            f"--export-distances {fmt}: {n} error images exceed the limit of "
            f"{EXPORT_LIMITS[fmt]} for {fmt} (the matrix has N² entries)"
        )


def export_distances(folder: Path, X, images: list[str], fmt: str) -> Path:
    """The layer's N × N heatmap distance matrix (Euclidean, as clustered) with the image
    names as the header row and first column, as the published ClusterModule exports it:
    ``<folder>/distances.csv`` or ``distances.xlsx`` (needs openpyxl). Up to
    :data:`EXPORT_LIMITS` images (a CSV of 5000² distances is about 250 MB)."""
    from hudd_core.distance import cdist
    from hudd_core.fileio import atomic_write

    check_export(len(images), fmt)
    D = cdist(np.asarray(X, dtype=np.float32), np.asarray(X, dtype=np.float32))
    np.fill_diagonal(D, 0.0)
    path = Path(folder) / f"distances.{fmt}"
    if fmt == "csv":
        rows = ([img, *(repr(float(v)) for v in row)] for img, row in zip(images, D, strict=True))
        write_csv(path, ["image", *images], rows)
        return path
    try:
        from openpyxl import Workbook
    except ImportError as exc:
        raise ValueError("--export-distances xlsx needs openpyxl (pip install openpyxl)") from exc
    book = Workbook(write_only=True)
    sheet = book.create_sheet("distances")
    sheet.append(["image", *images])
    for img, row in zip(images, D, strict=True):
        sheet.append([img, *row.tolist()])
    atomic_write(path, lambda tmp: book.save(tmp))
    return path


# The files of T/ClusterAnalysis beside the layer folders.
ANALYSIS_FILES = ("summary.json", "variance_reduction.csv", "rq1.png", "rq1.json", "planted.csv")


def layer_folder(workdir: Path, layer: str) -> Path:
    """``T/ClusterAnalysis/<layer>/`` (the layer's name made safe, never one of the
    folder's own files)."""
    return Path(workdir) / "ClusterAnalysis" / safe_component(layer, ANALYSIS_FILES)


def run_cluster(
    workdir: str | Path,
    data: str | Path,
    *,
    layers: list[str] | None = None,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    selection: str = "wicd-knee",
    device: str | None = "auto",
    approx_threshold: int | None = None,
    seed: int = 0,
    gifs: bool = True,
    export: str | None = None,
    progress: bool = True,
    method: str = "hudd",
    feature_model: str | None = None,
    feature_weights: str | Path | None = None,
    feature_layer: str | None = None,
    trust_model_file: bool = False,
    feature_size: int | None = None,
    feature_mean: list[float] | None = None,
    feature_std: list[float] | None = None,
) -> dict:
    """The whole ClusterModule over ``T/Heatmaps``: every (or the given) layer clustered,
    the best layer chosen, and its RCCs written (``T/clusters.csv``, ``T/<layer>/``,
    GIFs, and the variance-reduction tables when ``DataSets/TestSet/metadata.csv``
    exists). Layers whose results are complete and valid are not recomputed.

    Args:
        workdir: the work folder ``T``.
        data: the DataSets root (the images' paths in ``T`` are relative to it).
        export: ``"csv"`` or ``"xlsx"``: also each layer's distance matrix
            (:func:`export_distances`), checked before anything is clustered.
        method: ``"hudd"`` (the published rule) or a method of
            :mod:`hudd_core.cluster_methods` (noise images get cluster 0); ``act-*`` and
            ``rxa-*`` read ``T/Activations`` (``hudd heatmaps --activations``).
        feature_model, feature_weights, feature_layer: the extractor of ``model-*``
            methods (:mod:`hudd_core.feature_model`; ``trust_model_file`` as for
            ``--model``), fed the images at ``feature_size`` with ``feature_mean`` and
            ``feature_std`` (an ImageNet extractor wants its own normalisation).

    Returns:
        The summary written to ``T/ClusterAnalysis/summary.json``.

    Example (after ``hudd heatmaps``)::

        summary = run_cluster("T", "DataSets")
        print(summary["best_layer"], summary["layers"][summary["best_layer"]]["k"])
    """
    from hudd_core import cluster_methods as cm
    from hudd_core import rq1

    workdir, data = Path(workdir), Path(data)
    alternative = cm.resolve(method)  # a bad name fails before any work
    meta, images = read_heatmap_index(workdir)
    by_name = {layer["name"]: layer for layer in meta}
    names = list(by_name) if not layers else list(layers)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; recorded: {list(by_name)}")
    if export is not None:  # before any layer is clustered
        check_export(len(images), export)
    metadata = data / "TestSet" / "metadata.csv"
    if metadata.is_file():  # a bad metadata.csv stops the step before it writes anything
        rq1.read_metadata(metadata)
    (workdir / "ClusterAnalysis").mkdir(parents=True, exist_ok=True)
    if alternative is not None:
        files = {n: workdir / "Heatmaps" / by_name[n]["file"] for n in names}
        shapes = {n: by_name[n].get("shape", []) for n in names}
        source = cm.SOURCES[alternative.features]
        activations = _activation_files(workdir, images, names) if source in (
            "activations", "both") else None  # fmt: skip
        extracted = None
        if source == "model":
            if feature_model is None:
                raise ValueError(f"--method {method} clusters the features of --feature-model: "
                                 "give one (README: Clustering methods)")  # fmt: skip
            extracted = _extractor_features(
                data, images, feature_model, feature_weights, trust_model_file, seed,
                layer=feature_layer, image_size=feature_size, mean=feature_mean,
                std=feature_std, device=device or "auto", progress=progress,
            )  # fmt: skip
        summary, labels, embedding = cm.run_method(files, images, alternative, seed, shapes,
                                                   activations=activations,
                                                   extracted=extracted)  # fmt: skip
        if source == "model":
            summary["feature_model"] = {
                "spec": feature_model,
                "layer": feature_layer,
                "weights": feature_weights and str(feature_weights),
            }
    else:
        summary, labels = _run_faithful(
            workdir, images, by_name, names, k_range, selection, device, approx_threshold,
            seed, export, progress,
        )  # fmt: skip
        embedding = cm.embedding_of(workdir / "Heatmaps" / by_name[summary["best_layer"]]["file"],
                                    seed)  # fmt: skip
    return _write_rccs(workdir, data, images, labels, embedding, summary, gifs, progress)


def _extractor_features(
    data: Path,
    images: list[str],
    spec: str,
    weights: str | Path | None,
    trust: bool,
    seed: int,
    **options,
) -> np.ndarray:
    """The ``--feature-model`` features of the error images (``options`` go to
    :func:`hudd_core.feature_model.extract_features`)."""
    from hudd_core.feature_model import extract_features, load_feature_model

    extractor = load_feature_model(spec, weights, trust=trust, seed=seed)
    return extract_features(extractor, data, images, **options)


def _activation_files(workdir: Path, images: list[str], names: list[str]) -> dict[str, Path]:
    """``{layer: T/Activations file}`` for ``names``, checked to hold the same images in
    the same order as ``T/Heatmaps``."""
    folder = workdir / "Activations"
    again = "run `hudd heatmaps --activations` (or `hudd run`, which does it for this method)"
    try:
        meta, rows = read_heatmap_index(workdir, folder="Activations")
    except FileNotFoundError as exc:
        raise ValueError(f"{folder}: no activations ({exc}): {again}") from exc
    if rows != images:
        raise ValueError(f"{folder} holds other images than {workdir / 'Heatmaps'}: {again}")
    by_name = {m["name"]: folder / m["file"] for m in meta}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"{folder} lacks the layers {missing}: {again}")
    return {n: by_name[n] for n in names}


def _run_faithful(
    workdir: Path,
    images: list[str],
    by_name: dict[str, dict],
    names: list[str],
    k_range: tuple[int, int],
    selection: str,
    device: str | None,
    approx_threshold: int | None,
    seed: int,
    export: str | None,
    progress: bool,
) -> tuple[dict, np.ndarray]:
    """The published rule over the layers: ``(summary, labels of the best layer)``."""
    from hudd_core.progress import bar

    results: dict[str, LayerClustering] = {}
    for name in bar(names, desc="cluster", unit="layer", enabled=progress):
        path = workdir / "Heatmaps" / by_name[name]["file"]
        X = layer_rows(path, len(images))
        lo, hi = k_bounds(X.shape[0], k_range)
        reason = approximate_reason(X.shape[0], approx_threshold)  # once: the cache agrees
        sig = _signature(path, X.shape[0], lo, hi, selection, bool(reason), seed)
        folder = layer_folder(workdir, name)
        res = _cached(folder, sig)
        if res is None:
            try:
                res = cluster_layer(
                    X,
                    name=name,
                    k_range=k_range,
                    selection=selection,
                    device=device,
                    approx_threshold=approx_threshold,
                    approximate=reason,
                    seed=seed,
                )
            except ValueError as exc:  # name the file and the image, not just a row
                raise ValueError(f"cluster: {path}: {_name_rows(str(exc), images)}") from exc
            write_layer(folder, res, images, sig)
        if export is not None:
            export_distances(folder, X, images, export)
        results[name] = res
    best = best_layer({n: r.at_k() for n, r in results.items()}, selection)
    summary = {
        "method": "hudd",
        "best_layer": best,
        "selection": selection,
        "n_images": len(images),
        "n_clusters": results[best].k,
        "inspect_share": inspect_share(results[best].labels),
        "layers": {
            n: {
                "k": r.k,
                "wicd": r.at_k()[0],
                "silhouette": r.at_k()[1],
                "method": r.method,
                "approximate": r.approximate,
            }
            for n, r in results.items()
        },
        "clustering": _path_summary(results),
    }
    return summary, results[best].labels


def _write_rccs(
    workdir: Path,
    data: Path,
    images: list[str],
    labels: np.ndarray,
    embedding: np.ndarray,
    summary: dict,
    gifs: bool,
    progress: bool,
) -> dict:
    """``T/clusters.csv``, the RCC folders, RQ1, pairs/embedding and the summary."""
    from hudd_core import rcc, rq1
    from hudd_core.cluster_methods import write_cluster_analysis

    best = summary["best_layer"]
    write_csv(
        workdir / "clusters.csv",
        ["image", "cluster", "layer"],
        [(img, int(c), best) for img, c in zip(images, labels, strict=True)],
    )
    rcc.write_rcc_folders(workdir, data, best, images, labels, gifs=gifs, progress=progress)
    _drop_previous_rccs(workdir, best)
    write_cluster_analysis(workdir, images, labels, embedding)
    analysis = rq1.analyse(workdir, data, images, labels)
    if analysis is not None:
        summary["rq1"] = analysis
    atomic_write_json(workdir / "ClusterAnalysis" / "summary.json", summary)
    return summary


def _path_summary(results: dict[str, LayerClustering]) -> dict:
    """``{"path": "exact" | "approximate", "reason", "bytes_per_pair"}`` over the layers."""
    reasons = {r.extra.get("approximate_reason", "") for r in results.values()} - {""}
    path = "approximate" if reasons else "exact"
    return {"path": path, "reason": "; ".join(sorted(reasons)), "bytes_per_pair": BYTES_PER_PAIR}


def _name_rows(message: str, images: list[str]) -> str:
    """``... row 12 ...`` → ``... row 12 (TestSet/x/1.png) ...``."""

    def named(m: re.Match) -> str:
        r = int(m.group(1))
        return f"{m.group(0)} ({images[r]})" if 0 <= r < len(images) else m.group(0)

    return re.sub(r"\brow (\d+)", named, message, count=1)


def _drop_previous_rccs(workdir: Path, best: str) -> None:
    """Removes ``T/<layer>/`` of an earlier run's best layer when another layer won now
    (only a folder that holds nothing but RCCs), so ``T`` shows one set of RCCs."""
    from hudd_core import rcc

    try:
        previous = json.loads((workdir / "ClusterAnalysis" / "summary.json").read_text())
    except (OSError, ValueError):
        return
    old = previous.get("best_layer")
    folder = rcc.rcc_folder(workdir, old) if old else None
    if not old or old == best or folder == rcc.rcc_folder(workdir, best) or not folder.is_dir():
        return
    if all(p.name.startswith("Cluster_") for p in folder.iterdir()):
        shutil.rmtree(folder)
