"""Composites: an open registry of which rule each operation gets (Zennit's layer-map and
name-map composites).

A :class:`Composite` maps module types (``layer_map``, checked in order, the user's
entries before the defaults), qualified module names (``name_map``, checked first) and
functions / tensor-method names (``function_map``) to rule objects, and lists the
canonizers that rewrite the captured graph first. A new layer kind is one entry:

    >>> import torch
    >>> from hudd_core.lrp.oprules import Pass
    >>> class Scale(torch.nn.Module):  # a user's own element-wise layer
    ...     def forward(self, x):
    ...         return 2 * x
    >>> comp = get_composite("hudd").register_module(Scale, Pass())
    >>> comp.module_rule("head.scale", Scale())
    Pass(record=True, gate=False)

The four built-in composites differ in the rules of convolutions and linear layers:

=====================  ==================  ==============  ==================
composite              convolution         linear          avg-pool / add
=====================  ==================  ==============  ==================
``hudd`` (default)     Epsilon(1e-9)       z+ (w+ only,    Norm(1e-9)
                       (LRP-0, with bias)  no bias, 1e-9)
                                           on rectified
                                           inputs; else
                                           ZPlus(1e-9)
``epsilon-plus``       ZPlus(1e-6)         Epsilon(1e-6)   Norm(1e-6)
``epsilon-alpha2-      AlphaBeta(2, 1)     Epsilon(1e-6)   Norm(1e-6)
beta1``
``epsilon-gamma-box``  Gamma(0.25); the    Epsilon(1e-6)   Norm(1e-6)
                       first: ZBox(0, 1)
=====================  ==================  ==============  ==================

Everywhere (:func:`default_layer_map`, :func:`default_function_map`): element-wise
activations, dropout and identities pass relevance through; views, permutations, indexing,
splits and concatenation move it with the values; max pooling is winner-take-all; sums,
means, average pooling, interpolation and additions use Norm (``hudd``: additions get
:class:`~hudd_core.lrp.oprules.BoundedSum` in a graph with AttnLRP's softmax rule,
:class:`~hudd_core.lrp.canonizers.BoundAdditions`); products use AttnLRP's uniform
rule with sigmoid gates held constant; BatchNorm is folded into the layer before it
(:class:`~hudd_core.lrp.canonizers.MergeBatchNorm`), else the epsilon rule on its affine
map; LayerNorm, GroupNorm, softmax and attention use the AttnLRP rules (Achtibat et al.,
ICML 2024); ``nn.LSTM`` the rule of Arras et al. (2017) (:mod:`hudd_core.lrp.recurrent`).
``hudd``'s z+ needs non-negative inputs: a linear layer whose input is not the image
or rectified values (the output of ReLU, LeakyReLU, ELU, SiLU, GELU, sigmoid, softmax,
..., or pooling, views, products of them) gets Zennit's ZPlus (x+ w+ and x- w-
over their sum) instead, e.g. behind LayerNorm, attention or a residual stream
(docs/lrp-rules.md). ``hudd`` is the reference
(docs/design.md#composite-hudd); the others are as Zennit 0.5 defines them
(``EpsilonPlus``, ``EpsilonAlpha2Beta1``, ``EpsilonGammaBox``). "First" is the first
convolution in execution order (Zennit: in module registration order; the same for
ordinary models).

Example:
    >>> get_composite("epsilon-plus").rule_for("conv", first=False)
    ZPlus(stabilizer=1e-06)
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hudd_core.lrp.attention import Attention, Traced
from hudd_core.lrp.canonizers import BoundAdditions, Canonizer, MergeBatchNorm
from hudd_core.lrp.oprules import (
    AddProduct,
    BatchNormFunction,
    ChannelAffine,
    Copy,
    Normalization,
    OpRule,
    Product,
    Softmax,
    elementwise_pass_functions,
)
from hudd_core.lrp.record import setitem
from hudd_core.lrp.recurrent import LSTM
from hudd_core.lrp.rules import (
    AffineRule,
    AlphaBeta,
    Epsilon,
    FunctionalAffine,
    Gamma,
    Norm,
    Pass,
    PositiveWeights,
    WinnerTakeAll,
    ZBox,
    ZPlus,
)

Types = type | tuple[type, ...]
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
FUNCTIONAL_CONVOLUTIONS = (F.conv1d, F.conv2d, F.conv3d)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.ELU,
               nn.SELU, nn.CELU, nn.Mish, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.PReLU)  # fmt: skip
IDENTITIES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
LINEAR_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Upsample)  # fmt: skip


@functools.cache
def _torchvision_types() -> tuple[tuple, tuple]:
    """torchvision's StochasticDepth (identity in evaluation) and Permute (empty when
    torchvision is not installed)."""
    try:
        from torchvision.ops import StochasticDepth
        from torchvision.ops.misc import Permute
    except ImportError:  # pragma: no cover - torchvision is a test dependency
        return (), ()
    return (StochasticDepth,), (Permute,)


def _torchvision_functions() -> tuple[tuple, tuple]:
    """torchvision's fx-wrapped functions: Swin's shifted-window attention (traced with the
    AttnLRP rules) and its patch-merging padding and position-bias gathers (copies). Read
    when needed: fx patches these names while it traces."""
    try:
        from torchvision.models import swin_transformer as st
    except ImportError:  # pragma: no cover - torchvision is a test dependency
        return (), ()
    names = ("_patch_merging_pad", "_get_relative_position_bias")
    moves = tuple(getattr(st, n) for n in names if hasattr(st, n))
    return (st.shifted_window_attention,), moves


def default_layer_map(comp: Composite) -> list[tuple[Types, OpRule]]:
    """Module types and their rules in ``comp`` (after the user's ``layer_map``)."""
    eps = comp.norm.stabilizer
    identities, moves = _torchvision_types()
    return [
        (CONVOLUTIONS, comp.conv),
        (nn.Linear, comp.linear),
        (ACTIVATIONS, Pass()),
        ((nn.Sigmoid, nn.Hardsigmoid), Pass(gate=True)),
        ((*IDENTITIES, *identities), Pass(record=False)),
        ((nn.Flatten, nn.Unflatten, nn.ChannelShuffle, nn.ZeroPad2d, nn.Unfold, *moves), Copy()),
        (MAX_POOLS, WinnerTakeAll()),
        ((*LINEAR_POOLS, nn.Fold), comp.norm),
        # LRP-epsilon on a transposed convolution (the Norm rule of any linear map, bias
        # keeping its share)
        ((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), Norm(eps)),
        (nn.modules.batchnorm._BatchNorm, ChannelAffine(eps)),
        ((nn.LayerNorm, nn.GroupNorm), Normalization(eps)),
        (nn.Softmax, Softmax()),
        (nn.MultiheadAttention, Attention(eps)),
        (nn.LSTM, LSTM(eps)),
    ]


def default_function_map(comp: Composite) -> list[tuple[Sequence, OpRule]]:
    """Functions (``call_function`` targets) and tensor-method names (``call_method``) and
    their rules in ``comp``. In-place spellings (``add_``, ``operator.iadd``,
    ``inplace=True``) are run out of place and looked up under the plain name."""
    eps = comp.norm.stabilizer
    windows, window_moves = _torchvision_functions()
    copies = [operator.getitem, torch.cat, torch.concat, torch.concatenate, torch.stack,
              torch.split, torch.chunk, torch.unbind, torch.flatten, torch.reshape,
              torch.permute, torch.transpose, torch.unsqueeze, torch.squeeze, torch.roll,
              torch.narrow, torch.movedim, torch.flip, torch.clone, F.pad, F.max_pool1d,
              F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
              torch.swapaxes, torch.transpose,
              "view", "reshape", "flatten", "contiguous", "permute", "transpose", "unsqueeze",
              "squeeze", "unflatten", "expand", "expand_as", "repeat", "split", "chunk",
              "unbind", "roll", "narrow", "select", "clone", "flip", "movedim", "swapaxes",
              "t", "view_as", "reshape_as", "repeat_interleave", torch.repeat_interleave,
              "tile", torch.tile, F.unfold, "unfold", F.pixel_shuffle, F.pixel_unshuffle,
              setitem,
              *window_moves]  # fmt: skip
    linear = [operator.add, torch.add, operator.sub, torch.sub, operator.truediv, torch.div,
              operator.neg, torch.neg, torch.mean, torch.sum, F.avg_pool1d, F.avg_pool2d,
              F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
              F.interpolate, F.fold, "add", "sub", "div", "neg", "mean", "sum",
              # a norm ||x|| = sum_k x_k (x_k / ||x||): Norm gives R_k = r x_k^2 / ||x||^2
              torch.norm, torch.linalg.vector_norm, "norm"]  # fmt: skip
    products = [operator.mul, torch.mul, operator.matmul, torch.matmul, torch.bmm, torch.einsum,
                F.linear, "mul", "matmul", "bmm"]  # fmt: skip
    return [
        *elementwise_pass_functions(),
        (copies, Copy()),
        ([torch.amax, torch.max, "amax", "max"], WinnerTakeAll()),
        (linear, Norm(eps)),
        (products, Product(eps)),
        ([torch.addcmul, "addcmul"], AddProduct(eps)),
        ([F.layer_norm, F.group_norm], Normalization(eps)),
        ([F.batch_norm], BatchNormFunction(eps)),
        (list(FUNCTIONAL_CONVOLUTIONS), FunctionalAffine(comp.conv)),
        ([F.scaled_dot_product_attention], Traced(eps)),
        ([F.softmax, torch.softmax, "softmax"], Softmax()),
        (windows, Traced(eps)),
    ]


def _same_forward(module: nn.Module, types: Types) -> bool:
    """``module`` is one of ``types`` and keeps its forward (a subclass with a forward of
    its own, e.g. torchvision's channels-first ``LayerNorm2d``, is traced through)."""
    for t in types if isinstance(types, tuple) else (types,):
        if isinstance(module, t) and type(module).forward is t.forward:
            return True
    return False


@dataclass
class Composite:
    """An open rule registry (see the module docstring).

    Args:
        name: shown in errors and run records.
        conv, linear: the rules of convolutions and linear layers; ``first_conv``
            (optional) overrides ``conv`` for the first convolution in execution order;
            ``signed_linear`` (optional) overrides ``linear`` for linear layers whose
            input is not known to be non-negative (not behind a rectifier or pooling of
            rectified values: behind LayerNorm, attention, a residual stream).
        norm: the Norm rule (its stabiliser is also the other rules' stabiliser).
        layer_map: ``[(module types, rule), ...]`` checked before the defaults.
        name_map: ``{qualified module name: rule}``, checked first (a module named here is
            not traced into, so a custom module can get a rule of its own).
        function_map: ``[(functions or method names, rule), ...]`` overriding the defaults.
        canonizers: rewrite the captured graph before LRP (default: fold BatchNorm).
    """

    name: str
    conv: AffineRule
    linear: AffineRule
    norm: Norm
    first_conv: AffineRule | None = None
    signed_linear: AffineRule | None = None
    layer_map: list[tuple[Types, OpRule]] = field(default_factory=list)
    name_map: dict[str, OpRule] = field(default_factory=dict)
    function_map: list[tuple[Sequence, OpRule]] = field(default_factory=list)
    canonizers: list[Canonizer] = field(default_factory=lambda: [MergeBatchNorm()])

    def rule_for(self, kind: str, first: bool = False) -> AffineRule:
        """The rule of a ``"conv"`` or ``"linear"`` layer."""
        if kind == "conv":
            return self.first_conv if (first and self.first_conv is not None) else self.conv
        return self.linear

    def register_module(self, types: Types, rule: OpRule) -> Composite:
        """Gives modules of ``types`` the rule ``rule`` (before every other entry)."""
        self.layer_map.insert(0, (types, rule))
        return self

    def register_name(self, qualname: str, rule: OpRule) -> Composite:
        """Gives the module named ``qualname`` the rule ``rule``."""
        self.name_map[qualname] = rule
        return self

    def register_function(self, targets: Callable | str | Sequence, rule: OpRule) -> Composite:
        """Gives functions / tensor-method names ``targets`` the rule ``rule``."""
        if callable(targets) or isinstance(targets, str):
            targets = [targets]
        self.function_map.insert(0, (list(targets), rule))
        return self

    def module_rule(self, qualname: str, module: nn.Module, first: bool = False) -> OpRule | None:
        """The rule of ``module`` (named ``qualname``); ``first``: it is the first
        convolution. ``None`` when no entry matches."""
        if qualname in self.name_map:
            return self.name_map[qualname]
        if first and self.first_conv is not None and isinstance(module, CONVOLUTIONS):
            return self.first_conv
        for types, rule in self.layer_map:
            if isinstance(module, types):
                return rule
        for types, rule in default_layer_map(self):
            if _same_forward(module, types):
                return rule
        return None

    def function_table(self) -> dict:
        """``{function or method name: rule}``, the user's entries winning."""
        table: dict = {}
        for targets, rule in [*self.function_map, *default_function_map(self)]:
            for t in targets:
                table.setdefault(t, rule)
        return table


def constant_attention(comp: Composite) -> Composite:
    """``comp`` with attention weights held constant everywhere (CP-LRP, Ali et al., ICML
    2022; softmax modules, functions and the traced attention blocks) instead of AttnLRP's
    softmax rule: conservative, relevance reaches the tokens through the values only."""
    eps = comp.norm.stabilizer
    softmax = Softmax(constant=True)
    windows, _ = _torchvision_functions()
    comp.register_module(nn.Softmax, softmax)
    comp.register_function([F.softmax, torch.softmax, "softmax"], softmax)
    comp.register_module(nn.MultiheadAttention, Attention(eps, constant_softmax=True))
    comp.register_function(
        [*windows, F.scaled_dot_product_attention], Traced(eps, constant_softmax=True)
    )
    return comp


def hudd(stabilizer: float = 1e-9, tau: float = 0.5) -> Composite:
    """``stabilizer``: of every rule; ``kernels.Relative(0.001)`` for one relative to each
    layer's output magnitude. ``tau``: of :class:`~hudd_core.lrp.oprules.BoundedSum`, the
    rule of additions in a graph with a lossy rule (AttnLRP's softmax rule; see
    :class:`~hudd_core.lrp.canonizers.BoundAdditions`)."""
    eps = stabilizer
    return Composite("hudd", Epsilon(eps), PositiveWeights(eps), Norm(eps),
                     signed_linear=ZPlus(eps),
                     canonizers=[MergeBatchNorm(), BoundAdditions(tau)])  # fmt: skip


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite("epsilon-plus", ZPlus(stabilizer), Epsilon(epsilon), Norm(stabilizer))


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(
        "epsilon-alpha2-beta1", AlphaBeta(2.0, 1.0, stabilizer), Epsilon(epsilon), Norm(stabilizer)
    )


def epsilon_gamma_box(
    low: float = 0.0,
    high: float = 1.0,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    stabilizer: float = 1e-6,
) -> Composite:
    """``low``/``high``: the input range (pixels / 255 by default: 0 and 1)."""
    return Composite(
        "epsilon-gamma-box",
        Gamma(gamma, stabilizer),
        Epsilon(epsilon),
        Norm(stabilizer),
        first_conv=ZBox(low, high, stabilizer),
    )


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "hudd": hudd,
    "epsilon-plus": epsilon_plus,
    "epsilon-alpha2-beta1": epsilon_alpha2_beta1,
    "epsilon-gamma-box": epsilon_gamma_box,
}


def get_composite(composite: str | Composite = "hudd", **kwargs) -> Composite:
    """A :class:`Composite` by name (``_`` and ``-`` alike), or the one given."""
    if isinstance(composite, Composite):
        return composite
    key = composite.replace("_", "-")
    if key not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; choose from {sorted(COMPOSITES)}")
    return COMPOSITES[key](**kwargs)
