"""AssignModule: the greedy rule, quotas, search backends, bootstrap balancing."""

from __future__ import annotations

import numpy as np
import pytest

from hudd_core import assign as A

# Distances of 5 improvement images to clusters 1 and 2 (hand-made example).
DIST = np.array(
    [
        [0.1, 0.2],  # img0: closest 1
        [0.2, 0.9],  # img1: closest 1
        [0.3, 0.4],  # img2: closest 1, then 2
        [0.5, 0.1],  # img3: closest 2, then 1
        [0.6, 0.05],  # img4: closest 2
    ],
    dtype=np.float32,
)
CLUSTERS = np.array([1, 2])


def select(quotas):
    idx, d = A.top_candidates(DIST, 2)
    sel = A.greedy_select(CLUSTERS[idx], d, quotas)
    return dict(zip(sel.image.tolist(), zip(sel.cluster.tolist(), sel.order.tolist(), strict=True),
                    strict=True))  # fmt: skip


def test_greedy_hand_worked_example():
    # Order 0: cluster 1 takes its two closest (img0, img1), cluster 2 its closest (img4).
    # Order 1: img2 -> 2 and img3 -> 1 find their clusters full.
    assert select({1: 2, 2: 1}) == {0: (1, 0), 1: (1, 0), 4: (2, 0)}
    # With room in cluster 2, order 0 fills it with img4 and img3; img2 has no room left.
    assert select({1: 2, 2: 2}) == {0: (1, 0), 1: (1, 0), 4: (2, 0), 3: (2, 0)}
    # Cluster 1 with room for 4: order 0 gives it img0..img2; order 1 brings img3 (0.5).
    assert select({1: 4, 2: 1}) == {0: (1, 0), 1: (1, 0), 2: (1, 0), 4: (2, 0), 3: (1, 1)}


def test_greedy_one_cluster_per_image_and_skipped_clusters():
    # Cluster 2 is a singleton: no quota, so nobody is assigned to it.
    got = select(A.cluster_quotas({1: 2, 2: 1}))
    assert got == {0: (1, 0), 1: (1, 0), 2: (1, 0), 3: (1, 1)}
    assert len(got) == len(set(got))


def test_quotas():
    assert A.cluster_quotas({1: 3, 2: 1, 7: 10}) == {1: 6, 7: 20}
    assert A.cluster_quotas({1: 3}, factor=1.5) == {1: 5}


def test_top_candidates_sorted():
    rng = np.random.default_rng(0)
    d = rng.random((50, 9)).astype(np.float32)
    idx, top = A.top_candidates(d, 4)
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1)[:, :4])
    np.testing.assert_array_equal(top, np.sort(d, axis=1)[:, :4])


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_search_backends_equal_numpy(backend):
    rng = np.random.default_rng(1)
    members = rng.standard_normal((60, 40)).astype(np.float32)
    labels = rng.integers(1, 6, size=60)
    queries = rng.standard_normal((33, 40)).astype(np.float32)
    ref = A.NearestClusterIndex(members, labels, backend="numpy").search(queries)
    got = A.NearestClusterIndex(members, labels, backend=backend).search(queries)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # The whole selection is the same too.
    quotas = A.cluster_quotas(dict(zip(*np.unique(labels, return_counts=True), strict=True)))
    clusters = np.unique(labels)
    sels = []
    for d in (ref, got):
        idx, top = A.top_candidates(d, 3)
        sels.append(A.greedy_select(clusters[idx], top, quotas))
    np.testing.assert_array_equal(sels[0].image, sels[1].image)
    np.testing.assert_array_equal(sels[0].cluster, sels[1].cluster)


def test_search_rejects_bad_shapes():
    index = A.NearestClusterIndex(np.zeros((4, 3), np.float32), np.array([1, 1, 2, 2]), "numpy")
    with pytest.raises(ValueError, match=r"B × 3"):
        index.search(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="backend"):
        A.NearestClusterIndex(np.zeros((4, 3), np.float32), np.array([1, 1, 2, 2]), "gpu!")
    bad = np.zeros((4, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        A.NearestClusterIndex(bad, np.array([1, 1, 2, 2]), "numpy")


def test_bootstrap_sizes_weights_and_seed():
    clusters = np.array([1] * 3 + [2] * 1 + [3] * 8)
    dist = np.r_[0.1, 0.2, 10.0, 0.5, np.linspace(0.1, 1, 8)]
    idx = A.bootstrap_balance(clusters, dist, target=8, seed=3)
    counts = np.bincount(clusters[idx])
    assert counts[1:].tolist() == [8, 8, 8]
    assert set(np.flatnonzero(clusters == 1)) <= set(idx)  # originals kept
    np.testing.assert_array_equal(idx, A.bootstrap_balance(clusters, dist, 8, seed=3))
    # The far image (d=10) has weight 1 - 10/10.3: it is drawn far less often.
    many = A.bootstrap_balance(clusters[:3], dist[:3], target=3000, seed=0)
    drawn = np.bincount(many, minlength=3)
    assert drawn[2] < drawn[0] / 10
