"""The demo (``hudd demo``): the built-in simulator case study end to end.

:func:`run_demo` generates the images of a scene (the eyes of the paper's gaze case, or road
signs), trains the demo model (the AlexNet-style gaze classifier, another classifier of the
zoo, or the KpNet keypoint regressor), then runs the whole pipeline
(:func:`hudd_core.pipeline.run_pipeline`). The demo imports the pipeline, never the reverse.

Example:
    >>> import tempfile
    >>> result = run_demo(tempfile.mkdtemp(), size="tiny", progress=False)
    >>> sorted(result["test"])
    ['TestSet', 'TrainingSet']
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hudd_core.config import load_config
from hudd_core.data import signs, simulator
from hudd_core.data.datasets import ImageSet
from hudd_core.data.generate import MARKER, generate
from hudd_core.models.checkpoint import read_meta, save_checkpoint
from hudd_core.models.loading import load_model
from hudd_core.models.train import he_init, train
from hudd_core.pipeline import run_pipeline
from hudd_core.runstate import RunLog

# Demo sizes: images per set, image side, training epochs, fine-tuning epochs. "small" (the
# default) runs end to end on 2 CPU cores in a few minutes; "tiny" is for tests.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "sets": {"TrainingSet": 64, "TestSet": 32, "ImprovementSet": 32},
        "image_size": 32,
        "epochs": 1,
        "retrain_epochs": 1,
    },
    "small": {
        "sets": {"TrainingSet": 3000, "TestSet": 1500, "ImprovementSet": 8000},
        "image_size": 32,
        "epochs": 8,
        "retrain_epochs": 10,
    },
    "medium": {
        "sets": {"TrainingSet": 8000, "TestSet": 3000, "ImprovementSet": 20000},
        "image_size": 64,
        "epochs": 10,
        "retrain_epochs": 10,
    },
    "large": {
        "sets": {"TrainingSet": 20000, "TestSet": 6000, "ImprovementSet": 40000},
        "image_size": 64,
        "epochs": 12,
        "retrain_epochs": 10,
    },
}
DEMO_MODEL = "demo_alexnet"
# The classifiers the demo can train instead of the AlexNet-style one (hudd demo --arch).
DEMO_ARCHS = ("alexnet", "resnet", "mobilenet", "mobilenet_v3_small", "vit")
# The demo's two tasks (the paper's gaze/eye-closure classifiers and its FLD keypoint case):
# the architecture, the checkpoint name and the training loss of each.
DEMO_TASKS: dict[str, dict[str, str]] = {
    "classifier": {"model": "alexnet", "name": DEMO_MODEL, "loss": "cross_entropy"},
    "keypoints": {"model": "kpnet", "name": "demo_kpnet", "loss": "mse"},
}
# The demo's scenes (hudd_core.data modules): the eyes of the paper's gaze case, and the
# road signs (a classifier only).
SCENES = {"eyes": simulator, "signs": signs}
DEMO_TRAINING = {
    "optimizer": "adam",
    "schedule": "cosine",
    "lr": 1e-3,
    "batch_size": 32,
    "weight_decay": 0.0,
}


def step_generate(
    workdir: Path,
    size: str,
    seed: int,
    progress: bool,
    task: str = "classifier",
    scene: str = "eyes",
) -> Path:
    """Simulator images of ``scene`` (:data:`SCENES`) into ``workdir/DataSets`` (kept when
    already generated)."""
    cfg = SIZES[size]
    root = workdir / "DataSets"
    generate(root, sizes=cfg["sets"], seed=seed, image_size=cfg["image_size"], task=task,
             progress=progress, simulator=SCENES[scene])  # fmt: skip
    return root


def step_train(
    workdir: Path,
    data_root: Path,
    size: str,
    seed: int,
    device: str,
    progress: bool,
    task: str = "classifier",
    model: str | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Trains the demo model (the gaze classifier, or the keypoint regressor); kept when a
    checkpoint of the same configuration exists. ``model`` (a zoo name) replaces the
    task's architecture (checkpoint ``demo_<model>``); ``classes`` those of another scene
    module (default: the eye simulator's)."""
    spec = DEMO_TASKS[task]
    if model is not None:
        spec = {**spec, "model": model, "name": f"demo_{model}"}
    training = _training_config(data_root, size, seed, task, model)
    pt = workdir / "DNNModels" / f"{spec['name']}.pt"
    if pt.is_file() and pt.with_suffix(".json").is_file():
        if read_meta(pt).get("training") == training:
            return pt
    s = SIZES[size]["image_size"]
    classes = list(simulator.CLASSES if classes is None else classes)
    if task == "classifier":
        kwargs = {"num_classes": len(classes), "in_channels": 1, "input_size": s}
        dataset = ImageSet(data_root / "TrainingSet", classes=classes)
    else:
        kwargs = {"num_keypoints": len(simulator.KEYPOINTS), "in_channels": 1, "input_size": s}
        dataset = ImageSet(data_root / "TrainingSet", task="keypoints")
        classes = []
    net = he_init(load_model(spec["model"], **kwargs), seed=seed)
    losses = train(net, dataset, epochs=training["epochs"], lr=training["lr"],
                   batch_size=training["batch_size"], weight_decay=training["weight_decay"],
                   optimizer=training["optimizer"], schedule=training["schedule"],
                   loss=spec["loss"], seed=seed, device=device, progress=progress)  # fmt: skip
    meta = {"model": spec["model"], "kwargs": kwargs, "task": task, "classes": classes,
            "in_channels": 1, "input_size": s, "training": training,
            "losses": losses}  # fmt: skip
    return save_checkpoint(net, workdir / "DNNModels", spec["name"], meta)


