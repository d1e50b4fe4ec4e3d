"""LRP rules on hand-computed one-layer cases, conservation, start relevance, graph
capture errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hudd_core.lrp import LRP, UnsupportedOperation, capture, start_relevance
from hudd_core.lrp import kernels as K
from hudd_core.lrp.rules import AlphaBeta, Epsilon, Gamma, PositiveWeights, ZBox, ZPlus
from hudd_core.models import alexnet, kpnet

D = torch.float64


def _linear(w, b=None):
    layer = nn.Linear(len(w[0]), len(w), bias=b is not None).double()
    layer.weight.data = torch.tensor(w, dtype=D)
    if b is not None:
        layer.bias.data = torch.tensor(b, dtype=D)
    return layer


def _one_layer(rule_cls_kwargs, w, b, x, composite_rule):
    """Relevance at the input of a one-linear-layer model, start relevance 1."""
    from hudd_core.lrp.composites import Composite
    from hudd_core.lrp.rules import Norm

    model = nn.Sequential(_linear(w, b))
    comp = Composite("t", composite_rule, composite_rule, Norm(1e-9))
    x = torch.tensor([x], dtype=D)
    return LRP(model, comp)(x, start=torch.ones(1, len(w), dtype=D))["input"][0]


# Hand computations (W = [[1, -1]], one output, start relevance 1):
# Epsilon(0): x = [3, 1], z = 2 -> [3/2, -1/2]
# PositiveWeights: W+ = [1, 0], z = 3 -> [1, 0]
# ZPlus: x = [3, -1], b = 0.5: z = 3 + 1 + 0.5 = 4.5 -> [3/4.5, 1/4.5]
# AlphaBeta(2, 1): x = [3, 1]: z+ = 3, z- = -1 -> 2 [1, 0] - [0, 1] = [2, -1]
# Gamma(0.5): x = [3, 1], z = 2 > 0: w + g w+ = [1.5, -1], z' = 3.5 -> [4.5/3.5, -1/3.5]
# ZBox(0, 1): x = [.5, .2]: z = .3 - 0 - (-1) = 1.3 -> [.5/1.3, (-.2 + 1)/1.3]
CASES = [
    (Epsilon(1e-12), [3.0, 1.0], None, [1.5, -0.5]),
    (PositiveWeights(1e-12), [3.0, 1.0], None, [1.0, 0.0]),
    (ZPlus(1e-12), [3.0, -1.0], [0.5], [3 / 4.5, 1 / 4.5]),
    (AlphaBeta(2.0, 1.0, 1e-12), [3.0, 1.0], None, [2.0, -1.0]),
    (Gamma(0.5, 1e-12), [3.0, 1.0], None, [4.5 / 3.5, -1 / 3.5]),
    (ZBox(0.0, 1.0, 1e-12), [0.5, 0.2], None, [0.5 / 1.3, 0.8 / 1.3]),
]


@pytest.mark.parametrize("rule,x,b,expected", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_rules_on_hand_computed_cases(rule, x, b, expected):
    got = _one_layer({}, [[1.0, -1.0]], b, x, rule)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=D))


@pytest.mark.parametrize("dtype,tol", [(D, 1e-12), (torch.float32, 1e-5)])
def test_zplus_on_token_linear_layers_by_contributions(dtype, tol):
    # every contribution x_i w_ji of the same sign as the output's positive part:
    # c_ji = x+_i w+_ji + x-_i w-_ji, R_i = sum_j c_ji / (sum_i c_ji + b+_j) r_j
    from hudd_core.lrp.composites import Composite
    from hudd_core.lrp.rules import Norm

    torch.manual_seed(0)
    layer = nn.Linear(6, 4).to(dtype)
    x = torch.randn(3, 5, 6, dtype=dtype)
    r = torch.randn(3, 5, 4, dtype=dtype)
    w, b = layer.weight.detach(), layer.bias.detach()
    c = x.clamp(min=0)[..., None, :] * w.clamp(min=0) + x.clamp(max=0)[..., None, :] * w.clamp(
        max=0
    )
    den = c.sum(-1) + b.clamp(min=0) + 1e-30  # >= 0: the stabiliser adds 1e-30
    want = (c / den[..., None] * r[..., None]).sum(-2)
    comp = Composite("t", ZPlus(1e-30), ZPlus(1e-30), Norm(1e-30))
    got = LRP(nn.Sequential(layer), comp)(x, start=r.clone())["input"]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))


def test_hudd_linear_ignores_bias_and_negative_weights():
    # W = [[2, -1], [1, 1]], b = [5, 5], x = [1, 2], relevance only on output 0:
    # W+ row 0 = [2, 0]: z = 2 -> R = [1 * 2 / 2 * r, 0] with r = output 0 = 2 - 2 + 5 = 5
    model = nn.Sequential(_linear([[2.0, -1.0], [1.0, 1.0]], [5.0, 5.0]))
    rel = LRP(model)(torch.tensor([[1.0, 2.0]], dtype=D), target=0)
    torch.testing.assert_close(rel["input"], torch.tensor([[5.0, 0.0]], dtype=D))
    torch.testing.assert_close(rel["0"], torch.tensor([[5.0, 0.0]], dtype=D))


def test_pooling_and_addition_by_hand():
    r = torch.tensor([[[[5.0]]]], dtype=D)
    x = torch.tensor([[[[1.0, 3.0], [2.0, 0.0]]]], dtype=D)
    _, idx = nn.functional.max_pool2d(x, 2, return_indices=True)
    # winner-take-all: everything to the 3
    assert K.maxpool_route(r, idx, x.shape).flatten().tolist() == [0.0, 5.0, 0.0, 0.0]
    # average pool (Norm): x * (r / z) / 4 with z = 1.5
    got = K.avgpool_redistribute(x, x.mean().reshape(1, 1, 1, 1), r, 0.0, (2, 2, 2, 2, 0, 0, 0, 1))
    torch.testing.assert_close(got.flatten(), x.flatten() * 5.0 / 1.5 / 4)
    ra, rb = K.sum_split(*(torch.tensor([v], dtype=D) for v in (1.0, 3.0, 2.0)), 0.0)
    assert (ra.item(), rb.item()) == (0.5, 1.5)


def _zero_biases(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if getattr(m, "bias", None) is not None and not isinstance(m, nn.BatchNorm2d):
            m.bias.data.zero_()
    return model


@pytest.mark.parametrize("composite", ["hudd", "epsilon-plus", "epsilon-alpha2-beta1"])
def test_conservation_without_biases(composite):
    """Without biases, every layer's total relevance equals the explained logit."""
    torch.manual_seed(0)
    model = _zero_biases(alexnet(3, 1, 32)).eval().double()
    x = torch.rand(4, 1, 32, 32, dtype=D)
    # Tiny stabilisers: the defaults (1e-6) absorb a visible share of these small logits.
    kwargs = {} if composite == "hudd" else {"epsilon": 1e-12, "stabilizer": 1e-12}
    rel = LRP(model, composite, **kwargs)(x)
    logit = model(x).max(dim=1).values
    for name, r in rel.items():
        torch.testing.assert_close(r.flatten(1).sum(1), logit, rtol=1e-6, atol=0, msg=name)


