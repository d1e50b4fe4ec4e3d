"""No error left unexplained: the noise points a density method leaves (:data:`NOISE`)
attached to their nearest cluster, or gathered in one explicit *miscellaneous* group.

The rule reads no label, only the points of the space the method clustered (its reduced
features) and the clusters' members:

1. A point's distance to a cluster is its Euclidean distance to the cluster's nearest
   member (as the AssignModule measures an improvement image's); its nearest cluster is
   the one of the smallest distance (ties: the smaller id).
2. A cluster's *reach* is the largest distance of one of its members to its nearest other
   member (0 for a single member): a noise point within the reach of its nearest cluster
   is as close to it as the cluster's own members are to each other, and joins it
   (``reach``).
3. The noise points beyond reach stay outside every root-cause cluster: in the
   miscellaneous group (``attach misc``: its own id, k + 1, not a root cause) or as
   :data:`NOISE` (``attach nearest``). When they are more than ``max_unclustered`` of the
   error images, the closest of them (smallest distance to their nearest cluster; ties:
   the earlier image) join their nearest cluster too (``cap``) until the cap holds.

``attach none`` leaves the labels as the method gave them. Deterministic: no seed, no
order but the images'.

Example:
    >>> Z = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [2.5], [6.0]])
    >>> att = attach_noise(Z, np.array([1, 1, 1, 2, 2, 0, 0]), "misc", 0.15)
    >>> att.labels.tolist(), att.marks.tolist(), att.misc
    ([1, 1, 1, 2, 2, 1, 3], ['', '', '', '', '', 'reach', 'misc'], 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hudd_core.cluster.labels import NOISE
from hudd_core.options import DEFAULTS, choices

MODES = choices("attach")  # misc, nearest, none (the option table's)
DEFAULT_MODE = DEFAULTS["attach"]
MAX_UNCLUSTERED = DEFAULTS["max_unclustered"]  # the share that may stay outside every RCC
# What ``attached`` says of an image in T/clusters.csv ("" for a member as clustered).
MARKS = ("reach", "cap", "misc")


@dataclass(frozen=True)
class Attachment:
    """The labels after attachment, per image its mark (:data:`MARKS` or ""), and the
    miscellaneous group's id (None when there is none)."""

    labels: np.ndarray
    marks: np.ndarray
    misc: int | None
    mode: str
    max_unclustered: float

    def record(self) -> dict:
        """The counts ``summary.json`` keeps under ``attach``."""
        n = len(self.labels)
        outside = int(np.sum(self.labels == NOISE)) + self.count("misc")
        return {
            "mode": self.mode,
            "max_unclustered": self.max_unclustered,
            "noise": int(np.sum(self.marks != "")) + int(np.sum(self.labels == NOISE)),
            "attached": self.count("reach") + self.count("cap"),
            "attached_within_reach": self.count("reach"),
            "attached_for_the_cap": self.count("cap"),
            "miscellaneous": self.count("misc"),
            "misc_cluster": self.misc,
            "unclustered": int(np.sum(self.labels == NOISE)),
            "unclustered_share": outside / n if n else 0.0,
        }

    def count(self, mark: str) -> int:
        return int(np.sum(self.marks == mark))


def check_attach(mode: str, max_unclustered: float) -> None:
    """A ValueError for an unknown mode or a cap outside [0, 1]."""
    if mode not in MODES:
        raise ValueError(f"--attach must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0.0 <= float(max_unclustered) <= 1.0:
        raise ValueError(f"--max-unclustered must be a share in [0, 1], got {max_unclustered}")


def nearest_clusters(Z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """For every noise point of ``labels`` (at least one cluster): its nearest cluster and
    the distance to it (to the cluster's nearest member); and every cluster's reach (the
    largest distance of a member to its nearest other member)."""
    from sklearn.neighbors import NearestNeighbors

    Z = np.asarray(Z, dtype=np.float64)
    noise = Z[labels == NOISE]
    ids = np.array(sorted(set(labels.tolist()) - {NOISE}), dtype=np.int64)
    dist = np.full((len(noise), len(ids)), np.inf)
    reach = {}
    for j, c in enumerate(ids.tolist()):
        members = Z[labels == c]
        index = NearestNeighbors(n_neighbors=min(2, len(members))).fit(members)
        reach[c] = float(index.kneighbors(members)[0][:, -1].max()) if len(members) > 1 else 0.0
        if len(noise):
            dist[:, j] = index.kneighbors(noise, n_neighbors=1)[0][:, 0]
    near = np.argmin(dist, axis=1)  # the first of equal distances: the smaller id
    return ids[near], dist[np.arange(len(noise)), near], reach


def attach_noise(
    Z: np.ndarray, labels: np.ndarray, mode: str = DEFAULT_MODE,
    max_unclustered: float = MAX_UNCLUSTERED,
) -> Attachment:  # fmt: skip
    """The noise of ``labels`` (the method's clusters of the rows of ``Z``) attached by
    the rule of this module; labels 1..k keep their ids, the miscellaneous group is k + 1.
    Without any cluster nothing can be attached: the noise stays outside (the cap does
    not hold, ``unclustered_share`` says so)."""
    check_attach(mode, max_unclustered)
    labels = np.asarray(labels, dtype=np.int64)
    out, marks = labels.copy(), np.full(len(labels), "", dtype=object)
    noise = np.flatnonzero(labels == NOISE)
    if mode == "none" or not len(noise) or not np.any(labels != NOISE):
        return Attachment(out, marks.astype(str), None, mode, float(max_unclustered))
    near, dist, reach = nearest_clusters(Z, labels)
    within = dist <= np.array([reach[int(c)] for c in near])
    beyond = np.flatnonzero(~within)
    allowed = int(np.floor(max_unclustered * len(labels) + 1e-9))
    excess = max(0, len(beyond) - allowed)
    forced = beyond[np.argsort(dist[beyond], kind="stable")[:excess]]
    for rows, mark in ((np.flatnonzero(within), "reach"), (forced, "cap")):
        out[noise[rows]], marks[noise[rows]] = near[rows], mark
    left = noise[np.setdiff1d(beyond, forced)]
    misc = None
    if mode == "misc" and len(left):
        misc = int(labels.max()) + 1
        out[left], marks[left] = misc, "misc"
    return Attachment(out, marks.astype(str), misc, mode, float(max_unclustered))


def root_causes(labels: np.ndarray, misc: int | None) -> np.ndarray:
    """``labels`` with the miscellaneous group as :data:`NOISE` (neither is a root cause:
    RQ1 and the counts of clusters leave both out)."""
    labels = np.asarray(labels)
    return labels if misc is None else np.where(labels == misc, NOISE, labels)
