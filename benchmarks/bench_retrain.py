"""RQ2 on the built-in case studies: HUDD's retraining against every same-budget baseline.

For each case (``demo:SEED``, the eyes with the AlexNet-style classifier; ``resnet:SEED``,
the same eyes with the ResNet; ``signs:SEED``, the road signs of :mod:`hudd_core.data.signs`
with the AlexNet-style classifier, each at a demo ``--size``; ``suite:NAME``, a case of
``benchmarks/cases.toml`` as ``bench_quality.py`` builds it, with an ImprovementSet of
:data:`SUITE_POOL` images and the reference's 10 fine-tuning epochs), the work folder is
built once up to the assignment (generate, train, test, heatmaps, cluster, assign; a
restart reuses it), then HUDD's balanced unsafe set, each baseline's images at the same
labelling budget and each ``--selections`` selection (``hudd assign --select``, its
unsafe set balanced as HUDD's, or with ``NAME/uniform`` resampled as the baselines')
are fine-tuned ``--repeats`` times in one process: the model loaded once, the training
images decoded once, one forward pass over the pool. Reported: the test accuracy gain per
method (mean ± std, overall and on the planted regions), HUDD's Vargha–Delaney A12 and
Mann–Whitney p against each baseline, each selection's A12 against every other method,
and where the time went (``seconds``: loading, scoring, the pool pass, the selections'
assignments, the fine-tunings). The results are written after every repeat. Nothing here
is tuned: the reference hyper-parameters are used as they are.

``--variants`` adds HUDD configurations beside the reference ``hudd`` (quota by error
mass, ranking by distance, no threshold, weighted bootstrap): each reruns the assignment
with its options (on the saved candidates; ``rank:uncertainty`` recomputes them once) and
retrains HUDD only, at its own labelling budget; the baselines stay at the reference's.
A variant is ``LABEL=key:value,...`` over ``quota``, ``distance_threshold``, ``rank``
(assignment), ``method`` (the clustering before it: ``hdbscan`` = ``--method recommended``)
and ``freeze``, ``bootstrap`` (retraining), or one of :data:`VARIANTS`.
``--validation F`` also reports every method's gain on a held-out F of the TrainingSet
(what :mod:`hudd_core.tuning` chooses on; the test figures are never used to choose).

    python benchmarks/bench_retrain.py --cases demo:0 demo:1 --repeats 5
    python benchmarks/bench_retrain.py --cases suite:signs-s0 --repeats 5 --threads 1 \
        --baselines BL2 entropy margin badge --selections pool-uncertain pool-borda/uniform \
        --variants                                                 # selections, one core
    python benchmarks/bench_retrain.py --cases demo:0 --repeats 2 --epochs 3   # quick look
    python benchmarks/bench_retrain.py --cases demo:0 --size tiny --repeats 1 --epochs 1 \
        --baselines BL2 --variants uniform uncertainty paper                  # smoke run
    python benchmarks/bench_retrain.py --cases signs:0 resnet:0 --size tiny --repeats 1 \
        --epochs 1 --variants --out /tmp/retrain_smoke                        # other cases

Writes ``benchmarks/results/retrain.json`` and ``retrain.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hudd_core.baselines import BASELINES
from hudd_core.options import RetrainOptions
from hudd_core.selection import DIVERSE_BASELINES, SELECTIONS, UNCERTAINTY

RESULTS = Path(__file__).parent / "results"
# method: the cluster step's; select: hudd assign --select (hudd_core.selection)
ASSIGN_OPTIONS = ("method", "quota", "distance_threshold", "rank", "select")
RETRAIN_OPTIONS = ("freeze", "bootstrap")
# The case kinds of --cases: run_demo's options for each (bench_quality.py's case studies).
CASE_KINDS: dict[str, dict[str, str]] = {
    "demo": {},
    "resnet": {"arch": "resnet"},
    "signs": {"scene": "signs"},
}
# The pipeline steps a case is built with: the retraining is this benchmark's own (a demo
# retrain step would find the benchmark's retrain.json changed and fine-tune again).
PREPARE = ("test", "heatmaps", "cluster", "assign")
# --selections NAME/uniform: NAME's picks resampled as the baselines' are (uniformly to
# hudd's balanced size), not bootstrapped to the same count per cluster
UNIFORM = "uniform"
SUITE_POOL = 4000  # a suite case's ImprovementSet (its TrainingSet: 1,500 images)
VARIANTS = {
    "uniform": {"quota": "uniform"},
    "uncertainty": {"rank": "uncertainty"},
    "paper": {"distance_threshold": "paper"},
    "frozen": {"freeze": "features"},
    "once": {"bootstrap": "none"},
    "hdbscan": {"method": "hdbscan"},  # the clusters of `--method recommended`
    # the label-free selections of `hudd assign --select` (at the paper rule's budget)
    **{name: {"select": name} for name in SELECTIONS},
}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``uniform`` (a name of :data:`VARIANTS`) or ``LABEL=key:value,...``.

    >>> parse_variant("u+p=quota:uniform,distance_threshold:paper")
    ('u+p', {'quota': 'uniform', 'distance_threshold': 'paper'})
    """
    if "=" not in text:
        if text not in VARIANTS:
            raise SystemExit(f"--variants: unknown {text!r}; names: {sorted(VARIANTS)} "
                             "or LABEL=key:value,...")  # fmt: skip
        return text, dict(VARIANTS[text])
    label, _, spec = text.partition("=")
    options = dict(item.split(":", 1) for item in spec.split(",") if item)
    unknown = sorted(set(options) - {*ASSIGN_OPTIONS, *RETRAIN_OPTIONS})
    if unknown:
        raise SystemExit(f"--variants {text}: unknown options {unknown}")
    return label, options


