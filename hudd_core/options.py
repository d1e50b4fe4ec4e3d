"""Every option of HUDD in one table: its default, type, choices, help, and the steps
that read it; and the small frozen dataclasses of the options that travel together.

The table (:data:`OPTIONS`) drives everything else: :mod:`hudd_core.config` (the defaults
and the TOML keys), the flags of ``hudd run`` (all of them) and of each step (the shared
flags and the step's own, :mod:`hudd_core.cli.common`). This module imports nothing of
``hudd_core``: it is the lowest layer.

Example:
    >>> OPTIONS["quota"].choices, OPTIONS["quota"].steps
    (('mass', 'uniform'), ('assign', 'retrain'))
    >>> AssignOptions.from_config({**DEFAULTS, "top": 3}).top
    3
    >>> resolve_repeats(None, baselines=False), resolve_repeats(None, baselines=True)
    (1, 5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

# The pipeline's steps, in order (what `hudd run --steps` may name).
STEPS = ("test", "heatmaps", "cluster", "assign", "retrain", "report")
# Repeats when none are given: one retraining, or enough seeds for the statistics
# against baselines (mean ± std, A12, Mann-Whitney).
REPEATS_ALONE, REPEATS_WITH_BASELINES = 1, 5


@dataclass(frozen=True)
class Option:
    """One option: ``steps`` are the steps that read it (``hudd run`` takes every option;
    a ``shared`` option is a flag of every step, ignored with a log line by the others)."""

    name: str
    default: Any
    type: type
    help: str
    steps: tuple[str, ...] = ()
    list: bool = False
    choices: tuple | None = None
    shared: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_MODEL = ("test", "heatmaps", "assign", "retrain")  # the steps that run the model
_ENGINE = ("test", "heatmaps", "assign")  # the steps the Ray engine can run
_ALL = STEPS

_TABLE = [
    # shared: every step takes them (a step that does not read one logs that it is ignored)
    Option("workdir", "T", str, "work folder (the paper's T/)", _ALL, shared=True),
    Option(
        "model",
        None,
        str,
        "built-in name, file.py:factory or package.module:factory",
        _MODEL,
        shared=True,
    ),
    Option(
        "weights",
        None,
        str,
        ".pt state_dict or .safetensors (copied to T/DNNModels)",
        _MODEL,
        shared=True,
    ),
    Option(
        "model_name",
        None,
        str,
        "checkpoint in T/DNNModels when several are there (default: the only one there)",
        _MODEL,
        shared=True,
    ),
    Option(
        "trust_model_file",
        False,
        bool,
        "allow unpickling a whole model file (or "
        "--feature-model weights file; only for files you trust)",
        (*_MODEL, "cluster"),
        shared=True,
    ),
    Option(
        "data", "DataSets", str, "folder with TrainingSet/TestSet/ImprovementSet", _ALL, shared=True
    ),
    Option("device", "auto", str, "auto, cpu or cuda[:N]", (*_MODEL, "cluster"), shared=True),
    Option(
        "batch_size",
        64,
        int,
        "images per batch (test, heatmaps, assign; retrain: evaluation)",
        _MODEL,
        shared=True,
    ),
    Option("num_workers", 0, int, "DataLoader decoding workers", _ENGINE, shared=True),
    Option(
        "seed",
        0,
        int,
        "seed of clustering tie-breaks, bootstrap and retraining",
        ("heatmaps", "cluster", "retrain"),
        shared=True,
    ),
    Option("quiet", False, bool, "warnings only, no progress bars", _ALL, shared=True),
    Option("log_file", None, str, "also write the step messages to this file", _ALL, shared=True),
    Option(
        "image_size",
        None,
        int,
        "resize images to this square side (give each step what `hudd test` got)",
        _MODEL,
        shared=True,
    ),
    Option("mean", None, float, "per-channel mean to subtract", _MODEL, list=True, shared=True),
    Option("std", None, float, "per-channel std to divide by", _MODEL, list=True, shared=True),
    Option(
        "in_channels",
        None,
        int,
        "without a sidecar: 1 or 3 (default: what the model's first layer takes)",
        _MODEL,
        shared=True,
    ),
    Option(
        "engine",
        "local",
        str,
        "test, assign, heatmaps --improvement: local (this "
        "process) or ray (Ray Data; RAY_ADDRESS joins a cluster)",
        _ENGINE,
        choices=("local", "ray"),
        shared=True,
    ),
    Option(
        "ray_concurrency", 1, int, "ray: model actors (one model copy each)", _ENGINE, shared=True
    ),
    Option(
        "ray_cpus_per_actor",
        1.0,
        float,
        "ray: CPUs reserved per actor (its torch threads)",
        _ENGINE,
        shared=True,
    ),
    Option(
        "ray_gpus_per_actor",
        0.0,
        float,
        "ray: GPUs per actor (0: CPU actors; 0.5: two actors per GPU)",
        _ENGINE,
        shared=True,
    ),
    Option(
        "ray_shard_size",
        4096,
        int,
        "ray: images per Parquet shard (the resume unit)",
        _ENGINE,
        shared=True,
    ),
    # hudd run only
    Option(
        "verify",
        "full",
        str,
        "checks of reused outputs: full (every byte) or quick (sizes, headers)",
        choices=("full", "quick"),
    ),
    Option(
        "steps",
        list(STEPS),
        str,
        f"steps to run, in order (default: {' '.join(STEPS)})",
        list=True,
        choices=STEPS,
    ),
    # test
    Option(
        "threshold", 4.0, float, "keypoint models: Wrong above this mean pixel error", ("test",)
    ),
    # heatmaps
    Option(
        "layers",
        None,
        str,
        "layer names to record and cluster (default: all)",
        ("heatmaps", "cluster"),
        list=True,
    ),
    Option(
        "composite",
        "hudd",
        str,
        "LRP rules: hudd (the reference semantics), epsilon-plus, ...",
        ("heatmaps", "assign"),
    ),
    Option("float16", False, bool, "store float16 heatmaps", ("heatmaps",)),
    # cluster
    Option(
        "method",
        "hudd",
        str,
        "cluster: hudd (the published rule), recommended (what "
        "the quality benchmark found best), or a named features x reduction x clusterer, "
        "hdbscan-stable, ensemble or concat (README: Clustering methods); density methods "
        "leave unclustered images as cluster 0",
        ("cluster",),
    ),
    Option(
        "attach",
        "misc",
        str,
        "cluster, methods that leave noise (never hudd): each unclustered image joins its "
        "nearest cluster when as close to it as its members are to each other; the others "
        "form one miscellaneous group (misc) or stay cluster 0 (nearest); none: as the "
        "method left them (docs/clustering.md: Noise)",
        ("cluster",),
        choices=("misc", "nearest", "none"),
    ),
    Option(
        "max_unclustered",
        0.15,
        float,
        "cluster, with --attach misc|nearest: at most this share of the error images "
        "outside every root-cause cluster (the closest of the others join their nearest)",
        ("cluster",),
    ),
    Option(
        "k_range",
        "2:500",
        str,
        "numbers of clusters to scan, LO:HI (also capped at N/2)",
        ("cluster",),
    ),
    Option(
        "selection",
        "wicd-knee",
        str,
        "how k (and the best layer) is chosen: wicd-knee (reference) or silhouette",
        ("cluster",),
        choices=("wicd-knee", "silhouette"),
    ),
    Option(
        "approx_threshold",
        None,
        int,
        "above this many error images, approximate "
        "clustering (announced; default: only when the exact path does not fit in "
        "memory, 32 bytes a pair of images)",
        ("cluster",),
    ),
    Option(
        "gifs",
        True,
        bool,
        "the animated GIFs of the RCCs and the unsafe set",
        ("cluster", "assign"),
    ),
    Option(
        "export_distances",
        None,
        str,
        "cluster: also write each layer's distance matrix "
        "to T/ClusterAnalysis/<layer>/ (up to 5000 error images for csv, 1000 for xlsx)",
        ("cluster",),
        choices=("csv", "xlsx"),
    ),
    Option(
        "feature_model",
        None,
        str,
        "cluster, model-* methods: the feature extractor, a "
        "spec as --model (torchvision.models:NAME, file.py:factory, "
        "package.module:factory; built without arguments)",
        ("cluster",),
    ),
    Option(
        "feature_weights",
        None,
        str,
        "cluster: the extractor's state_dict (read with weights_only)",
        ("cluster",),
    ),
    Option(
        "feature_layer",
        None,
        str,
        "cluster: the extractor module whose output are the features (default: the model's output)",
        ("cluster",),
    ),
    Option(
        "feature_size",
        None,
        int,
        "cluster: resize images to this side for the extractor",
        ("cluster",),
    ),
    Option(
        "feature_mean",
        None,
        float,
        "cluster: the extractor's per-channel mean",
        ("cluster",),
        list=True,
    ),
    Option(
        "feature_std",
        None,
        float,
        "cluster: the extractor's per-channel std",
        ("cluster",),
        list=True,
    ),
    # assign
    Option(
        "backend",
        "auto",
        str,
        "assign: nearest-member search: auto (FAISS, on the GPU "
        "when possible), faiss, faiss-gpu, torch or numpy",
        ("assign",),
    ),
    Option(
        "top",
        None,
        int,
        "assign: closest clusters kept per image (default: all, the reference)",
        ("assign",),
    ),
    Option("limit", None, int, "assign: only the first N improvement images", ("assign",)),
    Option(
        "quota_factor",
        2.0,
        float,
        "a cluster takes up to ceil(factor x its error "
        "images) (retrain: the bootstrap target is the largest quota)",
        ("assign", "retrain"),
    ),
    Option(
        "quota",
        "mass",
        str,
        "mass = ceil(factor x errors) per cluster (reference), "
        "uniform = the same total budget split evenly (retrain: the bootstrap target "
        "follows it)",
        ("assign", "retrain"),
        choices=("mass", "uniform"),
    ),
    Option(
        "distance_threshold",
        "none",
        str,
        "assign: none (reference) or paper = only "
        "images as close to a cluster as its members are to each other",
        ("assign",),
        choices=("none", "paper"),
    ),
    Option(
        "rank",
        "distance",
        str,
        "assign: order inside a cluster's candidates: distance "
        "(reference) or uncertainty (softmax entropy; classifiers only)",
        ("assign",),
        choices=("distance", "uncertainty"),
    ),
    Option(
        "select",
        "hudd",
        str,
        "assign: the selection of the unsafe set: hudd (the paper's quota rule, "
        "reference), pool-quota / pool-uncertain / pool-diverse (each RCC's share of the "
        "budget from the uncertain pool images nearest to it, a catch-all share for those "
        "near no RCC; closest / most uncertain / k-center first), quota-diverse (the "
        "paper's shares, a k-center cover of each RCC's closest images), pool-borda (the "
        "smallest sum of the uncertainty and nearest-RCC distance ranks), gini-near (three "
        "quarters of the budget to the highest DeepGini, the rest by the paper's shares to the "
        "closest images not yet taken), margin-near (the same split, its first part as "
        "margin-diverse picks) or recommended "
        "(what bench_retrain found best on the development cases); classifiers only, "
        "the same budget as hudd",
        ("assign",),
        choices=(
            "hudd",
            "pool-quota",
            "pool-uncertain",
            "pool-diverse",
            "quota-diverse",
            "pool-borda",
            "gini-near",
            "margin-near",
            "recommended",
        ),
    ),
    # retrain (the fine-tuning defaults are the reference tool's RetrainModule's)
    Option(
        "labels",
        None,
        str,
        "CSV image,label for the unsafe set (default: the "
        "ImprovementSet's class folders / labels.csv)",
        ("retrain",),
    ),
    Option("epochs", 10, int, "retrain: fine-tuning epochs", ("retrain",)),
    Option("lr", 1e-3, float, "retrain: SGD learning rate", ("retrain",)),
    Option("momentum", 0.9, float, "retrain: SGD momentum", ("retrain",)),
    Option("weight_decay", 5e-4, float, "retrain: SGD weight decay", ("retrain",)),
    Option("train_batch_size", 128, int, "retrain: fine-tuning batch size", ("retrain",)),
    Option(
        "baselines",
        False,
        str,
        "also retrain baselines at the same labelling budget: "
        "BL1, BL2, BL1-oracle, entropy, margin, deepgini, margin-diverse, badge (no "
        "name: the paper's BL1 and BL2)",
        ("retrain",),
        list=True,
    ),
    Option(
        "repeats",
        None,
        int,
        f"seeds per retraining method (default: "
        f"{REPEATS_ALONE}, or {REPEATS_WITH_BASELINES} with --baselines for the "
        "statistics)",
        ("retrain",),
    ),
    Option(
        "group_by",
        None,
        str,
        "retrain: TestSet/metadata.csv columns to give the "
        "accuracy per group of (default: planted when present)",
        ("retrain",),
        list=True,
    ),
    Option(
        "freeze",
        "none",
        str,
        "retrain: none (reference) or features = fine-tune only "
        "the classifier head (the last Linear and what follows it)",
        ("retrain",),
        choices=("none", "features"),
    ),
    Option(
        "bootstrap",
        "weighted",
        str,
        "retrain: weighted (reference: every RCC resampled "
        "to the largest quota), none (the selected images once) or uniform (every "
        "selected image once, then uniform draws to the weighted size: how the baselines' "
        "picks are resampled; what --select gini-near and margin-near use unless none is given)",
        ("retrain",),
        choices=("weighted", "none", "uniform"),
    ),
    Option(
        "validation",
        0.0,
        float,
        "retrain: fraction of the TrainingSet held out of "
        "fine-tuning; reports validation_accuracy per method (0: off)",
        ("retrain",),
    ),
]
OPTIONS: dict[str, Option] = {o.name: o for o in _TABLE}
DEFAULTS: dict[str, Any] = {o.name: o.default for o in _TABLE}
SHARED = tuple(o.name for o in _TABLE if o.shared)


def choices(name: str) -> tuple:
    """The fixed choices of option ``name``.

    >>> choices("rank")
    ('distance', 'uncertainty')
    """
    found = OPTIONS[name].choices
    if found is None:
        raise KeyError(f"option {name!r} has no fixed choices")
    return found


def step_options(step: str) -> list[str]:
    """The options ``step`` reads, in the table's order.

    >>> step_options("report")
    ['workdir', 'data', 'quiet', 'log_file']
    """
    return [o.name for o in _TABLE if step in o.steps]


def check_choice(option: str, value: Any, allowed: Sequence) -> None:
    """A ValueError naming the option (``--option-name``) when ``value`` is not allowed.

    >>> check_choice("rank", "size", ("distance", "uncertainty"))
    Traceback (most recent call last):
    ValueError: --rank: 'size' is not one of distance, uncertainty
    """
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed if a is not None)
        raise ValueError(f"--{option.replace('_', '-')}: {value!r} is not one of {shown}")


def resolve_repeats(repeats: int | None, baselines: Any) -> int:
    """The number of retraining repeats: ``repeats`` when given; else one, or
    :data:`REPEATS_WITH_BASELINES` when baselines are retrained (their statistics need
    several seeds)."""
    if repeats is not None:
        return repeats
    return REPEATS_WITH_BASELINES if baselines else REPEATS_ALONE


# --- options that travel together -------------------------------------------------------


class _FromConfig:
    """``from_config(cfg)``: the dataclass's fields from a flat configuration (the
    field ``x`` reads the option ``_KEYS.get(x, x)``)."""

    _KEYS: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]):
        keys = {f.name: cls._KEYS.get(f.name, f.name) for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{f: cfg[k] for f, k in keys.items() if k in cfg})


@dataclass(frozen=True)
class Preprocess(_FromConfig):
    """How an image file becomes a tensor (the same for every step: resize, normalise)."""

    image_size: int | None = DEFAULTS["image_size"]
    mean: Sequence[float] | None = DEFAULTS["mean"]
    std: Sequence[float] | None = DEFAULTS["std"]

    def as_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class AssignOptions(_FromConfig):
    """The assignment's options (:mod:`hudd_core.assign`; the defaults are the reference)."""

    backend: str = DEFAULTS["backend"]
    top: int | None = DEFAULTS["top"]
    quota_factor: float = DEFAULTS["quota_factor"]
    quota: str = DEFAULTS["quota"]
    distance_threshold: str = DEFAULTS["distance_threshold"]
    rank: str = DEFAULTS["rank"]
    select: str = DEFAULTS["select"]
    limit: int | None = DEFAULTS["limit"]
    gifs: bool = DEFAULTS["gifs"]
    composite: str = DEFAULTS["composite"]


