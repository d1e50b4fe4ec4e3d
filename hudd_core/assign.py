"""AssignModule (HUDD step 4): pick the improvement images closest to the root-cause clusters.

An improvement image's distance to a cluster is its Euclidean distance (heatmaps of the
selected layer) to the cluster's nearest member. Clusters are ranked per image; a greedy
global selection takes order 0 first (each image's closest cluster), smallest distance
first, while the cluster's quota ``ceil(2 × its error count)`` is not full; an image goes
to one cluster at most; clusters with a single member are skipped (the reference rule),
and so are the unclustered images of density methods (cluster 0, never a quota).

Selection options (beyond the reference, never the default): ``quota`` (:data:`QUOTAS`:
``mass``, the reference ``ceil(factor × errors)``, or ``uniform``, the same total budget
split evenly), ``distance_threshold`` (:data:`THRESHOLDS`: ``paper`` keeps only candidates
as close to a cluster as its own members are to each other, :func:`member_thresholds`)
and ``rank`` (:data:`RANKS`: inside a cluster's candidates, ``distance`` first, the
reference, or the model's ``uncertainty``, the softmax entropy of the LRP forward pass).

Every cluster is ranked for every image (the reference); ``top`` keeps only each image's
``top`` closest clusters, bounding memory by ``N × top`` for very many RCCs. Improvement
heatmaps are never all in memory. Keypoint regressors: an unlabeled image has no worst
keypoint, so each RCC is searched with the relevance of the keypoint its members most
often fail on (one relevance pass per distinct such keypoint). The nearest-member search
and its backends live in :mod:`hudd_core.search`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hudd_core.cluster.labels import NOISE
from hudd_core.fileio import (
    fresh_tmp_dir,
    load_signed_npz,
    replace_dir,
    save_signed_npz,
    write_csv,
)
from hudd_core.options import (
    DEFAULTS,
    NO_PREPROCESS,
    REFERENCE_ASSIGN,
    AssignOptions,
    Preprocess,
    check_choice,
    choices,
)
from hudd_core.runstate import NothingToDo
from hudd_core.search import (  # noqa: F401 - the search backend, re-exported
    BACKENDS,
    NearestClusterIndex,
    nearest_member_reference,
    resolve_backend,
)
from hudd_core.selection import PAPER, RULES, resolve_select

QUOTAS = choices("quota")
THRESHOLDS = choices("distance_threshold")
RANKS = choices("rank")
FAR = -1  # the cluster id of a candidate beyond its cluster's threshold: never selected


def cluster_quotas(
    cluster_sizes: Mapping[int, int],
    factor: float = DEFAULTS["quota_factor"],
    rule: str = DEFAULTS["quota"],
) -> dict[int, int]:
    """The quota of every cluster with more than one member.

    ``mass`` (the reference): ``ceil(factor × size)``, by the cluster's error mass.
    ``uniform``: the same total budget (the sum of the ``mass`` quotas) split evenly; the
    remainder goes one image each to the clusters of the largest error mass (ties: the
    lower id).

    >>> cluster_quotas({1: 5, 2: 1, 3: 2})
    {1: 10, 3: 4}
    >>> cluster_quotas({1: 5, 2: 1, 3: 2}, rule="uniform")
    {1: 7, 3: 7}
    """
    mass = {c: math.ceil(factor * n) for c, n in cluster_sizes.items() if n > 1}
    if rule == "mass":
        return mass
    check_choice("quota", rule, QUOTAS)
    if not mass:
        return mass
    base, rest = divmod(sum(mass.values()), len(mass))
    larger = set(sorted(mass, key=lambda c: (-mass[c], c))[:rest])
    return {c: base + (c in larger) for c in mass}


def check_selection(quota: str, distance_threshold: str, rank: str) -> None:
    """A ValueError naming the option whose value is not one of its choices."""
    check_choice("quota", quota, QUOTAS)
    check_choice("distance_threshold", distance_threshold, THRESHOLDS)
    check_choice("rank", rank, RANKS)


def member_thresholds(
    members: np.ndarray, labels: np.ndarray, block: int = 1024
) -> dict[int, float]:
    """The paper's distance threshold of every cluster, from the test-set observations.

    The ICSE'22 tool paper (Section 2, Step 4): "Since RCCs characterize only the portion
    of the input space that is unsafe, images belonging to the improvement set may not
    belong to any of these clusters. For this reason, HUDD selects only images that are
    sufficiently close to cluster members based on test set observations." The paper
    gives no formula; this applies the assignment's own distance (to the nearest member)
    to the members themselves: τ_C is the largest distance of a member of C to its nearest
    other member of C, so an improvement image at most τ_C from C is as close to C as C's
    own error images are to each other. A cluster with one member has τ = 0.

    >>> member_thresholds(np.array([[0.0], [1.0], [3.0], [10.0], [10.5]]),
    ...                   np.array([1, 1, 1, 2, 2]))
    {1: 2.0, 2: 0.5}
    """
    from hudd_core.distance import cdist

    out: dict[int, float] = {}
    for c in np.unique(labels).tolist():
        X = members[labels == c]
        if len(X) < 2:
            out[int(c)] = 0.0
            continue
        worst = 0.0
        for a in range(0, len(X), block):
            d = cdist(X[a : a + block], X)
            d[np.arange(len(d)), np.arange(a, a + len(d))] = np.inf  # not itself
            worst = max(worst, float(d.min(axis=1).max()))
        out[int(c)] = worst
    return out


def beyond_thresholds(
    cand_cluster: np.ndarray, cand_distance: np.ndarray, thresholds: Mapping[int, float]
) -> np.ndarray:
    """``cand_cluster`` with every candidate farther from its cluster than the cluster's
    threshold replaced by :data:`FAR` (no quota: it is never selected; the image may still
    go to another of its clusters).

    >>> beyond_thresholds(np.array([[1, 2]]), np.array([[0.5, 0.7]]), {1: 0.4, 2: 1.0})
    array([[-1,  2]])
    """
    ids = np.array(sorted(thresholds), dtype=np.int64)
    limits = np.array([thresholds[c] for c in ids], dtype=np.float64)
    pos = np.searchsorted(ids, cand_cluster).clip(0, max(len(ids) - 1, 0))
    known = ids[pos] == cand_cluster if len(ids) else np.zeros(cand_cluster.shape, bool)
    limit = np.where(known, limits[pos] if len(ids) else 0.0, -np.inf)
    return np.where(cand_distance > limit, FAR, cand_cluster)


def softmax_entropy(logits: torch.Tensor) -> np.ndarray:
    """Per row of a classifier's outputs, the entropy of its softmax (nats), float32."""
    logp = torch.log_softmax(logits.double(), dim=1)
    return (-(logp.exp() * logp).sum(dim=1)).float().cpu().numpy()


