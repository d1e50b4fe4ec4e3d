"""Rules for every graph operation besides convolutions and linear layers.

A rule is an object with three methods (:class:`OpRule`), the protocol the engine walks:

- ``setup(op, dtype, device)``: per-op state derived once (e.g. folded weights);
- ``forward(call)``: the op's output (default: the op itself; a rule may keep what its
  backward needs in ``call.saved``);
- ``propagate(call, r, out)``: the relevance of each of the op's relevance-carrying inputs
  (``call.op.args``) from the relevance ``r`` at its output. ``out``, when given, is the
  first input's relevance so far; a rule with ``fresh = True`` may add into it and return it.

Families here, each one a rule object a composite maps op types to:

- :class:`Pass`: relevance unchanged (element-wise activations, dropout, identity; the
  identity rule of AttnLRP for element-wise non-linearities);
- :class:`Copy`: operations that only move values (views, permutations, indexing, splits,
  concatenation, padding, max pooling as winner-take-all): relevance follows the values,
  the gradient at ``r``; the slot of a constant concatenated in (ViT's class token) keeps
  its relevance, as AttnLRP treats it: a bias-like input;
- :class:`Norm`: linear maps without weights of their own (sums, means, average pooling,
  interpolation, residual additions): ``R_k = x_k * J_k^T (r / stab(z))`` (Zennit's Norm);
  a constant operand (a position embedding) keeps its share, AttnLRP's bias-like term;
- :class:`Product`: products of two relevance-carrying tensors (element-wise ``*``,
  ``matmul``): AttnLRP's uniform rule, each factor gets an equal share of the epsilon-rule
  relevance, and multiplicative gates (sigmoid outputs) are held constant;
- :class:`ChannelAffine`: BatchNorm that is not folded: the epsilon rule on ``s x + t``;
- :class:`Normalization`, :class:`Softmax`: the AttnLRP rules (Achtibat et al., "AttnLRP:
  Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML 2024).

Example:
    >>> import torch
    >>> from hudd_core.lrp import LRP
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False), torch.nn.SiLU())
    >>> _ = torch.nn.init.ones_(net[0].weight)
    >>> rel = LRP(net)(torch.rand(1, 3), start=torch.ones(1, 2))
    >>> round(float(rel["input"].sum()), 4)  # everything reaches the input
    2.0
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from hudd_core.lrp import kernels as K


class Call:
    """One op of one batch: its inputs, output and saved values, as rules see them."""

    __slots__ = ("env", "op", "saved", "state")

    def __init__(self, op, env: dict, state: Any, saved: dict) -> None:
        self.op, self.env, self.state, self.saved = op, env, state, saved

    @property
    def inputs(self) -> list:
        """The values of the relevance-carrying inputs, in ``op.args`` order."""
        return [self.env[a] for a in self.op.args]

    @property
    def output(self):
        return self.env[self.op.name]

    def evaluate(self, *live):
        """The op on its recorded arguments, ``live`` replacing its relevance-carrying
        inputs (used to re-run an op under autograd)."""
        return self.op.evaluate(self.env, dict(zip(self.op.args, live, strict=True)))


class OpRule:
    """Base class of the rule protocol (see the module docstring)."""

    record = True  # recorded by default when the op is a named module
    gate = False  # the output is a multiplicative gate (held constant by Product)
    fresh = False  # propagate returns new tensors (the engine may add into them)
    lossy = False  # loses relevance by design, biases zeroed (AttnLRP's softmax rule)

    def setup(self, op, dtype: torch.dtype, device: torch.device) -> Any:
        return None

    def forward(self, call: Call):
        return call.evaluate(*call.inputs)

    def propagate(self, call: Call, r, out: torch.Tensor | None = None) -> list:
        raise NotImplementedError


def _flat(values) -> list:
    return list(values) if isinstance(values, tuple | list) else [values]


def vjp(call: Call, grads) -> list:
    """The op's transposed Jacobian at ``grads`` (one per output, ``None`` for none), one
    entry per relevance-carrying input (``None`` where no gradient reaches it)."""
    ins = [t.detach().requires_grad_() for t in call.inputs]
    with torch.enable_grad():
        outs = _flat(call.evaluate(*ins))
    pairs = [(o, g) for o, g in zip(outs, _flat(grads), strict=True) if g is not None]
    pairs = [(o, g) for o, g in pairs if o.requires_grad]
    if not pairs:
        return [None] * len(ins)
    got = torch.autograd.grad(
        [o for o, _ in pairs], ins, [g.to(o.dtype) for o, g in pairs], allow_unused=True
    )
    return list(got)


@dataclass
class Pass(OpRule):
    """Relevance passes unchanged (AttnLRP's identity rule for element-wise maps).

    ``record``: recorded by default (activations) or not (dropout, identity);
    ``gate``: the op's output is a multiplicative gate (sigmoid, hard sigmoid)."""

    record: bool = True
    gate: bool = False

    def propagate(self, call, r, out=None):
        return [r] + [None] * (len(call.op.args) - 1)


@dataclass
class Folded(Pass):
    """An op whose work another op has taken over (a BatchNorm folded into the layer
    before it): it returns its input, relevance passes, nothing is recorded."""

    record: bool = False

    def forward(self, call):
        return call.inputs[0]


_RESHAPES = {"view", "reshape", "flatten", "contiguous", "unsqueeze", "squeeze", "unflatten"}
_RESHAPES_FN = {torch.flatten, torch.reshape, torch.unsqueeze, torch.squeeze}


@dataclass
class Copy(OpRule):
    """Operations that move values without changing them: the relevance of each output
    element goes to the input element it copies (the gradient at ``r``), exactly
    conservative. Max pooling in this form is winner-take-all."""

    record: bool = False

    def propagate(self, call, r, out=None):
        op = call.op
        target = op.target
        if len(op.args) == 1 and isinstance(call.inputs[0], tuple | list):
            # an item of split/chunk/attention's output, or of a nested one (an LSTM's
            # (h_n, c_n)): its relevance is a list in the same place
            items: list = [None] * len(call.inputs[0])
            items[op.evaluate_args(call.env)[1]] = r
            return [items]
        if len(op.args) == 1 and isinstance(r, torch.Tensor):
            x = call.inputs[0]
            if isinstance(op.module, nn.Flatten) or target in _RESHAPES or target in _RESHAPES_FN:
                return [r.reshape(x.shape)]
            if target in ("permute", torch.permute):
                dims = op.evaluate_args(call.env)[1:]
                dims = dims[0] if len(dims) == 1 and isinstance(dims[0], Sequence) else dims
                inverse = sorted(range(len(dims)), key=lambda i: dims[i] % x.dim())
                return [r.permute(inverse)]
        return vjp(call, r)


@dataclass
class WinnerTakeAll(OpRule):
    """Max pooling: all of an output's relevance goes to the input that won the max
    (compiled routing for ``nn.MaxPool1d/2d``, the gradient otherwise)."""

    record: bool = True
    fresh = True

    def forward(self, call):
        m = call.op.module
        if not isinstance(m, nn.MaxPool1d | nn.MaxPool2d):
            return super().forward(call)
        fn = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
        out, idx = fn(call.inputs[0], m.kernel_size, m.stride, m.padding, m.dilation,
                      ceil_mode=m.ceil_mode, return_indices=True)  # fmt: skip
        call.saved[call.op.name] = idx
        return out

    def propagate(self, call, r, out=None):
        idx = call.saved.get(call.op.name)
        if idx is None:
            got = vjp(call, r)[0]
            return [got if out is None else out.add_(got)]
        return [K.maxpool_route(r.contiguous(), idx, call.inputs[0].shape, out)]


def _avgpool_geometry(m: nn.Module) -> tuple | None:
    """Kernel geometry of an average pool in 2-D form, ``None`` for what the compiled
    kernel does not cover (then torch's pooling gradient is used)."""

    def pair(v):
        return tuple(v) if isinstance(v, tuple | list) else (v, v)

    if isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
        return (0, 0, 0, 0, 0, 0, 1, 1)
    if not isinstance(m, nn.AvgPool1d | nn.AvgPool2d):
        return None
    if getattr(m, "ceil_mode", False) or getattr(m, "divisor_override", None):
        return None
    if isinstance(m, nn.AvgPool1d):
        return (1, m.kernel_size[0], 1, m.stride[0], 0, m.padding[0], 0, int(m.count_include_pad))
    (kh, kw), (sh, sw), (ph, pw) = (
        pair(m.kernel_size),
        pair(m.stride or m.kernel_size),
        pair(m.padding),
    )
    return (kh, kw, sh, sw, ph, pw, 0, int(m.count_include_pad))


_ADDS = {operator.add, operator.iadd, torch.add, "add"}


def norm_relevance(call: Call, r: torch.Tensor, eps: float, scale: float = 1.0) -> list:
    """``R_k = scale * x_k * J_k^T (r / stab(z))`` for every relevance-carrying input."""
    s = K.stabilized_divide(r.contiguous(), call.output.contiguous(), eps, scale)
    grads = vjp(call, s)
    return [None if g is None else x * g for x, g in zip(call.inputs, grads, strict=True)]


@dataclass
class Norm(OpRule):
    """Redistribution in proportion to the inputs' contributions (average pooling, sums
    and means, interpolation, residual additions; a constant operand such as a bias or a
    position embedding keeps its share): ``R_i = x_i * sum_j A_ji R_j / stab(z_j)``, the
    op ``z = A x`` linear in its inputs; Zennit's ``Norm``."""

    stabilizer: float = 1e-6
    record: bool = True
    fresh = True

    def propagate(self, call, r, out=None):
        op, eps = call.op, self.stabilizer
        geo = None if op.module is None else _avgpool_geometry(op.module)
        if geo is not None:
            x, z = call.inputs[0], call.output
            x4, z4, r4 = (t.reshape(t.shape[0], t.shape[1], -1, t.shape[-1]) for t in (x, z, r))
            acc = None if out is None else out.view(x4.shape)
            res = K.avgpool_redistribute(x4.contiguous(), z4.contiguous(), r4.contiguous(), eps,
                                         geo, acc)  # fmt: skip
            return [res.view(x.shape) if out is None else out]
        if op.target in _ADDS and len(op.args) == 2 and not op.node.kwargs:
            a, b = call.inputs
            if a.shape == b.shape == r.shape:
                return list(K.sum_split(a.contiguous(), b.contiguous(), r.contiguous(), eps))
        res = norm_relevance(call, r, eps)
        if out is not None and res[0] is not None:
            res[0] = out.add_(res[0])
        return res


@dataclass
class BoundedSum(Norm):
    """Additions ``z = a + b`` whose operands may cancel: Norm's split ``x_i / z`` blended
    with the split by magnitude ``|x_i| / S`` (``S = |a| + |b|``), per element, with the
    weight ``w = t^2 / (t^2 + tau^2)`` on Norm, ``t = |z| / S``:

        ``R_i = r (x_i z + tau^2 |x_i| S) / (z^2 + tau^2 S^2)``.

    Both splits conserve exactly, so the blend does. Where the operands agree in sign
    (``t = 1``) the two splits are one: Norm exactly. Norm's share ``x_i / z`` is unbounded
    where a signed branch nearly cancels the other operand; here ``|R_i| / |r|`` is at most
    ``max_t (t + tau^2) / (t^2 + tau^2)``, 1.62 at ``tau = 0.5`` (docs/lrp-rules.md).
    A constant operand keeps its share, as under Norm. Other operations (and additions
    with keyword arguments) get Norm."""

    tau: float = 0.5

    @staticmethod
    def covers(op) -> bool:
        """``op`` is an addition of two operands without keyword arguments."""
        return op.target in _ADDS and len(op.node.args) == 2 and not op.node.kwargs

    def propagate(self, call, r, out=None):
        op = call.op
        if not self.covers(op):
            return super().propagate(call, r, out)
        lam = self.tau * self.tau
        values = op.evaluate_args(call.env)
        a, b = (v.abs() if isinstance(v, torch.Tensor) else abs(v) for v in values)
        size = a + b
        size = torch.where(size > 0, size, 1.0)  # S = 0: both operands are 0
        t = call.output / size
        q = r / (t * t + lam)  # at least lam: no stabiliser needed
        found: dict[str, torch.Tensor] = {}
        for node, x, mag in zip(op.node.args, values, (a, b), strict=True):
            if isinstance(node, fx.Node) and node.name in op.args:
                share = _unbroadcast(q * (x * t + lam * mag) / size, x)
                found[node.name] = found[node.name] + share if node.name in found else share
        return [found.get(name) for name in op.args]


@dataclass
class Product(OpRule):
    """Products of tensors (element-wise ``*``, ``matmul``, ``bmm``, ``einsum``).

    AttnLRP's uniform rule for bilinear maps (Achtibat et al., ICML 2024, Prop. 3.3):
    each of the ``n`` relevance-carrying factors ``x_k`` gets
    ``R_k = x_k * J_k^T (r / stab(z)) / n``, so the factors share the relevance equally.
    A factor produced by a gate (a rule with ``gate = True``: sigmoid, hard sigmoid, as in
    squeeze-and-excitation ``x * sigmoid(f(x))``) is held constant: all relevance goes to
    the signal. With a single relevance-carrying factor (a layer scale, a constant matrix)
    this is the epsilon rule."""

    stabilizer: float = 1e-6
    record: bool = True

    def propagate(self, call, r, out=None):
        signal = [i for i in range(len(call.op.args)) if i not in call.op.gates]
        if not signal:  # a product of gates only: hold one constant, explain the other
            signal = [0]
        res = norm_relevance(call, r, self.stabilizer, 1.0 / len(signal))
        return [res[i] if i in signal else None for i in range(len(res))]


@dataclass
class AddProduct(OpRule):
    """``torch.addcmul(input, t1, t2, value=v) = input + v * t1 * t2``: Norm between
    ``input`` and the product term (``R = term * r / stab(z)``), then the product's share
    split uniformly between its relevance-carrying factors (:class:`Product`)."""

    stabilizer: float = 1e-6
    record: bool = True

    def propagate(self, call, r, out=None):
        args, kw = call.op.evaluate_args(call.env), call.op.evaluate_kwargs(call.env)
        base, t1, t2 = args[:3]
        value = args[3] if len(args) > 3 else kw.get("value", 1)
        s = K.stabilized_divide(r.contiguous(), call.output.contiguous(), self.stabilizer)
        share = s * (value * t1 * t2)
        nodes = call.op.node.args[:3]
        live = [isinstance(n, fx.Node) and n.name in call.op.args for n in nodes]
        n_live = max(sum(live[1:]), 1)
        found = {nodes[0].name: s * base} if live[0] else {}
        for n, on in zip(nodes[1:], live[1:], strict=True):
            if on:
                found[n.name] = found.get(n.name, 0) + _unbroadcast(share / n_live,
                                                                     call.env[n.name])  # fmt: skip
        return [found.get(a) for a in call.op.args]


def _unbroadcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the dimensions ``like`` was broadcast along."""
    while t.dim() > like.dim():
        t = t.sum(0)
    dims = [i for i, n in enumerate(like.shape) if n == 1 and t.shape[i] != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


@dataclass
class ChannelAffine(OpRule):
    """BatchNorm not folded into a layer before it (e.g. DenseNet's BN -> ReLU -> conv, BN
    after a concatenation): the epsilon rule on the per-channel map ``z = s x + t``,
    ``R = s x r / stab(z)``; the shift ``t`` acts as a bias and keeps its share."""

    stabilizer: float = 1e-6
    record: bool = True

    def propagate(self, call, r, out=None):
        scale = batchnorm_scale(call.op.module)
        return [channel_affine_relevance(call.inputs[0], call.output, r, scale, self.stabilizer)]


def batchnorm_scale(bn) -> torch.Tensor:
    """The per-channel factor ``weight / sqrt(running_var + eps)`` of an evaluation-mode
    BatchNorm (a module or :class:`BatchNormArgs`)."""
    scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    return scale if bn.weight is None else scale * bn.weight


def channel_affine_relevance(x, z, r, scale, eps: float) -> torch.Tensor:
    """The epsilon rule on ``z = scale * x + t`` per channel (dim 1)."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    s = K.stabilized_divide(r.contiguous(), z.contiguous(), eps)
    c = (s * scale.detach().to(s.dtype).reshape(shape)).contiguous()
    return K.contribution_product(x.contiguous(), c, K.PLAIN, reuse_c=True)


@dataclass
class BatchNormArgs:
    """The parameters of one ``F.batch_norm`` call (timm's ``BatchNormAct2d`` and other
    modules with a forward of their own call it directly), shaped like a BatchNorm
    module's attributes so that :func:`batchnorm_scale` and folding read either."""

    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    training: bool
    eps: float

    @classmethod
    def of(cls, args: Sequence, kwargs: dict) -> BatchNormArgs:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training",
                 "momentum", "eps")  # fmt: skip
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        return cls(given.get("running_mean"), given.get("running_var"), given.get("weight"),
                   given.get("bias"), bool(given.get("training", False)),
                   float(given.get("eps", 1e-5)))  # fmt: skip

    def with_batch_statistics(self, x: torch.Tensor) -> BatchNormArgs:
        """Training mode or no running statistics: the batch's statistics, held constant."""
        if not self.training and self.running_var is not None:
            return self
        dims = [d for d in range(x.dim()) if d != 1]
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        return BatchNormArgs(mean, var, self.weight, self.bias, False, self.eps)