def test_conservation_through_residuals_and_concatenation():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 3, 3, padding=1, bias=False)
            self.b = nn.Conv2d(2, 3, 1, bias=False)
            self.c = nn.Conv2d(6, 2, 3, padding=1, bias=False)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2, 4, bias=False)

        def forward(self, x):
            h = torch.relu(self.a(x))
            h = torch.cat([h, h + self.b(x)], dim=1)
            return self.fc(self.pool(self.c(h)).flatten(1))

    torch.manual_seed(3)
    model = Net().double().eval()
    x = torch.rand(2, 2, 6, 6, dtype=D)
    layers = ["input", "a", "b", "c", "cat"]
    lrp = LRP(model, "epsilon-plus", layers=layers, epsilon=1e-12, stabilizer=1e-12)
    rel = lrp(x, target=1)
    total = model(x)[:, 1]
    assert list(rel) == ["input", "a", "b", "cat", "c"]
    sums = {name: r.flatten(1).sum(1) for name, r in rel.items()}
    # Cuts through the graph: input, {a, b} (both branches), cat, c.
    for name, got in [*sums.items(), ("a+b", sums["a"] + sums["b"])]:
        if name not in ("a", "b"):
            torch.testing.assert_close(got, total, rtol=1e-9, atol=0, msg=name)
    assert bool((sums["b"].abs() > 1e-3 * total.abs()).all())  # the skip carries relevance