def top_candidates(distances: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column indices of the ``top`` smallest distances (ascending) and
    those distances: the cluster ranking of each image, truncated."""
    top = min(top, distances.shape[1])
    part = np.argpartition(distances, top - 1, axis=1)[:, :top]
    d = np.take_along_axis(distances, part, axis=1)
    order = np.argsort(d, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(d, order, axis=1)


@dataclass
class Selection:
    """The unsafe set: parallel arrays, one entry per selected image."""

    image: np.ndarray  # row of the image in the candidate arrays
    cluster: np.ndarray  # cluster id
    distance: np.ndarray
    order: np.ndarray  # rank of that cluster for the image (0 = its closest)


def greedy_select(
    cand_cluster: np.ndarray,
    cand_distance: np.ndarray,
    quotas: Mapping[int, int],
    priority: np.ndarray | None = None,
) -> Selection:
    """The reference greedy rule over the kept candidates.

    ``cand_cluster[i, o]`` is image i's o-th closest cluster id (``cand_distance`` its
    distance). Order 0 first: within one order each image appears once, so taking the
    smallest distances first while a quota is open equals taking, per cluster, its
    ``remaining quota`` closest candidates; then order 1 for the images still free, etc.
    ``priority`` (one value per image, lower first; ties: distance) replaces the distance
    as the order inside a cluster (``--rank uncertainty``: minus the entropy).

    >>> sel = greedy_select(np.array([[1, 2], [1, 2], [1, 2]]),
    ...                     np.array([[0.1, 0.5], [0.2, 0.3], [0.3, 0.4]]), {1: 2, 2: 1})
    >>> sel.image.tolist(), sel.cluster.tolist(), sel.order.tolist()
    ([0, 1, 2], [1, 1, 2], [0, 0, 1])
    """
    n, top = cand_cluster.shape
    remaining = {int(c): int(q) for c, q in quotas.items()}
    free = np.ones(n, dtype=bool)
    picked: list[tuple[np.ndarray, ...]] = []
    for order in range(top):
        if not any(remaining.values()):
            break
        rows = np.flatnonzero(free)
        cl, d = cand_cluster[rows, order], cand_distance[rows, order]
        open_ = np.array([remaining.get(int(c), 0) > 0 for c in cl], dtype=bool)
        rows, cl, d = rows[open_], cl[open_], d[open_]
        first = d if priority is None else priority[rows]
        by = np.lexsort((rows, d, first, cl))  # per cluster, smallest first (ties: row)
        rows, cl, d = rows[by], cl[by], d[by]
        starts = np.r_[0, np.flatnonzero(np.diff(cl)) + 1]
        rank = np.arange(len(cl)) - np.repeat(starts, np.diff(np.r_[starts, len(cl)]))
        take = rank < np.array([remaining[int(c)] for c in cl], dtype=np.int64)
        for c in np.unique(cl[take]):
            remaining[int(c)] -= int(np.count_nonzero(cl[take] == c))
        free[rows[take]] = False
        picked.append((rows[take], cl[take], d[take], np.full(int(take.sum()), order)))
    if not picked:
        empty = np.array([], dtype=np.int64)
        return Selection(empty, empty, np.array([], dtype=np.float32), empty)
    image, cluster, distance, order_ = (np.concatenate(x) for x in zip(*picked, strict=True))
    return Selection(image, cluster, distance, order_)


# --- the step over the work folder -------------------------------------------------------


def read_rccs(workdir: Path) -> tuple[str, list[str], np.ndarray]:
    """``(layer, images, clusters)`` of ``T/clusters.csv`` (the selected layer's RCCs)."""
    path = Path(workdir) / "clusters.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `hudd cluster` first")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} lists no clustered image")
    layers = {r["layer"] for r in rows}
    if len(layers) != 1:
        raise ValueError(f"{path} mixes layers {sorted(layers)}")
    return layers.pop(), [r["image"] for r in rows], np.array([int(r["cluster"]) for r in rows])


