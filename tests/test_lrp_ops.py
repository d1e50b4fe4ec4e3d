"""The open rule registry and the rules beyond conv/linear: hand-computed cases (softmax,
products, gates, LayerNorm, unfolded BatchNorm, attention), conservation through tensor
operations and shape arithmetic, user-registered rules."""

from __future__ import annotations

import math
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hudd_core.lrp import LRP, Composite, UnsupportedOperation, capture, get_composite
from hudd_core.lrp.attention import matmul_relevance
from hudd_core.lrp.oprules import BoundedSum, OpRule, Pass

D = torch.float64


class _Ops(nn.Module):
    """Module and functional activations, gates, tensor ops and shape arithmetic."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1, bias=False)
        self.act = nn.ReLU6(inplace=True)
        self.gate_fc = nn.Conv2d(8, 8, 1, bias=False)
        self.gate = nn.Hardsigmoid()
        self.scale = nn.Parameter(torch.full((8, 1, 1), 0.5))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fc = nn.Linear(8 * 4, 3, bias=False)

    def forward(self, x):
        torch._assert(x.dim() == 4, "4-d input")
        b, _, h, w = x.size()
        h1 = F.silu(self.conv(x))
        h1 = self.act(F.gelu(h1) + F.hardswish(h1))
        g = self.gate(self.gate_fc(h1.mean((2, 3), keepdim=True)))
        h1 = h1 * g  # squeeze-and-excitation
        h1 = self.scale * h1  # layer scale
        a, bb = h1.chunk(2, dim=1)
        h1 = torch.cat([bb, a], dim=1).view(b, 2, 4, h, w).transpose(1, 2).reshape(b, 8, h, w)
        h1 = h1.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        h1 = F.avg_pool2d(self.up(h1), 2) + F.interpolate(h1, scale_factor=1.0)
        h1 = F.adaptive_avg_pool2d(h1, (2, 2))[:, :, :, :]
        h1 = torch.stack([h1, h1.tanh()], dim=0).sum(0)
        return self.fc(h1.flatten(1).unsqueeze(1).squeeze(1)) * (h // h)


def test_tensor_ops_and_activations_conserve():
    torch.manual_seed(0)
    model = _Ops().double().eval()
    x = torch.rand(2, 2, 6, 6, dtype=D)
    lrp = LRP(model, "epsilon-plus", epsilon=1e-12, stabilizer=1e-12)
    rel = lrp(x)
    torch.testing.assert_close(lrp.forward(x), model(x))
    logit = model(x).max(dim=1).values
    torch.testing.assert_close(rel["input"].flatten(1).sum(1), logit, rtol=1e-6, atol=0)
    # the gate is held constant: none of the relevance goes through its branch
    assert float(rel["gate_fc"].abs().max()) == 0.0
    assert {"conv", "act", "gate", "up", "fc"} <= set(lrp.layers)


def test_inplace_activations_do_not_corrupt_the_backward():
    torch.manual_seed(1)
    seq = [nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Hardswish(), nn.Flatten(),
           nn.Linear(64, 3)]  # fmt: skip
    plain = nn.Sequential(*seq).double().eval()
    inplace = nn.Sequential(seq[0], nn.ReLU(inplace=True), seq[2], nn.Hardswish(inplace=True),
                            seq[4], seq[5]).double().eval()  # fmt: skip
    x = torch.rand(2, 1, 8, 8, dtype=D)
    a, b = LRP(plain)(x), LRP(inplace)(x)
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    assert isinstance(inplace[1], nn.ReLU) and inplace[1].inplace  # the model is untouched


def _single(module: nn.Module, x, start):
    return LRP(module, "epsilon-plus", epsilon=0.0, stabilizer=0.0)(x, start=start)["input"]


class _Softmax(nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=1)


def test_softmax_rule_by_hand():
    # x = [0, ln 3]: s = [1/4, 3/4]; r = [1, 0]: R_i = x_i (r_i - s_i sum r) = [0, -3/4 ln 3]
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=D)
    got = _single(_Softmax(), x, torch.tensor([[1.0, 0.0]], dtype=D))
    torch.testing.assert_close(got, torch.tensor([[0.0, -0.75 * math.log(3.0)]], dtype=D))


def test_matmul_uniform_rule_by_hand():
    # z = a @ v = 0.25 * 2 + 0.75 * 4 = 3.5; r = 1: contributions 0.5 / 3.5 and 3 / 3.5,
    # each halved between the two factors
    a, v = torch.tensor([[[0.25, 0.75]]], dtype=D), torch.tensor([[[2.0], [4.0]]], dtype=D)
    ra, rv = matmul_relevance(a, v, torch.ones(1, 1, 1, dtype=D), 0.0)
    torch.testing.assert_close(ra, torch.tensor([[[0.25 / 3.5, 1.5 / 3.5]]], dtype=D))
    torch.testing.assert_close(rv, torch.tensor([[[0.25 / 3.5], [1.5 / 3.5]]], dtype=D))


class _Bilinear(nn.Module):
    def forward(self, x):
        return (x[:, :2].unsqueeze(1) @ x[:, 2:].unsqueeze(-1)).squeeze(-1)


def test_product_rule_in_the_graph_matches_by_hand():
    # z = x0 x2 + x1 x3 with x = [1, 2, 3, 4]: z = 11; each factor gets half its term's share
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=D)
    got = _single(_Bilinear(), x, torch.ones(1, 1, dtype=D))
    torch.testing.assert_close(got, torch.tensor([[3, 8, 3, 8]], dtype=D) / 22)


def test_layernorm_rule_by_hand():
    # x = [1, 3]: mean 2, sigma 1 (eps 0): y = [-1, 1]; r = [1, 0]: s = r / y = [-1, 0];
    # R = x / sigma * (s - mean s) = [1 * (-1 + 0.5), 3 * (0 + 0.5)] = [-0.5, 1.5]
    ln = nn.LayerNorm(2, eps=0.0).double()
    got = _single(nn.Sequential(ln), torch.tensor([[1.0, 3.0]], dtype=D),
                  torch.tensor([[1.0, 0.0]], dtype=D))  # fmt: skip
    torch.testing.assert_close(got, torch.tensor([[-0.5, 1.5]], dtype=D))


def test_groupnorm_conserves_without_shift():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.GroupNorm(2, 4), nn.Flatten(),
                          nn.Linear(36, 2, bias=False)).double().eval()  # fmt: skip
    nn.init.zeros_(model[1].bias)
    nn.init.uniform_(model[1].weight, 0.5, 1.5)
    x = torch.rand(3, 1, 5, 5, dtype=D)
    rel = LRP(model, "epsilon-plus", epsilon=1e-12, stabilizer=1e-12)(x)
    logit = model(x).max(dim=1).values
    torch.testing.assert_close(rel["input"].flatten(1).sum(1), logit, rtol=1e-8, atol=0)


def test_unfolded_batchnorm_by_hand():
    # BN first (nothing to fold into): scale 1 / sqrt(4) = 0.5, shift -1 * 0.5;
    # x = 3: z = 1; R = 0.5 * 3 * r / z = 1.5 (the negative shift's share is negative)
    bn = nn.BatchNorm1d(1, eps=0.0).double().eval()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    got = _single(nn.Sequential(bn), torch.tensor([[3.0]], dtype=D), torch.ones(1, 1, dtype=D))
    torch.testing.assert_close(got, torch.tensor([[1.5]], dtype=D))


class _FunctionalAttention(nn.Module):
    """One head of attention written out (graph walker: Product and Softmax rules)."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        m = self.mha
        wq, wk, wv = m.in_proj_weight.chunk(3)
        q, k, v = F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return F.linear(attn @ v, m.out_proj.weight).sum(dim=1)


