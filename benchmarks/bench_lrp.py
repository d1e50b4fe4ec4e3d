"""All-layer LRP heatmaps: hudd_core vs Zennit vs Captum's LayerLRP vs the practical limit.

Every contender explains the same batch (the predicted class) and records the relevance
of every layer hudd_core records by default:
  ours    hudd_core.lrp.LRP, composite ``hudd`` (one pass, compiled kernels)
  zennit  the same composite in Zennit (BatchNorm merged, residual sums as Zennit ``Sum``),
          every layer through retained gradients of the module outputs
  captum  captum.attr.LayerLRP over the same layers (its own epsilon rules; orientation only)
  limit   one forward and one backward pass to the input only (torch.autograd.grad with
          respect to the input, no weight gradients): what any LRP costs at least
All in this one process, float32 on the CPU; medians of --runs interleaved runs after a
warm-up.

    python benchmarks/bench_lrp.py                       # AlexNet-style 64x64, ResNet-style
    python benchmarks/bench_lrp.py --batch 64 --runs 3 --device cuda --name lrp_gpu
    python benchmarks/bench_lrp.py --models resnet50 mobilenet_v3_large efficientnet_b0 \
        vit_b_16 --batch 8 --runs 3 --name lrp_torchvision   # torchvision models, 224x224
    python benchmarks/bench_lrp.py --models timm:vit_small_patch16_224 timm:efficientnet_b0 \
        timm:convnext_tiny swin_t --batch 8 --runs 3 --no-zennit --name lrp_timm

torchvision models and ``timm:NAME`` models (random weights, ``pretrained=False``, 10
classes, 3x224x224) are timed against the limit and Zennit (where its hooks run; its rules
differ from ours there: no Norm rule for additions written in ``forward``, no attention
rules; ``--no-zennit`` leaves it out), without Captum and without an equality check.
"""

from __future__ import annotations

import argparse

import torch
from _common import median, time_runs, write_results

from hudd_core.lrp import LRP, start_relevance
from hudd_core.models import alexnet, resnet
from hudd_testkit.lrp_oracle import BasicSumCanonizer, zennit_relevance

MODELS = {
    "alexnet64": (lambda: alexnet(10, 1, 64), (1, 64, 64), ()),
    "resnet64": (lambda: resnet(10, 1, 64), (1, 64, 64), (BasicSumCanonizer(),)),
}


TORCHVISION = ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16")


def _model(name: str):
    """``(model, input shape, extra Zennit canonizers)`` of a built-in, torchvision or
    ``timm:NAME`` model."""
    if name in MODELS:
        make, shape, extra = MODELS[name]
        return make(), shape, extra
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[5:], pretrained=False, num_classes=10), (3, 224, 224), ()
    import torchvision.models as tv

    return tv.get_model(name, num_classes=10), (3, 224, 224), ()


