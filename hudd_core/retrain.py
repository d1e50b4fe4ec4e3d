"""RetrainModule (HUDD steps 5–7): label the unsafe set, balance it, retrain; baselines.

Step 5, labels: from the ImprovementSet's class folders (or ``labels.csv`` for keypoints),
or from a CSV the engineer filled in (``--labels``: ``image,label`` with a class name or
index; keypoints: ``image,x0,y0,...``). Step 6: bootstrap balancing
(:mod:`hudd_core.balance`, seeded). Step 7: fine-tune from the current weights on
TrainingSet ∪ balanced unsafe set with the reference hyper-parameters (SGD lr 1e-3,
momentum 0.9, weight decay 5e-4, batch 128, 10 epochs; all options).

Baselines at the same labelling budget B = the number of distinct unsafe-set images
(:mod:`hudd_core.baselines`: the paper's BL1 and BL2, the uncertainty baselines, the
BL1-oracle extra), each resampled to the same number of added training samples as HUDD's
balanced set. Every method is repeated over ``repeats`` seeds; ``retrain.json`` gives
mean and std, and HUDD's Vargha–Delaney A12 and Mann–Whitney p-value against each
baseline (``versus``).

Options beyond the reference (none by default): ``freeze="features"`` fine-tunes only the
classifier head (:func:`head_modules`); ``bootstrap="none"`` adds the selected images once
(:mod:`hudd_core.balance`); ``validation=F`` holds a seeded fraction F of the TrainingSet
out of the fine-tuning and reports every method's ``validation_accuracy`` beside the test
``accuracy``; ``tuning=True`` reports only those, never reading the TestSet
(:mod:`hudd_core.tuning` chooses options that way).

Example (after ``hudd assign``)::

    result = run_retrain("T", "DataSets", baselines=True, repeats=3)
    print(result["hudd"]["accuracy"]["mean"], result["BL2"]["accuracy"]["mean"])
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from hudd_core.assign import QUOTAS
from hudd_core.balance import BOOTSTRAPS, balance_indices, bootstrap_target
from hudd_core.baselines import baseline_names, baseline_sample, improvement_pool, versus
from hudd_core.config import REFERENCE_HP, check_choice
from hudd_core.data.datasets import (
    ImageSet,
    LabelledImages,
    read_labels,
    read_metadata,
    uri_of,
)
from hudd_core.fileio import atomic_write_json
from hudd_core.models.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from hudd_core.models.train import train
from hudd_core.testing import (
    DEFAULT_THRESHOLD,
    RESULT_FILES,
    keypoint_errors,
    predict_readable,
    read_results,
)


def read_unsafe_set(workdir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(images, clusters, distances)`` of ``T/unsafe_set.csv``."""
    path = Path(workdir) / "unsafe_set.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `hudd assign` first")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} is empty: no improvement image was assigned to an RCC")
    return (
        [r["image"] for r in rows],
        np.array([int(r["cluster"]) for r in rows]),
        np.array([float(r["distance"]) for r in rows]),
    )


def label_images(
    data_root: Path, images: Sequence[str], meta: dict[str, Any], labels_csv: Path | None = None
) -> np.ndarray:
    """Targets of ``images`` (ids relative to ``data_root``): class indices or keypoints.

    Without ``labels_csv`` a classifier image's class is its folder
    (``ImprovementSet/<class>/x.png``) and a keypoint image's coordinates come from its
    set's ``labels.csv``. Every image must get a label, else a ``ValueError`` names it.
    """
    if meta["task"] == "classifier":
        index = {c: i for i, c in enumerate(meta["classes"])}
        source = str(labels_csv) if labels_csv else "the ImprovementSet class folders"
        given = _read_label_csv(labels_csv) if labels_csv else None
        out = []
        for img in images:
            label = given.get(img) if given is not None else _folder_class(img)
            if label is None:
                hint = " (an image named by URI has no class folder: give --labels)"
                raise ValueError(f"{source}: no label for {img}" + (hint * bool(uri_of(img))))
            if label not in index and not (label.isdigit() and int(label) < len(index)):
                raise ValueError(
                    f"{source}: label {label!r} of {img} is not one of the "
                    f"model's classes {meta['classes']}"
                )
            out.append(index[label] if label in index else int(label))
        return np.array(out, dtype=np.int64)
    table: dict[str, np.ndarray] = {}
    if labels_csv:
        names, values = read_labels(Path(labels_csv))
        table = dict(zip(names, values, strict=True))
    else:
        for set_name in sorted({img.split("/", 1)[0] for img in images}):
            names, values = read_labels(data_root / set_name)
            table.update({f"{set_name}/{n}": v for n, v in zip(names, values, strict=True)})
    missing = [img for img in images if img not in table]
    if missing:
        raise ValueError(f"no keypoint labels for {len(missing)} images (first: {missing[0]})")
    return np.stack([table[img] for img in images]).astype(np.float32)


