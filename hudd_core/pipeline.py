"""The pipeline: HUDD's steps chained as plain function calls over the work folder.

:func:`run_pipeline` (``hudd run``) chains test → heatmaps → cluster → assign → retrain →
report with one configuration (:mod:`hudd_core.config`). Every step reads the previous
steps' files in ``T/`` and is recorded in ``T/run.json`` (:class:`~hudd_core.runstate.RunLog`)
with a fingerprint of its options and inputs: a rerun skips the steps that are complete
and unchanged, re-runs a step whose options or inputs changed (and so the steps after it,
whose inputs it rewrites), and the long steps resume their own partial work per batch.

The demo (generate, train, then this pipeline) is :mod:`hudd_core.demo`.

Example (the options are checked before any step runs):
    >>> from hudd_core.config import load_config
    >>> STEPS
    ('test', 'heatmaps', 'cluster', 'assign', 'retrain', 'report')
    >>> validate(load_config(None, {"workdir": "T", "selection": "kne"}))
    Traceback (most recent call last):
    ValueError: --selection: 'kne' is not one of wicd-knee, silhouette
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hudd_core.config import (
    DEFAULTS,
    FEATURE_OPTIONS,
    RAY_OPTIONS,
    check_choice,
    pick,
)
from hudd_core.models.checkpoint import load_checkpoint, prepare_checkpoint
from hudd_core.options import AssignOptions, Preprocess, RayOptions, RetrainOptions
from hudd_core.runstate import NothingToDo, RunLog, fingerprint

log = logging.getLogger("hudd")

STEPS = tuple(DEFAULTS["steps"])


@dataclass
class Run:
    """What every step gets: the configuration, the folders and the model checkpoint."""

    cfg: dict[str, Any]
    checkpoint: Path

    @property
    def workdir(self) -> Path:
        return Path(self.cfg["workdir"])

    @property
    def data(self) -> Path:
        return Path(self.cfg["data"])

    @property
    def progress(self) -> bool:
        return not self.cfg["quiet"]


# --- the steps ------------------------------------------------------------------------


def step_test(run: Run) -> dict[str, Any]:
    """The TestModule over TrainingSet and TestSet (accuracy per planted region too)."""
    from hudd_core.testing import RESULT_FILES, accuracy_by_planted, run_test

    cfg = run.cfg
    model, meta = load_checkpoint(run.checkpoint)
    options = pick(cfg, "batch_size", "device", "threshold", "num_workers")
    summary = run_test(model, run.data, run.workdir, meta, **options,
                       prep=Preprocess.from_config(cfg), model_file=run.checkpoint,
                       progress=run.progress, predictor=predictor(cfg))  # fmt: skip
    result = run.workdir / RESULT_FILES["TestSet"]
    return {"summary": summary, "planted": accuracy_by_planted(run.data, "TestSet", result)}


HEATMAP_OPTIONS = ("composite", "layers", "float16", "batch_size", "device", "num_workers")


def step_heatmaps(run: Run) -> dict[str, Any]:
    """LRP heatmaps of every (or the configured) layer for the Wrong test images."""
    from hudd_core.heatmaps import run_heatmaps

    cfg = run.cfg
    model, meta = load_checkpoint(run.checkpoint)
    options = pick(cfg, *HEATMAP_OPTIONS)
    summary = run_heatmaps(run.workdir, run.data, model, meta, **options,
                           prep=Preprocess.from_config(cfg), progress=run.progress)  # fmt: skip
    return {k: v for k, v in summary.items() if k != "seconds"}


def step_cluster(run: Run) -> dict[str, Any]:
    """Per-layer clustering, the best layer and its RCCs."""
    from hudd_core.cluster import run_cluster
    from hudd_core.cluster.methods import needs
    from hudd_core.heatmaps import run_heatmaps
    from hudd_core.inspection import update_inspection

    cfg = run.cfg
    if needs(cfg["method"]) in ("activations", "both"):  # the method's features, once
        model, meta = load_checkpoint(run.checkpoint)
        run_heatmaps(run.workdir, run.data, model, meta, activations=True,
                     prep=Preprocess.from_config(cfg), progress=run.progress,
                     **pick(cfg, *HEATMAP_OPTIONS))  # fmt: skip
    options = pick(cfg, "layers", "k_range", "selection", "device", "approx_threshold",
                   "seed", "gifs", "method", "trust_model_file", "attach", "max_unclustered",
                   *FEATURE_OPTIONS)  # fmt: skip
    s = run_cluster(run.workdir, run.data, **options, export=cfg["export_distances"],
                    progress=run.progress)  # fmt: skip
    update_inspection(run.workdir, run.data)  # T/inspection.csv, the engineer's template
    facts = {k: s[k] for k in ("best_layer", "n_images", "n_clusters", "inspect_share")}
    facts["clustering"] = s["clustering"]
    if "rq1" in s:
        facts["rq1_share_50pct"] = s["rq1"]["share_50pct"]
        facts["planted"] = s["rq1"].get("planted", {})
    return facts


def step_assign(run: Run) -> dict[str, Any]:
    """The improvement images closest to the RCCs, at the selected layer. Keypoint
    regressors explain each RCC by the keypoint its members most often fail on."""
    from hudd_core.assign import (
        assign_relevance,
        rcc_keypoints,
        read_rccs,
        run_assign,
        select_embedding,
    )
    from hudd_core.models.checkpoint import model_fingerprint

    cfg = run.cfg
    layer, images, labels = read_rccs(run.workdir)
    model, meta = load_checkpoint(run.checkpoint)
    keypoint_of = None
    if meta["task"] != "classifier":
        keypoint_of = rcc_keypoints(run.workdir / "testResult.csv", images, labels)
    size = cfg["image_size"] or meta["input_size"]
    shape = (meta["in_channels"], size, size)
    by = {"weights": model_fingerprint(model), "composite": cfg["composite"]}
    common = {"options": AssignOptions.from_config(cfg), "prep": Preprocess.from_config(cfg),
              "input_shape": shape, "batch_size": cfg["batch_size"], "explained_by": by,
              "progress": run.progress}  # fmt: skip
    embed = select_embedding(model, cfg["select"], keypoint_of, engine=cfg["engine"],
                             device=cfg["device"])  # fmt: skip
    if cfg["engine"] == "ray":
        from hudd_core.engine_ray import ray_assign

        return ray_assign(run.workdir, run.data, model, layer, keypoint_of, **common,
                          ray=RayOptions.from_config(cfg), device=cfg["device"])  # fmt: skip
    explain = {"composite": cfg["composite"], "device": cfg["device"], "rank": cfg["rank"]}
    relevance = assign_relevance(model, layer, keypoint_of, **explain)
    return run_assign(run.workdir, run.data, relevance, **common,
                      num_workers=cfg["num_workers"], embed=embed)  # fmt: skip


def predictor(cfg: dict[str, Any]) -> Callable[..., tuple] | None:
    """The test step's model runner: None (this process) or the Ray engine's."""
    if cfg["engine"] != "ray":
        return None
    from hudd_core.engine_ray import ray_predictor

    return ray_predictor(RayOptions.from_config(cfg))


def step_retrain(run: Run) -> dict[str, Any]:
    """Labels, bootstrap balancing and fine-tuning (and the baselines when asked)."""
    from hudd_core.baselines import BASELINES
    from hudd_core.retrain import run_retrain
    from hudd_core.selection import UNIFORM_RESAMPLED, resolve_select

    cfg = run.cfg
    options = RetrainOptions.from_config(cfg)
    if resolve_select(cfg["select"]) in UNIFORM_RESAMPLED and options.bootstrap == "weighted":
        options = replace(options, bootstrap="uniform")  # as it was chosen (selection.py)
    result = run_retrain(run.workdir, run.data, options=options,
                         prep=Preprocess.from_config(cfg), model_name=run.checkpoint.stem,
                         labels_csv=cfg["labels"], seed=cfg["seed"], device=cfg["device"],
                         eval_batch_size=cfg["batch_size"], progress=run.progress)  # fmt: skip
    keep = ("before", "hudd", *BASELINES, "versus", "repeats", "labelling_budget",
            "retrained_model")  # fmt: skip
    return {k: result[k] for k in keep if k in result}


def step_report(run: Run) -> dict[str, Any]:
    """``T/report.html`` from every step's files."""
    from hudd_core.report import build_report

    return {"path": str(build_report(run.workdir, run.data))}


