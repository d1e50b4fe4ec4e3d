"""Attention and other opaque blocks: LRP as a modified gradient through their code.

``nn.MultiheadAttention`` (ViT), torchvision's fx-wrapped ``shifted_window_attention``
(Swin) and similar blocks are single graph nodes whose inside the graph walker does not
see. :class:`Traced` runs such a block's own code under a ``TorchFunctionMode`` that swaps
every relevance-carrying operation for an autograd function whose backward is its LRP rule
(relevance travels as the "gradient"; the approach of Achtibat et al.'s LXT library), so one
``autograd.grad`` gives the block's input relevance. The rules are AttnLRP's (Achtibat et
al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML
2024):

- linear projections: the epsilon rule (``R_i = x_i sum_j w_ji R_j / stab(z_j)``), a bias
  keeping its share;
- ``q @ k^T``, ``attn @ v`` (two relevance-carrying factors): the uniform rule, each factor
  gets half of the epsilon-rule relevance (Prop. 3.3);
- softmax: ``R_i = x_i (R_i - s_i sum_j R_j)`` (Prop. 3.1);
- element-wise non-linearities and normalisations by a norm: the identity rule;
- additions (relative position bias, attention masks): Norm, constants keep their share;
- views, permutations, indexing, padding, rolls: relevance follows the values.

An operation on relevance-carrying values outside these raises
:class:`~hudd_core.lrp.graph.UnsupportedOperation`-like ``ValueError`` naming it.

Example (one head, hand-checkable: the uniform rule halves what reaches ``v``):
    >>> import torch
    >>> a, v = torch.tensor([[[0.25, 0.75]]]), torch.tensor([[[2.0], [4.0]]])
    >>> ra, rv = matmul_relevance(a, v, torch.tensor([[[1.0]]]), eps=0.0)
    >>> ra.tolist(), rv.tolist()
    ([[[0.0714..., 0.4285...]]], [[[0.0714...], [0.4285...]]])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from hudd_core.lrp import kernels as K
from hudd_core.lrp.oprules import Call, OpRule, _flat

# Tensor methods / functions that only move values: autograd's own gradient is the rule.
_COPIES = {"view", "reshape", "permute", "transpose", "contiguous", "__getitem__", "unflatten",
           "flatten", "squeeze", "unsqueeze", "expand", "expand_as", "chunk", "split",
           "unbind", "clone", "select", "narrow", "masked_fill", "roll", "repeat", "t",
           torch.cat, torch.stack, torch.roll, torch.flatten, torch.reshape, torch.permute,
           torch.transpose, torch.chunk, torch.split, torch.unbind, F.pad, torch.squeeze,
           torch.unsqueeze, torch.narrow}  # fmt: skip
_PASS = {F.relu, F.gelu, F.silu, F.dropout, F.normalize, torch.sigmoid, torch.tanh, "relu",
         "gelu", "sigmoid", "tanh", "clamp", torch.clamp, "to", "float", "type_as"}  # fmt: skip
_NORM = {"add", "sub", "div", "__add__", "__radd__", "__sub__", "__truediv__", "sum", "mean",
         torch.add, torch.sub, torch.div, torch.sum, torch.mean}  # fmt: skip
_PRODUCTS = {"mul", "__mul__", "__rmul__", "matmul", "__matmul__", "bmm", torch.mul,
             torch.matmul, torch.bmm, F.linear, torch.baddbmm, "baddbmm"}  # fmt: skip


def _key(func):
    """A tensor method as its name, anything else as itself."""
    name = getattr(func, "__name__", None)
    if name and getattr(torch.Tensor, name, None) is func:
        return name
    return func


def _vjp(fn, xs, live, grad):
    ins = [x.detach().requires_grad_() if on else x for x, on in zip(xs, live, strict=True)]
    with torch.enable_grad():
        out = fn(*ins)
    wanted = [x for x, on in zip(ins, live, strict=True) if on]
    got = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True))
    return [next(got) if on else None for on in live]


def _linear_vjp(xs, s, live):
    """``J^T s`` of ``F.linear(x, w[, b])`` with respect to ``x`` alone (``w`` constant)."""
    return [s @ xs[1]] + [None] * (len(xs) - 1)


def _matmul_vjp(xs, s, live):
    """``J^T s`` of ``a @ b`` with respect to both factors (same batch dimensions)."""
    a, b = xs
    return [s @ b.transpose(-2, -1), a.transpose(-2, -1) @ s]


class _Rule(torch.autograd.Function):
    """``fn(*xs)`` forward; backward: ``kind`` maps the output relevance to the inputs'.
    ``jt(xs, s, live)``, when given, is the transposed Jacobian in closed form (else it is
    taken by re-running ``fn`` under autograd)."""

    @staticmethod
    def forward(ctx, kind, fn, eps, jt, *xs):
        ctx.kind, ctx.fn, ctx.eps, ctx.jt = kind, fn, eps, jt
        out = fn(*xs)
        ctx.save_for_backward(*xs, out)
        return out

    @staticmethod
    def backward(ctx, r):
        *xs, out = ctx.saved_tensors
        live = list(ctx.needs_input_grad[4:])
        if ctx.kind == "pass":
            first = live.index(True)
            res = [r if i == first else None for i in range(len(xs))]
        elif ctx.kind == "softmax":
            res = [xs[0] * (r - out * r.sum(dim=ctx.fn.dim, keepdim=True))]
        else:  # norm / product: x_k * J_k^T (r / stab(z)), products split uniformly
            share = 1.0 / sum(live) if ctx.kind == "product" else 1.0
            s = K.stabilized_divide(r.contiguous(), out.contiguous(), ctx.eps, share)
            grads = (ctx.jt or _vjp_of(ctx.fn))(xs, s, live)
            fresh = ctx.jt is not None  # autograd's gradients may alias each other or s
            pairs = zip(xs, grads, strict=True)
            res = [None if g is None else _times(x, g, fresh) for x, g in pairs]
        return (None, None, None, None, *res)


def _times(x: torch.Tensor, g: torch.Tensor, fresh: bool) -> torch.Tensor:
    """``x * g``, into ``g`` when it is ``fresh`` (ours alone) and the shapes allow."""
    if fresh and g.shape == torch.broadcast_shapes(x.shape, g.shape) and g.dtype == x.dtype:
        return g.mul_(x)
    return x * g


def _vjp_of(fn):
    return lambda xs, s, live: _vjp(fn, xs, live, s)


class _Softmax:
    def __init__(self, dim: int):
        self.dim = dim

    def __call__(self, x):
        return torch.softmax(x, self.dim)


def matmul_relevance(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, eps: float):
    """AttnLRP's uniform rule for ``z = a @ b``: ``R_a = a * ((r / stab(z)) @ b^T) / 2`` and
    ``R_b = b * (a^T @ (r / stab(z))) / 2``."""
    s = r / K.stab(a @ b, eps)
    return a * (s @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ s) / 2


def _requires_grad(v) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in _flat(v))


class _LRPMode(TorchFunctionMode):
    """Swaps relevance-carrying operations for their LRP autograd functions."""

    def __init__(self, eps: float, where: str, constant_softmax: bool = False):
        super().__init__()
        self.eps, self.where, self.constant = eps, where, constant_softmax

    def _softmax(self, x, dim):
        if self.constant:  # CP-LRP: the attention weights are held constant
            return torch.softmax(x.detach(), dim)
        return _Rule.apply("softmax", _Softmax(dim), self.eps, None, x)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        key = _key(func)
        live = [_requires_grad(a) for a in args] + [_requires_grad(v) for v in kwargs.values()]
        if not any(live) or key in _COPIES:
            return func(*args, **kwargs)
        if isinstance(key, str) and key.endswith("_") and not key.startswith("_"):
            raise ValueError(f"LRP cannot follow the in-place operation {key} ({self.where})")
        if key is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        if key in ("softmax",) or key in (F.softmax, torch.softmax):
            return self._softmax(args[0], args[1] if len(args) > 1 else kwargs["dim"])
        kind = "pass" if key in _PASS else "norm" if key in _NORM else None
        kind = "product" if key in _PRODUCTS else kind
        if kind is None:
            out = func(*args, **kwargs)
            if _requires_grad(out):
                name = key if isinstance(key, str) else getattr(func, "__name__", str(func))
                raise ValueError(f"LRP has no rule for {name} inside {self.where}")
            return out
        return self._apply(kind, func, args, kwargs)

    def _apply(self, kind, func, args, kwargs):
        """``func`` with its top-level tensor arguments as the autograd inputs."""
        slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
        n_live = sum(args[i].requires_grad for i in slots) + sum(
            kwargs[k].requires_grad for k in names
        )
        if kind == "product" and n_live == 1:
            kind = "norm"  # a constant factor: the epsilon rule

        def fn(*ts):
            a = list(args)
            for i, t in zip(slots, ts, strict=False):
                a[i] = t
            kw = {**kwargs, **dict(zip(names, ts[len(slots) :], strict=True))}
            return func(*a, **kw)

        ts = [args[i] for i in slots] + [kwargs[k] for k in names]
        return _Rule.apply(kind, fn, self.eps, _closed_form(func, ts, kwargs), *ts)

    def _attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):  # fmt: skip
        """``scaled_dot_product_attention`` spelled out with the AttnLRP rules."""
        if is_causal or enable_gqa:
            raise ValueError(f"LRP supports non-causal attention only ({self.where})")
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        kt = k.transpose(-2, -1)
        logits = _Rule.apply("product", torch.matmul, self.eps,
                             _closed_form(torch.matmul, [q, kt], {}), q, kt)  # fmt: skip
        logits = _Rule.apply("pass", lambda t: t * scale, self.eps, None, logits)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            else:
                logits = _Rule.apply("norm", torch.add, self.eps, None, logits, attn_mask)
        attn = self._softmax(logits, -1)
        return _Rule.apply("product", torch.matmul, self.eps,
                           _closed_form(torch.matmul, [attn, v], {}), attn, v)  # fmt: skip


_MATMULS = {torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.bmm,
            torch.Tensor.__matmul__}  # fmt: skip


def _closed_form(func, ts: list, kwargs: dict):
    """The closed-form transposed Jacobian of the two hot products of attention blocks
    (a linear projection with constant weights, a matrix product of two relevance-carrying
    factors without broadcasting), else ``None``: saves re-running them in the backward."""
    live = [t.requires_grad for t in ts]
    if func is F.linear and not kwargs and live[0] and not any(live[1:]):
        return _linear_vjp
    if (func in _MATMULS and len(ts) == 2 and all(live) and min(t.dim() for t in ts) >= 2
            and ts[0].shape[:-2] == ts[1].shape[:-2]):  # fmt: skip
        return _matmul_vjp
    return None


def _detached(v):
    return v.detach() if isinstance(v, torch.Tensor) else v


def _run_constant_params(call: Call, live: list[torch.Tensor], function: Callable | None):
    """The op on ``live`` inputs with every parameter and constant detached (they are no
    relevance-carrying inputs, whatever their ``requires_grad``)."""
    op = call.op
    env = {n.name: _detached(call.env[n.name]) for n in op.node.all_input_nodes}
    env.update(zip(op.args, live, strict=True))
    if op.module is None:
        return op.evaluate(env)
    args, kwargs = op.evaluate_args(env), op.evaluate_kwargs(env)
    if function is not None:
        return function(op.module, *args, **kwargs)
    params = {k: v.detach() for k, v in op.module.named_parameters()}
    params.update({k: v.detach() for k, v in op.module.named_buffers()})
    return torch.func.functional_call(op.call.__self__, params, args, kwargs)


def multihead_attention(m: torch.nn.MultiheadAttention, query, key, value,
                        key_padding_mask=None, need_weights=True, attn_mask=None,
                        average_attn_weights=True, is_causal=False):  # fmt: skip
    """``nn.MultiheadAttention``'s forward in primitive operations (projections, heads,
    ``scaled_dot_product_attention``, output projection), parameters detached; the
    attention weights are not returned. Masks, ``bias_k``/``bias_v`` and zero attention
    are not supported."""
    if (key_padding_mask is not None or attn_mask is not None or is_causal
            or m.bias_k is not None or m.add_zero_attn):  # fmt: skip
        raise ValueError("LRP supports nn.MultiheadAttention without masks, bias_k/bias_v "
                         "and add_zero_attn")  # fmt: skip
    q, k, v = (t.transpose(0, 1) if m.batch_first else t for t in (query, key, value))
    n_q, batch, embed = q.shape
    heads = m.num_heads
    if m._qkv_same_embed_dim:
        ws = m.in_proj_weight.detach().chunk(3)
    else:
        ws = (m.q_proj_weight.detach(), m.k_proj_weight.detach(), m.v_proj_weight.detach())
    bs = (None,) * 3 if m.in_proj_bias is None else m.in_proj_bias.detach().chunk(3)
    q, k, v = (
        F.linear(t, w, b).reshape(t.shape[0], batch, heads, -1).permute(1, 2, 0, 3)
        for t, w, b in zip((q, k, v), ws, bs, strict=True)
    )
    o = F.scaled_dot_product_attention(q, k, v).permute(2, 0, 1, 3).reshape(n_q, batch, embed)
    bias = None if m.out_proj.bias is None else m.out_proj.bias.detach()
    o = F.linear(o, m.out_proj.weight.detach(), bias)
    return (o.transpose(0, 1) if m.batch_first else o), None


@dataclass
class Traced(OpRule):
    """LRP through an opaque block's own code (attention modules, fx-wrapped functions);
    see the module docstring for the rules. ``function(module, *args, **kwargs)``, when
    given, is run instead of the module's forward (same result, primitive operations).
    ``constant_softmax``: attention weights held constant (CP-LRP, Ali et al., ICML 2022)
    instead of AttnLRP's softmax rule: all relevance goes to the values, conservative."""

    stabilizer: float = 1e-6
    record: bool = True
    function: Callable | None = None
    constant_softmax: bool = False

    @property
    def lossy(self) -> bool:  # type: ignore[override]
        return not self.constant_softmax

    def _traced(self, call: Call) -> tuple[list, object]:
        """The block run under the LRP mode: its detached-input leaves and its outputs,
        which carry the rules' autograd graph."""
        ins = [x.detach().requires_grad_() for x in call.inputs]
        where = f"{call.op.qualname or call.op.name!r}"
        with torch.enable_grad(), _LRPMode(self.stabilizer, where, self.constant_softmax):
            return ins, _run_constant_params(call, ins, self.function)

    def forward(self, call: Call):
        # The forward pass already runs the block under the rules and keeps its graph, so
        # the relevance pass is one backward through it (no second forward of the block).
        ins, outs = self._traced(call)
        call.saved[call.op.name] = (ins, outs)
        if isinstance(outs, tuple | list):
            return type(outs)(_detached(o) for o in outs)
        return _detached(outs)

    def propagate(self, call: Call, r, out=None):
        ins, outs = call.saved.pop(call.op.name, None) or self._traced(call)
        outs = _flat(outs)
        with torch.enable_grad():
            pairs = [(o, g) for o, g in zip(outs, _flat(r), strict=False) if g is not None]
            pairs = [(o, g) for o, g in pairs if isinstance(o, torch.Tensor) and o.requires_grad]
            if not pairs:
                return [None] * len(ins)
            got = torch.autograd.grad(
                [o for o, _ in pairs], ins, [g for _, g in pairs], allow_unused=True
            )
        return list(got)


def Attention(stabilizer: float = 1e-6, constant_softmax: bool = False) -> Traced:
    """The rule of ``nn.MultiheadAttention``: :class:`Traced` through
    :func:`multihead_attention`."""
    return Traced(stabilizer, function=multihead_attention, constant_softmax=constant_softmax)
