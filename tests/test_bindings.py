"""The checks of hudd_core._C's entry points (CPU tensors here; the CUDA entry points run
the same checks, see tests/test_gpu_kernels.py) and the choice between the compiled
kernels and their torch twins (no kernel image, CPU-only build on a GPU machine)."""

from __future__ import annotations

import types
import warnings

import pytest
import torch

from hudd_core import _ext
from hudd_core._ext import _C

F32, F64 = torch.float32, torch.float64
B, N = 3, 5


def z(*shape, dtype=F32):
    return torch.zeros(shape, dtype=dtype)


def noncontig(*shape, dtype=F32):
    return torch.zeros((*shape[:-1], 2 * shape[-1]), dtype=dtype)[..., ::2]


# One valid call per entry point: (function, keyword arguments). Each case below changes
# one argument and names the message that must come back.
def valid_calls():
    n = 6  # points behind the condensed vectors
    # fmt: off
    return {
        "lrp_divide": (_C.lrp_divide, dict(r=z(B, N), z=z(B, 2, N), gate=z(B, N), batch=B, n=N,
                       eps=1e-6, cp=1.0, cn=-1.0, parts=2, out=z(B, 2, N))),
        "lrp_split": (_C.lrp_split, dict(x=z(B, N), batch=B, n=N, mode=2, low=0.0, high=1.0,
                      out=z(B, 3, N))),
        "lrp_product": (_C.lrp_product, dict(x=z(B, N), c=z(B, 2, N), batch=B, n=N, mode=1,
                        low=0.0, high=1.0, accumulate=False, out=z(B, N))),
        "lrp_maxpool_route": (_C.lrp_maxpool_route, dict(r=z(B, 4), idx=torch.zeros((B, 4),
                              dtype=torch.int64), planes=B, n_out=4, n_in=N, accumulate=False,
                              deterministic=True, out=z(B, N))),
        "lrp_avgpool": (_C.lrp_avgpool, dict(x=z(B, 4, 4), z=z(B, 2, 2), r=z(B, 2, 2), planes=B,
                        hi=4, wi=4, ho=2, wo=2, geometry=[2, 2, 2, 2, 0, 0, 0, 1], eps=1e-6,
                        accumulate=False, out=z(B, 4, 4))),
        "lrp_sum_split": (_C.lrp_sum_split, dict(a=z(N), b=z(N), r=z(N), n=N, eps=1e-6, ra=z(N),
                          rb=z(N))),
        "center_rows": (_C.center_rows, dict(x=z(4, N), mean=z(N), out=z(4, N),
                        sqnorm=z(4, dtype=F64))),
        "pdist_epilogue": (_C.pdist_epilogue, dict(gram=z(2, 3), nx=z(2, dtype=F64),
                           ny=z(3, dtype=F64), row0=0, col0=2, xi=z(2, N), xj=z(3, N), tau=0.05,
                           n=n, out=z(15, dtype=F64))),
        "cdist_epilogue": (_C.cdist_epilogue, dict(gram=z(2, 3), nx=z(2, dtype=F64),
                           ny=z(3, dtype=F64), xi=z(2, N), xj=z(3, N), tau=0.05,
                           out=z(2, 3, dtype=F64))),
        "condensed_row_max": (_C.condensed_row_max, dict(condensed=z(15, dtype=F64), n=n,
                              out=z(n, dtype=F64))),
        "condensed_rows": (_C.condensed_rows, dict(condensed=z(15, dtype=F64), n=n, r0=1, r1=4,
                           scale=z(n, dtype=F64), out=z(3, n))),
    }
    # fmt: on


