"""WICD and silhouette for every number of clusters, from one walk up a dendrogram.

HUDD picks the number of clusters from the WICD curve (weighted intra-cluster distance,
docs/design.md#wicd): for a cut into k clusters,

    WICD(k) = (1/k) · Σ_{C: |C| > 1} mean_{i<j ∈ C} d(i, j) · |C| / N

The reference cuts the tree again for every k and loops over pairs in Python. Here every
k comes from one pass over the condensed distances plus one walk up the tree:

* In the dendrogram's leaf order every cluster is a contiguous range of leaves, and the
  merge that first joins leaves i and j is the latest merge among the "gaps" between the
  consecutive leaves from i to j (a range-maximum query, O(1) with a sparse table). One
  sequential pass over the pairs adds every d(i, j) to the cross sum of that merge.
* Walking the merges in order, ``sum(A ∪ B) = sum(A) + sum(B) + cross(A, B)``, so every
  cluster's sum of pairwise distances is known, and WICD(k) is a sum over the k clusters
  alive after N − k merges. Total work O(N²) for the pass and O(K²) for the curve.

The silhouette (mean over points of (b − a) / max(a, b), 0 for points in singletons, as
scikit-learn) is computed alongside from the per-point sums of distances to each of the
K clusters alive at the largest k; merging two clusters adds two columns, and a point's
nearest other cluster only needs a rescan when it was one of the two merged.

Both kernels take a subset of the leaves (``points``) with the condensed distances among
them, so the approximate path (large N) can estimate the curves on a sample.

Example:
    >>> import numpy as np, fastcluster
    >>> from scipy.spatial.distance import pdist
    >>> X = np.array([[0.0], [0.1], [5.0], [5.2], [9.0]])
    >>> d = pdist(X)
    >>> Z = fastcluster.linkage(d, method="ward")
    >>> ks, w = wicd_curve(Z, d, 2, 3)
    >>> ks.tolist(), w.round(4).tolist()
    ([2, 3], [0.82, 0.04])
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _tree_layout(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leaf positions (left child first, as scipy's ``leaves_list``), the merge at each gap
    between consecutive leaves, and each node's start position (nodes 0..2N-2)."""
    n = Z.shape[0] + 1
    size = np.ones(2 * n - 1, dtype=np.int64)
    for m in range(n - 1):
        size[n + m] = size[int(Z[m, 0])] + size[int(Z[m, 1])]
    start = np.zeros(2 * n - 1, dtype=np.int64)
    gap = np.zeros(max(n - 1, 1), dtype=np.int64)
    for m in range(n - 2, -1, -1):
        left, right = int(Z[m, 0]), int(Z[m, 1])
        start[left] = start[n + m]
        start[right] = start[n + m] + size[left]
        gap[start[right] - 1] = m
    return start[:n].copy(), gap, start


@njit(cache=True)
def _sparse_table(gap: np.ndarray) -> np.ndarray:
    """table[l, p] = max(gap[p : p + 2**l]) (range-maximum queries in O(1))."""
    m = gap.shape[0]
    levels = 1
    while (1 << levels) <= m:
        levels += 1
    table = np.zeros((levels, m), dtype=np.int32)
    table[0, :] = gap
    for lev in range(1, levels):
        half = 1 << (lev - 1)
        for p in range(m - (1 << lev) + 1):
            a, b = table[lev - 1, p], table[lev - 1, p + half]
            table[lev, p] = a if a > b else b
    return table


