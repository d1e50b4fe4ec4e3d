"""The one-walk WICD/silhouette kernels and the k/best-layer rules against plain
per-k computations (scipy cuts, Python loops)."""

from __future__ import annotations

import warnings

import fastcluster
import numpy as np
import pytest
from scipy.cluster.hierarchy import cut_tree, fcluster, linkage
from scipy.spatial.distance import pdist, squareform

from hudd_core.knee import best_layer, choose_k, gradient4
from hudd_core.wicd import labels_at, silhouette_curve, wicd_curve


def wicd_direct(D: np.ndarray, labels: np.ndarray) -> float:
    """DESIGN.md's WICD, literally: clusters with > 1 member, mean pairwise distance ×
    |C|/N, summed, divided by the number of clusters (singletons included)."""
    n, ids = len(labels), np.unique(labels)
    total = 0.0
    for c in ids:
        idx = np.flatnonzero(labels == c)
        if len(idx) > 1:
            pairs = [D[a, b] for i, a in enumerate(idx) for b in idx[i + 1 :]]
            total += sum(pairs) / len(pairs) * len(idx) / n
    return total / len(ids)


def silhouette_direct(D: np.ndarray, labels: np.ndarray) -> float:
    s = np.zeros(len(labels))
    for i, own in enumerate(labels):
        mine = np.flatnonzero(labels == own)
        if len(mine) == 1:
            continue
        a = D[i, mine].sum() / (len(mine) - 1)
        b = min(D[i, labels == c].mean() for c in np.unique(labels) if c != own)
        s[i] = (b - a) / max(a, b)
    return float(s.mean())