def rcc_keypoints(result_csv: Path, images: list[str], labels: np.ndarray) -> dict[int, int]:
    """Per RCC of a keypoint regressor, the keypoint its members most often fail on
    (``worst_keypoint`` of ``T/testResult.csv``; ties: the lowest keypoint index).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "testResult.csv"
        >>> _ = p.write_text("image,result,mean_error,max_error,worst_keypoint\\n"
        ...                  "a,Wrong,5,9,2\\nb,Wrong,6,8,2\\nc,Wrong,7,9,0\\n")
        >>> rcc_keypoints(p, ["a", "b", "c"], np.array([1, 1, 2]))
        {1: 2, 2: 0}
    """
    if not Path(result_csv).is_file():
        raise FileNotFoundError(f"{result_csv} does not exist: run `hudd test` first")
    with open(result_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        if "worst_keypoint" not in (reader.fieldnames or []):
            raise ValueError(f"{result_csv} has no worst_keypoint column (not a keypoint model's)")
        worst = {r["image"]: int(r["worst_keypoint"]) for r in reader}
    missing = [img for img in images if img not in worst]
    if missing:
        raise ValueError(f"{result_csv}: no row for the clustered image {missing[0]}")
    out: dict[int, int] = {}
    for c in np.unique(labels).tolist():
        kps = [worst[img] for img, k in zip(images, labels, strict=True) if k == c]
        out[int(c)] = int(np.bincount(kps).argmax())
    return out


def member_heatmaps(workdir: Path, layer: str, images: list[str]) -> np.ndarray:
    """The RCC members' rows of ``T/Heatmaps/<layer>.npy``, in the order of ``images``."""
    from hudd_core.store import read_heatmap_index

    layers, index = read_heatmap_index(workdir)
    entry = next((e for e in layers if e["name"] == layer), None)
    if entry is None:
        raise ValueError(f"layer {layer!r} of clusters.csv is not in T/Heatmaps/layers.json")
    row_of = {img: r for r, img in enumerate(index)}
    missing = [img for img in images if img not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} clustered images have no heatmap (first: {missing[0]})")
    X = np.load(Path(workdir) / "Heatmaps" / entry["file"], mmap_mode="r")
    return np.asarray(X[[row_of[img] for img in images]], dtype=np.float32)


@dataclass
class CandidateStore:
    """The kept candidates of the images processed so far, saved atomically every few
    batches to ``path`` so an interrupted assignment resumes where it stopped."""

    path: Path
    signature: dict
    image_idx: list[np.ndarray] = field(default_factory=list)  # position in the pool
    cluster_idx: list[np.ndarray] = field(default_factory=list)
    distance: list[np.ndarray] = field(default_factory=list)
    uncertainty: list[np.ndarray] = field(default_factory=list)  # --rank uncertainty only
    probs: list[np.ndarray] = field(default_factory=list)  # --select but hudd only: softmax
    features: list[np.ndarray] = field(default_factory=list)  # and penultimate features
    done: int = 0  # pool positions processed, skipped images included

    @classmethod
    def open(cls, path: Path, signature: dict) -> CandidateStore:
        store = cls(path, signature)
        z = load_signed_npz(path, signature)
        if z is not None:
            store.image_idx, store.cluster_idx = [z["image_idx"]], [z["cluster_idx"]]
            store.distance, store.done = [z["distance"]], int(z["done"])
            store.uncertainty = [z["uncertainty"]] if "uncertainty" in z else []
            if "probs" in z:
                store.probs, store.features = [z["probs"]], [z["features"]]
        return store

    def add_embedding(self, probs: np.ndarray, features: np.ndarray) -> None:
        self.probs.append(probs.astype(np.float32))
        self.features.append(features.astype(np.float32))

    def embedding(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(softmax, penultimate features)`` of the images processed, or None."""
        if not self.probs:
            return None
        return np.concatenate(self.probs), np.concatenate(self.features)

    def add(
        self, images: np.ndarray, idx: np.ndarray, dist: np.ndarray, unc: np.ndarray | None
    ) -> None:
        self.image_idx.append(images.astype(np.int64))
        self.cluster_idx.append(idx.astype(np.int32))
        self.distance.append(dist.astype(np.float32))
        if unc is not None:
            self.uncertainty.append(unc.astype(np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(pool positions, cluster columns, distances, uncertainty or None)``."""
        unc = np.concatenate(self.uncertainty) if self.uncertainty else None
        if not self.image_idx:
            empty = np.zeros(0, np.int64), np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32)
            return (*empty, unc)
        images, idx, dist = (
            np.concatenate(a) for a in (self.image_idx, self.cluster_idx, self.distance)
        )
        return images, idx, dist, unc

    def save(self) -> None:
        images, idx, dist, unc = self.arrays()
        self.image_idx, self.cluster_idx, self.distance = [images], [idx], [dist]
        extra = {} if unc is None else {"uncertainty": unc}
        self.uncertainty = [] if unc is None else [unc]
        embedded = self.embedding()
        if embedded is not None:
            self.probs, self.features = [embedded[0]], [embedded[1]]
            extra.update(probs=embedded[0], features=embedded[1])
        save_signed_npz(self.path, self.signature, image_idx=images, cluster_idx=idx,
                        distance=dist, done=self.done, **extra)  # fmt: skip


Relevance = Callable[[torch.Tensor], torch.Tensor]
Embed = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]  # (softmax, features)


