"""Access to the compiled extension ``hudd_core._C`` and to what the machine can run.

Every compiled kernel has a plain-torch twin. The twin runs instead (on whatever device
the tensors are on) when ``_C`` cannot run there: a CPU-only build on a GPU machine, or a
CUDA build with no kernel image for the GPU's architecture. Both cases warn once, naming
the reason, instead of failing at the first launch.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import torch

try:
    from hudd_core import _C
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "hudd_core._C is not built. Install the project as the README says "
        "(make test / make demo), or run `python setup.py build_ext --inplace`."
    ) from exc

# Set to 1 to make every GPU look as if _C had no kernel image for it (the fallback path
# on a real GPU; tests on the CPU inject the facts directly).
SIMULATE_NO_IMAGE_ENV = "HUDD_SIMULATE_NO_KERNEL_IMAGE"


@dataclass(frozen=True)
class CudaFacts:
    """What decides whether ``_C``'s CUDA kernels can run on one GPU."""

    torch_sees_cuda: bool
    compiled: bool  # _C built with nvcc
    runtime_sees_device: bool  # _C's CUDA runtime finds a device
    image_error: str  # "" when a kernel image matches the device, else the reason
    arch: str  # the device's architecture, e.g. "sm_89" ("" without a GPU)
    compiled_archs: tuple[str, ...] = ()


def decide(facts: CudaFacts) -> tuple[bool, str | None]:
    """``(usable, warning)``: whether the compiled CUDA kernels can run, and the warning
    to give when torch sees a GPU but they cannot (``None`` when nothing is lost)."""
    if not facts.torch_sees_cuda:
        return False, None
    if not facts.compiled:
        return False, (
            "hudd_core._C was built without CUDA although torch sees a GPU: heatmaps and "
            "distances on the GPU run the slower plain-torch twins. Rebuild with nvcc "
            "(HUDD_CUDA=on python setup.py build_ext --inplace)."
        )
    if not facts.runtime_sees_device:
        return False, (
            "hudd_core._C's CUDA runtime finds no device although torch does (driver "
            "older than the CUDA toolkit _C was built with?): using the plain-torch twins."
        )
    if facts.image_error:
        return False, (
            f"hudd_core._C has no kernel image for this GPU ({facts.arch}; compiled for "
            f"{', '.join(facts.compiled_archs) or 'nothing'}): {facts.image_error}. Using "
            "the plain-torch twins; rebuild with HUDD_CUDA_ARCHS including this architecture."
        )
    return True, None


def gather_facts(device: int) -> CudaFacts:
    """The facts of CUDA device ``device`` on this machine."""
    sees = torch.cuda.is_available()
    compiled = bool(_C.cuda_compiled())
    runtime = bool(sees and compiled and _C.cuda_available())
    arch = ""
    if sees:
        major, minor = torch.cuda.get_device_capability(device)
        arch = f"sm_{major}{minor}"
    error = ""
    if runtime:
        if os.environ.get(SIMULATE_NO_IMAGE_ENV) == "1":
            error = f"simulated by {SIMULATE_NO_IMAGE_ENV}=1"
        else:
            error = _C.kernel_image_error(device)
    return CudaFacts(sees, compiled, runtime, error, arch, tuple(_C.cuda_archs()))


@functools.cache
def _usable_on(device: int) -> bool:
    usable, warning = decide(gather_facts(device))
    if warning:
        warnings.warn(warning, RuntimeWarning, stacklevel=3)
    return usable


def cuda_usable(device: int | torch.device | None = None) -> bool:
    """True when torch sees a GPU and ``_C``'s CUDA kernels can run on it (``device``:
    an index or a CUDA device; ``None`` is the current device). Warns once per device
    when torch sees it but the kernels cannot run there."""
    if not torch.cuda.is_available():
        return False
    if isinstance(device, torch.device):
        device = device.index
    return _usable_on(torch.cuda.current_device() if device is None else device)


def resolve_device(
    device: str | torch.device | None = "auto", default: torch.device | None = None
) -> torch.device:
    """The one device rule of every step: ``None`` keeps ``default`` (``"auto"`` when
    there is none); ``"auto"`` is CUDA whenever torch sees a GPU (the compiled kernels
    fall back to their torch twins there, with a warning, when they cannot run on it), else
    the CPU; anything else is ``torch.device(device)``, checked to exist."""
    if device is None:
        if default is not None:
            return default
        device = "auto"
    if str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        cuda_usable()  # warns here, at the choice, when _C cannot run on the GPU
        return torch.device("cuda")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r}: not a device name ({exc})") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: torch sees no CUDA device on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def compiled_for(t: torch.Tensor) -> bool:
    """Whether ``_C`` can run on the device holding ``t``."""
    if t.device.type == "cpu":
        return True
    return t.device.type == "cuda" and cuda_usable(t.device)
