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
        if item.get_closest_marker("gpu") is not None:  # not keywords: they hold dir names
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def model_workdir(tmp_path):
    """A factory of small work folders: ``make(sizes, task=..., name=...)`` generates
    simulator DataSets (32 × 32) under ``tmp_path/name`` and saves a randomly initialised
    model (AlexNet, or KPNet for keypoints; most test images come out Wrong) as the
    checkpoint ``T/DNNModels/m.pt`` + sidecar. Returns a namespace with ``root``,
    ``data``, ``T``, ``pt`` and ``meta``."""
    from types import SimpleNamespace

    import torch

    from hudd_core.data import simulator as sim
    from hudd_core.data.generate import generate
    from hudd_core.models import alexnet, kpnet
    from hudd_core.models.checkpoint import save_checkpoint

    def make(sizes=None, *, task="classifier", name="work", seed=0):
        root = tmp_path / name
        data, T = root / "DataSets", root / "T"
        generate(data, sizes=sizes or {"TestSet": 24}, task=task, image_size=32, seed=seed,
                 progress=False)  # fmt: skip
        torch.manual_seed(seed)
        if task == "classifier":
            kwargs = {"num_classes": len(sim.CLASSES), "in_channels": 1, "input_size": 32}
            model, classes = alexnet(**kwargs), list(sim.CLASSES)
        else:
            kwargs = {"num_keypoints": len(sim.KEYPOINTS), "in_channels": 1, "input_size": 32}
            model, classes = kpnet(**kwargs), []
        meta = {"model": "alexnet" if task == "classifier" else "kpnet", "kwargs": kwargs,
                "task": task, "classes": classes, "in_channels": 1, "input_size": 32}  # fmt: skip
        pt = save_checkpoint(model, T / "DNNModels", "m", meta)
        return SimpleNamespace(root=root, data=data, T=T, pt=pt, meta=meta)

    return make


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs (the cluster of RAY_ADDRESS when set), shut down
    after the module's tests; its address. Skips without Ray."""
    import os

    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
