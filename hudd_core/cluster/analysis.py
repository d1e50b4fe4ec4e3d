"""What the root-cause clusters hold: the paper's RQ1 on simulator data, the (true →
predicted) pairs per cluster and a 2-D map of the error images.

Do the root-cause clusters share characteristics? (RQ1)

With the test set's ``metadata.csv`` (``image,<param>,...,planted``), for every cluster
and numeric parameter: the variance reduction against all error-inducing images,
``1 − var(cluster) / var(all errors)`` (population variances; NaN for singleton clusters
and constant parameters). A cluster "explains" its errors when some parameter's variance
drops by ≥ 50%; the share of such clusters (over clusters with more than one member) is
the RQ1 figure (also given over the parameters with more than two values only, as a
binary one reaches 100% in any cluster uniform in it). With a ``planted`` column, each
cluster's dominant planted region, its purity (share of the cluster in that region) and
recall (share of the region's error images in the cluster).

Files: ``T/ClusterAnalysis/variance_reduction.csv`` (``cluster,size,<params...>,
max_reduction,max_param``), ``planted.csv`` (``cluster,size,dominant,purity,recall``),
``rq1.json`` and ``rq1.png``; beside them ``pairs.csv`` and ``embedding.csv``
(:func:`write_cluster_analysis`).

Example:
    >>> import numpy as np
    >>> values = np.array([[0.0], [0.2], [10.0], [10.2]])
    >>> variance_reduction(values, np.array([1, 1, 2, 2])).round(4).tolist()
    [[0.9996], [0.9996]]
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from hudd_core.cluster.labels import NOISE
from hudd_core.cluster.methods import embedding_2d, features


def read_metadata(path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``({image: row}, numeric parameter names)``; images keyed relative to the set.
    A ValueError names the file when an image is listed twice (or no ``image`` column)."""
    from hudd_core.data.datasets import check_names

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "image" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: expected a header 'image,<param>,...'")
        listed = list(reader)
        check_names(path, [r["image"] for r in listed])
        rows = {r["image"]: r for r in listed}
        columns = [c for c in (reader.fieldnames or []) if c not in ("image", "planted")]
    numeric = []
    for c in columns:
        try:
            [float(r[c]) for r in rows.values()]
        except (TypeError, ValueError):
            continue
        numeric.append(c)
    return rows, numeric


