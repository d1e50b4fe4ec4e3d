"""The one-walk WICD/silhouette kernels and the k/best-layer rules against plain
per-k computations (scipy cuts, Python loops)."""

from __future__ import annotations

import warnings

import fastcluster
import numpy as np
import pytest
from scipy.cluster.hierarchy import cut_tree, fcluster
from scipy.spatial.distance import pdist, squareform

from hudd_core.cluster.knee import best_layer, choose_k, gradient4
from hudd_core.cluster.wicd import labels_at, silhouette_curve, wicd_curve


def wicd_direct(D: np.ndarray, labels: np.ndarray) -> float:
    """docs/design.md#wicd, literally: clusters with > 1 member, mean pairwise distance ×
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


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 12, 40])
def test_gradient4_is_the_toolsets_gradient_o4(n):
    from hudd_testkit.toolset_oracle import gradient_o4

    y = np.random.default_rng(n).normal(size=n).cumsum()
    assert np.allclose(gradient4(y, spacing=4.0), gradient_o4(y, dx=4.0), rtol=1e-12, atol=0)
    assert np.allclose(gradient4(y), gradient_o4(y, dx=1.0), rtol=1e-12, atol=0)
    # inside, the 5-point stencil is exact for quartics; the ends are first differences
    x = np.arange(12.0)
    c = np.array([0.3, -1.2, 0.7, 2.0, -0.05])
    q = gradient4(np.polyval(c, x))
    assert np.allclose(q[2:-2], np.polyval(np.polyder(c), x)[2:-2], atol=1e-9)
    assert q[0] == pytest.approx(np.polyval(c, 1.0) - np.polyval(c, 0.0))


def test_knee_wicd_is_measured_on_the_row_normalised_matrix():
    from hudd_core.cluster.wicd import wicd_curves
    from hudd_testkit.toolset_oracle import wicd

    Z, d, _ = _fixture(5, 40)
    D = squareform(d)
    S = D / D.max(axis=1, keepdims=True)  # not symmetric: the upper triangle is read
    ks, raw, scaled = wicd_curves(Z, d, 2, 20)
    for k, r, s_ in zip(ks, raw, scaled, strict=True):
        labels = fcluster(Z, int(k), criterion="maxclust")
        assert r == pytest.approx(wicd(D, labels), rel=1e-10)
        assert s_ == pytest.approx(wicd(S, labels), rel=1e-10)
    assert not np.allclose(scaled, wicd_curves(Z, d, 2, 20, row_scale=np.ones(40))[2])


def test_k_and_best_layer_match_the_toolset_rule():
    from hudd_core.cluster import cluster_layer
    from hudd_testkit.cluster_fixtures import planted_layer
    from hudd_testkit.toolset_oracle import best_layer as toolset_best
    from hudd_testkit.toolset_oracle import layer_choice

    rng = np.random.default_rng(11)
    layers = {
        "input": planted_layer(rng, [15, 11, 8, 6], 64, 1.0)[0],
        "conv": planted_layer(rng, [15, 11, 8, 6], 48, 2.0)[0],
        "fc": planted_layer(rng, [15, 11, 8, 6], 24, 5.0)[0],
        "noisy": planted_layer(rng, [9, 9, 9, 9, 4], 30, 0.7)[0],
    }
    ref, ours = {}, {}
    for name, X in layers.items():
        ref[name] = layer_choice(X)
        res = cluster_layer(X, name=name, device="cpu")
        assert res.k == ref[name]["k"], name
        assert np.allclose(res.wicd, ref[name]["wicd_s"], rtol=1e-6)
        assert res.at_k()[0] == pytest.approx(ref[name]["wicd_raw"], rel=1e-6)
        ours[name] = res.at_k()
    assert best_layer(ours) == toolset_best(ref)


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
    from hudd_core.cluster import cluster_layer
    from hudd_testkit.cluster_fixtures import planted_layer

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
