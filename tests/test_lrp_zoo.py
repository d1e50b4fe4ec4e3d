"""LRP on every torchvision classifier under the default composite: random weights, 10
classes, batch 2, the smallest input each accepts. It runs, every recorded layer is finite,
and with biases and BatchNorm shifts zeroed the input relevance sums to the explained logit
(within 1%) for every architecture whose rules conserve; for the attention models
(AttnLRP's softmax rule drops its bias-like terms, so relevance is lost by design) it is
positive and at most twice the logit.

One representative per family runs by default (MaxViT as torchvision's MaxVit class in a
small configuration: ``maxvit_t`` needs 224x224); the rest are marked ``slow`` and run only
with ``HUDD_ZOO=1`` (the largest have 0.6 billion parameters). Float64: random deep nets
reach activations of 1e17, where float32 rounds the comparison off."""

from __future__ import annotations

import os
import re

import pytest
import torch
from torch import nn

from hudd_core.lrp import LRP
from hudd_testkit.trained_scale import at_trained_scale

tv = pytest.importorskip("torchvision.models")

ALL = tv.list_models(module=tv)
REPRESENTATIVES = {
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s",
    "googlenet", "inception_v3", "maxvit_small", "mnasnet0_5", "mobilenet_v2",
    "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "swin_v2_t", "vgg11", "vgg11_bn",
    "vit_b_16", "wide_resnet50_2",
}  # fmt: skip
# AttnLRP's softmax rule does not conserve: relevance reaching the input is positive and
# at most twice the logit (attention loses share by design).
NOT_CONSERVING = re.compile(r"^(vit|swin|maxvit)")
SIZES = (32, 48, 64, 75, 96, 128, 160, 224)


FAMILY = re.compile(
    r"^(convnext|vit|swin_v2|swin|mobilenet_v2|mobilenet_v3|efficientnet_v2|efficientnet|"
    r"regnet_x|regnet_y|vgg|resnext|resnet|wide_resnet|densenet|inception|googlenet|mnasnet|"
    r"shufflenet|squeezenet|maxvit|alexnet)"
)


def _family(name: str) -> str:
    match = FAMILY.match(name)
    assert match, f"{name}: a torchvision family the test does not know"
    return match.group(1)


def test_every_family_has_a_representative():
    missing = {_family(n) for n in ALL} - {_family(n) for n in REPRESENTATIVES}
    assert not missing


def _build(name: str) -> nn.Module:
    """The torchvision builder ``name``; ``maxvit_small``: torchvision's MaxVit class in a
    small configuration (the same code as ``maxvit_t``, which needs 224x224 inputs). Not
    narrower: with heads of 4 and 8 channels, a random layer's output often has no
    positive contribution at all, and ZPlus's share of relevance becomes arbitrary."""
    if name == "maxvit_small":
        from torchvision.models.maxvit import MaxVit

        return MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2,
                      block_channels=[32, 64], block_layers=[1, 1], head_dim=16,
                      stochastic_depth_prob=0.0, num_classes=10)  # fmt: skip
    return tv.get_model(name, **_kwargs(name))


def _kwargs(name: str) -> dict:
    kw: dict = {"num_classes": 10}
    if name.startswith("vit"):
        kw["image_size"] = 28 if name.endswith("14") else 32
    if name in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=False)
    if name.startswith("maxvit"):
        kw["input_size"] = (224, 224)
    return kw


def _smallest_input(model: nn.Module, name: str) -> torch.Tensor:
    """The smallest square batch-2 input the model accepts."""
    sizes = (224,) if name.startswith("maxvit_t") else SIZES
    if name.startswith("vit"):
        sizes = (_kwargs(name)["image_size"],)
    for size in sizes:
        x = torch.rand(2, 3, size, size)
        try:
            with torch.no_grad():
                model(x)
        except (RuntimeError, ValueError, AssertionError):
            continue
        return x
    raise AssertionError(f"{name} accepts none of {sizes}")


def _prepare(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A trained model's scale (:func:`hudd_testkit.trained_scale.at_trained_scale`);
    biases, position embeddings and class tokens are the constants."""
    return at_trained_scale(
        model, x, lambda name: name.endswith("bias") or name in ("pos_embedding", "class_token")
    )


def _case(name: str):
    if name in REPRESENTATIVES:
        return name
    return pytest.param(
        name,
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(not os.environ.get("HUDD_ZOO"), reason="set HUDD_ZOO=1"),
        ],
    )


@pytest.mark.parametrize("name", [_case(n) for n in [*ALL, "maxvit_small"]])
def test_torchvision_model(name):
    torch.manual_seed(0)
    model = _build(name).eval()
    x = _smallest_input(model, name)
    model = _prepare(model, x).double()  # random deep nets reach 1e17: float32 rounds off
    x = x.double()
    lrp = LRP(model)
    rel = lrp(x)
    assert rel.keys() == set(lrp.layers) and len(rel) > 3
    bad = [k for k, v in rel.items() if not bool(torch.isfinite(v).all())]
    assert not bad, f"{name}: non-finite relevance at {bad[:5]}"
    with torch.no_grad():
        logit = model(x).max(dim=1).values
    y = model(x).detach()
    torch.testing.assert_close(lrp.forward(x), y, rtol=0, atol=1e-4 * float(y.abs().max()))
    ratio = rel["input"].flatten(1).sum(1) / logit
    if NOT_CONSERVING.match(name):
        assert bool(((ratio > 0) & (ratio <= 2)).all()), f"{name}: input/logit = {ratio.tolist()}"
    else:
        assert bool(((ratio - 1).abs() < 0.01).all()), f"{name}: input/logit = {ratio.tolist()}"
