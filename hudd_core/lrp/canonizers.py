"""Canonizers: rewrite a layer into an equivalent form LRP rules apply to.

BatchNorm (in evaluation mode: running statistics) after a convolution or linear layer is
an affine map per channel, so it folds into that layer's weights and bias; LRP then treats
the pair as one layer (Zennit's ``MergeBatchNorm`` does the same by editing the modules;
here the module is never touched, the folded tensors are new).

Example:
    >>> import torch
    >>> conv, bn = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2).eval()
    >>> w, b = fold_batchnorm(conv.weight, conv.bias, bn)
    >>> x = torch.randn(1, 1, 5, 5)
    >>> torch.allclose(bn(conv(x)), torch.nn.functional.conv2d(x, w, b), atol=1e-6)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from hudd_core.lrp.oprules import BatchNormArgs, BoundedSum, Folded, Norm


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', b')`` with ``W' x + b' = BN(W x + b)`` (output channels on dim 0)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b = shift if bias is None else bias * scale + shift
    return w.detach().contiguous(), b.detach().contiguous()


class Canonizer:
    """Rewrites a captured graph (:class:`hudd_core.lrp.graph.Graph`) before LRP runs; the
    model itself is never touched. Subclasses implement :meth:`apply`; a composite runs its
    ``canonizers`` in order."""

    def apply(self, graph) -> None:
        raise NotImplementedError


class MergeBatchNorm(Canonizer):
    """Folds every BatchNorm (a module, or an ``F.batch_norm`` call on running statistics
    held in parameters and buffers, as in timm's ``BatchNormAct2d``) whose only input is a
    convolution/linear layer read by nothing else into that layer (the layer's rule must
    allow it: ``folds_batchnorm``); the BatchNorm's op then passes relevance through.
    Other BatchNorms keep their own rule."""

    def apply(self, graph) -> None:
        by_name = {op.name: op for op in graph.ops}
        for op in graph.ops:
            bn = _batchnorm(op, graph.module)
            if bn is None or len(op.args) != 1:
                continue
            src = by_name[op.args[0]]
            if (
                src.node.op not in ("call_module", "call_function")
                or not getattr(src.rule, "folds_batchnorm", False)
                or len(src.args) != 1
                or src.bn is not None
                or sum(not _reads_metadata(u) for u in src.node.users) != 1
            ):
                continue
            src.bn, op.rule = bn, Folded()


_METADATA = {"shape", "dtype", "device", "ndim", "layout", "is_cuda"}


def _reads_metadata(node: fx.Node) -> bool:
    """``node`` reads only its input's shape, dtype or device (timm's ``BatchNormAct2d``
    asserts on ``x.shape`` and casts to ``x.dtype``), which folding leaves alone."""
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _METADATA
    return node.op == "call_method" and node.target in ("size", "dim", "numel")


def _batchnorm(op, root: nn.Module):
    """What ``op`` normalises with, if it is an evaluation-mode BatchNorm on constant
    statistics: the module, or the :class:`BatchNormArgs` of an ``F.batch_norm`` call."""
    if isinstance(op.module, nn.modules.batchnorm._BatchNorm):
        return op.module if op.module.running_mean is not None else None
    if op.node.op != "call_function" or op.node.target is not F.batch_norm:
        return None
    consts = [n for n in op.node.all_input_nodes if n.name not in op.args]
    if any(n.op != "get_attr" for n in consts):
        return None  # statistics computed in the forward

    def value(n):
        if n.name in op.args:
            return None  # the input, not a parameter
        obj = root
        for part in n.target.split("."):
            obj = getattr(obj, part)
        return obj

    args = fx.node.map_arg(op.node.args, value)
    kwargs = fx.node.map_arg(op.node.kwargs, value)
    bn = BatchNormArgs.of(args, kwargs)
    return None if bn.training or bn.running_var is None or bn.running_mean is None else bn


class BoundAdditions(Canonizer):
    """Where some rule of the graph loses relevance by design (``lossy``: AttnLRP's
    softmax rule), every addition's Norm becomes :class:`BoundedSum` (``tau``). Norm's
    signed split can put relevance of opposite signs, far larger than the addition's own,
    on its operands; where every rule conserves, the two parts cancel again wherever they
    meet, but a lossy rule on one branch takes a share of one part only, and the rest no
    longer cancels (torchvision's ``maxvit_t``, docs/lrp-rules.md). Graphs whose rules all
    conserve (CNNs, attention held constant) keep Norm, Zennit's rule."""

    def __init__(self, tau: float = 0.5) -> None:
        self.tau = tau

    def apply(self, graph) -> None:
        if not any(getattr(op.rule, "lossy", False) for op in graph.ops):
            return
        for op in graph.ops:
            if type(op.rule) is Norm and BoundedSum.covers(op):
                op.rule = BoundedSum(op.rule.stabilizer, op.rule.record, self.tau)
