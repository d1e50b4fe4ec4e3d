"""Options shared by several sub-commands (DESIGN.md: --model, --weights, --data, ...)."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser, *, model: bool = True, data: bool = True) -> None:
    """Adds the options every pipeline step takes. With ``model`` the step works on a
    model: ``--model``/``--weights`` (stored in ``T/DNNModels`` the first time), or without
    them the checkpoint an earlier step stored there (``--model-name`` picks one)."""
    p.add_argument("--workdir", default="T", help="work folder (the paper's T/)")
    if model:
        p.add_argument(
            "--model-name", help="checkpoint in T/DNNModels (default: the only one there)"
        )
        p.add_argument("--model", help="built-in name, file.py:factory or package.module:factory")
        p.add_argument("--weights", help=".pt state_dict or .safetensors")
        p.add_argument(
            "--trust-model-file",
            action="store_true",
            help="allow unpickling a whole model file (only for files you trust)",
        )
    if data:
        p.add_argument("--data", default="DataSets", help="folder with TrainingSet/TestSet/...")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def step_checkpoint(args: argparse.Namespace):
    """The checkpoint a step works on (:func:`hudd_core.models.checkpoint.prepare_checkpoint`
    over the parsed options)."""
    from hudd_core.models.checkpoint import prepare_checkpoint

    return prepare_checkpoint(vars(args))


def add_preprocessing(p: argparse.ArgumentParser) -> None:
    """``--image-size``, ``--mean``, ``--std``: how images become tensors (the same for
    every step, so give each step what ``hudd test`` got)."""
    p.add_argument("--image-size", type=int, help="resize images to this square side")
    p.add_argument("--mean", type=float, nargs="+", help="per-channel mean to subtract")
    p.add_argument("--std", type=float, nargs="+", help="per-channel std to divide by")


def add_engine(p: argparse.ArgumentParser) -> None:
    """``--engine local|ray`` and the Ray engine's options (:mod:`hudd_core.engine_ray`)."""
    from hudd_core.cli.run import HELP
    from hudd_core.config import DEFAULTS, ENGINES, RAY_OPTIONS

    p.add_argument("--engine", default=DEFAULTS["engine"], choices=ENGINES, help=HELP["engine"])
    for key in RAY_OPTIONS:
        p.add_argument("--" + key.replace("_", "-"), type=type(DEFAULTS[key]),
                       default=DEFAULTS[key], help=HELP[key])  # fmt: skip


def add_channels(p: argparse.ArgumentParser) -> None:
    """``--in-channels``: only for a model file without sidecar whose channels cannot be
    read from its first layer."""
    p.add_argument(
        "--in-channels",
        type=int,
        help="without a sidecar: image channels (default: what the model's first layer takes)",
    )


def setup_logging(quiet: bool, log_file: str | None) -> None:
    """Step messages on stderr (warnings only with ``quiet``), and all of them in
    ``log_file`` when given."""
    import logging

    log = logging.getLogger("hudd")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("hudd: %(message)s"))
    log.addHandler(console)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