def parse_case(text: str) -> tuple[str, int | str]:
    """``KIND:SEED`` of ``--cases`` (a kind of :data:`CASE_KINDS`), or ``suite:NAME`` (a
    case of ``benchmarks/cases.toml``).

    >>> parse_case("signs:1"), parse_case("suite:gauges-alexnet-s1")
    (('signs', 1), ('suite', 'gauges-alexnet-s1'))
    """
    kind, _, key = text.partition(":")
    if kind == "suite":
        from bench_quality import CASES

        if key not in CASES:
            raise SystemExit(f"--cases {text!r}: no case {key!r} in cases.toml ({list(CASES)})")
        return kind, key
    if kind not in CASE_KINDS or not key.isdigit():
        raise SystemExit(f"--cases {text!r}: expected KIND:SEED, KIND one of "
                         f"{list(CASE_KINDS)}, or suite:NAME")  # fmt: skip
    return kind, int(key)


def prepare_case(case: str, root: Path, size: str) -> tuple[Path, int, int]:
    """``(work folder, seed, default fine-tuning epochs)`` of a case, built once up to the
    assignment: a built-in case study by ``run_demo`` at ``size``; a suite case by
    ``bench_quality.prepare`` (its size, its model) with an ImprovementSet of
    :data:`SUITE_POOL` images, fine-tuned at the reference's epochs."""
    kind, key = parse_case(case)
    if kind == "suite":
        from bench_quality import CASES, prepare

        work, _ = prepare(str(key), root / "suite", pool=SUITE_POOL, steps=PREPARE)
        return work, int(CASES[str(key)]["seed"]), RetrainOptions().epochs
    from hudd_core.demo import SIZES, run_demo

    work = root / f"{kind}_{key}_{size}"
    run_demo(work, size, int(key), baselines=False, repeats=1, progress=False, steps=PREPARE,
             **CASE_KINDS[kind])  # fmt: skip
    return work, int(key), SIZES[size]["retrain_epochs"]


@contextlib.contextmanager
def reference_kept(work: Path) -> Iterator[None]:
    """Leaves the paper rule's unsafe set and candidates as they were: the ``--select``
    assignments in between use (and keep for the next run) their own candidates
    (``candidates_select.npz``: with the pool's softmax and features)."""
    ref, sel = work / "Assign" / "candidates.npz", work / "Assign" / "candidates_select.npz"
    kept = {p: p.read_bytes() for p in (ref, work / "unsafe_set.csv") if p.is_file()}
    if sel.is_file():
        shutil.copyfile(sel, ref)
    try:
        yield
    finally:
        if ref.is_file():
            shutil.copyfile(ref, sel)
        for path, data in kept.items():
            path.write_bytes(data)


