"""Rules for the functional operations model libraries (timm) call inside their modules:
``F.batch_norm`` (timm's ``BatchNormAct2d``), convolutions with a weight computed in the
forward (weight standardisation), ``F.scaled_dot_product_attention`` outside attention
modules, ``F.normalize``, ``pow``, ``repeat_interleave``, norms, optional forward
arguments; and capture leaving the model as it was. Oracles: Zennit on the equivalent
``torch.nn`` model, or a hand computation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hudd_core.lrp import LRP, start_relevance
from hudd_testkit.lrp_oracle import zennit_relevance

D = torch.float64


class _BatchNormAct(nn.BatchNorm2d):
    """BatchNorm + activation with a forward of its own (timm's ``BatchNormAct2d``)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.act = nn.ReLU()

    def forward(self, x):
        torch._assert(x.ndim == 4, "4-d input")  # as timm's: x's shape read besides its values
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         False, 0.0, self.eps)  # fmt: skip
        return self.act(x)


class _StdConv(nn.Conv2d):
    """A weight-standardised convolution (timm's ``StdConv2d``): the weight is computed in
    the forward from the parameters."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)  # fmt: skip
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _randomise_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    bn.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
    bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
    bn.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _pair(functional: bool) -> nn.Module:
    """conv -> BN -> ReLU -> conv -> BN(+act) -> pool -> linear, BatchNorm as ``torch.nn``
    modules or as ``F.batch_norm`` calls in a module of its own."""
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 5, 3)
    bns = [_BatchNormAct(4), _BatchNormAct(5)] if functional else [nn.BatchNorm2d(4),
                                                                   nn.BatchNorm2d(5)]  # fmt: skip
    for i, bn in enumerate(bns):
        _randomise_bn(bn, i)
    if functional:
        body = [conv1, bns[0], conv2, bns[1]]
    else:
        body = [conv1, bns[0], nn.ReLU(), conv2, bns[1], nn.ReLU()]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)]
    return nn.Sequential(*body, *head).eval().double()


@pytest.mark.parametrize("composite", ["hudd", "epsilon-plus", "epsilon-alpha2-beta1"])
def test_functional_batchnorm_folds_like_zennit(composite):
    ours, ref_model = _pair(True), _pair(False)  # the same seed: the same parameters
    x = torch.rand(3, 2, 9, 9, dtype=D)
    torch.testing.assert_close(ours(x), ref_model(x))
    lrp = LRP(ours, composite)
    assert "1.act" in lrp.layers and "0" in lrp.layers
    got = lrp(x)
    ref = zennit_relevance(ref_model, x, composite, ["input", "0", "3"], start_relevance)
    for name, ref_name in (("input", "input"), ("0", "0"), ("2", "3")):
        scale = float(ref[ref_name].abs().max())
        assert scale > 0
        torch.testing.assert_close(got[name], ref[ref_name], rtol=0, atol=1e-6 * scale)


class _BatchNormFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([1.0], dtype=D))
        self.register_buffer("var", torch.tensor([4.0], dtype=D))

    def forward(self, x):
        return F.batch_norm(x, self.mean, self.var, None, None, False, 0.0, 0.0)


def test_unfolded_functional_batchnorm_by_hand():
    # nothing to fold into: scale 1 / sqrt(4) = 0.5, shift -0.5; x = 3: z = 1,
    # R = 0.5 * 3 * r / z = 1.5 (the negative shift keeps its share, -0.5)
    x = torch.tensor([[3.0]], dtype=D)
    got = LRP(_BatchNormFirst(), "epsilon-plus", epsilon=0.0, stabilizer=0.0)(
        x, start=torch.ones(1, 1, dtype=D)
    )["input"]
    torch.testing.assert_close(got, torch.tensor([[1.5]], dtype=D))


@pytest.mark.parametrize("composite", ["hudd", "epsilon-gamma-box"])
def test_weight_standardised_convolution_equals_zennit(composite):
    torch.manual_seed(1)
    std = nn.Sequential(_StdConv(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))  # fmt: skip
    _randomise_bn(std[1], 3)
    std = std.eval().double()
    plain = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))  # fmt: skip
    plain.load_state_dict(std.state_dict())
    with torch.no_grad():  # the standardised weight, computed independently
        w = std[0].weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        plain[0].weight.copy_((w - mean) / torch.sqrt(var + 1e-6))
    plain = plain.eval().double()
    x = torch.rand(2, 2, 7, 7, dtype=D)
    lrp = LRP(std, composite)
    assert "0" in lrp.layers  # recorded under the module it is called in
    got = lrp(x)
    ref = zennit_relevance(plain, x, composite, ["input", "0"], start_relevance)
    for name in ("input", "0"):
        scale = float(ref[name].abs().max())
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-6 * scale)


class _SelfAttention(nn.Module):
    """q = k = v = x, one head, F.scaled_dot_product_attention called directly."""

    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x).sum(dim=(1, 2))[:, None]


def test_sdpa_outside_attention_modules_by_hand():
    x = torch.tensor([[[0.5, 1.0], [2.0, -0.5], [1.0, 1.5]]], dtype=D)
    got = LRP(_SelfAttention(), "epsilon-plus", epsilon=0.0, stabilizer=1e-30)(x)["input"]
    # AttnLRP, written out: o = A v, A = softmax(L), L = s q k^T, q = k = v = x
    s = 1 / math.sqrt(2)
    z = x @ x.transpose(1, 2)
    a = torch.softmax(s * z, dim=-1)
    o = a @ x
    r = torch.ones_like(o) * o  # the sum's Norm rule: each output keeps its own value
    so = r / o
    r_a, r_v = a * (so @ x.transpose(1, 2)) / 2, x * (a.transpose(1, 2) @ so) / 2
    r_l = s * z * (r_a - a * r_a.sum(-1, keepdim=True))  # softmax rule, then the scale passes
    sz = r_l / z
    r_q, r_k = x * (sz @ x) / 2, x * (sz.transpose(1, 2) @ x) / 2
    torch.testing.assert_close(got, r_q + r_k + r_v, rtol=1e-10, atol=1e-12)


class _Elementwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3, bias=False)

    def forward(self, x):
        h = self.lin(x)
        h = F.normalize(h.pow(2), dim=1)  # identity rule for both
        return h.repeat_interleave(2, dim=1).sum(dim=1, keepdim=True)


def test_pow_normalize_repeat_interleave_by_hand():
    torch.manual_seed(0)
    m = _Elementwise().double()
    x = torch.rand(2, 3, dtype=D)
    lrp = LRP(m, "epsilon-plus", layers=["lin", "pow_1", "normalize", "repeat_interleave"],
              epsilon=0.0, stabilizer=0.0)  # fmt: skip
    rel = lrp(x, start=lambda y: y)
    with torch.no_grad():
        h = F.normalize(m.lin(x).pow(2), dim=1)
    # sum: each of the 6 copies keeps its value; repeat_interleave adds the two copies
    torch.testing.assert_close(rel["repeat_interleave"], h.repeat_interleave(2, dim=1))
    torch.testing.assert_close(rel["normalize"], 2 * h)
    torch.testing.assert_close(rel["pow_1"], 2 * h)  # identity rule through F.normalize
    torch.testing.assert_close(rel["lin"], 2 * h)  # and through pow


class _Norm(nn.Module):
    def forward(self, x):
        return x.norm(dim=1, keepdim=True)


def test_norm_by_hand():
    # ||x|| = sum_k x_k^2 / ||x||: R_k = r x_k^2 / ||x||^2 (conservative)
    x = torch.tensor([[3.0, -4.0]], dtype=D)
    got = LRP(_Norm(), "epsilon-plus", epsilon=0.0, stabilizer=0.0)(x)["input"]
    torch.testing.assert_close(got, torch.tensor([[5.0 * 9 / 25, 5.0 * 16 / 25]], dtype=D))


class _Optional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, mask=None, scale: float = 2.0):
        if mask is not None:
            x = x * mask
        return self.lin(x) * scale


def test_optional_forward_arguments_keep_their_defaults():
    torch.manual_seed(0)
    m = _Optional().double().eval()
    x = torch.rand(4, 3, dtype=D)
    lrp = LRP(m)
    torch.testing.assert_close(lrp.forward(x), m(x))
    assert bool(lrp(x)["input"].abs().sum() > 0)


class _Caching(nn.Module):
    """Caches a tensor derived from its parameters on the first forward (LeViT's
    attention-bias cache does this)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.table = nn.Parameter(torch.rand(2, 1, 1))
        self.cache: dict[str, torch.Tensor] = {}
        self.calls: list[int] = []

    def forward(self, x):
        if "bias" not in self.cache:
            self.cache["bias"] = self.table * 2
        self.last = x.shape[0]
        self.calls.append(1)
        return (self.conv(x) + self.cache["bias"]).flatten(1)


