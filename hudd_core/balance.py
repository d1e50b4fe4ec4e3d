"""Bootstrap balancing (HUDD step 6): every RCC's share of the unsafe set resampled to
the same size, so that no root cause dominates the retraining.

The reference: each cluster is resampled with replacement up to the size of the largest
cluster's quota, ``ceil(quota_factor × its error images)`` (the assignment's quota rule),
image i drawn with weight ``1 − d_i / Σd`` (images closer to the cluster more often).

Variants (``--bootstrap``, :data:`BOOTSTRAPS`): ``weighted`` (the reference, above),
``none`` (the selected images once each, no resampling) and ``uniform`` (every selected
image once, then uniform draws up to the weighted bootstrap's size, so no group is
favoured: how the baselines' picks are resampled; :func:`balance_indices`).

Example:
    >>> import numpy as np
    >>> target = bootstrap_target({1: 3, 2: 2}, quota_factor=2.0)
    >>> idx = bootstrap_balance(np.array([1, 1, 2]), np.array([0.1, 0.3, 0.2]), target)
    >>> target, np.bincount(np.array([1, 1, 2])[idx]).tolist()
    (6, [0, 6, 6])
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np

from hudd_core.options import DEFAULTS, choices

BOOTSTRAPS = choices("bootstrap")


def bootstrap_target(
    cluster_sizes: Mapping[int, int],
    quota_factor: float = DEFAULTS["quota_factor"],
    quota: str = DEFAULTS["quota"],
    present: Collection[int] | None = None,
) -> int:
    """The size every cluster is resampled to: the largest quota among the clusters
    ``present`` in the unsafe set (default: all of ``cluster_sizes``, ``{cluster:
    errors}``). ``quota="mass"`` (the reference): ``ceil(quota_factor × error images)``;
    ``uniform``: the assignment's uniform quota over every cluster of ``cluster_sizes``
    (:func:`hudd_core.assign.cluster_quotas`).

    >>> bootstrap_target({1: 3, 2: 2, 3: 5}, present=[1, 2]), bootstrap_target(
    ...     {1: 3, 2: 2, 3: 5}, quota="uniform", present=[1, 2])
    (6, 7)
    """
    from hudd_core.assign import cluster_quotas

    present = set(cluster_sizes if present is None else present)
    if not present & set(cluster_sizes):
        raise ValueError("no cluster to balance")
    if quota_factor <= 0:
        raise ValueError(f"--quota-factor must be positive, got {quota_factor}")
    if quota == "mass":
        return max(math.ceil(quota_factor * n) for c, n in cluster_sizes.items() if c in present)
    quotas = cluster_quotas(cluster_sizes, quota_factor, quota)
    return max(q for c, q in quotas.items() if c in present)


def balance_indices(
    clusters: np.ndarray, distances: np.ndarray, target: int, seed: int, bootstrap: str
) -> np.ndarray:
    """Indices into the unsafe set of the ``bootstrap`` variant (:data:`BOOTSTRAPS`):
    ``weighted`` → :func:`bootstrap_balance`; ``none`` → every image once, in order;
    ``uniform`` → every image once, then uniform draws to the size ``weighted`` gives
    (every cluster at least ``target``).

    >>> balance_indices(np.array([1, 1, 2]), np.array([0.1, 0.3, 0.2]), 6, 0, "none")
    array([0, 1, 2])
    >>> len(balance_indices(np.array([1, 1, 2]), np.array([0.1, 0.3, 0.2]), 6, 0, "uniform"))
    12
    """
    from hudd_core.config import check_choice

    check_choice("bootstrap", bootstrap, BOOTSTRAPS)
    if bootstrap == "none":
        return np.arange(len(clusters))
    if bootstrap == "uniform":
        size = sum(max(target, int(n)) for n in np.unique(clusters, return_counts=True)[1])
        rng = np.random.default_rng(seed)
        return uniform_resample(np.arange(len(clusters), dtype=np.int64), size, rng)
    return bootstrap_balance(clusters, distances, target, seed=seed)


def uniform_resample(chosen: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Every ``chosen`` index once, then uniform draws from them (with replacement) up to
    ``samples``: no image or group favoured.

    >>> uniform_resample(np.array([4, 7]), 3, np.random.default_rng(0))[:2].tolist()
    [4, 7]
    """
    extra = rng.choice(chosen, size=max(samples - len(chosen), 0), replace=True)
    return np.concatenate([chosen, extra]).astype(np.int64)


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
