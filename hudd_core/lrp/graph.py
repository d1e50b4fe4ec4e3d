"""Graph capture: an unmodified ``nn.Module`` → the list of operations LRP walks.

``torch.fx.symbolic_trace`` records the forward pass; standard ``torch.nn`` layers stay
whole (fx leaves), custom modules are traced through, so residual additions and
concatenations written in ``forward`` appear as graph nodes. Every node is classified into
one of a few kinds, BatchNorm is folded into the convolution or linear layer before it
(:mod:`hudd_core.lrp.canonizers`), and anything else raises
:class:`UnsupportedOperation` naming the operation and the graph node.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> [(op.name, op.kind) for op in capture(net).ops]
    [('input_1', 'input'), ('_0', 'linear'), ('_1', 'act'), ('_2', 'linear')]
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from hudd_core.lrp.canonizers import fold_batchnorm

# Layer modules by kind. "pass": relevance unchanged (activations, dropout, identity).
_MODULE_KINDS: list[tuple[tuple[type, ...], str]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv"),
    ((nn.Linear,), "linear"),
    ((nn.ReLU, nn.LeakyReLU), "act"),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity), "pass"),
    ((nn.Flatten,), "reshape"),
    ((nn.MaxPool1d, nn.MaxPool2d), "maxpool"),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d), "avgpool"),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), "bn"),
]
# Layers recorded by default: those whose outputs are new neurons (not views or copies).
RECORDED_KINDS = {"conv", "linear", "act", "maxpool", "avgpool"}

_ADD = {operator.add, operator.iadd, torch.add}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_RESHAPE_FN = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "contiguous"}
_ACT_FN = {F.relu, torch.relu, F.leaky_relu, F.dropout}
_META_METHODS = {"size", "dim"}


class UnsupportedOperation(ValueError):
    """The model contains an operation LRP cannot propagate relevance through."""


@dataclass
class Op:
    """One graph node: ``kind`` decides its LRP treatment, ``args`` are the tensor nodes it
    reads (by name), ``record`` the name its output relevance is recorded under."""

    name: str
    kind: str
    node: fx.Node
    args: list[str] = field(default_factory=list)
    module: nn.Module | None = None
    qualname: str | None = None
    record: str | None = None
    bn: nn.Module | None = None  # BatchNorm folded into this conv/linear
    first_conv: bool = False


@dataclass
class Graph:
    """The captured model: operations in execution order and the output node's name."""

    module: fx.GraphModule
    ops: list[Op]
    output: str

    @property
    def recordable(self) -> list[str]:
        """Every name relevance can be recorded under, in execution order."""
        return [op.record for op in self.ops if op.record]

    @property
    def default_layers(self) -> list[str]:
        return [op.record for op in self.ops if op.record and op.kind in RECORDED_KINDS | {"input"}]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return any(isinstance(m, types) for types, _ in _MODULE_KINDS) or super().is_leaf_module(
            m, qualname
        )


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    inside = list(stack)[-1] if stack else ""
    return f"graph node {node.name!r}" + (f" in module {inside!r}" if inside else "")


def _classify(node: fx.Node, modules: dict[str, nn.Module], meta: set[str]) -> str:
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if node.op == "get_attr":
        raise UnsupportedOperation(
            f"LRP does not support parameters or buffers used directly in forward "
            f"({node.target!r}, {_where(node)})"
        )
    if node.op == "call_module":
        m = modules[node.target]
        for types, kind in _MODULE_KINDS:
            if isinstance(m, types):
                return kind
        raise UnsupportedOperation(
            f"LRP does not support the layer {type(m).__name__} "
            f"(module {node.target!r}, {_where(node)})"
        )
    tensor_args = [a for a in node.all_input_nodes if a.name not in meta]
    if node.op == "call_function":
        t = node.target
        if t is getattr or (t is operator.getitem and not tensor_args):
            return "meta"
        if t in _ADD and len(tensor_args) == 2 and not node.kwargs:
            return "add"
        if t in _CAT:
            return "cat"
        if t in _RESHAPE_FN:
            return "reshape"
        if t in _ACT_FN:
            return "pass"
        name = getattr(t, "__name__", str(t))
    else:  # call_method
        t = node.target
        if t in _META_METHODS:
            return "meta"
        if t in _RESHAPE_METHODS:
            return "reshape"
        if t in {"add", "add_"} and len(tensor_args) == 2 and not node.kwargs:
            return "add"
        if t in {"relu", "relu_"}:
            return "pass"
        name = f"Tensor.{t}"
    raise UnsupportedOperation(
        f"LRP does not support the operation {name} ({_where(node)}); supported: conv, "
        "linear, ReLU/LeakyReLU, max/avg pooling, BatchNorm after conv/linear, dropout, "
        "flatten/view/reshape, residual addition of two tensors, concatenation"
    )


def capture(model: nn.Module) -> Graph:
    """Traces ``model`` (never modified) into a :class:`Graph`.

    Raises:
        UnsupportedOperation: for an operation LRP cannot propagate through, naming the
            operation and the graph node (and the module it sits in).
    """
    tracer = _Tracer()
    try:
        g = tracer.trace(model)
    except Exception as exc:  # fx cannot trace data-dependent control flow
        raise UnsupportedOperation(f"torch.fx cannot trace the model: {exc}") from exc
    gm = fx.GraphModule(tracer.root, g)
    modules = dict(gm.named_modules())
    ops: list[Op] = []
    by_name: dict[str, Op] = {}
    meta: set[str] = set()
    seen: dict[str, int] = {}
    output = None
    first_conv_done = False
    for node in g.nodes:
        kind = _classify(node, modules, meta)
        if kind == "output":
            outs = [a for a in node.all_input_nodes]
            if len(outs) != 1 or outs[0].name in meta:
                raise UnsupportedOperation(
                    "LRP needs a model with a single tensor output "
                    f"(graph node {node.name!r} returns {node.args[0]!r})"
                )
            output = outs[0].name
            continue
        if kind == "meta":
            meta.add(node.name)
        op = Op(node.name, kind, node, [a.name for a in node.all_input_nodes if a.name not in meta])
        if kind == "input":
            if ops:
                raise UnsupportedOperation(f"LRP needs a model with one input ({_where(node)})")
            op.record = "input"
        elif node.op == "call_module":
            op.module, op.qualname = modules[node.target], node.target
            k = seen.get(node.target, 0)
            seen[node.target] = k + 1
            op.record = node.target if k == 0 else f"{node.target}#{k}"
        elif kind != "meta":
            op.record = node.name
        if kind == "conv" and not first_conv_done:
            op.first_conv = first_conv_done = True
        if kind == "bn":
            src = by_name.get(op.args[0]) if op.args else None
            if (
                src is None
                or src.kind not in ("conv", "linear")
                or src.bn is not None
                or len(src.node.users) != 1
            ):
                raise UnsupportedOperation(
                    f"LRP folds BatchNorm into the convolution/linear layer right before it; "
                    f"{type(op.module).__name__} (module {op.qualname!r}, {_where(node)}) "
                    "has none"
                )
            src.bn = op.module
            op.kind = "pass"
        ops.append(op)
        by_name[op.name] = op
    if output is None:
        raise UnsupportedOperation("the traced model has no output")
    return Graph(gm, ops, output)


def affine_params(op: Op) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias of a conv/linear op, its BatchNorm folded in."""
    m = op.module
    w = m.weight.detach()
    b = None if m.bias is None else m.bias.detach()
    if op.bn is not None:
        w, b = fold_batchnorm(w, b, op.bn)
    return w, b
