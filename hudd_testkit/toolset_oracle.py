"""An independent implementation of the published toolset's cluster-number rule
(clusterModule.HACluster, mode WICDWard, selection KG), written from its definitions
(docs/design.md#knee) with SciPy, NumPy and kneed only: it imports nothing
from hudd_core, so the tests compare our one-walk kernels with it, never with themselves.
"""

from __future__ import annotations

import numpy as np
from kneed import KneeLocator
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist, pdist


def gradient_o4(f, dx: float = 4.0) -> np.ndarray:
    """The toolset's ``gradientO4`` (called with spacing 4), one element at a time:
    central 5-point differences inside, first differences on the two points at each end."""
    f = [float(v) for v in f]
    n = len(f)
    out = [0.0] * n
    for i in range(2, n - 2):
        out[i] = (f[i - 2] - 8 * f[i - 1] + 8 * f[i + 1] - f[i + 2]) / 12.0
    for i in range(min(2, n)):  # out[0:2] = f[1:3] - f[0:2] (NumPy broadcasts for n = 2)
        out[i] = (f[i + 1] if i + 1 < n else f[1]) - f[i]
    for i in range(max(n - 2, 0), n):  # out[-2:] = f[-2:] - f[-3:-1]
        out[i] = f[i] - (f[i - 1] if i >= 1 else f[0])
    return np.array(out) / dx


def wicd(M: np.ndarray, labels: np.ndarray) -> float:
    """Σ over clusters with more than one member of mean(M[i][j], i < j in C) × |C| / N,
    divided by the number of clusters (singletons counted). ``M`` may be asymmetric: only
    its upper triangle (j > i) is read, as the toolset does."""
    n = len(labels)
    ids = np.unique(labels)
    total = 0.0
    for c in ids:
        idx = np.flatnonzero(labels == c)  # ascending: i < j within the cluster
        if len(idx) > 1:
            sub = M[np.ix_(idx, idx)]
            total += sub[np.triu_indices(len(idx), 1)].mean() * len(idx) / n
    return total / len(ids)


def layer_choice(X: np.ndarray) -> dict:
    """k for one layer's heatmaps ``X`` (N × D): D, S = D / rowmax, Ward on the rows of S,
    for every k the maxclust cut, WICD on S, the knee of its gradient; and the WICD on
    the raw D at that k (what the best layer compares)."""
    X = np.asarray(X, dtype=np.float64)
    D = cdist(X, X)
    S = D / D.max(axis=1, keepdims=True)
    Z = linkage(pdist(S), method="ward")
    n = len(X)
    ks = list(range(2, min(500, max(2, n // 2)) + 1))
    cuts = [fcluster(Z, k, criterion="maxclust") for k in ks]
    curve = [wicd(S, labels) for labels in cuts]
    knee = None
    if len(ks) >= 3:
        knee = KneeLocator(ks, gradient_o4(curve), curve="concave", direction="increasing").knee
    k = int(knee) if knee is not None else None
    raw = wicd(D, cuts[ks.index(k)]) if k is not None else None
    return {"k": k, "wicd_raw": raw, "ks": ks, "wicd_s": curve}


def best_layer(choices: dict[str, dict]) -> str:
    """The layer with the lowest raw WICD at its k; ``input`` never."""
    return min((n for n in choices if n != "input"), key=lambda n: choices[n]["wicd_raw"])