@dataclass
class BatchNormFunction(OpRule):
    """``F.batch_norm`` not folded into a layer before it: as :class:`ChannelAffine`, the
    epsilon rule on the per-channel affine map (batch statistics held constant when the
    call uses them)."""

    stabilizer: float = 1e-6
    record: bool = True

    def propagate(self, call, r, out=None):
        x = call.inputs[0]
        bn = BatchNormArgs.of(call.op.evaluate_args(call.env), call.op.evaluate_kwargs(call.env))
        scale = batchnorm_scale(bn.with_batch_statistics(x))
        return [channel_affine_relevance(x, call.output, r, scale, self.stabilizer)]


def _normalization_relevance(x, y, r, groups, gamma, norm_eps, eps) -> torch.Tensor:
    """AttnLRP on ``y = gamma * (x - mean(x)) / sigma + beta`` with sigma held constant:
    the linear map ``W = diag(gamma) (I - 1/N) / sigma`` plus the bias ``beta`` under the
    epsilon rule, ``R_x = x / sigma * (gamma s - mean(gamma s))``, ``s = r / stab(y)``."""
    s = K.stabilized_divide(r.contiguous(), y.contiguous(), eps)  # fresh: worked in place
    if gamma is not None:
        s.mul_(gamma.to(s.dtype))
    xs, ss = x.reshape(groups), s.view(groups)
    dims = tuple(range(2, xs.dim()))
    # 1 / sigma per group as layer_norm computes it (torch's var is several times slower)
    inv_sigma = torch.native_layer_norm(xs, xs.shape[2:], None, None, norm_eps)[2]
    ss.sub_(ss.mean(dim=dims, keepdim=True)).mul_(xs).mul_(inv_sigma)
    return s


