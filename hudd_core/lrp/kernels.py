"""The rule-specific elementwise work of LRP: compiled kernels with plain-torch twins.

Every function here dispatches to ``hudd_core._C`` (``csrc/cpu/lrp_*.cpp``,
``csrc/cuda/lrp_*.cu``) when it can run on the tensor's device, else to its ``*_reference``
twin, which is also the test oracle. Convolutions and matrix products stay on torch.

Layouts are flat: ``(B, N)`` for one tensor per image, ``(B, K, N)`` for K stacked parts
(K = 2: positive/negative, K = 3: input/low/high of the box rule). A tensor with channels
first, ``(B, K*C, H, W)``, is exactly ``(B, K, C*H*W)`` in memory, so the parts of a
block convolution need no copies.

Stabiliser (as Zennit's): ``stab(z) = z + eps * sign(z)`` with ``sign(0) = +1``. A
:class:`Relative` ``eps`` is scale-aware: ``eps * mean|z|`` of the tensor at hand (each
layer's output, each batch), so a network whose activations are small in magnitude keeps
its relevance.

Example:
    >>> import torch
    >>> stabilized_divide(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]]), 1e-9)
    tensor([[5.0000e-01, 1.0000e+09]])
"""

from __future__ import annotations

import torch

from hudd_core._ext import _C, compiled_for

# Modes of split_input / contribution_product (values match csrc/include/hudd/lrp.h).
PLAIN, POSNEG, BOX = 0, 1, 2
PARTS = {PLAIN: 1, POSNEG: 2, BOX: 3}


def _use_compiled(*ts: torch.Tensor) -> bool:
    """Compiled kernels take contiguous float32/float64 tensors; anything else (e.g. half
    precision) takes the reference path."""
    return (
        _C_HAS_LRP
        and ts[0].dtype in (torch.float32, torch.float64)
        and all(t.is_contiguous() for t in ts)
        and compiled_for(ts[0])
    )


_C_HAS_LRP = hasattr(_C, "lrp_divide")


class Relative(float):
    """A stabiliser relative to the magnitude of the values it stabilises: ``eps`` stands
    for ``eps * mean|z|`` (see :func:`absolute`). Arithmetic on it gives a plain float.

    >>> absolute(Relative(0.5), torch.tensor([1.0, -3.0]))
    1.0
    """

    def __repr__(self) -> str:
        return f"Relative({float(self)!r})"


def absolute(eps: float, z: torch.Tensor) -> float:
    """The stabiliser for the values ``z``: ``eps`` itself, or for a :class:`Relative` one
    ``eps * mean|z|`` (at least the dtype's smallest normal number)."""
    if not isinstance(eps, Relative):
        return eps
    mag = float(z.abs().mean()) if z.numel() else 0.0
    return max(float(eps) * mag, torch.finfo(z.dtype).tiny)


def stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)``, ``sign(0) = +1`` (Zennit's stabiliser)."""
    eps = absolute(eps, z)
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


# -- stabilised division -------------------------------------------------------------------


def stabilized_divide_reference(
    r: torch.Tensor, z: torch.Tensor, eps: float, scale: float = 1.0
) -> torch.Tensor:
    """``scale * r / stab(z)``."""
    return scale * r / stab(z, eps)


def stabilized_divide(
    r: torch.Tensor,
    z: torch.Tensor,
    eps: float,
    scale: float = 1.0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``scale * r / stab(z)`` in one pass (``r`` and ``z`` of the same shape), written
    into ``out`` when given (``out`` may be ``z`` itself: each entry is read first)."""
    eps = absolute(eps, z)
    ts = (r, z) if out is None else (r, z, out)
    if not _use_compiled(*ts) or r.shape != z.shape:
        res = stabilized_divide_reference(r, z, eps, scale)
        return res if out is None else out.copy_(res)
    if out is None:
        out = torch.empty_like(r)
    _C.lrp_divide(r, z, None, 1, r.numel(), eps, scale, 0.0, 1, out)
    return out


def divide_pair_reference(
    r: torch.Tensor,
    z2: torch.Tensor,
    eps: float,
    coef_p: float,
    coef_n: float,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, 2, N)``: ``[coef_p * r / stab(zp), coef_n * r / stab(zn)]`` where ``z2 = [zp, zn]``;
    with ``gate``, the first part only where ``gate > 0`` and the second where ``gate < 0``
    (the generalised gamma rule)."""
    b = r.shape[0]
    r = r.reshape(b, 1, -1)
    z2 = z2.reshape(b, 2, -1)
    s = r / stab(z2, eps) * torch.tensor([coef_p, coef_n], dtype=r.dtype, device=r.device)[:, None]
    if gate is not None:
        g = gate.reshape(b, -1)
        s = s * torch.stack([g > 0, g < 0], dim=1).to(s.dtype)
    return s


def divide_pair(
    r: torch.Tensor,
    z2: torch.Tensor,
    eps: float,
    coef_p: float,
    coef_n: float,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fused two-denominator division of the alpha-beta and gamma rules (see the twin)."""
    eps = absolute(eps, z2)
    ts = (r, z2) if gate is None else (r, z2, gate)
    if not _use_compiled(*ts):
        return divide_pair_reference(r, z2, eps, coef_p, coef_n, gate)
    b, n = r.shape[0], r[0].numel()
    out = torch.empty((b, 2, n), dtype=r.dtype, device=r.device)
    _C.lrp_divide(r, z2, gate, b, n, eps, coef_p, coef_n, 2, out)
    return out


# -- input splits and the input x contribution product --------------------------------------


def split_input_reference(
    x: torch.Tensor, mode: int, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """``(B, K, N)``: ``[x+, x-]`` (POSNEG) or ``[x, low, high]`` (BOX)."""
    b = x.shape[0]
    x = x.reshape(b, -1)
    if mode == POSNEG:
        return torch.stack([x.clamp(min=0), x.clamp(max=0)], dim=1)
    if mode == BOX:
        return torch.stack([x, torch.full_like(x, low), torch.full_like(x, high)], dim=1)
    raise ValueError(f"split_input: unknown mode {mode}")


def split_input(x: torch.Tensor, mode: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """The stacked input parts of a block convolution, written in one pass."""
    if not _use_compiled(x):
        return split_input_reference(x, mode, low, high)
    b, n = x.shape[0], x[0].numel()
    out = torch.empty((b, PARTS[mode], n), dtype=x.dtype, device=x.device)
    _C.lrp_split(x, b, n, mode, low, high, out)
    return out


def contribution_product_reference(
    x: torch.Tensor,
    c: torch.Tensor,
    mode: int,
    low: float = 0.0,
    high: float = 1.0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relevance at a layer's input from the back-projected contributions ``c`` (B, K, N):
    ``x * c0`` (PLAIN), ``x+ * c0 + x- * c1`` (POSNEG), ``x * c0 + low * c1 + high * c2``
    (BOX). With ``out``, the result is added to it (fan-out accumulation)."""
    b = x.shape[0]
    xf = x.reshape(b, -1)
    c = c.reshape(b, PARTS[mode], -1)
    if mode == PLAIN:
        r = xf * c[:, 0]
    elif mode == POSNEG:
        r = xf.clamp(min=0) * c[:, 0] + xf.clamp(max=0) * c[:, 1]
    else:
        r = xf * c[:, 0] + low * c[:, 1] + high * c[:, 2]
    r = r.reshape(x.shape)
    return r if out is None else out.add_(r)


def contribution_product(
    x: torch.Tensor,
    c: torch.Tensor,
    mode: int,
    low: float = 0.0,
    high: float = 1.0,
    out: torch.Tensor | None = None,
    reuse_c: bool = False,
) -> torch.Tensor:
    """Fused input x contribution product (see the twin); reads ``x`` once for all parts.
    ``reuse_c``: the PLAIN result may overwrite ``c`` (saves an allocation)."""
    ts = (x, c) if out is None else (x, c, out)
    if not _use_compiled(*ts):
        return contribution_product_reference(x, c, mode, low, high, out)
    b, n = x.shape[0], x[0].numel()
    acc = out is not None
    if out is None:
        out = c.view(x.shape) if (reuse_c and mode == PLAIN) else torch.empty_like(x)
    _C.lrp_product(x, c, b, n, mode, low, high, acc, out)
    return out


# -- pooling ---------------------------------------------------------------------------------


def maxpool_route_reference(
    r: torch.Tensor, indices: torch.Tensor, in_shape: torch.Size, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Winner-take-all: each output's relevance goes to its argmax input (``indices`` as
    ``max_poolNd(return_indices=True)`` gives them, flat within each plane)."""
    b, c = r.shape[:2]
    planes = r.reshape(b * c, -1)
    res = torch.zeros((b * c, int(torch.Size(in_shape[2:]).numel())), dtype=r.dtype,
                      device=r.device)  # fmt: skip
    res.scatter_add_(1, indices.reshape(b * c, -1), planes)
    res = res.reshape(in_shape)
    return res if out is None else out.add_(res)


def maxpool_route(
    r: torch.Tensor,
    indices: torch.Tensor,
    in_shape: torch.Size,
    out: torch.Tensor | None = None,
    deterministic: bool = True,
) -> torch.Tensor:
    """Winner-take-all max-pool routing (compiled scatter, no atomics on the CPU; on a
    GPU summed in a fixed order unless ``deterministic=False``, which uses atomics)."""
    ts = (r, indices) if out is None else (r, indices, out)
    if not _use_compiled(*ts):
        return maxpool_route_reference(r, indices, in_shape, out)
    planes = r.shape[0] * r.shape[1]
    n_in = int(torch.Size(in_shape[2:]).numel())
    acc = out is not None
    if out is None:
        out = torch.empty(in_shape, dtype=r.dtype, device=r.device)
    _C.lrp_maxpool_route(r, indices, planes, r[0, 0].numel(), n_in, acc, deterministic, out)
    return out


def _windows(n_in: int, n_out: int, k: int, s: int, p: int, adaptive: bool):
    """(start, end, divisor-extent) of every output window along one dimension."""
    res = []
    for o in range(n_out):
        if adaptive:
            a, e = (o * n_in) // n_out, -((-(o + 1) * n_in) // n_out)
            res.append((a, e, e - a))
        else:
            a = o * s - p
            e = min(a + k, n_in + p)
            res.append((max(a, 0), min(e, n_in), e - a))
    return res


def avgpool_redistribute_reference(
    x: torch.Tensor,
    z: torch.Tensor,
    r: torch.Tensor,
    eps: float,
    geometry: tuple,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Norm rule of average pooling: ``x * A^T (r / stab(z))`` where A is the pooling
    (window mean). ``geometry = (kh, kw, sh, sw, ph, pw, adaptive, count_include_pad)``
    over ``(B, C, H, W)`` tensors (1-D pools use H = 1)."""
    kh, kw, sh, sw, ph, pw, adaptive, include_pad = geometry
    hi, wi = x.shape[-2:]
    ho, wo = z.shape[-2:]
    s = r / stab(z, eps)
    acc = torch.zeros_like(x)
    for oh, (h0, h1, hd) in enumerate(_windows(hi, ho, kh, sh, ph, bool(adaptive))):
        for ow, (w0, w1, wd) in enumerate(_windows(wi, wo, kw, sw, pw, bool(adaptive))):
            div = hd * wd if (adaptive or include_pad) else (h1 - h0) * (w1 - w0)
            acc[..., h0:h1, w0:w1] += (s[..., oh, ow] / div)[..., None, None]
    res = x * acc
    return res if out is None else out.add_(res)


def avgpool_redistribute(
    x: torch.Tensor,
    z: torch.Tensor,
    r: torch.Tensor,
    eps: float,
    geometry: tuple,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Average-pool redistribution (Norm rule), fused: one gather per input element."""
    eps = absolute(eps, z)
    ts = (x, z, r) if out is None else (x, z, r, out)
    if not _use_compiled(*ts):
        return avgpool_redistribute_reference(x, z, r, eps, geometry, out)
    kh, kw, sh, sw, ph, pw, adaptive, include_pad = geometry
    planes = x.shape[0] * x.shape[1]
    hi, wi = x.shape[-2:]
    ho, wo = z.shape[-2:]
    acc = out is not None
    if out is None:
        out = torch.empty_like(x)
    geo = [kh, kw, sh, sw, ph, pw, int(adaptive), int(include_pad)]
    _C.lrp_avgpool(x, z, r, planes, hi, wi, ho, wo, geo, eps, acc, out)
    return out


# -- residual addition -----------------------------------------------------------------------


def sum_split_reference(
    a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Norm rule of ``z = a + b``: ``(a * r / stab(z), b * r / stab(z))``."""
    s = r / stab(a + b, eps)
    return a * s, b * s


def sum_split(
    a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual-addition split in one pass over ``a``, ``b`` and ``r``."""
    if isinstance(eps, Relative):
        eps = absolute(eps, a + b)
    if not _use_compiled(a, b, r) or not (a.shape == b.shape == r.shape):
        return sum_split_reference(a, b, r, eps)
    ra, rb = torch.empty_like(a), torch.empty_like(b)
    _C.lrp_sum_split(a, b, r, a.numel(), eps, ra, rb)
    return ra, rb
