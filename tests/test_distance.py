"""hudd_core.distance against SciPy and against its own plain-torch reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist as scipy_cdist
from scipy.spatial.distance import pdist as scipy_pdist
from scipy.spatial.distance import squareform

from hudd_core import distance as hd
from hudd_core._ext import _C


def bound(dim: int, dtype=np.float32, tau: float = hd.DEFAULT_TAU) -> float:
    """The documented relative error bound: sqrt(D) * u / tau."""
    return math.sqrt(dim) * np.finfo(dtype).eps / 2 / tau


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    nz = ref > 0
    assert np.all(ours[~nz] == 0), "identical rows must give exactly 0"
    return float(np.max(np.abs(ours[nz] - ref[nz]) / ref[nz])) if nz.any() else 0.0


# resident rows with one syrk call, resident rows in GEMM blocks, streamed blocks
PATHS = pytest.mark.parametrize(
    ("block_memory", "syrk_bytes"), [(1 << 30, 1 << 30), (1 << 30, 0), (1 << 16, 1 << 30)]
)


@PATHS
def test_pdist_random_matches_scipy(rng, block_memory, syrk_bytes, monkeypatch):
    monkeypatch.setattr(hd, "SYRK_BYTES", syrk_bytes)
    X = rng.standard_normal((300, 700)).astype(np.float32)
    ours = hd.pdist(X, block_memory=block_memory)
    assert ours.dtype == np.float64 and ours.shape == (300 * 299 // 2,)
    assert rel_err(ours, scipy_pdist(X.astype(np.float64))) < bound(700)


@PATHS
def test_pdist_duplicate_heavy(rng, block_memory, syrk_bytes, monkeypatch):
    monkeypatch.setattr(hd, "SYRK_BYTES", syrk_bytes)
    base = rng.standard_normal((20, 500)).astype(np.float32) + 10.0  # far from the origin
    X = np.repeat(base, 6, axis=0)
    X[1::3] += (1e-5 * rng.standard_normal(X[1::3].shape)).astype(np.float32)
    ours = hd.pdist(X, block_memory=block_memory)
    ref = scipy_pdist(X.astype(np.float64))
    assert np.count_nonzero(ref == 0) > 100
    assert rel_err(ours, ref) < 1e-6  # near-identical pairs take the exact float64 path


@pytest.mark.slow
def test_pdist_large_dimension(rng):
    """At D = 50000 the plain GEMM form gave 0.055 on identical rows."""
    X = rng.random((40, 50_000), dtype=np.float32)
    X[20:] = X[:20]
    X[30:] += np.float32(1e-3)
    ours = hd.pdist(X)
    ref = scipy_pdist(X.astype(np.float64))
    assert rel_err(ours, ref) < bound(50_000)
    D = squareform(ours)
    assert np.all(D[np.arange(10), np.arange(10) + 20] == 0)
    assert np.all(D[np.arange(10, 20), np.arange(30, 40)] > 0)


def test_pdist_float64_and_float16_and_torch(rng):
    X = rng.standard_normal((50, 64))
    ref = scipy_pdist(X)
    assert rel_err(hd.pdist(X), ref) < 1e-12
    assert rel_err(hd.pdist(torch.from_numpy(X)), ref) < 1e-12
    X16 = X.astype(np.float16)
    assert rel_err(hd.pdist(X16), scipy_pdist(X16.astype(np.float64))) < bound(64)


def test_pdist_memmap(tmp_path, rng):
    X = rng.standard_normal((120, 300)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    out = np.lib.format.open_memmap(tmp_path / "d.npy", mode="w+", dtype=np.float64,
                                    shape=(120 * 119 // 2,))  # fmt: skip
    got = hd.pdist(np.load(tmp_path / "x.npy", mmap_mode="r"), block_memory=1 << 16, out=out)
    assert got is out
    assert rel_err(np.asarray(out), scipy_pdist(X.astype(np.float64))) < bound(300)


def test_cdist_matches_scipy(rng):
    X = rng.standard_normal((90, 200)).astype(np.float32)
    Y = np.concatenate([X[:5], rng.standard_normal((40, 200)).astype(np.float32)])
    ours = hd.cdist(X, Y, block_memory=1 << 15)
    ref = scipy_cdist(X.astype(np.float64), Y.astype(np.float64))
    assert ours.shape == (90, 45)
    assert np.all(ours[np.arange(5), np.arange(5)] == 0)
    assert rel_err(ours.ravel(), ref.ravel()) < bound(200)


def test_second_level_matches_reference_scheme(rng):
    X = rng.standard_normal((60, 40)).astype(np.float32)
    second, first = hd.second_level_pdist(X)
    D = squareform(scipy_pdist(X.astype(np.float64)))
    normalised = D / D.max(axis=1, keepdims=True)
    assert rel_err(first, squareform(D)) < bound(40)
    np.testing.assert_allclose(second, scipy_pdist(normalised), rtol=1e-5, atol=1e-6)


def test_compiled_kernels_equal_torch_reference(rng):
    X = torch.from_numpy(rng.standard_normal((70, 33)).astype(np.float32))
    X[10] = X[3]
    mean = X[:8].mean(0)
    c, s = hd.center_rows(X, mean)
    c_ref, s_ref = hd.center_rows_reference(X, mean)
    torch.testing.assert_close(c, c_ref)
    torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=1e-9)
    block = hd._Block(0, X, c, s)
    gram = c @ c.T
    n = 70
    ours = torch.zeros(n * (n - 1) // 2, dtype=torch.float64)
    ref = torch.zeros_like(ours)
    hd._pdist_epilogue(gram, block, block, n, 0.05, ours)
    hd.pdist_epilogue_reference(gram, block, block, n, 0.05, ref)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    rows = hd.normalised_rows(ours, n)
    torch.testing.assert_close(rows.get(5, 40), hd.condensed_rows_reference(
        ours, n, 5, 40, hd.condensed_row_max(ours, n)))  # fmt: skip
    full = torch.from_numpy(squareform(ours.numpy()))
    torch.testing.assert_close(hd.condensed_row_max(ours, n), full.max(dim=1).values)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((0, 3), np.float32), "empty"),
        (np.zeros((3, 0), np.float32), "empty"),
        (np.zeros(5, np.float32), "2-D"),
        (np.zeros((1, 4), np.float32), "at least 2 rows"),
        (np.array([["a", "b"]]), "unsupported dtype"),
    ],
)
def test_pdist_bad_input(X, message):
    with pytest.raises((ValueError, TypeError), match=message):
        hd.pdist(X)


@pytest.mark.parametrize("bad_row", [0, 57, 99])
def test_nan_and_inf_name_the_row(rng, bad_row):
    X = rng.standard_normal((100, 20)).astype(np.float32)
    X[bad_row, 3] = np.inf if bad_row % 2 else np.nan
    with pytest.raises(ValueError, match=f"row {bad_row} contains NaN or inf"):
        hd.pdist(X, block_memory=1 << 12)
    with pytest.raises(ValueError, match=f"Y: row {bad_row} "):
        hd.cdist(np.zeros((5, 20), np.float32), X)


def test_cdist_dimension_mismatch():
    with pytest.raises(ValueError, match="same number of columns: 3 != 4"):
        hd.cdist(np.zeros((2, 3)), np.zeros((2, 4)))


@pytest.mark.gpu
def test_cuda_matches_cpu_and_scipy(rng):
    X = rng.standard_normal((400, 900)).astype(np.float32)
    X[200:210] = X[:10]
    ref = scipy_pdist(X.astype(np.float64))
    for block_memory in (1 << 30, 1 << 18):
        ours = hd.pdist(torch.from_numpy(X).cuda(), block_memory=block_memory)
        assert rel_err(ours, ref) < bound(900)
    Y = rng.standard_normal((33, 900)).astype(np.float32)
    got = hd.cdist(X, Y, device="cuda")
    assert rel_err(got.ravel(), scipy_cdist(X, Y).ravel()) < bound(900)
    second, _ = hd.second_level_pdist(X[:150], device="cuda")
    second_cpu, _ = hd.second_level_pdist(X[:150])
    np.testing.assert_allclose(second, second_cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_kernels_equal_torch_reference(rng):
    X = torch.from_numpy(rng.standard_normal((70, 33)).astype(np.float32)).cuda()
    mean = X[:8].mean(0)
    c, s = hd.center_rows(X, mean)
    c_ref, s_ref = hd.center_rows_reference(X, mean)
    torch.testing.assert_close(c, c_ref)
    torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=1e-9)
    n = 70
    block = hd._Block(0, X, c, s)
    ours = torch.zeros(n * (n - 1) // 2, dtype=torch.float64, device="cuda")
    ref = torch.zeros_like(ours)
    hd._pdist_epilogue(c @ c.T, block, block, n, 0.05, ours)
    hd.pdist_epilogue_reference(c @ c.T, block, block, n, 0.05, ref)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        hd.condensed_row_max(ours, n),
        torch.from_numpy(squareform(ours.cpu().numpy())).cuda().max(1).values,
    )


def test_extension_reports_cuda_state():
    assert isinstance(_C.cuda_compiled(), bool)
    assert isinstance(_C.cuda_available(), bool)
    if not torch.cuda.is_available():
        assert not _C.cuda_available()
