"""The package's structure, read from its imports: no circle, and no import upwards.

Every module of ``hudd_core`` has a layer (:data:`LAYERS`, matched by the longest
prefix). A module may import modules of its own layer or of lower ones, never of a higher
one, and the graph of imports (function-level imports included) has no cycle. A new
module must be given a layer here: the test names it otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hudd_core"

# Lowest first. The steps follow the pipeline's order: a step never imports a later step.
LAYERS: list[tuple[str, ...]] = [
    (
        "hudd_core",
        "hudd_core._ext",
        "hudd_core.options",
        "hudd_core.config",
        "hudd_core.fileio",
        "hudd_core.progress",
        "hudd_core.lock",
        "hudd_core.plots",
    ),
    (
        "hudd_core.store",
        "hudd_core.runstate",
        "hudd_core.data",
        "hudd_core.distance",
        "hudd_core.search",
        "hudd_core.selection",
        "hudd_core.rcc",
    ),
    ("hudd_core.models", "hudd_core.lrp"),
    ("hudd_core.testing",),  # step 1
    ("hudd_core.heatmaps",),  # step 2
    ("hudd_core.feature_model", "hudd_core.cluster", "hudd_core.inspection"),  # step 3
    ("hudd_core.selection", "hudd_core.assign"),  # step 4
    ("hudd_core.balance",),  # step 5
    ("hudd_core.baselines", "hudd_core.retrain", "hudd_core.tuning"),  # step 6
    ("hudd_core.report",),  # step 7
    (
        "hudd_core.choices",
        "hudd_core.engine_ray",
        "hudd_core.pipeline",
    ),  # the steps chained, or scaled out
    ("hudd_core.demo",),
    ("hudd_core.cli",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``hudd_core`` modules that ``path`` imports (``from pkg import sub`` counts as
    ``pkg.sub`` when ``sub`` is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found.update(subs or {target})
    return {m for m in found if m in known and m != name}


def layer_of(name: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        raise AssertionError(f"{name} has no layer in tests/test_imports.py LAYERS")
    return rank


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_no_import_upwards() -> None:
    upwards = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, deps in sorted(graph().items())
        for b in sorted(deps)
        if layer_of(b) > layer_of(a)
    ]
    assert upwards == []


def test_the_checks_can_fail() -> None:
    """The cycle finder and the layer rule see a circle and an upward import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert layer_of("hudd_core.cli.run") > layer_of("hudd_core.assign")
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("elsewhere.module")


MAX_FUNCTION_LINES = 60


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:function (lines)`` for each function of ``path`` longer than ``limit``."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT.parent)}:{node.name} ({node.end_lineno - node.lineno + 1})"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_over_60_lines() -> None:
    """Small functions a newcomer can read: none in ``hudd_core`` over 60 lines."""
    assert [f for p in modules().values() for f in long_functions(p)] == []
    assert long_functions(Path(__file__), limit=3)  # the check sees a long function