class _ModuleAttention(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0].sum(dim=1)


def test_attention_module_equals_the_graph_rules():
    """nn.MultiheadAttention (traced under the LRP function mode) and the same attention
    written out (graph walker) are two implementations of the AttnLRP rules."""
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(4, 1, bias=False, batch_first=True).double().eval()
    x = torch.randn(2, 3, 4, dtype=D)
    a = LRP(_ModuleAttention(mha), "epsilon-plus")(x)
    b = LRP(_FunctionalAttention(mha), "epsilon-plus")(x)
    torch.testing.assert_close(_ModuleAttention(mha)(x), _FunctionalAttention(mha)(x))
    torch.testing.assert_close(a["input"], b["input"])
    assert float(a["input"].abs().max()) > 0


def test_attention_by_hand():
    """One query, two keys, identity projections: relevance by the paper's formulas."""
    mha = nn.MultiheadAttention(1, 1, bias=False, batch_first=True).double().eval()
    with torch.no_grad():
        mha.in_proj_weight.fill_(1.0)
        mha.out_proj.weight.fill_(1.0)
    x = torch.tensor([[[1.0], [2.0]]], dtype=D)
    got = LRP(_ModuleAttention(mha), "epsilon-plus", epsilon=0.0, stabilizer=0.0)(
        x, start=torch.ones(1, 1, dtype=D)
    )["input"][0, :, 0]
    # logits l_ij = x_i x_j, attention s_ij = softmax_j(l_ij), outputs o_i = sum_j s_ij x_j,
    # summed: start 1 gives o_i / sum(o) to o_i (Norm), each term s_ij x_j its share of
    # that; the uniform rule halves it between s_ij and v_j = x_j; the softmax rule on
    # s; the uniform rule again on l_ij = q_i k_j.
    xs = x[0, :, 0]
    logits = xs[:, None] * xs[None, :]
    s = torch.softmax(logits, dim=1)
    o = s @ xs
    contrib = s * xs[None, :]  # (i, j)
    rel_terms = contrib / o.sum()
    r_v = 0.5 * rel_terms.sum(0)  # to v_j = x_j
    r_s = 0.5 * rel_terms  # to s_ij
    r_l = logits * (r_s - s * r_s.sum(1, keepdim=True))  # softmax rule
    r_q = 0.5 * r_l.sum(1)  # q_i = x_i
    r_k = 0.5 * r_l.sum(0)  # k_j = x_j
    torch.testing.assert_close(got, r_v + r_q + r_k)


