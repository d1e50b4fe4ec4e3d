"""Choosing HUDD's options on a validation split of the TrainingSet, never on the TestSet.

Issue 18: the options that may make the retraining better (quota, threshold, ranking,
bootstrap, epochs, learning rate, freezing) are tuned on held-out training images, so the
test accuracy that is reported stays an unbiased estimate. :func:`tune_on_validation` runs
one trial per candidate option set and picks the best mean validation gain of a method;
the default trial is :func:`hudd_core.retrain.run_retrain` with ``tuning=True`` (the
TestSet is never opened, nothing is written), over the unsafe set already in ``T``.
Assignment options (``quota``, ``distance_threshold``, ``rank``) change the unsafe set: pass
a ``trial`` that runs the assignment first (``benchmarks/bench_retrain.py`` does).

Example (a fake trial: option sets and their validation gains)::

    >>> gains = {"none": [0.01, 0.03], "features": [0.02, 0.04]}
    >>> trial = lambda o: {"hudd": {"validation_gain": {"mean": sum(gains[o["freeze"]]) / 2}}}
    >>> tune_on_validation([{"freeze": "none"}, {"freeze": "features"}], trial=trial)["best"]
    {'freeze': 'features'}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hudd_core.options import REFERENCE_RETRAIN, RetrainOptions

Trial = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def retrain_trial(
    workdir: str | Path,
    data_root: str | Path,
    *,
    validation: float = 0.2,
    options: RetrainOptions = REFERENCE_RETRAIN,
    **common: Any,
) -> Trial:
    """A trial that fine-tunes with ``options`` overridden by the candidate's (fields of
    :class:`~hudd_core.options.RetrainOptions`: ``lr``, ``freeze``, ``bootstrap``, ...) on
    the TrainingSet less a held-out ``validation`` fraction, and scores it there only
    (``tuning=True``); ``common``: the other ``run_retrain`` keywords."""
    from hudd_core.retrain import run_retrain

    if not 0 < validation < 1:
        raise ValueError(f"tuning needs a validation fraction in (0, 1), got {validation!r}")

    def trial(candidate: Mapping[str, Any]) -> Mapping[str, Any]:
        chosen = replace(options, **candidate, validation=validation)
        return run_retrain(workdir, data_root, options=chosen, **common, tuning=True)

    return trial


def tune_on_validation(
    candidates: Sequence[Mapping[str, Any]],
    *,
    trial: Trial | None = None,
    method: str = "hudd",
    workdir: str | Path | None = None,
    data_root: str | Path | None = None,
    validation: float = 0.2,
    **common: Any,
) -> dict[str, Any]:
    """The candidate option set with the best mean validation gain of ``method``.

    ``trial(options)`` returns a ``retrain.json``-like result with
    ``result[method]["validation_gain"]["mean"]``; by default
    :func:`retrain_trial` over ``workdir``/``data_root`` with ``validation`` and the
    ``common`` keywords of :func:`retrain_trial` (``options``, the base options) and
    ``run_retrain``. Ties go to the earlier candidate. Returns
    ``{"best", "index", "method", "trials": [{"options", "validation_gain"}]}``.
    """
    if not candidates:
        raise ValueError("tune_on_validation: no candidate option set")
    if trial is None:
        if workdir is None or data_root is None:
            raise ValueError("tune_on_validation: give a trial, or workdir and data_root")
        trial = retrain_trial(workdir, data_root, validation=validation, **common)
    trials = []
    for options in candidates:
        result = trial(options)
        if "validation_gain" not in result.get(method, {}):
            raise ValueError(f"tune_on_validation: the trial of {dict(options)} has no "
                             f"validation_gain for {method!r} (was --validation 0?)")  # fmt: skip
        trials.append(
            {"options": dict(options), "validation_gain": result[method]["validation_gain"]}
        )
    means = [t["validation_gain"]["mean"] for t in trials]
    best = means.index(max(means))
    return {"best": dict(candidates[best]), "index": best, "method": method, "trials": trials}
