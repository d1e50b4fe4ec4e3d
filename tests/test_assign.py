"""AssignModule: the greedy rule, quotas, search backends, bootstrap balancing."""

from __future__ import annotations

import numpy as np
import pytest

from hudd_core import assign as A
from hudd_core import balance as B

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
    return dict(
        zip(
            sel.image.tolist(),
            zip(sel.cluster.tolist(), sel.order.tolist(), strict=True),
            strict=True,
        )
    )


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
    idx = B.bootstrap_balance(clusters, dist, target=8, seed=3)
    counts = np.bincount(clusters[idx])
    assert counts[1:].tolist() == [8, 8, 8]
    assert set(np.flatnonzero(clusters == 1)) <= set(idx)  # originals kept
    np.testing.assert_array_equal(idx, B.bootstrap_balance(clusters, dist, 8, seed=3))
    # The far image (d=10) has weight 1 - 10/10.3: it is drawn far less often.
    many = B.bootstrap_balance(clusters[:3], dist[:3], target=3000, seed=0)
    drawn = np.bincount(many, minlength=3)
    assert drawn[2] < drawn[0] / 10


# --- the step over a work folder ----------------------------------------------------------


def _relevance(x):
    """A stand-in for LRP at one layer: 8x8 average-pooled images (B, 64)."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(x, 8).reshape(len(x), -1)


@pytest.fixture
def assign_case(tmp_path):
    import csv
    import json

    import torch

    from hudd_core.data.datasets import ImageFiles
    from hudd_core.data.generate import generate

    data, T = tmp_path / "DataSets", tmp_path / "T"
    generate(
        data, sizes={"TestSet": 30, "ImprovementSet": 50}, image_size=32, seed=2, progress=False
    )
    tests = ImageFiles(data / "TestSet")
    X = torch.cat([_relevance(tests[i][0][None]) for i in range(len(tests))]).numpy()
    (T / "Heatmaps").mkdir(parents=True)
    np.save(T / "Heatmaps" / "features.3.npy", X)
    (T / "Heatmaps" / "layers.json").write_text(
        json.dumps(
            {
                "complete": True,
                "layers": [{"name": "features.3", "shape": [64], "file": "features.3.npy"}],
            }
        )
    )
    with open(T / "Heatmaps" / "index.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("row", "image"), *enumerate(tests.ids)])
    labels = np.array([1] * 12 + [2] * 10 + [3] * 7 + [4])  # cluster 4: a singleton
    with open(T / "clusters.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(
            [
                ("image", "cluster", "layer"),
                *((i, c, "features.3") for i, c in zip(tests.ids, labels, strict=True)),
            ]
        )
    return data, T, X, labels


def test_run_assign_matches_exact_reference(assign_case):
    import csv

    import torch

    from hudd_core.data.datasets import ImageFiles

    data, T, X, labels = assign_case
    summary = A.run_assign(T, data, _relevance, backend="faiss", batch_size=16, progress=False)
    rows = list(csv.DictReader(open(T / "unsafe_set.csv")))
    assert summary["quotas"] == {1: 24, 2: 20, 3: 14}
    assert {int(r["cluster"]) for r in rows} <= {1, 2, 3}
    assert len({r["image"] for r in rows}) == len(rows) == summary["selected"]
    # The same selection from an exact NumPy computation over all improvement images.
    pool = ImageFiles(data / "ImprovementSet")
    Q = torch.cat([_relevance(pool[i][0][None]) for i in range(len(pool))]).numpy()
    keep = labels != 4
    d = A.nearest_member_reference(Q, X[keep], labels[keep], np.array([1, 2, 3]))
    idx, top = A.top_candidates(d, 3)
    sel = A.greedy_select(np.array([1, 2, 3])[idx], top, {1: 24, 2: 20, 3: 14})
    assert [r["image"] for r in rows] == [pool.ids[i] for i in sel.image]
    for c in (1, 2, 3):
        n = sum(int(r["cluster"]) == c for r in rows)
        assert len(list((T / "UnsafeSet" / str(c)).iterdir())) == n
        assert (T / "UnsafeSet" / f"Cluster_{c}.gif").is_file() == (n > 0)


def test_run_assign_resumes_after_interruption(assign_case):
    data, T, _, _ = assign_case
    A.run_assign(T, data, _relevance, backend="numpy", batch_size=8, progress=False)
    expected = (T / "unsafe_set.csv").read_text()
    (T / "Assign" / "candidates.npz").unlink()
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return _relevance(x)

    with pytest.raises(KeyboardInterrupt):
        A.run_assign(T, data, flaky, backend="numpy", batch_size=8, save_every=1, progress=False)
    calls["n"] = 100  # no more interruptions; count the batches of the rerun
    A.run_assign(T, data, flaky, backend="numpy", batch_size=8, progress=False)
    assert calls["n"] == 100 + 4  # 50 images = 7 batches, 3 were saved before the stop
    assert (T / "unsafe_set.csv").read_text() == expected


def test_run_assign_errors(assign_case):
    data, T, _, _ = assign_case
    (T / "clusters.csv").write_text("image,cluster,layer\nTestSet/a.png,1,nope\n")
    with pytest.raises(ValueError, match="every RCC has a single member"):
        A.run_assign(T, data, _relevance, progress=False)
    (T / "clusters.csv").write_text("image,cluster,layer\na.png,1,nope\nb.png,1,nope\n")
    with pytest.raises(ValueError, match=r"layer 'nope' of clusters.csv is not in"):
        A.run_assign(T, data, _relevance, progress=False)
    (T / "clusters.csv").unlink()
    with pytest.raises(FileNotFoundError, match="run `hudd cluster` first"):
        A.run_assign(T, data, _relevance, progress=False)


def test_nan_relevance_stops_assign_naming_image_and_layer_keeping_candidates(assign_case):
    data, T, _, _ = assign_case
    seen = []

    def poisoned(x):
        rel = _relevance(x)
        if sum(seen) + len(x) > 20:  # the 21st image of the pool
            rel[20 - sum(seen)] = float("nan")
        seen.append(len(x))
        return rel

    pool = sorted(p.relative_to(data).as_posix() for p in (data / "ImprovementSet").rglob("*.png"))
    with pytest.raises(ValueError, match=rf"layer features\.3 for {pool[20]}"):
        A.run_assign(T, data, poisoned, batch_size=8, save_every=100, progress=False)
    with np.load(T / "Assign" / "candidates.npz") as z:
        assert int(z["done"]) == 16  # the two whole batches before it are kept


def test_run_assign_skips_and_records_bad_images(assign_case):
    import csv

    data, T, _, _ = assign_case
    (data / "ImprovementSet" / "left" / "broken.png").write_bytes(b"")
    from PIL import Image

    Image.new("L", (40, 40)).save(data / "ImprovementSet" / "left" / "big.png")
    summary = A.run_assign(
        T, data, _relevance, input_shape=(1, 32, 32), backend="numpy", batch_size=8, progress=False
    )
    rows = list(csv.DictReader(open(T / "skipped.csv")))
    assert {r["image"] for r in rows} == {
        "ImprovementSet/left/broken.png",
        "ImprovementSet/left/big.png",
    }
    assert all(r["step"] == "assign" for r in rows)
    assert summary["skipped"] == 2 and summary["improvement_images"] == 52
    chosen = {r["image"] for r in csv.DictReader(open(T / "unsafe_set.csv"))}
    assert not chosen & {"ImprovementSet/left/broken.png", "ImprovementSet/left/big.png"}


@pytest.mark.gpu
def test_torch_backend_runs_on_cuda_and_equals_numpy():
    rng = np.random.default_rng(7)
    members = rng.standard_normal((500, 300)).astype(np.float32)
    labels = rng.integers(1, 40, size=500)
    queries = rng.standard_normal((257, 300)).astype(np.float32)
    index = A.NearestClusterIndex(members, labels, backend="torch")
    assert index._device.type == "cuda"  # the GPU path needs no faiss-gpu wheel
    ref = A.NearestClusterIndex(members, labels, backend="numpy").search(queries)
    np.testing.assert_allclose(index.search(queries), ref, rtol=1e-4, atol=1e-4)
