"""Model checkpoints: ``T/DNNModels/<name>.pt`` (state_dict) + ``<name>.json`` sidecar.

The sidecar (docs/CONTRACTS.md) says how to rebuild the model:
``{"model": spec, "kwargs": {...}, "task": "classifier"|"keypoints", "classes": [...],
"in_channels": 1, "input_size": 64}``. Loading goes through ``load_model`` (weights read
with ``weights_only=True``).

Example:
    >>> import tempfile
    >>> from hudd_core.models import alexnet
    >>> d = Path(tempfile.mkdtemp())
    >>> meta = {"model": "alexnet", "kwargs": {"num_classes": 2, "in_channels": 1,
    ...         "input_size": 32}, "task": "classifier", "classes": ["a", "b"],
    ...         "in_channels": 1, "input_size": 32}
    >>> pt = save_checkpoint(alexnet(2, 1, 32), d, "m", meta)
    >>> model, meta2 = load_checkpoint(pt)
    >>> meta2["classes"]
    ['a', 'b']
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from hudd_core.data.datasets import find_classes, read_labels
from hudd_core.fileio import atomic_write, atomic_write_json, safe_component
from hudd_core.models.loading import load_model, output_layer, read_weights, resolve_factory

REQUIRED = ("model", "kwargs", "task", "classes", "in_channels", "input_size")


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the model's parameters and buffers (stale heatmaps are never resumed)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(model: nn.Module, folder: str | Path, name: str, meta: dict[str, Any]) -> Path:
    """Writes ``folder/name.pt`` and ``folder/name.json`` (each atomically); returns the .pt."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    if meta["task"] not in ("classifier", "keypoints"):
        raise ValueError(f"task must be 'classifier' or 'keypoints', got {meta['task']!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pt, js = folder / f"{name}.pt", folder / f"{name}.json"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(pt, lambda tmp: torch.save(state, tmp))
    atomic_write_json(js, meta)
    return pt


def find_checkpoint(workdir: str | Path, name: str | None = None) -> Path:
    """The model checkpoint of the work folder: ``T/DNNModels/<name>.pt``, or without a
    name the only one there that is not a ``_retrained`` one."""
    folder = Path(workdir) / "DNNModels"
    if name:
        path = folder / (name if name.endswith(".pt") else f"{name}.pt")
        if not path.is_file():
            raise FileNotFoundError(f"model checkpoint {path} does not exist")
        return path
    found = sorted(p for p in folder.glob("*.pt") if not p.stem.endswith("_retrained"))
    if len(found) != 1:
        raise ValueError(f"{folder} holds {len(found)} models; choose one with --model-name")
    return found[0]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar of a checkpoint (``name.pt`` or ``name.json``)."""
    js = Path(path).with_suffix(".json")
    if not js.is_file():
        raise FileNotFoundError(f"checkpoint sidecar {js} does not exist")
    meta = json.loads(js.read_text())
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{js} lacks {missing}")
    return meta


def load_checkpoint(path: str | Path, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode, CPU) and its sidecar metadata from ``name.pt`` or ``name.json``;
    a ValueError (naming the file and the layer) when the weights do not fit the
    architecture or the model's outputs do not match the sidecar's classes."""
    meta = read_meta(path)
    pt = Path(path).with_suffix(".pt")
    model = load_model(meta["model"], pt, trust=trust, **meta["kwargs"])
    check_outputs(model, meta, pt)
    return model, meta


def check_outputs(model: nn.Module, meta: dict[str, Any], source: str | Path | None) -> None:
    """Stops (ValueError naming ``source``, the model and its output layer) when a
    classifier's output width differs from its number of classes. One forward pass of a
    blank image of the sidecar's size; models that cannot take it are checked on the first
    real batch by the TestModule instead.

    Example:
        >>> from hudd_core.models import alexnet
        >>> meta = {"model": "alexnet", "task": "classifier", "classes": ["a", "b", "c"],
        ...         "in_channels": 1, "input_size": 32}
        >>> check_outputs(alexnet(2, 1, 32), meta, "m.pt")
        Traceback (most recent call last):
        ...
        ValueError: m.pt: the model 'alexnet' has 2 outputs (output layer 'classifier.7'), but 3 classes ['a', 'b', 'c']
    """  # noqa: E501
    if meta.get("task") != "classifier" or not meta.get("input_size"):
        return
    size = int(meta["input_size"])
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, int(meta["in_channels"]), size, size))
    except Exception:  # e.g. a model needing another size: checked on the first batch
        return
    if not isinstance(out, torch.Tensor):
        return
    width = out.shape[1] if out.ndim == 2 else tuple(out.shape[1:])
    if width != len(meta["classes"]):
        raise ValueError(output_mismatch(model, meta, width, source))


def output_mismatch(
    model: nn.Module, meta: dict[str, Any], width, source: str | Path | None, what: str = ""
) -> str:
    """The message for a model whose outputs do not match ``meta``'s classes (or ``what``)."""
    where = f"{source}: " if source else ""
    what = what or f"{len(meta['classes'])} classes {list(meta['classes'])}"
    return (
        f"{where}the model {meta.get('model')!r} has {width} outputs "
        f"(output layer {output_layer(model)!r}), but {what}"
    )


