"""Figures of the ClusterModule, RQ1 and the report (matplotlib, Agg canvas, no pyplot state).

Every function draws on its own :class:`matplotlib.figure.Figure` and writes a PNG (to a
path, atomically, or returns its bytes), so it is safe in headless runs and threads. It
sits below the steps (the ClusterModule, RQ1 and the report all draw with it), so that no
step imports a later one.

Example:
    >>> import numpy as np, fastcluster
    >>> Z = fastcluster.linkage(np.array([1.0, 4.0, 4.0]), method="ward")
    >>> dendrogram_png(Z, 2)[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hudd_core.fileio import atomic_write_bytes


def _png(fig: Figure, path: Path | None = None, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def knee_plot(res, path: Path | None = None) -> bytes:
    """WICD and silhouette over k (chosen k marked), and the WICD gradient with its knee.
    ``res`` is a :class:`hudd_core.cluster.LayerClustering`."""
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"wspace": 0.45})
    ax1.plot(res.ks, res.wicd, color="C0", lw=1.4, label="WICD")
    ax1.axvline(res.k, color="C3", ls="--", lw=1, label=f"k = {res.k} ({res.method})")
    ax1.set_xlabel("number of clusters k")
    ax1.set_ylabel("WICD", color="C0")
    twin = ax1.twinx()
    twin.plot(res.ks, res.silhouette, color="C2", lw=1, alpha=0.8, label="silhouette")
    twin.set_ylabel("silhouette", color="C2")
    lines = ax1.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
    ax1.set_title(f"{res.layer}: WICD (N = {res.n}{', approximate' if res.approximate else ''})")
    ax2.plot(res.ks, res.gradient, color="C1", lw=1.2)
    ax2.axvline(res.k, color="C3", ls="--", lw=1)
    ax2.set_xlabel("number of clusters k")
    ax2.set_ylabel("d WICD / dk (4th order)")
    ax2.set_title("WICD gradient and its knee")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig, path)


def dendrogram_png(Z: np.ndarray, k: int, leaves: int = 60) -> bytes:
    """The dendrogram (truncated to its last ``leaves`` merges for large N), coloured by
    the cut into ``k`` clusters."""
    from scipy.cluster.hierarchy import dendrogram

    n = Z.shape[0] + 1
    fig = Figure(figsize=(12, 4))
    ax = fig.subplots()
    cut = (Z[n - k - 1, 2] + Z[n - k, 2]) / 2 if 1 < k < n else None
    kwargs = {"truncate_mode": "lastp", "p": leaves} if n > leaves else {}
    dendrogram(Z, ax=ax, color_threshold=cut, no_labels=n > leaves, **kwargs)
    if cut is not None:
        ax.axhline(cut, color="grey", ls="--", lw=0.8)
    ax.set_title(f"Ward dendrogram ({n} images, cut into k = {k})")
    ax.set_ylabel("merge height")
    return _png(fig)


def rq1_plot(
    max_reduction: np.ndarray, cluster_ids: list[int], share: float, path: Path | None = None
) -> bytes:
    """Bars of each cluster's largest variance reduction over the parameters, with the
    50% line (the paper's RQ1)."""
    fig = Figure(figsize=(max(6, 0.25 * len(cluster_ids) + 2), 3.4))
    ax = fig.subplots()
    vals = np.nan_to_num(np.asarray(max_reduction, dtype=float), nan=0.0)
    ax.bar([str(c) for c in cluster_ids], vals, color=["C2" if v >= 0.5 else "C7" for v in vals])
    ax.axhline(0.5, color="C3", ls="--", lw=1)
    ax.set_ylim(min(0.0, float(vals.min(initial=0))), 1.0)
    ax.set_xlabel("cluster")
    ax.set_ylabel("largest variance reduction")
    ax.set_title(f"{share:.0%} of clusters reduce some parameter's variance by ≥ 50%")
    if len(cluster_ids) > 40:
        ax.tick_params(axis="x", labelsize=6, rotation=90)
    return _png(fig, path)