# What each step runs, the options and files it depends on, and what it writes: a step is
# skipped when its fingerprint is unchanged and its outputs exist. The report is cheap and
# shows every step, so it is always rewritten.
@dataclass(frozen=True)
class StepSpec:
    func: Callable[[Run], dict[str, Any]]
    options: tuple[str, ...]
    inputs: Callable[[Run], list[Path]]
    outputs: tuple[str, ...]


SPECS: dict[str, StepSpec] = {
    "test": StepSpec(
        step_test,
        ("threshold", "image_size", "mean", "std"),
        lambda r: [r.checkpoint, r.data / "TrainingSet", r.data / "TestSet"],
        ("trainResult.csv", "testResult.csv"),
    ),
    "heatmaps": StepSpec(
        step_heatmaps,
        ("layers", "composite", "float16", "image_size", "mean", "std"),
        lambda r: [r.checkpoint, r.workdir / "testResult.csv"],
        ("Heatmaps/index.csv", "Heatmaps/layers.json"),
    ),
    "cluster": StepSpec(
        step_cluster,
        (
            "layers",
            "k_range",
            "selection",
            "approx_threshold",
            "seed",
            "gifs",
            "export_distances",
            "method",
            "attach",
            "max_unclustered",
        ),
        lambda r: [r.workdir / "Heatmaps" / "index.csv", r.data / "TestSet" / "metadata.csv"],
        ("clusters.csv",),
    ),
    "assign": StepSpec(
        step_assign,
        (
            "composite",
            "top",
            "quota_factor",
            "limit",
            "gifs",
            "image_size",
            "mean",
            "std",
            "quota",
            "distance_threshold",
            "rank",
            "select",
        ),
        lambda r: [r.checkpoint, r.workdir / "clusters.csv", r.data / "ImprovementSet"],
        ("unsafe_set.csv",),
    ),
    "retrain": StepSpec(
        step_retrain,
        (
            "labels",
            "epochs",
            "lr",
            "momentum",
            "weight_decay",
            "train_batch_size",
            "baselines",
            "repeats",
            "group_by",
            "seed",
            "quota_factor",
            "image_size",
            "mean",
            "std",
            "quota",
            "freeze",
            "bootstrap",
            "validation",
            "select",
        ),
        lambda r: [
            r.checkpoint,
            r.workdir / "unsafe_set.csv",
            r.data / "TrainingSet",
            r.data / "TestSet",
            *([Path(r.cfg["labels"])] if r.cfg["labels"] else []),
        ],
        ("retrain.json",),
    ),
    "report": StepSpec(step_report, (), lambda r: [], ()),
}


