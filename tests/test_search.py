"""hudd_core.search without FAISS: the fallback backends and the name of the one that runs
(simulated by hiding the faiss module; CI has faiss-cpu, so the FAISS path runs there too)."""

from __future__ import annotations

import numpy as np
import pytest

from hudd_core import search as S


@pytest.fixture
def case():
    rng = np.random.default_rng(3)
    members = rng.standard_normal((40, 12)).astype(np.float32)
    labels = rng.integers(1, 5, size=40)
    queries = rng.standard_normal((9, 12)).astype(np.float32)
    return members, labels, queries


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setattr(S, "_import_faiss", lambda: None)
    monkeypatch.setattr(S, "cuda_usable", lambda: False)


@pytest.mark.parametrize("requested", ["faiss", "faiss-gpu"])
def test_missing_faiss_falls_back_with_a_warning_naming_the_backend(case, no_faiss, requested):
    members, labels, queries = case
    with pytest.warns(RuntimeWarning, match=rf"--backend {requested}: .* searching with numpy"):
        index = S.NearestClusterIndex(members, labels, backend=requested)
    assert index.backend == "numpy"
    want = S.nearest_member_reference(queries, members, labels, np.unique(labels))
    np.testing.assert_array_equal(index.search(queries), want)


def test_auto_without_faiss_or_gpu_is_numpy(case, no_faiss):
    assert S.NearestClusterIndex(*case[:2]).backend == "numpy"


def test_auto_without_faiss_on_a_usable_gpu_is_torch(monkeypatch):
    monkeypatch.setattr(S, "_import_faiss", lambda: None)
    monkeypatch.setattr(S, "cuda_usable", lambda: True)
    assert S.resolve_backend("auto") == "torch"
    with pytest.warns(RuntimeWarning, match="searching with torch"):
        assert S.resolve_backend("faiss") == "torch"


def test_installed_faiss_is_used(case):
    pytest.importorskip("faiss")
    index = S.NearestClusterIndex(*case[:2], backend="faiss")
    assert index.backend == "faiss"
    members, labels, queries = case
    want = S.nearest_member_reference(queries, members, labels, np.unique(labels))
    np.testing.assert_allclose(index.search(queries), want, rtol=1e-4, atol=1e-4)


def test_queries_as_torch_tensors(case):
    import torch

    members, labels, queries = case
    index = S.NearestClusterIndex(members, labels, backend="torch")
    np.testing.assert_allclose(
        index.search(torch.from_numpy(queries).double()),
        index.search(queries),
        rtol=1e-6,
    )
