"""Zennit as the test oracle of hudd_core.lrp: the same composites, relevance at every
recorded layer through retained gradients of the module outputs."""

from __future__ import annotations

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer, MergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    LayerMapComposite,
    layer_map_base,
)
from zennit.core import BasicHook, Stabilizer
from zennit.layer import Sum
from zennit.rules import ClampMod, Epsilon
from zennit.types import Convolution

from hudd_core.models.zoo import _Basic


class PositiveWeightsHook(BasicHook):
    """HUDD's z+ for Zennit: positive weights, zero bias, inputs unmodified."""

    def __init__(self, stabilizer: float = 1e-9):
        stab = Stabilizer.ensure(stabilizer)
        super().__init__(
            input_modifiers=[lambda x: x],
            param_modifiers=[ClampMod(min=0.0, zero_params=["bias"])],
            output_modifiers=[lambda o: o],
            gradient_mapper=lambda g, outs: g / stab(outs[0]),
            reducer=lambda ins, grads: ins[0] * grads[0],
        )


def hudd_composite(canonizers) -> LayerMapComposite:
    layer_map = [
        *layer_map_base(1e-9),
        (Convolution, Epsilon(1e-9)),
        (nn.Linear, PositiveWeightsHook(1e-9)),
    ]
    return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


class _Merge(MergeBatchNorm):
    """Zennit's merge leaves the BatchNorm dividing by sqrt(1 + eps) (not quite the
    identity: 5e-6 per layer); eps is zeroed while merged so both sides compute the
    same canonical model."""

    def apply(self, root_module):  # pragma: no cover - registered by PairsMergeBatchNorm
        return []

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self.saved_eps, batch_norm.eps = batch_norm.eps, 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.saved_eps


class PairsMergeBatchNorm(Canonizer):
    """Folds every BatchNorm into the conv/linear that feeds it (pairs given by name)."""

    def __init__(self, pairs: list[tuple[str, str]]):
        super().__init__()
        self.pairs = pairs

    def apply(self, root_module):
        mods = dict(root_module.named_modules())
        out = []
        for lin, bn in self.pairs:
            inst = _Merge()
            inst.register([mods[lin]], mods[bn])
            out.append(inst)
        return out

    def register(self):  # pragma: no cover - instances are made by apply
        pass

    def remove(self):  # pragma: no cover
        pass


def _basic_forward(self, x):
    out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
    return self.relu2(self.canonizer_sum(torch.stack([out, self.shortcut(x)], dim=-1)))


class BasicSumCanonizer(AttributeCanonizer):
    """The zoo ResNet block's ``out + shortcut`` as a Zennit ``Sum`` (Norm rule)."""

    def __init__(self):
        super().__init__(self._attrs)

    @staticmethod
    def _attrs(name, module):
        if isinstance(module, _Basic):
            return {"forward": _basic_forward.__get__(module), "canonizer_sum": Sum()}
        return None


def _inverted_residual_forward(self, x):
    return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))


class InvertedResidualSumCanonizer(AttributeCanonizer):
    """torchvision MobileNetV2's residual ``x + conv(x)`` as a Zennit ``Sum`` (Norm rule)."""

    def __init__(self):
        super().__init__(self._attrs)

    @staticmethod
    def _attrs(name, module):
        from torchvision.models.mobilenetv2 import InvertedResidual

        if isinstance(module, InvertedResidual) and module.use_res_connect:
            return {"forward": _inverted_residual_forward.__get__(module), "canonizer_sum": Sum()}
        return None


def bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv/linear, BatchNorm) name pairs, the BN following its layer in module order."""
    pairs, prev = [], None
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            pairs.append((prev, name))
        elif isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            prev = name
    return pairs


def zennit_relevance(model, x, composite_name, layers, start, extra_canonizers=()):
    """Zennit's relevance at the outputs of the named modules (and ``input``)."""
    canon = [PairsMergeBatchNorm(bn_pairs(model)), *extra_canonizers]
    if composite_name == "hudd":
        comp = hudd_composite(canon)
    elif composite_name == "epsilon-plus":
        comp = EpsilonPlus(canonizers=canon)
    elif composite_name == "epsilon-alpha2-beta1":
        comp = EpsilonAlpha2Beta1(canonizers=canon)
    else:
        comp = EpsilonGammaBox(low=0.0, high=1.0, canonizers=canon)
    mods = dict(model.named_modules())
    kept: dict[str, list[torch.Tensor]] = {}  # module name -> its outputs, call by call

    def keep(name):
        def hook(module, inp, out):
            out.retain_grad()
            kept.setdefault(name, []).append(out)

        return hook

    # "name#k": the k-th call of a module used more than once (as hudd_core.lrp names it)
    wanted = {n.split("#")[0] for n in layers if n != "input"}
    x = x.clone().requires_grad_()
    with comp.context(model) as m:
        handles = []
        try:
            handles += [mods[n].register_forward_hook(keep(n)) for n in wanted]
            y = m(x)
            y.backward(start(y.detach()))
        finally:
            for h in handles:
                h.remove()
    res = {}
    for n in layers:
        if n != "input":
            base, _, k = n.partition("#")
            res[n] = kept[base][int(k or 0)].grad.detach()
    res["input"] = x.grad.detach()
    return res
