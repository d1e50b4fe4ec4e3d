"""LRP rules as small objects, one per propagation rule, as in Zennit.

A rule maps the relevance ``r`` at a layer's output to the relevance at its input. The
affine rules work on an :class:`Affine` layer (a convolution or linear map, BatchNorm
already folded in); they derive their modified weights once (:meth:`AffineRule.prepare`,
cached by the engine), so a batch costs one block convolution forward, the fused
elementwise kernels of :mod:`hudd_core.lrp.kernels` and one transposed convolution.

Block trick: rules that split inputs or weights by sign stack the parts along the channel
dimension, ``[x+, x-]``, and the weights as a block matrix, e.g. alpha-beta's
``[[W+, W-], [W-, W+]]``, so one convolution gives both denominators and one transposed
convolution both back-projections.

The definitions follow Zennit 0.5 (``zennit.rules``); :class:`PositiveWeights` is the z+
rule of HUDD's reference implementation.

Example:
    >>> import torch
    >>> layer = Affine(weight=torch.tensor([[1.0, -1.0]]), bias=None)
    >>> Epsilon(0.0).relevance(layer, {}, torch.tensor([[3.0, 1.0]]),
    ...                        torch.tensor([[2.0]]), torch.tensor([[1.0]]))
    tensor([[ 1.5000, -0.5000]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hudd_core.lrp import kernels as K
from hudd_core.lrp.canonizers import fold_batchnorm
from hudd_core.lrp.oprules import Norm, OpRule, Pass, Product, WinnerTakeAll

__all__ = [
    "Affine",
    "AffineRule",
    "AlphaBeta",
    "Epsilon",
    "FunctionalAffine",
    "Gamma",
    "Norm",
    "Pass",
    "PositiveWeights",
    "WinnerTakeAll",
    "ZBox",
    "ZPlus",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_INPUT = {
    1: torch.nn.grad.conv1d_input,
    2: torch.nn.grad.conv2d_input,
    3: torch.nn.grad.conv3d_input,
}


@dataclass
class Affine:
    """A convolution (``dims`` = 1, 2 or 3) or a linear map (``dims`` = 0)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    dims: int = 0
    stride: tuple = (1,)
    padding: tuple = (0,)
    dilation: tuple = (1,)
    groups: int = 1

    def forward(self, x: torch.Tensor, w, b: torch.Tensor | None) -> torch.Tensor:
        """The layer's map with weights ``w`` (a tensor or a :class:`Grid`) and bias ``b``."""
        if isinstance(w, Grid):
            parts, biases = x.chunk(len(w[0]), dim=1), _chunks(b, len(w))
            return torch.cat([sum(self.forward(p, wij, None) for p, wij in zip(parts, row,
                                                                               strict=True))
                              + (0 if bi is None else bi.reshape(1, -1, *[1] * self.dims))
                              for row, bi in zip(w, biases, strict=True)], dim=1)  # fmt: skip
        if self.dims == 0:
            return F.linear(x, w, b)
        return _CONV[self.dims](x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def back(self, s: torch.Tensor, w, in_shape: torch.Size) -> torch.Tensor:
        """The transposed map (the gradient w.r.t. the input): ``w^T s``."""
        if isinstance(w, Grid):
            k = len(w[0])
            part = torch.Size((in_shape[0], in_shape[1] // k, *in_shape[2:]))
            sp = s.chunk(len(w), dim=1)
            return torch.cat([sum(self.back(si, w[i][j], part) for i, si in enumerate(sp))
                              for j in range(k)], dim=1)  # fmt: skip
        if self.dims == 0:
            return s @ w
        return _CONV_INPUT[self.dims](in_shape, w, s, self.stride, self.padding, self.dilation,
                                      self.groups)  # fmt: skip

    def blocks(self, grid: list[list[torch.Tensor]]):
        """Block weight matrix: ``grid[i][j]`` maps input part j to output part i. Grouped
        convolutions (depthwise ones in mobile nets) keep the parts apart (:class:`Grid`):
        one convolution per block instead of one for all."""
        if self.groups != 1 and (len(grid) > 1 or len(grid[0]) > 1):
            return Grid([[t.contiguous() for t in row] for row in grid])
        return torch.cat([torch.cat(row, dim=1) for row in grid], dim=0).contiguous()


class Grid(list):
    """The blocks of a block weight matrix kept apart (grouped convolutions)."""


def _chunks(b: torch.Tensor | None, k: int) -> list:
    return [None] * k if b is None else list(b.chunk(k))


def affine_layer(
    m: nn.Module, bn: nn.Module | None, dtype: torch.dtype, device: torch.device, name: str
) -> Affine:
    """The :class:`Affine` of a convolution or linear module, ``bn`` folded into it."""
    if not isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
        raise ValueError(f"affine LRP rules apply to convolutions and linear layers, not "
                         f"{type(m).__name__} (layer {name!r})")  # fmt: skip
    w = m.weight.detach()
    b = None if m.bias is None else m.bias.detach()
    if bn is not None:
        w, b = fold_batchnorm(w, b, bn)
    w = w.to(device=device, dtype=dtype)
    b = None if b is None else b.to(device=device, dtype=dtype)
    if isinstance(m, nn.Linear):
        return Affine(w, b)
    if m.padding_mode != "zeros":
        raise ValueError(f"LRP supports zero padding (layer {name!r})")
    padding = _numeric_padding(m.padding, w.shape[2:], m.dilation, name)
    return Affine(w, b, w.dim() - 2, m.stride, padding, m.dilation, m.groups)


def _numeric_padding(padding, kernel, dilation, name: str) -> tuple:
    """A convolution's padding as numbers: ``"valid"`` is none, ``"same"`` (stride 1)
    half the dilated kernel on each side where that is symmetric."""
    if not isinstance(padding, str):
        return padding
    dilation = dilation if isinstance(dilation, tuple | list) else (dilation,) * len(kernel)
    if padding == "valid":
        return (0,) * len(kernel)
    total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    if padding != "same" or any(t % 2 for t in total):
        raise ValueError(f"LRP supports symmetric zero padding (layer {name!r}: {padding!r})")
    return tuple(t // 2 for t in total)


_CONV_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def functional_affine(op, args: tuple, kwargs: dict, dtype, device) -> Affine:
    """The :class:`Affine` of an ``F.conv1d/2d/3d`` or ``F.linear`` call whose weight is a
    constant computed in the forward (timm's weight-standardised convolutions), ``op.bn``
    folded into it."""
    dims = _CONV_FUNCTIONS.get(op.target, 0)
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    given = {**dict(zip(names, args, strict=False)), **kwargs}
    w = given["weight"].detach()
    b = given.get("bias")
    b = None if b is None else b.detach()
    if op.bn is not None:
        w, b = fold_batchnorm(w, b, op.bn)
    w = w.to(device=device, dtype=dtype)
    b = None if b is None else b.to(device=device, dtype=dtype)
    if dims == 0:
        return Affine(w.contiguous(), b)

    def spread(v, default):
        v = given.get(v, default)
        return tuple(v) if isinstance(v, tuple | list) else (v,) * dims

    dilation = spread("dilation", 1)
    padding = given.get("padding", 0)
    padding = _numeric_padding(padding, w.shape[2:], dilation, op.name)
    padding = tuple(padding) if isinstance(padding, tuple | list) else (padding,) * dims
    return Affine(w.contiguous(), b, dims, spread("stride", 1), padding, dilation,
                  int(given.get("groups", 1)))  # fmt: skip


@dataclass
class FunctionalAffine(OpRule):
    """A convolution or linear map called as a function with a constant weight (one that
    depends on parameters only, e.g. weight standardisation): ``rule`` (the composite's
    rule of such layers) on the layer the call's arguments define, derived per batch
    (the weight is an input of the call). A weight that carries relevance (a dynamic
    convolution) makes the call a product of two inputs: AttnLRP's uniform rule."""

    rule: AffineRule
    record: bool = True
    fresh = True
    folds_batchnorm = True

    def forward(self, call):
        if len(call.op.args) != 1:
            return super().forward(call)
        x = call.inputs[0]
        args, kwargs = call.op.evaluate_args(call.env), call.op.evaluate_kwargs(call.env)
        layer = functional_affine(call.op, args, kwargs, x.dtype, x.device)
        with torch.no_grad():
            call.saved[call.op.name] = (layer, self.rule.prepare(layer))
        return layer.forward(x, layer.weight, layer.bias)

    def propagate(self, call, r, out=None):
        if len(call.op.args) != 1:
            res = Product(self.rule.stabilizer).propagate(call, r)
            return res if out is None or res[0] is None else [out.add_(res[0]), *res[1:]]
        layer, prep = call.saved.pop(call.op.name)
        return [_affine_relevance(self.rule, layer, prep, call.inputs[0], call.output, r, out)]


def _parts_shape(x: torch.Tensor, k: int) -> tuple:
    return (x.shape[0], k * x.shape[1], *x.shape[2:])


class AffineRule(OpRule):
    """A rule of a convolution or linear layer. ``relevance`` may overwrite ``z`` (the
    engine calls it once every reader of the layer's output is done).

    In the engine's rule protocol (:mod:`hudd_core.lrp.oprules`) the layer's weights, any
    BatchNorm folded into it, and the rule's modified weights are derived once per
    dtype/device (:meth:`setup`)."""

    stabilizer: float
    fresh = True
    folds_batchnorm = True  # canonizers may fold a following BatchNorm into the layer

    def prepare(self, layer: Affine) -> dict:
        """Modified weights, derived once per layer, dtype and device."""
        return {}

    def setup(self, op, dtype: torch.dtype, device: torch.device) -> tuple:
        layer = affine_layer(op.module, op.bn, dtype, device, op.qualname)
        with torch.no_grad():
            return layer, self.prepare(layer)

    def forward(self, call):
        layer = call.state[0]
        return layer.forward(call.inputs[0], layer.weight, layer.bias)

    def propagate(self, call, r, out=None):
        layer, prep = call.state
        return [_affine_relevance(self, layer, prep, call.inputs[0], call.output, r, out)]

    def relevance(
        self,
        layer: Affine,
        prep: dict,
        x: torch.Tensor,
        z: torch.Tensor,
        r: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def _affine_relevance(rule: AffineRule, layer: Affine, prep, x, z, r, out):
    """``rule.relevance``; a linear layer on ``(B, tokens, features)`` works on
    ``(B * tokens, features)`` (the sign-splitting rules split along dim 1)."""
    if layer.dims == 0 and x.dim() > 2:

        def flat(t):
            return t.reshape(-1, t.shape[-1])

        res = rule.relevance(layer, prep, flat(x), flat(z), flat(r.contiguous()))
        return res.reshape(x.shape) if out is None else out.add_(res.reshape(x.shape))
    return rule.relevance(layer, prep, x, z, r.contiguous(), out)


@dataclass
class Epsilon(AffineRule):
    """LRP-epsilon (LRP-0 for a tiny epsilon): ``R_i = x_i sum_j w_ji R_j / stab(z_j)``,
    ``z`` the layer's output with bias."""

    stabilizer: float = 1e-6

    def relevance(self, layer, prep, x, z, r, out=None):
        s = K.stabilized_divide(r, z, self.stabilizer, out=z)  # z is not read again
        c = layer.back(s, layer.weight, x.shape)
        return K.contribution_product(x, c, K.PLAIN, out=out, reuse_c=True)


@dataclass
class PositiveWeights(AffineRule):
    """HUDD's z+ rule (the LRP tutorial's): only positive weights, bias ignored, inputs as
    they are: ``R_i = x_i sum_j w+_ji R_j / stab(sum_k x_k w+_jk)``."""

    stabilizer: float = 1e-9

    def prepare(self, layer):
        return {"w": layer.weight.clamp(min=0).contiguous()}

    def relevance(self, layer, prep, x, z, r, out=None):
        w = prep["w"]
        zw = layer.forward(x, w, None)
        s = K.stabilized_divide(r, zw, self.stabilizer, out=zw)
        return K.contribution_product(x, layer.back(s, w, x.shape), K.PLAIN, out=out,
                                      reuse_c=True)  # fmt: skip


def _pos(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(max=0)


def _cat_bias(*bs: torch.Tensor | None) -> torch.Tensor | None:
    if all(b is None for b in bs):
        return None
    ref = next(b for b in bs if b is not None)
    return torch.cat([torch.zeros_like(ref) if b is None else b for b in bs]).contiguous()


@dataclass
class ZPlus(AffineRule):
    """Zennit's ZPlus (alpha 1, beta 0 with negative inputs allowed): contributions
    ``x+ w+`` and ``x- w-`` (plus ``b+``) over their sum."""

    stabilizer: float = 1e-6

    def prepare(self, layer):
        w = layer.weight
        prep = {"w": layer.blocks([[w.clamp(min=0), w.clamp(max=0)]]), "b": _pos(layer.bias)}
        if layer.dims == 0:
            prep["abs"] = w.abs().contiguous()
            prep["abs_b"] = None if layer.bias is None else layer.bias.abs()
        return prep

    def relevance(self, layer, prep, x, z, r, out=None):
        if layer.dims == 0:  # a linear layer: one product instead of two for the denominator
            zs = _linear_zplus_denominator(layer, prep, x, z)
            eps = (
                self.stabilizer if isinstance(self.stabilizer, K.Relative) else 2 * self.stabilizer
            )
            s = K.stabilized_divide(r, zs, eps, scale=2.0, out=zs)  # zs is twice the sum
            return K.contribution_product(x, s @ prep["w"], K.POSNEG, out=out)
        xs = K.split_input(x, K.POSNEG).view(_parts_shape(x, 2))
        zs = layer.forward(xs, prep["w"], prep["b"])
        s = K.stabilized_divide(r, zs, self.stabilizer, out=zs)
        return K.contribution_product(x, layer.back(s, prep["w"], xs.shape), K.POSNEG, out=out)


def _linear_zplus_denominator(layer: Affine, prep: dict, x, z) -> torch.Tensor:
    """Twice ``x+ w+ + x- w- + b+`` of a linear layer from its output ``z = x w + b``:
    ``x w + |x| |w| = 2 (x+ w+ + x- w-)`` term by term and ``b + |b| = 2 b+``, so one
    product (``|x| |w|``) replaces the two of the stacked ``[x+, x-] [w+; w-]``."""
    return F.linear(x.abs(), prep["abs"], prep["abs_b"]).add_(z)


@dataclass
class AlphaBeta(AffineRule):
    """LRP alpha-beta: ``alpha`` x positive contributions minus ``beta`` x negative ones,
    each normalised by its own sum (Zennit's ``AlphaBeta``; alpha - beta must be 1)."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError("AlphaBeta needs alpha, beta >= 0 and alpha - beta == 1")

    def prepare(self, layer):
        wp, wn = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
        return {
            "w": layer.blocks([[wp, wn], [wn, wp]]),
            "b": _cat_bias(_pos(layer.bias), _neg(layer.bias)),
        }

    def relevance(self, layer, prep, x, z, r, out=None):
        xs = K.split_input(x, K.POSNEG).view(_parts_shape(x, 2))
        z2 = layer.forward(xs, prep["w"], prep["b"])
        s = K.divide_pair(r, z2, self.stabilizer, self.alpha, -self.beta).view(z2.shape)
        return K.contribution_product(x, layer.back(s, prep["w"], xs.shape), K.POSNEG, out=out)


@dataclass
class Gamma(AffineRule):
    """Generalised LRP-gamma (Zennit's ``Gamma``): positive outputs are explained by the
    weights ``w + gamma w+`` on ``x+`` and ``w + gamma w-`` on ``x-``, negative outputs
    the other way round."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def prepare(self, layer):
        w, b, g = layer.weight, layer.bias, self.gamma
        w0, w1 = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        bias = None if b is None else _cat_bias(b + g * b.clamp(min=0), b + g * b.clamp(max=0))
        return {"w": layer.blocks([[w0, w1], [w1, w0]]), "b": bias}

    def relevance(self, layer, prep, x, z, r, out=None):
        xs = K.split_input(x, K.POSNEG).view(_parts_shape(x, 2))
        z2 = layer.forward(xs, prep["w"], prep["b"])
        s = K.divide_pair(r, z2, self.stabilizer, 1.0, 1.0, gate=z).view(z2.shape)
        return K.contribution_product(x, layer.back(s, prep["w"], xs.shape), K.POSNEG, out=out)


@dataclass
class ZBox(AffineRule):
    """LRP z^B for inputs bounded by ``[low, high]`` (first layer):
    ``R = x (w^T s) - low (w+^T s) - high (w-^T s)``, ``s = r / stab(w x - w+ low - w- high)``."""

    low: float = 0.0
    high: float = 1.0
    stabilizer: float = 1e-6

    def prepare(self, layer):
        w = layer.weight
        return {"w": layer.blocks([[w, -w.clamp(min=0), -w.clamp(max=0)]])}

    def relevance(self, layer, prep, x, z, r, out=None):
        xs = K.split_input(x, K.BOX, self.low, self.high).view(_parts_shape(x, 3))
        zs = layer.forward(xs, prep["w"], None)
        s = K.stabilized_divide(r, zs, self.stabilizer, out=zs)
        c = layer.back(s, prep["w"], xs.shape)
        return K.contribution_product(x, c, K.BOX, self.low, self.high, out=out)
