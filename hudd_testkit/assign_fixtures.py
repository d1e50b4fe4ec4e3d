"""A work folder ready for ``hudd assign`` (shared by the Ray engine's and the object
store's tests): test results, the heatmaps of the error images at ``LAYER``, hand-made
RCCs over them, and an improvement pool with two bad images; plus running the assign
step through the pipeline as the CLI does and reading ``T/skipped.csv``."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

LAYER = "features.10"


def add_bad_images(folder: Path) -> None:
    """A zero-byte image and one of another size (40 × 40, the model takes 32 × 32)."""
    from PIL import Image

    (folder / "left" / "broken.png").write_bytes(b"")
    Image.new("L", (40, 40)).save(folder / "left" / "big.png")


def make_assign_case(model_workdir) -> tuple[SimpleNamespace, Path]:
    """``(w, reference)``: the work folder ``w`` of the ``model_workdir`` factory with
    T/testResult.csv, the heatmaps of its Wrong images at LAYER and RCCs over them
    (clusters 1-3 and a singleton), a pool of 90 + 2 bad images; ``reference`` is a copy
    of T before assign."""
    from hudd_core.heatmaps import run_heatmaps
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_core.testing import read_results, run_test

    w = model_workdir({"TestSet": 24, "ImprovementSet": 90})
    add_bad_images(w.data / "ImprovementSet")
    model, meta = load_checkpoint(w.pt)
    run_test(model, w.data, w.T, meta, sets=("TestSet",), device="cpu", progress=False)
    run_heatmaps(w.T, w.data, model, meta, layers=[LAYER], device="cpu", progress=False)
    wrong = [i for i, r in read_results(w.T / "testResult.csv").items() if r == "Wrong"]
    assert len(wrong) >= 8
    labels = [1 + k % 3 for k in range(len(wrong) - 1)] + [4]
    with open(w.T / "clusters.csv", "w", newline="") as fh:
        rows = [(i, c, LAYER) for i, c in zip(wrong, labels, strict=True)]
        csv.writer(fh).writerows([("image", "cluster", "layer"), *rows])
    reference = w.root / "reference"
    shutil.copytree(w.T, reference)
    return w, reference


def run_assign(w, workdir: Path, engine: str, *, data: Path | None = None, **extra) -> dict:
    """``hudd assign`` (the pipeline's step, as the CLI runs it) over ``data`` (default
    ``w.data``) into ``workdir``: batches of 8, shards of 16, the numpy backend."""
    from hudd_core.config import load_config
    from hudd_core.pipeline import Run, step_assign

    cfg = load_config(None, {"workdir": str(workdir), "data": str(data or w.data),
                             "device": "cpu", "quiet": True, "batch_size": 8,
                             "backend": "numpy", "engine": engine, "ray_shard_size": 16,
                             **extra})  # fmt: skip
    return step_assign(Run(cfg, w.pt))


def read_skipped(workdir: Path) -> list[tuple[str, str, str]]:
    """``T/skipped.csv`` as sorted ``(step, image, reason)``."""
    with open(workdir / "skipped.csv", newline="") as fh:
        return sorted((r["step"], r["image"], r["reason"]) for r in csv.DictReader(fh))