def _fixture(seed: int, n: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[: n // 3] += 3.0
    X[n // 3 : n // 2] -= 2.0
    d_ward = pdist(X)
    d_other = pdist(rng.normal(size=(n, 4)) + X[:, :4])  # WICD measured on other distances
    return fastcluster.linkage(d_ward, method="ward"), d_ward, d_other


@pytest.mark.parametrize(("seed", "n"), [(0, 24), (1, 57), (2, 80), (3, 9)])
def test_wicd_every_k_equals_direct_cut(seed, n):
    Z, _, d = _fixture(seed, n)
    D = squareform(d)
    ks, w = wicd_curve(Z, d, 2, n)
    for k, value in zip(ks, w, strict=True):
        labels = cut_tree(Z, n_clusters=int(k)).ravel()
        assert value == pytest.approx(wicd_direct(D, labels), rel=1e-10, abs=1e-12)
        fc = fcluster(Z, int(k), criterion="maxclust")  # no ties here: same partition
        assert len(set(zip(fc, labels, strict=True))) == k


@pytest.mark.parametrize(("seed", "n"), [(4, 31), (5, 66)])
def test_silhouette_every_k_equals_direct(seed, n):
    Z, d, _ = _fixture(seed, n)
    D = squareform(d)
    ks, s = silhouette_curve(Z, d, 2, n // 2)
    for k, value in zip(ks, s, strict=True):
        labels = cut_tree(Z, n_clusters=int(k)).ravel()
        assert value == pytest.approx(silhouette_direct(D, labels), abs=1e-12)


def test_subset_curves_equal_direct_on_the_subset():
    Z, d_all, _ = _fixture(6, 70)
    rng = np.random.default_rng(6)
    pts = rng.choice(70, 30, replace=False)
    d = squareform(squareform(d_all)[np.ix_(pts, pts)], checks=False)
    ks, w = wicd_curve(Z, d, 2, 12, points=pts)
    _, s = silhouette_curve(Z, d, 2, 12, points=pts)
    Dp = squareform(d)
    for k, wv, sv in zip(ks, w, s, strict=True):
        labels = cut_tree(Z, n_clusters=int(k)).ravel()[pts]
        present = len(np.unique(labels))  # WICD divides by all k clusters, present or not
        assert wv == pytest.approx(wicd_direct(Dp, labels) * present / k, rel=1e-10)
        assert sv == pytest.approx(silhouette_direct(Dp, labels), abs=1e-12)


def test_labels_are_the_cut_numbered_in_leaf_order():
    Z, _, _ = _fixture(7, 40)
    for k in (2, 5, 13, 40):
        ours = labels_at(Z, k)
        ref = cut_tree(Z, n_clusters=k).ravel()
        assert sorted(np.unique(ours)) == list(range(1, k + 1))
        assert len(set(zip(ours, ref, strict=True))) == k
        from scipy.cluster.hierarchy import leaves_list

        first_seen = list(dict.fromkeys(ours[leaves_list(Z)]))
        assert first_seen == list(range(1, k + 1))


def test_invalid_ranges_and_lengths_raise():
    Z, d, _ = _fixture(8, 10)
    with pytest.raises(ValueError, match="k range"):
        wicd_curve(Z, d, 2, 11)
    with pytest.raises(ValueError, match="condensed"):
        wicd_curve(Z, d[:-1], 2, 5)


def test_gradient4_is_exact_for_quartics():
    x = np.arange(12.0)
    c = np.array([0.3, -1.2, 0.7, 2.0, -0.05])
    y = np.polyval(c, x)
    assert np.allclose(gradient4(y), np.polyval(np.polyder(c), x), atol=1e-9)
    assert np.allclose(gradient4(np.array([1.0, 4.0, 9.0])), np.gradient([1.0, 4.0, 9.0]))


def _gradient4_loops(y):
    n, g = len(y), []
    for i in range(n):
        if 2 <= i < n - 2:
            g.append((y[i - 2] - 8 * y[i - 1] + 8 * y[i + 1] - y[i + 2]) / 12)
        elif i == 0:
            g.append((-25 * y[0] + 48 * y[1] - 36 * y[2] + 16 * y[3] - 3 * y[4]) / 12)
        elif i == 1:
            g.append((-3 * y[0] - 10 * y[1] + 18 * y[2] - 6 * y[3] + y[4]) / 12)
        elif i == n - 2:
            g.append((3 * y[-1] + 10 * y[-2] - 18 * y[-3] + 6 * y[-4] - y[-5]) / 12)
        else:
            g.append((25 * y[-1] - 48 * y[-2] + 36 * y[-3] - 16 * y[-4] + 3 * y[-5]) / 12)
    return np.array(g)


def reference_layer_choice(X: np.ndarray) -> tuple[int, float]:
    """DESIGN.md's rules with SciPy and loops: (k, WICD at k) of one layer."""
    from kneed import KneeLocator

    D = squareform(pdist(X.astype(np.float64)))
    Z = linkage(pdist(D / D.max(axis=1, keepdims=True)), method="ward")
    n = len(X)
    ks = list(range(2, min(500, max(2, n // 2)) + 1))
    w = [wicd_direct(D, fcluster(Z, k, criterion="maxclust")) for k in ks]
    knee = KneeLocator(ks, _gradient4_loops(w), curve="concave", direction="increasing").knee
    return int(knee), w[ks.index(int(knee))]


def test_k_and_best_layer_match_reference_rules(tmp_path):
    from cluster_fixtures import planted_layer

    from hudd_core.cluster import cluster_layer

    rng = np.random.default_rng(11)
    layers = {
        "input": planted_layer(rng, [15, 11, 8, 6], 64, 1.0)[0],
        "conv": planted_layer(rng, [15, 11, 8, 6], 48, 2.0)[0],
        "fc": planted_layer(rng, [15, 11, 8, 6], 24, 5.0)[0],
    }
    ref, ours = {}, {}
    for name, X in layers.items():
        k_ref, w_ref = reference_layer_choice(X)
        res = cluster_layer(X, name=name, device="cpu")
        assert res.k == k_ref
        assert res.at_k()[0] == pytest.approx(w_ref, rel=1e-6)
        ref[name], ours[name] = w_ref, res.at_k()
    plain_best = min((n for n in ref if n != "input"), key=ref.get)
    assert best_layer(ours) == plain_best


def test_knee_fallback_is_announced():
    ks = np.arange(2, 12)
    wicd = 1.0 - 0.05 * ks  # a straight line: its gradient is flat, kneed finds no knee
    sil = np.linspace(0, 1, len(ks)) * (ks == 7)
    with pytest.warns(RuntimeWarning, match="no knee"):
        choice = choose_k(ks, wicd, sil, name="fc")
    assert (choice.k, choice.method) == (7, "fallback-silhouette")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_k(ks, wicd, sil, selection="silhouette").k == 7


def test_best_layer_never_input():
    assert best_layer({"input": (0.0, 1.0), "a": (2.0, 0.1), "b": (1.0, 0.0)}) == "b"
    assert best_layer({"input": (0.0, 1.0), "a": (2.0, 0.1), "b": (1.0, 0.0)}, "silhouette") == "a"
    with pytest.raises(ValueError, match="input"):
        best_layer({"input": (0.0, 1.0)})


@pytest.mark.parametrize("n", [2, 3, 5])
def test_tiny_inputs_cluster_without_warnings(n):
    from hudd_core.cluster import cluster_layer

    X = np.random.default_rng(n).normal(size=(n, 7)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = cluster_layer(X, device="cpu")
    assert (res.k, res.method) == (2, "single-k")
    assert sorted(set(res.labels)) == [1, 2]


def test_one_image_is_one_cluster_and_none_is_an_error():
    from hudd_core.cluster import cluster_layer

    res = cluster_layer(np.ones((1, 4), dtype=np.float32))
    assert (res.k, res.method, res.labels.tolist()) == (1, "single-image", [1])
    assert res.linkage.shape == (0, 4) and res.at_k() == (0.0, 0.0)
    with pytest.raises(ValueError, match="no error image"):
        cluster_layer(np.ones((0, 4), dtype=np.float32))


def test_float16_heatmaps_cluster_like_float32():
    from cluster_fixtures import planted_layer

    from hudd_core.cluster import cluster_layer

    X, _ = planted_layer(np.random.default_rng(12), [10, 8, 6], 40, 4.0)
    a = cluster_layer(X.astype(np.float16).astype(np.float32), device="cpu")
    b = cluster_layer(X.astype(np.float16), device="cpu")
    assert a.k == b.k and np.array_equal(a.labels, b.labels)
    assert np.allclose(a.wicd, b.wicd, rtol=1e-6)


@pytest.mark.parametrize(("n", "dim"), [(300, 20), (120, 900)])
def test_dense_second_level_equals_streamed(n, dim):
    from hudd_core.distance import second_level_pdist

    X = np.abs(np.random.default_rng(n).normal(size=(n, dim))).astype(np.float32)
    second, first = second_level_pdist(X, device="cpu")  # dense rows
    ref_second, ref_first = second_level_pdist(X, device="cpu", dense_bytes=0, block_memory=1 << 16)
    assert np.allclose(first, ref_first, rtol=1e-6, atol=1e-9)
    assert np.allclose(second, ref_second, rtol=1e-5, atol=1e-9)
    D = squareform(pdist(X.astype(np.float64)))
    plain = pdist(D / D.max(axis=1, keepdims=True))
    assert np.allclose(second, plain, rtol=1e-4, atol=1e-7)