# fmt: off
BAD = [
    # divide_pair's z2 must hold 2·b·n elements
    ("lrp_divide", {"z": z(B, N)}, r"lrp_divide: z2 must hold 30 elements, got 15"),
    ("lrp_divide", {"gate": z(B, N + 1)}, r"gate must hold 15 elements, got 18"),
    ("lrp_divide", {"r": z(B, N, dtype=F64)}, r"z2 must be float64, got float32"),
    ("lrp_divide", {"out": noncontig(B, 2, N)}, r"out must be contiguous"),
    ("lrp_divide", {"parts": 3}, r"parts must be 1 or 2"),
    ("lrp_divide", {"parts": 1, "z": z(B, N), "out": z(B, N)}, r"gate needs parts == 2"),
    ("lrp_divide", {"r": z(B, N, dtype=torch.float16)}, r"z2 must be float16"),
    ("lrp_divide", {"gate": [0.0] * 15}, r"gate must be a torch.Tensor"),
    ("lrp_split", {"out": z(B, 2, N)}, r"lrp_split: out must hold 45 elements, got 30"),
    ("lrp_split", {"mode": 7}, r"mode must be 0 \(plain\), 1 \(pos/neg\) or 2 \(box\)"),
    ("lrp_split", {"batch": -1}, r"batch must be >= 0"),
    ("lrp_split", {"batch": 2**40, "n": 2**40}, r"batch \* n is too large"),
    ("lrp_split", {"x": z(B, N, dtype=torch.int32), "out": z(B, 3, N, dtype=torch.int32)},
     r"x must be float32 or float64, got int32"),
    ("lrp_product", {"c": z(B, 3, N)}, r"c must hold 30 elements, got 45"),
    ("lrp_product", {"x": noncontig(B, N)}, r"x must be contiguous"),
    ("lrp_maxpool_route", {"idx": z(B, 4)}, r"idx must be int64, got float32"),
    ("lrp_maxpool_route", {"idx": torch.full((B, 4), N, dtype=torch.int64)},
     r"idx holds 12 indices outside \[0, n_in = 5\)"),
    ("lrp_maxpool_route", {"out": z(B, N - 1)}, r"out must hold 15 elements, got 12"),
    ("lrp_avgpool", {"geometry": [2, 2, 2]}, r"geometry needs 8 entries, got 3"),
    ("lrp_avgpool", {"geometry": [2, 2, 0, 2, 0, 0, 0, 1]}, r"positive kernel sizes and strides"),
    ("lrp_avgpool", {"z": z(B, 3, 3)}, r"z must hold 12 elements, got 27"),
    ("lrp_avgpool", {"ho": 0, "wo": 0, "z": z(0), "r": z(0)}, r"ho, wo must be positive"),
    ("lrp_sum_split", {"rb": z(N + 1)}, r"rb must hold 5 elements, got 6"),
    ("center_rows", {"mean": z(N + 1)}, r"center_rows: mean must hold 5 elements, got 6"),
    ("center_rows", {"sqnorm": z(4)}, r"sqnorm must be float64, got float32"),
    ("center_rows", {"out": z(5, N)}, r"out must be 2-D of 4 x 5, got shape \(5, 5\)"),
    ("center_rows", {"x": z(4, N, 1)}, r"x must be 2-D"),
    ("pdist_epilogue", {"ny": z(2, dtype=F64)}, r"ny must hold 3 elements, got 2"),
    ("pdist_epilogue", {"xj": z(3, N + 1)}, r"xj must be 2-D of 3 x 5"),
    ("pdist_epilogue", {"col0": 4}, r"col0 \+ cols must lie in \[0, n = 6\]"),
    ("pdist_epilogue", {"row0": -1}, r"row0 \+ rows must lie in"),
    ("pdist_epilogue", {"out": z(14, dtype=F64)}, r"out must hold 15 elements, got 14"),
    ("pdist_epilogue", {"gram": z(3, 2).T}, r"gram must have contiguous rows"),
    ("cdist_epilogue", {"out": z(3, 2, dtype=F64)}, r"out must be 2-D of 2 x 3"),
    ("condensed_row_max", {"n": 7}, r"condensed must hold 21 elements, got 15"),
    ("condensed_row_max", {"n": -2}, r"n must be >= 0"),
    ("condensed_row_max", {"n": 2**32}, r"n is too large"),
    ("condensed_rows", {"r1": 7}, r"r0, r1 must satisfy 0 <= r0 <= r1 <= n = 6"),
    ("condensed_rows", {"out": z(3, 6, dtype=F64)}, r"out must be float32, got float64"),
    ("condensed_rows", {"scale": z(5, dtype=F64)}, r"scale must hold 6 elements, got 5"),
]
# fmt: on


@pytest.mark.parametrize(("op", "change", "message"), BAD)
def test_bad_arguments_raise_value_error_naming_them(op, change, message):
    fn, kwargs = valid_calls()[op]
    with pytest.raises(ValueError, match=message):
        fn(**{**kwargs, **change})


@pytest.mark.parametrize("op", sorted(valid_calls()))
def test_valid_calls_run_and_other_devices_are_refused(op):
    fn, kwargs = valid_calls()[op]
    fn(**kwargs)  # the baseline of every BAD case is itself accepted
    # A tensor on another device than the first one is refused (meta: no memory at all).
    names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    moved = {**kwargs, names[-1]: kwargs[names[-1]].to("meta")}
    with pytest.raises(ValueError, match=rf"{names[-1]} must be on the CPU or a CUDA device"):
        fn(**moved)


