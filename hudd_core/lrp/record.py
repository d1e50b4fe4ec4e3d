"""Graph capture by running the model: the fallback for models torch.fx cannot trace.

``torch.fx`` traces with symbolic values, so a forward whose Python control flow reads a
tensor (``if x.shape[1] != self.dim``, ``int(t)``, ``len`` on a tensor, a branch on a
value) stops it. :func:`record` instead runs the forward once on an example batch and
writes the same kind of ``fx.Graph`` from what happens: a ``TorchFunctionMode`` sees every
torch function and tensor method applied to a value that depends on the input, and module
hooks turn the modules the composite keeps whole into ``call_module`` nodes (Zennit's way
of finding layers, but the operations between modules are recorded too, so residual
additions and gates keep their rules). Everything else (parameters, values computed from
parameters only, Python numbers, the branches taken) is a constant of the graph.

The graph is the one path this batch took: the engine records one per input shape, dtype
and device. A model whose branches depend on the pixel values, not just on shapes, gets
the branches of the first batch of each shape.

Example:
    >>> import torch
    >>> class Branchy(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.lin = torch.nn.Linear(3, 2)
    ...     def forward(self, x):
    ...         if x.shape[1] == 3:  # fine for fx too; int(x.sum() > 0) would not be
    ...             x = x.relu()
    ...         return self.lin(x)
    >>> gm, g = record(Branchy(), torch.rand(1, 3), lambda m, name: isinstance(m, torch.nn.Linear))
    >>> [n.op for n in g.nodes]
    ['placeholder', 'call_method', 'call_module', 'output']
"""

from __future__ import annotations

import inspect
import operator
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

# Tensor dunders and the operator run instead; ``True``: the operands are swapped.
_DUNDERS = {
    "__add__": (operator.add, False), "__radd__": (operator.add, True),
    "__iadd__": (operator.add, False), "__sub__": (operator.sub, False),
    "__rsub__": (operator.sub, True), "__isub__": (operator.sub, False),
    "__mul__": (operator.mul, False), "__rmul__": (operator.mul, True),
    "__imul__": (operator.mul, False), "__truediv__": (operator.truediv, False),
    "__rtruediv__": (operator.truediv, True), "__itruediv__": (operator.truediv, False),
    "__div__": (operator.truediv, False), "__matmul__": (operator.matmul, False),
    "__rmatmul__": (operator.matmul, True), "__pow__": (operator.pow, False),
    "__rpow__": (operator.pow, True), "__neg__": (operator.neg, False),
    "__getitem__": (operator.getitem, False),
}  # fmt: skip
# Tensor properties that are operations on the values.
_PROPERTIES = {
    "T": lambda t: ("permute", tuple(range(t.dim() - 1, -1, -1))),
    "mT": lambda t: ("transpose", (-2, -1)),
    "data": lambda t: ("detach", ()),
}


def setitem(x: torch.Tensor, index, value) -> torch.Tensor:
    """``x`` with ``x[index] = value``, out of place: how a recorded graph writes into a
    tensor (relevance follows the values: the written slots' to ``value``)."""
    out = x.clone()
    out[index] = value
    return out


class RecordingError(RuntimeError):
    """The forward did something the recorder cannot write as a graph."""