def selection_case(case: Any, work: Path, name: str) -> Any:
    """``case`` (a :class:`hudd_core.retrain.Case`) with the unsafe set of ``hudd assign
    --select name`` (labelled after the selection, as the engineer would)."""
    from hudd_core.data.datasets import LabelledImages
    from hudd_core.options import NO_PREPROCESS
    from hudd_core.retrain import label_images, read_unsafe_set

    assign_with(work, {"select": name})
    images, clusters, distances = read_unsafe_set(work)
    data = work / "DataSets"
    unsafe = LabelledImages(data, images, label_images(data, images, case.meta),
                            case.meta["in_channels"], case.meta["task"],
                            NO_PREPROCESS.as_dict())  # fmt: skip
    return replace(case, images=images, clusters=clusters, distances=distances, unsafe=unsafe)


def assign_with(work: Path, options: dict[str, str], recluster: bool = False) -> dict:
    """Reruns the case's assignment with ``options`` (the others: the reference), and
    first its clustering with ``recluster`` (by ``options``' ``method``, default the
    published rule)."""
    from hudd_core.config import load_config
    from hudd_core.models.checkpoint import find_checkpoint
    from hudd_core.pipeline import Run, step_assign, step_cluster

    cfg = load_config(None, {"workdir": str(work), "data": str(work / "DataSets"),
                             "quiet": True, "gifs": False, **options})  # fmt: skip
    run = Run(cfg, find_checkpoint(work))
    if recluster:
        step_cluster(run)
    return step_assign(run)


def planted_gain(result: dict, method: str) -> float:
    """Mean gain over the planted regions (every group but ``none``), test-size weighted."""
    before, after = result["before"].get("planted", {}), result[method].get("planted", {})
    groups = [g for g in before if g != "none"]
    if not groups:
        return float("nan")
    n = np.array([before[g]["n"] for g in groups], dtype=float)
    gain = np.array([after[g]["mean"] - before[g]["accuracy"] for g in groups])
    return float((n * gain).sum() / n.sum())


def shared_retrain(
    work: Path,
    options: RetrainOptions,
    baselines: list[str],
    selections: list[str],
    seed: int,
    on_repeat: Callable[[dict, dict], None] = lambda result, seconds: None,
    first: int = 0,
) -> tuple[dict, dict]:
    """HUDD, every baseline and every ``--select`` selection (``hudd(NAME)``) fine-tuned
    ``options.runs`` times in one process: the model loaded once (each fine-tuning starts
    from a copy of it), the training images decoded once for all, one forward pass over
    the pool for the baselines, each selection's assignment on the candidates kept with
    its embedding. Returns ``(result, seconds)``: retrain.json's figures (the selections
    beside the baselines) and where the time went; ``on_repeat`` gets both after each
    repeat (partial figures of a long run are kept). Repeat ``r`` is seeded ``seed + r``,
    ``r`` from ``first`` (repeats split over processes)."""
    from hudd_core.baselines import improvement_pool
    from hudd_core.data.decoded import Decoded
    from hudd_core.options import NO_PREPROCESS
    from hudd_core.retrain import (
        Runs,
        _bootstrap_target,
        load_case,
        retrain_once,
        score,
        tune_and_score,
    )

    clock = Clock()
    data = work / "DataSets"
    case = load_case(work, data, options, NO_PREPROCESS, model_name=None, labels_csv=None,
                     seed=seed, device="auto", batch_size=256, tuning=False)  # fmt: skip
    case.train_set = Decoded(case.train_set)  # read once for every fine-tuning
    clock.lap("load")
    before = score(case, case.model)
    clock.lap("score_before")
    pool = improvement_pool(case.model, data, case.meta, NO_PREPROCESS, "auto", 256)
    clock.lap("pool_forward")
    with reference_kept(work):
        picked = {n: selection_case(case, work, n) for n in {s.split("/")[0] for s in selections}}
    clock.lap("assign_selections")
    cases = {"hudd": case, **{f"hudd({n})": picked[n.split("/")[0]] for n in selections}}
    runs = {m: Runs({"hudd": []}, {}) for m in cases}
    runs["hudd"] = Runs({m: [] for m in ("hudd", *baselines)}, {b: [] for b in baselines})
    added = {}
    for r in range(first, first + options.runs):
        for m, c in cases.items():
            if m.endswith(f"/{UNIFORM})"):  # the baselines' resampling, to hudd's size
                extra = uniform_sample(c.unsafe, added["hudd"], seed + r)
                tune_and_score(c, options, extra, seed + r, runs[m].scores["hudd"], False)
                added[m] = len(extra)
                clock.lap("fine_tune", count=1)
                continue
            target = _bootstrap_target(work, c.clusters, options.quota_factor, options.quota)
            names = baselines if m == "hudd" else []
            _, balanced = retrain_once(c, options, names, pool if names else None, target,
                                       seed + r, runs[m], progress=False)  # fmt: skip
            added[m] = len(balanced)
            clock.lap("fine_tune", count=1 + len(names))
        result = merged_result(cases, options, runs, before, seed, added)
        on_repeat(result, clock.seconds)
    return result, clock.seconds


