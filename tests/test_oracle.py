"""The label oracle of benchmarks/bench_quality.py (hudd_testkit.oracle): a hand-made case
whose winner and regret are known by hand, the inspection budget, the tie-breaks, the
miscellaneous group, and the search spaces it is run over (a catalogue method's own
candidates, which hold the method's pick; issue 23's broad space)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hudd_core.cluster import methods as cm
from hudd_testkit import oracle as orc

# 30 error images: 10 of planted cause a, 10 of b, 10 of no cause.
CAUSES = ["a"] * 10 + ["b"] * 10 + ["none"] * 10


def _case() -> dict[str, orc.Candidate]:
    """Four partitions of the 30 images (coverage and inspection worked out by hand)."""
    both = np.repeat([1, 2, 3], [10, 8, 12])  # c3: b's last 2 with the 10 of no cause
    return {
        # a and b mixed (purity 0.5): nothing covered; inspect (5 + 5) / 30
        "coarse": orc.Candidate("coarse", np.repeat([1, 2], [20, 10])),
        # a alone (1.0), b with the no-cause images (0.5): 1 covered; inspect 10 / 30
        "a-only": orc.Candidate("a-only", np.repeat([1, 2], [10, 20])),
        # a 1.0, b 0.8 (8 of 10 pure): 2 covered, mean 0.9; inspect 15 / 30
        "both": orc.Candidate("both", both),
        # pairs: all pure, 2 covered, mean 1.0; inspect 30 / 30
        "fine": orc.Candidate("fine", np.repeat(np.arange(1, 16), 2)),
    }


def test_oracle_on_a_hand_made_case():
    cands = _case()
    res = orc.oracle(cands.values(), CAUSES, budget=0.5)
    assert res.best.name == "both"
    assert (res.covered, res.coverage) == (2, {"a": 1.0, "b": 0.8})
    assert res.best.inspect == pytest.approx(0.5)
    assert [s.name for s in res.considered] == list(cands)  # all scored, in order
    by_name = {s.name: s for s in res.considered}
    assert [by_name[n].covered for n in cands] == [0, 1, 2, 2]
    assert by_name["coarse"].coverage == {"a": 0.0, "b": 0.0}
    assert by_name["a-only"].inspect == pytest.approx(10 / 30)
    # a method that chose "coarse" (0 covered) has regret 2, one that chose "a-only" 1
    assert res.covered - by_name["coarse"].covered == 2
    assert res.covered - by_name["a-only"].covered == 1


def test_the_budget_excludes_a_too_fine_candidate():
    cands = _case()
    # without a budget the pairs win (same causes covered as "both", higher mean)
    assert orc.oracle(cands.values(), CAUSES, budget=1.0).best.name == "fine"
    res = orc.oracle(cands.values(), CAUSES, budget=0.5)
    fine = next(s for s in res.considered if s.name == "fine")
    assert not fine.within and res.best.name == "both"
    assert orc.oracle(cands.values(), CAUSES, budget=0.4).best.name == "a-only"
    none_fits = orc.oracle([cands["fine"]], CAUSES, budget=0.5)
    assert none_fits.best is None and none_fits.covered == 0 and none_fits.coverage == {}


def test_tie_breaks_mean_coverage_then_inspection_then_order():
    # same covered causes (1): the higher mean coverage wins
    half_b = orc.Candidate("part-b", np.repeat([1, 2, 3], [10, 2, 18]))  # a 1.0, b 0.2
    a_only = _case()["a-only"]  # a 1.0, b 0.0
    assert orc.oracle([a_only, half_b], CAUSES, 1.0).best.name == "part-b"
    # same covered and mean coverage: the lower inspection share wins
    split_none = orc.Candidate("split-none", np.repeat([1, 2, 3], [10, 10, 10]))
    b_with_none = orc.Candidate("split-none-finer", np.repeat([1, 2, 3, 4], [10, 10, 5, 5]))
    # both: a 1.0, b 1.0; inspect 15/30 against 20/30
    res = orc.oracle([b_with_none, split_none], CAUSES, 1.0)
    assert res.best.name == "split-none"
    # a full tie: the first given
    twin = orc.Candidate("twin", split_none.labels.copy())
    assert orc.oracle([twin, split_none], CAUSES, 1.0).best.name == "twin"


def test_purity_threshold_singletons_noise_and_the_miscellaneous_group():
    causes = ["a"] * 7 + ["b"] * 3 + ["a"]
    labels = np.array([1] * 10 + [2])  # 7 of 10 is exactly the purity; a's 11th alone
    assert orc.coverage(causes, labels) == {"a": 7 / 8, "b": 0.0}
    # the same cluster as noise, or as the miscellaneous group, covers nothing
    assert orc.coverage(causes, np.where(labels == 1, 0, labels)) == {"a": 0.0, "b": 0.0}
    misc = orc.Candidate("misc", labels, misc=1)
    scored = orc.score(misc, causes, budget=1.0)
    assert scored.covered == 0
    assert scored.inspect == pytest.approx(6 / 11)  # the misc group is still inspected
    with pytest.raises(ValueError, match="11 planted labels for 3"):
        orc.coverage(causes, np.array([1, 1, 2]))


def _layers(seed: int = 0) -> dict[str, np.ndarray]:
    """Two layers of the same 60 images: three groups along orthogonal directions."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1, 2], [25, 20, 15])
    return {
        name: (6.0 * np.eye(dim)[truth] + rng.normal(0, 0.5, (60, dim))).astype(np.float32)
        for name, dim in (("conv", 12), ("conv2", 16))
    }


