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
from torch import nn

from hudd_core.lrp.oprules import Folded


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
    """Folds every BatchNorm whose only input is a convolution/linear layer read by nothing
    else into that layer (the layer's rule must allow it: ``folds_batchnorm``); the
    BatchNorm's op then passes relevance through. Other BatchNorms keep their own rule."""

    def apply(self, graph) -> None:
        by_name = {op.name: op for op in graph.ops}
        for op in graph.ops:
            if not isinstance(op.module, nn.modules.batchnorm._BatchNorm) or len(op.args) != 1:
                continue
            src = by_name[op.args[0]]
            if (
                src.node.op != "call_module"
                or not getattr(src.rule, "folds_batchnorm", False)
                or src.bn is not None
                or len(src.node.users) != 1
                or op.module.running_mean is None
            ):
                continue
            src.bn, op.rule = op.module, Folded()