class _TokensWithClassToken(nn.Module):
    """ViT's input side: a class token in front, then torchvision's own ``Encoder`` (its
    position-embedding addition and dropout; no blocks, no final LayerNorm), read out as
    the sum over tokens."""

    def __init__(self):
        super().__init__()
        from torchvision.models.vision_transformer import Encoder

        self.class_token = nn.Parameter(torch.tensor([[[0.5]]], dtype=D))
        self.encoder = Encoder(3, 0, 1, 1, 1, 0.0, 0.0).double()
        self.encoder.ln = nn.Identity()
        with torch.no_grad():
            self.encoder.pos_embedding.copy_(torch.tensor([[[0.25], [1.0], [-0.5]]]))

    def forward(self, x):
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.encoder(tokens).sum(dim=1)


def test_position_embedding_and_class_token_by_hand():
    """AttnLRP treats both as bias-like constants: the class token's slot and the
    position embedding keep their share, the patches get the rest."""
    x = torch.tensor([[[1.0], [2.0]]], dtype=D)  # two patch tokens, one feature
    got = _single(_TokensWithClassToken().eval(), x, torch.ones(1, 1, dtype=D))
    # tokens [0.5, 1, 2] + pos [0.25, 1, -0.5] = h [0.75, 2, 1.5], sum 4.25; the sum's
    # Norm rule gives token i h_i / 4.25, the addition's gives the patch part x_i / 4.25
    # of that, and the concatenation drops the constant class token's 0.5 / 4.25
    torch.testing.assert_close(got, torch.tensor([[[1.0], [2.0]]], dtype=D) / 4.25)
    torch.testing.assert_close(got.sum(), torch.tensor(1 - (0.5 + 0.75) / 4.25, dtype=D))