def uniform_sample(unsafe: Any, samples: int, seed: int) -> Any:
    """Every image of ``unsafe`` once, then uniform draws from them up to ``samples``: how
    the baselines' picks are resampled (:func:`hudd_core.baselines.baseline_sample`),
    instead of HUDD's bootstrap to the same count in every cluster."""
    from hudd_core.baselines import resampled

    return resampled(unsafe, np.arange(len(unsafe)), samples, np.random.default_rng(seed))


def merged_result(
    cases: dict, options: RetrainOptions, runs: dict, before: Any, seed: int, added: dict
) -> dict:
    """retrain.json's figures of the repeats so far (``added``: each method's balanced
    set size), each selection's HUDD as its own method (its budget in
    ``selection_budget``); a selection's ``selection_versus``: its gains against every
    other method's."""
    from hudd_core.baselines import versus
    from hudd_core.retrain import retrain_result

    done = replace(options, repeats=len(runs["hudd"].scores["hudd"]))
    out: dict = {}
    for m, c in cases.items():
        got = retrain_result(c, done, runs[m], before, seed=seed, saved=None,
                             balanced=range(added[m]), tuning=False)  # fmt: skip
        if m == "hudd":
            out = got
        else:
            out[m] = got["hudd"]
            out.setdefault("selection_budget", {})[m] = len(c.images)
    out["added"] = dict(added)
    gains = {m: out[m]["gain"]["runs"] for m in out if has_gain(out[m])}
    for m in cases:
        if m != "hudd":
            out.setdefault("selection_versus", {})[m] = versus(
                gains[m], {k: v for k, v in gains.items() if k != m}
            )
    return out


def combined(rows: list[dict]) -> list[dict]:
    """One row per case of ``rows`` (results files of runs on the same prepared case):
    runs of other methods (the same ``first_repeat``) give the union of their methods,
    the paper's ``hudd``, in every run, agreeing (else ValueError: another preparation or
    seeds); runs of other repeats (``--first-repeat``) of the same methods are joined.
    Each selection's A12 is recomputed, the fine-tunings' seconds summed.

    >>> a = {"case": "c", "repeats": 2, "seconds_per_repeat": 1.0, "gain": {
    ...     "hudd": {"mean": 0.0, "runs": [0.0, 0.0]}, "hudd(x)": {"mean": 2.0, "runs": [1, 3]}},
    ...     "selection_versus": {"hudd(x)": {}}}
    >>> b = {"case": "c", "repeats": 2, "seconds_per_repeat": 2.0, "gain": {
    ...     "hudd": {"mean": 0.0, "runs": [0.0, 0.0]}, "badge": {"mean": 5.0, "runs": [5, 5]}}}
    >>> r = combined([a, b])[0]
    >>> sorted(r["gain"]), r["selection_versus"]["hudd(x)"]["badge"]["a12"], r["repeats"]
    (['badge', 'hudd', 'hudd(x)'], 0.0, 2)
    >>> later = {**a, "first_repeat": 2, "gain": {"hudd": {"runs": [1.0]}, "hudd(x)": {
    ...     "runs": [5.0]}}, "repeats": 1}
    >>> r = combined([a, later])[0]
    >>> r["repeats"], r["gain"]["hudd(x)"]["runs"], r["gain"]["hudd(x)"]["mean"]
    (3, [1.0, 3.0, 5.0], 3.0)
    """
    from hudd_core.baselines import versus

    out: dict[str, dict] = {}
    for r in rows:
        if r["case"] not in out:
            out[r["case"]] = json.loads(json.dumps(r))
        elif r.get("first_repeat", 0) == out[r["case"]].get("first_repeat", 0):
            united(out[r["case"]], r)
        else:
            joined(out[r["case"]], r)
    for row in out.values():
        runs = {m: g["runs"] for m, g in row["gain"].items()}
        rivals = {m: v for m, v in runs.items() if not m.startswith("hudd")}
        row["versus"] = versus(runs["hudd"], rivals)
        row["selection_versus"] = {  # the --selections (not the --variants)
            m: versus(runs[m], {k: v for k, v in runs.items() if k != m})
            for m in row.get("selection_versus", {})
        }
    return list(out.values())


