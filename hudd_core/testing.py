"""HUDD step 1, the TestModule: run the DNN on the training and test sets, mark each image
``Correct`` or ``Wrong``, and write ``T/trainResult.csv`` and ``T/testResult.csv``.

Classifiers (docs/CONTRACTS.md): ``image,result,expected,predicted,<scores...>`` with
``expected``/``predicted`` the class names and one ``score_<class>`` column per class (softmax
probability). Keypoint regressors: ``image,result,mean_error,max_error,worst_keypoint``
(pixel errors; ``Wrong`` when the mean error exceeds ``threshold``, default 4 px;
``worst_keypoint`` is the index of the keypoint with the largest error).

Example:
    >>> import tempfile
    >>> from hudd_core.data.generate import generate
    >>> from hudd_core.models import alexnet
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = generate(tmp / "DataSets", sizes={"TestSet": 8}, image_size=32, progress=False)
    >>> meta = {"task": "classifier", "classes": ["center", "closed", "down", "left",
    ...         "right", "up"], "in_channels": 1, "input_size": 32}
    >>> summary = run_test(alexnet(6, 1, 32), tmp / "DataSets", tmp / "T", meta,
    ...                    sets=("TestSet",), progress=False)
    >>> summary["TestSet"]["n"], (tmp / "T" / "testResult.csv").is_file()
    (8, True)
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from hudd_core.data.datasets import ImageSet, read_metadata
from hudd_core.data.robust import SkipLog, Skipping, collate_skipping, common_shape
from hudd_core.fileio import load_signed_npz, save_signed_npz, write_csv
from hudd_core.models.checkpoint import model_fingerprint, output_mismatch
from hudd_core.models.train import resolve_device
from hudd_core.options import DEFAULTS, NO_PREPROCESS, Preprocess
from hudd_core.progress import bar as progress_bar

log = logging.getLogger("hudd")

RESULT_FILES = {"TrainingSet": "trainResult.csv", "TestSet": "testResult.csv"}
DEFAULT_THRESHOLD = DEFAULTS["threshold"]  # pixels: a larger mean keypoint error is Wrong


@dataclass
class PartialResults:
    """The outputs of the batches tested so far, saved every few batches (atomically) so
    that an interrupted test of a large set resumes where it stopped; ``signature`` (the
    model's weights, the set, the input shape) must match for a saved file to be used."""

    path: Path
    signature: dict
    outs: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    done: int = 0  # items processed, skipped ones included

    @classmethod
    def open(cls, path: Path, signature: dict) -> PartialResults:
        part = cls(path, signature)
        z = load_signed_npz(path, signature)
        if z is not None:
            for name in ("outs", "targets", "positions"):
                getattr(part, name).append(torch.from_numpy(z[name]))
            part.skipped = list(
                zip(z["skip_index"].tolist(), z["skip_reason"].tolist(), strict=True)
            )
            part.done = int(z["done"])
        return part

    def save(self) -> None:
        if not self.outs:
            return
        arrays = {name: torch.cat(getattr(self, name)).numpy()
                  for name in ("outs", "targets", "positions")}  # fmt: skip
        for name in arrays:  # in place: callers hold these lists
            getattr(self, name)[:] = [torch.from_numpy(arrays[name])]
        index = np.array([i for i, _ in self.skipped], np.int64)
        reason = np.array([r for _, r in self.skipped], dtype=str)
        save_signed_npz(self.path, self.signature, **arrays, skip_index=index,
                        skip_reason=reason, done=self.done)  # fmt: skip


def predict_readable(
    model: nn.Module,
    dataset: Dataset,
    *,
    shape: Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
    strict: bool = False,
    check: Callable[[torch.Tensor], None] | None = None,
    desc: str = "test",
    num_workers: int = 0,
    resume: Path | None = None,
    save_every: int = 50,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """The model's outputs for every readable item of ``dataset`` (items ``(x, y)``).

    An item that cannot be read (corrupt, truncated, zero-byte, not an image) or whose
    size differs from ``shape`` (default: the set's common size,
    :func:`hudd_core.data.robust.common_shape`) is skipped; with ``strict`` the first one
    raises a ValueError naming it instead. ``check`` sees the first batch's outputs (to
    stop early when the model does not fit the data). With ``resume`` (a file path), the
    results so far are saved there every ``save_every`` batches and a rerun continues
    after the last saved batch (:class:`PartialResults`).

    Returns:
        ``(outputs (K, O) float32, targets (K, ...), positions (K,) int64, skipped)``
        with ``skipped`` the ``(index, reason)`` of every item left out.
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if shape is None:
        shape = common_shape(dataset)
    part = _partial(resume, model, dataset, ids, shape)
    items = Subset(Skipping(dataset, shape, ids), range(part.done, len(dataset)))
    loader = DataLoader(items, batch_size=batch_size, shuffle=False,
                        collate_fn=collate_skipping, num_workers=num_workers)  # fmt: skip
    outs, targets, positions, skipped = part.outs, part.targets, part.positions, part.skipped
    checked = bool(outs)
    bar = progress_bar(loader, desc=desc, enabled=progress, total=len(loader))
    with torch.inference_mode():
        for b, (x, y, idx, bad) in enumerate(bar, start=1):
            if bad and strict:
                raise ValueError(bad[0][1])
            skipped += bad
            if x is not None:
                out = _forward(model, x, dev, desc=desc, dataset=dataset, ids=ids,
                               first=int(idx[0]))  # fmt: skip
                if check is not None and not checked:
                    check(out)
                    checked = True
                outs.append(out)
                targets.append(y)
                positions.append(idx)
            part.done = max([part.done, *(int(i) + 1 for i in idx), *(i + 1 for i, _ in bad)])
            if resume and b % save_every == 0:
                part.save()
    return _concatenated(outs, targets, positions, skipped)


def _concatenated(
    outs: list[torch.Tensor],
    targets: list[torch.Tensor],
    positions: list[torch.Tensor],
    skipped: list[tuple[int, str]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """:func:`predict_readable`'s arrays from its batches (empty ones without any)."""
    if not outs:
        empty = np.zeros((0, 0), np.float32)
        return empty, empty, np.zeros(0, np.int64), skipped
    return (
        torch.cat(outs).numpy(),
        torch.cat(targets).numpy(),
        torch.cat(positions).numpy(),
        skipped,
    )


def _partial(
    resume: Path | None,
    model: nn.Module,
    dataset: Dataset,
    ids: Sequence[str] | None,
    shape: Sequence[int],
) -> PartialResults:
    """The saved results of an interrupted run over the same items, shape and weights
    (nothing done when none, or without ``resume``)."""
    if not resume:
        return PartialResults(Path(), {})
    names = list(ids if ids is not None else getattr(dataset, "ids", []))
    signature = {"n": len(dataset), "ids": names[:1] + names[-1:], "shape": list(shape),
                 "model": model_fingerprint(model)}  # fmt: skip
    return PartialResults.open(resume, signature)


def _forward(
    model: nn.Module,
    x: torch.Tensor,
    dev: torch.device,
    *,
    desc: str,
    dataset: Dataset,
    ids: Sequence[str] | None,
    first: int,
) -> torch.Tensor:
    """The model's float outputs of a batch on the CPU; a model that cannot take the
    images (e.g. of another size) raises a ValueError naming the batch's ``first`` item."""
    try:
        return model(x.to(dev)).float().cpu()
    except RuntimeError as exc:
        name = Skipping(dataset, None, ids).name(first)
        raise ValueError(
            f"{desc}: the model fails on images of size {tuple(x.shape[1:])} "
            f"(batch starting at {name}; --image-size resizes): {exc}"
        ) from exc


def predict(
    model: nn.Module,
    dataset: ImageSet,
    *,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> np.ndarray:
    """The model's outputs for every item of ``dataset``, in order: ``(N, outputs)``
    float32. An unreadable or odd-sized image stops it with a ValueError naming the image
    (:func:`predict_readable` skips them instead)."""
    folder = getattr(dataset, "folder", None)
    out, _, _, _ = predict_readable(model, dataset, batch_size=batch_size, device=device,
                                    progress=progress, strict=True,
                                    desc=f"test {folder.name}" if folder else "test")  # fmt: skip
    return out


def classifier_rows(
    ids: Sequence[str], logits: np.ndarray, targets: np.ndarray, classes: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a classifier result file (scores: softmax probabilities)."""
    header = ["image", "result", "expected", "predicted", *(f"score_{c}" for c in classes)]
    if len(ids) == 0:
        return header, []
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    pred = logits.argmax(axis=1)
    rows = [
        [i, "Correct" if p == t else "Wrong", classes[t], classes[p], *(f"{v:.6g}" for v in pr)]
        for i, p, t, pr in zip(ids, pred, targets, prob, strict=True)
    ]
    return header, rows


def keypoint_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Euclidean pixel error per keypoint, ``(N, K)``, from ``(N, 2K)`` x/y layouts.

    Example:
        >>> keypoint_errors(np.array([[3.0, 4.0, 1.0, 1.0]]), np.zeros((1, 4))).round(3)
        array([[5.   , 1.414]])
    """
    d = (pred - target).reshape(len(pred), -1, 2)
    return np.sqrt((d**2).sum(axis=2))


def keypoint_rows(
    ids: Sequence[str], pred: np.ndarray, target: np.ndarray, threshold: float
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a keypoint result file (``Wrong``: mean error > threshold)."""
    header = ["image", "result", "mean_error", "max_error", "worst_keypoint"]
    if len(ids) == 0:
        return header, []
    if pred.shape != target.shape:
        raise ValueError(f"model outputs {pred.shape[1]} values, labels have {target.shape[1]}")
    err = keypoint_errors(pred, target)
    mean, worst = err.mean(axis=1), err.argmax(axis=1)
    rows = [
        [i, "Wrong" if m > threshold else "Correct", f"{m:.6g}", f"{mx:.6g}", str(w)]
        for i, m, mx, w in zip(ids, mean, err.max(axis=1), worst, strict=True)
    ]
    return header, rows


def run_test(
    model: nn.Module,
    data_root: str | Path,
    workdir: str | Path,
    meta: dict[str, Any],
    *,
    sets: Sequence[str] = ("TrainingSet", "TestSet"),
    batch_size: int = 64,
    device: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
    prep: Preprocess = NO_PREPROCESS,
    progress: bool = True,
    model_file: str | Path | None = None,
    num_workers: int = 0,
    predictor: Callable[..., tuple] | None = None,
) -> dict[str, dict[str, float]]:
    """Tests ``model`` on ``sets`` of ``data_root``, writes the result files into ``workdir``;
    returns per set ``{"n", "wrong", "accuracy", "skipped"}``.

    ``meta`` is the checkpoint sidecar (``task``, ``classes``, ``in_channels``); ``prep``
    how the images are resized and normalised. Images
    that cannot be read (corrupt, truncated, zero-byte, not an image) or whose size
    differs from the set's are left out of the result files and listed in
    ``T/skipped.csv`` (step ``test``), as are non-image files in class folders. The
    results so far are saved every 50 batches (``T/.partial/``): an interrupted run resumes
    after the last saved batch of the set it was testing. A model
    whose outputs do not match the classes (or the keypoint labels) stops the step on the
    first batch with a ValueError naming ``model_file`` (the weights) and the output layer.
    ``predictor`` replaces :func:`predict_readable` (the Ray engine's,
    :func:`hudd_core.engine_ray.ray_predictor`).
    """
    data_root, workdir = Path(data_root), Path(workdir)
    skips = SkipLog(workdir)
    summary = {}
    for name, ds in _test_sets(data_root, sets, meta, prep).items():
        partial = workdir / ".partial" / f"test_{name}.npz"  # resume point of this set
        out, target, positions, skipped = (predictor or predict_readable)(
            model, ds, batch_size=batch_size, device=device, progress=progress,
            check=_output_check(model, meta, ds, model_file), desc=f"test {name}",
            num_workers=num_workers, resume=partial,
        )  # fmt: skip
        _log_skipped(skips, name, ds, skipped)
        ids = [ds.ids[i] for i in positions]
        if meta["task"] == "classifier":
            header, rows = classifier_rows(ids, out, ds.targets[positions], meta["classes"])
        else:
            header, rows = keypoint_rows(ids, out, target, threshold)
        write_csv(workdir / RESULT_FILES.get(name, f"{name}Result.csv"), header, rows)
        partial.unlink(missing_ok=True)  # the set is complete
        summary[name] = _set_summary(rows, skipped)
    return summary


def _set_summary(rows: list[tuple], skipped: list[tuple[int, str]]) -> dict[str, float]:
    """:func:`run_test`'s figures of one set from its result rows."""
    wrong = sum(r[1] == "Wrong" for r in rows)
    return {
        "n": len(rows),
        "wrong": wrong,
        "accuracy": 1 - wrong / len(rows) if rows else float("nan"),
        "skipped": len(skipped),
    }


def _test_sets(
    data_root: Path, sets: Sequence[str], meta: dict[str, Any], prep: Preprocess
) -> dict[str, ImageSet]:
    """The sets to test, each listed (and its labels.csv checked) before anything is
    written."""
    return {
        name: ImageSet(
            data_root / name,
            task=meta["task"],
            channels=meta["in_channels"],
            **prep.as_dict(),
            classes=meta["classes"] if meta["task"] == "classifier" else None,
        )
        for name in sets
    }


def _output_check(
    model: nn.Module, meta: dict[str, Any], ds: ImageSet, model_file: str | Path | None
) -> Callable[[torch.Tensor], None]:
    """The check of a first batch's outputs: as many as the classes (or the keypoint
    coordinates of ``ds``'s labels.csv), else a ValueError naming the output layer."""
    if meta["task"] == "classifier":
        want = len(meta["classes"])
        what = f"{len(meta['classes'])} classes {list(meta['classes'])}"
    else:
        want = ds.targets.shape[1] if ds.targets.ndim == 2 else 0
        what = f"{ds.folder / 'labels.csv'} has {want} coordinates per image"

    def check(out: torch.Tensor) -> None:
        width = out.shape[1] if out.ndim == 2 else tuple(out.shape[1:])
        if width != want:
            raise ValueError("test: " + output_mismatch(model, meta, width, model_file, what))

    return check


def _log_skipped(skips: SkipLog, name: str, ds: ImageSet, skipped: list[tuple[int, str]]) -> None:
    """``T/skipped.csv`` rows of a set's non-image files and unreadable images."""
    for i in ds.other_files:
        skips.add("test", f"{ds.folder.name}/{i}", f"{ds.folder / i}: not an image file")
    for i, reason in skipped:
        skips.add("test", ds.ids[i], reason)
    if skipped:
        log.warning("test: %d image(s) of %s skipped (unreadable or of another size), "
                    "listed in %s", len(skipped), name, skips.path)  # fmt: skip


def read_results(path: str | Path) -> dict[str, str]:
    """``image -> result`` of a result file."""
    with open(path, newline="") as fh:
        return {r["image"]: r["result"] for r in csv.DictReader(fh)}


def accuracy_by_planted(data_root: str | Path, set_name: str, result_file: str | Path) -> dict:
    """Accuracy per planted region (``metadata.csv``'s ``planted`` column) of a tested set:
    ``{region: {"n", "accuracy"}}``; empty when the set has no such metadata."""
    meta = read_metadata(Path(data_root) / set_name)
    if meta is None or "planted" not in meta[1]:
        return {}
    names, cols = meta
    results = read_results(result_file)
    by: dict[str, list[bool]] = {}
    for name, region in zip(names, cols["planted"], strict=True):
        res = results.get(f"{set_name}/{name}")
        if res is not None:
            by.setdefault(str(region), []).append(res == "Correct")
    return {r: {"n": len(v), "accuracy": float(np.mean(v))} for r, v in sorted(by.items())}