class _Halves(nn.Module):
    def forward(self, x):
        return x[:, :5] + x[:, 5:]


class _Shift(nn.Module):
    """``f(x) + 1``, ``f`` the identity map as a linear layer (the epsilon rule passes
    relevance through it unchanged; a shift of the pixels themselves passes all of it)."""

    def __init__(self):
        super().__init__()
        self.f = nn.Linear(2, 2, bias=False)
        nn.init.eye_(self.f.weight)

    def forward(self, x):
        return self.f(x) + 1.0


def _bounded(module: nn.Module, x, start):
    comp = get_composite("epsilon-plus", epsilon=0.0, stabilizer=0.0)
    comp.register_function([operator.add, torch.add, "add"], BoundedSum(0.0, tau=0.5))
    return LRP(module, comp)(x, start=start)["input"]


def test_bounded_sum_by_hand():
    """tau = 0.5: R_a = r (a z + |a| S / 4) / (z^2 + S^2 / 4), z = a + b, S = |a| + |b|."""
    # (a, b) = (1, -0.5): z = 1/2, S = 3/2, z^2 + S^2/4 = 13/16: R_a = (1/2 + 3/8) 16/13 =
    # 14/13, R_b = (-1/4 + 3/16) 16/13 = -1/13 (Norm: 2 and -1). (1, -1): z = 0, S = 2:
    # 1/2 each (Norm: unbounded). (2, 3), one sign: Norm's 2/5, 3/5. (0, 0): nothing.
    # (-3, 1) with r = 2: z = -2, S = 4, 4 + 4 = 8: R_a = 2 (6 + 3) / 8 = 9/4, R_b =
    # 2 (-2 + 1) / 8 = -1/4
    x = torch.tensor([[1.0, 1.0, 2.0, 0.0, -3.0, -0.5, -1.0, 3.0, 0.0, 1.0]], dtype=D)
    r = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0]], dtype=D)
    got = _bounded(_Halves(), x, r)
    want = [14 / 13, 0.5, 0.4, 0.0, 9 / 4, -1 / 13, 0.5, 0.6, 0.0, -1 / 4]
    torch.testing.assert_close(got, torch.tensor([want], dtype=D))
    # x + 1 with x = -0.8: z = 0.2, S = 1.8, z^2 + S^2/4 = 0.85: R_x = (-0.16 + 0.36) / 0.85
    # = 4/17; the constant keeps 13/17. x = 3: Norm's 3/4.
    got = _bounded(
        _Shift().double(), torch.tensor([[-0.8, 3.0]], dtype=D), torch.ones(1, 2, dtype=D)
    )
    torch.testing.assert_close(got, torch.tensor([[4 / 17, 0.75]], dtype=D))


def test_bounded_sum_conserves_and_is_bounded():
    """Random signed operands: the two shares sum to r, and each is at most the golden
    ratio times |r| (the maximum of (t + 1/4) / (t^2 + 1/4) over t in [0, 1])."""
    torch.manual_seed(3)
    x = torch.randn(64, 10, dtype=D)
    x[:, 5:] = -x[:, :5] * (1 + 1e-3 * torch.randn(64, 5, dtype=D))  # near cancellation
    x[:32] = torch.randn(32, 10, dtype=D)
    r = torch.randn(64, 5, dtype=D)
    got = _bounded(_Halves(), x, r)
    torch.testing.assert_close(got[:, :5] + got[:, 5:], r)
    bound = (1 + 5**0.5) / 2 * r.abs().repeat(1, 2)
    assert bool((got.abs() <= bound * (1 + 1e-12)).all())


