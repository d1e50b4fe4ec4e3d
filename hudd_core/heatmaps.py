"""HeatmapModule (HUDD step 2): LRP relevance of every layer for the error-inducing images.

:func:`compute_heatmaps` is the step over plain inputs (a model, a dataset of
``(image, target)`` items and their ids) into a heatmap folder; :func:`run_heatmaps`
reads ``T/testResult.csv``'s ``Wrong`` rows and writes ``T/Heatmaps``. One LRP pass per
batch (:class:`hudd_core.lrp.LRP`) gives every layer; rows are stored batch by batch
(:class:`hudd_core.store.HeatmapStore`), so an interrupted run resumes.

Start relevance (docs/design.md#start-relevance): the predicted logit for classifiers; for keypoint
regressors the outputs of the keypoint with the largest error (the dataset's targets are
the ground-truth coordinates).

Example:
    >>> import tempfile, torch
    >>> from torch.utils.data import TensorDataset
    >>> from hudd_core.models import alexnet
    >>> ds = TensorDataset(torch.rand(5, 1, 32, 32), torch.zeros(5, dtype=torch.long))
    >>> out = tempfile.mkdtemp()
    >>> s = compute_heatmaps(alexnet(2, input_size=32).eval(), ds, [f"i{k}" for k in range(5)],
    ...                      out, batch_size=2, progress=False)
    >>> s["rows"], s["layers"][:2]
    (5, ['input', 'features.0'])
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from hudd_core._ext import resolve_device
from hudd_core.data.robust import Skipping, collate_skipping
from hudd_core.lrp import LRP
from hudd_core.lrp.engine import layer_relevance, start_relevance
from hudd_core.models.checkpoint import model_fingerprint
from hudd_core.options import NO_PREPROCESS, Preprocess
from hudd_core.progress import bar as progress_bar
from hudd_core.runstate import NothingToDo
from hudd_core.store import HeatmapStore


def compute_heatmaps(
    model: nn.Module,
    dataset: Dataset,
    ids: Sequence[str],
    out_dir: str | Path,
    *,
    task: str = "classifier",
    composite: str = "hudd",
    layers: Sequence[str] | None = None,
    float16: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    source: Callable[..., Iterable[tuple[dict | None, list]]] | None = None,
    activations: bool = False,
) -> dict[str, Any]:
    """Heatmaps of ``dataset`` (items ``(image, target)``, row r = ``ids[r]``) into
    ``out_dir`` (CONTRACTS.md format); resumes a matching interrupted run.

    Args:
        task: ``"classifier"`` (start: the predicted class) or ``"keypoints"`` (start: the
            worst keypoint against the item's target coordinates).
        composite: LRP composite (:data:`hudd_core.lrp.COMPOSITES`).
        layers: layer names to store (default: every layer, see :class:`~hudd_core.lrp.LRP`).
        float16: store float16 instead of float32 (half the disk).
        source: computes the relevance batches elsewhere, in row order from the resume
            point (the Ray engine's, :func:`hudd_core.engine_ray.ray_heatmap_source`;
            classifier images only).
        activations: store each layer's activation (:meth:`~hudd_core.lrp.LRP.activations`,
            the tensor its relevance belongs to) instead of its relevance, in the same
            format (``T/Activations``, the features of ``hudd cluster --method act-*``).
    Returns:
        ``{"rows", "layers", "resumed_from", "seconds", "images_per_s"}``.
    """
    _check_heatmap_args(dataset, ids, task, source, activations)
    param = next(model.parameters(), None)
    dev = resolve_device(device, param.device if param is not None else torch.device("cpu"))
    model = model.to(dev).eval()
    lrp = LRP(model, composite, layers)
    if len(dataset) == 0:
        raise ValueError("no images to compute heatmaps for")
    shape = tuple(dataset[0][0].shape)
    shapes = lrp.shapes(shape)
    kind = f"activations/{lrp.composite.name}" if activations else lrp.composite.name
    store = HeatmapStore.open(out_dir, ids, shapes, composite=kind,
                              float16=float16, fingerprint=model_fingerprint(model))  # fmt: skip
    start, t0 = store.done, time.perf_counter()
    if source is None:
        batches = _local_batches(lrp, Skipping(dataset, shape, ids), store.done, task=task,
                                 dev=dev, batch_size=batch_size, num_workers=num_workers,
                                 activations=activations)  # fmt: skip
    else:
        batches = source(model, dataset, shape, store.done, composite=composite,
                         layers=list(shapes), batch_size=batch_size, device=device)  # fmt: skip
    with progress_bar(total=len(dataset), initial=start, unit="img", enabled=progress,
                      desc="activations" if activations else "heatmaps") as bar:  # fmt: skip
        _store_batches(store, batches, ids, out_dir, bar)
    store.finish()
    return _heatmap_summary(len(dataset), list(shapes), start, time.perf_counter() - t0)


def _heatmap_summary(rows: int, layers: list[str], start: int, seconds: float) -> dict[str, Any]:
    """:func:`compute_heatmaps`' summary of a run that resumed at row ``start``."""
    done = rows - start
    return {
        "rows": rows,
        "layers": layers,
        "resumed_from": start,
        "seconds": round(seconds, 3),
        "images_per_s": round(done / seconds, 1) if done and seconds > 0 else None,
    }