def united(row: dict, other: dict) -> None:
    """``other``'s methods added to ``row`` (one case, the same repeats)."""
    if other["gain"]["hudd"]["runs"] != row["gain"]["hudd"]["runs"]:
        raise ValueError(f"{row['case']}: the runs to merge differ in hudd's gains (another "
                         "preparation or seeds); rerun them on one prepared case")  # fmt: skip
    for key in ("gain", "planted_gain", "budget", "added_per_method", "selection_versus"):
        row.setdefault(key, {}).update(
            {m: v for m, v in other.get(key, {}).items() if m not in row[key]}
        )
    row["repeats"] = min(row["repeats"], other["repeats"])
    row["seconds_per_repeat"] += other["seconds_per_repeat"]


def joined(row: dict, other: dict) -> None:
    """``other``'s repeats appended to ``row``'s (one case, the same methods)."""
    if set(other["gain"]) != set(row["gain"]):
        raise ValueError(f"{row['case']}: runs of other repeats must have the same methods, "
                         f"got {sorted(row['gain'])} and {sorted(other['gain'])}")  # fmt: skip
    from hudd_core.retrain import _stats  # mean, std (ddof 1), runs: as retrain.json's

    n, k = row["repeats"], other["repeats"]
    for m, g in row["gain"].items():
        g.update(_stats([*g["runs"], *other["gain"][m]["runs"]]))
    for m, v in row.get("planted_gain", {}).items():  # means of n and k repeats
        row["planted_gain"][m] = (n * v + k * other["planted_gain"][m]) / (n + k)
    row["seconds_per_repeat"] = (
        n * row["seconds_per_repeat"] + k * other["seconds_per_repeat"]
    ) / (n + k)
    row["repeats"] = n + k
    row["first_repeat"] = min(row.get("first_repeat", 0), other.get("first_repeat", 0))


def has_gain(value: Any) -> bool:
    """Whether a retrain.json entry is a method's figures."""
    return isinstance(value, dict) and "gain" in value