def _training_config(
    data_root: Path, size: str, seed: int, task: str, model: str | None
) -> dict[str, Any]:
    """What the demo model's training depends on, as its sidecar records it: a checkpoint
    with the same is kept. The data's marker too: regenerated images (another simulator)
    mean a new model."""
    data = json.loads((data_root / MARKER).read_text())
    training = {
        **DEMO_TRAINING,
        "epochs": SIZES[size]["epochs"],
        "seed": seed,
        "size": size,
        "simulator": data["simulator"],
    }
    if task != "classifier":
        training["task"] = task
    if model is not None:
        training["model"] = model
    return training


def run_demo(
    workdir: str | Path,
    size: str = "small",
    seed: int = 0,
    *,
    device: str = "auto",
    baselines: bool = False,
    repeats: int = 1,
    progress: bool = True,
    task: str = "classifier",
    arch: str | None = None,
    scene: str = "eyes",
    steps: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The simulator case study: generate → train → :func:`run_pipeline` (every step, or
    ``steps``: bench_retrain stops after ``assign`` and retrains itself, so that its own
    ``retrain.json`` is never taken for a damaged output of the demo's retrain step).

    ``scene="signs"``: the road-sign scene of :mod:`hudd_core.data.signs` (its own classes
    and planted causes) instead of the eyes; a classifier only.

    ``arch``: another classifier of the zoo instead of the AlexNet-style one (``resnet``,
    ``mobilenet``, torchvision's ``mobilenet_v3_small``, ``vit``: :data:`DEMO_ARCHS`),
    checkpoint ``demo_<arch>``.

    ``task="keypoints"``: the paper's FLD-style case, a KpNet regressor of the eye
    corners, iris centre and eyelid midpoints (Wrong above 4 px mean error), explained by
    its worst keypoint, the unsafe set by each RCC's most-failed keypoint.

    The retraining fine-tunes HUDD's balanced unsafe set for
    ``SIZES[size]["retrain_epochs"]`` epochs, ``repeats`` times; with ``baselines`` BL1 and
    BL2 are retrained at the same labelling budget too and compared with HUDD (two more
    fine-tunings each repeat, off by default so that the small demo fits a few minutes on
    2 cores).
    """
    check_demo(size, task, arch, scene)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_root, checkpoint = _generate_and_train(workdir, size, seed, device, progress, task,
                                                arch, scene)  # fmt: skip
    cfg = load_config(
        None,
        {
            "workdir": str(workdir),
            "data": str(data_root),
            "seed": seed,
            "device": device,
            "quiet": not progress,
            "baselines": baselines,
            "repeats": repeats,
            "epochs": SIZES[size]["retrain_epochs"],
            **({} if steps is None else {"steps": list(steps)}),
        },
    )
    result = run_pipeline(cfg, checkpoint=checkpoint)
    result["data"] = str(data_root)
    if "test" in result:
        result["planted"] = result["test"]["planted"]
        result["test"] = result["test"]["summary"]
    return result


def check_demo(size: str, task: str, arch: str | None, scene: str) -> None:
    """A ValueError naming the demo argument whose value cannot work."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    if task not in DEMO_TASKS:
        raise ValueError(f"task must be one of {list(DEMO_TASKS)}, got {task!r}")
    if arch is not None and (task != "classifier" or arch not in DEMO_ARCHS):
        raise ValueError(f"--arch: one of {DEMO_ARCHS} for the classifier, got {arch!r}")
    if scene not in SCENES or (scene != "eyes" and task != "classifier"):
        raise ValueError(f"scene must be one of {list(SCENES)} (signs: a classifier only), "
                         f"got {scene!r} with task {task!r}")  # fmt: skip


def _generate_and_train(
    workdir: Path,
    size: str,
    seed: int,
    device: str,
    progress: bool,
    task: str,
    arch: str | None,
    scene: str,
) -> tuple[Path, Path]:
    """``(data root, checkpoint)``: the demo's first two steps, each timed in
    ``T/run.json`` (they are not pipeline steps: no fingerprint, their own reuse rules)."""
    runlog = RunLog(workdir)
    t = time.perf_counter()
    data_root = step_generate(workdir, size, seed, progress, task, scene)
    runlog.record("generate", None, time.perf_counter() - t, size=size, seed=seed, task=task,
                  scene=scene)  # fmt: skip
    t = time.perf_counter()
    model = None if arch in (None, DEMO_TASKS[task]["model"]) else arch
    classes = SCENES[scene].CLASSES
    checkpoint = step_train(workdir, data_root, size, seed, device, progress, task, model, classes)
    runlog.record("train", None, time.perf_counter() - t, checkpoint=str(checkpoint))
    return data_root, checkpoint
