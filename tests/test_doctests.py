"""Every docstring example of the package runs and holds (they are the API's first docs)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import hudd_core

SUBMODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(hudd_core.__path__, "hudd_core.")
    if not m.name.endswith("._C") and ".cli" not in m.name
)
MODULES = ["hudd_core", *SUBMODULES]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_step_modules_have_examples():
    steps = [
        "distance",
        "testing",
        "heatmaps",
        "cluster",
        "cluster.ward",
        "cluster.wicd",
        "assign",
        "fileio",
        "config",
        "runstate",
        "pipeline",
        "demo",
        "data.simulator",
        "data.generate",
        "models.checkpoint",
    ]
    for name in steps:
        finder = doctest.DocTestFinder()
        tests = finder.find(importlib.import_module(f"hudd_core.{name}"))
        assert sum(len(t.examples) for t in tests) > 0, name


def test_the_package_exports_every_step():
    for name in hudd_core.__all__:
        assert callable(getattr(hudd_core, name)) or name == "__version__", name
