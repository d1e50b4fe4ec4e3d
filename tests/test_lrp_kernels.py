"""Compiled LRP kernels (CPU here, CUDA under the `gpu` marker) against their plain-torch
reference twins in hudd_core.lrp.kernels."""

from __future__ import annotations

import pytest
import torch

from hudd_core.lrp import kernels as K

DTYPES = [torch.float32, torch.float64]


def _close(a, b, dtype):
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max().clamp_min(1)))


def _with_zeros(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[::7] = 0.0  # exact zeros take the +eps side of the stabiliser
    return t


def _cases(device: str):
    """Yields (name, compiled result, reference result, dtype) for every kernel."""
    g = torch.Generator().manual_seed(0)
    for dtype in DTYPES:

        def rnd(*shape, dtype=dtype):
            return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)

        r, z = rnd(3, 50), _with_zeros(rnd(3, 50))
        yield (
            "divide",
            K.stabilized_divide(r, z, 1e-3, 2.0),
            K.stabilized_divide_reference(r, z, 1e-3, 2.0),
            dtype,
        )
        z2, gate = _with_zeros(rnd(3, 2, 50)), _with_zeros(rnd(3, 50))
        yield (
            "divide_pair",
            K.divide_pair(r, z2, 1e-3, 2.0, -1.0),
            K.divide_pair_reference(r, z2, 1e-3, 2.0, -1.0),
            dtype,
        )
        yield (
            "divide_gate",
            K.divide_pair(r, z2, 1e-3, 1.0, 1.0, gate),
            (K.divide_pair_reference(r, z2, 1e-3, 1.0, 1.0, gate)),
            dtype,
        )
        x = _with_zeros(rnd(4, 3, 5, 5))
        for mode in (K.POSNEG, K.BOX):
            yield (
                f"split{mode}",
                K.split_input(x, mode, -0.5, 2.0),
                K.split_input_reference(x, mode, -0.5, 2.0),
                dtype,
            )
        for mode in (K.PLAIN, K.POSNEG, K.BOX):
            c = rnd(4, K.PARTS[mode], 75)
            yield (
                f"product{mode}",
                K.contribution_product(x, c, mode, -0.5, 2.0),
                (K.contribution_product_reference(x, c, mode, -0.5, 2.0)),
                dtype,
            )
            acc, acc_ref = rnd(*x.shape), None
            acc_ref = acc.clone()
            yield (
                f"product{mode}_acc",
                K.contribution_product(x, c, mode, -0.5, 2.0, out=acc),
                (K.contribution_product_reference(x, c, mode, -0.5, 2.0, out=acc_ref)),
                dtype,
            )
        # Max pooling with overlapping windows: several outputs can share a winner.
        xp = rnd(2, 3, 9, 9)
        for k, s, p in ((2, 2, 0), (3, 1, 1), (3, 2, 1)):
            out, idx = torch.nn.functional.max_pool2d(xp, k, s, p, return_indices=True)
            rr = rnd(*out.shape)
            yield (
                f"maxpool{k}{s}{p}",
                K.maxpool_route(rr, idx, xp.shape),
                (K.maxpool_route_reference(rr, idx, xp.shape)),
                dtype,
            )
            base = rnd(*xp.shape)
            yield (
                f"maxpool{k}{s}{p}_acc",
                K.maxpool_route(rr, idx, xp.shape, base.clone()),
                (K.maxpool_route_reference(rr, idx, xp.shape, base.clone())),
                dtype,
            )
        # Average pooling: plain, padded with and without counting the padding, adaptive
        # (down and up), and a 1-D pool in 2-D form.
        xa = rnd(2, 3, 10, 9)
        pools = [
            (torch.nn.AvgPool2d(2), (2, 2, 2, 2, 0, 0, 0, 1)),
            (torch.nn.AvgPool2d(3, 2, 1), (3, 3, 2, 2, 1, 1, 0, 1)),
            (torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False), (3, 3, 2, 2, 1, 1, 0, 0)),
            (torch.nn.AdaptiveAvgPool2d((3, 4)), (0, 0, 0, 0, 0, 0, 1, 1)),
            (torch.nn.AdaptiveAvgPool2d((13, 11)), (0, 0, 0, 0, 0, 0, 1, 1)),
        ]
        for i, (pool, geo) in enumerate(pools):
            za = pool(xa)
            ra = rnd(*za.shape)
            yield (
                f"avgpool{i}",
                K.avgpool_redistribute(xa, za, ra, 1e-6, geo),
                (K.avgpool_redistribute_reference(xa, za, ra, 1e-6, geo)),
                dtype,
            )
            base = rnd(*xa.shape)
            yield (
                f"avgpool{i}_acc",
                K.avgpool_redistribute(xa, za, ra, 1e-6, geo, out=base.clone()),
                K.avgpool_redistribute_reference(xa, za, ra, 1e-6, geo, out=base.clone()),
                dtype,
            )
        a, b, rs = rnd(5, 40), rnd(5, 40), rnd(5, 40)
        got, ref = K.sum_split(a, b, rs, 1e-6), K.sum_split_reference(a, b, rs, 1e-6)
        yield "sum_split_a", got[0], ref[0], dtype
        yield "sum_split_b", got[1], ref[1], dtype


def test_extension_has_the_lrp_kernels():
    assert K._C_HAS_LRP, "hudd_core._C lacks the LRP kernels: rebuild"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_kernels_match_reference(device):
    n = 0
    for name, got, ref, dtype in _cases(device):
        assert got.shape == ref.shape, name
        try:
            _close(got, ref, dtype)
        except AssertionError as exc:
            raise AssertionError(f"{name} ({dtype}, {device}): {exc}") from None
        n += 1
    assert n > 50


def test_reference_avgpool_is_the_pooling_gradient():
    """The avg-pool twin itself equals x * (d pool / d x)^T (r / stab(z))."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 10, 9, generator=g, dtype=torch.float64)
    for pool, geo in [
        (torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False), (3, 3, 2, 2, 1, 1, 0, 0)),
        (torch.nn.AdaptiveAvgPool2d((13, 4)), (0, 0, 0, 0, 0, 0, 1, 1)),
    ]:
        xx = x.clone().requires_grad_()
        z = pool(xx)
        r = torch.randn(z.shape, generator=g, dtype=torch.float64)
        (grad,) = torch.autograd.grad(z, xx, r / K.stab(z.detach(), 1e-6))
        ref = K.avgpool_redistribute_reference(x, z.detach(), r, 1e-6, geo)
        torch.testing.assert_close(ref, x * grad)


@pytest.mark.gpu
def test_engine_on_cuda_matches_cpu():
    from hudd_core.lrp import LRP
    from hudd_core.models import resnet

    torch.manual_seed(0)
    model = resnet(3, 1, 32).eval()
    x = torch.rand(8, 1, 32, 32)
    for composite in ("hudd", "epsilon-gamma-box"):
        cpu = LRP(model, composite)(x)
        gpu = LRP(model.cuda(), composite)(x.cuda())
        model.cpu()
        for name in cpu:
            scale = float(cpu[name].abs().max().clamp_min(1e-30))
            err = float((gpu[name].cpu() - cpu[name]).abs().max()) / scale
            assert err < 1e-3, (composite, name, err)
