"""The LRP engine: one forward and one relevance pass per batch, every layer recorded.

:class:`LRP` captures the model's graph once (:mod:`hudd_core.lrp.graph`), folds
BatchNorm, and derives each rule's modified weights once per dtype/device. A call runs the
forward pass without autograd, keeping what the rules need (inputs, outputs, max-pool
argmax indices), then walks the graph backwards, applying the composite's rule to each
node and summing relevance where a tensor fans out (residual branches).

Where relevance is recorded: at each layer's OUTPUT, i.e. the relevance of the neurons
that layer produces (HUDD's "relevance of each layer's neurons"), under the layer's
module qualified name (``features.0`` = the first convolution's output channels), plus
``input`` (the pixels). A BatchNorm folded into its convolution belongs to that
convolution: ``features.0`` then holds the relevance of the normalised outputs. Layers
recorded by default: convolutions, linear layers, ReLU/LeakyReLU, pooling, and ``input``
(dropout, flatten, identity and BatchNorm repeat their neighbour's relevance; they, and
functional nodes such as ``add``, can be asked for by name).

Start relevance: the predicted class's logit (every other output zeroed), a given target
class, or, for keypoint regressors with output ``(B, 2K)`` = ``[x0, y0, x1, y1, ...]``,
the two outputs of the keypoint with the largest error against the ground truth.

Example:
    >>> import torch
    >>> from hudd_core.models import alexnet
    >>> lrp = LRP(alexnet(2, input_size=32).eval())
    >>> rel = lrp(torch.rand(4, 1, 32, 32))
    >>> rel["input"].shape, rel["features.0"].shape
    (torch.Size([4, 1, 32, 32]), torch.Size([4, 32, 32, 32]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from hudd_core.lrp import kernels as K
from hudd_core.lrp.composites import Composite, get_composite
from hudd_core.lrp.graph import Graph, Op, affine_params, capture
from hudd_core.lrp.rules import Affine


def start_relevance(
    output: torch.Tensor,
    target: int | torch.Tensor | None = None,
    keypoints: torch.Tensor | None = None,
) -> torch.Tensor:
    """The relevance put on the model's output.

    Args:
        output: ``(B, C)`` logits, or ``(B, 2K)`` keypoint coordinates.
        target: class index (int or ``(B,)``); default: the predicted class.
        keypoints: ground-truth ``(B, 2K)`` (or ``(B, K, 2)``) for a keypoint regressor:
            only the outputs of each image's worst keypoint keep their value.

    Example:
        >>> start_relevance(torch.tensor([[1.0, 3.0, 2.0]]))
        tensor([[0., 3., 0.]])
    """
    if output.dim() != 2:
        raise ValueError(
            f"LRP start relevance needs a (B, outputs) model output, got {tuple(output.shape)}"
        )
    mask = torch.zeros_like(output)
    if keypoints is not None:
        gt = keypoints.reshape(output.shape).to(output)
        err = (output - gt).reshape(len(output), -1, 2).norm(dim=2)
        worst = err.argmax(dim=1)
        rows = torch.arange(len(output), device=output.device)
        mask[rows, 2 * worst] = 1
        mask[rows, 2 * worst + 1] = 1
    else:
        if target is None:
            idx = output.argmax(dim=1)
        else:
            idx = torch.as_tensor(target, device=output.device).long().expand(len(output))
        mask.scatter_(1, idx[:, None], 1.0)
    return output * mask


def _avgpool_geometry(m: nn.Module) -> tuple | None:
    """Kernel geometry of an average pool in 2-D form, ``None`` for what the compiled
    kernel does not cover (then torch's pooling gradient is used)."""

    def pair(v):
        return tuple(v) if isinstance(v, tuple | list) else (v, v)

    if isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
        return (0, 0, 0, 0, 0, 0, 1, 1)
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


class LRP:
    """All-layer LRP for a CNN (see the module docstring).

    Args:
        model: an unmodified ``nn.Module`` (evaluation semantics are used: dropout off,
            BatchNorm with running statistics; the module itself is never changed).
        composite: ``"hudd"`` (default), ``"epsilon-plus"``, ``"epsilon-alpha2-beta1"``,
            ``"epsilon-gamma-box"`` or a :class:`Composite`.
        layers: names to record (default: :attr:`Graph.default_layers`).
        composite_kwargs: passed to the composite factory (e.g. ``low``, ``high``).

    Weights are read when a batch first meets a dtype/device; call :meth:`refresh` after
    changing them.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str | Composite = "hudd",
        layers: Sequence[str] | None = None,
        **composite_kwargs,
    ) -> None:
        self.model = model
        self.graph: Graph = capture(model)
        self.composite = get_composite(composite, **composite_kwargs)
        known = self.graph.recordable
        if layers is None:
            layers = self.graph.default_layers
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; recordable: {known}")
        self.layers = [name for name in known if name in set(layers)]
        self._prepared: dict[tuple, dict[str, tuple]] = {}

    def _prepare(self, dtype: torch.dtype, device: torch.device) -> dict[str, tuple]:
        key = (dtype, device)
        if key not in self._prepared:
            prep = {}
            for op in self.graph.ops:
                if op.kind not in ("conv", "linear"):
                    continue
                w, b = affine_params(op)
                w = w.to(device=device, dtype=dtype)
                b = None if b is None else b.to(device=device, dtype=dtype)
                m = op.module
                if op.kind == "conv":
                    layer = Affine(w, b, w.dim() - 2, m.stride, m.padding, m.dilation, m.groups)
                    if isinstance(m.padding, str) or m.padding_mode != "zeros":
                        raise ValueError(
                            f"LRP supports zero padding given as numbers (layer {op.qualname!r})"
                        )
                else:
                    layer = Affine(w, b)
                rule = self.composite.rule_for(op.kind, op.first_conv)
                with torch.no_grad():
                    prep[op.name] = (layer, rule, rule.prepare(layer))
            self._prepared[key] = prep
        return self._prepared[key]

    # -- forward -------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor, prep: dict) -> tuple[dict, dict]:
        env: dict[str, object] = {}
        saved: dict[str, object] = {}

        def val(a):
            return fx.node.map_arg(a, lambda n: env[n.name])

        for op in self.graph.ops:
            node, kind = op.node, op.kind
            if kind == "input":
                env[op.name] = x
                continue
            if kind in ("conv", "linear"):
                layer = prep[op.name][0]
                env[op.name] = layer.forward(env[op.args[0]], layer.weight, layer.bias)
            elif node.op == "call_module":
                inp = env[op.args[0]]
                m = op.module
                if kind == "act":
                    slope = getattr(m, "negative_slope", None)
                    env[op.name] = F.relu(inp) if slope is None else F.leaky_relu(inp, slope)
                elif kind == "maxpool":
                    fn = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
                    out, idx = fn(inp, m.kernel_size, m.stride, m.padding, m.dilation,
                                  ceil_mode=m.ceil_mode, return_indices=True)  # fmt: skip
                    env[op.name], saved[op.name] = out, idx
                elif kind == "avgpool":
                    env[op.name] = m(inp)
                elif kind == "reshape":
                    env[op.name] = m(inp)
                else:  # pass: dropout/identity (evaluation mode), folded BatchNorm
                    env[op.name] = inp
            elif kind == "add":
                a, b = (env[n] for n in op.args)
                env[op.name] = a + b  # never in place: the operands are kept for the backward
            elif kind == "pass":  # functional activations (never in place), dropout (off)
                inp = env[op.args[0]]
                if node.target in (F.relu, torch.relu, "relu", "relu_"):
                    env[op.name] = F.relu(inp)
                elif node.target is F.leaky_relu:
                    args, kwargs = val(node.args), val(node.kwargs)
                    slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
                    env[op.name] = F.leaky_relu(inp, slope)
                else:
                    env[op.name] = inp
            elif node.op == "call_function":
                env[op.name] = node.target(*val(node.args), **val(node.kwargs))
            else:  # call_method
                args = val(node.args)
                env[op.name] = getattr(args[0], node.target)(*args[1:], **val(node.kwargs))
        return env, saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output as the engine computes it (BatchNorm folded)."""
        with torch.no_grad():
            env, _ = self._forward(x, self._prepare(x.dtype, x.device))
        return env[self.graph.output]

    # -- relevance pass ------------------------------------------------------------------

    def __call__(
        self,
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        keypoints: torch.Tensor | None = None,
        start: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Relevance at every recorded layer for the batch ``x`` (``{name: (B, ...)}``).

        ``start`` overrides the start relevance (default: :func:`start_relevance`): a
        tensor, or a function of the model's output."""
        if not x.dtype.is_floating_point:
            raise TypeError(f"LRP input must be floating point, got {x.dtype}")
        x = x.contiguous()
        with torch.no_grad():
            prep = self._prepare(x.dtype, x.device)
            env, saved = self._forward(x, prep)
            out = env[self.graph.output]
            if callable(start):
                start = start(out)
            r0 = start if start is not None else start_relevance(out, target, keypoints)
            return self._backward(env, saved, prep, r0.to(out))

    def _backward(self, env: dict, saved: dict, prep: dict, r0: torch.Tensor) -> dict:
        rel: dict[str, torch.Tensor] = {self.graph.output: r0.contiguous()}
        owned: set[str] = set()  # names whose tensor we created (safe to add into in place)
        record = set(self.layers)
        result: dict[str, torch.Tensor] = {}

        def give(name: str, fn: Callable[[torch.Tensor | None], torch.Tensor]) -> None:
            """Relevance for ``name`` from a kernel that can add into ``out``."""
            if name in owned:
                fn(rel[name])
            elif name in rel:
                rel[name] = rel[name] + fn(None)
                owned.add(name)
            else:
                rel[name] = fn(None)
                owned.add(name)

        def give_alias(name: str, r: torch.Tensor) -> None:
            """Relevance for ``name`` that may alias another node's (pass, reshape)."""
            if name in owned:
                rel[name].add_(r)
            elif name in rel:
                rel[name] = rel[name] + r
                owned.add(name)
            else:
                rel[name] = r

        for op in reversed(self.graph.ops):
            r = rel.get(op.name)
            if r is None:
                if op.record in record:
                    result[op.record] = torch.zeros_like(env[op.name])
                continue
            if op.record in record:
                result[op.record] = r
            self._propagate(op, r, env, saved, prep, give, give_alias)
            del rel[op.name]
        return {name: result[name] for name in self.layers}

    def _propagate(self, op: Op, r, env, saved, prep, give, give_alias) -> None:
        kind = op.kind
        if kind == "input" or not op.args:
            return
        src = op.args[0]
        if kind in ("conv", "linear"):
            layer, rule, p = prep[op.name]
            x, z = env[src], env[op.name]
            give(src, lambda out: rule.relevance(layer, p, x, z, r.contiguous(), out))
        elif kind in ("act", "pass"):
            give_alias(src, r)
        elif kind == "reshape":
            give_alias(src, r.reshape(env[src].shape))
        elif kind == "maxpool":
            x = env[src]
            give(src, lambda out: K.maxpool_route(r.contiguous(), saved[op.name], x.shape, out))
        elif kind == "avgpool":
            x, z = env[src], env[op.name]
            eps = self.composite.norm.stabilizer
            geo = _avgpool_geometry(op.module)
            if geo is None:
                give(src, lambda out: _avgpool_autograd(op.module, x, z, r, eps, out))
            else:
                x4, z4, r4 = (t.reshape(t.shape[0], t.shape[1], -1, t.shape[-1]) for t in (x, z, r))
                give(src, lambda out: K.avgpool_redistribute(
                    x4.contiguous(), z4.contiguous(), r4.contiguous(), eps, geo,
                    None if out is None else out.view(x4.shape)).view(x.shape))  # fmt: skip
        elif kind == "add":
            a, b = (env[n] for n in op.args)
            ra, rb = K.sum_split(a.contiguous(), b.contiguous(), r.contiguous(),
                                 self.composite.norm.stabilizer)  # fmt: skip
            give_alias(op.args[0], ra)
            give_alias(op.args[1], rb)
        elif kind == "cat":
            node = op.node
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            parts = [env[n.name] for n in node.args[0]]
            pieces = r.split([p.shape[dim] for p in parts], dim=dim)
            for n, piece in zip(node.args[0], pieces, strict=True):
                give_alias(n.name, piece.contiguous())
        else:  # pragma: no cover - capture() rejects everything else
            raise AssertionError(kind)

    def shapes(self, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Per recorded layer, the shape of one image's relevance (no batch dimension)."""
        param = next(self.model.parameters(), None)
        dtype = torch.float32 if param is None else param.dtype
        device = "cpu" if param is None else param.device
        with torch.no_grad():
            x = torch.zeros((1, *input_shape), dtype=dtype, device=device)
            env, _ = self._forward(x, self._prepare(dtype, torch.device(device)))
        names = {op.record: op.name for op in self.graph.ops if op.record}
        return {name: tuple(env[names[name]].shape[1:]) for name in self.layers}


def _avgpool_autograd(m, x, z, r, eps, out):
    """Norm rule through torch's pooling gradient (pool settings the kernel lacks)."""
    s = K.stabilized_divide(r.contiguous(), z.contiguous(), eps)
    with torch.enable_grad():
        xx = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(m(xx), xx, s)
    res = x * g
    return res if out is None else out.add_(res)


def layer_relevance(
    model: nn.Module, layer: str, composite: str | Composite = "hudd", **kwargs
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping a batch to its flattened relevance ``(B, D)`` at ``layer``
    (the start relevance as in :func:`start_relevance`; ``kwargs`` go to :class:`LRP`).

    Example:
        >>> from hudd_core.models import alexnet
        >>> f = layer_relevance(alexnet(2, input_size=32).eval(), "features.3")
        >>> f(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 16384])
    """
    lrp = LRP(model, composite, layers=[layer], **kwargs)

    def relevance(x: torch.Tensor) -> torch.Tensor:
        return lrp(x)[layer].reshape(len(x), -1)

    return relevance
