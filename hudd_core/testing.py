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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from hudd_core.data.datasets import ImageSet, read_metadata
from hudd_core.fileio import write_csv
from hudd_core.models.train import resolve_device

RESULT_FILES = {"TrainingSet": "trainResult.csv", "TestSet": "testResult.csv"}
DEFAULT_THRESHOLD = 4.0  # pixels: keypoint predictions with a larger mean error are Wrong


def predict(
    model: nn.Module,
    dataset: ImageSet,
    *,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> np.ndarray:
    """The model's outputs for every item of ``dataset``, in order: ``(N, outputs)`` float32."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outs = []
    with torch.inference_mode():
        for x, _ in tqdm(loader, desc=f"test {dataset.folder.name}", disable=not progress):
            outs.append(model(x.to(dev)).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def classifier_rows(
    ids: Sequence[str], logits: np.ndarray, targets: np.ndarray, classes: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a classifier result file (scores: softmax probabilities)."""
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    pred = logits.argmax(axis=1)
    header = ["image", "result", "expected", "predicted", *(f"score_{c}" for c in classes)]
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
    if pred.shape != target.shape:
        raise ValueError(f"model outputs {pred.shape[1]} values, labels have {target.shape[1]}")
    err = keypoint_errors(pred, target)
    mean, worst = err.mean(axis=1), err.argmax(axis=1)
    header = ["image", "result", "mean_error", "max_error", "worst_keypoint"]
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
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Tests ``model`` on ``sets`` of ``data_root``, writes the result files into ``workdir``;
    returns per set ``{"n", "wrong", "accuracy"}``.

    ``meta`` is the checkpoint sidecar (``task``, ``classes``, ``in_channels``).
    """
    data_root, workdir = Path(data_root), Path(workdir)
    summary = {}
    for name in sets:
        ds = ImageSet(
            data_root / name,
            task=meta["task"],
            channels=meta["in_channels"],
            image_size=image_size,
            mean=mean,
            std=std,
            classes=meta["classes"] if meta["task"] == "classifier" else None,
        )
        out = predict(model, ds, batch_size=batch_size, device=device, progress=progress)
        if meta["task"] == "classifier":
            if len(ds) and out.shape[1] != len(meta["classes"]):
                raise ValueError(
                    f"model has {out.shape[1]} outputs, {len(meta['classes'])} classes expected"
                )
            header, rows = classifier_rows(ds.ids, out, ds.targets, meta["classes"])
        else:
            target = np.stack([ds[i][1].numpy() for i in range(len(ds))]) if len(ds) else out
            header, rows = keypoint_rows(ds.ids, out, target, threshold)
        write_csv(workdir / RESULT_FILES.get(name, f"{name}Result.csv"), header, rows)
        wrong = sum(r[1] == "Wrong" for r in rows)
        summary[name] = {
            "n": len(rows),
            "wrong": wrong,
            "accuracy": 1 - wrong / len(rows) if rows else float("nan"),
        }
    return summary


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