def variance_reduction(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``1 − var(cluster)/var(all)`` per cluster (sorted ids) and column of ``values``
    (N × P, NaN = unknown); NaN for clusters with < 2 known values or constant columns."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    total = np.nanvar(values, axis=0)
    out = np.full((len(ids), values.shape[1]), np.nan)
    for r, cid in enumerate(ids):
        sub = values[labels == cid]
        known = np.sum(~np.isnan(sub), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.nanvar(np.where(known >= 2, sub, 0.0), axis=0)
            red = 1.0 - v / total
        out[r] = np.where((known >= 2) & (total > 0), red, np.nan)
    return out


def planted_purity_recall(regions: list[str], labels: np.ndarray) -> list[dict]:
    """Per cluster (sorted ids): the dominant planted region, purity and recall.

    Example:
        >>> planted_purity_recall(["a", "a", "b", "a"], np.array([1, 1, 2, 2]))[1]
        {'cluster': 2, 'size': 2, 'dominant': 'a', 'purity': 0.5, 'recall': 0.3333333333333333}
    """
    labels = np.asarray(labels)
    region_total = Counter(regions)
    rows = []
    for cid in np.unique(labels).tolist():
        members = Counter(regions[i] for i in np.flatnonzero(labels == cid))
        dominant, count = sorted(members.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        size = sum(members.values())
        rows.append(
            {
                "cluster": cid,
                "size": size,
                "dominant": dominant,
                "purity": count / size,
                "recall": count / region_total[dominant],
            }
        )
    return rows


def analyse(
    workdir: Path,
    data: Path,
    images: list[str],
    labels: np.ndarray,
    test_set: str = "TestSet",
    *,
    misc: int | None = None,
    attached: np.ndarray | None = None,
) -> dict | None:
    """Writes the RQ1 tables and figure when ``<data>/<test_set>/metadata.csv`` exists;
    returns their summary (None without metadata). ``misc``: the miscellaneous group's
    id (no root cause: not counted, as the unclustered); ``attached``: which images
    joined their cluster by attachment (:mod:`hudd_core.cluster.attach`): the summary
    then also gives RQ1 over the clusters without them (``without_attached``)."""
    from hudd_core.fileio import atomic_write_json
    from hudd_core.plots import rq1_plot

    path = Path(data) / test_set / "metadata.csv"
    if not path.exists():
        return None
    meta, params = read_metadata(path)
    prefix = f"{test_set}/"
    keys = [img[len(prefix) :] if img.startswith(prefix) else img for img in images]
    values = _values(meta, params, keys)
    labels = np.asarray(labels)
    ids = np.unique(labels).tolist()
    sizes = [int(np.sum(labels == c)) for c in ids]
    red = variance_reduction(values, labels)
    best, best_param = _strongest(red, params)
    out = Path(workdir) / "ClusterAnalysis"
    _write_reductions(out, params, ids, sizes, red, best, best_param)
    summary = _shares(values, params, ids, sizes, red, best, outside={NOISE, misc})
    rq1_plot(best, ids, 0.0 if np.isnan(summary["share_50pct"]) else summary["share_50pct"],
             out / "rq1.png")  # fmt: skip
    summary["missing_metadata"] = int(sum(k not in meta for k in keys))
    summary["unclustered"] = int(np.sum(labels == NOISE))
    if any("planted" in row for row in meta.values()):
        regions = [meta[k].get("planted", "none") if k in meta else "none" for k in keys]
        summary["planted"] = _planted(out, regions, labels)
    if attached is not None:
        summary.update(_attachment(values, params, labels, misc, np.asarray(attached, bool),
                                   regions if "planted" in summary else None))  # fmt: skip
    atomic_write_json(out / "rq1.json", summary)
    return summary


def _values(meta: dict[str, dict[str, str]], params: list[str], keys: list[str]) -> np.ndarray:
    """The numeric parameters of the images ``keys`` (N × P; NaN: not in the metadata)."""
    return np.array(
        [[float(meta[k][p]) if k in meta else np.nan for p in params] for k in keys],
        dtype=np.float64,
    ).reshape(len(keys), len(params))


def _strongest(red: np.ndarray, params: list[str]) -> tuple[np.ndarray, list[str]]:
    """Per cluster: its largest variance reduction and the parameter of it (NaN, "")."""
    best = np.full(red.shape[0], np.nan)
    best_param = [""] * red.shape[0]
    for r in range(red.shape[0]):
        if params and not np.all(np.isnan(red[r])):
            j = int(np.nanargmax(red[r]))
            best[r], best_param[r] = red[r, j], params[j]
    return best, best_param


def _write_reductions(
    out: Path,
    params: list[str],
    ids: list[int],
    sizes: list[int],
    red: np.ndarray,
    best: np.ndarray,
    best_param: list[str],
) -> None:
    """``variance_reduction.csv``: per cluster its size, every parameter's reduction and
    the largest."""
    from hudd_core.fileio import write_csv

    write_csv(
        out / "variance_reduction.csv",
        ["cluster", "size", *params, "max_reduction", "max_param"],
        [
            [c, s, *(_num(v) for v in red[r]), _num(best[r]), best_param[r]]
            for r, (c, s) in enumerate(zip(ids, sizes, strict=True))
        ],
    )


def _shares(
    values: np.ndarray,
    params: list[str],
    ids: list[int],
    sizes: list[int],
    red: np.ndarray,
    best: np.ndarray,
    outside: set | None = None,
) -> dict:
    """The RQ1 figures: the share of clusters with some parameter's variance reduced by
    ≥ 50%, over all parameters and over those with more than two values; the groups
    ``outside`` (default: the unclustered) are no cluster."""
    # the unclustered images (cluster 0, density methods) and the miscellaneous group
    # (their attachment) are no root-cause cluster
    outside = {NOISE} if outside is None else outside
    evaluated = [r for r in range(len(ids)) if sizes[r] > 1 and ids[r] not in outside]
    hits = [r for r in evaluated if best[r] >= 0.5]
    share = len(hits) / len(evaluated) if evaluated else float("nan")
    # A two-valued parameter (e.g. glasses on/off) drops to zero variance in any cluster
    # that happens to be uniform in it: also report the share over the other parameters.
    cont = [j for j in range(len(params)) if len(np.unique(values[~np.isnan(values[:, j]), j])) > 2]
    hits_cont = [
        r for r in evaluated if cont and np.nanmax(np.append(red[r, cont], -np.inf)) >= 0.5
    ]
    share_cont = len(hits_cont) / len(evaluated) if evaluated and cont else float("nan")
    return {
        "params": params,
        "n_clusters": len(ids),
        "n_evaluated": len(evaluated),
        "n_with_50pct_reduction": len(hits),
        "share_50pct": share,
        "binary_params": [p for j, p in enumerate(params) if j not in cont],
        "share_50pct_continuous": share_cont,
    }


def _attachment(
    values: np.ndarray,
    params: list[str],
    labels: np.ndarray,
    misc: int | None,
    attached: np.ndarray,
    regions: list[str] | None,
) -> dict:
    """``rq1.json``'s record of the attachment: how many images joined a cluster and how
    many form the miscellaneous group, and RQ1 (with the planted regions' best clusters)
    over the clusters as the method left them, the attached images out."""
    core = np.where(attached, NOISE, labels)
    ids = np.unique(core).tolist()
    sizes = [int(np.sum(core == c)) for c in ids]
    red = variance_reduction(values, core)
    best, _ = _strongest(red, params)
    without = _shares(values, params, ids, sizes, red, best, outside={NOISE, misc})
    if regions is not None:
        without["planted"] = _region_summary(regions, core, planted_purity_recall(regions, core))
    return {
        "attached": int(attached.sum()),
        "miscellaneous": int(np.sum(labels == misc)) if misc is not None else 0,
        "misc_cluster": misc,
        "without_attached": without,
    }


def _planted(out: Path, regions: list[str], labels: np.ndarray) -> dict:
    """``planted.csv`` (per cluster its dominant planted region, purity and recall) and
    the per-region summary of ``rq1.json``."""
    from hudd_core.fileio import write_csv

    rows = planted_purity_recall(regions, labels)
    write_csv(
        out / "planted.csv",
        ["cluster", "size", "dominant", "purity", "recall"],
        [
            [r["cluster"], r["size"], r["dominant"], _num(r["purity"]), _num(r["recall"])]
            for r in rows
        ],
    )
    return _region_summary(regions, labels, rows)


def _region_summary(regions: list[str], labels: np.ndarray, rows: list[dict]) -> dict:
    """Per planted region (not ``none``): its error count, the cluster holding most of
    them, that cluster's recall and purity for the region, and the clusters it dominates."""
    out = {}
    for region, total in sorted(Counter(regions).items()):
        if region == "none":
            continue
        in_region = np.array([r == region for r in regions])
        ids, counts = np.unique(labels[in_region], return_counts=True)
        top = int(ids[np.argmax(counts)])
        size = int(np.sum(labels == top))
        out[region] = {
            "errors": int(total),
            "best_cluster": top,
            "recall": float(counts.max() / total),
            "purity": float(counts.max() / size),
            "dominated_clusters": [r["cluster"] for r in rows if r["dominant"] == region],
        }
    return out


def _num(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else repr(float(v))


# --- pairs and the 2-D map ---------------------------------------------------------------


def embedding_of(heatmaps: Path, seed: int = 0) -> np.ndarray:
    """The 2-D embedding of a layer's heatmaps (unit rows, PCA) for ``embedding.csv``."""
    return embedding_2d(features(np.load(heatmaps, mmap_mode="r"), "unit"), seed)


def read_pairs(result_csv: Path) -> dict[str, str]:
    """``{image: "expected→predicted"}`` of a classifier's ``testResult.csv`` ({} for a
    keypoint regressor's, which has no classes)."""
    if not Path(result_csv).is_file():
        return {}
    with open(result_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "predicted" not in rows[0]:
        return {}
    return {r["image"]: f"{r['expected']}→{r['predicted']}" for r in rows}


def pair_shares(images: list[str], labels: np.ndarray, pairs: dict[str, str]) -> list[list]:
    """Per cluster and (true → predicted) pair: ``[cluster, pair, count, share]``,
    clusters in id order (noise, 0, first), pairs by decreasing count.

    Example:
        >>> pair_shares(["a", "b", "c"], np.array([1, 1, 2]), {"a": "x→y", "b": "x→y", "c": "y→x"})
        [[1, 'x→y', 2, 1.0], [2, 'y→x', 1, 1.0]]
    """
    rows = []
    labels = np.asarray(labels)
    for cid in np.unique(labels).tolist():
        members = [images[i] for i in np.flatnonzero(labels == cid)]
        counts = Counter(pairs.get(m, "unknown") for m in members)
        for pair, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append([int(cid), pair, c, c / len(members)])
    return rows


def write_cluster_analysis(
    workdir: Path, images: list[str], labels: np.ndarray, embedding: np.ndarray
) -> None:
    """``T/ClusterAnalysis/pairs.csv`` (``cluster,pair,count,share``) and
    ``embedding.csv`` (``image,cluster,x,y``: a 2-D map of the error images)."""
    from hudd_core.fileio import write_csv

    out = Path(workdir) / "ClusterAnalysis"
    pairs = read_pairs(Path(workdir) / "testResult.csv")
    write_csv(
        out / "pairs.csv",
        ["cluster", "pair", "count", "share"],
        [[c, p, n, repr(float(s))] for c, p, n, s in pair_shares(images, labels, pairs)],
    )
    write_csv(
        out / "embedding.csv",
        ["image", "cluster", "x", "y"],
        [
            [img, int(c), repr(float(x)), repr(float(y))]
            for img, c, (x, y) in zip(images, labels, embedding, strict=True)
        ],
    )