def digest(array: np.ndarray) -> str:
    """A short hash of an array's bytes and shape (what a resume signature compares)."""
    import hashlib

    a = np.ascontiguousarray(array)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:16]


class GroupedIndex:
    """The nearest-member search of every cluster, with one relevance function per group
    of clusters (one group for classifiers; one per explained keypoint for regressors)."""

    def __init__(
        self,
        members: np.ndarray,
        labels: np.ndarray,
        groups: Mapping[Relevance, list[int]] | Relevance,
        backend: str,
    ) -> None:
        if callable(groups):
            groups = {groups: sorted({int(c) for c in labels})}
        self.clusters = np.array(sorted({int(c) for c in labels}), dtype=np.int64)
        self.parts: list[tuple[Relevance, NearestClusterIndex, np.ndarray]] = []
        for relevance, clusters in groups.items():
            keep = np.isin(labels, clusters)
            index = NearestClusterIndex(members[keep], labels[keep], backend)
            columns = np.searchsorted(self.clusters, index.clusters)
            self.parts.append((relevance, index, columns))
        self.backend = self.parts[0][1].backend

    def search(self, x: torch.Tensor) -> tuple[np.ndarray | None, int | None, torch.Tensor | None]:
        """``(distances, None, outputs)``: B × C distances of the images ``x`` to every
        cluster, and the model's outputs when the relevance function also returns them
        (``(relevance, outputs)``, :func:`relevance_with_outputs`); or
        ``(None, row, None)`` naming the first image whose relevance is not finite."""
        out = np.empty((len(x), len(self.clusters)), dtype=np.float32)
        outputs = None
        for relevance, index, columns in self.parts:
            rel = relevance(x)
            if isinstance(rel, tuple):
                rel, outputs = rel
            rel = rel.reshape(len(x), -1)
            finite = torch.isfinite(rel).all(dim=1)
            if not bool(finite.all()):
                return None, int((~finite).nonzero()[0]), None
            out[:, columns] = index.search(rel)
        return out, None, outputs


@dataclass
class AssignPlan:
    """What both engines (this process, or Ray) need before the first image: the RCCs
    searched, their quotas and member heatmaps, the pool and the resume signature."""

    layer: str
    quotas: dict[int, int]
    members: np.ndarray  # heatmaps of the members of the clusters with a quota
    labels: np.ndarray  # their cluster ids
    clusters: np.ndarray  # the searched cluster ids, sorted (the candidates' columns)
    pool: Any  # hudd_core.data.datasets.ImageFiles
    n: int
    top: int
    signature: dict
    thresholds: dict[int, float] | None = None  # --distance-threshold paper
    rank: str = "distance"
    select: str = "hudd"  # --select, resolved (hudd_core.selection)
    catch_all: dict[int, float] | None = None  # --select pool-*: beyond these, near no RCC