def _accepted(factory, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``factory`` takes (user factories may take none)."""
    sig = inspect.signature(factory)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in sig.parameters}


def first_layer_channels(model: nn.Module) -> int | None:
    """The channels the model's first convolution takes (None for a model without one).

    Example:
        >>> first_layer_channels(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
        3
    """
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return next((int(m.in_channels) for m in model.modules() if isinstance(m, conv)), None)


def weights_channels(weights: str | Path | None, trust: bool = False) -> int | None:
    """The input channels of the first convolution kernel in a weights file (its first
    4-D tensor, in the state_dict's order, which follows the modules'), or None."""
    if weights is None:
        return None
    state = read_weights(weights, trust=trust)
    if isinstance(state, nn.Module):
        return first_layer_channels(state)
    return next((int(t.shape[1]) for t in state.values() if t.ndim == 4), None)


def resolve_model(
    spec: str | None,
    weights: str | Path | None,
    data_root: str | Path,
    *,
    trust: bool = False,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model a CLI step works on, and its metadata.

    With a sidecar beside ``weights`` the model is rebuilt from it. Otherwise ``spec`` is
    built with what the data tell: the classes (sorted class folders) or the keypoint count
    (``labels.csv``) and the input size (``image_size`` or the first image's). The images
    get as many channels as the model's first layer takes (docs/design.md#inputs): ``in_channels``
    when given, else what the weights' first kernel or the built model's first
    convolution takes (1 for a model without a convolution).
    """
    if weights is not None and Path(weights).with_suffix(".json").is_file():
        model, meta = load_checkpoint(weights, trust=trust)
        if spec is not None and spec != meta["model"]:
            raise ValueError(f"--model {spec!r} differs from the checkpoint's {meta['model']!r}")
        return model, meta
    if spec is None:
        raise ValueError("--model is needed when the weights have no <name>.json sidecar")
    task, classes, count, first = _data_outputs(Path(data_root))
    if image_size is None and first is not None:
        with Image.open(first) as im:
            image_size = im.size[0]
    model, kwargs, in_channels = _build(spec, weights, trust, in_channels, count, image_size)
    meta = {
        "model": spec,
        "kwargs": kwargs,
        "task": task,
        "classes": classes,
        "in_channels": in_channels,
        "input_size": image_size,
    }
    check_outputs(model, meta, weights)
    return model, meta


def _data_outputs(root: Path) -> tuple[str, list[str], dict[str, int], Path | None]:
    """What the data tell of a model's outputs: ``(task, classes, count, first image)``
    from the TrainingSet (else the TestSet): the sorted class folders, or the keypoint
    count of ``labels.csv``; ``count`` is the factory's ``num_classes``/``num_keypoints``."""
    folder = next((root / s for s in ("TrainingSet", "TestSet") if (root / s).is_dir()), None)
    if folder is None:
        raise FileNotFoundError(f"{root} holds neither TrainingSet nor TestSet")
    if (folder / "labels.csv").is_file():
        names, labels = read_labels(folder)
        first = folder / names[0] if names else None
        return "keypoints", [], {"num_keypoints": labels.shape[1] // 2}, first
    classes = find_classes(folder)
    first = next((p for c in classes for p in sorted((folder / c).iterdir())), None)
    return "classifier", classes, {"num_classes": len(classes)}, first


def _build(
    spec: str,
    weights: str | Path | None,
    trust: bool,
    in_channels: int | None,
    count: dict[str, int],
    image_size: int | None,
) -> tuple[nn.Module, dict[str, Any], int]:
    """``(model, kwargs, in_channels)``: ``spec`` built with the factory arguments it
    accepts, the weights loaded, and the channels its first layer takes (``kwargs`` as
    the sidecar records them, to rebuild the same model)."""
    factory = resolve_factory(spec)
    if in_channels is None:
        in_channels = weights_channels(weights, trust)
    kwargs = {**count, "input_size": image_size or 64}
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    kwargs = _accepted(factory, kwargs)
    model = load_model(spec, weights, trust=trust, **kwargs)
    in_channels = first_layer_channels(model) or in_channels or 1
    if "in_channels" in _accepted(factory, {"in_channels": 0}):
        kwargs["in_channels"] = in_channels  # the sidecar rebuilds the same model
    return model, kwargs, in_channels


def resolve_model_from(options: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`resolve_model` with the options named as on the command line and in the
    configuration (``model``, ``weights``, ``data``, ``trust_model_file``, ``in_channels``,
    ``image_size``)."""
    return resolve_model(options["model"], options["weights"], options["data"],
                         trust=options.get("trust_model_file", False),
                         in_channels=options.get("in_channels"),
                         image_size=options.get("image_size"))  # fmt: skip


def prepare_checkpoint(options: Mapping[str, Any]) -> Path:
    """The model every step works on, as a checkpoint in ``T/DNNModels`` (where the
    retraining also saves it): ``weights`` (with ``model`` when it has no sidecar) copied
    there once, or without ``weights`` the checkpoint an earlier step stored there
    (``model_name`` when several are).

    ``options`` are named as on the command line: ``workdir``, ``weights``, ``model``,
    ``model_name``, and what :func:`resolve_model_from` reads.
    """
    workdir = Path(options["workdir"])
    if options.get("weights") is None:
        if options.get("model") is not None:
            raise ValueError("--model needs --weights: HUDD debugs a trained model")
        return find_checkpoint(workdir, options.get("model_name"))
    weights = Path(options["weights"])
    if not weights.is_file():
        raise FileNotFoundError(f"--weights {weights} does not exist")
    folder = workdir / "DNNModels"
    if weights.parent.resolve() == folder.resolve() and weights.with_suffix(".json").is_file():
        return weights
    st = weights.stat()
    source = [str(weights.resolve()), st.st_size, st.st_mtime_ns]
    name = safe_component(weights.stem)
    dest = folder / f"{name}.pt"
    if dest.is_file() and dest.with_suffix(".json").is_file():
        if read_meta(dest).get("source") == source:
            return dest
    model, meta = resolve_model_from(options)
    return save_checkpoint(model, folder, name, {**meta, "source": source})