class _Attend(nn.Module):
    """A residual block around a softmax attention (or around a plain linear layer)."""

    def __init__(self, attend: bool):
        super().__init__()
        self.attend, self.fc = attend, nn.Linear(4, 4, bias=False)

    def forward(self, x):
        h = self.fc(x)
        if self.attend:
            h = torch.softmax(h @ h.transpose(1, 2), dim=-1) @ h
        return self.fc(x + h).sum(1)


def test_additions_are_bounded_where_a_rule_loses_relevance():
    """The default composite gives additions BoundedSum in a graph with AttnLRP's softmax
    rule, Norm elsewhere (and where attention is held constant)."""
    from hudd_core.lrp.composites import constant_attention

    def adds(model, comp="hudd"):
        return {op.kind for op in capture(model, comp).ops if op.target in (operator.add, "add")}

    assert adds(_Attend(True)) == {"BoundedSum"}
    assert adds(_Attend(False)) == {"Norm"}
    assert adds(_Attend(True), constant_attention(get_composite("hudd"))) == {"Norm"}
    assert adds(_Attend(True), "epsilon-plus") == {"Norm"}  # as Zennit defines it


class _Custom(nn.Module):
    """A user's layer with an operation the registry does not know."""

    def forward(self, x):
        return torch.cumsum(x, dim=1)


class _WithCustom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3, bias=False)
        self.custom = _Custom()
        self.head = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.head(self.custom(self.fc(x)))


class _Half(OpRule):
    """A user's rule: half of the relevance passes."""

    def propagate(self, call, r, out=None):
        return [r / 2]


def test_user_rules_by_type_and_by_name():
    torch.manual_seed(4)
    model = _WithCustom().double().eval()
    x = torch.rand(2, 3, dtype=D)
    with pytest.raises(UnsupportedOperation, match="cumsum"):
        capture(model)
    by_type = get_composite("epsilon-plus").register_module(_Custom, Pass())
    full = LRP(model, by_type)(x)
    assert "custom" in full
    by_name = get_composite("epsilon-plus").register_name("custom", _Half())
    half = LRP(model, by_name)(x)
    torch.testing.assert_close(half["input"], full["input"] / 2)
    comp = get_composite("epsilon-plus").register_function(torch.cumsum, Pass(record=False))
    torch.testing.assert_close(LRP(model, comp)(x)["input"], full["input"])


def test_canonizers_are_pluggable():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(18, 2))
    model = model.double().eval()
    folded = capture(model)
    assert folded.ops[1].bn is model[1] and folded.ops[2].kind == "Folded"
    comp = Composite("plain", *(get_composite("hudd").rule_for(k) for k in ("conv", "linear")),
                     get_composite("hudd").norm, canonizers=[])  # fmt: skip
    unfolded = capture(model, comp)
    assert unfolded.ops[1].bn is None and unfolded.ops[2].kind == "ChannelAffine"
    x = torch.rand(2, 1, 5, 5, dtype=D)
    a, b = LRP(model)(x), LRP(model, comp)(x)
    torch.testing.assert_close(a["input"], b["input"])  # folding is exact for LRP-0 here


@pytest.mark.parametrize("name", ["mobilenet", "vit"])
def test_small_builtin_models(name):
    """The zoo's MobileNetV3-style and ViT builders: trainable on 32x32 grayscale images,
    LRP runs on them (the mobile net conserves without biases; attention does not)."""
    from hudd_core.models.zoo import BUILTIN

    torch.manual_seed(5)
    model = BUILTIN[name](4, 1, 32).double()
    x = torch.rand(3, 1, 32, 32, dtype=D)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model.train()(x), torch.tensor([0, 1, 2]))
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    for m in model.modules():
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.MultiheadAttention):
            nn.init.zeros_(m.in_proj_bias)
        if isinstance(m, nn.BatchNorm2d):  # no shift
            m.running_mean.zero_()
    rel = LRP(model)(x)
    assert all(bool(torch.isfinite(v).all()) for v in rel.values())
    if name == "mobilenet":
        ratio = rel["input"].flatten(1).sum(1) / model(x).max(dim=1).values
        torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=0.01)
