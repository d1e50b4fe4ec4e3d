"""Bootstrap balancing (HUDD step 6): every RCC's share of the unsafe set resampled to
the same size, so that no root cause dominates the retraining.

The reference: each cluster is resampled with replacement up to the size of the largest
cluster's quota, ``ceil(quota_factor × its error images)`` (the assignment's quota rule),
image i drawn with weight ``1 − d_i / Σd`` (images closer to the cluster more often).

Example:
    >>> import numpy as np
    >>> target = bootstrap_target({1: 3, 2: 2}, quota_factor=2.0)
    >>> idx = bootstrap_balance(np.array([1, 1, 2]), np.array([0.1, 0.3, 0.2]), target)
    >>> target, np.bincount(np.array([1, 1, 2])[idx]).tolist()
    (6, [0, 6, 6])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def bootstrap_target(cluster_sizes: Mapping[int, int], quota_factor: float = 2.0) -> int:
    """The size every cluster is resampled to: the largest quota
    ``ceil(quota_factor × error images)`` among ``cluster_sizes`` (``{cluster: errors}``
    of the RCCs present in the unsafe set)."""
    if not cluster_sizes:
        raise ValueError("no cluster to balance")
    if quota_factor <= 0:
        raise ValueError(f"--quota-factor must be positive, got {quota_factor}")
    return max(math.ceil(quota_factor * n) for n in cluster_sizes.values())


def bootstrap_balance(
    clusters: np.ndarray, distances: np.ndarray, target: int, seed: int = 0
) -> np.ndarray:
    """Indices into the unsafe set after bootstrap balancing.

    Every cluster is resampled with replacement up to ``target`` images, image i drawn
    with weight ``1 − d_i / Σd``. A cluster whose distances are all 0, or with one image,
    draws uniformly. A cluster already holding ``target`` images or more is kept as it is.

    >>> idx = bootstrap_balance(np.array([1, 1, 2]), np.array([0.1, 0.3, 0.2]), 4, seed=0)
    >>> sorted(np.bincount(np.array([1, 1, 2])[idx]).tolist())
    [0, 4, 4]
    """
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(clusters):
        idx = np.flatnonzero(clusters == c)
        if len(idx) >= target:
            out.append(idx)
            continue
        d = distances[idx].astype(np.float64)
        w = 1.0 - d / d.sum() if d.sum() > 0 and len(idx) > 1 else np.ones(len(idx))
        w = w / w.sum() if w.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
        extra = rng.choice(idx, size=target - len(idx), replace=True, p=w)
        out.append(np.concatenate([idx, extra]))
    return np.concatenate(out) if out else np.array([], dtype=np.int64)
