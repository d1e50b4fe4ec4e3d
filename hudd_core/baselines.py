"""Same-budget baselines of the retraining (HUDD step 7) and the statistics that compare
HUDD with them.

B, the labelling budget, is the number of distinct unsafe images HUDD had labelled. Each
baseline picks its images from the ImprovementSet (:data:`BASELINES`):

* ``BL1`` (the paper's and the published toolset's): label B random improvement images
  and keep those the model gets wrong;
* ``BL2``: B random improvement images;
* ``entropy``, ``margin``, ``deepgini``: the B most uncertain pool images by the softmax
  of one forward pass (entropy −Σ p log p, the top-1 − top-2 margin, DeepGini's
  1 − Σ p²); Weiss & Tonella (ISSTA 2022) found these as strong as any (classifiers);
* ``BL1-oracle`` (an extra, not the paper's): B random images among all those the model
  gets wrong, which needs the whole pool labelled;
* ``margin-diverse``, ``badge``: uncertainty with diversity (:mod:`hudd_core.selection`):
  the smallest margins then k-center greedy on the penultimate features; BADGE's
  gradient embeddings with k-means++ seeding (Ash et al., ICLR 2020).

Each is resampled uniformly to the same number of added samples as HUDD's balanced set,
so only the choice of images differs.

Example:
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4]])
    >>> uncertainty(p, "margin").round(2).tolist()  # higher = more uncertain
    [-0.8, -0.0, -0.2]
    >>> vargha_delaney_a12([3.0, 4.0], [1.0, 2.0]), vargha_delaney_a12([1.0], [1.0])
    (1.0, 0.5)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hudd_core.data.datasets import ImageSet, LabelledImages
from hudd_core.options import Preprocess
from hudd_core.selection import (
    DIVERSE_BASELINES,
    UNCERTAINTY,
    badge,
    margin_diverse,
    uncertainty,
)

BASELINES = ("BL1", "BL2", *UNCERTAINTY, "BL1-oracle", *DIVERSE_BASELINES)


def baseline_names(baselines: bool | Sequence[str] | None) -> list[str]:
    """The baselines asked for: ``True`` → the paper's BL1 and BL2; names are checked.

    >>> baseline_names(True), baseline_names(["BL1-oracle"]), baseline_names(False)
    (['BL1', 'BL2'], ['BL1-oracle'], [])
    """
    if baselines is True:
        return ["BL1", "BL2"]
    names = list(baselines or [])
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown {unknown}; the baselines are {list(BASELINES)}")
    return names


@dataclass
class Pool:
    """The labelled, readable improvement images, whether the model gets each right (the
    oracle knowledge BL1 reads only for the images it labels) and, for classifiers, the
    softmax of the forward pass (the uncertainty baselines)."""

    images: LabelledImages
    correct: np.ndarray
    probs: np.ndarray | None = None
    features: np.ndarray | None = None  # penultimate (margin-diverse, badge)


def set_options(meta: dict[str, Any], prep: Preprocess) -> dict[str, Any]:
    """The :class:`~hudd_core.data.datasets.ImageSet` options of the model ``meta``'s
    images: its task, channels and classes, and the preprocessing."""
    classes = meta["classes"] if meta["task"] == "classifier" else None
    return {"task": meta["task"], "channels": meta["in_channels"], "classes": classes,
            **prep.as_dict()}  # fmt: skip


def improvement_pool(
    model, data_root: Path, meta: dict[str, Any], prep: Preprocess, device: str, batch_size: int
) -> Pool:
    """One forward pass over the ImprovementSet (read with ``prep``), shared by every
    baseline of every repeat."""
    import torch

    from hudd_core.models.embedding import FeatureHook
    from hudd_core.testing import DEFAULT_THRESHOLD, keypoint_errors, predict_readable

    improvement = ImageSet(Path(data_root) / "ImprovementSet", **set_options(meta, prep))
    classifier = meta["task"] == "classifier"
    with FeatureHook(model) if classifier else contextlib.nullcontext() as hook:
        out, targets, pos, _ = predict_readable(model, improvement, batch_size=batch_size,
                                                device=device, progress=False)  # fmt: skip
    everything = LabelledImages(Path(data_root), improvement.ids, np.asarray(improvement.targets),
                                meta["in_channels"], meta["task"], prep.as_dict())  # fmt: skip
    if classifier:
        features = hook.features()
        if len(features) != len(out):
            raise ValueError(f"improvement pool: {len(features)} feature rows for "
                             f"{len(out)} outputs (the head ran outside forward)")  # fmt: skip
        probs = torch.softmax(torch.as_tensor(out, dtype=torch.float64), dim=1).numpy()
        correct = out.argmax(axis=1) == np.asarray(targets)
        return Pool(everything.subset(pos), correct, probs, features)
    ok = keypoint_errors(out, np.asarray(targets)).mean(axis=1) <= DEFAULT_THRESHOLD
    return Pool(everything.subset(pos), ok)


def baseline_sample(
    name: str, pool: Pool, budget: int, samples: int, seed: int
) -> tuple[LabelledImages, int]:
    """A baseline's added training images at labelling budget ``budget``, resampled
    uniformly to ``samples``; also the number of distinct images it keeps (BL1 may keep
    none: then nothing is added)."""
    rng = np.random.default_rng(seed)
    n = len(pool.images)
    if name == "BL1-oracle":
        wrong = np.flatnonzero(~pool.correct)
        chosen = rng.choice(wrong, size=min(budget, len(wrong)), replace=False)
    elif name in UNCERTAINTY:
        if pool.probs is None:
            raise ValueError(f"--baselines {name}: needs a classifier's softmax outputs")
        score = uncertainty(pool.probs, name)
        chosen = np.argsort(-score, kind="stable")[: min(budget, n)]
    elif name in DIVERSE_BASELINES:
        if pool.probs is None or pool.features is None:
            raise ValueError(f"--baselines {name}: needs a classifier's softmax and features")
        if name == "margin-diverse":
            chosen = margin_diverse(pool.probs, pool.features, budget)
        else:
            chosen = badge(pool.probs, pool.features, budget, seed=seed)
    elif name in ("BL1", "BL2"):
        chosen = rng.choice(n, size=min(budget, n), replace=False)
        if name == "BL1":
            chosen = chosen[~pool.correct[chosen]]
    else:
        raise ValueError(f"unknown baseline {name!r}; one of {BASELINES}")
    if len(chosen) == 0:
        return pool.images.subset(np.zeros(0, dtype=np.int64)), 0
    return resampled(pool.images, chosen, samples, rng), len(chosen)


def resampled(
    images: LabelledImages, chosen: np.ndarray, samples: int, rng: np.random.Generator
) -> LabelledImages:
    """Every ``chosen`` image of ``images`` once, then uniform draws from them (with
    replacement) up to ``samples``: how a baseline's picks become its added training set."""
    from hudd_core.balance import uniform_resample

    return images.subset(uniform_resample(np.asarray(chosen), samples, rng))


def vargha_delaney_a12(x: Sequence[float], y: Sequence[float]) -> float:
    """Vargha–Delaney A12: the probability that a run of ``x`` beats one of ``y`` (ties
    count half). 0.5: no difference; ≥ 0.71 is conventionally a large effect."""
    a, b = np.asarray(x, dtype=np.float64)[:, None], np.asarray(y, dtype=np.float64)[None, :]
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Mann–Whitney U p-value (SciPy); 1.0 when the samples cannot differ."""
    from scipy.stats import mannwhitneyu

    if np.ptp(np.concatenate([np.asarray(x, float), np.asarray(y, float)])) == 0:
        return 1.0
    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def versus(hudd: Sequence[float], others: dict[str, Sequence[float]]) -> dict[str, dict]:
    """HUDD's gains against each baseline's: ``{name: {"a12", "p_value"}}``."""
    return {
        name: {"a12": vargha_delaney_a12(hudd, runs), "p_value": mann_whitney_p(hudd, runs)}
        for name, runs in others.items()
    }
