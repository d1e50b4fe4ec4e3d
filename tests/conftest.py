"""Shared fixtures and the `gpu` marker's skip rule."""

from __future__ import annotations

import numpy as np
import pytest

from hudd_core._ext import cuda_usable


def pytest_collection_modifyitems(config, items):
    if cuda_usable():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and the CUDA build of hudd_core._C")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