@dataclass
class Normalization(OpRule):
    """LayerNorm and GroupNorm: the AttnLRP rule (Achtibat et al., "AttnLRP:
    Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML 2024, Sec.
    3.3.2): the standard deviation is held constant, which makes the normalisation a linear
    map ``x -> gamma (x - mean x) / sigma + beta``; the epsilon rule then gives
    ``R_x = x / sigma * (gamma s - mean(gamma s))`` with ``s = r / stab(y)``, exactly
    conservative when ``beta = 0``."""

    stabilizer: float = 1e-6
    record: bool = True

    def propagate(self, call, r, out=None):
        x, y = call.inputs[0], call.output
        params = _norm_params(call)
        if params is None:
            raise ValueError(f"unsupported normalisation call {call.op.name!r}")
        groups, gamma, norm_eps = params
        return [_normalization_relevance(x, y, r, groups, gamma, norm_eps, self.stabilizer)]


def _functional_norm_args(call: Call) -> tuple:
    """``(shape or groups, weight, eps)`` of a ``F.layer_norm`` / ``F.group_norm`` call,
    whose signatures share those positions (``input, shape|groups, weight, bias, eps``)."""
    args, kw = call.op.evaluate_args(call.env), call.op.evaluate_kwargs(call.env)
    weight = args[2] if len(args) > 2 else kw.get("weight")
    return args[1], weight, args[4] if len(args) > 4 else kw.get("eps", 1e-5)