def test_padded_rows_are_accepted_where_the_kernel_reads_a_leading_dimension():
    """GEMM blocks and cdist outputs are views with padded rows: the epilogues take the
    row stride from the tensor (no copy), and write nothing outside the view."""
    fn, kwargs = valid_calls()["cdist_epilogue"]
    big = torch.full((2, 8), -1.0, dtype=F64)
    fn(**{**kwargs, "gram": torch.ones(2, 7)[:, 2:5], "out": big[:, 1:4]})
    assert (big[:, 1:4] >= 0).all() and (big[:, :1] == -1).all() and (big[:, 4:] == -1).all()


def test_cuda_archs_lists_every_architecture():
    if not _C.cuda_compiled():
        assert _C.cuda_archs() == []
        return
    want = ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120", "compute_120"]
    assert _C.cuda_archs() == want


def test_kernel_image_error_without_a_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert _C.kernel_image_error(0) != ""


# -- the compiled kernels or their twins -------------------------------------------------------


def facts(**change) -> _ext.CudaFacts:
    good = _ext.CudaFacts(True, True, True, "", "sm_89", ("sm_75", "sm_89", "compute_120"))
    return _ext.CudaFacts(**{**good.__dict__, **change})


def test_decide():
    assert _ext.decide(facts()) == (True, None)
    assert _ext.decide(facts(torch_sees_cuda=False, compiled=False)) == (False, None)
    usable, warning = _ext.decide(facts(compiled=False))
    assert not usable and "built without CUDA although torch sees a GPU" in warning
    usable, warning = _ext.decide(facts(runtime_sees_device=False))
    assert not usable and "finds no device" in warning
    usable, warning = _ext.decide(facts(image_error="no kernel image", arch="sm_61"))
    assert not usable and "sm_61" in warning and "sm_75, sm_89, compute_120" in warning


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch 'sees' one GPU; the test sets the facts _ext would read off it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _ext._usable_on.cache_clear()
    yield lambda f: monkeypatch.setattr(_ext, "gather_facts", lambda device: f)
    _ext._usable_on.cache_clear()


def test_no_kernel_image_falls_back_to_the_twins_with_a_warning(fake_gpu):
    fake_gpu(facts(image_error="no kernel image is available", arch="sm_61"))
    gpu_tensor = types.SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.warns(RuntimeWarning, match=r"no kernel image for this GPU \(sm_61"):
        assert not _ext.compiled_for(gpu_tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device, not at every call
        assert not _ext.cuda_usable(0)
    assert _ext.compiled_for(torch.zeros(1))  # the CPU kernels are unaffected


def test_kernels_route_to_the_twins_when_compiled_for_says_no(monkeypatch):
    """The dispatch wrappers take the twin whenever _ext says _C cannot run there."""
    from hudd_core import distance as hd
    from hudd_core.lrp import kernels as K

    calls = []
    for mod in (K, hd):
        monkeypatch.setattr(mod, "compiled_for", lambda t: calls.append(t) or False)
    monkeypatch.setattr(_C, "lrp_divide", None)  # would raise if called
    r, z2 = torch.rand(2, 3), torch.rand(2, 2, 3) + 0.5
    torch.testing.assert_close(
        K.divide_pair(r, z2, 1e-6, 2.0, -1.0), K.divide_pair_reference(r, z2, 1e-6, 2.0, -1.0)
    )
    d = torch.rand(10, dtype=F64)
    want = hd.condensed_rows_reference(d, 5, 0, 5, None).double().max(dim=1).values
    torch.testing.assert_close(hd.condensed_row_max(d, 5), want, rtol=1e-6, atol=0)
    assert len(calls) >= 2


def test_cpu_only_build_on_a_gpu_machine_warns(fake_gpu):
    fake_gpu(facts(compiled=False, runtime_sees_device=False, image_error="", arch="sm_90"))
    with pytest.warns(RuntimeWarning, match="built without CUDA although torch sees a GPU"):
        assert _ext.resolve_device("auto") == torch.device("cuda")


def test_resolve_device():
    if not torch.cuda.is_available():
        assert _ext.resolve_device("auto") == torch.device("cpu")
        assert _ext.resolve_device() == torch.device("cpu")
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            _ext.resolve_device("cuda")
    assert _ext.resolve_device(None, torch.device("cpu")) == torch.device("cpu")
    assert _ext.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device name"):
        _ext.resolve_device("gpu!")


def test_resolve_device_rejects_missing_gpu_index(fake_gpu):
    with pytest.raises(ValueError, match="this machine has 1 CUDA device"):
        _ext.resolve_device("cuda:3")


def test_training_and_the_kernels_share_one_device_rule():
    from hudd_core.models import train

    assert train.resolve_device is _ext.resolve_device
