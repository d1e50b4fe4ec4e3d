"""Graph capture: an unmodified ``nn.Module`` → the list of operations LRP walks.

``torch.fx`` records the forward pass; modules the composite has a rule for (and standard
``torch.nn`` layers) stay whole, custom modules are traced through, so residual additions,
gates and concatenations written in ``forward`` appear as graph nodes. Every node that
carries relevance (it depends on the input's values) gets its rule from the composite's
registry (:mod:`hudd_core.lrp.composites`); shape arithmetic (``x.size(0) // 2``,
assertions on shapes), parameters used directly in ``forward`` and optional extra inputs
left at their defaults are evaluated as constants. The composite's canonizers then rewrite
the graph (BatchNorm folded into the layer before it). An operation without a rule raises
:class:`UnsupportedOperation` naming it and the graph node. Tracing leaves the model as it
was (a forward that caches values would otherwise keep fx Proxies). Where torch.fx cannot
trace a model (Python control flow on a tensor's value), a batch is run through it and the
graph recorded (:mod:`hudd_core.lrp.record`); the engine does that per batch shape.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> [(op.name, type(op.rule).__name__) for op in capture(net).ops]
    [('input_1', 'NoneType'), ('_0', 'PositiveWeights'), ('_1', 'Pass'), ('_2', 'PositiveWeights')]
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from hudd_core.lrp.composites import (
    CONVOLUTIONS,
    FUNCTIONAL_CONVOLUTIONS,
    IDENTITIES,
    Composite,
    get_composite,
)
from hudd_core.lrp.oprules import Copy, Folded, Norm, OpRule, Pass, Product, WinnerTakeAll
from hudd_core.lrp.record import RecordingError, record
from hudd_core.lrp.rules import FunctionalAffine

# Calls whose result depends on a tensor's shape or type only, never its values.
_META_FUNCTIONS = {getattr, len, torch.zeros_like, torch.ones_like, torch.empty_like,
                   torch.full_like, torch.numel, torch._assert}  # fmt: skip
_META_METHODS = {"size", "dim", "numel", "type", "get_device", "new_zeros", "new_ones",
                 "new_empty", "new_full", "ndimension", "nelement"}  # fmt: skip
# The fields of torch.return_types results (max, min, sort, topk, ...) and their indices.
_ITEMS = {"values": 0, "indices": 1}
# In-place spellings and the out-of-place operation run instead (operands are kept).
_OUT_OF_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub,
                 operator.imul: operator.mul, operator.itruediv: operator.truediv,
                 torch.relu_: torch.relu}  # fmt: skip


class UnsupportedOperation(ValueError):
    """The model contains an operation LRP cannot propagate relevance through."""


class TracingFailed(UnsupportedOperation):
    """torch.fx cannot trace the model; :func:`capture` with an example batch records it."""


@dataclass
class Op:
    """One graph node: ``rule`` (``None`` for constants and shape computations) decides
    its LRP treatment, ``args`` are the relevance-carrying nodes it reads (by name),
    ``record`` the name its output relevance is recorded under."""

    name: str
    node: fx.Node
    rule: OpRule | None = None
    args: list[str] = field(default_factory=list)
    module: nn.Module | None = None
    qualname: str | None = None
    record: str | None = None
    target: object = None  # the function / method name run (out of place)
    call: Callable | None = None
    bn: nn.Module | None = None  # BatchNorm folded into this conv/linear
    first_conv: bool = False
    gates: frozenset[int] = frozenset()  # indices into args held constant by products

    @property
    def kind(self) -> str:
        """``"input"``, ``"const"`` (no relevance) or the rule's class name."""
        if self.node.op == "placeholder" and self.record == "input":
            return "input"
        return "const" if self.rule is None else type(self.rule).__name__

    def evaluate_args(self, env: dict, live: dict | None = None) -> tuple:
        live = live or {}
        return fx.node.map_arg(self.node.args, lambda n: live.get(n.name, env.get(n.name)))

    def evaluate_kwargs(self, env: dict, live: dict | None = None) -> dict:
        live = live or {}
        kw = fx.node.map_arg(self.node.kwargs, lambda n: live.get(n.name, env.get(n.name)))
        if kw.get("inplace"):
            kw = {**kw, "inplace": False}
        return kw

    def evaluate(self, env: dict, live: dict | None = None):
        """The node's value from ``env`` (``live`` replacing some inputs), never in place."""
        return self.call(*self.evaluate_args(env, live), **self.evaluate_kwargs(env, live))


