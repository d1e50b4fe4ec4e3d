"""The fallback capture: a model torch.fx cannot trace (control flow on a tensor's value)
is recorded from a batch, and gives the relevance the same model without the control flow
gets through torch.fx, on every layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hudd_core.lrp import LRP, capture
from hudd_core.lrp.graph import TracingFailed

D = torch.float64


class _Net(nn.Module):
    """conv -> BN -> ReLU -> residual block with a squeeze-excitation gate -> head; with
    ``branchy``, Python control flow on the values (fx cannot trace it)."""

    def __init__(self, branchy: bool) -> None:
        super().__init__()
        self.branchy = branchy
        self.stem = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(6, 6, 1), nn.Sigmoid())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.stem(x)
        if self.branchy and bool(h.mean() > -1e9):  # a branch on a value: always taken
            h = h + self.conv(h).relu() * self.gate(h)
        elif not self.branchy:
            h = h + self.conv(h).relu() * self.gate(h)
        side = int(h.shape[-1] ** 0.5) if self.branchy else 0  # int() of a traced value
        h = h.mean(dim=(2, 3)) + 0 * side
        return self.head(h)


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = _Net(False)
    bn = plain.stem[1]
    bn.running_mean.uniform_(-0.1, 0.1)
    bn.running_var.uniform_(0.5, 1.5)
    branchy = _Net(True)
    branchy.load_state_dict(plain.state_dict())
    return plain.eval().double(), branchy.eval().double()


def test_fx_cannot_trace_it():
    _, branchy = _pair()
    with pytest.raises(TracingFailed):
        capture(branchy)


@pytest.mark.parametrize("composite", ["hudd", "epsilon-plus"])
def test_recorded_graph_equals_the_traced_one(composite):
    plain, branchy = _pair()
    x = torch.rand(3, 2, 8, 8, dtype=D)
    ref_lrp, lrp = LRP(plain, composite), LRP(branchy, composite)
    ref = ref_lrp(x)
    got = lrp(x)
    assert lrp.graph.recorded and not ref_lrp.graph.recorded
    assert set(lrp.layers) == set(ref_lrp.layers)  # the same modules, recorded whole
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-10, atol=1e-12)
    assert float(ref["input"].abs().sum()) > 0
    # a new batch shape is recorded anew; the model is left as it was
    y = torch.rand(1, 2, 8, 8, dtype=D)
    torch.testing.assert_close(lrp(y)["input"], ref_lrp(y)["input"])
    assert len(lrp._recorded) == 2
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in branchy.modules())


def test_recorded_model_shapes_before_the_first_batch():
    plain, branchy = _pair()
    lrp = LRP(branchy, layers=["input", "conv"])
    assert lrp.shapes((2, 8, 8)) == LRP(plain, layers=["input", "conv"]).shapes((2, 8, 8))
    assert lrp.layers == ["input", "conv"]


class _Writes(nn.Module):
    """Writes into tensors (``x[i] = v``) behind a branch on a value."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False)

    def forward(self, x):
        h = self.lin(x)
        if bool(h.abs().sum() >= 0):
            h[:, 0] = h[:, 1] * 2  # into a relevance-carrying tensor
            out = torch.zeros(x.shape[0], 6, dtype=x.dtype)
            out[:, 1:5] = h  # into a constant
        return out


def test_recorded_writes_into_tensors():
    torch.manual_seed(0)
    m = _Writes().double().eval()
    x = torch.rand(3, 4, dtype=D)
    lrp = LRP(m, "epsilon-plus", epsilon=0.0, stabilizer=0.0)
    torch.testing.assert_close(lrp.forward(x), m(x))
    rel = lrp(x, start=lambda y: y)
    # every write only moves values: the linear layer gets all of the output's relevance,
    # the overwritten h[:, 0] none
    assert lrp.graph.recorded
    torch.testing.assert_close(rel["lin"].sum(1), m(x).sum(1))
    torch.testing.assert_close(rel["lin"][:, 0], torch.zeros(3, dtype=D))