# --- chaining --------------------------------------------------------------------------


def validate(cfg: dict[str, Any]) -> None:
    """Checks every option value before the first step runs (a ValueError naming the
    option), so that a typo never surfaces hours later at the step that reads it."""
    from hudd_core.baselines import baseline_names
    from hudd_core.choices import dynamic_choices
    from hudd_core.cluster.attach import check_attach
    from hudd_core.options import OPTIONS

    for key, opt in OPTIONS.items():  # the table's choices, or the registries' (above)
        allowed = None if opt.list else (opt.choices or dynamic_choices(key))
        if allowed and not (cfg[key] is None and opt.default is None):
            check_choice(key, cfg[key], allowed)
    positive = ("batch_size", "repeats", "epochs", "train_batch_size", "image_size", "top",
                "limit", "approx_threshold")  # fmt: skip
    for key in positive:
        if cfg[key] is not None and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, "
                             f"got {cfg[key]!r}")  # fmt: skip
    for key in ("quota_factor", "lr", "threshold"):
        if not float(cfg[key]) > 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {cfg[key]!r}")
    if not 0 <= float(cfg["validation"]) < 1:
        raise ValueError(f"--validation must be in [0, 1), got {cfg['validation']!r}")
    if cfg["num_workers"] < 0:
        raise ValueError(f"--num-workers must be 0 or more, got {cfg['num_workers']}")
    if cfg["in_channels"] is not None and cfg["in_channels"] not in (1, 3):
        raise ValueError(f"--in-channels must be 1 or 3, got {cfg['in_channels']}")
    device = str(cfg["device"])
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    baseline_names(cfg["baselines"])
    check_attach(cfg["attach"], cfg["max_unclustered"])
    if cfg["engine"] == "ray":
        from hudd_core.engine_ray import validate_ray_options

        validate_ray_options(*(cfg[k] for k in RAY_OPTIONS))


def run_pipeline(cfg: dict[str, Any], *, checkpoint: Path | None = None) -> dict[str, Any]:
    """Runs ``cfg["steps"]`` in order (``hudd run``); returns each step's facts.

    Steps complete and unchanged since the last run are skipped; a step that finds
    nothing to work on ends the chain with its reason in ``result["stopped"]`` (the report
    is still written when there are clusters).

    Example (a work folder with a trained model)::

        cfg = load_config("hudd.toml", {"workdir": "T", "weights": "gaze.pt"})
        result = run_pipeline(cfg)
    """
    validate(cfg)
    workdir = Path(cfg["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, checkpoint or prepare_checkpoint(cfg))
    runlog = RunLog(workdir, {k: cfg[k] for k in sorted(cfg)})
    result: dict[str, Any] = {"workdir": str(workdir), "checkpoint": str(run.checkpoint)}
    for name in cfg["steps"]:
        spec = SPECS[name]
        fp = fingerprint({k: cfg[k] for k in spec.options}, spec.inputs(run))
        outputs = [workdir / o for o in spec.outputs]
        if spec.outputs and runlog.fresh(name, fp, outputs, verify=cfg["verify"]):
            log.info("%s: complete and unchanged, skipped", name)
            result[name] = {
                k: v
                for k, v in runlog.data["steps"][name].items()
                if k not in ("fingerprint", "seconds", "outputs")
            }
            continue
        if name == "report" and not (workdir / "clusters.csv").is_file():
            continue
        log.info("%s ...", name)
        t = time.perf_counter()
        try:
            facts = spec.func(run)
        except NothingToDo as stop:
            log.warning("%s: %s; the pipeline stops here", name, stop)
            result["stopped"] = {"step": name, "reason": str(stop)}
            if name in ("assign", "retrain") and "report" in cfg["steps"]:
                result["report"] = step_report(run)  # the clusters are worth showing
            break
        seconds = time.perf_counter() - t
        runlog.record(name, fp, seconds, outputs, **facts)
        log.info("%s: done in %.1f s", name, seconds)
        result[name] = facts
    return result