@dataclass
class Graph:
    """The captured model: operations in execution order and the output node's name."""

    module: fx.GraphModule
    ops: list[Op]
    output: str
    recorded: bool = False  # recorded from one batch (torch.fx could not trace the model)

    @property
    def record_nodes(self) -> dict[str, str]:
        """``{recorded name: the name of the node whose output it is}``."""
        return {op.record: op.name for op in self.ops if op.record}

    @property
    def recordable(self) -> list[str]:
        """Every name relevance can be recorded under, in execution order."""
        return [op.record for op in self.ops if op.record]

    @property
    def default_layers(self) -> list[str]:
        """``input`` and every named module whose output is new neurons (not a view, a
        copy or a folded BatchNorm)."""
        return [
            op.record
            for op in self.ops
            if op.record == "input"
            or (
                (op.module is not None or isinstance(op.rule, FunctionalAffine))
                and op.rule is not None
                and op.rule.record
            )
        ]


class _Tracer(fx.Tracer):
    def __init__(self, composite: Composite) -> None:
        super().__init__()
        self.composite = composite

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self.composite.module_rule(qualname, m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def _functional_layer(op: Op) -> str | None:
    """The name a convolution called as a function (timm's weight-standardised ``StdConv2d``)
    is recorded under: the module it is called in, as if it were that module's layer."""
    stack = op.node.meta.get("nn_module_stack") or {}
    if not isinstance(op.rule, FunctionalAffine) or not stack:
        return None
    return list(stack.values())[-1][0]


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    inside = list(stack)[-1] if stack else ""
    return f"graph node {node.name!r}" + (f" in module {inside!r}" if inside else "")


def _method(name: str) -> Callable:
    def call(self, *args, **kwargs):
        return getattr(self, name)(*args, **kwargs)

    return call


def _attribute(root: nn.Module, target: str) -> Callable:
    def call():
        obj = root
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    return call


def _out_of_place_module(m: nn.Module) -> nn.Module:
    """``m`` itself, or a shallow copy running out of place (``inplace=True`` modules would
    overwrite the values the backward pass reads). The model is never modified."""
    if getattr(m, "inplace", False) is True:
        m = copy.copy(m)
        m.inplace = False
    return m


def _is_meta(node: fx.Node, live: set[str]) -> bool:
    """Whether a node is a constant for relevance: it reads no relevance-carrying value, or
    only the shape/type of one."""
    if node.meta.get("value_free") or not any(a.name in live for a in node.all_input_nodes):
        return True  # (recorded graphs: masks and indices hold no relevance)
    if node.op == "call_function":
        return node.target in _META_FUNCTIONS
    return node.op == "call_method" and node.target in _META_METHODS


def _bind(op: Op, node: fx.Node, gm: fx.GraphModule, modules: dict) -> None:
    """Sets what the op runs (out of place) and the key its rule is looked up under."""
    if node.op == "call_module":
        op.module, op.qualname = modules[node.target], node.target
        op.call = _out_of_place_module(op.module).forward  # the model's hooks do not fire
        op.target = type(op.module)
    elif node.op == "call_function":
        op.target = _OUT_OF_PLACE.get(node.target, node.target)
        op.call = op.target
    elif node.op == "call_method":
        name = node.target
        if name.endswith("_") and not name.startswith("_"):
            name = name[:-1]  # add_ -> add, relu_ -> relu
        op.target, op.call = name, _method(name)
    elif node.op == "get_attr":
        op.call = _attribute(gm, node.target)
    elif node.op == "placeholder":  # an extra input: its default value, or None
        default = node.args[0] if node.args else None
        op.call = lambda *_: default  # evaluate() passes the node's args: the default


def _rule_for(op: Op, node: fx.Node, composite: Composite, table: dict, first: bool) -> OpRule:
    if node.op == "call_module":
        rule = composite.module_rule(op.qualname, op.module, first)
        if rule is None:
            raise UnsupportedOperation(
                f"LRP has no rule for the layer {type(op.module).__name__} "
                f"(module {op.qualname!r}, {_where(node)}); register one with "
                "Composite.register_module or register_name"
            )
        return rule
    rule = table.get(op.target)
    if first and isinstance(rule, FunctionalAffine) and composite.first_conv is not None:
        rule = FunctionalAffine(composite.first_conv)
    if rule is None:
        name = op.target if node.op == "call_function" else f"Tensor.{op.target}"
        name = getattr(name, "__name__", str(name))
        raise UnsupportedOperation(
            f"LRP has no rule for the operation {name} ({_where(node)}); register one with "
            "Composite.register_function"
        )
    return rule


# Outputs of rectifiers: non-negative (ReLU, sigmoid, softmax, softplus) or with a damped
# negative part (LeakyReLU, PReLU, ELU, SELU, CELU, SiLU, GELU, Hardswish, Mish), the
# activations of CNNs; z+ is the published rule behind them. Not: Tanh, Hardtanh, identity.
_RECTIFIED_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Softmax, nn.Softplus,
                      nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.GELU,
                      nn.Hardswish, nn.Mish)  # fmt: skip
