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

    result = run_retrain("T", "DataSets", options=RetrainOptions(baselines=True, repeats=3))
    print(result["hudd"]["accuracy"]["mean"], result["BL2"]["accuracy"]["mean"])
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from hudd_core.assign import QUOTAS
from hudd_core.balance import BOOTSTRAPS, balance_indices, bootstrap_target
from hudd_core.baselines import (
    baseline_names,
    baseline_sample,
    improvement_pool,
    set_options,
    versus,
)
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
from hudd_core.options import (
    NO_PREPROCESS,
    REFERENCE_RETRAIN,
    Preprocess,
    RetrainOptions,
    check_choice,
    choices,
)
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


FREEZE = choices("freeze")


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
    options: RetrainOptions = REFERENCE_RETRAIN,
    prep: Preprocess = NO_PREPROCESS,
    model_name: str | None = None,
    labels_csv: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    eval_batch_size: int = 256,
    progress: bool = True,
    tuning: bool = False,
) -> dict[str, Any]:
    """HUDD's retraining and (optionally) the baselines; writes
    ``T/DNNModels/<model>_retrained.pt`` and ``T/retrain.json`` and returns the latter.

    Args:
        options: the retraining's options (:class:`~hudd_core.options.RetrainOptions`, its
            docstring says what each does; the defaults are the reference's).
        prep: the preprocessing of ``hudd test``, for every image the retraining reads.
        model_name: the checkpoint in ``T/DNNModels`` (default: the only one that is not a
            ``_retrained`` one).
        labels_csv: the engineer's labels of the unsafe set (default: the ImprovementSet's
            class folders / labels.csv).
        tuning: validation figures only: the TestSet is never read (no ``before``,
            ``accuracy``, ``gain``, no per-group tables) and nothing is written (no
            checkpoint, no ``retrain.json``); needs ``validation`` > 0.
    """
    workdir, data_root = Path(workdir), Path(data_root)
    check_retrain_options(options, tuning)
    names = baseline_names(options.baselines)
    case = load_case(workdir, data_root, options, prep, model_name=model_name,
                     labels_csv=labels_csv, seed=seed, device=device,
                     batch_size=eval_batch_size, tuning=tuning)  # fmt: skip
    before = score(case, case.model)
    target = _bootstrap_target(workdir, case.clusters, options.quota_factor, options.quota)
    pool = None
    if names:
        pool = improvement_pool(case.model, data_root, case.meta, prep, device, eval_batch_size)
    runs = Runs({m: [] for m in ("hudd", *names)}, {name: [] for name in names})
    saved = None
    for r in range(options.runs):
        tuned, balanced = retrain_once(case, options, names, pool, target, seed + r, runs,
                                       progress=progress)  # fmt: skip
        if r == 0 and not tuning:
            saved = save_retrained(case, tuned, options.hp)
    result = retrain_result(case, options, runs, before, seed=seed, saved=saved,
                            balanced=balanced, tuning=tuning)  # fmt: skip
    if not tuning:
        atomic_write_json(workdir / "retrain.json", result)
    return result


def check_retrain_options(options: RetrainOptions, tuning: bool) -> None:
    """A ValueError naming the option whose value cannot work."""
    if options.runs < 1:
        raise ValueError(f"--repeats must be at least 1, got {options.runs}")
    if tuning and not options.validation:
        raise ValueError("tuning reads no test set: it needs --validation above 0")
    check_choice("freeze", options.freeze, FREEZE)
    check_choice("bootstrap", options.bootstrap, BOOTSTRAPS)
    check_choice("quota", options.quota, QUOTAS)


@dataclass
class Case:
    """What every fine-tuning of a retraining reads: the model, the unsafe set and its
    labelled images, the training set (less the held-out part), and the sets it is
    scored on (``test_set`` None when tuning; ``val_set`` None without validation)."""

    model: nn.Module
    meta: dict[str, Any]
    checkpoint: Path
    images: list[str]
    clusters: np.ndarray
    distances: np.ndarray
    unsafe: LabelledImages
    train_set: Dataset
    val_set: Dataset | None
    held_out: int
    test_set: ImageSet | None
    groups: dict[str, dict]
    scoring: dict[str, Any]  # correct_mask's batch_size and device


def load_case(
    workdir: Path,
    data_root: Path,
    options: RetrainOptions,
    prep: Preprocess,
    *,
    model_name: str | None,
    labels_csv: str | Path | None,
    seed: int,
    device: str,
    batch_size: int,
    tuning: bool,
) -> Case:
    """Reads the checkpoint, ``T/unsafe_set.csv`` (labelled) and the image sets."""
    checkpoint = find_checkpoint(workdir, model_name)
    model, meta = load_checkpoint(checkpoint)
    images, clusters, distances = read_unsafe_set(workdir)
    targets = label_images(data_root, images, meta, labels_csv)
    unsafe = LabelledImages(data_root, images, targets, meta["in_channels"], meta["task"],
                            prep.as_dict())  # fmt: skip
    sets = set_options(meta, prep)
    train_set = tested_only(
        ImageSet(data_root / "TrainingSet", **sets), workdir / RESULT_FILES["TrainingSet"]
    )
    fit, held_out = validation_split(len(train_set), options.validation, seed)
    val_set = None
    if len(held_out):
        train_set, val_set = Subset(train_set, fit.tolist()), Subset(train_set, held_out.tolist())
    test_set, groups = None, {}
    if not tuning:
        test_set = ImageSet(data_root / "TestSet", **sets)
        groups = test_groups(workdir, data_root, test_set, meta, options.group_by)
    return Case(model, meta, checkpoint, images, clusters, distances, unsafe, train_set,
                val_set, len(held_out), test_set, groups,
                {"batch_size": batch_size, "device": device})  # fmt: skip