def test_start_relevance_modes():
    out = torch.tensor([[1.0, 4.0, 2.0], [3.0, 0.5, -1.0]])
    assert start_relevance(out).tolist() == [[0.0, 4.0, 0.0], [3.0, 0.0, 0.0]]
    assert start_relevance(out, target=2).tolist() == [[0.0, 0.0, 2.0], [0.0, 0.0, -1.0]]
    assert start_relevance(out, target=torch.tensor([0, 1])).tolist() == [
        [1.0, 0.0, 0.0],
        [0.0, 0.5, 0.0],
    ]
    pred = torch.tensor([[10.0, 10.0, 20.0, 20.0, 30.0, 30.0]])
    gt = torch.tensor([[10.0, 11.0, 25.0, 20.0, 30.0, 30.0]])  # keypoint 1 is worst
    assert start_relevance(pred, keypoints=gt).tolist() == [[0, 0, 20.0, 20.0, 0, 0]]


def test_keypoint_model_explains_worst_keypoint():
    torch.manual_seed(0)
    model = _zero_biases(kpnet(3, 1, 32)).eval().double()
    x = torch.rand(2, 1, 32, 32, dtype=D)
    gt = model(x).detach().clone()
    gt[:, 4] += 9.0  # keypoint 2 has the largest error
    rel = LRP(model)(x, keypoints=gt)
    out = model(x)
    torch.testing.assert_close(rel["input"].flatten(1).sum(1), out[:, 4] + out[:, 5])


def test_model_is_not_modified():
    model = alexnet(2, 1, 32).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    LRP(model, "epsilon-gamma-box")(torch.rand(2, 1, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.grad is not None for p in model.parameters())


class _Softmin(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.gate = nn.Softmin(dim=1)

    def forward(self, x):
        return self.gate(self.conv(x)).flatten(1)


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.cumsum(self.conv(x), 1).flatten(1)


class _Exp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x).exp().flatten(1)


@pytest.mark.parametrize(
    "model,words",
    [
        (_Softmin(), ["Softmin", "'gate'", "register_module"]),
        (_Cumsum(), ["cumsum", "graph node 'cumsum'", "register_function"]),
        (_Exp(), ["Tensor.exp", "graph node 'exp'"]),
    ],
)
def test_unsupported_operations_are_named(model, words):
    with pytest.raises(UnsupportedOperation) as err:
        capture(model)
    for w in words:
        assert w in str(err.value)


def test_unknown_layer_name_is_rejected():
    with pytest.raises(ValueError, match="unknown layer"):
        LRP(alexnet(2, 1, 32), layers=["features.99"])


class _Functional(nn.Module):
    """Functional spellings: F.relu, x.view(x.size(0), -1), torch.flatten, x.relu()."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        self.c1, self.c2, self.fc1, self.fc2 = seq[0], seq[2], seq[5], seq[7]

    def forward(self, x):
        h = nn.functional.relu(self.c1(x))
        h = self.c2(h).relu()
        h = h.view(h.size(0), -1)
        h = torch.flatten(h, 1)
        return self.fc2(nn.functional.relu(self.fc1(h)))


def test_functional_spellings_match_modules():
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3),
    ).double().eval()  # fmt: skip
    x = torch.rand(2, 1, 8, 8, dtype=D)
    a = LRP(seq, "epsilon-plus")(x)
    b = LRP(_Functional(seq), "epsilon-plus", layers=["input", "c1", "c2", "fc1"])(x)
    for ours, theirs in [("input", "input"), ("c1", "0"), ("c2", "2"), ("fc1", "5")]:
        torch.testing.assert_close(b[ours], a[theirs])


@pytest.mark.parametrize("composite", ["epsilon-plus", "epsilon-alpha2-beta1", "epsilon-gamma-box"])
def test_grouped_convolution_equals_its_dense_block_diagonal_form(composite):
    """Sign-splitting rules on a grouped convolution (kept as a grid of blocks) equal the
    same map written as a dense convolution with zero off-diagonal blocks."""
    torch.manual_seed(0)
    grouped = nn.Conv2d(4, 6, 3, groups=2, padding=1).double()
    dense = nn.Conv2d(4, 6, 3, padding=1).double()
    with torch.no_grad():
        dense.weight.zero_()
        dense.bias.copy_(grouped.bias)
        dense.weight[:3, :2] = grouped.weight[:3]
        dense.weight[3:, 2:] = grouped.weight[3:]
    x = torch.rand(2, 4, 5, 5, dtype=D)
    a = LRP(nn.Sequential(grouped, nn.Flatten()), composite)(x)["input"]
    b = LRP(nn.Sequential(dense, nn.Flatten()), composite)(x)["input"]
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