def limit_pass(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward + backward to the input only. ``autograd.grad`` runs only what the input's
    gradient needs (no weight gradients, though the parameters stay trainable for Zennit)."""
    xx = x.detach().requires_grad_()
    y = model(xx)
    (g,) = torch.autograd.grad(y, xx, start_relevance(y.detach()))
    return g


def captum_runner(model: torch.nn.Module, layers: list[str]):
    """LayerLRP over the named layers, or the error text when Captum refuses the model."""
    from captum.attr import LayerLRP
    from captum.attr._utils.lrp_rules import IdentityRule

    mods = dict(model.named_modules())
    for m in model.modules():  # Captum has no default rule for Flatten / an empty Sequential
        if isinstance(m, torch.nn.Flatten) or (isinstance(m, torch.nn.Sequential) and not len(m)):
            m.rule = IdentityRule()
    lrp = LayerLRP(model, [mods[n] for n in layers if n != "input"])

    def run(x):
        target = model(x).argmax(dim=1)
        return lrp.attribute(x.clone().requires_grad_(), target=target)

    return run


def _zennit(model, x, layers, extra):
    return zennit_relevance(model, x, "hudd", layers, start_relevance, extra)


def bench(name: str, batch: int, runs: int, device: str, zennit: bool = True) -> dict:
    torch.manual_seed(0)
    model, shape, extra = _model(name)
    model = model.eval().to(device)
    x = torch.rand(batch, *shape, device=device)
    ours = LRP(model, "hudd")
    layers = ours.layers
    row = {"model": name, "batch": batch, "device": device, "layers": len(layers)}
    got = ours(x)
    contenders = {"ours": lambda: ours(x), "limit": lambda: limit_pass(model, x)}
    if not zennit:
        row["zennit_img_s"] = "not run"
    try:
        if zennit:
            ref = _zennit(model, x, layers, extra)
            contenders["zennit"] = lambda: _zennit(model, x, layers, extra)
    except Exception as exc:  # recorded, not hidden: Zennit's hooks fail on some models
        row["zennit_img_s"] = "failed"
        row["zennit_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if name in MODELS:  # the same rules on both sides: check equality, time Captum
        row["max_rel_diff_vs_zennit"] = max(
            float((got[n] - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-30)) for n in got
        )
        try:
            run = captum_runner(model, layers)
            run(x)
            contenders["captum"] = lambda: run(x)
        except Exception as exc:  # recorded, not hidden: Captum does not support every model
            row["captum_img_s"] = "failed"
            row["captum_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    # Interleaved runs: on a shared machine a load spike then hits every contender alike.
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():
        fn()  # warm-up
    for _ in range(runs):
        for k, fn in contenders.items():
            times[k] += time_runs(fn, 1, warmup=0)
    t = {k: median(v) for k, v in times.items()}
    t_ours, t_limit = t["ours"], t["limit"]
    if "captum" in t:
        row["captum_img_s"] = batch / t["captum"]
        row["captum/ours_time"] = t["captum"] / t_ours
    row.update(ours_img_s=batch / t_ours, limit_img_s=batch / t_limit)
    row["ours/limit_time"] = t_ours / t_limit
    # The same ratios from the fastest run of each (least disturbed by other load).
    fastest = {k: min(v) for k, v in times.items()}
    row["ours/limit_min"] = fastest["ours"] / fastest["limit"]
    if "zennit" in t:
        row["zennit_img_s"] = batch / t["zennit"]
        row["zennit/limit_time"] = t["zennit"] / t_limit
        row["ours/zennit_throughput"] = t["zennit"] / t_ours
        row["ours/zennit_min"] = fastest["zennit"] / fastest["ours"]
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    names = f"built-in {list(MODELS)}, torchvision names (e.g. {list(TORCHVISION)}) or timm:NAME"
    ap.add_argument("--models", nargs="+", default=list(MODELS), help=names)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="lrp")
    ap.add_argument("--no-zennit", action="store_true", help="time ours and the limit only")
    args = ap.parse_args()
    rows = [bench(m, args.batch, args.runs, args.device, not args.no_zennit) for m in args.models]
    cols = ["model", "batch", "device", "layers", "ours_img_s", "zennit_img_s", "captum_img_s",
            "limit_img_s", "ours/limit_time", "zennit/limit_time", "ours/zennit_throughput",
            "captum/ours_time", "ours/limit_min", "ours/zennit_min",
            "max_rel_diff_vs_zennit"]  # fmt: skip
    errors = "; ".join(
        f"{r['model']}: {r[k]}" for r in rows for k in ("captum_error", "zennit_error") if k in r
    )
    note = (
        f"medians of {args.runs} interleaved runs (*_min: ratios of the fastest runs), float32, "
        f"{torch.get_num_threads()} threads; composite hudd for ours and Zennit (Captum: its "
        "default epsilon rules), all layers recorded" + (f". Failed: {errors}" if errors else "")
    )
    write_results(args.name, rows, cols, note=note)


if __name__ == "__main__":
    main()
