"""Composites: which rule each kind of layer gets (Zennit's layer-map composites).

=====================  ==================  ==============  ==================
composite              convolution         linear          avg-pool / add
=====================  ==================  ==============  ==================
``hudd`` (default)     Epsilon(1e-9)       z+ (w+ only,    Norm(1e-9)
                       (LRP-0, with bias)  no bias, 1e-9)
``epsilon-plus``       ZPlus(1e-6)         Epsilon(1e-6)   Norm(1e-6)
``epsilon-alpha2-      AlphaBeta(2, 1)     Epsilon(1e-6)   Norm(1e-6)
beta1``
``epsilon-gamma-box``  Gamma(0.25); the    Epsilon(1e-6)   Norm(1e-6)
                       first: ZBox(0, 1)
=====================  ==================  ==============  ==================

Everywhere: activations, dropout, flatten/reshape pass relevance through, max-pooling is
winner-take-all, concatenation splits it, BatchNorm is folded into the preceding layer.
``hudd`` is DESIGN.md's reference semantics; the others are as Zennit 0.5 defines them
(``EpsilonPlus``, ``EpsilonAlpha2Beta1``, ``EpsilonGammaBox``). "First" is the first
convolution in execution order (Zennit: in module registration order; the same for
ordinary models).

Example:
    >>> get_composite("epsilon-plus").rule_for("conv", first=False)
    ZPlus(stabilizer=1e-06)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hudd_core.lrp.rules import (
    AffineRule,
    AlphaBeta,
    Epsilon,
    Gamma,
    Norm,
    PositiveWeights,
    ZBox,
    ZPlus,
)


@dataclass
class Composite:
    """Rules by layer kind; ``first_conv`` (optional) overrides ``conv`` for the first one."""

    name: str
    conv: AffineRule
    linear: AffineRule
    norm: Norm
    first_conv: AffineRule | None = None

    def rule_for(self, kind: str, first: bool = False) -> AffineRule:
        """The rule of a ``"conv"`` or ``"linear"`` layer."""
        if kind == "conv":
            return self.first_conv if (first and self.first_conv is not None) else self.conv
        return self.linear


def hudd() -> Composite:
    return Composite("hudd", Epsilon(1e-9), PositiveWeights(1e-9), Norm(1e-9))


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