class Clock:
    """Seconds per phase (``lap(name)``: the time since the last lap), and counts."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t = time.perf_counter()

    def lap(self, name: str, count: int = 0) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.t
        if count:
            self.seconds[f"{name}_count"] = self.seconds.get(f"{name}_count", 0) + count
        self.t = now


def run_case(
    case: str,
    root: Path,
    repeats: int,
    epochs: int,
    baselines: list[str],
    *,
    size: str = "small",
    variants: list[tuple[str, dict[str, str]]] = (),
    selections: list[str] = (),
    validation: float = 0.0,
    on_repeat: Callable[[dict], None] = lambda row: None,
    first: int = 0,
) -> dict:
    """One case's row: every method's gains (``selections`` in the same process as the
    baselines, :func:`shared_retrain`), then the ``variants`` (each its own retraining);
    ``on_repeat`` gets the row so far after each repeat."""
    t = time.perf_counter()
    work, seed, default_epochs = prepare_case(case, root, size)
    prepare = time.perf_counter() - t
    base = RetrainOptions(epochs=epochs or default_epochs, repeats=repeats,
                          validation=validation)  # fmt: skip
    options = replace(base, baselines=baselines)

    def row_of(result: dict, seconds: dict) -> dict:
        return {**case_row(case, size, result, seconds, prepare, validation),
                "first_repeat": first}  # fmt: skip

    result, seconds = shared_retrain(work, options, baselines, list(selections), seed,
                                     on_repeat=lambda *got: on_repeat(row_of(*got)),
                                     first=first)  # fmt: skip
    row = row_of(result, seconds)
    if variants:
        run_variants(row, work, base, variants, result, seed, validation)
    return row


def case_row(
    case: str, size: str, result: dict, seconds: dict, prepare: float, validation: float
) -> dict:
    """The JSON row of a case from :func:`shared_retrain`'s result and timings."""
    methods = [m for m in result if has_gain(result[m])]
    repeats = result["repeats"]
    total = sum(v for k, v in seconds.items() if not k.endswith("_count"))
    row = {
        "case": case,
        "size": size,
        "repeats": repeats,
        "epochs": result["hp"]["epochs"],
        "prepare_seconds": prepare,
        "retrain_seconds": total,
        "seconds_per_repeat": seconds.get("fine_tune", 0.0) / max(repeats, 1),
        "seconds": seconds,
        "budget": {"hudd": result["labelling_budget"], **result.get("selection_budget", {})},
        "added_samples": result["balanced_unsafe_set"],
        "added_per_method": result.get("added", {}),  # hudd and each selection, last repeat
        "before": result["before"]["overall"],
        "gain": {m: result[m]["gain"] for m in methods},
        "planted_gain": {m: planted_gain(result, m) for m in methods},
        "versus": result.get("versus", {}),
        "selection_versus": result.get("selection_versus", {}),
    }
    if validation:
        row["validation_gain"] = {m: result[m]["validation_gain"] for m in methods}
    return row


def run_variants(
    row: dict,
    work: Path,
    base: RetrainOptions,
    variants: list[tuple[str, dict[str, str]]],
    result: dict,
    seed: int,
    validation: float,
) -> None:
    """Each HUDD configuration of ``variants`` (its own assignment and retraining, HUDD
    only, at its own budget) into ``row``; the work folder left as the reference's."""
    from hudd_core.baselines import versus
    from hudd_core.retrain import run_retrain

    common = {"seed": seed, "progress": False}
    against = {m: g["runs"] for m, g in row["gain"].items()}
    clustered = "hudd"
    with reference_kept(work):
        for label, options in variants:
            name = f"hudd({label})"
            method = options.get("method", "hudd")  # the clusters this variant selects from
            t = time.perf_counter()
            assign_with(work, {k: v for k, v in options.items() if k in ASSIGN_OPTIONS},
                        recluster=method != clustered)  # fmt: skip
            assigned = time.perf_counter() - t
            clustered = method
            retrain = {k: v for k, v in options.items() if k in RETRAIN_OPTIONS}
            if "quota" in options:  # the bootstrap target follows the assignment's quota
                retrain["quota"] = options["quota"]
            t = time.perf_counter()
            got = run_retrain(work, work / "DataSets", options=replace(base, **retrain),
                              **common)  # fmt: skip
            row.setdefault("variant_seconds", {})[name] = {
                "assign": assigned,
                "retrain_per_repeat": (time.perf_counter() - t) / base.runs,
            }
            row.setdefault("variant_added_samples", {})[name] = got["balanced_unsafe_set"]
            row["gain"][name] = got["hudd"]["gain"]
            row["planted_gain"][name] = planted_gain(got, "hudd")
            row["budget"][name] = got["labelling_budget"]
            if validation:
                row["validation_gain"][name] = got["hudd"]["validation_gain"]
            row.setdefault("variant_versus", {})[name] = versus(got["hudd"]["gain"]["runs"],
                                                                against)  # fmt: skip
        if clustered != "hudd":  # the reference's clusters back (its unsafe set: kept above)
            assign_with(work, {}, recluster=True)


