"""AssignModule: the greedy rule, quotas, search backends, bootstrap balancing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hudd_core import assign as A
from hudd_core import balance as B
from hudd_core.options import AssignOptions

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
    summary = A.run_assign(
        T, data, _relevance, options=AssignOptions(backend="faiss"), batch_size=16, progress=False
    )
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
    A.run_assign(
        T, data, _relevance, options=AssignOptions(backend="numpy"), batch_size=8, progress=False
    )
    expected = (T / "unsafe_set.csv").read_text()
    (T / "Assign" / "candidates.npz").unlink()
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return _relevance(x)

    with pytest.raises(KeyboardInterrupt):
        A.run_assign(
            T,
            data,
            flaky,
            options=AssignOptions(backend="numpy"),
            batch_size=8,
            save_every=1,
            progress=False,
        )
    calls["n"] = 100  # no more interruptions; count the batches of the rerun
    A.run_assign(
        T, data, flaky, options=AssignOptions(backend="numpy"), batch_size=8, progress=False
    )
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
        T,
        data,
        _relevance,
        options=AssignOptions(backend="numpy"),
        input_shape=(1, 32, 32),
        batch_size=8,
        progress=False,
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


# --- selection options: --quota, --distance-threshold, --rank -----------------------------


def test_uniform_quota_splits_the_same_budget_evenly():
    # mass: ceil(2 x 5) = 10, 4, 6 -> 20 in all; uniform: 20 / 3 = 6 rest 2, the two extra
    # images to the largest error masses (clusters 1 and 3); the singleton 4 stays out.
    assert A.cluster_quotas({1: 5, 2: 2, 3: 3, 4: 1}) == {1: 10, 2: 4, 3: 6}
    assert A.cluster_quotas({1: 5, 2: 2, 3: 3, 4: 1}, rule="uniform") == {1: 7, 2: 6, 3: 7}
    assert A.cluster_quotas({1: 2, 2: 2}, factor=1.5, rule="uniform") == {1: 3, 2: 3}
    # On the hand-made distances, sizes {1: 2, 2: 4} at factor 1: mass {1: 2, 2: 4} takes
    # img0, img1 for cluster 1, img4, img3 for 2, then img2 at order 1 for 2 (room left);
    # uniform {1: 3, 2: 3} gives img2 to cluster 1 at order 0.
    mass = A.cluster_quotas({1: 2, 2: 4}, factor=1.0)
    uniform = A.cluster_quotas({1: 2, 2: 4}, factor=1.0, rule="uniform")
    assert (mass, uniform) == ({1: 2, 2: 4}, {1: 3, 2: 3})
    assert select(mass) == {0: (1, 0), 1: (1, 0), 4: (2, 0), 3: (2, 0), 2: (2, 1)}
    assert select(uniform) == {0: (1, 0), 1: (1, 0), 2: (1, 0), 4: (2, 0), 3: (2, 0)}
    with pytest.raises(ValueError, match="--quota: 'equal' is not one of mass, uniform"):
        A.cluster_quotas({1: 2}, rule="equal")


# 1-D "heatmaps": cluster 1 at 0, 1, 3 (the member at 3 is 2 from its nearest: tau = 2),
# cluster 2 at 10, 10.5 (tau = 0.5).
MEMBERS = np.array([[0.0], [1.0], [3.0], [10.0], [10.5]], dtype=np.float32)
MEMBER_LABELS = np.array([1, 1, 1, 2, 2])
POOL = np.array([[2.5], [4.9], [5.5], [9.7], [12.0]], dtype=np.float32)


def test_paper_threshold_keeps_only_images_as_close_as_the_members():
    assert A.member_thresholds(MEMBERS, MEMBER_LABELS) == pytest.approx({1: 2.0, 2: 0.5})
    d = A.nearest_member_reference(POOL, MEMBERS, MEMBER_LABELS, np.array([1, 2]))
    idx, top = A.top_candidates(d, 2)
    clusters = np.array([1, 2])[idx]
    quotas = {1: 10, 2: 10}
    everyone = A.greedy_select(clusters, top, quotas)
    assert sorted(everyone.image.tolist()) == [0, 1, 2, 3, 4]
    kept = A.greedy_select(A.beyond_thresholds(clusters, top, {1: 2.0, 2: 0.5}), top, quotas)
    # 2.5 -> 1 (0.5), 4.9 -> 1 (1.9), 9.7 -> 2 (0.3); 5.5 is 2.5 from cluster 1 and
    # 4.5 from cluster 2, 12 is 1.5 from cluster 2: both beyond the thresholds.
    got = dict(zip(kept.image.tolist(), kept.cluster.tolist(), strict=True))
    assert got == {0: 1, 1: 1, 3: 2}


def test_member_thresholds_equal_a_brute_force_loop():
    rng = np.random.default_rng(3)
    members = rng.standard_normal((23, 6)).astype(np.float32)
    labels = rng.integers(1, 4, size=23)
    labels[0] = 9  # a cluster with one member: threshold 0
    expected = {}
    for c in np.unique(labels):
        rows = [m for m, k in zip(members, labels, strict=True) if k == c]
        nearest = [
            min(float(np.linalg.norm(a.astype(float) - b)) for j, b in enumerate(rows) if j != i)
            for i, a in enumerate(rows)
        ] if len(rows) > 1 else [0.0]  # fmt: skip
        expected[int(c)] = max(nearest)
    got = A.member_thresholds(members, labels, block=5)  # several row blocks
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_uncertainty_rank_takes_the_most_uncertain_first():
    entropy = np.array([0.1, 0.2, 0.9, 0.5, 0.3])
    idx, d = A.top_candidates(DIST, 2)
    sel = A.greedy_select(CLUSTERS[idx], d, {1: 2, 2: 1}, priority=-entropy)
    got = dict(zip(sel.image.tolist(), sel.cluster.tolist(), strict=True))
    # Cluster 1's order-0 candidates img0..img2: the two most uncertain, img2 and img1
    # (by distance it would be img0 and img1); cluster 2's img3/img4: img3 (0.5 > 0.3).
    assert got == {2: 1, 1: 1, 3: 2}
    logits = torch.tensor([[0.0, 0.0], [50.0, 0.0], [1.0, 2.0]])
    p = np.array([0.5, 0.5]), np.array([1.0, 0.0]), np.exp([1, 2]) / np.exp([1, 2]).sum()
    expected = [-(q[q > 0] * np.log(q[q > 0])).sum() for q in p]
    np.testing.assert_allclose(A.softmax_entropy(logits), expected, atol=1e-6)


def test_selection_options_are_checked():
    with pytest.raises(ValueError, match="--rank: 'size' is not one of distance, uncertainty"):
        A.check_selection("mass", "none", "size")
    with pytest.raises(ValueError, match="--distance-threshold: 'near' is not one of"):
        A.check_selection("mass", "near", "distance")
    with pytest.raises(ValueError, match="keypoint regressor has no softmax"):
        A.check_rank("uncertainty", {1: 0})
    A.check_rank("uncertainty", None)
    A.check_rank("distance", {1: 0})


def _with_logits(x):
    """Relevance and stand-in logits of one pass: 3 "classes" from the image means."""
    rel = _relevance(x)
    return rel, torch.stack([rel[:, :8].mean(1), rel[:, 8:16].mean(1), rel[:, 16:].mean(1)], 1) * 40


def test_run_assign_options_select_what_an_independent_computation_selects(assign_case):
    import csv

    from hudd_core.data.datasets import ImageFiles

    data, T, X, labels = assign_case
    pool = ImageFiles(data / "ImprovementSet")
    Q = torch.cat([_relevance(pool[i][0][None]) for i in range(len(pool))]).numpy()

    def chosen() -> dict[str, int]:
        rows = csv.DictReader(open(T / "unsafe_set.csv"))
        return {r["image"]: int(r["cluster"]) for r in rows}

    # --distance-threshold paper, on tight RCCs (clusters of 4 nearby test images) so
    # that the rule cuts: every selected image within its cluster's threshold, the
    # thresholds from a plain loop over the member heatmaps.
    rcc = (T / "clusters.csv").read_text()
    ids = [line.split(",")[0] for line in rcc.splitlines()[1:]]
    first = np.linalg.norm(X - X[0], axis=1).argsort()[:4]
    rest = np.setdiff1d(np.arange(len(X)), first)
    second = rest[np.linalg.norm(X[rest] - X[rest[0]], axis=1).argsort()[:4]]
    tight = {**{int(i): 1 for i in first}, **{int(i): 2 for i in second}}
    (T / "clusters.csv").write_text("image,cluster,layer\n" + "".join(
        f"{ids[i]},{c},features.3\n" for i, c in tight.items()))  # fmt: skip
    s = A.run_assign(T, data, _relevance,
                     options=AssignOptions(backend="numpy", distance_threshold="paper"),
                     progress=False)  # fmt: skip
    tau = {}
    for c in (1, 2):
        m = X[[i for i, k in tight.items() if k == c]].astype(np.float64)
        full = np.sqrt(((m[:, None] - m[None]) ** 2).sum(-1)) + np.diag([np.inf] * len(m))
        tau[c] = full.min(1).max()
    assert s["thresholds"] == pytest.approx(tau, rel=1e-5)
    members = np.array(list(tight)), np.array(list(tight.values()))
    d = A.nearest_member_reference(Q, X[members[0]], members[1], np.array([1, 2]))
    within = {pool.ids[i] for i in range(len(pool)) if any(d[i, c - 1] <= tau[c] for c in tau)}
    got = chosen()
    assert set(got) <= within and got and len(within) < len(pool)  # the rule does cut
    for img, c in got.items():
        assert d[pool.ids.index(img), c - 1] <= tau[c] * (1 + 1e-5)
    (T / "clusters.csv").write_text(rcc)
    keep = labels != 4
    d = A.nearest_member_reference(Q, X[keep], labels[keep], np.array([1, 2, 3]))
    # --quota uniform with quota factor 0.5: quotas ceil(6, 5, 3.5) = 15 -> 5 each.
    s = A.run_assign(T, data, _relevance,
                     options=AssignOptions(backend="numpy", quota="uniform", quota_factor=0.5),
                     progress=False)  # fmt: skip
    assert s["quotas"] == {1: 5, 2: 5, 3: 5} and sum(s["per_cluster"].values()) == 15
    # --rank uncertainty: per cluster with enough order-0 candidates, the `quota` most
    # uncertain of the images whose closest cluster it is.
    s = A.run_assign(T, data, _with_logits,
                     options=AssignOptions(backend="numpy", quota_factor=0.5, rank="uncertainty"),
                     progress=False)  # fmt: skip
    logits = torch.cat([_with_logits(pool[i][0][None])[1] for i in range(len(pool))]).double()
    p = torch.softmax(logits, 1).numpy()
    entropy = -(p * np.log(p)).sum(1)
    got = chosen()
    closest = d.argmin(1) + 1
    checked = 0
    for c, q in s["quotas"].items():
        mine = np.flatnonzero(closest == c)
        if len(mine) >= q:
            want = {pool.ids[i] for i in mine[np.argsort(-entropy[mine], kind="stable")[:q]]}
            assert {img for img, k in got.items() if k == c} == want
            checked += 1
    assert checked >= 1


def test_selection_options_reuse_or_recompute_the_candidates(assign_case):
    data, T, _, _ = assign_case
    calls = {"n": 0}

    def counted(x):
        calls["n"] += 1
        return _with_logits(x)

    A.run_assign(
        T, data, counted, options=AssignOptions(backend="numpy"), batch_size=25, progress=False
    )
    reference = (T / "unsafe_set.csv").read_text()
    assert calls["n"] == 2
    # quota and threshold act on the saved candidates: no relevance pass, another selection
    other = AssignOptions(backend="numpy", quota="uniform", distance_threshold="paper")
    A.run_assign(T, data, counted, options=other, batch_size=25, progress=False)
    assert calls["n"] == 2 and (T / "unsafe_set.csv").read_text() != reference
    # rank uncertainty needs the entropy: a new signature, the candidates are recomputed
    A.run_assign(T, data, counted, options=AssignOptions(backend="numpy", rank="uncertainty"),
                 batch_size=25, progress=False)  # fmt: skip
    assert calls["n"] == 4
    A.run_assign(
        T, data, counted, options=AssignOptions(backend="numpy"), batch_size=25, progress=False
    )
    assert calls["n"] == 6 and (T / "unsafe_set.csv").read_text() == reference
    with pytest.raises(ValueError, match="returned no model outputs"):
        (T / "Assign" / "candidates.npz").unlink()
        A.run_assign(
            T,
            data,
            _relevance,
            options=AssignOptions(backend="numpy", rank="uncertainty"),
            progress=False,
        )


def test_hudd_run_checks_the_selection_and_retraining_options():
    from hudd_core.config import load_config
    from hudd_core.pipeline import SPECS, validate

    validate(load_config(None, {"quota": "uniform", "distance_threshold": "paper",
                                "rank": "uncertainty", "freeze": "features",
                                "bootstrap": "none", "validation": 0.2}))  # fmt: skip
    bad = {"rank": "size", "quota": "equal", "distance_threshold": "near",
           "freeze": "all", "bootstrap": "twice"}  # fmt: skip
    for key, value in bad.items():
        with pytest.raises(ValueError, match=f"--{key.replace('_', '-')}: '{value}' is not one"):
            validate(load_config(None, {key: value}))
    with pytest.raises(ValueError, match=r"--validation must be in \[0, 1\)"):
        validate(load_config(None, {"validation": 1.5}))
    # a changed option reruns its step (the step's fingerprint covers it)
    assert {"quota", "distance_threshold", "rank"} <= set(SPECS["assign"].options)
    assert {"quota", "freeze", "bootstrap", "validation"} <= set(SPECS["retrain"].options)
