"""Random weights at a trained model's scale, for the LRP zoo tests (torchvision, timm).

Nothing may download weights, so the zoo tests build models with random weights and bring
them to the scale a trained model has: activations of order one, neither vanishing nor
exploding through many random layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def at_trained_scale(
    model: nn.Module, x: torch.Tensor, is_constant: Callable[[str], bool]
) -> nn.Module:
    """``model`` in eval mode with BatchNorm statistics of the batch ``x``, without shifts
    (``x / rms(x)``); the parameters whose name ``is_constant`` accepts (biases, position
    embeddings, ...) zeroed, since additive constants keep a share of relevance and
    conservation is checked without them; zero-initialised weights (heads, layer scales,
    tokens) drawn at random."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    model.eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        for pname, p in m.named_parameters(recurse=False):
            if is_constant(pname):
                p.data.zero_()
            elif not p.data.any():
                p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            m.running_var += m.running_mean**2
            m.running_mean.zero_()
    return model