def _norm_params(call: Call):
    """``(group shape, gamma broadcast to x, eps)`` of a LayerNorm / GroupNorm call."""
    op, x = call.op, call.inputs[0]
    m = op.module
    if isinstance(m, nn.LayerNorm) or op.target is F.layer_norm:
        if m is not None:
            shape, weight, eps = m.normalized_shape, m.weight, m.eps
        else:
            shape, weight, eps = _functional_norm_args(call)
        n = len(tuple(shape))
        lead = x.shape[: x.dim() - n]
        groups = (int(torch.Size(lead).numel()), 1, *x.shape[x.dim() - n :])
        return groups, None if weight is None else weight.detach(), eps
    if isinstance(m, nn.GroupNorm) or op.target is F.group_norm:
        if m is not None:
            g, weight, eps = m.num_groups, m.weight, m.eps
        else:
            g, weight, eps = _functional_norm_args(call)
        groups = (x.shape[0], g, -1)
        gamma = None
        if weight is not None:
            gamma = weight.detach().reshape(1, -1, *([1] * (x.dim() - 2)))
        return groups, gamma, eps
    return None


@dataclass
class Softmax(OpRule):
    """Softmax, the AttnLRP rule (Achtibat et al., ICML 2024, Prop. 3.1: a Taylor
    decomposition at ``x``, the bias-like terms dropped): ``R_i = x_i (r_i - s_i sum_j r_j)``
    over the softmax dimension, ``s`` the softmax output. Not conservative: the dropped
    terms carry the rest.

    ``constant=True``: the softmax output is held constant instead (CP-LRP, Ali et al.,
    ICML 2022): it is a gate, so ``attn @ v`` gives all its relevance to ``v`` and nothing
    flows back through the softmax; conservative."""

    record: bool = True
    constant: bool = False

    @property
    def gate(self) -> bool:  # type: ignore[override]
        return self.constant

    @property
    def lossy(self) -> bool:  # type: ignore[override]
        return not self.constant

    def propagate(self, call, r, out=None):
        if self.constant:
            return [None]
        x, s = call.inputs[0], call.output
        dim = _softmax_dim(call)
        return [x * (r - s * r.sum(dim=dim, keepdim=True))]


