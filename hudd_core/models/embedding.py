"""A classifier's penultimate features: the input of its last linear layer, captured by a
forward hook during a forward pass that runs anyway (what the diversity selections and
the margin-diverse / BADGE baselines embed the pool with).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> with FeatureHook(net) as hook:
    ...     out = net(torch.ones(5, 4))
    >>> hook.features().shape, out.shape
    ((5, 3), torch.Size([5, 2]))
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` in definition order (the classifier's head);
    a ValueError when it has none."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer: no penultimate features to embed "
            "the pool with (the diversity selections and margin-diverse / badge need one)"
        )
    return last


class FeatureHook:
    """While open, every forward call of the model's :func:`last_linear` appends its
    input (flattened, float32, CPU) in call order; :meth:`features` stacks them."""

    def __init__(self, model: nn.Module) -> None:
        self.layer = last_linear(model)
        self.batches: list[np.ndarray] = []
        self._handle = None

    def __enter__(self) -> FeatureHook:
        def grab(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            self.batches.append(x.reshape(len(x), -1).float().cpu().numpy())

        self._handle = self.layer.register_forward_pre_hook(grab)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def features(self) -> np.ndarray:
        """The inputs seen so far, ``(N, D)``; ``(0, in_features)`` when none."""
        if not self.batches:
            return np.zeros((0, self.layer.in_features), dtype=np.float32)
        return np.concatenate(self.batches)

    def take(self) -> np.ndarray:
        """:meth:`features`, then forgets them (one batch at a time)."""
        out = self.features()
        self.batches = []
        return out
