"""``hudd assign``: the AssignModule (HUDD step 4) over T/clusters.csv and the ImprovementSet.

    hudd assign --workdir T --data DataSets
    hudd assign --workdir T --data DataSets --backend torch --num-workers 4 --limit 100000
    hudd assign --model m.py:factory --weights w.pt --data DataSets --workdir T

Streams the improvement images through the model in batches, ranks every RCC for each
image (nearest member at the selected layer), applies the reference greedy quota rule and
writes T/unsafe_set.csv and T/UnsafeSet/<cluster>/ (with a GIF each). An interrupted run
resumes from the last saved batch; unreadable images are skipped into T/skipped.csv.
The model: ``--model``/``--weights``, or the checkpoint an earlier step stored in T.
"""

from __future__ import annotations

import argparse

from hudd_core.assign import BACKENDS
from hudd_core.cli.common import (
    add_channels,
    add_common,
    add_engine,
    add_preprocessing,
    setup_logging,
    step_checkpoint,
)
from hudd_core.config import DEFAULTS, RAY_OPTIONS
from hudd_core.lrp.composites import COMPOSITES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assign", help="step 4: the improvement images closest to the RCCs")
    add_common(p)
    p.add_argument(
        "--backend",
        default=DEFAULTS["backend"],
        choices=BACKENDS,
        help="nearest-member search (auto: FAISS, on the GPU when possible)",
    )
    p.add_argument(
        "--top",
        type=int,
        help="keep only each image's TOP closest clusters (default: all, the reference)",
    )
    p.add_argument(
        "--quota-factor",
        type=float,
        default=DEFAULTS["quota_factor"],
        help="a cluster takes up to ceil(factor × its error images)",
    )
    add_selection(p)
    p.add_argument("--composite", default=DEFAULTS["composite"], choices=sorted(COMPOSITES))
    add_preprocessing(p)
    add_channels(p)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader decoding workers")
    p.add_argument("--limit", type=int, help="only the first N improvement images")
    p.add_argument("--no-gifs", action="store_true", help="skip the animated GIFs")
    add_engine(p)
    p.set_defaults(func=run)


def add_selection(p: argparse.ArgumentParser) -> None:
    """``--quota``, ``--distance-threshold``, ``--rank``: the selection options."""
    from hudd_core.assign import QUOTAS, RANKS, THRESHOLDS
    from hudd_core.cli.run import HELP

    for key, choices in (("quota", QUOTAS), ("distance_threshold", THRESHOLDS),
                         ("rank", RANKS)):  # fmt: skip
        p.add_argument("--" + key.replace("_", "-"), default=DEFAULTS[key], choices=choices,
                       help=f"{HELP[key]} (default: {DEFAULTS[key]})")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from hudd_core.config import load_config
    from hudd_core.pipeline import Run, step_assign

    setup_logging(args.quiet, None)
    options = ("workdir", "data", "device", "batch_size", "seed", "quiet", "backend", "top",
               "quota_factor", "composite", "image_size", "mean", "std", "num_workers",
               "limit", "engine", "quota", "distance_threshold", "rank",
               *RAY_OPTIONS)  # fmt: skip
    cfg = load_config(None, {k: getattr(args, k) for k in options} | {"gifs": not args.no_gifs})
    s = step_assign(Run(cfg, step_checkpoint(args)))
    print(
        f"{s['selected']} of {s['improvement_images']} improvement images selected at layer "
        f"{s['layer']} ({s['backend']}), {s['skipped']} skipped -> {args.workdir}/unsafe_set.csv"
    )
    for c, n in s["per_cluster"].items():
        print(f"  cluster {c}: {n} of quota {s['quotas'][c]}")
    return 0
