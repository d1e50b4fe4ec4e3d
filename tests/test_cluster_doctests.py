"""The docstring examples of the ClusterModule's modules run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["wicd", "knee", "cluster", "rcc", "rq1", "report.plots"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"hudd_core.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