def _check_heatmap_args(
    dataset: Dataset,
    ids: Sequence[str],
    task: str,
    source: Callable[..., Iterable[tuple[dict | None, list]]] | None,
    activations: bool,
) -> None:
    """A ValueError for arguments :func:`compute_heatmaps` cannot work with."""
    if len(ids) != len(dataset):
        raise ValueError(f"{len(ids)} ids for {len(dataset)} images")
    if task not in ("classifier", "keypoints"):
        raise ValueError(f"task must be 'classifier' or 'keypoints', got {task!r}")
    if activations and source is not None:
        raise ValueError("activations are computed in this process (no --engine ray)")


def _store_batches(
    store: HeatmapStore,
    batches: Iterable[tuple[dict | None, list]],
    ids: Sequence[str],
    out_dir: str | Path,
    bar: Any,
) -> None:
    """Writes every batch's relevance into ``store``. Every row must be filled: an image
    that cannot be read now (or has another size) stops the step, naming it; the batches
    stored before it stay for the rerun."""
    for relevance, bad in batches:
        if bad:
            raise ValueError(
                f"heatmaps: {bad[0][1]} ({store.done} of {len(ids)} rows stored in "
                f"{out_dir} are kept; replace the image, or rerun `hudd test`, then rerun)"
            )
        _check_finite(relevance, ids, store.done, out_dir)
        store.write(relevance)
        bar.update(len(next(iter(relevance.values()))))


def _local_batches(
    lrp: LRP,
    items: Skipping,
    start: int,
    *,
    task: str,
    dev: torch.device,
    batch_size: int,
    num_workers: int,
    activations: bool = False,
) -> Iterable[tuple[dict | None, list]]:
    """``(relevance of every layer, [])`` per batch from ``start``, in this process (with
    ``activations``, the layers' outputs instead); ``(None, skipped)`` at a batch with an
    image that cannot be read."""
    loader = DataLoader(Subset(items, range(start, len(items))), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_skipping)  # fmt: skip
    for x, target, _, bad in loader:
        if bad:
            yield None, bad
            return
        x = x.to(dev, non_blocking=True)
        if activations:
            yield lrp.activations(x), []
            continue
        kp = target.to(dev) if task == "keypoints" else None
        yield lrp(x, keypoints=kp), []


def _check_finite(relevance: dict, ids: Sequence[str], first: int, out_dir) -> None:
    """Stops before a batch with NaN or inf relevance is stored, naming the image and
    the layer (the rows stored before stay)."""
    for name, r in relevance.items():
        finite = torch.isfinite(r.reshape(len(r), -1)).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0, 0])
            raise ValueError(
                f"heatmaps: NaN or inf relevance for image {ids[first + row]} at layer "
                f"{name!r} (the model's output for it is not finite, or overflows; the "
                f"{first} rows stored in {out_dir} before it are kept)"
            )


def keypoint_start(output: torch.Tensor, keypoint: int) -> torch.Tensor:
    """The start relevance of a keypoint regressor's ``keypoint``: its two outputs
    (``x``, ``y`` of ``[x0, y0, x1, y1, ...]``) keep their value, the others are zeroed.

    Example:
        >>> keypoint_start(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 1)
        tensor([[0., 0., 3., 4.]])
    """
    if not 0 <= 2 * keypoint + 1 < output.shape[1]:
        raise ValueError(f"keypoint {keypoint} is not among the model's {output.shape[1] // 2}")
    mask = torch.zeros_like(output)
    mask[:, 2 * keypoint : 2 * keypoint + 2] = 1
    return output * mask


