"""The pipeline: HUDD's steps chained as plain function calls over the work folder.

``run_demo`` is the built-in simulator case study end to end: generate the eye images,
train the AlexNet-style gaze classifier, test it. Each step reads the previous steps'
files in ``workdir`` and skips work that is already complete for the same configuration,
so an interrupted run resumes. Per-step timings go to ``workdir/run.json``.

Example:
    >>> import tempfile
    >>> result = run_demo(tempfile.mkdtemp(), size="tiny", progress=False)
    >>> sorted(result["test"])
    ['TestSet', 'TrainingSet']
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from hudd_core.data import simulator
from hudd_core.data.datasets import ImageSet
from hudd_core.data.generate import generate
from hudd_core.heatmaps import pipeline_step as heatmaps_step
from hudd_core.models.checkpoint import load_checkpoint, read_meta, save_checkpoint
from hudd_core.models.loading import load_model
from hudd_core.models.train import he_init, train
from hudd_core.testing import RESULT_FILES, accuracy_by_planted, run_test

# Demo sizes: images per set, image side, training epochs. "small" (the default) fits the
# 2-core budget (generation + training + test well under 2 minutes); "tiny" is for tests.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "sets": {"TrainingSet": 64, "TestSet": 32, "ImprovementSet": 32},
        "image_size": 32,
        "epochs": 1,
    },
    "small": {
        "sets": {"TrainingSet": 3000, "TestSet": 1500, "ImprovementSet": 1500},
        "image_size": 32,
        "epochs": 8,
    },
    "medium": {
        "sets": {"TrainingSet": 8000, "TestSet": 3000, "ImprovementSet": 6000},
        "image_size": 64,
        "epochs": 10,
    },
    "large": {
        "sets": {"TrainingSet": 20000, "TestSet": 6000, "ImprovementSet": 20000},
        "image_size": 64,
        "epochs": 12,
    },
}
DEMO_MODEL = "demo_alexnet"
DEMO_TRAINING = {
    "optimizer": "adam",
    "schedule": "cosine",
    "lr": 1e-3,
    "batch_size": 32,
    "weight_decay": 0.0,
}


def record_step(workdir: Path, step: str, seconds: float, **info: Any) -> None:
    """Adds a step's timing (and facts) to ``workdir/run.json``."""
    path = workdir / "run.json"
    run = json.loads(path.read_text()) if path.is_file() else {}
    run.setdefault("versions", {"python": platform.python_version(), "torch": torch.__version__})
    run.setdefault("steps", {})[step] = {"seconds": round(seconds, 3), **info}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run, indent=2))
    tmp.replace(path)


def step_generate(workdir: Path, size: str, seed: int, progress: bool) -> Path:
    """Simulator images into ``workdir/DataSets`` (kept when already generated)."""
    cfg = SIZES[size]
    root = workdir / "DataSets"
    generate(root, sizes=cfg["sets"], seed=seed, image_size=cfg["image_size"], progress=progress)
    return root


def step_train(
    workdir: Path, data_root: Path, size: str, seed: int, device: str, progress: bool
) -> Path:
    """Trains the demo classifier; kept when a checkpoint of the same configuration exists."""
    cfg = SIZES[size]
    s = cfg["image_size"]
    training = {**DEMO_TRAINING, "epochs": cfg["epochs"], "seed": seed, "size": size}
    pt = workdir / "DNNModels" / f"{DEMO_MODEL}.pt"
    if pt.is_file() and pt.with_suffix(".json").is_file():
        if read_meta(pt).get("training") == training:
            return pt
    kwargs = {"num_classes": len(simulator.CLASSES), "in_channels": 1, "input_size": s}
    model = he_init(load_model("alexnet", **kwargs), seed=seed)
    dataset = ImageSet(data_root / "TrainingSet", classes=simulator.CLASSES)
    losses = train(
        model,
        dataset,
        epochs=cfg["epochs"],
        lr=training["lr"],
        batch_size=training["batch_size"],
        weight_decay=training["weight_decay"],
        optimizer=training["optimizer"],
        schedule=training["schedule"],
        seed=seed,
        device=device,
        progress=progress,
    )
    meta = {
        "model": "alexnet",
        "kwargs": kwargs,
        "task": "classifier",
        "classes": simulator.CLASSES,
        "in_channels": 1,
        "input_size": s,
        "training": training,
        "losses": losses,
    }
    return save_checkpoint(model, workdir / "DNNModels", DEMO_MODEL, meta)


def step_test(
    workdir: Path, data_root: Path, checkpoint: Path, device: str, progress: bool
) -> dict[str, Any]:
    """The TestModule over training and test sets; accuracy per planted region."""
    model, meta = load_checkpoint(checkpoint)
    summary = run_test(model, data_root, workdir, meta, device=device, progress=progress)
    planted = accuracy_by_planted(data_root, "TestSet", workdir / RESULT_FILES["TestSet"])
    return {"summary": summary, "planted": planted}


def run_demo(
    workdir: str | Path,
    size: str = "small",
    seed: int = 0,
    *,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """The simulator case study: generate → train → test (later HUDD steps follow)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"workdir": str(workdir)}

    t = time.perf_counter()
    data_root = step_generate(workdir, size, seed, progress)
    record_step(workdir, "generate", time.perf_counter() - t, size=size, seed=seed)
    result["data"] = str(data_root)

    t = time.perf_counter()
    checkpoint = step_train(workdir, data_root, size, seed, device, progress)
    record_step(workdir, "train", time.perf_counter() - t, checkpoint=str(checkpoint))
    result["checkpoint"] = str(checkpoint)

    t = time.perf_counter()
    tested = step_test(workdir, data_root, checkpoint, device, progress)
    record_step(workdir, "test", time.perf_counter() - t, **tested)
    result["test"], result["planted"] = tested["summary"], tested["planted"]
    result["heatmaps"] = heatmaps_step(workdir, data_root, checkpoint, device, progress)

    from hudd_core.cluster import pipeline_step as cluster_step  # skipped without heatmaps

    t = time.perf_counter()
    clustered = cluster_step(workdir, data_root, device=device, seed=seed, progress=progress)
    if clustered is not None:
        record_step(workdir, "cluster", time.perf_counter() - t, **clustered)
        result["cluster"] = clustered
        from hudd_core.report import build_report  # keep last: it shows every step's results

        t = time.perf_counter()
        result["report"] = str(build_report(workdir, data_root))
        record_step(workdir, "report", time.perf_counter() - t, path=result["report"])
    return result