_RECTIFIED_FUNCTIONS = {F.relu, torch.relu, F.relu6, torch.sigmoid, F.sigmoid, F.hardsigmoid,
                        F.softmax, torch.softmax, F.softplus, F.leaky_relu, F.prelu, F.elu,
                        F.selu, F.celu, F.silu, F.gelu, F.hardswish, F.mish, "relu",
                        "sigmoid", "softmax"}  # fmt: skip
# Ops that keep their input's sign when every input carries relevance (no constant
# operand: a bias, a position embedding, a class token, a layer scale).
_SIGN_KEEPING = (Copy, WinnerTakeAll, Norm, Product)
_SIGN_KEEPING_PASS = (*IDENTITIES, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
                      F.alpha_dropout, "detach", "to", "float", "double", "type_as",
                      "contiguous")  # fmt: skip
_JOINS = {torch.cat, torch.concat, torch.concatenate, torch.stack}


def _non_negative(op: Op, signs: dict[str, bool]) -> bool:
    """Whether ``op``'s output is rectified (see above): the image, a rectifier's output,
    or pooling / views / concatenation / products of such values only. Decides the
    ``signed_linear`` rule of the layers reading it."""
    if op.record == "input":
        return True  # the image: pixels / 255
    if op.rule is None or not op.args:
        return False
    if op.module is not None:
        if isinstance(op.module, _RECTIFIED_MODULES):
            return True
        keeps = isinstance(op.rule, _SIGN_KEEPING) or isinstance(op.module, IDENTITIES)
    else:
        if op.target in _RECTIFIED_FUNCTIONS:
            return True
        keeps = isinstance(op.rule, _SIGN_KEEPING) or op.target in (*_SIGN_KEEPING_PASS,
                                                                     *_ARITHMETIC)  # fmt: skip
    if not keeps or isinstance(op.rule, Folded) or not all(signs.get(a) for a in op.args):
        return False
    if isinstance(op.rule, Copy) and op.target not in _JOINS:
        return True  # the other operands are indices and shapes
    if op.target in _NEGATING or (op.target in _ARITHMETIC and _negative_number(op.node)):
        return False  # x - y, -x, x + (-3): signed even for non-negative operands
    # sums, pools, products, joins: a constant operand (bias, class token) may be negative
    return all(n.name in op.args for n in op.node.all_input_nodes)


def _negative_number(node: fx.Node) -> bool:
    values = [*node.args, *node.kwargs.values()]
    return any(isinstance(v, int | float) and not isinstance(v, bool) and v < 0 for v in values)


# The image up to views, casts and an element-wise shift or scale by constants: the model's
# own pixel normalisation (timm's Gemma4 ViT: 2 (x - 0.5)).
_ARITHMETIC = {operator.add, torch.add, "add", operator.sub, torch.sub, "sub", operator.mul,
               torch.mul, "mul", operator.truediv, torch.div, "div"}  # fmt: skip