def markdown(rows: list[dict]) -> str:
    """The gains table (one row per case) and, for the ``--selections``, each one's A12
    against every other method."""
    methods = list(dict.fromkeys(m for r in rows for m in r["gain"]))
    out = ["| case | n | " + " | ".join(methods) + " | s/repeat |",
           "|---|---|" + "---|" * (len(methods) + 1)]  # fmt: skip
    for r in rows:
        cells = [gain_cell(r, m) if m in r["gain"] else "" for m in methods]
        out.append(f"| {r['case']} | {r.get('repeats', '')} | " + " | ".join(cells)
                   + f" | {r['seconds_per_repeat']:.0f} |")  # fmt: skip
    out.append(
        "\nTest accuracy gain in pp, mean ± std over n repeats (planted regions in "
        "parentheses); A12: HUDD's Vargha–Delaney effect size against that baseline on the "
        "overall gains (0.5 = no difference); val: the gain on the held-out validation "
        "split (--validation); B: the labelling budget of a HUDD configuration (the "
        "baselines use the reference hudd's); hudd(...): the --selections and --variants; "
        "s/repeat: the fine-tunings' seconds per repeat."
    )
    for r in rows:
        for m, against in r.get("selection_versus", {}).items():
            if not out[-1].startswith("| "):
                out += ["", "| case | selection | A12 against |", "|---|---|---|"]
            a12 = ", ".join(f"{k} {v['a12']:.2f}" for k, v in against.items())
            out.append(f"| {r['case']} | {m} | {a12} |")
    return "\n".join(out + goals_markdown(rows))


# The bar for a selection: its label-free rivals (BL1 and BL1-oracle read labels).
LABEL_FREE_BASELINES = ("BL2", *UNCERTAINTY, *DIVERSE_BASELINES)


def goals(rows: list[dict], method: str) -> dict[str, Any]:
    """How ``method`` (a ``hudd(NAME)`` selection) meets the bar over the ``rows``' cases:
    ``best`` the cases where its mean gain is the highest of every label-free method
    (the paper's ``hudd``, the other selections, :data:`LABEL_FREE_BASELINES`);
    ``over_uncertainty`` the mean over the cases of its gain less the best of
    :data:`hudd_core.selection.UNCERTAINTY` on that case (pp); ``a12`` the cases where its A12
    against every label-free baseline is at least 0.7; ``below_bl2`` the cases where its
    mean gain is below BL2's.

    >>> row = {"case": "c", "gain": {"hudd": {"mean": 0.01}, "BL2": {"mean": 0.0},
    ...        "margin": {"mean": 0.02}, "hudd(x)": {"mean": 0.03}},
    ...        "selection_versus": {"hudd(x)": {"BL2": {"a12": 1.0}, "margin": {"a12": 0.6}}}}
    >>> g = goals([row], "hudd(x)")
    >>> g["best"], round(g["over_uncertainty"], 6), g["a12"], g["below_bl2"]
    (['c'], 1.0, [], [])
    """
    best, over, a12, below = [], [], [], []
    for r in rows:
        gain = {m: g["mean"] for m, g in r["gain"].items()
                if m == "hudd" or m.startswith("hudd(") or m in LABEL_FREE_BASELINES}  # fmt: skip
        if method not in gain:
            continue
        if gain[method] >= max(gain.values()):
            best.append(r["case"])
        unc = [gain[m] for m in UNCERTAINTY if m in gain]
        if unc:
            over.append(100 * (gain[method] - max(unc)))
        against = r.get("selection_versus", {}).get(method, {})
        rivals = [m for m in LABEL_FREE_BASELINES if m in against]
        if rivals and min(against[m]["a12"] for m in rivals) >= 0.7:
            a12.append(r["case"])
        if "BL2" in gain and gain[method] < gain["BL2"]:
            below.append(r["case"])
    return {"cases": sum(method in r["gain"] for r in rows), "best": best,
            "over_uncertainty": float(np.mean(over)) if over else float("nan"),
            "a12": a12, "below_bl2": below}  # fmt: skip


