"""ClusterModule (HUDD step 3): per-layer Ward clustering of the error-inducing images'
heatmaps, the number of clusters from the WICD knee, the best layer, and the root-cause
clusters (RCCs) as folders, GIFs and tables.

Per layer, the reference (docs/design.md#ward-linkage): D = Euclidean distances of the heatmaps
(GEMM, :mod:`hudd_core.distance`, on the GPU when usable); each row of D divided by its
maximum; Ward linkage (fastcluster) on the Euclidean distances between those rows. Then
WICD (on the raw distances D) and the silhouette (on the second-level distances Ward ran
on) for every k in the range come from one walk up the tree (:mod:`hudd_core.cluster.wicd`), and
k is the knee of the gradient of the WICD measured on the row-normalised matrix S (each
row of D divided by its maximum, S[i][j] for j > i, as the published toolset's
clusterModule.HACluster) (:mod:`hudd_core.cluster.knee`). The best layer has the lowest WICD on
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

import warnings
from dataclasses import dataclass, field

import fastcluster
import numpy as np

from hudd_core.cluster import wicd as _wicd
from hudd_core.cluster.knee import best_layer, choose_k
from hudd_core.cluster.labels import inspect_share
from hudd_core.config import DEFAULTS, parse_k_range
from hudd_core.distance import second_level_pdist

DEFAULT_K_RANGE = parse_k_range(DEFAULTS["k_range"])
BYTES_PER_PAIR = 32  # peak working memory of the exact path, per pair of error images
MEMORY_HEADROOM = 0.8  # share of the available memory the exact path may plan to use


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
    ``clamp(n // 2, 2, ...)`` (docs/design.md#k-range: k = 2 .. clamp(N/2, 2, 500)) and by ``n``.

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
    bounds = k_bounds(n, k_range)  # a bad range fails before the tree is built
    points = None
    reason = approximate_reason(n, approx_threshold) if approximate is None else approximate
    if reason:
        Z, first, sil_d, points = _linkage_approximate(
            X, approx_dims, approx_sample, seed, device, name, reason
        )
    else:
        Z, first, sil_d = _linkage_exact(X, device, progress)
    return _choose(name, Z, first, sil_d, points, bounds, selection, reason)


def _choose(
    name: str,
    Z: np.ndarray,
    first: np.ndarray,
    sil_d: np.ndarray,
    points: np.ndarray | None,
    bounds: tuple[int, int],
    selection: str,
    reason: str,
) -> LayerClustering:
    """The curves over the k range of the tree ``Z`` (WICD on the distances ``first``,
    silhouette on ``sil_d``, among ``points`` when sampled), the chosen k and labels."""
    lo, hi = bounds
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


def faithful_summary(
    results: dict[str, LayerClustering], n_images: int, selection: str
) -> tuple[dict, np.ndarray]:
    """The published rule over the clustered layers: the best layer (lowest WICD at its
    k, :func:`~hudd_core.cluster.knee.best_layer`) and ``(summary, its labels)``."""
    best = best_layer({n: r.at_k() for n, r in results.items()}, selection)
    summary = {
        "method": "hudd",
        "best_layer": best,
        "selection": selection,
        "n_images": n_images,
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


def _path_summary(results: dict[str, LayerClustering]) -> dict:
    """``{"path": "exact" | "approximate", "reason", "bytes_per_pair"}`` over the layers."""
    reasons = {r.extra.get("approximate_reason", "") for r in results.values()} - {""}
    path = "approximate" if reasons else "exact"
    return {"path": path, "reason": "; ".join(sorted(reasons)), "bytes_per_pair": BYTES_PER_PAIR}
