"""CUDA kernels against their torch twins beyond the cases of test_distance.py and
test_lrp_kernels.py: grids past CUDA's launch limits, deterministic max-pool routing, the
binding checks on GPU tensors, the device guard, torch's streams and the kernel-image
fallback. Every test here needs a GPU (marker `gpu`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hudd_core import _ext
from hudd_core import distance as hd
from hudd_core._ext import _C
from hudd_core.lrp import kernels as K

pytestmark = pytest.mark.gpu


def _block(x: torch.Tensor, mean: torch.Tensor) -> hd._Block:
    c, s = hd.center_rows(x, mean)
    return hd._Block(0, x, c, s)


def test_the_probe_finds_a_kernel_image_for_this_gpu():
    assert _C.kernel_image_error(torch.cuda.current_device()) == ""
    major, minor = torch.cuda.get_device_capability()
    compiled = _C.cuda_archs()
    # Machine code for the GPU, or PTX the driver compiles for one newer than the list.
    assert f"sm_{major}{minor}" in compiled or (
        10 * major + minor > 120 and "compute_120" in compiled
    )


def test_cdist_epilogue_past_the_old_grid_limit():
    """1.1M rows: the former tile grid needed grid.y = 68 750 > 65 535."""
    g = torch.Generator(device="cuda").manual_seed(0)
    xi = torch.randn(1_100_000, 2, device="cuda", generator=g)
    xj = torch.randn(3, 2, device="cuda", generator=g)
    mean = xi[:1000].mean(0)  # one shift for both sides, as hudd_core.distance does
    bi, bj = _block(xi, mean), _block(xj, mean)
    gram = bi.centred @ bj.centred.T
    out = torch.empty(len(xi), 3, dtype=torch.float64, device="cuda")
    hd._cdist_epilogue(gram, bi, bj, 0.05, out)
    ref = hd._block_distances_reference(gram, bi, bj, 0.05)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-9)


def test_pdist_epilogue_on_a_padded_gram_block():
    x = torch.randn(300, 17, device="cuda", dtype=torch.float64)
    b = _block(x, x.mean(0))
    full = b.centred @ b.centred.T
    gram = full[40:140, 100:250]  # rows padded to 300: the kernel reads the row stride
    bi = hd._Block(40, x[40:140], b.centred[40:140], b.sqnorm[40:140])
    bj = hd._Block(100, x[100:250], b.centred[100:250], b.sqnorm[100:250])
    ours = torch.zeros(300 * 299 // 2, dtype=torch.float64, device="cuda")
    ref = torch.zeros_like(ours)
    hd._pdist_epilogue(gram, bi, bj, 300, 0.05, ours)
    hd.pdist_epilogue_reference(gram, bi, bj, 300, 0.05, ref)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [2, 257, 3001])
def test_condensed_row_max_and_rows_match_the_twins(n):
    d = torch.rand(n * (n - 1) // 2, dtype=torch.float64, device="cuda")
    want = hd.condensed_rows_reference(d, n, 0, n, None).double()
    got = hd.condensed_row_max(d, n)
    # Rows in float32 (the twin) vs float64 maxima: compare at float32 precision.
    torch.testing.assert_close(got.float(), want.max(dim=1).values.float())
    rows = hd.normalised_rows(d, n)
    a, b = n // 3, n - n // 4
    torch.testing.assert_close(rows.get(a, b), hd.condensed_rows_reference(d, n, a, b, got))


def test_condensed_rows_past_the_old_grid_limit():
    """70 000 rows in one call: the former kernel launched grid.y = rows > 65 535."""
    n = 70_000
    free, _ = torch.cuda.mem_get_info()
    if free < 48 * 2**30:
        pytest.skip("needs 48 GiB of free GPU memory")
    d = torch.rand(n * (n - 1) // 2, dtype=torch.float64, device="cuda")
    scale = torch.rand(n, dtype=torch.float64, device="cuda") + 0.5
    out = torch.empty((n, n), dtype=torch.float32, device="cuda")
    _C.condensed_rows(d, n, 0, n, scale, out)
    for a in (0, 65_534, n - 3):  # rows on both sides of the old limit
        want = hd.condensed_rows_reference(d, n, a, a + 3, scale)
        torch.testing.assert_close(out[a : a + 3], want)


def _overlapping_maxpool(dtype):
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(8, 16, 33, 33, device="cuda", dtype=dtype, generator=g).round(decimals=1)
    _, idx = torch.nn.functional.max_pool2d(x, 3, stride=1, return_indices=True)
    r = torch.randn(idx.shape, device="cuda", dtype=dtype, generator=g)
    return x, r, idx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maxpool_routing_is_deterministic_and_matches_the_twin(dtype):
    """Windows of 3 with stride 1 overlap, and rounded inputs tie: many outputs share a
    winner, the case where atomics made the sums run-dependent."""
    x, r, idx = _overlapping_maxpool(dtype)
    runs = [K.maxpool_route(r, idx, x.shape) for _ in range(5)]
    assert all(torch.equal(runs[0], other) for other in runs[1:])
    ref = K.maxpool_route_reference(r, idx, x.shape)
    torch.testing.assert_close(runs[0], ref)
    base = torch.randn_like(x)
    torch.testing.assert_close(K.maxpool_route(r, idx, x.shape, base.clone()), ref + base)
    fast = K.maxpool_route(r, idx, x.shape, deterministic=False)  # atomics: same up to rounding
    torch.testing.assert_close(fast, ref)


def test_cuda_entry_points_check_their_arguments():
    r, z2 = torch.zeros(3, 5, device="cuda"), torch.zeros(3, 5, device="cuda")
    out = torch.empty(3, 2, 5, device="cuda")
    with pytest.raises(ValueError, match="z2 must hold 30 elements, got 15"):
        _C.lrp_divide(r, z2, None, 3, 5, 1e-6, 1.0, -1.0, 2, out)
    with pytest.raises(ValueError, match=r"z2 is on cpu but r is on cuda:0"):
        _C.lrp_divide(r, torch.zeros(3, 2, 5), None, 3, 5, 1e-6, 1.0, -1.0, 2, out)
    with pytest.raises(ValueError, match="out must be contiguous"):
        _C.lrp_split(r, 3, 5, 1, 0.0, 1.0, torch.empty(3, 5, 4, device="cuda")[..., ::2])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_device_guard_runs_on_the_tensors_gpu():
    x = torch.randn(4, 1000, device="cuda:1")
    with torch.cuda.device(0):
        got = K.split_input(x, K.POSNEG)
    assert got.device == x.device
    torch.testing.assert_close(got, K.split_input_reference(x, K.POSNEG))
    with pytest.raises(ValueError, match=r"is on cuda:0 but x is on cuda:1"):
        _C.lrp_split(x, 4, 1000, 1, 0.0, 1.0, torch.empty(4, 2, 1000, device="cuda:0"))


def test_kernels_run_on_torchs_current_stream():
    side = torch.cuda.Stream()
    a = torch.randn(64, 4096, device="cuda")
    b, r = torch.randn_like(a), torch.randn_like(a)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        ra, rb = K.sum_split(a, b, r, 1e-6)
        ra2 = ra * 2  # queued behind the kernel on the same stream
    side.synchronize()
    ref = K.sum_split_reference(a, b, r, 1e-6)
    torch.testing.assert_close(ra2, 2 * ref[0])
    torch.testing.assert_close(rb, ref[1])


def test_simulated_missing_image_falls_back_to_the_twins(monkeypatch):
    monkeypatch.setenv(_ext.SIMULATE_NO_IMAGE_ENV, "1")
    _ext._usable_on.cache_clear()
    try:
        major, minor = torch.cuda.get_device_capability()
        arch = rf"no kernel image for this GPU \(sm_{major}{minor}"
        with pytest.warns(RuntimeWarning, match=arch):
            assert not _ext.cuda_usable()
        monkeypatch.setattr(_C, "lrp_divide", None)  # the twin must run
        r, z = torch.rand(2, 50, device="cuda"), torch.rand(2, 50, device="cuda") + 1
        torch.testing.assert_close(
            K.stabilized_divide(r, z, 1e-6), K.stabilized_divide_reference(r, z, 1e-6)
        )
    finally:
        _ext._usable_on.cache_clear()


def test_faiss_gpu_search_matches_numpy():
    from hudd_core import search as S

    if not S._faiss_gpu_available():
        pytest.skip("faiss-gpu is not installed (cannot be carried to the device machine)")
    rng = np.random.default_rng(5)
    members = rng.standard_normal((700, 96)).astype(np.float32)
    labels = rng.integers(1, 30, size=700)
    queries = torch.from_numpy(rng.standard_normal((300, 96)).astype(np.float32)).cuda()
    index = S.NearestClusterIndex(members, labels, backend="faiss-gpu")
    assert index.backend == "faiss-gpu" and index._members_t.is_cuda
    ref = S.nearest_member_reference(queries.cpu().numpy(), members, labels, index.clusters)
    np.testing.assert_allclose(index.search(queries), ref, rtol=1e-4, atol=1e-4)