def plan_assign(
    workdir: Path,
    data_root: Path,
    *,
    options: AssignOptions = REFERENCE_ASSIGN,
    prep: Preprocess = NO_PREPROCESS,
    input_shape: tuple[int, int, int] | None = None,
    explained_by: Mapping[str, Any] | None = None,
) -> AssignPlan:
    """Reads ``T/clusters.csv``, the member heatmaps and the pool listing; checks them.
    ``options``: its ``quota``, ``distance_threshold``, ``rank`` are the selection options
    (module docstring), ``quota_factor`` the quota rule's, ``top`` and ``limit`` bound the
    candidates and the pool."""
    from hudd_core.data.datasets import ImageFiles

    check_selection(options.quota, options.distance_threshold, options.rank)
    layer, images, labels = read_rccs(workdir)
    quotas = rcc_quotas(labels, options)
    keep = np.isin(labels, list(quotas))
    members = member_heatmaps(workdir, layer, [i for i, k in zip(images, keep, strict=True) if k])
    clusters = np.array(sorted(quotas), dtype=np.int64)
    top = len(clusters) if options.top is None else options.top
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    channels = input_shape[0] if input_shape else 1
    pool = ImageFiles(data_root / "ImprovementSet", channels=channels, **prep.as_dict())
    n = len(pool) if options.limit is None else min(options.limit, len(pool))
    if n == 0:
        raise ValueError(f"{data_root / 'ImprovementSet'} holds no image")
    plan = AssignPlan(layer, quotas, members, labels[keep], clusters, pool, n, top, {},
                      rank=options.rank, select=resolve_select(options.select))  # fmt: skip
    plan.signature = plan_signature(plan, prep, explained_by)
    if options.distance_threshold == "paper":
        plan.thresholds = member_thresholds(members, labels[keep])
    if RULES.get(plan.select, ("",))[0] == "pool":  # their catch-all: the paper thresholds
        plan.catch_all = plan.thresholds or member_thresholds(members, labels[keep])
    return plan


def rcc_quotas(labels: np.ndarray, options: AssignOptions) -> dict[int, int]:
    """The quota of every RCC of ``labels`` (the unclustered images of density methods get
    none); :class:`~hudd_core.runstate.NothingToDo` when no RCC has a quota."""
    sizes = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    sizes.pop(NOISE, None)
    sizes = {int(c): int(n) for c, n in sizes.items()}
    quotas = cluster_quotas(sizes, options.quota_factor, options.quota)
    if not quotas:
        raise NothingToDo(
            "every RCC has a single member (a single image each): nothing to assign "
            "(reference rule)"
        )
    return quotas