@pytest.mark.parametrize("name", ["hdbscan", "ward-pca", "hdbscan-budget", "concat"])
def test_a_methods_own_candidates_hold_its_pick(name):
    method = cm.METHODS[name]
    layers = _layers()
    best, among = cm.search(layers, method, seed=0)
    per_layer = 1 if method.combine != "none" else len(layers)
    assert len(among) == per_layer * len(cm.GRIDS[method.clusterer])
    assert any(np.array_equal(best.labels, c.labels) for c in among)
    assert all(
        c.score == r["score"] for c, r in zip(among, best.candidates[-len(among) :], strict=True)
    )
    again = cm.cluster_features(layers, method, seed=0)  # the same pick, as before
    assert np.array_equal(again.labels, best.labels) and again.layer == best.layer


def test_the_oracle_over_a_methods_candidates_bounds_its_pick():
    layers = _layers()
    causes = np.repeat(["a", "b", "none"], [25, 20, 15]).tolist()
    best, among = cm.search(layers, cm.METHODS["hdbscan"], seed=0)
    space = [orc.Candidate(f"{c.layer} {c.share}", c.labels) for c in among]
    res = orc.oracle(space, causes, budget=1.0)
    assert res.covered == 2
    assert res.covered >= orc.score(orc.Candidate("pick", best.labels), causes).covered


def test_broad_candidates_cover_the_space_and_are_deterministic():
    layers = _layers()
    feats = {"conv": orc.unit_rows(layers["conv"]), "pixels": layers["conv2"]}
    cands = orc.broad_candidates(feats, seed=0)
    # per features and dims: HDBSCAN mcs 3..20 (60 >= 2 * 20) and Ward k 4..20
    assert len(cands) == 2 * 2 * (18 + 17)
    assert cands[0].name == "conv pca10 hdbscan mcs=3"
    assert cands[-1].name == "pixels pca20 ward k=20"
    assert all(c.labels.min() >= orc.NOISE and len(c.labels) == 60 for c in cands)
    again = orc.broad_candidates(feats, seed=0)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(cands, again, strict=True))
    causes = np.repeat(["a", "b", "c"], [25, 20, 15]).tolist()
    res = orc.oracle(cands, causes, budget=0.3)  # 3 clusters of 60: 15 images inspected
    assert res.covered == 3 and res.best.inspect <= 0.3


def test_the_oracle_agrees_with_the_benchmarks_own_figures(monkeypatch):
    """Two implementations of the README's definitions: the oracle's and bench_quality's
    (cause_scores, hudd_core's inspect_share), on random partitions with noise."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_quality as bq

    from hudd_core.cluster.labels import inspect_share

    rng = np.random.default_rng(0)
    for _ in range(20):
        causes = rng.choice(["a", "b", "c", "none"], size=80, p=[0.3, 0.2, 0.1, 0.4]).tolist()
        labels = rng.integers(0, rng.integers(2, 30), size=80)
        labels[np.argsort(np.array(causes))[: rng.integers(0, 60)]] = 1  # a purer cluster
        ours = orc.score(orc.Candidate("r", labels), causes)
        theirs = bq.cause_scores(causes, labels)
        assert ours.coverage == pytest.approx({c: v["coverage"] for c, v in theirs.items()})
        assert ours.covered == sum(v["coverage"] >= bq.COVERED for v in theirs.values())
        assert ours.inspect == pytest.approx(inspect_share(labels))
