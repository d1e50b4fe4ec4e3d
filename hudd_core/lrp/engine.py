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
from torch import nn

from hudd_core.lrp.composites import Composite, get_composite
from hudd_core.lrp.graph import Graph, TracingFailed, capture
from hudd_core.lrp.oprules import Call

_NOT_YET = (
    "torch.fx cannot trace this model: its graph is recorded from a batch; call the "
    "LRP, or .shapes(input_shape), first"
)


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


class LRP:
    """All-layer LRP for a CNN (see the module docstring).

    Args:
        model: an unmodified ``nn.Module`` (evaluation semantics are used: dropout off,
            BatchNorm with running statistics; the module itself is never changed).
        composite: ``"hudd"`` (default), ``"epsilon-plus"``, ``"epsilon-alpha2-beta1"``,
            ``"epsilon-gamma-box"`` or a :class:`Composite`.
        layers: names to record (default: :attr:`Graph.default_layers`).
        composite_kwargs: passed to the composite factory (e.g. ``low``, ``high``).

    Weights are read when a batch first meets a dtype/device: build a new ``LRP`` after
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
        self.composite = get_composite(composite, **composite_kwargs)
        self._wanted = None if layers is None else list(layers)
        self._layers: list[str] | None = None
        self._graph: Graph | None = None
        self._recorded: dict[tuple, Graph] = {}  # (shape, dtype, device) -> graph
        self._prepared: dict[tuple, dict[str, object]] = {}
        try:
            self._graph = capture(model, self.composite)
        except TracingFailed:
            pass  # recorded from each batch shape's first batch (hudd_core.lrp.record)
        else:
            self._set_layers(self._graph)

    @property
    def graph(self) -> Graph:
        """The captured graph (of the latest batch shape, for a recorded model)."""
        if self._graph is None:
            raise RuntimeError(_NOT_YET)
        return self._graph

    @property
    def layers(self) -> list[str]:
        """The recorded layers, in execution order."""
        if self._layers is None:
            raise RuntimeError(_NOT_YET)
        return self._layers

    @layers.setter
    def layers(self, names: list[str]) -> None:
        self._layers = names

    def _set_layers(self, graph: Graph) -> None:
        known = graph.recordable
        layers = graph.default_layers if self._wanted is None else self._wanted
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; recordable: {known}")
        self._layers = [name for name in known if name in set(layers)]

    def _graph_for(self, x: torch.Tensor) -> Graph:
        """The graph for the batch ``x``: the traced one, or the one recorded for its shape,
        dtype and device (recorded now if new)."""
        if self._graph is not None and not self._graph.recorded:
            return self._graph
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in self._recorded:
            self._recorded[key] = capture(self.model, self.composite, example=x)
        self._graph = self._recorded[key]
        if self._layers is None:
            self._set_layers(self._graph)
        return self._graph

    def _prepare(self, graph: Graph, dtype: torch.dtype, device: torch.device) -> dict:
        key = (id(graph), dtype, device)
        if key not in self._prepared:
            self._prepared[key] = {
                op.name: op.rule.setup(op, dtype, device) for op in graph.ops if op.rule
            }
        return self._prepared[key]

    # -- forward -------------------------------------------------------------------------

    def _forward(self, graph: Graph, x: torch.Tensor, prep: dict) -> tuple[dict, dict]:
        env: dict[str, object] = {}
        saved: dict[str, object] = {}
        for op in graph.ops:
            if op.record == "input":
                env[op.name] = x
            elif op.rule is None:  # a constant, a parameter, shape arithmetic
                env[op.name] = op.evaluate(env)
            else:
                env[op.name] = op.rule.forward(Call(op, env, prep[op.name], saved))
        return env, saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output as the engine computes it (BatchNorm folded)."""
        graph = self._graph_for(x)
        with torch.no_grad():
            env, _ = self._forward(graph, x, self._prepare(graph, x.dtype, x.device))
        return env[graph.output]

    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each recorded layer's output for the batch ``x`` (``{name: (B, ...)}``), as the
        engine computes it (BatchNorm folded, so a convolution's output is that of
        convolution + BatchNorm), the tensors the relevance at those layers belongs to:
        the features of ``hudd cluster --method act-*`` and ``rxa-*``."""
        if not x.dtype.is_floating_point:
            raise TypeError(f"LRP input must be floating point, got {x.dtype}")
        graph = self._graph_for(x)
        with torch.no_grad():
            env, _ = self._forward(graph, x.contiguous(), self._prepare(graph, x.dtype, x.device))
        names = graph.record_nodes
        return {name: _first(env[names[name]]) for name in self.layers}

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
        graph = self._graph_for(x)
        with torch.no_grad():
            prep = self._prepare(graph, x.dtype, x.device)
            env, saved = self._forward(graph, x, prep)
            out = env[graph.output]
            if callable(start):
                start = start(out)
            r0 = start if start is not None else start_relevance(out, target, keypoints)
            return self._backward(graph, env, saved, prep, r0.to(out))

    def _backward(self, graph: Graph, env: dict, saved: dict, prep: dict, r0: torch.Tensor) -> dict:
        rel: dict[str, object] = {graph.output: r0.contiguous()}
        owned: set[str] = set()  # names whose tensor we created (safe to add into in place)
        record = set(self.layers)
        result: dict[str, torch.Tensor] = {}

        def give(name: str, r, fresh: bool) -> None:
            """Adds ``r`` to the relevance of ``name`` (``fresh``: ``r`` is ours to keep)."""
            if isinstance(r, list):  # the items of a tuple-valued node
                have = rel.get(name) or [None] * len(r)
                rel[name] = [_add(a, b) for a, b in zip(have, r, strict=True)]
            elif name in owned:
                rel[name].add_(r)
            elif name in rel:
                rel[name] = rel[name] + r
                owned.add(name)
            else:
                rel[name] = r
                if fresh:
                    owned.add(name)

        for op in reversed(graph.ops):
            r = rel.pop(op.name, None)
            if op.record in record:
                result[op.record] = _recorded(r, env[op.name])
            if r is None or op.rule is None or not op.args:
                continue
            call = Call(op, env, prep[op.name], saved)
            first = op.args[0]
            out = rel[first] if (op.rule.fresh and first in owned) else None
            for i, (name, res) in enumerate(zip(op.args, op.rule.propagate(call, r, out),
                                                strict=True)):  # fmt: skip
                if res is None or (i == 0 and out is not None and res is out):
                    continue
                give(name, res, op.rule.fresh)
        return {name: result[name] for name in self.layers}

    def shapes(self, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Per recorded layer, the shape of one image's relevance (no batch dimension)."""
        param = next(self.model.parameters(), None)
        dtype = torch.float32 if param is None else param.dtype
        device = "cpu" if param is None else param.device
        x = torch.zeros((1, *input_shape), dtype=dtype, device=device)
        graph = self._graph_for(x)
        with torch.no_grad():
            env, _ = self._forward(graph, x, self._prepare(graph, dtype, torch.device(device)))
        names = graph.record_nodes
        shapes = {
            name: tuple(env[names[name]].shape[1:])
            for name in self.layers
            if isinstance(env[names[name]], torch.Tensor)
        }
        # A module whose output is not one tensor (MultiheadAttention's pair) has no
        # heatmap of its own: its relevance is recorded where its tensor is taken apart.
        self.layers = [name for name in self.layers if name in shapes]
        return shapes


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def _recorded(r, value) -> torch.Tensor:
    """What is recorded for a node: its relevance, zeros where none arrived; a
    tuple-valued node (attention's ``(output, weights)``) records its first item."""
    if isinstance(r, list):
        r = r[0]
    return torch.zeros_like(_first(value)) if r is None else r


def _first(value):
    """A node's tensor: the first item of a tuple-valued node (attention's pair)."""
    return value[0] if isinstance(value, tuple | list) else value


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