def goals_markdown(rows: list[dict]) -> list[str]:
    """One line per selection of the rows: :func:`goals` against the bar (highest
    label-free gain on 5 of 6 cases, ≥ 1 pp over the best uncertainty baseline on average,
    A12 ≥ 0.7 against each baseline on 4 of 6, never below BL2)."""
    out = ["", "| selection | cases | highest label-free gain | pp over the best uncertainty "
           "baseline (mean) | A12 ≥ 0.7 against every baseline | below BL2 |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    selections = dict.fromkeys(m for r in rows for m in r.get("selection_versus", {}))
    for m in selections:
        g = goals(rows, m)
        out.append(f"| {m} | {g['cases']} | {len(g['best'])} | {g['over_uncertainty']:+.2f} "
                   f"| {len(g['a12'])} | {len(g['below_bl2'])} |")  # fmt: skip
    return out if selections else []


def gain_cell(r: dict, m: str) -> str:
    """One method's cell of :func:`markdown`."""
    g = r["gain"][m]
    cell = f"{100 * g['mean']:+.1f} ± {100 * g['std']:.1f} ({100 * r['planted_gain'][m]:+.1f})"
    if m in r["versus"]:
        cell += f", A12 {r['versus'][m]['a12']:.2f}"
    if "validation_gain" in r:
        cell += f", val {100 * r['validation_gain'][m]['mean']:+.1f}"
    if m in r["budget"]:
        cell += f", B={r['budget'][m]}"
    return cell


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=["demo:0", "demo:1"],
                   help=f"KIND:SEED, KIND one of {', '.join(CASE_KINDS)}")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=0, help="0: the demo's retraining epochs")
    p.add_argument("--baselines", nargs="+", default=[b for b in BASELINES])
    p.add_argument("--root", default="/tmp/hudd_bench_retrain")
    p.add_argument("--out", default=str(RESULTS), help="folder of NAME.json / NAME.md")
    p.add_argument("--name", default="retrain", help="the results' file name (no suffix)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch's CPU threads (0: its default); 1 on a shared machine, where "
                   "more threads than free cores make each SGD step ~4x slower")  # fmt: skip
    p.add_argument("--size", default="small", help="demo size: tiny, small, medium, large")
    p.add_argument("--variants", nargs="*", default=["uniform", "uncertainty", "paper"],
                   help=f"HUDD configurations beside the reference: {', '.join(VARIANTS)} "
                   "or LABEL=key:value,... (none: the reference only)")  # fmt: skip
    p.add_argument("--validation", type=float, default=0.0,
                   help="also report gains on this held-out share of the TrainingSet")  # fmt: skip
    p.add_argument("--selections", nargs="*", default=[],
                   choices=[*SELECTIONS, *(f"{n}/{UNIFORM}" for n in SELECTIONS)],
                   help="hudd assign --select selections, fine-tuned beside the baselines "
                   "(hudd(NAME), one process: shared model, images and pool pass); "
                   "NAME/uniform: its picks resampled as the baselines' are")  # fmt: skip
    p.add_argument("--gini-share", type=float, default=None,
                   help="gini-near's share of B by uncertainty alone (default: "
                   "hudd_core.selection.SPLIT_SHARE); for tuning on development cases")  # fmt: skip
    p.add_argument("--first-repeat", type=int, default=0,
                   help="the first repeat's index (its seed's offset): a case's repeats "
                   "split over processes, each on its own copy of --root")  # fmt: skip
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="no run: write --name from these results files' rows (one run's "
                   "cases split over processes, one core each)")  # fmt: skip
    args = p.parse_args()
    if args.merge:
        rows = combined([r for f in args.merge for r in json.loads(Path(f).read_text())])
        write_results(args, rows)
        print(markdown(rows))
        return
    for case in args.cases:  # before hours of work on the first
        parse_case(case)
    variants = [parse_variant(v) for v in args.variants]
    if args.first_repeat and variants:
        p.error("--first-repeat: the --variants are seeded from repeat 0; give --variants alone")
    if args.gini_share is not None:
        import hudd_core.selection

        hudd_core.selection.SPLIT_SHARE = args.gini_share
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for c in args.cases:
        row = run_case(c, Path(args.root), args.repeats, args.epochs, args.baselines,
                       size=args.size, variants=variants, selections=args.selections,
                       validation=args.validation, first=args.first_repeat,
                       on_repeat=lambda partial: write_results(args, [*rows, partial]))  # fmt: skip
        rows.append(row)
        write_results(args, rows)
    print(markdown(rows))


def write_results(args: argparse.Namespace, rows: list[dict]) -> None:
    """``NAME.json`` and ``NAME.md`` of the rows so far (after every repeat)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=2))
    (out / f"{args.name}.md").write_text(markdown(rows) + "\n")


if __name__ == "__main__":
    main()
