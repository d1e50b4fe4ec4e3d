"""Label-free selections and the margin-diverse / BADGE baselines (hudd_core.selection):
exact budgets, seeded determinism, picks worked out by hand on tiny pools."""

from __future__ import annotations

import numpy as np
import pytest

from hudd_core import selection as S

# A pool of 8 around two RCCs (columns 0, 1); row 6 is near neither (the catch-all).
DIST = np.array(
    [[0.1, 5], [0.2, 5], [0.3, 5], [5, 0.1], [5, 0.2], [5, 0.5], [9, 9], [0.4, 5]], dtype=float
)
UNC = np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.6, 0.95, 0.05])
FAR = np.arange(8) == 6
FEAT = np.array([[7, 7], [1, 1], [1, 1.1], [0, 0], [2, 0], [0.1, 0], [5, 5], [8, 8]], dtype=float)


def random_pool(n: int = 60, k: int = 4, c: int = 5, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    dist = rng.uniform(size=(n, k))
    feats = rng.normal(size=(n, d))
    return dist, probs, feats, rng.uniform(size=n) < 0.2


def every_method(dist, probs, feats, far, budget, seed):
    unc = S.uncertainty(probs, "entropy")
    quotas = np.arange(1, dist.shape[1] + 1) * 3
    out = {name: S.select(name, dist, unc, budget, features=feats, far=far, quotas=quotas).index
           for name in S.SELECTIONS}  # fmt: skip
    out["margin-diverse"] = S.margin_diverse(probs, feats, budget)
    out["badge"] = S.badge(probs, feats, budget, seed=seed)
    return out


# --- hand-computed picks -------------------------------------------------------------------
# B=4, factor 1.5: the 6 most uncertain are rows 6, 1, 2, 3, 5, 4, in groups catch-all, 0,
# 0, 1, 1, 1 → 1, 2, 3 of them → shares 4·(1, 2, 3)/6 = (0.67, 1.33, 2) → floors (0, 1, 2),
# the remaining one to the largest fraction (the catch-all): {0: 1, 1: 2, catch-all: 1}.


def test_pool_shares_by_hand():
    groups = S.nearest_groups(DIST, FAR)
    assert groups.tolist() == [0, 0, 0, 1, 1, 1, S.CATCH_ALL, 0]
    assert S.pool_shares(groups, UNC, 4, factor=1.5) == {S.CATCH_ALL: 1, 0: 1, 1: 2}


def test_pool_uncertain_by_hand():
    # group 0 (rows 0, 1, 2, 7): the most uncertain is 1; group 1 (3, 4, 5): 3 (.7), 5 (.6)
    picks = S.select("pool-uncertain", DIST, UNC, 4, far=FAR, factor=1.5)
    assert picks.index.tolist() == [1, 3, 5, 6]
    assert picks.group.tolist() == [0, 1, 1, S.CATCH_ALL]


def test_pool_quota_by_hand():
    # the same shares, closest first: group 0 → row 0 (0.1); group 1 → rows 3 (0.1), 4 (0.2)
    picks = S.select("pool-quota", DIST, UNC, 4, far=FAR, factor=1.5)
    assert picks.index.tolist() == [0, 3, 4, 6]


def test_pool_diverse_by_hand():
    # group 1's uncertain rows by uncertainty: 3 (0, 0), 5 (0.1, 0), 4 (2, 0); from 3 the
    # farthest is 4, not the near-duplicate 5
    picks = S.select("pool-diverse", DIST, UNC, 4, features=FEAT, far=FAR, factor=1.5)
    assert picks.index.tolist() == [1, 3, 4, 6]


def test_no_catch_all_without_far():
    # row 6 then goes to column 0 (tie: lower column); top 6 → groups 0,0,0,1,1,1 → 2 + 2
    picks = S.select("pool-uncertain", DIST, UNC, 4, factor=1.5)
    assert picks.index.tolist() == [6, 1, 3, 5]


def test_quota_diverse_by_hand():
    # no catch-all: row 6 joins column 0 → groups {0, 1, 2, 6, 7} and {3, 4, 5}
    # B=4, quotas (1, 3): shares 1 and 3; group 0 → its closest (row 0); group 1 → its
    # 3 closest (3, 4, 5) in k-center order from the closest: 3, 4 (2 away), 5
    quotas = np.array([1, 3])
    picks = S.select("quota-diverse", DIST, UNC, 4, features=FEAT, quotas=quotas)
    assert picks.index.tolist() == [0, 3, 4, 5]
    # B=3: 3·(1, 3)/4 = (0.75, 2.25) → (1, 2); group 1 → 3, then 4 (not 5, 0.1 from 3)
    picks = S.select("quota-diverse", DIST, UNC, 3, features=FEAT, quotas=quotas, far=FAR)
    assert picks.index.tolist() == [0, 3, 4]  # far is no catch-all here


def test_pool_borda_by_hand():
    # uncertainty ranks (UNC, highest first): row 6 → 0, 1 → 1, 2 → 2, 3 → 3, 5 → 4,
    # 4 → 5, 0 → 6, 7 → 7; distance ranks (nearest RCC, smallest first; 0.1 twice → 0):
    # 0, 3 → 0, 1, 4 → 2, 2 → 4, 7 → 5, 5 → 6, 6 → 7; sums: 0: 6, 1: 3, 2: 6, 3: 3, 4: 7,
    # 5: 10, 6: 7, 7: 12 → 1 and 3 (3; 1 more uncertain), then 2 (6; .8 beats row 0's .1)
    picks = S.select("pool-borda", DIST, UNC, 3, far=FAR)
    assert picks.index.tolist() == [1, 3, 2]
    assert picks.group.tolist() == [0, 1, 0]  # its nearest RCC (no catch-all share)


def test_quota_shares_capped_by_the_pool():
    # B=7, quotas (10, 1): 7·(10, 1)/11 = (6.36, 0.64) → (6, 1), but group 0 holds 5 rows:
    # the sixth goes to group 1
    picks = S.select("quota-diverse", DIST, UNC, 7, features=FEAT, quotas=np.array([10, 1]))
    assert sorted(picks.index[picks.group == 0].tolist()) == [0, 1, 2, 6, 7]
    assert len(picks.index) == 7 and (picks.group == 1).sum() == 2


def test_margin_diverse_by_hand():
    probs = np.array([[0.5, 0.5], [0.52, 0.48], [0.6, 0.4], [0.95, 0.05], [0.55, 0.45]])
    feats = np.array([[0, 0], [0.1, 0], [3, 4], [10, 10], [0, 1]], dtype=float)
    # margins 0, .04, .2, .9, .1 → by uncertainty rows 0, 1, 4, 2, 3
    # B=2: the top 4 (0, 1, 4, 2); from 0 the farthest is 2 (distance 5)
    assert S.margin_diverse(probs, feats, 2).tolist() == [0, 2]
    # B=3: all 5; from 0 the farthest is 3 (14.1), then 2 (min(5, 9.2) = 5 > 1 > 0.1)
    assert S.margin_diverse(probs, feats, 3).tolist() == [0, 3, 2]


def test_badge_by_hand():
    # embeddings (p − e_ŷ) ⊗ h: rows 0 and 1 are [-1, 1] (norm² 2, the largest), row 2 is
    # [0.5, -0.5]: the first pick is row 0 (ties: lower), row 1 is at distance 0, so the
    # second is row 2 whatever the seed, and the third the only one left
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    feats = np.array([[2.0], [2.0], [-1.0]])
    for seed in range(5):
        assert S.badge(probs, feats, 2, seed=seed).tolist() == [0, 2]
        assert S.badge(probs, feats, 3, seed=seed).tolist() == [0, 2, 1]


def test_badge_draws_by_squared_distance():
    # row 0: [-1, 1] (first); row 1: 0, at squared distance 2; row 2: [0.5, -0.5], at 4.5:
    # the second pick is row 1 with probability 2 / 6.5
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    feats = np.array([[2.0], [1.0], [-1.0]])
    seconds = [S.badge(probs, feats, 2, seed=s)[1] for s in range(3000)]
    assert abs(np.mean(np.array(seconds) == 1) - 2 / 6.5) < 0.03


def test_gradient_factors_equal_the_explicit_embedding():
    _, probs, feats, _ = random_pool(n=7, c=3, d=4)
    a, h = S.gradient_factors(probs, feats)
    g = (a[:, :, None] * h[:, None, :]).reshape(7, -1)
    onehot = np.eye(3)[probs.argmax(axis=1)]
    explicit = ((probs - onehot)[:, :, None] * feats[:, None, :]).reshape(7, -1)
    np.testing.assert_allclose(g, explicit)


# --- every method: the budget, distinct rows, determinism --------------------------------


@pytest.mark.parametrize("budget", [0, 1, 7, 30, 60, 80])
def test_exactly_budget_distinct(budget):
    dist, probs, feats, far = random_pool()
    for name, idx in every_method(dist, probs, feats, far, budget, seed=3).items():
        assert len(idx) == min(budget, 60), name
        assert len(np.unique(idx)) == len(idx), name
        assert idx.min(initial=0) >= 0 and idx.max(initial=0) < 60, name


def test_seeded_determinism():
    dist, probs, feats, far = random_pool(seed=4)
    first = every_method(dist, probs, feats, far, 12, seed=7)
    again = every_method(dist, probs, feats, far, 12, seed=7)
    for name in first:
        assert first[name].tolist() == again[name].tolist(), name
    others = [S.badge(probs, feats, 12, seed=s).tolist() for s in range(4)]
    assert len({tuple(o) for o in others}) > 1  # the seed matters to BADGE's draws


def test_budget_checks():
    with pytest.raises(ValueError, match="at least 0"):
        S.select("pool-uncertain", DIST, UNC, -1)
    with pytest.raises(ValueError, match="unknown selection"):
        S.select("hudd", DIST, UNC, 2)
    with pytest.raises(ValueError, match="features"):
        S.select("pool-diverse", DIST, UNC, 2)
    with pytest.raises(ValueError, match="one quota per RCC"):
        S.select("quota-diverse", DIST, UNC, 2, features=FEAT)


def test_feature_hook_gives_the_heads_input():
    import torch

    from hudd_core.models import alexnet
    from hudd_core.models.embedding import FeatureHook, last_linear

    torch.manual_seed(0)
    net = alexnet(3, input_size=32).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad(), FeatureHook(net) as hook:
        logits = net(x)
    feats = hook.take()
    assert feats.shape == (4, last_linear(net).in_features) and hook.features().shape[0] == 0
    with torch.no_grad():
        again = last_linear(net)(torch.as_tensor(feats))
    torch.testing.assert_close(again, logits, rtol=1e-5, atol=1e-5)
    net(x)  # the hook is removed on exit
    assert hook.features().shape[0] == 0


# --- `hudd assign --select` through the pipeline -------------------------------------------


def _unsafe_rows(T) -> list[tuple[str, int]]:
    import csv

    with open(T / "unsafe_set.csv", newline="") as fh:
        return [(r["image"], int(r["cluster"])) for r in csv.DictReader(fh)]


def test_assign_select_picks_the_budget_of_the_paper_rule(model_workdir):
    import torch

    from hudd_core.assign import read_rccs
    from hudd_core.data.datasets import ImageFiles
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_testkit.assign_fixtures import make_assign_case, run_assign

    w, _ = make_assign_case(model_workdir)
    paper = run_assign(w, w.T, "local")
    budget = paper["selected"]
    assert "select" not in paper and budget > 0
    pool = ImageFiles(w.data / "ImprovementSet")
    for name in ("recommended", *S.SELECTIONS, "pool-borda"):  # the last: no catch-all
        got = run_assign(w, w.T, "local", select=name)
        rows = _unsafe_rows(w.T)
        assert got["select"] == S.resolve_select(name) and got["selected"] == budget == len(rows)
        assert len({img for img, _ in rows}) == budget  # distinct images
        assert {c for _, c in rows} <= {0, *got["quotas"]}  # an RCC, or the catch-all (0)
    # the saved embedding is the model's softmax on the pool images, in pool order
    z = np.load(w.T / "Assign" / "candidates.npz")
    model, _ = load_checkpoint(w.pt)
    first = [int(i) for i in z["image_idx"][:5]]
    with torch.no_grad():
        logits = model.eval()(torch.stack([pool[i][0] for i in first]))
    np.testing.assert_allclose(z["probs"][:5], torch.softmax(logits, 1).numpy(), atol=1e-5)
    # the last run's rows are what selection.select picks from those arrays
    quotas = got["quotas"]
    clusters = np.array(sorted(quotas))
    D = S.candidate_matrix(z["cluster_idx"], z["distance"], len(clusters))
    q = np.array([quotas[c] for c in clusters])
    unc = S.uncertainty(z["probs"], "entropy")
    want = S.select(got["select"], D, unc, budget, features=z["features"], quotas=q)
    ids = [pool.ids[int(z["image_idx"][i])] for i in want.index]
    assert [img for img, _ in rows] == ids
    assert read_rccs(w.T)[0]  # the RCCs are untouched
    # the retraining's pool (the baselines'): its features are the head's input
    from hudd_core.baselines import improvement_pool
    from hudd_core.models.embedding import last_linear
    from hudd_core.options import NO_PREPROCESS

    shared = improvement_pool(model, w.data, w.meta, NO_PREPROCESS, "cpu", 16)
    assert shared.features.shape == (len(shared.images), last_linear(model).in_features)
    with torch.no_grad():
        head = last_linear(model)(torch.as_tensor(shared.features)).double()
    np.testing.assert_allclose(shared.probs, torch.softmax(head, 1).numpy(), atol=1e-5)


def test_assign_select_reads_no_label(model_workdir, monkeypatch):
    """The pool's labels unreadable (every labelled reader raises): --select still
    selects, since nothing reads a label before an image is selected."""
    from hudd_core.data import datasets
    from hudd_testkit.assign_fixtures import make_assign_case, run_assign

    w, _ = make_assign_case(model_workdir)

    def unreadable(*_a, **_k):
        raise AssertionError("a label was read before selection")

    monkeypatch.setattr(datasets.ImageSet, "__init__", unreadable)
    monkeypatch.setattr(datasets.LabelledImages, "__init__", unreadable)
    monkeypatch.setattr(datasets, "read_labels", unreadable)
    for name in ("pool-diverse", "quota-diverse"):
        got = run_assign(w, w.T, "local", select=name)
        assert got["selected"] == len(_unsafe_rows(w.T)) > 0


def test_select_choices_match_the_options_table():
    from hudd_core.options import choices

    assert choices("select") == (S.PAPER, *S.SELECTIONS, "recommended")
    assert S.RECOMMENDED in S.SELECTIONS


class _Unlabelled:
    """A pool's images whose labels cannot be read: only positions, a subset of them."""

    def __init__(self, n: int, rows=None) -> None:
        self.n, self.rows = n, np.arange(n) if rows is None else np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx):
        return _Unlabelled(self.n, self.rows[np.asarray(idx, dtype=np.int64)])

    @property
    def targets(self):
        raise AssertionError("a label was read before selection")


