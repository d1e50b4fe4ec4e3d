"""Options shared by several sub-commands (DESIGN.md: --model, --weights, --data, ...)."""

from __future__ import annotations

import argparse


def add_common(
    p: argparse.ArgumentParser, *, model: bool = True, data: bool = True, checkpoint: bool = False
) -> None:
    """Adds the options every pipeline step takes; ``checkpoint``: the model is a checkpoint
    of the work folder (``--model-name``), for the steps after clustering."""
    p.add_argument("--workdir", default="T", help="work folder (the paper's T/)")
    if checkpoint:
        p.add_argument("--model-name", help="checkpoint in T/DNNModels (default: the only one)")
    if model:
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