class _Recorder(TorchFunctionMode):
    """Writes the operations on input-dependent tensors into ``graph``."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        super().__init__()
        self.graph = graph
        self.nodes: dict[int, tuple[fx.Node, torch.Tensor]] = {}  # id -> (node, tensor kept)
        self.attrs: dict[str, object] = {}  # get_attr / call_module targets for the root
        self.names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        self.names.update({id(b): n for n, b in model.named_buffers(remove_duplicate=False)})
        self.depth = 0  # > 0 inside a module recorded whole
        self.stack: list[tuple[str, type]] = []  # the modules being run, outermost first

    # -- values <-> nodes ------------------------------------------------------------------

    def tracked(self, t) -> bool:
        return isinstance(t, torch.Tensor) and self.nodes.get(id(t), (None, None))[1] is t

    def bind(self, t: torch.Tensor, node: fx.Node) -> None:
        self.nodes[id(t)] = (node, t)
        node.meta["nn_module_stack"] = OrderedDict((q, (q, c)) for q, c in self.stack)
        node.meta["value_free"] = not (t.is_floating_point() or t.is_complex())

    def arg(self, v):
        """``v`` as a graph argument: its node, a ``get_attr`` of a parameter / buffer /
        constant tensor, or ``v`` itself."""
        if not isinstance(v, torch.Tensor):
            return v
        if self.tracked(v):
            return self.nodes[id(v)][0]
        name = self.names.get(id(v))
        if name is None:
            name = f"_recorded_constant{len(self.attrs)}"
        self.attrs.setdefault(name, v)
        return self.graph.get_attr(name)

    def args(self, tree):
        return pytree.tree_map(self.arg, tree)

    def any_tracked(self, tree) -> bool:
        return any(self.tracked(t) for t in pytree.tree_leaves(tree))

    def outputs(self, out, node: fx.Node) -> None:
        """Binds the tensors of ``out`` (a tensor, or a tuple/list of them) to ``node``."""
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
        elif isinstance(out, tuple | list):
            for i, item in enumerate(out):
                if isinstance(item, torch.Tensor):
                    self.bind(item, self.graph.call_function(operator.getitem, (node, i)))

    # -- torch functions ------------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth or not self.any_tracked((args, kwargs)):
            return out
        name = getattr(func, "__name__", "")
        if name == "__setitem__":  # x[i] = v: x is now the result of an out-of-place write
            node = self.graph.call_function(setitem, tuple(self.args(tuple(args))))
            self.bind(args[0], node)
            return out
        if not any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(out)):
            return out  # shapes, sizes, Python numbers: constants of this recording
        if name == "__get__":  # a property: x.T, x.mT, x.data
            prop = getattr(getattr(func, "__self__", None), "__name__", "")
            if prop not in _PROPERTIES:
                raise RecordingError(f"LRP cannot follow the tensor property {prop!r}")
            method, extra = _PROPERTIES[prop](args[0])
            node = self.graph.call_method(method, (self.arg(args[0]), *extra))
        elif name in _DUNDERS:
            target, swap = _DUNDERS[name]
            a = self.args(args)
            node = self.graph.call_function(target, (a[1], a[0]) if swap else tuple(a))
        elif name == "__iter__":
            node = self.graph.call_method("unbind", (self.arg(args[0]),))
            out = tuple(out)
        elif getattr(torch.Tensor, name, None) is func:
            node = self.graph.call_method(name, self.args(tuple(args)), self.args(kwargs))
        else:
            node = self.graph.call_function(func, self.args(tuple(args)), self.args(kwargs))
        self.outputs(out, node)
        return iter(out) if name == "__iter__" else out

    # -- modules ----------------------------------------------------------------------------

    def enter(self, qualname: str, leaf: bool):
        def hook(module, args, kwargs):
            self.stack.append((qualname, type(module)))
            if leaf or self.depth:
                self.depth += 1

        return hook

    def leave(self, qualname: str, leaf: bool):
        def hook(module, args, kwargs, out):
            self.stack.pop()
            if not (leaf or self.depth):
                return None
            self.depth -= 1
            if self.depth == 0 and self.any_tracked((args, kwargs)):
                self.attrs[qualname] = module
                node = self.graph.call_module(qualname, self.args(tuple(args)), self.args(kwargs))
                self.stack.append((qualname, type(module)))
                self.outputs(out, node)
                self.stack.pop()
            return None

        return hook


def record(
    model: nn.Module, example: torch.Tensor, is_leaf: Callable[[nn.Module, str], bool]
) -> tuple[fx.GraphModule, fx.Graph]:
    """Runs ``model`` on ``example`` (no autograd) and returns the graph of what it did;
    ``is_leaf(module, qualname)``: the modules kept whole (``call_module`` nodes)."""
    graph = fx.Graph()
    rec = _Recorder(model, graph)
    params = list(inspect.signature(model.forward).parameters) or ["x"]
    x = example.detach().clone()
    rec.bind(x, graph.placeholder(params[0]))
    handles = []
    try:
        for qualname, m in model.named_modules():
            leaf = bool(qualname) and is_leaf(m, qualname)
            handles.append(m.register_forward_pre_hook(rec.enter(qualname, leaf), with_kwargs=True))
            handles.append(m.register_forward_hook(rec.leave(qualname, leaf), with_kwargs=True))
        with torch.no_grad(), rec:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    if not rec.tracked(out):
        raise RecordingError(
            "LRP needs a model with a single tensor output that depends on the input"
        )
    graph.output(rec.nodes[id(out)][0])
    gm = fx.GraphModule(rec.attrs, graph)
    graph.eliminate_dead_code()  # what the output does not depend on (shape reads, ...)
    gm.recompile()
    return gm, graph
