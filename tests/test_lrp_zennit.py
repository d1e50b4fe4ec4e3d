"""hudd_core.lrp equals Zennit (same composite, BatchNorm folded on both sides) on every
recorded layer of three architectures, within 1e-4 of each layer's largest relevance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hudd_core.lrp import LRP, start_relevance
from hudd_core.models import alexnet, resnet
from hudd_testkit.lrp_oracle import (
    BasicSumCanonizer,
    InvertedResidualSumCanonizer,
    zennit_relevance,
)


class DeepCNN(nn.Module):
    """A deeper random CNN: conv/BN stages, a two-branch concatenation, LeakyReLU,
    average pooling, adaptive pooling, dropout, linear + BatchNorm1d."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stage1 = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.left = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(8, 4, 1), nn.LeakyReLU(0.1))
        self.stage2 = nn.Sequential(
            nn.Conv2d(10, 12, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(12, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(3),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(16 * 9, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Linear(32, classes),
        )

    def forward(self, x):
        x = self.stage1(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(self.stage2(x))


def conv1d_net(classes: int = 3) -> nn.Module:
    """1-D signals: Conv1d/BatchNorm1d, max and average pooling, adaptive pooling."""
    return nn.Sequential(
        nn.Conv1d(2, 6, 5, padding=2),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool1d(3, stride=2, padding=1),
        nn.Conv1d(8, 8, 3),
        nn.LeakyReLU(0.05),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def pools_net(classes: int = 4) -> nn.Module:
    """Pooling settings the compiled avg-pool kernel leaves to torch's gradient (ceil mode,
    divisor override), overlapping ceil-mode max pooling, non-square adaptive pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.AvgPool2d(2, divisor_override=3),
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.Flatten(),
        nn.Linear(36, classes),
    )


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval().double()


ARCHS = {
    "alexnet": (lambda: alexnet(4, 1, 32), (1, 32, 32), ()),
    "resnet": (lambda: resnet(4, 1, 32), (1, 32, 32), (BasicSumCanonizer(),)),
    "deep": (lambda: DeepCNN(5), (3, 24, 24), ()),
    "conv1d": (conv1d_net, (2, 40), ()),
    "pools": (pools_net, (1, 23, 21), ()),
}


def mobilenet_v2(classes: int = 4) -> nn.Module:
    """torchvision's MobileNetV2 (ReLU6: the pass rule on both sides, residual Norm)."""
    tv = pytest.importorskip("torchvision.models")
    return tv.mobilenet_v2(num_classes=classes, width_mult=0.5)


ARCHS["mobilenet_v2"] = (mobilenet_v2, (3, 32, 32), (InvertedResidualSumCanonizer(),))
COMPOSITES = ["hudd", "epsilon-plus", "epsilon-alpha2-beta1", "epsilon-gamma-box"]


def _max_rel_diff(ours: dict, ref: dict) -> dict[str, float]:
    return {
        name: float((ours[name] - ref[name]).abs().max() / ref[name].abs().max().clamp_min(1e-300))
        for name in ours
    }


CASES = [(a, c, torch.float64) for a in ARCHS for c in COMPOSITES]
CASES += [(a, "hudd", torch.float32) for a in ARCHS]  # the default, as users run it


@pytest.mark.parametrize("arch,composite,dtype", CASES)
def test_equals_zennit_on_every_layer(arch, composite, dtype):
    torch.manual_seed(0)
    make, shape, extra = ARCHS[arch]
    model = _randomise(make(), 1).to(dtype)
    x = torch.rand(3, *shape, dtype=dtype)
    lrp = LRP(model, composite)
    ours = lrp(x)
    ref = zennit_relevance(model, x, composite, lrp.layers, start_relevance, extra)
    assert set(ours) == set(ref)
    diffs = _max_rel_diff(ours, ref)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < 1e-4, f"{arch}/{composite}: layer {worst} differs by {diffs[worst]:.2e}"
    assert all(bool(ref[n].abs().max() > 0) for n in ref)  # the comparison is not vacuous
