"""A label oracle for clusterings of error images with planted root causes: of some
candidate partitions, the one the planted labels would choose within an inspection
budget, and the candidates of the broad search space of issue 23.

The arithmetic is written here, not taken from hudd_core (a check must not compare an
implementation with itself); it follows the README's definitions, as
``benchmarks/bench_quality.py`` measures them:

- a *root-cause cluster* is any cluster id but :data:`NOISE` (0) and the candidate's
  miscellaneous group (``misc``), with at least 2 members;
- a cause's **coverage** is the share of its errors in root-cause clusters of purity
  ≥ :data:`PURITY` in it; a cause is **covered** at coverage ≥ :data:`COVERED`
  (``"none"`` is no cause);
- the **inspection share** is the share of the error images an engineer looks at,
  :data:`PER_CLUSTER` per group (all of a smaller one), the noise and the miscellaneous
  group each one more group.

The oracle (:func:`oracle`) keeps, among the candidates within the budget, the most
covered causes (ties: the higher mean coverage, then the lower inspection share, then
the first given).

Example:
    >>> causes = ["a"] * 4 + ["b"] * 4 + ["none"] * 2
    >>> fine = Candidate("fine", np.array([1, 1, 1, 1, 2, 2, 2, 2, 3, 3]))
    >>> coarse = Candidate("coarse", np.array([1] * 8 + [2, 2]))
    >>> res = oracle([coarse, fine], causes, budget=1.0)
    >>> res.best.name, res.covered, res.best.coverage
    ('fine', 2, {'a': 1.0, 'b': 1.0})
    >>> oracle([coarse, fine], causes, budget=0.5).best is None  # neither fits
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

NOISE = 0  # the id of the unclustered images (as hudd_core's labels)
PURITY = 0.7  # a cluster this pure in a cause counts towards the cause's coverage
COVERED = 0.25  # a cause is covered when this share of its errors is in such clusters
PER_CLUSTER = 5  # images inspected per group
BUDGET = 0.15  # the inspection budget of issue 23
NO_CAUSE = "none"
# The broad space of issue 23: PCA dimensions, HDBSCAN min_cluster_size, Ward k.
BROAD_DIMS = (10, 20)
BROAD_SIZES = tuple(range(3, 21))
BROAD_KS = tuple(range(4, 21))
BROAD_MIN_SAMPLES = 3  # HDBSCAN's min_samples (as the catalogue's HDBSCAN)


@dataclass(frozen=True)
class Candidate:
    """One partition of the error images: its description, a cluster id per image
    (:data:`NOISE` = unclustered) and the id of its miscellaneous group (None: none)."""

    name: str
    labels: np.ndarray
    misc: int | None = None


@dataclass(frozen=True)
class Scored:
    """A candidate as the labels see it."""

    name: str
    covered: int
    coverage: dict[str, float]
    inspect: float
    within: bool  # its inspection share fits the budget

    @property
    def mean_coverage(self) -> float:
        return float(np.mean(list(self.coverage.values()))) if self.coverage else 0.0

    def key(self) -> tuple[int, float, float]:
        """What the oracle maximises: covered causes, mean coverage, less inspection."""
        return (self.covered, self.mean_coverage, -self.inspect)


@dataclass(frozen=True)
class Oracle:
    """The best candidate within the budget (None when none fits) and every candidate
    scored, in the order given."""

    best: Scored | None
    considered: list[Scored]
    budget: float

    @property
    def covered(self) -> int:
        return self.best.covered if self.best else 0

    @property
    def coverage(self) -> dict[str, float]:
        return dict(self.best.coverage) if self.best else {}


def coverage(causes: Sequence[str], labels: np.ndarray, misc: int | None = None) -> dict:
    """Per planted cause (sorted; ``"none"`` left out) its coverage by ``labels``."""
    causes_a = np.asarray(causes, dtype=str)
    labels = np.asarray(labels)
    if causes_a.shape != labels.shape:
        raise ValueError(f"{len(causes_a)} planted labels for {len(labels)} clustered images")
    names = sorted(set(causes_a.tolist()) - {NO_CAUSE})
    hits = dict.fromkeys(names, 0)
    for cid in set(labels.tolist()) - {NOISE, misc}:
        members = causes_a[labels == cid]
        if len(members) < 2:
            continue
        values, counts = np.unique(members, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            if value in hits and count / len(members) >= PURITY:  # 7 / 10 == 0.7, 0.7 * 10 > 7
                hits[value] += count
    return {c: hits[c] / int(np.sum(causes_a == c)) for c in names}


def inspection(labels: np.ndarray, per_cluster: int = PER_CLUSTER) -> float:
    """The inspection share of ``labels`` (every id one group, noise included)."""
    labels = np.asarray(labels)
    if not len(labels):
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    return float(np.minimum(counts, per_cluster).sum() / len(labels))


def score(candidate: Candidate, causes: Sequence[str], budget: float = BUDGET) -> Scored:
    """``candidate`` measured against the planted ``causes``."""
    cov = coverage(causes, candidate.labels, candidate.misc)
    share = inspection(candidate.labels)
    covered = sum(v >= COVERED for v in cov.values())
    return Scored(candidate.name, covered, cov, share, share <= budget + 1e-12)


def oracle(
    candidates: Iterable[Candidate], causes: Sequence[str], budget: float = BUDGET
) -> Oracle:
    """The candidate the labels choose within ``budget`` (see the module's docstring)."""
    considered = [score(c, causes, budget) for c in candidates]
    fits = [s for s in considered if s.within]
    best = max(fits, key=Scored.key) if fits else None  # max() keeps the first of ties
    return Oracle(best, considered, budget)


# --- the broad search space ------------------------------------------------------------


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` (flattened per image) divided by their Euclidean norm (zero rows
    stay zero): a heatmap's pattern, not its total relevance."""
    F = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    norm = np.linalg.norm(F, axis=1, keepdims=True)
    return F / np.where(norm > 0, norm, 1.0)


def pca(F: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """The first ``dims`` principal components of ``F`` (capped by its shape)."""
    from sklearn.decomposition import PCA

    d = max(1, min(dims, F.shape[0] - 1, F.shape[1]))
    return PCA(n_components=d, svd_solver="full", random_state=seed).fit_transform(F)


def space_candidates(name: str, Z: np.ndarray) -> list[Candidate]:
    """``Z`` clustered by HDBSCAN at every :data:`BROAD_SIZES` (those with room for two
    clusters) and cut from one Ward tree at every :data:`BROAD_KS` (below the points)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.cluster import HDBSCAN

    n = Z.shape[0]
    out = []
    for m in BROAD_SIZES:
        if n >= 2 * m:
            hdb = HDBSCAN(min_cluster_size=m, min_samples=min(BROAD_MIN_SAMPLES, m), copy=True)
            out.append(Candidate(f"{name} hdbscan mcs={m}", hdb.fit_predict(Z) + 1))
    tree = linkage(Z, method="ward")
    for k in (k for k in BROAD_KS if k < n):
        out.append(Candidate(f"{name} ward k={k}", fcluster(tree, k, criterion="maxclust")))
    return out


def broad_candidates(features: dict[str, np.ndarray], seed: int = 0) -> list[Candidate]:
    """Issue 23's broad space: every ``{name: N × D}`` features (the caller passes each
    layer's unit heatmaps, :func:`unit_rows`, and the raw pixels) × PCA to each of
    :data:`BROAD_DIMS` × :func:`space_candidates`. Deterministic."""
    out = []
    for name, F in features.items():
        F = np.asarray(F, dtype=np.float64).reshape(len(F), -1)
        if F.shape[0] < 4:
            continue
        Z = pca(F, max(BROAD_DIMS), seed)
        for dims in BROAD_DIMS:
            out += space_candidates(f"{name} pca{dims}", Z[:, :dims])
    return out