@dataclass
class Scores:
    """A model's scores: the test accuracy table (None when tuning) and the validation
    accuracy (None without validation)."""

    test: dict[str, Any] | None
    validation: float | None


def score(case: Case, model: nn.Module) -> Scores:
    """``model``'s accuracy on the test set (overall and per group) and on the held-out
    training images, whichever the case has."""
    test = None
    if case.test_set is not None:
        ok, pos = correct_mask(model, case.test_set, case.meta, **case.scoring)
        test = accuracy_table(ok, [case.test_set.ids[i] for i in pos], case.groups)
    validation = None
    if case.val_set is not None:
        validation = float(np.mean(correct_mask(model, case.val_set, case.meta,
                                                **case.scoring)[0]))  # fmt: skip
    return Scores(test, validation)


@dataclass
class Runs:
    """Every method's scores, one per repeat, and how many distinct images each baseline
    added per repeat."""

    scores: dict[str, list[Scores]]
    distinct: dict[str, list[int]]


def retrain_once(
    case: Case,
    options: RetrainOptions,
    names: Sequence[str],
    pool: Any,
    target: int,
    seed: int,
    runs: Runs,
    *,
    progress: bool,
) -> tuple[nn.Module, Dataset]:
    """One repeat: HUDD's balanced unsafe set, then each baseline's images at the same
    budget, each fine-tuned on the training set and scored into ``runs``. Returns HUDD's
    tuned model and balanced set."""
    picked = balance_indices(case.clusters, case.distances, target, seed, options.bootstrap)
    balanced = case.unsafe.subset(picked)
    hudd = tune_and_score(case, options, balanced, seed, runs.scores["hudd"], progress)
    for name in names:
        extra, labelled_wrong = baseline_sample(name, pool, len(case.images), len(balanced),
                                                seed)  # fmt: skip
        runs.distinct[name].append(labelled_wrong)
        tune_and_score(case, options, extra, seed, runs.scores[name], progress)
    return hudd, balanced


def tune_and_score(
    case: Case,
    options: RetrainOptions,
    added: Dataset,
    seed: int,
    into: list[Scores],
    progress: bool,
) -> nn.Module:
    """The model fine-tuned on the training set (less the held-out part) and ``added``;
    its scores appended to ``into``."""
    data = ConcatDataset([case.train_set, added])
    tuned = fine_tune(case.model, data, case.meta, options.hp, seed=seed,
                      device=case.scoring["device"], progress=progress,
                      freeze=options.freeze)  # fmt: skip
    into.append(score(case, tuned))
    return tuned


def save_retrained(case: Case, tuned: nn.Module, hp: dict[str, Any]) -> Path:
    """``T/DNNModels/<model>_retrained.pt`` and its sidecar."""
    stem = case.checkpoint.stem
    meta = {**case.meta, "retrained_from": case.checkpoint.name, "hp": hp}
    return save_checkpoint(tuned, case.checkpoint.parent, f"{stem}_retrained", meta)


def retrain_result(
    case: Case,
    options: RetrainOptions,
    runs: Runs,
    before: Scores,
    *,
    seed: int,
    saved: Path | None,
    balanced: Dataset,
    tuning: bool,
) -> dict[str, Any]:
    """``retrain.json``: the run's facts, every method's figures, HUDD versus each
    baseline."""
    result: dict[str, Any] = {
        "model": case.checkpoint.name,
        "retrained_model": saved.name if saved else None,
        "hp": options.hp,
        "repeats": options.runs,
        "seed": seed,
        "labelling_budget": len(case.images),
        "balanced_unsafe_set": len(balanced),
    }
    chosen = {"quota": options.quota, "freeze": options.freeze, "bootstrap": options.bootstrap}
    if chosen != {"quota": "mass", "freeze": "none", "bootstrap": "weighted"}:
        result["options"] = chosen  # the reference's retrain.json keeps its shape
    if not tuning:
        result["before"] = before.test
    for name, scores in runs.scores.items():
        result[name] = {} if tuning else _summarise([s.test for s in scores], before.test)
        if before.validation is not None:
            val = [s.validation for s in scores]
            result[name]["validation_accuracy"] = _stats(val)
            result[name]["validation_gain"] = _stats([v - before.validation for v in val])
    if before.validation is not None:
        result["validation"] = {"fraction": options.validation, "n": case.held_out,
                                "seed": seed, "before": before.validation}  # fmt: skip
    for name, distinct in runs.distinct.items():  # distinct images each baseline added
        result[name]["distinct_images"] = distinct
    if runs.distinct and not tuning:  # HUDD's gains against each baseline's: A12, p-value
        gains = {m: result[m]["gain"]["runs"] for m in runs.scores}
        result["versus"] = versus(gains.pop("hudd"), gains)
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