@njit(cache=True)
def _cross_sums(
    table: np.ndarray, log2: np.ndarray, pos: np.ndarray, d: np.ndarray, row_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Σ d(i, j) and Σ d(i, j) / row_scale[i] (i < j in the subset's order) over the pairs
    first joined by each merge. One pass gives both: the raw sums (best-layer WICD) and
    the row-normalised ones (the WICD behind the knee). Serial on purpose: one streaming
    pass (about 1 ns a pair), and no second OpenMP runtime competing with torch's threads."""
    s = pos.shape[0]
    raw = np.zeros(table.shape[1], dtype=np.float64)
    scaled = np.zeros(table.shape[1], dtype=np.float64)
    for i in range(s - 1):
        base = s * i - i * (i + 1) // 2 - i - 1
        pi = pos[i]
        inv = 1.0 / row_scale[i] if row_scale[i] > 0 else 0.0
        for j in range(i + 1, s):
            pj = pos[j]
            lo, hi = (pi, pj) if pi < pj else (pj, pi)
            lev = log2[hi - lo]
            a, b = table[lev, lo], table[lev, hi - (1 << lev)]
            m = a if a > b else b
            v = d[base + j]
            raw[m] += v
            scaled[m] += v * inv
    return raw, scaled


@njit(cache=True)
def _log2_table(m: int) -> np.ndarray:
    out = np.zeros(m + 1, dtype=np.int64)
    for v in range(2, m + 1):
        out[v] = out[v // 2] + 1
    return out


@njit(cache=True)
def _alive_at(Z: np.ndarray, applied: int) -> np.ndarray:
    """Node ids alive once the first ``applied`` merges are done (N − applied of them)."""
    n = Z.shape[0] + 1
    parent = np.full(2 * n - 1, n - 1, dtype=np.int64)  # the root never merges again
    for m in range(n - 1):
        parent[int(Z[m, 0])] = m
        parent[int(Z[m, 1])] = m
    out = np.empty(n - applied, dtype=np.int64)
    c = 0
    for x in range(2 * n - 1):
        created = x - n if x >= n else -1
        if created < applied and parent[x] >= applied:
            out[c] = x
            c += 1
    return out


@njit(cache=True)
def _wicd_walk(Z, cross, count, k_lo, k_hi):
    n = Z.shape[0] + 1
    total_points = count[:n].sum()
    sums = np.zeros(2 * n - 1, dtype=np.float64)
    cnt = np.zeros(2 * n - 1, dtype=np.float64)
    cnt[:n] = count
    for m in range(n - 1):
        left, right = int(Z[m, 0]), int(Z[m, 1])
        sums[n + m] = sums[left] + sums[right] + cross[m]
        cnt[n + m] = cnt[left] + cnt[right]
    contrib = np.zeros(2 * n - 1, dtype=np.float64)
    for x in range(2 * n - 1):
        if cnt[x] > 1:
            contrib[x] = sums[x] / (cnt[x] * (cnt[x] - 1) / 2) * cnt[x] / total_points
    out = np.zeros(k_hi - k_lo + 1, dtype=np.float64)
    alive = _alive_at(Z, n - k_hi)
    slot = np.full(2 * n - 1, -1, dtype=np.int64)
    for s in range(alive.shape[0]):
        slot[alive[s]] = s
    for k in range(k_hi, k_lo - 1, -1):
        acc = 0.0
        for s in range(alive.shape[0]):
            if alive[s] >= 0:
                acc += contrib[alive[s]]
        out[k - k_lo] = acc / k
        if k > k_lo:  # apply merge n - k: k clusters become k - 1
            m = n - k
            sl, sr = slot[int(Z[m, 0])], slot[int(Z[m, 1])]
            alive[sl] = n + m
            alive[sr] = -1
            slot[n + m] = sl
    return out


def _prepare(Z: np.ndarray, points: np.ndarray | None, d: np.ndarray):
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    n = Z.shape[0] + 1
    pts = np.arange(n, dtype=np.int64) if points is None else np.asarray(points, np.int64)
    s = pts.shape[0]
    if d.shape != (s * (s - 1) // 2,):
        raise ValueError(f"expected {s * (s - 1) // 2} condensed distances for {s} points")
    return Z, n, pts


def _check_range(n: int, k_lo: int, k_hi: int) -> None:
    if not 1 <= k_lo <= k_hi <= n:
        raise ValueError(f"k range {k_lo}..{k_hi} is not within 1..{n}")


def wicd_curves(
    Z: np.ndarray,
    d: np.ndarray,
    k_lo: int,
    k_hi: int,
    points: np.ndarray | None = None,
    row_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WICD of the cut into k clusters for every k in ``k_lo..k_hi``, on the raw
    distances and on the row-normalised ones, from one pass over the pairs.

    The published toolset (clusterModule.HACluster, mode WICDWard) finds the knee on the
    WICD of S, each row of D divided by its maximum, reading S[i][j] for j > i (S is not
    symmetric); the best layer compares the WICD of the raw D.

    Args:
        Z: SciPy/fastcluster linkage of N leaves (cuts follow the merge order, as
            ``scipy.cluster.hierarchy.cut_tree``; equal to ``fcluster(maxclust=k)``
            unless merge heights tie).
        d: condensed raw distances among all N leaves, or among ``points`` when given.
        points: optional subset of leaves (sorted or not); WICD is then estimated on
            them (cluster sizes and N counted within the subset).
        row_scale: per point (subset order) the divisor of its row, the maximum of its
            row of D; default: the row maxima of ``d``.

    Returns:
        ``(ks, wicd_raw, wicd_normalised)``: int64 and two float64 arrays.
    """
    Z, n, pts = _prepare(Z, points, np.asarray(d))
    _check_range(n, k_lo, k_hi)
    d = np.ascontiguousarray(d, dtype=np.float64)
    if row_scale is None:
        import torch

        from hudd_core.distance import condensed_row_max

        row_scale = condensed_row_max(torch.from_numpy(d), pts.shape[0]).numpy()
    row_scale = np.ascontiguousarray(row_scale, dtype=np.float64)
    if row_scale.shape != (pts.shape[0],):
        raise ValueError(f"row_scale: expected {pts.shape[0]} values, got {row_scale.shape}")
    pos_all, gap, _ = _tree_layout(Z)
    count = np.zeros(n, dtype=np.float64)
    count[pts] = 1.0
    if n > 1:
        raw, scaled = _cross_sums(_sparse_table(gap), _log2_table(n), pos_all[pts], d, row_scale)
    else:
        raw = scaled = np.zeros(0)
    ks = np.arange(k_lo, k_hi + 1, dtype=np.int64)
    return ks, _wicd_walk(Z, raw, count, k_lo, k_hi), _wicd_walk(Z, scaled, count, k_lo, k_hi)


def wicd_curve(
    Z: np.ndarray,
    d: np.ndarray,
    k_lo: int,
    k_hi: int,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """WICD of the cut into k clusters for every k in ``k_lo..k_hi`` on the distances
    ``d`` as given (one tree walk); see :func:`wicd_curves` for the arguments.

    Returns:
        ``(ks, wicd)``: int64 and float64 arrays of length ``k_hi − k_lo + 1``.
    """
    ks, raw, _ = wicd_curves(Z, d, k_lo, k_hi, points)
    return ks, raw


@njit(cache=True)
def _silhouette_walk(Z, start, pos, d, k_lo, k_hi):
    n = Z.shape[0] + 1
    s = pos.shape[0]
    own, slot, k0 = _owners_at(Z, start, pos, k_hi)
    cnt = np.zeros(k0, dtype=np.float64)
    for i in range(s):
        cnt[own[i]] += 1.0
    sums = _point_sums(own, d, k0)
    active = np.ones(k0, dtype=np.bool_)
    best = np.full(s, -1, dtype=np.int64)
    bval = np.full(s, np.inf)
    for i in range(s):
        _rescan(i, own, sums, cnt, active, best, bval)
    out = np.zeros(k_hi - k_lo + 1, dtype=np.float64)
    for k in range(k_hi, k_lo - 1, -1):
        out[k - k_lo] = _mean_silhouette(own, sums, cnt, best, bval)
        if k > k_lo:
            _merge(Z, n - k, n, own, slot, sums, cnt, active, best, bval)
    return out


@njit(cache=True)
def _owners_at(Z, start, pos, k_hi):
    """``(own, slot, K)``: each point's cluster among the K alive at ``k_hi`` and each
    alive node's slot (-1 for the others)."""
    n = Z.shape[0] + 1
    s = pos.shape[0]
    alive = _alive_at(Z, n - k_hi)
    k0 = alive.shape[0]
    # label by leaf position: the K clusters alive at k_hi are contiguous leaf ranges
    by_pos = np.empty(n, dtype=np.int64)
    slot = np.full(2 * n - 1, -1, dtype=np.int64)
    sizes = np.ones(2 * n - 1, dtype=np.int64)
    for m in range(n - 1):
        sizes[n + m] = sizes[int(Z[m, 0])] + sizes[int(Z[m, 1])]
    for c in range(k0):
        slot[alive[c]] = c
        by_pos[start[alive[c]] : start[alive[c]] + sizes[alive[c]]] = c
    own = np.empty(s, dtype=np.int64)
    for i in range(s):
        own[i] = by_pos[pos[i]]
    return own, slot, k0


@njit(cache=True)
def _point_sums(own, d, k0):
    """``sums[c, i]`` = Σ d(i, j) over j in cluster c; one sequential pass over the pairs."""
    s = own.shape[0]
    sums = np.zeros((k0, s), dtype=np.float64)
    acc = np.zeros(k0, dtype=np.float64)
    for i in range(s):
        acc[:] = 0.0
        base = s * i - i * (i + 1) // 2 - i - 1
        ci = own[i]
        for j in range(i + 1, s):
            v = d[base + j]
            sums[ci, j] += v
            acc[own[j]] += v
        sums[:, i] += acc
    return sums


@njit(cache=True)
def _mean_silhouette(own, sums, cnt, best, bval):
    """The mean over the points of (b − a) / max(a, b) (0 in a singleton)."""
    s = own.shape[0]
    total = 0.0
    for i in range(s):
        c = own[i]
        if cnt[c] > 1 and best[i] >= 0:
            a = sums[c, i] / (cnt[c] - 1)
            b = bval[i]
            top = a if a > b else b
            if top > 0:
                total += (b - a) / top
    return total / s


@njit(cache=True)
def _merge(Z, m, n, own, slot, sums, cnt, active, best, bval):
    """Applies merge ``m``: the right cluster's points and sums join the left's."""
    s = own.shape[0]
    sl, sr = slot[int(Z[m, 0])], slot[int(Z[m, 1])]
    slot[n + m] = sl
    active[sr] = False
    cnt[sl] += cnt[sr]
    sums[sl, :] += sums[sr, :]
    for i in range(s):
        if own[i] == sr:
            own[i] = sl
        # the merged cluster's mean is ≥ min of the two; only an involved best moves
        if best[i] == sl or best[i] == sr:
            _rescan(i, own, sums, cnt, active, best, bval)


@njit(cache=True)
def _rescan(i, own, sums, cnt, active, best, bval):
    best[i] = -1
    bval[i] = np.inf
    for c in range(cnt.shape[0]):
        if active[c] and c != own[i] and cnt[c] > 0:
            v = sums[c, i] / cnt[c]
            if v < bval[i]:
                bval[i] = v
                best[i] = c


def silhouette_curve(
    Z: np.ndarray,
    d: np.ndarray,
    k_lo: int,
    k_hi: int,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean silhouette of the cut into k clusters for every k in ``k_lo..k_hi``.

    Same arguments as :func:`wicd_curve`; ``d`` holds the distances the silhouette is
    measured on. Points in singleton clusters score 0 (scikit-learn's convention).
    Memory: ``k_hi`` × (number of points) float64.

    Example:
        >>> import numpy as np, fastcluster
        >>> from scipy.spatial.distance import pdist
        >>> d = pdist(np.array([[0.0], [1.0], [10.0], [11.0]]))
        >>> ks, s = silhouette_curve(fastcluster.linkage(d, method="ward"), d, 2, 2)
        >>> round(float(s[0]), 4)
        0.8997
    """
    Z, n, pts = _prepare(Z, points, np.asarray(d))
    _check_range(n, k_lo, k_hi)
    d = np.ascontiguousarray(d, dtype=np.float64)
    _, _, start = _tree_layout(Z)
    values = _silhouette_walk(Z, start, start[pts], d, k_lo, k_hi)
    return np.arange(k_lo, k_hi + 1, dtype=np.int64), values


def labels_at(Z: np.ndarray, k: int) -> np.ndarray:
    """Cluster ids 1..k of the N leaves after N − k merges, numbered by their first leaf
    in the dendrogram's leaf order (so id 1 is the leftmost cluster of the dendrogram).

    Example:
        >>> import numpy as np, fastcluster
        >>> Z = fastcluster.linkage(np.array([1.0, 9.0, 9.0]), method="ward")
        >>> labels_at(Z, 2).tolist()  # leaf order: 2, 0, 1
        [2, 2, 1]
    """
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    n = Z.shape[0] + 1
    _check_range(n, k, k)
    pos, _, start = _tree_layout(Z)
    alive = _alive_at(Z, n - k)
    order = np.argsort(start[alive], kind="stable")
    by_pos = np.empty(n, dtype=np.int64)
    bounds = np.append(start[alive][order], n)
    for c in range(k):
        by_pos[bounds[c] : bounds[c + 1]] = c + 1
    return by_pos[pos]
