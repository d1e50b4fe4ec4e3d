"""``hudd heatmaps``: the HeatmapModule (HUDD step 2) over T/testResult.csv's Wrong images.

    hudd heatmaps --weights T/DNNModels/demo_alexnet.pt --data DataSets --workdir T
    hudd heatmaps --model alexnet --weights model.pt --list-layers
    hudd heatmaps ... --composite epsilon-plus --layers features.3 classifier.2 --float16

Writes T/Heatmaps/<layer>.npy, index.csv and layers.json (docs/CONTRACTS.md); an
interrupted run resumes from the last stored batch. ``--improvement`` does the same for
every ImprovementSet image into T/ImprovementHeatmaps; ``--activations`` also stores the
Wrong images' layer activations in T/Activations, same format.
"""

from __future__ import annotations

import argparse
import json

from hudd_core.cli.common import add_step, step_checkpoint
from hudd_core.config import pick
from hudd_core.options import Preprocess, RayOptions


def register(sub: argparse._SubParsersAction) -> None:
    p = add_step(sub, "heatmaps", "step 2: LRP heatmaps of every layer for the Wrong images", run)
    # what this command does instead of the pipeline's step (not options of `hudd run`)
    p.add_argument("--list-layers", action="store_true", help="print layer names and shapes")
    p.add_argument(
        "--improvement",
        action="store_true",
        help="every ImprovementSet image into T/ImprovementHeatmaps instead",
    )
    p.add_argument(
        "--activations",
        action="store_true",
        help="also each layer's activations of the Wrong images into T/Activations (the "
        "features of hudd cluster --method act-* and rxa-*)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from hudd_core.heatmaps import run_heatmaps
    from hudd_core.lrp import LRP
    from hudd_core.models.checkpoint import load_checkpoint, resolve_model_from

    torch.manual_seed(args.seed)
    if args.list_layers and args.weights is None and args.model is not None:
        model, meta = resolve_model_from(vars(args))  # the layers of an untrained model
    else:
        model, meta = load_checkpoint(step_checkpoint(args), trust=args.trust_model_file)
    if args.list_layers:
        lrp = LRP(model.eval(), args.composite, args.layers)
        size = args.image_size or meta.get("input_size") or 64
        for name, shape in lrp.shapes((meta["in_channels"], size, size)).items():
            print(f"{name}\t{list(shape)}")
        return 0
    if args.activations and args.improvement:
        raise ValueError("--activations: of the Wrong test images only, not with --improvement")
    options = pick(args.cfg, "composite", "layers", "float16", "batch_size", "device",
                   "num_workers")  # fmt: skip
    options |= {"prep": Preprocess.from_config(args.cfg), "improvement": args.improvement}
    if args.engine == "ray":
        if not args.improvement:
            raise ValueError("--engine ray: only with --improvement (the Wrong test images "
                             "are few; `hudd heatmaps` computes them in this process)")  # fmt: skip
        from hudd_core.engine_ray import ray_heatmap_source

        options["source"] = ray_heatmap_source(RayOptions.from_config(args.cfg))
    summary = run_heatmaps(args.workdir, args.data, model, meta, **options,
                           progress=not args.quiet)  # fmt: skip
    if args.activations:
        options.pop("source", None)
        summary["activations"] = run_heatmaps(
            args.workdir, args.data, model, meta, **options, activations=True,
            progress=not args.quiet)  # fmt: skip
    print(json.dumps(summary))
    return 0