_NEGATING = {operator.sub, torch.sub, "sub", operator.neg, torch.neg, "neg"}


def _pixel_rule(op: Op, pixels: set[str]) -> OpRule | None:
    """Pass for an element-wise shift or scale of the image by constants (the model's own
    pixel normalisation is a change of the pixels' coordinates: relevance passes through it
    unchanged, as for a model normalised outside, whose input relevance is that of the
    normalised image; under Norm the constant's share of ``x - 0.5`` goes as
    ``x / (x - 0.5)`` and amplifies without bound). ``None``: not such an op. Adds the
    op's name to ``pixels`` when its output is still the image in that sense."""
    if len(op.args) != 1 or op.args[0] not in pixels or op.module is not None:
        return None
    operands = [a for a in (*op.node.args, *op.node.kwargs.values()) if isinstance(a, fx.Node)]
    if op.target in _ARITHMETIC and [a.name for a in operands].count(op.args[0]) == 1:
        pixels.add(op.name)  # (x * x is no scale: the image is one operand only)
        return Pass(record=False)
    if (isinstance(op.rule, Copy) and op.target not in _JOINS) or op.target in _SIGN_KEEPING_PASS:
        pixels.add(op.name)
    return None


def _signed_input_rule(op: Op, composite: Composite, signs: dict[str, bool]) -> OpRule:
    """The composite's ``signed_linear`` rule for a linear layer with the composite's
    ``linear`` rule whose input is not known to be non-negative (behind LayerNorm, a
    residual stream, attention), else the op's rule."""
    if (
        composite.signed_linear is None
        or op.rule is not composite.linear
        or all(signs.get(a) for a in op.args)
    ):
        return op.rule
    return composite.signed_linear


def _gates(op: Op, by_name: dict[str, Op]) -> frozenset[int]:
    """Indices of ``op.args`` produced by a gate (through views, copies, dropout)."""
    found = set()
    for i, name in enumerate(op.args):
        src = by_name[name]
        while isinstance(src.rule, Copy | Pass) and not src.rule.gate and len(src.args) == 1:
            src = by_name[src.args[0]]
        if src.rule is not None and src.rule.gate:
            found.add(i)
    return frozenset(found)


def _optional_arguments(model: nn.Module) -> dict | None:
    """The forward's arguments after the input that have defaults, at those defaults: the
    trace takes the branches a call with the input alone takes (``if mask is not None``)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    found = {p.name: p.default for p in params[1:]
             if p.kind in kinds and p.default is not inspect.Parameter.empty}  # fmt: skip
    return found or None


_CONTAINERS = (dict, list, set)


@contextmanager
def _kept_as_it_was(model: nn.Module):
    """torch.fx runs the model's forward on Proxies: a forward that caches (LeViT's
    attention-bias cache) or assigns attributes would keep Proxies in the model, and its
    next forward (or the next trace) would fail. Every module's attributes, and the items
    of the dicts, lists and sets among them, are put back as they were."""
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    items = [(v, copy.copy(v)) for _, attrs in saved for v in attrs.values()
             if isinstance(v, _CONTAINERS)]  # fmt: skip
    try:
        yield
    finally:
        for m, attrs in saved:
            m.__dict__.clear()
            m.__dict__.update(attrs)
        for v, before in items:
            if isinstance(v, dict):
                v.clear()
                v.update(before)
            elif isinstance(v, list):
                v[:] = before
            else:
                v.clear()
                v.update(before)


def _trace(
    model: nn.Module, composite: Composite, example: torch.Tensor | None
) -> tuple[fx.GraphModule, fx.Graph, bool]:
    """``(graph module, graph, recorded)``: torch.fx's trace, else (with an example) the
    recording of a forward run (:mod:`hudd_core.lrp.record`)."""
    tracer = _Tracer(composite)
    try:
        with _kept_as_it_was(model):  # the constants fx puts on the model go to gm only
            g = tracer.trace(model, concrete_args=_optional_arguments(model))
            return fx.GraphModule(tracer.root, g), g, False
    except Exception as exc:  # fx cannot trace data-dependent control flow
        if example is None:
            raise TracingFailed(f"torch.fx cannot trace the model: {exc}") from exc
    try:
        with _kept_as_it_was(model):
            gm, g = record(model, example, tracer.is_leaf_module)
    except RecordingError as exc:
        raise UnsupportedOperation(str(exc)) from exc
    return gm, g, True


def _items_as_getitem(node: fx.Node) -> None:
    """``torch.max(x, dim).values``: an item of the result, not a property of it."""
    if node.op == "call_function" and node.target is getattr and node.args[1] in _ITEMS:
        node.target, node.args = operator.getitem, (node.args[0], _ITEMS[node.args[1]])


def _output_name(node: fx.Node, live: set[str]) -> str:
    """The one tensor the graph's output node returns."""
    outs = list(node.all_input_nodes)
    if len(outs) != 1 or outs[0].name not in live:
        raise UnsupportedOperation(
            "LRP needs a model with a single tensor output "
            f"(graph node {node.name!r} returns {node.args[0]!r})"
        )
    return outs[0].name