def test_capture_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    m = _Caching().eval()
    x = torch.rand(2, 1, 6, 6)
    first = LRP(m)(x)
    assert m.cache == {} and m.calls == [] and not hasattr(m, "last")  # no Proxy stays
    second = LRP(m)(x)
    assert all(torch.equal(first[k], second[k]) for k in first)
    m(x)  # the model still runs, and a cache filled by a real forward stays
    assert isinstance(m.cache["bias"], torch.Tensor)
    third = LRP(m)(x)
    assert m.cache.keys() == {"bias"}
    for k in first:
        torch.testing.assert_close(first[k], third[k])


def test_timm_levit_twice():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("levit_128s", pretrained=False, num_classes=4, img_size=32).eval()
    x = torch.rand(1, 3, 32, 32)
    first, second = LRP(m)(x), LRP(m)(x)
    assert all(torch.equal(first[k], second[k]) for k in first)
    m(x)


def _tiny_scale_pair() -> tuple[nn.Module, nn.Module]:
    """A bias-free CNN and the same with every weight times 1e-5 (logits ~1e-15)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False),
                        nn.ReLU(), nn.Flatten(), nn.Linear(64, 3, bias=False)).eval()  # fmt: skip
    small = nn.Sequential(*[copy.deepcopy(m) for m in net]).eval()
    with torch.no_grad():
        for p in small.parameters():
            p.mul_(1e-5)
    return net, small


def test_relative_stabilizer_keeps_the_relevance_of_small_networks():
    from hudd_core.lrp.kernels import Relative

    net, small = _tiny_scale_pair()
    x = torch.rand(2, 1, 8, 8)

    def share(model, **kw):
        lrp = LRP(model, "hudd", **kw)
        return lrp(x)["input"].flatten(1).sum(1) / model(x).max(dim=1).values.detach()

    assert bool((share(small) < 0.01).all())  # the absolute 1e-9 swallows everything
    torch.testing.assert_close(share(net), torch.ones(2), rtol=1e-4, atol=0)
    rel = Relative(1e-6)
    torch.testing.assert_close(share(small, stabilizer=rel), torch.ones(2), rtol=1e-4, atol=0)
    # scale-invariant: the two nets' heatmaps are the same up to the logit's scale
    a = (
        LRP(net, stabilizer=rel)(x)["input"]
        / net(x).max(dim=1).values.detach()[:, None, None, None]
    )
    b = (
        LRP(small, stabilizer=rel)(x)["input"]
        / small(x).max(dim=1).values.detach()[:, None, None, None]
    )
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_transposed_convolution_equals_zennit():
    torch.manual_seed(2)
    up = nn.ConvTranspose2d(3, 2, 3, stride=2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), up, nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 11 * 11, 3)).eval().double()  # fmt: skip
    x = torch.rand(2, 2, 7, 7, dtype=D)
    got = LRP(model, layers=["input", "2"])(x)
    ref = zennit_relevance(model, x, "hudd", ["input", "2"], start_relevance)
    for name in ("input", "2"):
        scale = float(ref[name].abs().max())
        assert scale > 0
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-8 * scale)


class _Amax(nn.Module):
    def forward(self, x):
        return x.amax(dim=1, keepdim=True) + torch.max(x, dim=1, keepdim=True).values


def test_max_and_amax_are_winner_take_all_by_hand():
    x = torch.tensor([[1.0, 3.0, 2.0]], dtype=D)
    got = LRP(_Amax(), "epsilon-plus", epsilon=0.0, stabilizer=0.0)(x)["input"]
    torch.testing.assert_close(got, torch.tensor([[0.0, 6.0, 0.0]], dtype=D))


class _Addcmul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("c", torch.tensor([2.0, -1.0], dtype=D))

    def forward(self, x):
        return torch.addcmul(x, x, self.c, value=0.5) + torch.addcmul(x, x, x)


def test_addcmul_by_hand():
    # x = [2, 3]: the first term x + 0.5 c x = [4, 1.5] keeps everything (x: share 1/2 and
    # 1/2 of its value; the product, one live factor, the rest); in x + x * x the input
    # keeps x / z and each of the two factors half of x^2 / z: everything goes to x.
    x = torch.tensor([[2.0, 3.0]], dtype=D)
    lrp = LRP(_Addcmul(), "epsilon-plus", layers=["input", "addcmul", "addcmul_1"],
              epsilon=0.0, stabilizer=0.0)  # fmt: skip
    rel = lrp(x, start=lambda y: y)
    torch.testing.assert_close(rel["addcmul"], torch.tensor([[4.0, 1.5]], dtype=D))
    torch.testing.assert_close(rel["addcmul_1"], torch.tensor([[6.0, 12.0]], dtype=D))
    torch.testing.assert_close(rel["input"], torch.tensor([[10.0, 13.5]], dtype=D))


class _RMSNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3, bias=False)
        self.weight = nn.Parameter(torch.tensor([1.0, 2.0, 0.5], dtype=D))

    def forward(self, x):
        return F.rms_norm(self.lin(x), (3,), self.weight, 1e-6)


def test_rms_norm_by_hand():
    # rms held constant: y = (w / rms) x is linear, and its epsilon rule gives R = r
    torch.manual_seed(0)
    m = _RMSNorm().double()
    x = torch.rand(2, 3, dtype=D)
    rel = LRP(m, "epsilon-plus", layers=["lin", "rms_norm"], epsilon=0.0, stabilizer=0.0)(
        x, start=lambda y: y
    )
    torch.testing.assert_close(rel["lin"], m(x).detach())
    torch.testing.assert_close(rel["rms_norm"], m(x).detach())


class _PixelShift(nn.Module):
    """Pixel normalisation inside the model (timm's Gemma4 ViT), then a linear layer."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.fc(self.scale * (x - 0.5))


def test_pixel_normalisation_in_the_model_passes_relevance_by_hand():
    # 2 (x - 0.5) is signed: the linear layer gets ZPlus (x+ w+ and x- w- over their sum),
    # and the normalisation passes relevance on, as for normalised pixels given to the
    # model; under Norm the constant's share would be x / (x - 0.5) of it, unbounded
    torch.manual_seed(0)
    m = _PixelShift(2.0).double()
    x = torch.tensor([[0.49, 0.9, 0.1, 0.51]], dtype=D)
    rel = LRP(m)(x, target=0)
    xs = 2 * (x - 0.5)
    w = m.fc.weight.detach()[0]
    contrib = xs.clamp(min=0) * w.clamp(min=0) + xs.clamp(max=0) * w.clamp(max=0)
    want = contrib / contrib.sum() * m(x).detach()[0, 0]
    torch.testing.assert_close(rel["input"], want)


class _Difference(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
        self.fc = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.fc(F.relu(self.a(x)) - F.relu(self.b(x)))


def test_a_difference_of_rectified_values_is_signed():
    from hudd_core.lrp import capture
    from hudd_core.lrp.rules import PositiveWeights, ZPlus

    rules = {op.name: type(op.rule) for op in capture(_Difference()).ops}
    assert rules["fc"] is ZPlus and rules["a"] is PositiveWeights
    rules = {op.name: type(op.rule) for op in capture(_PixelShift(1 / 255)).ops}
    assert rules["fc"] is ZPlus  # x - 0.5


class _Square(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.fc(x * x)


def test_a_product_of_the_image_with_itself_is_no_pixel_scale():
    from hudd_core.lrp import capture
    from hudd_core.lrp.oprules import Product

    rules = {op.name: type(op.rule) for op in capture(_Square()).ops}
    assert rules["mul"] is Product