@dataclass(frozen=True)
class RetrainOptions(_FromConfig):
    """The retraining's options (:func:`hudd_core.retrain.run_retrain`).

    The fine-tuning hyper-parameters (:attr:`hp`; the reference's by default);
    ``baselines``: ``True`` for the paper's BL1 and BL2, or names of
    ``hudd_core.baselines.BASELINES``; ``repeats``: seeds ``seed, seed+1, ...`` for every
    method, None for one, or :data:`REPEATS_WITH_BASELINES` with baselines
    (:func:`resolve_repeats`); ``quota_factor``, ``quota``: the assignment's quota rule
    (the bootstrap target is the largest quota of the clusters in the unsafe set);
    ``group_by``: categorical columns of ``TestSet/metadata.csv`` to report the accuracy
    per group of (default: ``planted`` when the column exists); ``freeze``: ``none`` (the
    reference) or ``features`` (only the classifier head); ``bootstrap``: ``weighted`` (the
    reference) or ``none``; ``validation``: the fraction of the TrainingSet held out of
    the fine-tuning (seeded, the same for every repeat and method): every method then
    reports ``validation_accuracy`` and ``validation_gain`` beside the test figures.
    """

    epochs: int = DEFAULTS["epochs"]
    lr: float = DEFAULTS["lr"]
    momentum: float = DEFAULTS["momentum"]
    weight_decay: float = DEFAULTS["weight_decay"]
    train_batch_size: int = DEFAULTS["train_batch_size"]
    freeze: str = DEFAULTS["freeze"]
    bootstrap: str = DEFAULTS["bootstrap"]
    validation: float = DEFAULTS["validation"]
    repeats: int | None = DEFAULTS["repeats"]
    baselines: bool | Sequence[str] = DEFAULTS["baselines"]
    group_by: Sequence[str] | None = DEFAULTS["group_by"]
    quota_factor: float = DEFAULTS["quota_factor"]
    quota: str = DEFAULTS["quota"]

    @property
    def hp(self) -> dict[str, Any]:
        """The fine-tuning hyper-parameters (``retrain.json``'s ``hp``)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "batch_size": self.train_batch_size,
        }

    @property
    def runs(self) -> int:
        """The number of repeats (:func:`resolve_repeats`)."""
        return resolve_repeats(self.repeats, self.baselines)


@dataclass(frozen=True)
class RayOptions(_FromConfig):
    """The Ray engine's options (``--ray-*``, :mod:`hudd_core.engine_ray`)."""

    _KEYS: ClassVar[Mapping[str, str]] = {
        "concurrency": "ray_concurrency",
        "cpus_per_actor": "ray_cpus_per_actor",
        "gpus_per_actor": "ray_gpus_per_actor",
        "shard_size": "ray_shard_size",
    }

    concurrency: int = DEFAULTS["ray_concurrency"]
    cpus_per_actor: float = DEFAULTS["ray_cpus_per_actor"]
    gpus_per_actor: float = DEFAULTS["ray_gpus_per_actor"]
    shard_size: int = DEFAULTS["ray_shard_size"]


# The defaults of the step functions' option arguments (immutable: safe to share).
NO_PREPROCESS = Preprocess()
REFERENCE_ASSIGN = AssignOptions()
REFERENCE_RETRAIN = RetrainOptions()
LOCAL_RAY = RayOptions()