def plan_signature(
    plan: AssignPlan, prep: Preprocess, explained_by: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What saved candidates must match to be reused: the RCCs, their member heatmaps,
    the pool, the preprocessing and what the relevance depends on."""
    pool, n = plan.pool, plan.n
    signature = {
        "version": 2,
        "layer": plan.layer,
        "clusters": plan.clusters.tolist(),
        "n": n,
        "top": plan.top,
        "members": len(plan.labels),
        "member_heatmaps": digest(plan.members),
        "member_labels": digest(plan.labels),
        "pool": pool.ids[:1] + pool.ids[n - 1 : n],
        "preprocessing": prep.as_dict(),
        "explained_by": dict(explained_by or {}),
    }
    if plan.rank != "distance":  # the candidates then hold the entropy too; the default
        signature["rank"] = plan.rank  # adds nothing, so candidates saved before stay valid
    if plan.select != PAPER:  # the candidates hold the softmax and penultimate features,
        signature["embedding"] = "penultimate"  # shared by every --select but hudd
    return signature


def searched_groups(
    relevance: Relevance | Mapping[Relevance, list[int]], quotas: Mapping[int, int]
) -> Relevance | dict[Relevance, list[int]]:
    """``relevance`` without the clusters that have no quota (single-member clusters are
    never searched), and without the groups left empty."""
    if callable(relevance):
        return relevance
    groups = {f: [c for c in cl if c in quotas] for f, cl in relevance.items()}
    return {f: cl for f, cl in groups.items() if cl}


def assign_relevance(
    model: torch.nn.Module,
    layer: str,
    keypoint_of: Mapping[int, int] | None,
    *,
    composite: str = "hudd",
    device: str = "auto",
    rank: str = "distance",
) -> Relevance | dict[Relevance, list[int]]:
    """The relevance at ``layer`` the RCCs are searched with: one function for a
    classifier (``keypoint_of`` None); for a keypoint regressor one per explained
    keypoint, ``{relevance: [its clusters]}`` (``keypoint_of``: cluster → keypoint,
    :func:`rcc_keypoints`). ``rank="uncertainty"``: the classifier's function also
    returns the model's outputs of the same forward pass."""
    from hudd_core.heatmaps import batch_relevance

    check_rank(rank, keypoint_of)
    if keypoint_of is None:
        return batch_relevance(model, layer, composite=composite, device=device,
                               outputs=rank == "uncertainty")  # fmt: skip
    groups: dict[Relevance, list[int]] = {}
    for kp in sorted(set(keypoint_of.values())):
        f = batch_relevance(model, layer, keypoint=kp, composite=composite, device=device)
        groups[f] = [c for c, k in keypoint_of.items() if k == kp]
    return groups


def check_rank(rank: str, keypoint_of: Mapping[int, int] | None) -> None:
    """``--rank uncertainty`` needs a classifier's softmax: a ValueError for a keypoint
    regressor (its outputs are coordinates)."""
    if rank == "uncertainty" and keypoint_of is not None:
        raise ValueError(
            "--rank uncertainty: a keypoint regressor has no softmax to take the entropy "
            "of; use --rank distance (the default) for keypoint models"
        )


def run_assign(
    workdir: str | Path,
    data_root: str | Path,
    relevance: Relevance | Mapping[Relevance, list[int]],
    *,
    options: AssignOptions = REFERENCE_ASSIGN,
    prep: Preprocess = NO_PREPROCESS,
    input_shape: tuple[int, int, int] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    save_every: int = 20,
    progress: bool = True,
    explained_by: Mapping[str, Any] | None = None,
    embed: Embed | None = None,
) -> dict:
    """The AssignModule over the work folder: writes ``T/unsafe_set.csv`` and
    ``T/UnsafeSet/<cluster>/`` (image copies, ``Cluster_<id>.gif``); returns a summary.

    Args:
        relevance: maps a batch of improvement images to their flattened relevance at the
            selected layer, ``(B, D)`` (see :func:`hudd_core.heatmaps.batch_relevance`);
            or ``{relevance: [cluster ids]}`` when clusters are explained differently
            (keypoint regressors: one relevance per explained keypoint).
        options: the assignment's options (:class:`~hudd_core.options.AssignOptions`):
            ``backend`` (:data:`BACKENDS`), ``top`` closest clusters kept per image
            (default: all, the reference; memory: N × top), ``limit`` (only the first
            improvement images), ``gifs``, and the selection options ``quota``,
            ``distance_threshold``, ``rank`` (:data:`QUOTAS`, :data:`THRESHOLDS`,
            :data:`RANKS`; the defaults are the reference). The selection options only
            change the selection over the candidates, which every run redoes; ``rank
            uncertainty`` needs ``relevance`` to return ``(relevance, outputs)``
            (:func:`assign_relevance` with ``rank``) and is part of the signature.
        prep: the preprocessing of ``hudd test`` (resize, normalise).
        input_shape: ``(channels, H, W)`` the model takes; images of another size are
            skipped and recorded in ``T/skipped.csv``, as unreadable ones are.
        save_every: batches between saves of the candidates (resume granularity).
        explained_by: what the relevance depends on (model weights, composite, ...): with
            the member heatmaps and the preprocessing, part of the resume signature, so a
            rerun never reuses candidates computed for another model.
        embed: a batch's ``(softmax, penultimate features)`` (:func:`pool_embedding`),
            needed by every ``options.select`` but ``hudd``, kept with the candidates.
    """
    from hudd_core.data.robust import SkipLog

    workdir, data_root = Path(workdir), Path(data_root)
    plan = plan_assign(workdir, data_root, options=options, prep=prep, input_shape=input_shape,
                       explained_by=explained_by)  # fmt: skip
    if plan.select != PAPER and embed is None:
        raise ValueError(f"--select {plan.select}: needs the pool's embedding (pool_embedding)")
    index = GroupedIndex(plan.members, plan.labels, searched_groups(relevance, plan.quotas),
                         options.backend)  # fmt: skip
    (workdir / "Assign").mkdir(parents=True, exist_ok=True)
    store = CandidateStore.open(workdir / "Assign" / "candidates.npz", plan.signature)
    skips = SkipLog(workdir)
    batches = pool_batches(plan, store.done, input_shape, batch_size, num_workers)
    search_pool(plan, index, store, skips, batches, save_every=save_every, progress=progress,
                embed=embed if plan.select != PAPER else None)  # fmt: skip
    return finish_assign(workdir, data_root, plan, *store.arrays(),
                         skipped=len(skips.images("assign")), backend=index.backend,
                         gifs=options.gifs, embedding=store.embedding())  # fmt: skip


def pool_batches(
    plan: AssignPlan,
    start: int,
    input_shape: tuple[int, int, int] | None,
    batch_size: int,
    num_workers: int,
) -> Any:
    """The batches ``(x, _, positions, skipped)`` of the pool's positions ``start..n``
    (unreadable and oddly sized images skipped, :mod:`hudd_core.data.robust`)."""
    from torch.utils.data import DataLoader, Subset

    from hudd_core.data.robust import Skipping, collate_skipping

    items = Subset(Skipping(plan.pool, input_shape), range(start, plan.n))
    return DataLoader(items, batch_size=batch_size, num_workers=num_workers,
                      collate_fn=collate_skipping)  # fmt: skip


def search_pool(
    plan: AssignPlan,
    index: GroupedIndex,
    store: CandidateStore,
    skips: Any,
    batches: Any,
    *,
    save_every: int,
    progress: bool,
    embed: Embed | None = None,
) -> None:
    """Every batch's kept candidates into ``store`` (saved every ``save_every`` batches
    and at the end; saved, then a ValueError, at an image whose relevance is not
    finite), and its ``embed`` when given; the skipped images into ``skips``."""
    from hudd_core.progress import bar as progress_bar

    with progress_bar(total=plan.n, initial=store.done, desc="assign", unit="img",
                      enabled=progress) as bar:  # fmt: skip
        for b, (x, _, positions, skipped) in enumerate(batches, start=1):
            for i, reason in skipped:
                skips.add("assign", plan.pool.ids[i], reason)
            if x is not None:
                distances, bad_row, outputs = index.search(x)
                if distances is None:
                    store.save()
                    bad = plan.pool.ids[int(positions[bad_row])]
                    raise ValueError(non_finite_message(plan.layer, bad))
                idx, dist = top_candidates(distances, plan.top)
                store.add(positions.numpy(), idx, dist, batch_uncertainty(plan.rank, outputs))
                if embed is not None:
                    store.add_embedding(*embed(x))
            store.done = max(
                [store.done, *(int(p) + 1 for p in positions), *(i + 1 for i, _ in skipped)]
            )
            bar.update(len(positions) + len(skipped))
            if b % save_every == 0:
                store.save()
    store.save()


def batch_uncertainty(rank: str, outputs: torch.Tensor | None) -> np.ndarray | None:
    """The entropy of a batch's outputs under ``--rank uncertainty`` (None otherwise)."""
    if rank != "uncertainty":
        return None
    if outputs is None:
        raise ValueError("--rank uncertainty: the relevance function returned no model outputs")
    return softmax_entropy(outputs)


def non_finite_message(layer: str, image: str) -> str:
    """The error of an improvement image whose relevance is NaN or inf."""
    return (
        f"assign: NaN or inf relevance at layer {layer} for {image} (candidates "
        "of the images before it are saved; a rerun resumes there)"
    )


def finish_assign(
    workdir: Path,
    data_root: Path,
    plan: AssignPlan,
    done_images: np.ndarray,
    cand_idx: np.ndarray,
    cand_dist: np.ndarray,
    uncertainty: np.ndarray | None = None,
    *,
    skipped: int,
    backend: str,
    gifs: bool = True,
    embedding: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """The greedy quota selection over the kept candidates (pool positions
    ``done_images``, ascending; column indices into ``plan.clusters``; ``uncertainty``
    per image under ``--rank uncertainty``), or ``plan.select``'s at the budget of that
    selection (``embedding``: the images' softmax and penultimate features), then
    ``T/unsafe_set.csv``, ``T/UnsafeSet/`` and the step's summary."""
    quotas = plan.quotas
    cand_cluster = plan.clusters[cand_idx]
    if plan.thresholds is not None:
        cand_cluster = beyond_thresholds(cand_cluster, cand_dist, plan.thresholds)
    priority = None
    if plan.rank == "uncertainty":
        if uncertainty is None or len(uncertainty) != len(done_images):
            raise ValueError("--rank uncertainty: the candidates hold no entropy per image")
        priority = -np.asarray(uncertainty, dtype=np.float64)  # the most uncertain first
    sel = greedy_select(cand_cluster, cand_dist, quotas, priority)
    if plan.select != PAPER:
        sel = pool_selection(plan, cand_idx, cand_dist, embedding, budget=len(sel.image))
    chosen = [plan.pool.ids[i] for i in done_images[sel.image]]
    write_csv(
        workdir / "unsafe_set.csv",
        ["image", "cluster", "distance", "order"],
        [
            (img, int(c), f"{d:.6g}", int(o))
            for img, c, d, o in zip(chosen, sel.cluster, sel.distance, sel.order, strict=True)
        ],
    )
    write_unsafe_folders(workdir, data_root, chosen, sel.cluster, gifs=gifs)
    per = {int(c): int(np.count_nonzero(sel.cluster == c)) for c in quotas}
    return {
        "layer": plan.layer,
        "improvement_images": plan.n,
        "selected": len(chosen),
        "skipped": skipped,
        "quotas": quotas,
        "per_cluster": per,
        "backend": backend,
        "top": plan.top,
        **({} if plan.thresholds is None else {"thresholds": plan.thresholds}),
        **(
            {}
            if plan.select == PAPER
            else {"select": plan.select, "catch_all": int(np.sum(sel.cluster == NOISE))}
        ),
    }


def pool_selection(
    plan: AssignPlan,
    cand_idx: np.ndarray,
    cand_dist: np.ndarray,
    embedding: tuple[np.ndarray, np.ndarray] | None,
    *,
    budget: int,
) -> Selection:
    """``plan.select``'s ``budget`` images (:func:`hudd_core.selection.select`: softmax
    entropy, penultimate features, the quotas; images near no RCC: the catch-all, cluster
    :data:`NOISE`), as a :class:`Selection` over the candidate rows (order 0)."""
    from hudd_core import selection as S

    if embedding is None or len(embedding[0]) != len(cand_idx):
        raise ValueError(f"--select {plan.select}: the candidates hold no embedding per image")
    probs, features = embedding
    D = S.candidate_matrix(cand_idx, cand_dist, len(plan.clusters))
    far = None
    if plan.catch_all is not None:
        far = S.far_from_every(D, np.array([plan.catch_all[int(c)] for c in plan.clusters]))
    quotas = np.array([plan.quotas[int(c)] for c in plan.clusters])
    u = S.uncertainty(probs, S.MEASURE.get(plan.select, "entropy"))
    picks = S.select(plan.select, D, u, budget, features=features, far=far, quotas=quotas)
    near = np.maximum(picks.group, 0)
    cluster = np.where(picks.group == S.CATCH_ALL, NOISE, plan.clusters[near])
    distance = D[picks.index].min(axis=1) if len(picks.index) else np.zeros(0)
    return Selection(picks.index, cluster, distance.astype(np.float32),
                     np.zeros(len(picks.index), dtype=np.int64))  # fmt: skip


def select_embedding(
    model: torch.nn.Module,
    select: str,
    keypoint_of: Mapping[int, int] | None,
    *,
    engine: str = "local",
    device: str = "auto",
) -> Embed | None:
    """The pool embedding ``--select`` needs in this process (None for the paper's
    ``hudd``, and on the Ray engine, whose actors embed their batches with
    :func:`pool_embedding` themselves); a ValueError for a keypoint regressor (no softmax)."""
    if resolve_select(select) == PAPER:
        return None
    if keypoint_of is not None:
        raise ValueError(f"--select {select}: a keypoint regressor has no softmax; use hudd")
    return pool_embedding(model, device) if engine == "local" else None


def pool_embedding(model: torch.nn.Module, device: str = "auto") -> Embed:
    """A batch's ``(softmax, penultimate features)`` (float32, CPU) by one plain forward
    pass (the LRP engine evaluates its own graph, so a module hook sees nothing there):
    what ``--select`` embeds the pool with (:mod:`hudd_core.models.embedding`)."""
    from hudd_core._ext import resolve_device
    from hudd_core.models.embedding import FeatureHook

    param = next(model.parameters(), None)
    dev = resolve_device(device, param.device if param is not None else torch.device("cpu"))
    model = model.to(dev).eval()

    def embed(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad(), FeatureHook(model) as hook:
            logits = model(x.to(dev))
        probs = torch.softmax(logits.double(), dim=1).float().cpu().numpy()
        return probs, hook.take()

    return embed


def write_unsafe_folders(
    workdir: Path, data_root: Path, images: list[str], clusters: np.ndarray, *, gifs: bool = True
) -> Path:
    """``T/UnsafeSet/<cluster>/`` with copies of the selected images (local or named by
    URI) and a GIF per cluster, built in a temporary folder then renamed into place."""
    from hudd_core.data.datasets import copy_image, image_source
    from hudd_core.rcc import unique_flat_names, write_gif

    final = Path(workdir) / "UnsafeSet"
    tmp = fresh_tmp_dir(final)
    for c in np.unique(clusters).tolist():
        folder = tmp / str(c)
        folder.mkdir()
        chosen = [img for img, k in zip(images, clusters, strict=True) if k == c]
        members = [image_source(data_root, img) for img in chosen]
        for src, name in zip(members, unique_flat_names(chosen), strict=True):
            copy_image(src, folder / name)
        if gifs and members:
            write_gif(members, tmp / f"Cluster_{c}.gif")
    replace_dir(tmp, final)
    return final
