"""``hudd demo``: the built-in simulator case study end to end, no input needed.

Examples:

    hudd demo --workdir demo_run              # small: a few minutes on 2 CPU cores
    hudd demo --workdir demo_run --baselines  # and HUDD versus BL1, BL2 (about 2x longer)
    hudd demo --workdir demo_run --size medium --seed 1 --baselines --repeats 3
    hudd demo --workdir demo_kp --task keypoints   # KpNet keypoint regressor (FLD-style)
    hudd demo --workdir demo_vit --arch vit        # a small ViT
    hudd demo --workdir demo_mn --arch mobilenet_v3_small   # torchvision's (also resnet, mobilenet)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# The demo's options from the table; its own folder, and one repeat even with its baselines
# (the small demo fits a few minutes on 2 cores; --repeats 5 for the statistics).
DEMO_FLAGS = ("workdir", "device", "seed", "quiet", "log_file", "repeats")
DEMO_DEFAULTS = {"workdir": "demo_run", "repeats": 1}


def register(sub: argparse._SubParsersAction) -> None:
    from hudd_core.cli.common import add_flags
    from hudd_core.demo import DEMO_ARCHS, SIZES

    p = sub.add_parser("demo", help="the built-in eye-simulator case study, end to end")
    add_flags(p, DEMO_FLAGS, DEMO_DEFAULTS)
    p.add_argument("--size", default="small", choices=list(SIZES), help="images and epochs")
    p.add_argument(
        "--task",
        default="classifier",
        choices=["classifier", "keypoints"],
        help="the gaze classifier, or the eye-keypoint regressor (the paper's FLD case)",
    )
    p.add_argument(
        "--arch",
        choices=list(DEMO_ARCHS),
        help="the classifier to train and debug (default: the AlexNet-style one)",
    )
    p.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also retrain with the baselines BL1 and BL2 at HUDD's labelling budget and "
        "compare (two more fine-tunings: the small demo takes about twice as long); "
        "default: HUDD's retraining only",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.cli.common import fill_defaults, setup_logging
    from hudd_core.cli.run import summarise
    from hudd_core.cli.test import print_planted
    from hudd_core.demo import run_demo

    fill_defaults(args, DEMO_FLAGS)
    setup_logging(args.quiet, args.log_file)
    result = run_demo(
        args.workdir,
        args.size,
        args.seed,
        device=args.device,
        baselines=args.baselines,
        repeats=args.repeats,
        progress=not args.quiet,
        task=args.task,
        arch=args.arch,
    )
    workdir = Path(args.workdir)
    print(f"data:   {result['data']}")
    print(f"model:  {result['checkpoint']}")
    print(f"results: {workdir / 'trainResult.csv'}, {workdir / 'testResult.csv'}")
    print_planted(result["planted"])
    summarise(
        {k: v for k, v in result.items() if k != "test"} | {"test": {"summary": result["test"]}}
    )
    steps = json.loads((workdir / "run.json").read_text())["steps"]
    print("timings: " + ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in steps.items()))
    return 0
