"""Loading a model: a built-in name or ``file.py:factory`` / ``package.module:factory``,
plus weights (``.pt`` state_dict read with ``weights_only=True``, or ``.safetensors``).

A pickled whole model is only unpickled when the caller passes ``trust=True`` (the CLI's
``--trust-model-file``): unpickling runs arbitrary code.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hudd_core.models.zoo import BUILTIN, timm_factory, torchvision_factory


def resolve_factory(spec: str):
    """The callable behind ``spec``: a built-in name, ``path/to/file.py:factory``,
    ``package.module:factory``, ``torchvision.models:NAME``
    (:func:`~hudd_core.models.zoo.torchvision_factory`) or ``timm:NAME``
    (:func:`~hudd_core.models.zoo.timm_factory`)."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        raise ValueError(
            f"--model {spec!r}: not a built-in ({', '.join(sorted(BUILTIN))}) and not of the "
            "form file.py:factory or package.module:factory"
        )
    where, name = spec.rsplit(":", 1)
    if where == "torchvision.models":
        return torchvision_factory(name)
    if where == "timm":
        return timm_factory(name)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"--model {spec!r}: {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"hudd_user_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"--model {spec!r}: {where} has no callable {name!r}")
    return factory


def read_weights(path: str | Path, *, trust: bool = False) -> dict[str, torch.Tensor] | nn.Module:
    """A state_dict from ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors``; with
    ``trust=True`` a pickled whole model is accepted and returned as the module itself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"weights file {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise ValueError(
                f"{path} is not a plain state_dict (it holds pickled objects, maybe a whole "
                "model). Loading it would run code from the file: pass --trust-model-file "
                "(trust=True) only if you trust its origin, or save model.state_dict() instead."
            ) from exc
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # zip/format errors: name the file
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    return obj


def load_model(
    spec: str,
    weights: str | Path | None = None,
    *,
    trust: bool = False,
    **factory_kwargs: Any,
) -> nn.Module:
    """Builds ``spec`` with ``factory_kwargs`` and loads ``weights`` into it; eval mode.

    Example:
        >>> m = load_model("alexnet", num_classes=5, in_channels=1, input_size=64)
        >>> sum(p.numel() for p in m.parameters()) > 0
        True
    """
    model = resolve_factory(spec)(**factory_kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r}: the factory returned {type(model).__name__}")
    if weights is not None:
        state = read_weights(weights, trust=trust)
        if isinstance(state, nn.Module):
            model = state
        else:
            problems = state_dict_mismatch(model, state)
            if problems:
                raise ValueError(
                    f"weights {weights} do not match the architecture {spec!r}: "
                    + "; ".join(problems)
                )
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ValueError(
                    f"weights {weights} do not match the architecture {spec!r}: {exc}"
                ) from exc
    return model.eval()


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else key


def _listed(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def state_dict_mismatch(model: nn.Module, state: dict) -> list[str]:
    """What keeps ``state`` from loading into ``model``, one line per problem, each naming
    the layer: shape differences first, then missing and unexpected entries. Empty when
    it fits.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> state = {**net.state_dict(), "2.weight": torch.zeros(5, 3)}
        >>> state_dict_mismatch(net, state)
        ["layer '2': weight has shape (5, 3) in the file, (2, 3) in the model"]
    """
    own = model.state_dict()
    shapes: dict[str, list[str]] = {}
    for k, v in state.items():
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape):
            shapes.setdefault(_layer(k), []).append(
                f"{k.rsplit('.', 1)[-1]} has shape {tuple(v.shape)} in the file, "
                f"{tuple(own[k].shape)} in the model"
            )
    problems = [f"layer {layer!r}: {', '.join(what)}" for layer, what in shapes.items()]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        layers = sorted({_layer(k) for k in missing}, key=list(map(_layer, own)).index)
        problems.append(f"layers {_listed(layers)} have no weights in the file "
                        f"(missing {_listed(missing)})")  # fmt: skip
    if unexpected:
        problems.append(f"the file has weights the model has no place for: {_listed(unexpected)}")
    return problems


def output_layer(model: nn.Module) -> str:
    """The qualified name of the last module (in definition order) holding parameters:
    the layer whose width makes the model's outputs, for error messages.

    Example:
        >>> output_layer(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU()))
        '2'
    """
    last = ""
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return last or type(model).__name__
