"""Clustering methods beyond the published rule (``hudd cluster --method``), chosen
without labels.

A method is three small pieces composed (:class:`Method`):

- **features** of each error image at a layer: its heatmap as recorded (``raw``), or
  divided by its Euclidean norm (``unit``: the image's relevance *pattern*, not its
  total relevance, which mostly follows the model's confidence); the layer's activation
  (``act``, ``T/Activations``) or relevance × activation (``rxa``), both unit rows; or
  the output of a user-given feature extractor as it is (``model``, ``--feature-model``,
  SAFE style: one "layer", whose clusters the AssignModule measures at the heatmap layer
  where they are best separated, :func:`assign_layer`);
- **reduction**: none, PCA to ``dims`` components (:func:`reduce`, signs fixed), or UMAP
  to ``dims`` of the first 50 principal components (umap-learn, seeded);
- **clusterer**: Ward as published (:func:`hudd_core.cluster.ward.cluster_layer` on the
  reduced features) with k of the highest silhouette, HDBSCAN (scikit-learn), or DBSCAN
  with SAFE's eps (the knee of the sorted distances to the ``min_samples``-th
  neighbour).

Density clusterers leave *noise* points: they get the cluster id :data:`NOISE` (0,
what it means downstream: :mod:`hudd_core.cluster.labels`).

**Choosing without labels.** Every eligible layer (:func:`eligible`: those with a
spatial map, never ``input``) and every value of the clusterer's hyper-parameter
(:data:`GRIDS`) is clustered; each candidate is scored by :func:`label_free_score`, the
silhouette of the clustered points in the reduced space times the share of points
clustered (a method that declares most images noise scores low), -1 below
:data:`MIN_CLUSTERS` clusters, and the best candidate is kept; a method with an
inspection budget (``hdbscan-budget``) keeps instead the candidate with the most clusters
among those the engineer can inspect within the budget (:func:`choose`). A method with
``select="stability"`` (``hdbscan-stable``) keeps the candidate whose clusters come back
best when 80% of the images are reclustered (:func:`stability`). Nothing reads the
planted labels. Everything is deterministic: the same input gives the same clusters.

**Several layers at once** (``Method.combine``): ``ensemble`` clusters the consensus of
every eligible layer's best candidate (:func:`coassociation`, HDBSCAN on 1 − A), and
``concat`` clusters the last :data:`CONCAT_LAYERS` eligible layers' reduced features side
by side (:func:`concat_blocks`). Both report as their ``layer`` (the one ``assign``
measures distances at) the eligible layer whose own best candidate agrees most with
the combined clusters (:func:`most_agreeing`).

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.3, (30, 8)) + 5 * np.eye(8)[i] for i in range(3)])
    >>> res = cluster_features({"fc": X}, METHODS["hdbscan"], seed=0)
    >>> res.layer, res.k, np.bincount(res.labels).tolist()
    ('fc', 3, [0, 30, 30, 30])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hudd_core.cluster.labels import NOISE, inspect_share, layer_rows, relabel

FEATURES = ("raw", "unit", "act", "rxa", "model")
# What each kind of features is computed from: the heatmaps, the activations
# (``T/Activations``), both (their product) or the feature extractor's output.
SOURCES = {"raw": "heatmaps", "unit": "heatmaps", "act": "activations", "rxa": "both",
           "model": "model"}  # fmt: skip
FEATURE_LAYER = "feature-model"  # the one "layer" of --feature-model features
GRAM_PCA_MAX = 4000  # up to this many rows PCA runs on the N × N Gram matrix
INSPECT_BUDGET = 0.15  # hdbscan-budget: the share of the error images an engineer inspects
MIN_CLUSTERS = 3  # a candidate with fewer clusters scores -1 (a split in two explains little)
REDUCTIONS = ("none", "pca", "umap")
UMAP_PCA = 50  # UMAP runs on this many principal components (denoised, and fast)
UMAP_NEIGHBORS = 15
CLUSTERERS = ("ward", "hdbscan", "dbscan")
SELECTS = ("score", "stability")  # how a candidate is chosen: see :func:`choose`
COMBINES = ("none", "ensemble", "concat")  # one layer at a time, or several at once
STABILITY_ROUNDS = 5  # reclusterings of subsamples per candidate (:func:`stability`)
STABILITY_FRAC = 0.8  # the share of the images each subsample keeps
CONSENSUS_MAX = 10_000  # ensemble: above this many error images the N × N matrix is refused
CONCAT_LAYERS = 3  # concat: the last this many eligible layers


@dataclass(frozen=True)
class Method:
    """One composition: features × reduction × clusterer (and the reduced dimension)."""

    name: str
    features: str
    reduction: str
    clusterer: str
    dims: int = 10
    doc: str = ""
    layers: str = "spatial"  # which layers compete: "spatial" (:func:`eligible`) or "all"
    budget: float | None = None  # inspection budget: see :func:`choose`
    select: str = "score"  # one of SELECTS: see :func:`choose`
    combine: str = "none"  # one of COMBINES: see :func:`combined`

    def params(self) -> dict:
        return {"features": self.features, "reduction": self.reduction,
                "clusterer": self.clusterer, "dims": self.dims, "layers": self.layers,
                "budget": self.budget, "select": self.select,
                "combine": self.combine}  # fmt: skip


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ward-pca", "unit", "pca", "ward", doc="unit heatmaps, PCA, Ward, silhouette k"),
        Method("hdbscan", "unit", "pca", "hdbscan", doc="unit heatmaps, PCA, HDBSCAN"),
        Method("hdbscan-raw", "raw", "pca", "hdbscan", doc="raw heatmaps, PCA, HDBSCAN"),
        Method("dbscan", "unit", "pca", "dbscan", doc="unit heatmaps, PCA, DBSCAN (knee eps)"),
        Method("hdbscan-20", "unit", "pca", "hdbscan", 20, doc="as hdbscan, PCA to 20"),
        Method("umap-hdbscan", "unit", "umap", "hdbscan", 5, doc="unit heatmaps, UMAP 5, HDBSCAN"),
        Method("umap-dbscan", "unit", "umap", "dbscan", 5, doc="unit heatmaps, UMAP 5, DBSCAN"),
        Method("act-hdbscan", "act", "pca", "hdbscan", doc="unit activations, PCA, HDBSCAN"),
        Method(
            "rxa-hdbscan", "rxa", "pca", "hdbscan", doc="unit relevance × activation, PCA, HDBSCAN"
        ),
        Method("model-hdbscan", "model", "pca", "hdbscan", doc="feature extractor, PCA, HDBSCAN"),
        Method("model-dbscan", "model", "pca", "dbscan", doc="feature extractor, PCA, DBSCAN"),
        Method(
            "hdbscan-budget",
            "unit",
            "pca",
            "hdbscan",
            doc="as hdbscan, the most clusters whose inspection fits 15% of the errors",
            budget=INSPECT_BUDGET,
        ),
        Method(
            "hdbscan-all",
            "unit",
            "pca",
            "hdbscan",
            doc="as hdbscan, dense layers too",
            layers="all",
        ),
        Method(
            "hdbscan-stable",
            "unit",
            "pca",
            "hdbscan",
            doc="as hdbscan, the candidate most stable over 80% subsamples",
            select="stability",
        ),
        Method(
            "ensemble",
            "unit",
            "pca",
            "hdbscan",
            doc="HDBSCAN on the co-association of every layer's best hdbscan clusters",
            combine="ensemble",
        ),
        Method(
            "concat",
            "unit",
            "pca",
            "hdbscan",
            doc="HDBSCAN on the last 3 layers' PCA 10 side by side (each of unit variance)",
            combine="concat",
        ),
    )
}
# Chosen on the development cases of benchmarks/cases.toml only (docs/clustering.md
# "Quality"): within the 15% inspection budget it came within 1 cause of the label
# oracle of its own search space; plain hdbscan covers more but exceeds the budget.
RECOMMENDED = "hdbscan-budget"
METHOD_NAMES = ("hudd", "recommended", *METHODS)

# The hyper-parameter each clusterer's candidates scan: HDBSCAN's min_cluster_size and
# DBSCAN's min_samples as shares of the error images (at least 3), Ward's k range.
GRIDS: dict[str, tuple[float, ...]] = {
    "hdbscan": (0.02, 0.03, 0.05, 0.08, 0.12),
    "dbscan": (0.02, 0.03, 0.05, 0.08),
    "ward": (0.0,),
}


def resolve(name: str) -> Method | None:
    """The :class:`Method` of a ``--method`` name; None for ``hudd`` (the faithful rule)."""
    if name not in METHOD_NAMES:
        raise ValueError(f"--method: {name!r} is not one of {', '.join(METHOD_NAMES)}")
    if name == "hudd":
        return None
    return METHODS[RECOMMENDED if name == "recommended" else name]


# --- the pieces ------------------------------------------------------------------------


def needs(method_name: str) -> str:
    """What a ``--method`` clusters: ``"heatmaps"``, ``"activations"``, ``"both"`` or
    ``"model"`` (:data:`SOURCES`; ``hudd``: the heatmaps).

    Example:
        >>> needs("hudd"), needs("rxa-hdbscan")
        ('heatmaps', 'both')
    """
    method = resolve(method_name)
    return "heatmaps" if method is None else SOURCES[method.features]


def features(X, kind: str) -> np.ndarray:
    """Rows of ``X`` as float64 (``raw``, and a feature extractor's ``model`` features,
    whose magnitudes are the features) or each divided by its Euclidean norm (``unit``,
    ``act``, ``rxa``: the pattern over the layer's neurons; an all-zero row stays zero)."""
    if kind not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {kind!r}")
    F = np.asarray(X, dtype=np.float64)
    if not np.isfinite(F).all():
        row = int(np.flatnonzero(~np.isfinite(F).all(axis=1))[0])
        raise ValueError(f"row {row} contains NaN or inf")
    if kind in ("unit", "act", "rxa"):
        norm = np.linalg.norm(F, axis=1, keepdims=True)
        F = F / np.where(norm > 0, norm, 1.0)
    return F


def reduce(F: np.ndarray, kind: str, dims: int, seed: int) -> np.ndarray:
    """``F`` itself (``none``), its first ``dims`` principal components (``pca``,
    capped by the number of rows and columns; the signs fixed by scikit-learn, so the
    result is deterministic), or a ``dims``-dimensional UMAP of its first
    :data:`UMAP_PCA` components (``umap``, :func:`umap_embedding`)."""
    if kind not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {kind!r}")
    if kind == "none":
        return F
    if kind == "umap":
        return umap_embedding(reduce(F, "pca", UMAP_PCA, seed), dims, seed)
    d = max(1, min(dims, F.shape[0] - 1, F.shape[1]))
    if F.shape[0] > GRAM_PCA_MAX:
        from sklearn.decomposition import PCA

        Z = PCA(n_components=d, svd_solver="randomized", random_state=seed).fit_transform(F)
    else:  # N << D: the eigenvectors of the N × N Gram matrix of the centred rows
        C = F - F.mean(axis=0)
        w, V = np.linalg.eigh(C @ C.T)
        top = np.argsort(-w, kind="stable")[:d]
        Z = V[:, top] * np.sqrt(np.maximum(w[top], 0.0))
    # one sign per component: its largest score positive (so the result is unique)
    flip = np.sign(Z[np.argmax(np.abs(Z), axis=0), np.arange(Z.shape[1])])
    return Z * np.where(flip == 0, 1.0, flip)


def umap_embedding(Z: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """UMAP of ``Z`` to ``dims`` dimensions (umap-learn; :data:`UMAP_NEIGHBORS`
    neighbours, ``min_dist`` 0 as for clustering; ``random_state`` fixed, which makes it
    deterministic and single-threaded). Fewer than ``dims`` + 2 rows: ``Z`` itself."""
    try:
        import umap
    except ImportError as exc:  # an optional dependency (pip install hudd_core[umap])
        raise ValueError("the umap-* methods need umap-learn: pip install umap-learn") from exc
    n = Z.shape[0]
    if n < dims + 2:
        return Z
    reducer = umap.UMAP(n_components=dims, n_neighbors=min(UMAP_NEIGHBORS, n - 1),
                        min_dist=0.0, random_state=seed, n_jobs=1,
                        init="spectral" if n > dims + 10
                        else "random")  # fmt: skip
    return np.asarray(reducer.fit_transform(Z), dtype=np.float64)


def grid_size(share: float, n: int) -> int:
    """The size a grid ``share`` of ``n`` points stands for (at least 3; the report
    shows it too)."""
    return max(3, round(share * n))


def cluster_hdbscan(Z: np.ndarray, share: float, metric: str = "euclidean") -> np.ndarray:
    """HDBSCAN with ``min_cluster_size`` = ``share`` of the points (≥ 3) and
    ``min_samples`` 3 (scikit-learn; deterministic); ``metric="precomputed"``: ``Z`` is
    an N × N distance matrix."""
    from sklearn.cluster import HDBSCAN

    m = grid_size(share, Z.shape[0])
    if Z.shape[0] < 2 * m:  # too few points for two clusters: one
        return np.ones(Z.shape[0], dtype=np.int64)
    hdb = HDBSCAN(min_cluster_size=m, min_samples=3, metric=metric, copy=True)
    return relabel(hdb.fit_predict(Z))


def knee_eps(Z: np.ndarray, min_samples: int) -> float:
    """SAFE's DBSCAN radius: the knee of the sorted distances of every point to its
    ``min_samples``-th nearest neighbour, as Kneedle finds it on a convex increasing
    curve (both axes scaled to [0, 1]: the point farthest below the chord)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(min_samples, Z.shape[0] - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
    curve = np.sort(dist[:, k])
    span = curve[-1] - curve[0]
    if len(curve) < 3 or span <= 1e-12 * max(1.0, abs(curve[-1])):
        return max(float(curve[-1]), 1e-12)
    x = np.linspace(0.0, 1.0, len(curve))
    knee = int(np.argmax(x - (curve - curve[0]) / span))
    return max(float(curve[knee]), 1e-12)


def cluster_dbscan(Z: np.ndarray, share: float) -> np.ndarray:
    """DBSCAN with ``min_samples`` = ``share`` of the points (≥ 3) and eps from
    :func:`knee_eps`."""
    from sklearn.cluster import DBSCAN

    m = grid_size(share, Z.shape[0])
    if Z.shape[0] <= m:
        return np.ones(Z.shape[0], dtype=np.int64)
    return relabel(DBSCAN(eps=knee_eps(Z, m), min_samples=m).fit_predict(Z))


def cluster_ward(Z: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Ward on ``Z`` (the published two-level distances), k of the highest silhouette
    (every point clustered; the WICD knee lands past the elbow, see
    :func:`hudd_core.cluster.ward.cluster_layer`)."""
    # imported here, not at the top: the CLI reads METHOD_NAMES without loading scipy/numba
    from hudd_core.cluster.ward import cluster_layer

    del share  # Ward's k comes from the silhouette curve, not from a grid
    res = cluster_layer(Z.astype(np.float32), selection="silhouette", device="cpu", seed=seed)
    return relabel(res.labels)


def run_clusterer(
    Z: np.ndarray, clusterer: str, share: float, seed: int, metric: str = "euclidean"
) -> np.ndarray:
    """Labels (1..k, :data:`NOISE` = 0) of ``Z`` by ``clusterer`` at ``share``
    (``metric="precomputed"``, ``Z`` a distance matrix: HDBSCAN only)."""
    if clusterer == "hdbscan":
        return cluster_hdbscan(Z, share, metric)
    if metric != "euclidean":
        raise ValueError(f"clusterer {clusterer!r} takes no {metric} distances (hdbscan does)")
    if clusterer == "dbscan":
        return cluster_dbscan(Z, share)
    if clusterer == "ward":
        return cluster_ward(Z, share, seed)
    raise ValueError(f"clusterer must be one of {CLUSTERERS}, got {clusterer!r}")


def rows_of(Z: np.ndarray, idx: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """The points ``idx`` of ``Z``: its rows, or of a precomputed distance matrix the
    rows and columns."""
    return Z[np.ix_(idx, idx)] if metric == "precomputed" else Z[idx]


def label_free_score(
    Z: np.ndarray, labels: np.ndarray, min_clusters: int = 2, metric: str = "euclidean"
) -> float:
    """Silhouette of the clustered points of ``Z`` (noise left out; ``metric=
    "precomputed"``: ``Z`` is their distance matrix) times the share of points
    clustered; -1 with fewer than ``min_clusters`` clusters. Reads no label but the
    clusters'.

    Example:
        >>> Z = np.array([[0.0], [0.1], [5.0], [5.1], [20.0]])
        >>> round(label_free_score(Z, np.array([1, 1, 2, 2, 0])), 3)
        0.784
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    kept = labels != NOISE
    k = len(np.unique(labels[kept]))
    if k < max(2, min_clusters) or k >= kept.sum():
        return -1.0
    sil = silhouette_score(rows_of(Z, np.flatnonzero(kept), metric), labels[kept], metric=metric)
    return float(sil * kept.mean())


def stability(
    Z: np.ndarray,
    labels: np.ndarray,
    clusterer: str,
    share: float,
    seed: int,
    rounds: int = STABILITY_ROUNDS,
    frac: float = STABILITY_FRAC,
    metric: str = "euclidean",
    min_clusters: int = MIN_CLUSTERS,
) -> float:
    """How well a candidate's ``labels`` come back: ``rounds`` seeded subsamples of
    ``frac`` of the points of ``Z`` are reclustered (same ``clusterer`` and ``share``),
    and the mean adjusted Rand index between each subsample's labels and ``labels``
    restricted to it (noise counted as one more label in both) is multiplied by the
    share of points clustered; -1 with fewer than ``min_clusters`` clusters. The
    subsamples depend on ``seed`` only, so every candidate is tested on the same ones.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> Z = np.concatenate([rng.normal(0, 0.3, (30, 2)) + 9 * i for i in range(3)])
        >>> stability(Z, np.repeat([1, 2, 3], 30), "hdbscan", 0.1, seed=0)
        1.0
        >>> stability(Z, rng.integers(1, 4, 90), "hdbscan", 0.1, seed=0) < 0.1
        True
    """
    from sklearn.metrics import adjusted_rand_score

    labels = np.asarray(labels)
    if len(set(labels.tolist()) - {NOISE}) < min_clusters:
        return -1.0
    rng = np.random.default_rng(seed)
    n = len(labels)
    m = min(n, max(4, round(frac * n)))
    aris = []
    for _ in range(rounds):
        idx = np.sort(rng.choice(n, size=m, replace=False))
        sub = run_clusterer(rows_of(Z, idx, metric), clusterer, share, seed, metric)
        aris.append(adjusted_rand_score(labels[idx], sub))
    return float(np.mean(aris) * np.mean(labels != NOISE))


# --- the method over the layers ----------------------------------------------------------


@dataclass
class MethodResult:
    """The chosen candidate: its layer, hyper-parameter, labels and score (and
    :func:`stability` when the method selects by it), the reduced features (for the 2-D
    embedding) and every candidate's score."""

    method: Method
    layer: str
    share: float
    labels: np.ndarray
    score: float
    reduced: np.ndarray
    candidates: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stability: float | None = None

    @property
    def k(self) -> int:
        return len(set(self.labels.tolist()) - {NOISE})

    @property
    def noise(self) -> int:
        return int(np.sum(self.labels == NOISE))


def eligible(names: list[str], shapes: dict[str, list[int]] | None, which: str) -> list[str]:
    """The layers that compete: never ``input`` (as in the published rule) unless it is
    the only one; with ``which="spatial"`` and the layers' shapes known, only those with
    a spatial map (``C × H × W``, H × W > 1) when there are any, as a dense layer's
    relevance mostly follows the predicted class (the clusters then group the
    (true → predicted) pairs, measured in README "Clustering methods").

    Example:
        >>> eligible(["input", "conv", "pool", "fc"], {"input": [1, 8, 8], "conv": [4, 4, 4],
        ...          "pool": [4, 1, 1], "fc": [6]}, "spatial")
        ['conv']
    """
    names = [n for n in names if n != "input"] or list(names)
    if which == "spatial" and shapes:
        spatial = [n for n in names if int(np.prod(shapes.get(n, [1])[1:])) > 1]
        names = spatial or names
    return names


def cluster_features(
    layers: dict[str, np.ndarray],
    method: Method,
    *,
    seed: int = 0,
    shapes: dict[str, list[int]] | None = None,
) -> MethodResult:
    """Clusters every eligible layer's rows (``{layer: N × D}``, same images in the same
    order; :func:`eligible` with the layers' ``shapes``) at every value of the
    clusterer's grid; returns the one :func:`choose` keeps (the best by
    :func:`label_free_score` with at least :data:`MIN_CLUSTERS` clusters, ties: the
    earlier layer, then the smaller share; or by :func:`stability`, or within the
    method's inspection budget), or with ``method.combine`` the :func:`combined`
    clusters of the layers."""
    return search(layers, method, seed=seed, shapes=shapes)[0]


def search(
    layers: dict[str, np.ndarray],
    method: Method,
    *,
    seed: int = 0,
    shapes: dict[str, list[int]] | None = None,
) -> tuple[MethodResult, list[MethodResult]]:
    """``(the candidate kept, every candidate it was chosen among)``: the method's own
    search space, each candidate with its labels and label-free score (each eligible
    layer × the grid; with ``method.combine`` the combined clusters' grid), e.g. for a
    label oracle over it (``benchmarks/bench_quality.py``). The kept candidate has the
    labels of one of them (:func:`cluster_features`)."""
    t = time.perf_counter()
    reduced, tried = layer_candidates(layers, method, seed, shapes)
    if method.combine == "none":
        best, among = choose(tried, method.budget, method.select), tried
    else:
        best, among = combined(reduced, tried, method, seed)
        tried = tried + among
    best.candidates = [candidate_row(r) for r in tried]
    best.seconds = time.perf_counter() - t
    return best, among


def layer_candidates(
    layers: dict[str, np.ndarray],
    method: Method,
    seed: int,
    shapes: dict[str, list[int]] | None,
) -> tuple[dict[str, np.ndarray], list[MethodResult]]:
    """Every eligible layer's reduced features and its :func:`candidates`, in the order of
    the layers (the method's options and the layers checked first)."""
    if not layers:
        raise ValueError("no layer to cluster")
    if method.select not in SELECTS:
        raise ValueError(f"select must be one of {SELECTS}, got {method.select!r}")
    if method.combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {method.combine!r}")
    names = eligible(list(layers), shapes, method.layers)
    n = next(iter(layers.values())).shape[0]
    if method.combine == "ensemble" and n > CONSENSUS_MAX:
        raise ValueError(
            f"method {method.name}: {n} error images are more than {CONSENSUS_MAX:,}, the "
            "limit of its N × N co-association matrix; use --method hdbscan or concat"
        )
    reduced: dict[str, np.ndarray] = {}
    tried: list[MethodResult] = []
    for name in names:
        try:
            F = features(layers[name], method.features)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
        if F.shape[0] < 4:
            raise ValueError(f"{name}: {F.shape[0]} error images are too few to cluster")
        reduced[name] = reduce(F, method.reduction, method.dims, seed)
        tried += candidates(reduced[name], name, method, seed)
    return reduced, tried


def candidates(
    Z: np.ndarray,
    name: str,
    method: Method,
    seed: int,
    clusterer: str | None = None,
    metric: str = "euclidean",
) -> list[MethodResult]:
    """``Z`` clustered at every value of the grid of ``clusterer`` (the method's by
    default), each scored (and, selecting by it, its :func:`stability`)."""
    clusterer = clusterer or method.clusterer
    out = []
    for share in GRIDS[clusterer]:
        labels = run_clusterer(Z, clusterer, share, seed, metric)
        score = label_free_score(Z, labels, MIN_CLUSTERS, metric)
        res = MethodResult(method, name, share, labels, score, Z)
        if method.select == "stability":
            res.stability = stability(Z, labels, clusterer, share, seed, metric=metric)
        out.append(res)
    return out


def candidate_row(r: MethodResult) -> dict:
    """A candidate as ``summary.json`` lists it."""
    row = {"layer": r.layer, "share": r.share, "k": r.k, "score": r.score, "noise": r.noise,
           "inspect": inspect_share(r.labels)}  # fmt: skip
    if r.stability is not None:
        row["stability"] = r.stability
    return row


def choose(
    tried: list[MethodResult], budget: float | None = None, select: str = "score"
) -> MethodResult:
    """The candidate kept: the highest :func:`label_free_score` (ties: the first tried),
    or with ``select="stability"`` the highest :func:`stability` (ties: the higher
    score); with an inspection ``budget`` (a share of the error images, 5 per cluster
    and the noise as one group, :func:`inspect_share`), the one with the most clusters
    among those within it and of positive score (ties: as without a budget), as the
    finest partition the engineer can afford to inspect; when none fits, the one of
    positive score cheapest to inspect (none: as without a budget).

    Example:
        >>> Z = np.zeros((40, 1))
        >>> a = MethodResult(None, "l", 0.1, np.repeat([1, 2, 3], [20, 10, 10]), 0.6, Z)
        >>> b = MethodResult(None, "l", 0.05, np.repeat([1, 2, 3, 4, 5], 8), 0.4, Z)
        >>> choose([a, b]).share, choose([a, b], budget=0.7).share, choose([a, b], 0.1).share
        (0.1, 0.05, 0.1)
        >>> a.stability, b.stability = 0.7, 0.9
        >>> choose([a, b], select="stability").share
        0.05
    """
    if not tried:
        raise ValueError("no layer to cluster")

    def key(r: MethodResult) -> tuple:
        return (r.stability, r.score) if select == "stability" else (r.score,)

    pick = max(tried, key=key)  # max() keeps the first of equal keys
    if budget is not None:
        scored = [r for r in tried if r.score > 0]
        fits = [r for r in scored if inspect_share(r.labels) <= budget]
        if fits:
            pick = max(fits, key=lambda r: (r.k, *key(r)))
        elif scored:  # nothing fits: the cheapest to inspect
            pick = max(scored, key=lambda r: (-inspect_share(r.labels), *key(r)))
    return pick


# --- several layers at once --------------------------------------------------------------


def coassociation(labelings: list[np.ndarray]) -> np.ndarray:
    """``A[i, j]``: the share of ``labelings`` in which points i and j are in the same
    cluster (noise is in none; the diagonal is 1, as a point is always with itself).

    Example:
        >>> coassociation([np.array([1, 1, 2, 0]), np.array([1, 2, 2, 0])])[0].tolist()
        [1.0, 0.5, 0.0, 0.0]
    """
    n = len(labelings[0])
    A = np.zeros((n, n))
    for labels in labelings:
        labels = np.asarray(labels)
        A += (labels[:, None] == labels[None, :]) & (labels != NOISE)[:, None]
    A /= len(labelings)
    np.fill_diagonal(A, 1.0)
    return A


def concat_blocks(blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks side by side, each centred and scaled to a total variance of 1 (so no
    layer outweighs the others; an all-constant block stays zero).

    Example:
        >>> Z = concat_blocks([np.array([[0.0], [2.0]]), np.array([[0.0, 0.0], [30.0, 40.0]])])
        >>> round(float(Z.var(axis=0).sum()), 6), Z.shape
        (2.0, (2, 3))
    """
    out = []
    for B in blocks:
        C = np.asarray(B, dtype=np.float64) - np.mean(B, axis=0)
        total = float(C.var(axis=0).sum())
        out.append(C / np.sqrt(total) if total > 0 else C)
    return np.hstack(out)


def most_agreeing(labels: np.ndarray, per_layer: dict[str, MethodResult]) -> str:
    """The layer whose labels agree most with ``labels`` (the adjusted Rand index, noise
    one more label; ties: the earlier layer)."""
    from sklearn.metrics import adjusted_rand_score

    return max(per_layer, key=lambda n: adjusted_rand_score(per_layer[n].labels, labels))


def combined(
    reduced: dict[str, np.ndarray], tried: list[MethodResult], method: Method, seed: int
) -> tuple[MethodResult, list[MethodResult]]:
    """The clusters of several layers at once, and their candidates.

    ``ensemble``: each eligible layer's best candidate (by :func:`label_free_score`;
    those with at least :data:`MIN_CLUSTERS` clusters, all when none has) votes in the
    co-association matrix A (:func:`coassociation`), and HDBSCAN clusters the distances
    1 − A over its grid, scored by the silhouette of those distances; the embedding is
    the chosen layer's reduced features (N × N memory: :func:`cluster_features` refuses
    more than :data:`CONSENSUS_MAX` images). ``concat``: the last :data:`CONCAT_LAYERS`
    eligible layers' reduced features side by side (:func:`concat_blocks`), clustered
    by the method's clusterer over its grid; the embedding is that concatenation.
    Either way the candidate is chosen as by :func:`choose`, and its ``layer`` is the
    eligible layer whose own best candidate agrees most with it (:func:`most_agreeing`),
    as ``assign`` needs one layer's heatmaps."""
    per_layer = {n: choose([r for r in tried if r.layer == n]) for n in reduced}
    if method.combine == "ensemble":
        votes = [r.labels for r in per_layer.values() if r.score > -1]
        D = 1.0 - coassociation(votes or [r.labels for r in per_layer.values()])
        joint = candidates(D, "ensemble", method, seed, "hdbscan", "precomputed")
    else:
        Z = concat_blocks([reduced[n] for n in list(reduced)[-CONCAT_LAYERS:]])
        joint = candidates(Z, "concat", method, seed)
    best = choose(joint, method.budget, method.select)
    layer = most_agreeing(best.labels, per_layer)
    reduced_out = reduced[layer] if method.combine == "ensemble" else best.reduced
    kept = MethodResult(method, layer, best.share, best.labels, best.score, reduced_out,
                        stability=best.stability)  # fmt: skip
    return kept, joint


def selection_text(method: Method) -> str:
    """How the method chose its clusters, for ``summary.json`` and the report."""
    text = {
        "score": "label-free score (silhouette x share clustered)",
        "stability": f"stability (ARI over {STABILITY_ROUNDS} subsamples of "
        f"{STABILITY_FRAC:.0%}) x share clustered, ties by label-free score",
    }[method.select]
    if method.combine == "ensemble":
        text = f"HDBSCAN on 1 - co-association of the layers' best clusters, by {text}"
    elif method.combine == "concat":
        text = f"the last {CONCAT_LAYERS} layers concatenated, by {text}"
    if method.combine != "none":
        text += "; layer: the one agreeing most (ARI)"
    return text + (f", most clusters within {method.budget:.0%} inspected" if method.budget else "")


def method_inputs(
    method: Method,
    files: dict[str, Path],
    n: int,
    activations: dict[str, Path] | None = None,
    extracted: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``{layer: N × D}`` that ``method`` clusters: the heatmaps (``files``), the
    activations, their product (:data:`SOURCES`) or ``{FEATURE_LAYER: extracted}``."""
    source = SOURCES[method.features]
    if source == "model":
        if extracted is None:
            raise ValueError(f"{method.name} clusters --feature-model's features: give one")
        if len(extracted) != n:
            raise ValueError(f"--feature-model gave {len(extracted)} rows for {n} images")
        return {FEATURE_LAYER: np.asarray(extracted)}
    if source != "heatmaps" and activations is None:
        raise ValueError(f"{method.name} needs T/Activations: run `hudd heatmaps --activations`")
    out = {}
    for name, path in files.items():
        if source == "heatmaps":
            out[name] = layer_rows(path, n)
        elif source == "activations":
            out[name] = layer_rows(activations[name], n)
        else:  # relevance × activation, as float32 (the heatmaps' width)
            out[name] = np.multiply(layer_rows(path, n), layer_rows(activations[name], n),
                                    dtype=np.float32)  # fmt: skip
    return out


def assign_layer(
    files: dict[str, Path],
    labels: np.ndarray,
    shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
) -> str:
    """The heatmap layer the AssignModule measures clusters found on other features at:
    the eligible layer (:func:`eligible`) where they are best separated, by
    :func:`label_free_score` of the labels in its unit-PCA space (ties: the earlier)."""
    best, top = "", -np.inf
    for name in eligible(list(files), shapes, "spatial"):
        Z = reduce(features(np.load(files[name], mmap_mode="r"), "unit"), "pca", 10, seed)
        score = label_free_score(Z, labels)
        if score > top:
            best, top = name, score
    return best


def run_method(
    files: dict[str, Path],
    images: list[str],
    method: Method,
    seed: int = 0,
    shapes: dict[str, list[int]] | None = None,
    *,
    activations: dict[str, Path] | None = None,
    extracted: np.ndarray | None = None,
    attach: tuple[str, float] = ("none", 0.0),
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """``method`` over the layers' heatmap files (``{layer: .npy}``, rows = ``images``;
    ``shapes``: each layer's recorded shape, for :func:`eligible`; ``activations``: the
    layers' ``T/Activations`` files; ``extracted``: ``--feature-model``'s N × D
    features), its noise then attached by ``attach`` = ``(mode, max_unclustered)`` in the
    reduced space it clustered (:func:`hudd_core.cluster.attach.attach_noise`):
    ``(summary, labels, 2-D embedding, per image its attachment mark)``; the summary has
    the keys of the published rule's (``best_layer``, ``n_clusters``, ``inspect_share``,
    ``layers``, ...) and the method's own (``method``, ``method_params``,
    ``n_unclustered``, ``candidates``, ``features_layer``; ``attach`` unless its mode is
    ``none``). ``n_clusters`` counts the root-cause clusters (not the miscellaneous
    group)."""
    from hudd_core.cluster.attach import attach_noise

    try:
        layers = method_inputs(method, files, len(images), activations, extracted)
        res = cluster_features(layers, method, seed=seed, shapes=shapes)
        att = attach_noise(res.reduced, res.labels, *attach)
    except ValueError as exc:
        raise ValueError(f"cluster --method {method.name}: {exc}") from exc
    best, per_layer = _layers_of(res, files, shapes, seed)
    summary = {
        "method": method.name,
        "method_params": {**method.params(), "share": res.share, "seed": seed},
        "best_layer": best,
        "features_layer": res.layer,
        "selection": selection_text(method),
        "n_images": len(images),
        "n_clusters": res.k,
        "n_unclustered": int(np.sum(att.labels == NOISE)),
        "inspect_share": inspect_share(att.labels),
        "layers": per_layer,
        "candidates": res.candidates,
        "clustering": {"path": "exact", "reason": "", "seconds": res.seconds},
    }
    if att.mode != "none":
        summary["attach"] = att.record()
    finer = finer_candidate(res)
    if finer is not None:
        summary["finer"] = finer
    return summary, att.labels, embedding_2d(res.reduced, seed), att.marks


def finer_candidate(res: MethodResult) -> dict | None:
    """The second granularity a budgeted method offers: the candidate its score alone
    prefers (:func:`candidate_row`, the same method without the budget), when that one
    has more clusters than the pick; None otherwise or without a budget.

    Example:
        >>> m = METHODS["hdbscan-budget"]
        >>> pick = MethodResult(m, "conv", 0.1, np.repeat([1, 2, 3], 10), 0.5, np.zeros((30, 1)))
        >>> pick.candidates = [{"layer": "conv", "share": 0.1, "k": 3, "score": 0.5},
        ...                    {"layer": "conv", "share": 0.02, "k": 9, "score": 0.7}]
        >>> finer_candidate(pick)["k"]
        9
    """
    if res.method is None or res.method.budget is None or not res.candidates:
        return None
    best = max(res.candidates, key=lambda c: c["score"])  # max() keeps the first of ties
    return dict(best) if best["k"] > res.k else None


def _layers_of(
    res: MethodResult, files: dict[str, Path], shapes: dict[str, list[int]] | None, seed: int
) -> tuple[str, dict]:
    """``(best layer, per layer its best candidate)`` as ``summary.json`` lists them: the
    chosen layer, or for features of no heatmap layer the one ``assign`` measures at."""
    per_layer = {}
    for c in res.candidates:  # each layer's best candidate (not the combined ones)
        if c["layer"] in files and (
            c["layer"] not in per_layer or c["score"] > per_layer[c["layer"]]["silhouette"]
        ):
            per_layer[c["layer"]] = {"k": c["k"], "wicd": None, "silhouette": c["score"],
                                     "method": res.method.name,
                                     "approximate": False}  # fmt: skip
    best = res.layer
    if best in files:
        per_layer[best].update(k=res.k, silhouette=res.score)  # the chosen candidate's
    else:  # features of no heatmap layer: the clusters as assign sees them
        best = assign_layer(files, res.labels, shapes, seed)
        per_layer[best] = {"k": res.k, "wicd": None, "silhouette": res.score,
                           "method": res.method.name, "approximate": False,
                           "features": res.layer}  # fmt: skip
    return best, per_layer


def embedding_2d(Z: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first two principal components of ``Z`` (N × 2; zeros beyond its rank)."""
    out = np.zeros((Z.shape[0], 2))
    if Z.shape[0] >= 2:
        P = reduce(np.asarray(Z, np.float64), "pca", 2, seed)
        out[:, : P.shape[1]] = P
    return out
