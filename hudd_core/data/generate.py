"""Writes the simulator case study as DataSets (docs/CONTRACTS.md).

``DataSets/{TrainingSet,TestSet,ImprovementSet}/`` hold, for the classifier task, one
sub-folder per class of PNGs; for the keypoint task, PNGs plus ``labels.csv``. Every set gets
a ``metadata.csv`` (``image,<param>,...,planted``). The training set under-represents the
planted regions (``simulator.TRAIN_RATES``), the test set samples them often
(``simulator.TEST_RATES``) and the improvement set, standing for field data, rarely
(``simulator.FIELD_RATES``). Output is deterministic for a seed.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "DataSets"
    >>> counts = generate(root, sizes={"TrainingSet": 20, "TestSet": 10}, progress=False)
    >>> counts["TestSet"], (root / "TestSet" / "metadata.csv").is_file()
    (10, True)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from hudd_core.data import simulator as sim
from hudd_core.fileio import write_csv
from hudd_core.progress import bar as progress_bar

SETS = ["TrainingSet", "TestSet", "ImprovementSet"]
MARKER = "simulator.json"  # records the configuration; marks a folder we may overwrite
CHUNK = 1024  # images rendered per step; each chunk has its own seed, so output is chunk-exact


def set_rates(name: str, simulator: ModuleType = sim) -> dict[str, float]:
    """Planted-region rates of a set: rare in training and in the improvement set (field
    data), frequent in the test set."""
    return {"TrainingSet": simulator.TRAIN_RATES, "ImprovementSet": simulator.FIELD_RATES}.get(
        name, simulator.TEST_RATES
    )


def simulator_version(simulator: ModuleType = sim) -> str:
    """A hash of the simulator's source: images from an older simulator are regenerated."""
    return hashlib.sha256(Path(simulator.__file__).read_bytes()).hexdigest()[:16]


def _write_png(path: Path, image: np.ndarray) -> None:
    # compress_level 1: a 64x64 PNG encodes ~5x faster than the default for ~10% more bytes.
    Image.fromarray(image).save(path, compress_level=1)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def write_set(
    folder: Path,
    n: int,
    *,
    task: str,
    seed: int,
    set_index: int,
    image_size: int,
    rates: dict[str, float],
    pool: ThreadPoolExecutor,
    progress: bool = True,
    simulator: ModuleType = sim,
) -> int:
    """Renders ``n`` images into ``folder`` (created) with their metadata (and labels);
    ``simulator`` is the scene module (``CLASSES``, ``PARAMS``, ``sample_params``,
    ``render``, ``classify``: :mod:`~hudd_core.data.simulator` or
    :mod:`~hudd_core.data.signs`)."""
    sim = simulator
    folder.mkdir(parents=True, exist_ok=True)
    if task == "classifier":
        for c in sim.CLASSES:
            (folder / c).mkdir(exist_ok=True)
    meta_rows, label_rows, pending = [], [], []
    bar = progress_bar(total=n, desc=f"generate {folder.name}", enabled=progress, unit="img")
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        rng = np.random.default_rng([seed, set_index, start // CHUNK])
        params = sim.sample_params(m, rng, rates)
        images = sim.render(params, image_size, rng)
        if task == "classifier":
            labels = sim.classify(params)
            names = [f"{sim.CLASSES[c]}/{start + i:06d}.png" for i, c in enumerate(labels)]
        else:
            kps = sim.keypoints(params, image_size).reshape(m, -1)
            names = [f"{start + i:06d}.png" for i in range(m)]
            label_rows += [[nm, *map(_fmt, k)] for nm, k in zip(names, kps, strict=True)]
        for f in pending:  # the previous chunk's PNGs were encoded while this one rendered
            f.result()
        pending = [
            pool.submit(_write_png, folder / nm, im) for nm, im in zip(names, images, strict=True)
        ]
        for i, nm in enumerate(names):
            meta_rows.append([nm, *(_fmt(params[p][i]) for p in sim.PARAMS), params["planted"][i]])
        bar.update(m)
    for f in pending:
        f.result()
    bar.close()
    write_csv(folder / "metadata.csv", ["image", *sim.PARAMS, "planted"], meta_rows)
    if task == "keypoints":
        header = ["image"] + [f"{a}{k}" for k in range(len(sim.KEYPOINTS)) for a in "xy"]
        write_csv(folder / "labels.csv", header, label_rows)
    return n


def generate(
    root: str | Path,
    *,
    sizes: dict[str, int] | None = None,
    task: str = "classifier",
    seed: int = 0,
    image_size: int = 64,
    workers: int = 2,
    progress: bool = True,
    simulator: ModuleType = sim,
) -> dict[str, int]:
    """Writes the case study into ``root`` (the DataSets folder); returns images per set.

    Skips the work when ``root`` already holds a complete run with the same configuration;
    replaces a different or interrupted simulator run (``simulator.json`` marks ours);
    refuses to touch a non-empty folder it did not write.
    """
    root = Path(root)
    sizes = sizes or {"TrainingSet": 4000, "TestSet": 2000, "ImprovementSet": 2000}
    if task not in ("classifier", "keypoints"):
        raise ValueError(f"task must be 'classifier' or 'keypoints', got {task!r}")
    unknown = set(sizes) - set(SETS)
    if unknown:
        raise ValueError(f"unknown set names {sorted(unknown)}; expected some of {SETS}")
    config = _marker_config(task, seed, image_size, sizes, simulator)
    if _already_generated(root, config):
        return dict(sizes)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER
    marker.write_text(json.dumps({**config, "complete": False}, indent=2))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for name, n in sizes.items():
            write_set(
                root / name,
                n,
                task=task,
                seed=seed,
                set_index=SETS.index(name),
                image_size=image_size,
                rates=set_rates(name, simulator),
                pool=pool,
                progress=progress,
                simulator=simulator,
            )
    marker.write_text(json.dumps({**config, "complete": True}, indent=2))  # the run is complete
    return dict(sizes)


def _marker_config(
    task: str, seed: int, image_size: int, sizes: dict[str, int], simulator: ModuleType
) -> dict[str, Any]:
    """What ``simulator.json`` records of a run: everything its images depend on."""
    return {
        "task": task,
        "seed": seed,
        "image_size": image_size,
        "sizes": sizes,
        "train_rates": simulator.TRAIN_RATES,
        "test_rates": simulator.TEST_RATES,
        "field_rates": simulator.FIELD_RATES,
        "simulator": simulator_version(simulator),
    }


def _already_generated(root: Path, config: dict[str, Any]) -> bool:
    """True when ``root`` holds a complete run of ``config``. Clears the sets of another
    or an interrupted run of ours; refuses a non-empty folder the simulator did not write."""
    marker = root / MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == {**config, "complete": True}:
            return True
        for name in SETS:  # a different or interrupted run of ours: regenerate
            shutil.rmtree(root / name, ignore_errors=True)
    elif root.is_dir() and any(root.iterdir()):
        raise ValueError(
            f"{root} is not empty and was not written by the simulator; not touching it"
        )
    return False