def _softmax_dim(call: Call) -> int:
    op = call.op
    if op.module is not None:
        return op.module.dim
    args, kw = op.evaluate_args(call.env), op.evaluate_kwargs(call.env)
    return args[1] if len(args) > 1 else kw["dim"]


def elementwise_pass_functions() -> list[tuple[Sequence, OpRule]]:
    """Functional spellings of element-wise maps (targets of ``call_function`` nodes and
    method names of ``call_method`` nodes) and their rules."""
    act = [F.relu, torch.relu, F.relu6, F.leaky_relu, F.silu, F.gelu, F.hardswish, F.elu,
           F.selu, F.celu, F.mish, F.softplus, F.hardtanh, torch.tanh, F.tanh,
           "relu", "tanh", "clamp", "clip", torch.clamp, torch.clip]  # fmt: skip
    gates: list[Callable | str] = [torch.sigmoid, F.sigmoid, F.hardsigmoid, "sigmoid"]
    off = [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, "detach", "to",
           "float", "double", "type_as"]  # fmt: skip
    # Element-wise maps that AttnLRP's identity rule covers as well: powers (StarReLU's
    # relu(x) ** 2), (reciprocal) square roots, and the division by a norm of F.normalize.
    act += [operator.pow, torch.pow, "pow", torch.square, "square", torch.sqrt, "sqrt",
            torch.rsqrt, "rsqrt", F.normalize]  # fmt: skip
    # RMSNorm with the root mean square held constant (as AttnLRP holds LayerNorm's
    # sigma): the map x -> w x / rms is linear and its epsilon rule gives R = r exactly.
    act += [F.rms_norm]
    return [(act, Pass(record=False)), (gates, Pass(record=False, gate=True)),
            (off, Pass(record=False))]  # fmt: skip