@pytest.mark.parametrize("name", ["margin-diverse", "badge"])
def test_the_diverse_baselines_in_baseline_sample(name):
    from hudd_core.baselines import BASELINES, Pool, baseline_names, baseline_sample

    assert name in BASELINES and baseline_names([name]) == [name]
    _, probs, feats, _ = random_pool(n=40)
    pool = Pool(_Unlabelled(40), np.ones(40, bool), probs, feats)
    added, kept = baseline_sample(name, pool, budget=10, samples=25, seed=3)
    direct = (S.margin_diverse(probs, feats, 10) if name == "margin-diverse"
              else S.badge(probs, feats, 10, seed=3))  # fmt: skip
    assert kept == 10 and len(added) == 25
    assert added.rows[:10].tolist() == direct.tolist()  # the picks, then resampled from them
    assert set(added.rows[10:].tolist()) <= set(direct.tolist())
    with pytest.raises(ValueError, match="softmax and features"):
        baseline_sample(name, Pool(_Unlabelled(40), np.ones(40, bool), probs), 10, 25, 0)


def test_the_report_names_the_selection(tmp_path):
    import json

    from hudd_core.report.gather import Links, assignment
    from hudd_core.report.html import render_section

    (tmp_path / "unsafe_set.csv").write_text(
        "image,cluster,distance,order\na.png,0,0.5,0\nb.png,2,0.1,0\n"
    )
    card = {"id": 1, "size": 3, "root_cause": None, "unsafe": None}
    links = Links(tmp_path, tmp_path / "report.html")
    paper = assignment(tmp_path, tmp_path, [card], links)
    assert paper["select"] is None and "quota ceil(2" in render_section("assignment.html", paper)
    steps = {"steps": {"assign": {"select": "pool-diverse", "catch_all": 1}}}
    (tmp_path / "run.json").write_text(json.dumps(steps))
    chosen = assignment(tmp_path, tmp_path, [card], links)
    page = render_section("assignment.html", chosen)
    assert chosen["catch_all"] == 1 and "--select pool-diverse" in page and "1 of them" in page


