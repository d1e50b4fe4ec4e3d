"""The basics every user of the clusters needs: the noise id, cluster ids by size, the
inspection share and a layer file's rows (imports nothing of the package).

Density clusterers leave *noise* points: they get the cluster id :data:`NOISE` (0;
clusters are 1..k, largest first), are listed in ``clusters.csv`` as cluster 0
("unclustered"), never get an assignment quota, count as one extra group of images to
inspect, and are not a cluster in RQ1.

Example:
    >>> labels = relabel(np.array([7, 7, -1, 3]))
    >>> labels.tolist(), inspect_share(labels, per_cluster=1)
    ([1, 1, 0, 2], 0.75)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOISE = 0  # the cluster id of the unclustered (noise) images


def relabel(raw: np.ndarray) -> np.ndarray:
    """Cluster ids 1..k by decreasing size (ties: the earlier first member first); the
    clusterers' noise (< 0) becomes :data:`NOISE`.

    Example:
        >>> relabel(np.array([5, -1, 2, 2, 5, 2])).tolist()
        [2, 0, 1, 1, 2, 1]
    """
    raw = np.asarray(raw)
    ids = [c for c in dict.fromkeys(raw.tolist()) if c >= 0]  # in order of first member
    ids.sort(key=lambda c: -int(np.sum(raw == c)))
    out = np.full(raw.shape, NOISE, dtype=np.int64)
    for new, c in enumerate(ids, start=1):
        out[raw == c] = new
    return out


def inspect_share(labels: np.ndarray, per_cluster: int = 5) -> float:
    """Share of the error images an engineer looks at when inspecting ``per_cluster``
    images per cluster (all of a smaller cluster), as in the paper's Table 1.

    Example:
        >>> inspect_share(np.array([1] * 20 + [2] * 3))
        0.34782608695652173
    """
    _, counts = np.unique(labels, return_counts=True)
    return float(np.minimum(counts, per_cluster).sum() / len(labels))


def layer_rows(path: Path, n: int) -> np.ndarray:
    """A layer file's rows (memory-mapped), checked against the ``n`` indexed images."""
    X = np.load(path, mmap_mode="r")
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"{path}: {X.shape[0]} rows but index.csv lists {n}")
    return X