def batch_relevance(
    model: nn.Module,
    layer: str,
    *,
    composite: str = "hudd",
    device: str = "auto",
    keypoint: int | None = None,
    outputs: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """A function mapping a batch of images to its flattened relevance at ``layer``,
    ``(B, D)`` float32 on the CPU, computed on ``device`` (what the AssignModule streams).
    ``keypoint``: a keypoint regressor's images are explained by that keypoint (unlabeled
    images have no worst keypoint). ``outputs``: the function returns ``(relevance,
    model outputs)``, the outputs of the same forward pass (float32, CPU).

    Example:
        >>> from hudd_core.models import alexnet
        >>> f = batch_relevance(alexnet(2, input_size=32).eval(), "features.10", device="cpu")
        >>> f(torch.rand(3, 1, 32, 32)).shape
        torch.Size([3, 1024])
    """
    param = next(model.parameters(), None)
    dev = resolve_device(device, param.device if param is not None else torch.device("cpu"))
    if keypoint is None and not outputs:
        relevance = layer_relevance(model.to(dev).eval(), layer, composite)
    else:
        lrp = LRP(model.to(dev).eval(), composite, layers=[layer])
        seen: dict[str, torch.Tensor] = {}

        def start(out: torch.Tensor) -> torch.Tensor:
            seen["out"] = out
            return start_relevance(out) if keypoint is None else keypoint_start(out, keypoint)

        def relevance(x: torch.Tensor) -> torch.Tensor:
            return lrp(x, start=start)[layer].reshape(len(x), -1)

    def on_device(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        rel = relevance(x.to(dev, non_blocking=True)).float().cpu()
        return (rel, seen.pop("out").float().cpu()) if outputs else rel

    return on_device


def wrong_images(result_csv: str | Path) -> list[str]:
    """The error-inducing images: ``Wrong`` rows of a TestModule result file, in order.
    A ValueError names the file when it lists an image twice."""
    path = Path(result_csv)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `hudd test` first")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [(r["image"], r["result"]) for r in csv.DictReader(fh)]
    except (KeyError, csv.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc!r}): rerun `hudd test` to rewrite it") from exc
    if any(img is None or res not in ("Correct", "Wrong") for img, res in rows):
        raise ValueError(
            f"{path} is damaged (a row without image or Correct/Wrong result): rerun `hudd test`"
        )
    seen: set[str] = set()
    dups = sorted({img for img, _ in rows if img in seen or seen.add(img)})
    if dups:
        raise ValueError(f"{path} lists {len(dups)} image(s) twice (first: {dups[0]})")
    return [img for img, result in rows if result == "Wrong"]


def run_heatmaps(
    workdir: str | Path,
    data_root: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    *,
    prep: Preprocess = NO_PREPROCESS,
    improvement: bool = False,
    activations: bool = False,
    **kwargs,
) -> dict[str, Any]:
    """HeatmapModule over the work folder: ``T/testResult.csv`` Wrong rows →
    ``T/Heatmaps``; with ``improvement``, every image of ``DataSets/ImprovementSet`` →
    ``T/ImprovementHeatmaps`` (classifiers: unlabeled, the predicted class is explained);
    with ``activations``, the Wrong rows' layer activations → ``T/Activations``.
    ``meta`` is the checkpoint sidecar, ``prep`` how the images are resized and normalised;
    ``kwargs`` go to :func:`compute_heatmaps`."""
    from hudd_core.data.datasets import ImageFiles, ImageSet
    from hudd_core.testing import RESULT_FILES

    workdir, data_root = Path(workdir), Path(data_root)
    load = {"channels": meta["in_channels"], **prep.as_dict()}
    if improvement:
        if activations:
            raise ValueError("activations: of the Wrong test images only, not --improvement")
        if meta["task"] != "classifier":
            raise ValueError("improvement heatmaps of a keypoint model need ground truth")
        pool = ImageFiles(data_root / "ImprovementSet", **load)
        return compute_heatmaps(model, pool, pool.ids, workdir / "ImprovementHeatmaps", **kwargs)
    result = workdir / RESULT_FILES["TestSet"]
    wrong = wrong_images(result)
    if not wrong:
        raise NothingToDo(
            f"heatmaps: {result} has no Wrong image (the model gets every test image "
            "right): nothing to debug"
        )
    classes = meta["classes"] if meta["task"] == "classifier" else None
    ds = ImageSet(data_root / "TestSet", task=meta["task"], classes=classes, **load)
    pos = {img: i for i, img in enumerate(ds.ids)}
    missing = [w for w in wrong if w not in pos]
    if missing:
        raise ValueError(
            f"heatmaps: {len(missing)} Wrong images of {result} are not in "
            f"{data_root / 'TestSet'} (first: {missing[0]}): rerun `hudd test`"
        )
    subset = Subset(ds, [pos[w] for w in wrong])
    out = workdir / ("Activations" if activations else "Heatmaps")
    return compute_heatmaps(model, subset, wrong, out, task=meta["task"],
                            activations=activations, **kwargs)  # fmt: skip