# --- gini-near: uncertainty first, then the paper's shares to the closest ------------------


def test_gini_near_by_hand():
    # B=4, share 0.75: the 3 most uncertain rows 6 (.95), 1 (.9), 2 (.8); the one left goes
    # by the quotas (1, 2) over the RCCs' untaken rows (group 0: 0, 7; group 1: 3, 4, 5):
    # 1·(1, 2)/3 → the largest remainder is group 1, whose closest untaken row is 3 (0.1)
    groups, close = S.nearest_groups(DIST, FAR), DIST.min(axis=1)
    picks = S.split_picks(groups, np.array([6, 1, 2]), close, 4, np.array([1, 2]))
    assert picks.index.tolist() == [6, 1, 2, 3]
    assert picks.group.tolist() == [S.CATCH_ALL, 0, 0, 1]
    # share 0.25: row 6 by uncertainty, then 3 by quotas (1, 2) → group 0: 1, group 1: 2
    picks = S.split_picks(groups, np.array([6]), close, 4, np.array([1, 2]))
    assert picks.index.tolist() == [6, 0, 3, 4]


def test_margin_near_by_hand():
    # B=4, share 0.75 → 3 by margin-diverse's rule: the ceil(2 × 3) = 6 most uncertain
    # (6, 1, 2, 3, 5, 4), k-center on FEAT from row 6 (5, 5): row 3 (0, 0) is the farthest
    # (7.07); then the largest min-gap is row 4's (2.0 to row 3; rows 1, 2: 1.41, 1.49).
    # The one left by the quotas (1, 2): group 1 (rows 3, 4, 5 nearest RCC 1), row 5.
    got = S.select("margin-near", DIST, UNC, 4, features=FEAT, quotas=np.array([1, 2]))
    assert got.index.tolist() == [6, 3, 4, 5]
    assert S.MEASURE["margin-near"] == "margin" and "margin-near" in S.UNIFORM_RESAMPLED
    with pytest.raises(ValueError, match="margin-near: needs the pool's features"):
        S.select("margin-near", DIST, UNC, 4, quotas=np.array([1, 2]))


