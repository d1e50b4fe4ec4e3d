"""ClusterModule (HUDD step 3) as a step: every layer of ``T/Heatmaps`` clustered by the
published rule (:mod:`hudd_core.cluster.ward`, each layer's results cached in
``T/ClusterAnalysis/<layer>/`` under a signature of what they depend on) or by a method
of the catalogue (:mod:`hudd_core.cluster.methods`), then the root-cause clusters (RCCs)
as folders, GIFs and tables, and the analysis beside them
(:mod:`hudd_core.cluster.analysis`).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hudd_core.cluster.analysis import analyse, embedding_of, read_metadata, write_cluster_analysis
from hudd_core.cluster.attach import DEFAULT_MODE, MAX_UNCLUSTERED, check_attach
from hudd_core.cluster.knee import gradient4
from hudd_core.cluster.labels import layer_rows
from hudd_core.cluster.methods import SOURCES, Method, resolve, run_method
from hudd_core.cluster.ward import (
    DEFAULT_K_RANGE,
    LayerClustering,
    approximate_reason,
    cluster_layer,
    faithful_summary,
    k_bounds,
)
from hudd_core.fileio import (
    atomic_write_json,
    file_digest,
    fresh_tmp_dir,
    replace_dir,
    safe_component,
    write_csv,
)
from hudd_core.store import read_heatmap_index

_SIGNATURE_VERSION = 2


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
    attach: str = DEFAULT_MODE,
    max_unclustered: float = MAX_UNCLUSTERED,
) -> dict:
    """The whole ClusterModule over ``T/Heatmaps``: every (or the given) layer clustered,
    the best layer chosen, and its RCCs written (``T/clusters.csv``, ``T/<layer>/``,
    GIFs, and the variance-reduction tables when ``DataSets/TestSet/metadata.csv``
    exists). Layers whose results are complete and valid are not recomputed. Returns the
    summary written to ``T/ClusterAnalysis/summary.json``.

    Args:
        workdir: the work folder ``T``.
        data: the DataSets root (the images' paths in ``T`` are relative to it).
        export: ``"csv"`` or ``"xlsx"``: also each layer's distance matrix
            (:func:`export_distances`), checked before anything is clustered.
        method: ``"hudd"`` (the published rule) or a method of
            :mod:`hudd_core.cluster.methods`, whose noise ``attach`` and ``max_unclustered``
            attach (:mod:`hudd_core.cluster.attach`); ``act-*`` and ``rxa-*`` read
            ``T/Activations`` (``hudd heatmaps --activations``).
        feature_model, feature_weights, feature_layer: the extractor of ``model-*``
            methods (:mod:`hudd_core.feature_model`; ``trust_model_file`` as for
            ``--model``), fed the images at ``feature_size`` with ``feature_mean`` and
            ``feature_std`` (an ImageNet extractor wants its own normalisation).

    Example (after ``hudd heatmaps``)::

        summary = run_cluster("T", "DataSets")
        print(summary["best_layer"], summary["layers"][summary["best_layer"]]["k"])
    """
    alternative = resolve(method)  # a bad name fails before any work
    run = _inputs(Path(workdir), Path(data), layers, export)
    if alternative is None:  # the published rule leaves no noise: nothing to attach
        rule = _Rule(k_range, selection, device, approx_threshold, seed, export)
        summary, labels, embedding = _run_faithful(run, rule, progress)
        return _write_rccs(run, labels, embedding, summary, gifs, progress)
    model = _Extractor(feature_model, feature_weights, feature_layer, trust_model_file,
                       feature_size, feature_mean, feature_std)  # fmt: skip
    summary, labels, embedding, marks = _run_method(run, alternative, seed, device, progress,
                                                    model, (attach, max_unclustered))  # fmt: skip
    return _write_rccs(run, labels, embedding, summary, gifs, progress, marks)


@dataclass(frozen=True)
class _Inputs:
    """What the step works on: ``T``, the DataSets root, the indexed error images, each
    layer's record in ``T/Heatmaps/layers.json`` by name, and the layers to cluster."""

    workdir: Path
    data: Path
    images: list[str]
    by_name: dict[str, dict]
    names: list[str]

    def heatmaps(self, layer: str) -> Path:
        return self.workdir / "Heatmaps" / self.by_name[layer]["file"]


def _inputs(workdir: Path, data: Path, layers: list[str] | None, export: str | None) -> _Inputs:
    """The step's :class:`_Inputs`, every one checked before anything is written; then
    ``T/ClusterAnalysis`` made."""
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
        read_metadata(metadata)
    (workdir / "ClusterAnalysis").mkdir(parents=True, exist_ok=True)
    return _Inputs(workdir, data, images, by_name, names)


@dataclass(frozen=True)
class _Extractor:
    """The ``--feature-model`` of the ``model-*`` methods, as :func:`run_cluster` got it."""

    spec: str | None
    weights: str | Path | None
    layer: str | None
    trust: bool
    size: int | None
    mean: list[float] | None
    std: list[float] | None


def _run_method(
    run: _Inputs,
    method: Method,
    seed: int,
    device: str | None,
    progress: bool,
    extractor: _Extractor,
    attach: tuple[str, float],
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray | None]:
    """A method of the catalogue over the layers, its noise attached by ``attach``:
    ``(summary, labels, 2-D embedding, attachment marks)``; the marks are None with
    ``attach none`` (``T/clusters.csv`` as before: no ``attached`` column)."""
    check_attach(*attach)  # a bad setting fails before the clustering
    files = {n: run.heatmaps(n) for n in run.names}
    shapes = {n: run.by_name[n].get("shape", []) for n in run.names}
    source = SOURCES[method.features]
    activations = _activation_files(run.workdir, run.images, run.names) if source in (
        "activations", "both") else None  # fmt: skip
    extracted = None
    if source == "model":
        if extractor.spec is None:
            raise ValueError(f"--method {method.name} clusters the features of --feature-model: "
                             "give one (README: Clustering methods)")  # fmt: skip
        extracted = _extractor_features(run, extractor, seed, device, progress)
    summary, labels, embedding, marks = run_method(files, run.images, method, seed, shapes,
                                                   activations=activations,
                                                   extracted=extracted,
                                                   attach=attach)  # fmt: skip
    if source == "model":
        summary["feature_model"] = {
            "spec": extractor.spec,
            "layer": extractor.layer,
            "weights": extractor.weights and str(extractor.weights),
        }
    return summary, labels, embedding, None if attach[0] == "none" else marks


def _extractor_features(
    run: _Inputs, extractor: _Extractor, seed: int, device: str | None, progress: bool
) -> np.ndarray:
    """The ``--feature-model`` features of the error images
    (:func:`hudd_core.feature_model.extract_features`)."""
    from hudd_core.feature_model import extract_features, load_feature_model

    model = load_feature_model(extractor.spec, extractor.weights, trust=extractor.trust,
                               seed=seed)  # fmt: skip
    return extract_features(model, run.data, run.images, layer=extractor.layer,
                            image_size=extractor.size, mean=extractor.mean, std=extractor.std,
                            device=device or "auto", progress=progress)  # fmt: skip


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


@dataclass(frozen=True)
class _Rule:
    """The published rule's options, as :func:`run_cluster` got them."""

    k_range: tuple[int, int]
    selection: str
    device: str | None
    approx_threshold: int | None
    seed: int
    export: str | None


def _run_faithful(run: _Inputs, rule: _Rule, progress: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """The published rule over the layers: ``(summary, labels of the best layer, 2-D
    embedding of its heatmaps)``."""
    from hudd_core.progress import bar

    results: dict[str, LayerClustering] = {}
    for name in bar(run.names, desc="cluster", unit="layer", enabled=progress):
        results[name] = _faithful_layer(run, name, rule)
    summary, labels = faithful_summary(results, len(run.images), rule.selection)
    return summary, labels, embedding_of(run.heatmaps(summary["best_layer"]), rule.seed)


def _faithful_layer(run: _Inputs, name: str, rule: _Rule) -> LayerClustering:
    """One layer by the published rule: its cached results when their signature still
    matches, else clustered and written; then its distances exported when asked."""
    path, images = run.heatmaps(name), run.images
    X = layer_rows(path, len(images))
    lo, hi = k_bounds(X.shape[0], rule.k_range)
    reason = approximate_reason(X.shape[0], rule.approx_threshold)  # once: the cache agrees
    sig = _signature(path, X.shape[0], lo, hi, rule.selection, bool(reason), rule.seed)
    folder = layer_folder(run.workdir, name)
    res = _cached(folder, sig)
    if res is None:
        try:
            res = cluster_layer(
                X,
                name=name,
                k_range=rule.k_range,
                selection=rule.selection,
                device=rule.device,
                approx_threshold=rule.approx_threshold,
                approximate=reason,
                seed=rule.seed,
            )
        except ValueError as exc:  # name the file and the image, not just a row
            raise ValueError(f"cluster: {path}: {_name_rows(str(exc), images)}") from exc
        write_layer(folder, res, images, sig)
    if rule.export is not None:
        export_distances(folder, X, images, rule.export)
    return res


def _write_rccs(
    run: _Inputs,
    labels: np.ndarray,
    embedding: np.ndarray,
    summary: dict,
    gifs: bool,
    progress: bool,
    marks: np.ndarray | None = None,
) -> dict:
    """``T/clusters.csv`` (with ``marks``: its ``attached`` column), the RCC folders, RQ1,
    pairs/embedding and the summary."""
    from hudd_core import rcc

    workdir, data, images = run.workdir, run.data, run.images
    best = summary["best_layer"]
    rows = [(img, int(c), best) for img, c in zip(images, labels, strict=True)]
    if marks is None:
        write_csv(workdir / "clusters.csv", ["image", "cluster", "layer"], rows)
    else:
        write_csv(workdir / "clusters.csv", ["image", "cluster", "layer", "attached"],
                  [(*r, m) for r, m in zip(rows, marks.tolist(), strict=True)])  # fmt: skip
    rcc.write_rcc_folders(workdir, data, best, images, labels, gifs=gifs, progress=progress)
    _drop_previous_rccs(workdir, best)
    write_cluster_analysis(workdir, images, labels, embedding)
    misc = summary.get("attach", {}).get("misc_cluster")
    attached = None if marks is None else np.isin(marks, ("reach", "cap"))
    analysis = analyse(workdir, data, images, labels, misc=misc, attached=attached)
    if analysis is not None:
        summary["rq1"] = analysis
    atomic_write_json(workdir / "ClusterAnalysis" / "summary.json", summary)
    return summary


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
