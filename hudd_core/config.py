"""The configuration of ``hudd run``: defaults, a TOML file, then command-line options.

The TOML file uses the command-line option names with underscores, flat or grouped in
tables named after the steps (the table names are only for readability)::

    model = "alexnet"
    weights = "DNNModels/gaze.pt"
    data = "DataSets"
    workdir = "T"
    [heatmaps]
    composite = "hudd"
    [cluster]
    k_range = "2:300"

Unknown keys are an error that names the key and the file, so a typo never goes unseen.

Example:
    >>> cfg = load_config(None, {"workdir": "T2", "repeats": 3})
    >>> cfg["workdir"], cfg["repeats"], cfg["k_range"]
    ('T2', 3, (2, 500))
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

# The reference tool's fine-tuning hyper-parameters (the RetrainModule's defaults).
REFERENCE_HP = {"epochs": 10, "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128}

DEFAULTS: dict[str, Any] = {
    # shared
    "model": None,
    "weights": None,
    "model_name": None,
    "trust_model_file": False,
    "data": "DataSets",
    "workdir": "T",
    "device": "auto",
    "batch_size": 64,
    "num_workers": 0,
    "limit": None,
    "seed": 0,
    "quiet": False,
    "log_file": None,
    # engine: "local" (this process) or "ray" (Ray Data, hudd_core.engine_ray)
    "engine": "local",
    "ray_concurrency": 1,
    "ray_cpus_per_actor": 1.0,
    "ray_gpus_per_actor": 0.0,
    "ray_shard_size": 4096,
    "image_size": None,
    "in_channels": None,
    "verify": "full",
    "mean": None,
    "std": None,
    # test
    "threshold": 4.0,
    # heatmaps
    "layers": None,
    "composite": "hudd",
    "float16": False,
    # cluster
    "method": "hudd",
    "k_range": "2:500",
    "selection": "wicd-knee",
    "approx_threshold": None,
    "gifs": True,
    "export_distances": None,
    "feature_model": None,
    "feature_weights": None,
    "feature_layer": None,
    "feature_size": None,
    "feature_mean": None,
    "feature_std": None,
    # assign
    "backend": "auto",
    "top": None,
    "quota_factor": 2.0,
    "quota": "mass",
    "distance_threshold": "none",
    "rank": "distance",
    # retrain
    "labels": None,
    "epochs": REFERENCE_HP["epochs"],
    "lr": REFERENCE_HP["lr"],
    "momentum": REFERENCE_HP["momentum"],
    "weight_decay": REFERENCE_HP["weight_decay"],
    "train_batch_size": REFERENCE_HP["batch_size"],
    "baselines": False,
    "repeats": 5,
    "group_by": None,
    "freeze": "none",
    "bootstrap": "weighted",
    "validation": 0.0,
    "steps": ["test", "heatmaps", "cluster", "assign", "retrain", "report"],
}
ENGINES = ("local", "ray")
FEATURE_OPTIONS = ("feature_model", "feature_weights", "feature_layer", "feature_size",
                   "feature_mean", "feature_std")  # fmt: skip
RAY_OPTIONS = ("ray_concurrency", "ray_cpus_per_actor", "ray_gpus_per_actor", "ray_shard_size")
STEP_TABLES = {"test", "heatmaps", "cluster", "assign", "retrain", "report", "run"}


def read_toml(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML file, tables flattened; unknown keys raise ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in STEP_TABLES:
                raise ValueError(f"{path}: unknown table [{key}] (tables: {sorted(STEP_TABLES)})")
            for sub, v in value.items():
                flat[_check_key(sub.replace("-", "_"), path)] = v
        else:
            flat[_check_key(key.replace("-", "_"), path)] = value
    return flat


def _check_key(key: str, source: Path | str) -> str:
    if key not in DEFAULTS:
        raise ValueError(f"{source}: unknown setting {key!r}")
    return key


def pick(cfg: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The options ``keys`` of ``cfg`` (named as the step functions' arguments).

    >>> pick({"top": 5, "seed": 0, "device": "cpu"}, "top", "device")
    {'top': 5, 'device': 'cpu'}
    """
    return {k: cfg[k] for k in keys}


def check_choice(option: str, value: Any, allowed: tuple) -> None:
    """A ValueError naming the option (``--option-name``) when ``value`` is not allowed.

    >>> check_choice("rank", "size", ("distance", "uncertainty"))
    Traceback (most recent call last):
    ValueError: --rank: 'size' is not one of distance, uncertainty
    """
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed if a is not None)
        raise ValueError(f"--{option.replace('_', '-')}: {value!r} is not one of {shown}")


def parse_k_range(text: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"2:500"`` (or a pair) → ``(2, 500)``; ``ValueError`` naming the option otherwise.

    >>> parse_k_range("2:300")
    (2, 300)
    """
    try:
        lo, hi = (int(v) for v in (text.split(":") if isinstance(text, str) else text))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"k_range: expected LO:HI, got {text!r}") from exc
    if not 1 <= lo <= hi:
        raise ValueError(f"k_range: need 1 <= LO <= HI, got {text!r}")
    return lo, hi


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the TOML file (if any), then ``overrides`` (the command line; a
    ``None`` value means "not given")."""
    cfg = dict(DEFAULTS)
    if path is not None:
        cfg.update(read_toml(path))
    for key, value in overrides.items():
        _check_key(key, "command line")
        if value is not None:
            cfg[key] = value
    cfg["k_range"] = parse_k_range(cfg["k_range"])
    if cfg["baselines"] == []:  # `--baselines` without names: the paper's BL1 and BL2
        cfg["baselines"] = True
    unknown = [s for s in cfg["steps"] if s not in DEFAULTS["steps"]]
    if unknown:
        raise ValueError(f"unknown steps {unknown}; the steps are {DEFAULTS['steps']}")
    return cfg
