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
    >>> load_config(None, {})["repeats"], load_config(None, {"baselines": []})["repeats"]
    (1, 5)

The defaults, types and help texts are :data:`hudd_core.options.OPTIONS`'s.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hudd_core.options import (
    DEFAULTS,
    OPTIONS,
    STEPS,
    RetrainOptions,
    check_choice,
    resolve_repeats,
)

__all__ = ["DEFAULTS", "ENGINES", "FEATURE_OPTIONS", "RAY_OPTIONS", "REFERENCE_HP",
           "check_choice", "load_config", "parse_k_range", "pick", "read_toml"]  # fmt: skip

# The reference tool's fine-tuning hyper-parameters (the RetrainModule's defaults).
REFERENCE_HP = RetrainOptions().hp
ENGINES = OPTIONS["engine"].choices
FEATURE_OPTIONS = tuple(k for k in OPTIONS if k.startswith("feature_"))
RAY_OPTIONS = tuple(k for k in OPTIONS if k.startswith("ray_"))
STEP_TABLES = {*STEPS, "run"}


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
    ``None`` value means "not given"). ``repeats`` not given: one, or five with baselines
    (:func:`hudd_core.options.resolve_repeats`)."""
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
    cfg["repeats"] = resolve_repeats(cfg["repeats"], cfg["baselines"])  # 1, or 5 with baselines
    unknown = [s for s in cfg["steps"] if s not in DEFAULTS["steps"]]
    if unknown:
        raise ValueError(f"unknown steps {unknown}; the steps are {DEFAULTS['steps']}")
    return cfg
