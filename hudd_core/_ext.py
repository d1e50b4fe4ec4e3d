"""Access to the compiled extension ``hudd_core._C`` and to what the machine can run."""

from __future__ import annotations

import functools

import torch

try:
    from hudd_core import _C
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "hudd_core._C is not built. Install the project as the README says "
        "(make test / make demo), or run `python setup.py build_ext --inplace`."
    ) from exc


@functools.cache
def cuda_usable() -> bool:
    """True when torch sees a GPU and ``_C`` was compiled with CUDA and can run on it."""
    return bool(torch.cuda.is_available() and _C.cuda_compiled() and _C.cuda_available())


def resolve_device(device: str | torch.device | None, default: torch.device) -> torch.device:
    """``None`` keeps ``default``; ``"auto"`` picks CUDA when usable; else ``torch.device``."""
    if device is None:
        return default
    if str(device) == "auto":
        return torch.device("cuda" if cuda_usable() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device on this machine")
    return dev


def stream_of(t: torch.Tensor) -> int | None:
    """The CUDA stream handle the kernels must use for ``t`` (``None`` on the CPU)."""
    if t.device.type != "cuda":
        return None
    return torch.cuda.current_stream(t.device).cuda_stream


def compiled_for(t: torch.Tensor) -> bool:
    """Whether ``_C`` can run on the device holding ``t``."""
    return t.device.type == "cpu" or cuda_usable()