def _folder_class(image: str) -> str | None:
    """``ImprovementSet/<class>/x.png``'s class; None for an image named by URI."""
    parts = image.split("/")
    return parts[1] if len(parts) >= 3 and uri_of(image) is None else None


def _read_label_csv(path: Path) -> dict[str, str]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"image", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header with columns image,label")
        rows = list(reader)
    seen: dict[str, str] = {}
    for r in rows:
        if r["image"] in seen and seen[r["image"]] != r["label"]:
            raise ValueError(f"{path}: {r['image']} has two different labels")
        seen[r["image"]] = r["label"].strip()
    return seen


def tested_only(dataset: ImageSet, result_csv: Path) -> Dataset:
    """The images of ``dataset`` that ``hudd test`` read (those it skipped as unreadable
    or oddly sized are not in its result file); all of them without that file."""
    if not result_csv.is_file():
        return dataset
    tested = read_results(result_csv)
    keep = [i for i, img in enumerate(dataset.ids) if img in tested]
    return dataset if len(keep) == len(dataset) else Subset(dataset, keep)


def correct_mask(
    model: nn.Module,
    dataset: ImageSet,
    meta: dict[str, Any],
    *,
    batch_size: int,
    device: str,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """``(correct, positions)``: for every readable image of ``dataset`` (its position),
    whether ``model`` gets it right (classifier: the label; keypoints: mean pixel error
    within ``threshold``). Images ``hudd test`` skipped (unreadable, odd size) are left
    out here too, so they never stop the retraining."""
    out, targets, positions, _ = predict_readable(
        model, dataset, batch_size=batch_size, device=device, progress=False
    )
    if meta["task"] == "classifier":
        return out.argmax(axis=1) == np.asarray(targets), positions
    return keypoint_errors(out, np.asarray(targets)).mean(axis=1) <= threshold, positions


def accuracy_table(
    correct: np.ndarray, ids: Sequence[str], groups: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """Overall accuracy and, for every grouping (``{name: {image: group}}``), the
    accuracy per group: ``{"overall": a, name: {group: {"n", "accuracy"}}}``."""
    table: dict[str, Any] = {"overall": float(np.mean(correct)) if len(correct) else math.nan}
    for name, of in groups.items():
        per: dict[str, list[bool]] = {}
        for img, ok in zip(ids, correct, strict=True):
            if img in of:
                per.setdefault(str(of[img]), []).append(bool(ok))
        table[name] = {
            g: {"n": len(v), "accuracy": float(np.mean(v))} for g, v in sorted(per.items())
        }
    return table


def test_groups(
    workdir: Path,
    data_root: Path,
    test_set: ImageSet,
    meta,
    group_by: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Groupings of the test images for the accuracy tables: class, RCC, and each
    ``group_by`` column of ``TestSet/metadata.csv`` (default: ``planted`` when present)."""
    groups: dict[str, dict[str, str]] = {}
    if meta["task"] == "classifier":
        groups["class"] = {
            i: meta["classes"][t] for i, t in zip(test_set.ids, test_set.targets, strict=True)
        }
    clusters = Path(workdir) / "clusters.csv"
    if clusters.is_file():
        with open(clusters, newline="") as fh:
            groups["rcc"] = {r["image"]: r["cluster"] for r in csv.DictReader(fh)}
    md = read_metadata(data_root / "TestSet")
    columns = md[1] if md is not None else {}
    if group_by is None:
        group_by = ["planted"] if "planted" in columns else []
    for column in group_by:
        if column not in columns:
            raise ValueError(
                f"--group-by {column}: {data_root / 'TestSet' / 'metadata.csv'} has no such "
                f"column (columns: {sorted(columns)})"
            )
        groups[column] = {
            f"TestSet/{n}": str(v) for n, v in zip(md[0], columns[column], strict=True)
        }
    return groups


FREEZE = ("none", "features")


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The classifier head: the last ``nn.Linear`` in module order (``named_modules``)
    and every module registered after it; a ValueError when the model has no Linear.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.Softmax(1))
    >>> [type(m).__name__ for m in head_modules(net)]
    ['Linear', 'Softmax']
    """
    modules = [m for _, m in model.named_modules()]
    linear = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(
            f"--freeze features: {type(model).__name__} has no nn.Linear module to take as "
            "its classifier head; use --freeze none"
        )
    return modules[linear[-1] :]


def freeze_features(model: nn.Module) -> list[nn.Module]:
    """Turns off the gradients of every parameter outside :func:`head_modules`; returns
    the frozen leaf modules (to keep in eval mode while training)."""
    head = {id(m) for m in head_modules(model)}
    frozen = []
    for m in model.modules():
        if id(m) in head:
            continue
        for p in m.parameters(recurse=False):
            p.requires_grad_(False)
        if not any(True for _ in m.children()):
            frozen.append(m)
    return frozen


def fine_tune(
    model: nn.Module,
    data: Dataset,
    meta: dict[str, Any],
    hp: dict[str, Any],
    *,
    seed: int,
    device: str,
    progress: bool,
    freeze: str = "none",
) -> nn.Module:
    """A copy of ``model`` trained from its current weights on ``data`` with ``hp``;
    ``freeze="features"``: only the classifier head (:func:`head_modules`) is trained."""
    check_choice("freeze", freeze, FREEZE)
    tuned = copy.deepcopy(model)
    frozen = freeze_features(tuned) if freeze == "features" else []
    train(
        tuned,
        data,
        epochs=hp["epochs"],
        lr=hp["lr"],
        momentum=hp["momentum"],
        weight_decay=hp["weight_decay"],
        batch_size=hp["batch_size"],
        seed=seed,
        loss="cross_entropy" if meta["task"] == "classifier" else "mse",
        optimizer="sgd",
        device=device,
        progress=progress,
        frozen=frozen,
    )
    for p in tuned.parameters():
        p.requires_grad_(True)
    return tuned


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, held_out)`` positions of ``n`` training images: a seeded permutation,
    ``round(fraction × n)`` held out (at least one, and one left to fit), both sorted.

    >>> validation_split(10, 0.3, seed=0)[1].size, validation_split(10, 0.0, seed=0)[1].size
    (3, 0)
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"--validation must be in [0, 1), got {fraction!r}")
    if fraction == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    k = min(max(round(fraction * n), 1), n - 1)
    if k < 1:
        raise ValueError(f"--validation {fraction}: the TrainingSet has only {n} image(s)")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def _stats(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "runs": [float(v) for v in a],
    }


def _summarise(runs: list[dict[str, Any]], before: dict[str, Any]) -> dict[str, Any]:
    """Mean/std over repeats of the overall accuracy and of every group's accuracy."""
    out: dict[str, Any] = {"accuracy": _stats([r["overall"] for r in runs])}
    out["gain"] = _stats([r["overall"] - before["overall"] for r in runs])
    for name in (k for k in runs[0] if k != "overall"):
        out[name] = {
            g: {"n": runs[0][name][g]["n"], **_stats([r[name][g]["accuracy"] for r in runs])}
            for g in runs[0][name]
        }
    return out


def run_retrain(
    workdir: str | Path,
    data_root: str | Path,
    *,
    model_name: str | None = None,
    labels_csv: str | Path | None = None,
    baselines: bool | Sequence[str] = False,
    repeats: int = 1,
    seed: int = 0,
    hp: dict[str, Any] | None = None,
    device: str = "auto",
    eval_batch_size: int = 256,
    quota_factor: float = 2.0,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    group_by: Sequence[str] | None = None,
    progress: bool = True,
    quota: str = "mass",
    freeze: str = "none",
    bootstrap: str = "weighted",
    validation: float = 0.0,
    tuning: bool = False,
) -> dict[str, Any]:
    """HUDD's retraining and (optionally) the baselines; writes
    ``T/DNNModels/<model>_retrained.pt`` and ``T/retrain.json`` and returns the latter.

    Args:
        model_name: the checkpoint in ``T/DNNModels`` (default: the only one that is not a
            ``_retrained`` one).
        labels_csv: the engineer's labels of the unsafe set (default: the ImprovementSet's
            class folders / labels.csv).
        baselines: ``True`` for the paper's BL1 and BL2, or baseline names
            (:data:`hudd_core.baselines.BASELINES`).
        repeats: seeds ``seed, seed+1, ...`` for every method.
        hp: hyper-parameters overriding :data:`REFERENCE_HP`.
        quota_factor, quota: the assignment's quota rule (the bootstrap target is the
            largest quota of the clusters in the unsafe set).
        image_size, mean, std: the preprocessing of ``hudd test``, for every image the
            retraining reads and evaluates.
        group_by: categorical columns of ``TestSet/metadata.csv`` to report the accuracy
            per group of (default: ``planted`` when the column exists).
        freeze: ``none`` (the reference) or ``features`` (only the classifier head).
        bootstrap: ``weighted`` (the reference) or ``none`` (:data:`BOOTSTRAPS`).
        validation: the fraction of the TrainingSet held out of the fine-tuning (seeded by
            ``seed``, the same for every repeat and method); every method then reports
            ``validation_accuracy`` and ``validation_gain`` beside the test figures, and
            ``validation`` gives the split and the accuracy before.
        tuning: validation figures only: the TestSet is never read (no ``before``,
            ``accuracy``, ``gain``, no per-group tables) and nothing is written (no
            checkpoint, no ``retrain.json``); needs ``validation`` > 0.
    """
    workdir, data_root = Path(workdir), Path(data_root)
    hp = {**REFERENCE_HP, **(hp or {})}
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if tuning and not validation:
        raise ValueError("tuning reads no test set: it needs --validation above 0")
    check_choice("freeze", freeze, FREEZE)
    check_choice("bootstrap", bootstrap, BOOTSTRAPS)
    check_choice("quota", quota, QUOTAS)
    names = baseline_names(baselines)
    checkpoint = find_checkpoint(workdir, model_name)
    model, meta = load_checkpoint(checkpoint)
    images, clusters, distances = read_unsafe_set(workdir)
    prep = {"image_size": image_size, "mean": mean, "std": std}
    unsafe = LabelledImages(
        data_root,
        images,
        label_images(data_root, images, meta, labels_csv),
        meta["in_channels"],
        meta["task"],
        prep,
    )
    classes = meta["classes"] if meta["task"] == "classifier" else None
    sets = {"task": meta["task"], "channels": meta["in_channels"], "classes": classes, **prep}
    train_set = tested_only(
        ImageSet(data_root / "TrainingSet", **sets), workdir / RESULT_FILES["TrainingSet"]
    )
    fit, held_out = validation_split(len(train_set), validation, seed)
    if len(held_out):
        train_set, val_set = Subset(train_set, fit.tolist()), Subset(train_set, held_out.tolist())
    scores = {"batch_size": eval_batch_size, "device": device}

    def validate(m: nn.Module) -> float:
        return float(np.mean(correct_mask(m, val_set, meta, **scores)[0]))

    if tuning:
        evaluate, before = None, None
    else:
        test_set = ImageSet(data_root / "TestSet", **sets)
        groups = test_groups(workdir, data_root, test_set, meta, group_by)

        def evaluate(m: nn.Module) -> dict[str, Any]:
            ok, pos = correct_mask(m, test_set, meta, **scores)
            return accuracy_table(ok, [test_set.ids[i] for i in pos], groups)

        before = evaluate(model)
    before_val = validate(model) if len(held_out) else None
    target = _bootstrap_target(workdir, clusters, quota_factor, quota)
    methods: dict[str, list[dict[str, Any]]] = {"hudd": [], **{name: [] for name in names}}
    val_runs: dict[str, list[float]] = {m: [] for m in methods}
    pool = None
    if names:
        pool = improvement_pool(model, data_root, meta, sets, device, eval_batch_size)
    kept: dict[str, list[int]] = {name: [] for name in names}

    def tune(name: str, added: Dataset, s: int) -> nn.Module:
        """Every method: TrainingSet (less the held-out part) + its images, then scored."""
        data = ConcatDataset([train_set, added])
        tuned = fine_tune(model, data, meta, hp, seed=s, device=device, progress=progress,
                          freeze=freeze)  # fmt: skip
        if evaluate is not None:
            methods[name].append(evaluate(tuned))
        if before_val is not None:
            val_runs[name].append(validate(tuned))
        return tuned

    saved = None
    for r in range(repeats):
        s = seed + r
        balanced = unsafe.subset(balance_indices(clusters, distances, target, s, bootstrap))
        tuned = tune("hudd", balanced, s)
        if r == 0 and not tuning:
            saved = save_checkpoint(
                tuned,
                workdir / "DNNModels",
                f"{checkpoint.stem}_retrained",
                {**meta, "retrained_from": checkpoint.name, "hp": hp},
            )
        for name in names:
            extra, labelled_wrong = baseline_sample(name, pool, len(images), len(balanced), s)
            kept[name].append(labelled_wrong)
            tune(name, extra, s)
    result: dict[str, Any] = {
        "model": checkpoint.name,
        "retrained_model": saved.name if saved else None,
        "hp": hp,
        "repeats": repeats,
        "seed": seed,
        "labelling_budget": len(images),
        "balanced_unsafe_set": len(balanced),
    }
    options = {"quota": quota, "freeze": freeze, "bootstrap": bootstrap}
    if options != {"quota": "mass", "freeze": "none", "bootstrap": "weighted"}:
        result["options"] = options  # the reference's retrain.json keeps its shape
    if not tuning:
        result["before"] = before
    for name in methods:
        result[name] = {} if tuning else _summarise(methods[name], before)
        if before_val is not None:
            result[name]["validation_accuracy"] = _stats(val_runs[name])
            result[name]["validation_gain"] = _stats([v - before_val for v in val_runs[name]])
    if before_val is not None:
        result["validation"] = {"fraction": validation, "n": len(held_out), "seed": seed,
                                "before": before_val}  # fmt: skip
    for name in names:  # how many distinct images each baseline added (per repeat)
        result[name]["distinct_images"] = kept[name]
    if names and not tuning:  # HUDD's gains against each baseline's: effect size, significance
        gains = {m: result[m]["gain"]["runs"] for m in methods}
        result["versus"] = versus(gains.pop("hudd"), gains)
    if not tuning:
        atomic_write_json(workdir / "retrain.json", result)
    return result


def _bootstrap_target(
    workdir: Path, clusters: np.ndarray, quota_factor: float, quota: str = "mass"
) -> int:
    """The bootstrap target from ``T/clusters.csv``'s cluster sizes (the quota rule over
    every RCC, the largest quota among those present in the unsafe set); the largest
    unsafe-set cluster when that file is absent."""
    from hudd_core.cluster.labels import NOISE

    path = workdir / "clusters.csv"
    if path.is_file():
        with open(path, newline="") as fh:
            ids, counts = np.unique([int(r["cluster"]) for r in csv.DictReader(fh)],
                                    return_counts=True)  # fmt: skip
        sizes = {int(c): int(n) for c, n in zip(ids, counts, strict=True) if c != NOISE}
        present = set(sizes) & {int(c) for c in np.unique(clusters)}
        if present:
            return bootstrap_target(sizes, quota_factor, quota, present)
    return int(np.bincount(clusters).max())