def _record_name(op: Op, seen: dict[str, int]) -> str:
    """The layer name an op's relevance is recorded under: its module's name (or its
    functional layer's), numbered ``#k`` from the second call on; else the node's name."""
    layer = op.qualname if op.module is not None else _functional_layer(op)
    if layer is None:
        return op.node.name
    k = seen.get(layer, 0)
    seen[layer] = k + 1
    return layer if k == 0 else f"{layer}#{k}"


def capture(
    model: nn.Module, composite: str | Composite = "hudd", example: torch.Tensor | None = None
) -> Graph:
    """Traces ``model`` (never modified) into a :class:`Graph` with ``composite``'s rules.
    Where torch.fx cannot trace it, ``example`` (a batch) is run through the model and the
    operations it meets are recorded instead (:mod:`hudd_core.lrp.record`): the graph of
    that batch's shape (:attr:`Graph.recorded`).

    Raises:
        TracingFailed: torch.fx cannot trace the model and no ``example`` is given.
        UnsupportedOperation: for an operation without a rule, naming the operation and the
            graph node (and the module it sits in).
    """
    composite = get_composite(composite)
    gm, g, recorded = _trace(model, composite, example)
    modules = dict(gm.named_modules())
    table = composite.function_table()
    ops: list[Op] = []
    by_name: dict[str, Op] = {}
    live: set[str] = set()
    seen: dict[str, int] = {}
    signs: dict[str, bool] = {}  # op name -> its output is known to be non-negative
    pixels: set[str] = set()  # ops whose output is the image, shifted or scaled
    output = None
    first_conv_done = False
    for node in g.nodes:
        _items_as_getitem(node)
        if node.op == "output":
            output = _output_name(node, live)
            continue
        op = Op(node.name, node)
        _bind(op, node, gm, modules)
        if node.op == "placeholder" and not live:
            op.record = "input"
            live.add(node.name)
            pixels.add(node.name)
        elif node.op == "placeholder" and not node.args:
            raise UnsupportedOperation(f"LRP needs a model with one input ({_where(node)})")
        elif node.op not in ("placeholder", "get_attr") and not _is_meta(node, live):
            live.add(node.name)
            op.args = [a.name for a in node.all_input_nodes if a.name in live]
            first = not first_conv_done and (isinstance(op.module, CONVOLUTIONS)
                                             or op.target in FUNCTIONAL_CONVOLUTIONS)  # fmt: skip
            op.rule = _rule_for(op, node, composite, table, first)
            op.first_conv, first_conv_done = first, first_conv_done or first
            op.record = _record_name(op, seen)
            op.gates = _gates(op, by_name)
            op.rule = _pixel_rule(op, pixels) or _signed_input_rule(op, composite, signs)
        signs[op.name] = _non_negative(op, signs)
        ops.append(op)
        by_name[op.name] = op
    if output is None:
        raise UnsupportedOperation("the traced model has no output")
    graph = Graph(gm, ops, output, recorded)
    for canonizer in composite.canonizers:
        canonizer.apply(graph)
    return graph