def test_gini_near_ranks_by_deepgini_and_needs_quotas():
    assert S.MEASURE["gini-near"] == "deepgini" and "gini-near" in S.UNIFORM_RESAMPLED
    got = S.select("gini-near", DIST, UNC, 4, far=FAR, quotas=np.array([1, 2]))
    assert got.index.tolist()[: round(S.SPLIT_SHARE * 4)] == [6, 1, 2][: round(S.SPLIT_SHARE * 4)]
    with pytest.raises(ValueError, match="gini-near: needs one quota per RCC"):
        S.select("gini-near", DIST, UNC, 4, far=FAR)


def test_uniform_bootstrap_keeps_every_image_and_the_weighted_size():
    from hudd_core.balance import balance_indices

    clusters = np.array([3, 3, 3, 5, 7, 7])
    dist = np.linspace(0.1, 0.6, 6)
    got = balance_indices(clusters, dist, 2, seed=4, bootstrap="uniform")
    # weighted gives every cluster max(target, its size): 3 + 2 + 2 = 7
    assert len(got) == 7 and got[:6].tolist() == list(range(6))
    again = balance_indices(clusters, dist, 2, seed=4, bootstrap="uniform")
    assert np.array_equal(got, again)
    many = balance_indices(np.array([0] * 3 + [1] * 97), np.ones(100), 400, 0, "uniform")
    counts = np.bincount(np.array([0] * 3 + [1] * 97)[many])  # no group favoured, unlike weighted
    assert len(many) == 800 and counts[1] > 10 * counts[0]


def test_hudd_run_resamples_gini_near_uniformly(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import hudd_core.retrain as R
    from hudd_core.config import load_config
    from hudd_core.pipeline import step_retrain

    seen = {}
    monkeypatch.setattr(R, "run_retrain", lambda *a, options, **k: seen.update(o=options) or {})
    for select, bootstrap, want in (("gini-near", "weighted", "uniform"),
                                    ("recommended", "weighted", None),
                                    ("gini-near", "none", "none"),
                                    ("hudd", "weighted", "weighted")):  # fmt: skip
        cfg = load_config(None, {"workdir": str(tmp_path), "data": str(tmp_path),
                                 "select": select, "bootstrap": bootstrap})  # fmt: skip
        run = SimpleNamespace(cfg=cfg, workdir=tmp_path, data=tmp_path,
                              checkpoint=tmp_path / "m.pt", progress=False)  # fmt: skip
        step_retrain(run)
        if want is None:  # recommended: as its selection says
            want = "uniform" if S.RECOMMENDED in S.UNIFORM_RESAMPLED else "weighted"
        assert seen["o"].bootstrap == want, select
