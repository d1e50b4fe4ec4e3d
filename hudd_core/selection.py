"""Label-free retraining selections over plain arrays: which B pool images to label.

The paper's rule (:func:`hudd_core.assign.greedy_select`) gives each root-cause cluster a
quota of twice its test errors and ranks its candidates by distance, without looking at
the pool. The selections here let the pool decide how much each RCC gets and what it
takes (:data:`SELECTIONS`); every one reads only what the model's forward pass on the
pool gives (distances to the RCCs, uncertainty, penultimate features), never a label:

* **budget by the pool**: the ``ceil(factor × B)`` most uncertain pool images are the
  *uncertain* ones; each RCC's share of B is proportional to the uncertain images whose
  nearest RCC it is (largest remainders), so an RCC gets what the pool holds of it;
* **a catch-all share**: uncertain images near no RCC (``far``: beyond the RCC's distance
  threshold) form one more group with its share (the causes the test set missed);
* inside a group, ``pool-quota`` takes the images closest to the RCC (the paper's
  ranking), ``pool-uncertain`` the most uncertain first, ``pool-diverse`` a k-center
  greedy cover of the group's uncertain images in feature space, starting from the most
  uncertain (so one RCC does not spend its share on near-duplicates);
* ``pool-borda`` (a hybrid, no shares): the B pool images of the smallest sum of two
  ranks, by uncertainty (most uncertain first) and by distance to the nearest RCC
  (closest first), so an image must be both uncertain and near a root cause
  (ties: the more uncertain, then the lower row);
* ``quota-diverse`` keeps the paper's shares (B split by the RCCs' quotas, twice their
  test errors: the test set's error mass says where the pool's errors are) and takes,
  inside an RCC, a k-center cover of its ``ceil(factor × share)`` closest images,
  starting from the closest (close to the RCC, but no near-duplicates);
* ``gini-near`` (a split): ``round(share × B)`` images by uncertainty alone (DeepGini),
  the rest by the paper's shares to the closest images not yet taken; ``margin-near``
  the same split with its first part taken as ``margin-diverse`` takes (a k-center cover
  of the ``ceil(factor × part)`` smallest-margin images).

Two stronger baselines, also label-free (:data:`DIVERSE_BASELINES`): ``margin-diverse``
(the ``ceil(factor × B)`` smallest-margin images, then k-center greedy on the penultimate
features to B) and ``badge`` (Ash et al., ICLR 2020: the gradient of the cross-entropy
loss at the predicted label with respect to the last layer's weights, ``(p − e_ŷ) ⊗ h``,
then k-means++ seeding over those embeddings).

Example:
    >>> d = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.8, 0.3]])
    >>> u = np.array([0.9, 0.1, 0.8, 0.7])
    >>> select("pool-uncertain", d, u, 2, factor=1.5).index.tolist()
    [0, 2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNCERTAINTY = ("entropy", "margin", "deepgini")
CATCH_ALL = -1  # the group of the uncertain images near no RCC
# Per selection: how B is shared (by the ``pool``'s uncertain images or by the RCCs'
# ``quota``s of the paper's rule), and how a group's share is taken.
RULES = {
    "pool-quota": ("pool", "distance"),
    "pool-uncertain": ("pool", "uncertainty"),
    "pool-diverse": ("pool", "diverse"),
    "quota-diverse": ("quota", "near-diverse"),
    "pool-borda": ("rank", "borda"),
    "gini-near": ("split", "distance"),
    "margin-near": ("split-diverse", "distance"),
}
# The uncertainty each selection ranks by (hudd_core.selection.uncertainty); entropy if unnamed.
MEASURE = {"gini-near": "deepgini", "margin-near": "margin"}
# Selections whose picks `hudd retrain` resamples uniformly (--bootstrap uniform), as the
# baselines' are: chosen so on the development cases (docs/retraining.md)
UNIFORM_RESAMPLED = ("gini-near", "margin-near")
SPLIT_SHARE = 0.75  # gini-near: the share of B taken by uncertainty alone (0.5, 0.75 on dev)
SPLITS = ("split", "split-diverse")  # the RULES' shares of the split selections
SELECTIONS = tuple(RULES)
PAPER = "hudd"  # `--select hudd`: the paper's rule (hudd_core.assign.greedy_select)
# `--select recommended`: the selection of the best mean gain on bench_retrain's development
# cases (never chosen on held-out cases). gini-near, resampled uniformly, on suite:signs-s0
# and suite:gauges-mobilenet-s0 (3 repeats, reference hyper-parameters): +14.3 / +2.5 pp at
# a share of 0.75 (+14.2 / +2.3 at 0.5), against DeepGini +13.9 / +2.7, pool-borda/uniform
# +13.7 / +2.4, the paper's rule +12.9 / +0.9; before it, pool-uncertain (+11.1 on
# signs-s0 over 5 repeats). The default stays hudd, the paper's rule.
RECOMMENDED = "gini-near"


def resolve_select(name: str) -> str:
    """``recommended`` → :data:`RECOMMENDED`; the paper's ``hudd`` and every name of
    :data:`SELECTIONS` as they are; a ValueError otherwise.

    >>> resolve_select("recommended") in SELECTIONS, resolve_select("hudd")
    (True, 'hudd')
    """
    if name == "recommended":
        return RECOMMENDED
    if name != PAPER and name not in RULES:
        raise ValueError(f"--select: {name!r} is not one of {PAPER}, {', '.join(RULES)}, "
                         "recommended")  # fmt: skip
    return name


DIVERSE_BASELINES = ("margin-diverse", "badge")
FACTOR = 2.0  # the uncertain images: the ceil(FACTOR × B) most uncertain of the pool


@dataclass(frozen=True)
class Picks:
    """The selected pool rows and, per row, its group: a column of the distances (its
    nearest RCC) or :data:`CATCH_ALL`."""

    index: np.ndarray
    group: np.ndarray


def check_budget(budget: int, n: int) -> int:
    """``budget`` capped at the pool size ``n``; a ValueError when it is negative."""
    if budget < 0:
        raise ValueError(f"the labelling budget must be at least 0, got {budget}")
    return min(int(budget), int(n))


def most_uncertain(uncertainty: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows of highest ``uncertainty``, most uncertain first (ties: lower row).

    >>> most_uncertain(np.array([0.2, 0.5, 0.5, 0.1]), 3).tolist()
    [1, 2, 0]
    """
    return np.argsort(-np.asarray(uncertainty, dtype=np.float64), kind="stable")[:k]


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` that sum to ``total`` (Hamilton's method:
    floors, then one more to the largest fractional parts; ties: the lower position).

    >>> largest_remainder(np.array([3, 2, 1]), 4).tolist()
    [2, 1, 1]
    """
    w = np.asarray(weights, dtype=np.float64)
    if total == 0 or w.sum() == 0:
        return np.zeros(len(w), dtype=np.int64)
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    rest = total - int(out.sum())
    out[np.argsort(-(exact - out), kind="stable")[:rest]] += 1
    return out


def capped_shares(weights: dict[int, float], room: dict[int, int], total: int) -> dict[int, int]:
    """``total`` split by ``weights`` (largest remainders), no group above its ``room``:
    what a full group cannot take goes to the others by their weights, until ``total`` or
    every group is full.

    >>> capped_shares({1: 3, 2: 1}, {1: 2, 2: 10}, 5)
    {1: 2, 2: 3}
    """
    out = {g: 0 for g in weights}
    left = min(total, sum(room.get(g, 0) for g in weights))
    while left > 0:
        open_ = [g for g in sorted(weights) if out[g] < room.get(g, 0) and weights[g] > 0]
        if not open_:  # only zero weights have room left: share by room instead
            open_ = [g for g in sorted(weights) if out[g] < room.get(g, 0)]
            w = np.array([room[g] - out[g] for g in open_], dtype=np.float64)
        else:
            w = np.array([weights[g] for g in open_], dtype=np.float64)
        for g, add in zip(open_, largest_remainder(w, left), strict=True):
            out[g] += min(int(add), room[g] - out[g])
        left = min(total, sum(room.get(g, 0) for g in weights)) - sum(out.values())
    return {g: v for g, v in out.items() if v > 0}


def quota_shares(groups: np.ndarray, quotas: np.ndarray, total: int) -> dict[int, int]:
    """``total`` split by the RCCs' ``quotas`` (the paper's rule), each capped by how many
    of ``groups`` (the candidate rows' RCCs) are its own.

    >>> quota_shares(np.array([0, 0, 1, 1, 1]), np.array([3.0, 1.0]), 4)
    {0: 2, 1: 2}
    """
    ids, sizes = np.unique(groups, return_counts=True)
    room = {int(g): int(m) for g, m in zip(ids, sizes, strict=True)}
    return capped_shares({g: float(q) for g, q in enumerate(quotas)}, room, total)


def nearest_groups(distances: np.ndarray, far: np.ndarray | None = None) -> np.ndarray:
    """Per pool row its nearest RCC (a column of ``distances``, N × K; ties: the lower
    column), or :data:`CATCH_ALL` where ``far`` (N booleans: near no RCC) is set."""
    groups = np.argmin(np.asarray(distances), axis=1).astype(np.int64)
    return groups if far is None else np.where(np.asarray(far, bool), CATCH_ALL, groups)


def pool_shares(
    groups: np.ndarray, uncertainty: np.ndarray, budget: int, factor: float = FACTOR
) -> dict[int, int]:
    """Each group's share of ``budget``: proportional to its images among the
    ``ceil(factor × budget)`` most uncertain of the pool (at least ``budget`` of them), so
    no share exceeds the group's uncertain images.

    >>> pool_shares(np.array([0, 0, 1, 1, 1, -1]), np.array([6, 5, 4, 3, 2, 1]), 2)
    {0: 1, 1: 1}
    """
    m = min(len(groups), max(budget, math.ceil(factor * budget)))
    ids, counts = np.unique(groups[most_uncertain(uncertainty, m)], return_counts=True)
    shares = largest_remainder(counts, budget)
    return {int(g): int(s) for g, s in zip(ids, shares, strict=True) if s > 0}


def borda(uncertainty: np.ndarray, closeness: np.ndarray) -> np.ndarray:
    """Every row, by the sum of its rank by ``uncertainty`` (highest first) and by
    ``closeness`` (a distance, smallest first); ties: the more uncertain, then the lower
    row. Equal values share their lowest rank.

    >>> borda(np.array([0.9, 0.8, 0.1, 0.5]), np.array([3.0, 0.5, 0.1, 2.0])).tolist()
    [1, 0, 2, 3]
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    d = np.asarray(closeness, dtype=np.float64)
    by_u = np.searchsorted(np.sort(-u), -u, side="left")
    by_d = np.searchsorted(np.sort(d), d, side="left")
    return np.lexsort((np.arange(len(u)), -u, by_u + by_d))


def k_center_greedy(features: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """``k`` of ``candidates`` (rows of ``features``) by the greedy k-center rule: the
    first candidate, then each time the one farthest (Euclidean) from those taken
    (ties: the earlier candidate).

    >>> x = np.array([[0.0], [0.1], [5.0], [2.0]])
    >>> k_center_greedy(x, np.array([0, 1, 2, 3]), 3).tolist()
    [0, 2, 3]
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    k = min(k, len(candidates))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    X = np.asarray(features, dtype=np.float64)[candidates]
    taken = [0]
    gap = np.linalg.norm(X - X[0], axis=1)
    for _ in range(k - 1):
        gap[taken] = -np.inf  # never again, even for duplicates (gap 0)
        nxt = int(np.argmax(gap))
        taken.append(nxt)
        gap = np.minimum(gap, np.linalg.norm(X - X[nxt], axis=1))
    return candidates[taken]


def closest(rows: np.ndarray, closeness: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` of ``rows`` of the smallest ``closeness`` (ties: the lower row)."""
    return rows[np.lexsort((rows, closeness[rows]))][:k]


def uncertain_cover(
    uncertainty: np.ndarray, features: np.ndarray, k: int, factor: float = FACTOR
) -> np.ndarray:
    """``k`` rows by k-center greedy on ``features`` over the ``ceil(factor × k)`` most
    uncertain, from the most uncertain (``margin-diverse``'s rule on any uncertainty)."""
    pool = most_uncertain(uncertainty, min(len(uncertainty), max(k, math.ceil(factor * k))))
    return k_center_greedy(features, pool, k)


def _within(
    rows: np.ndarray,
    share: int,
    how: str,
    uncertainty: np.ndarray,
    closeness: np.ndarray,
    uncertain: np.ndarray,
    features: np.ndarray | None,
    factor: float,
) -> np.ndarray:
    """``share`` of a group's ``rows``: the closest (``distance``), the most uncertain
    (``uncertainty``), a k-center cover of its uncertain rows (``diverse``) or of its
    ``ceil(factor × share)`` closest (``near-diverse``)."""
    by_distance = closest(rows, closeness, len(rows))
    if how == "distance":
        return by_distance[:share]
    if how == "near-diverse":
        if features is None:
            raise ValueError("a diverse selection needs the pool's features")
        return k_center_greedy(features, by_distance[: math.ceil(factor * share)], share)
    by_uncertainty = rows[np.lexsort((rows, -uncertainty[rows]))]
    if how == "uncertainty":
        return by_uncertainty[:share]
    if features is None:
        raise ValueError("a diverse selection needs the pool's features")
    pool = by_uncertainty[np.isin(by_uncertainty, uncertain)]
    return k_center_greedy(features, pool, share)


def select(
    name: str,
    distances: np.ndarray,
    uncertainty: np.ndarray,
    budget: int,
    *,
    features: np.ndarray | None = None,
    far: np.ndarray | None = None,
    factor: float = FACTOR,
    quotas: np.ndarray | None = None,
) -> Picks:
    """The ``budget`` pool rows of selection ``name`` (:data:`SELECTIONS`; module
    docstring), distinct, grouped by RCC (the group order: columns, then the catch-all).

    Args:
        distances: N × K, each pool image's distance to each RCC (``inf``: not searched).
        uncertainty: N, higher = more uncertain (e.g. the softmax entropy).
        budget: B (capped at N).
        features: N × D, the space of ``pool-diverse`` (penultimate features, heatmaps).
        far: N booleans, the images near no RCC (the catch-all group of the ``pool-*``
            selections; the others have none and ignore it); None: no catch-all.
        factor: the uncertain images are the ``ceil(factor × B)`` most uncertain.
        quotas: K, the RCCs' quotas of the paper's rule (the ``quota-*`` selections).
    """
    if name not in RULES:
        raise ValueError(f"unknown selection {name!r}; one of {SELECTIONS}")
    distances = np.asarray(distances, dtype=np.float64)
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    n = len(distances)
    if len(uncertainty) != n or (features is not None and len(features) != n):
        raise ValueError("distances, uncertainty and features need one row per pool image")
    budget = check_budget(budget, n)
    share_by, within = RULES[name]
    groups = nearest_groups(distances, far if share_by == "pool" else None)
    closeness = distances.min(axis=1) if n else np.zeros(0)
    if within == "borda":
        order = borda(uncertainty, closeness)[:budget]
        return Picks(order, groups[order])
    if share_by in ("quota", *SPLITS) and (quotas is None or len(quotas) != distances.shape[1]):
        raise ValueError(f"{name}: needs one quota per RCC (column of the distances)")
    if share_by in SPLITS:
        first = split_first(name, uncertainty, features, budget, factor)
        return split_picks(groups, first, closeness, budget, quotas)
    uncertain = most_uncertain(uncertainty, min(n, max(budget, math.ceil(factor * budget))))
    if share_by == "pool":
        shares = pool_shares(groups, uncertainty, budget, factor)
    else:
        shares = quota_shares(groups, quotas, budget)
    index, group = [], []
    for g in sorted(shares, key=lambda g: (g == CATCH_ALL, g)):
        rows = np.flatnonzero(groups == g)
        got = _within(rows, shares[g], within, uncertainty, closeness, uncertain, features,
                      factor)  # fmt: skip
        index.append(got)
        group.append(np.full(len(got), g, dtype=np.int64))
    if not index:
        return Picks(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return Picks(np.concatenate(index), np.concatenate(group))


def split_first(
    name: str, uncertainty: np.ndarray, features: np.ndarray | None, budget: int, factor: float
) -> np.ndarray:
    """The first ``round(SPLIT_SHARE × B)`` rows of split selection ``name``: the most
    uncertain (``gini-near``), or a k-center cover of the ``ceil(factor × part)`` most
    uncertain on ``features`` (``margin-near``)."""
    part = min(budget, round(SPLIT_SHARE * budget))
    if RULES[name][0] == "split":
        return most_uncertain(uncertainty, part)
    if features is None:
        raise ValueError(f"{name}: needs the pool's features")
    return uncertain_cover(uncertainty, features, part, factor)


def split_picks(
    groups: np.ndarray,
    first: np.ndarray,
    closeness: np.ndarray,
    budget: int,
    quotas: np.ndarray | None,
) -> Picks:
    """A split selection: the ``first`` pool rows (by uncertainty, ``gini-near``; by
    ``margin-diverse``'s rule, ``margin-near``), then the rest of B by the paper's shares
    (the RCCs' ``quotas``, capped by the rows left nearest to each) and, inside an RCC,
    the closest rows not yet taken (the root causes' images the model is confidently
    wrong on, which uncertainty alone never picks). Groups: ``groups``.

    >>> g = np.array([0, 0, 1, 1, -1])
    >>> d = np.array([0.1, 0.5, 0.2, 0.9, 3.0])
    >>> split_picks(g, np.array([1, 4]), d, 3, np.array([2, 1])).index.tolist()
    [1, 4, 0]
    """
    first = np.asarray(first, dtype=np.int64)
    left = np.setdiff1d(np.arange(len(groups)), first)
    near = left[groups[left] != CATCH_ALL]
    shares = quota_shares(groups[near], quotas, budget - len(first))
    rest = [closest(near[groups[near] == g], closeness, shares[g]) for g in sorted(shares)]
    index = np.concatenate([first, *rest]).astype(np.int64)
    return Picks(index, groups[index])


def uncertainty(probs: np.ndarray, measure: str) -> np.ndarray:
    """Per row of softmax ``probs`` (N × C), how uncertain the model is (higher = more):
    ``entropy`` (−Σ p log p), ``margin`` (minus the top-1 − top-2 gap) or ``deepgini``
    (1 − Σ p²).

    >>> uncertainty(np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4]]), "margin").round(2).tolist()
    [-0.8, -0.0, -0.2]
    """
    p = np.asarray(probs, dtype=np.float64)
    if measure == "entropy":
        return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
    if measure == "margin":
        top = np.sort(p, axis=1)
        return -(top[:, -1] - top[:, -2])
    if measure == "deepgini":
        return 1.0 - (p**2).sum(axis=1)
    raise ValueError(f"unknown uncertainty measure {measure!r}; one of {UNCERTAINTY}")


def candidate_matrix(cand_idx: np.ndarray, cand_dist: np.ndarray, k: int) -> np.ndarray:
    """The N × ``k`` distances from the assignment's kept candidates (per row, the
    columns ``cand_idx`` and their distances ``cand_dist``); ``inf`` where not kept.

    >>> candidate_matrix(np.array([[1, 0]]), np.array([[0.5, 2.0]]), 3).tolist()
    [[2.0, 0.5, inf]]
    """
    out = np.full((len(cand_idx), k), np.inf)
    np.put_along_axis(out, np.asarray(cand_idx, dtype=np.int64), cand_dist, axis=1)
    return out


def far_from_every(distances: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per row, whether it is farther from its nearest RCC than that RCC's threshold
    (``thresholds``, one per column): the images near no RCC.

    >>> far_from_every(np.array([[0.5, 2.0], [3.0, 4.0]]), np.array([1.0, 1.0])).tolist()
    [False, True]
    """
    nearest = np.argmin(distances, axis=1)
    return distances[np.arange(len(distances)), nearest] > np.asarray(thresholds)[nearest]


def margin_diverse(
    probs: np.ndarray, features: np.ndarray, budget: int, factor: float = FACTOR
) -> np.ndarray:
    """``margin-diverse``: the ``ceil(factor × B)`` smallest-margin pool rows, then B of
    them by k-center greedy on ``features`` from the smallest margin.

    >>> p = np.array([[0.5, 0.5], [0.55, 0.45], [0.9, 0.1], [0.6, 0.4]])
    >>> x = np.array([[0.0], [0.1], [9.0], [3.0]])
    >>> margin_diverse(p, x, 2).tolist(), margin_diverse(p, x, 2, factor=1.5).tolist()
    ([0, 2], [0, 3])
    """
    budget = check_budget(budget, len(probs))
    return uncertain_cover(uncertainty(probs, "margin"), features, budget, factor)


def gradient_factors(probs: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's gradient embedding in factored form: the gradient of the cross-entropy at
    the predicted label ŷ with respect to the last layer's weights is the outer product
    ``(p − e_ŷ) ⊗ h`` (``h``: the layer's input, the penultimate features); returns
    ``(p − e_ŷ, h)`` so the N × C × D embedding is never built."""
    p = np.asarray(probs, dtype=np.float64)
    a = p.copy()
    a[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    return a, np.asarray(features, dtype=np.float64)


def badge(probs: np.ndarray, features: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """``badge``: k-means++ seeding over the gradient embeddings (:func:`gradient_factors`).
    The first row is the one of largest embedding norm (ties: lower row); each next row is
    drawn with probability proportional to its squared distance to the nearest row taken
    (uniformly among those not taken when every distance is 0).

    ``‖g_x − g_y‖² = ‖a_x‖²‖h_x‖² + ‖a_y‖²‖h_y‖² − 2 (a_x·a_y)(h_x·h_y)``.
    """
    a, h = gradient_factors(probs, features)
    n = len(a)
    budget = check_budget(budget, n)
    if budget == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    sq = (a * a).sum(axis=1) * (h * h).sum(axis=1)  # ‖g_x‖²
    taken = [int(np.argmax(sq))]
    nearest = np.full(n, np.inf)
    free = np.ones(n, dtype=bool)
    for _ in range(budget - 1):
        c = taken[-1]
        free[c] = False
        d2 = np.clip(sq + sq[c] - 2.0 * (a @ a[c]) * (h @ h[c]), 0.0, None)
        nearest = np.minimum(nearest, d2)
        w = np.where(free, nearest, 0.0)
        p = w / w.sum() if w.sum() > 0 else free / free.sum()
        taken.append(int(rng.choice(n, p=p)))
    return np.asarray(taken, dtype=np.int64)
