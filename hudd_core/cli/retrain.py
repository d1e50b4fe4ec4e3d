"""``hudd retrain``: HUDD steps 5–7 (labels, bootstrap balancing, fine-tuning), baselines.

hudd retrain --workdir T --data DataSets --baselines --repeats 3
hudd retrain --model m.py:factory --weights w.pt --data DataSets --workdir T
"""

from __future__ import annotations

import argparse

from hudd_core.cli.common import add_channels, add_common, add_preprocessing, step_checkpoint
from hudd_core.config import DEFAULTS, REFERENCE_HP


def register(sub: argparse._SubParsersAction) -> None:
    from hudd_core.baselines import BASELINES

    p = sub.add_parser("retrain", help="retrain the DNN on TrainingSet + balanced unsafe set")
    add_common(p)
    p.add_argument(
        "--labels",
        help="CSV image,label for the unsafe set (default: the "
        "ImprovementSet's class folders / labels.csv)",
    )
    p.add_argument("--epochs", type=int, default=REFERENCE_HP["epochs"])
    p.add_argument("--lr", type=float, default=REFERENCE_HP["lr"])
    p.add_argument("--momentum", type=float, default=REFERENCE_HP["momentum"])
    p.add_argument("--weight-decay", type=float, default=REFERENCE_HP["weight_decay"])
    p.add_argument("--train-batch-size", type=int, default=REFERENCE_HP["batch_size"])
    p.add_argument(
        "--baselines",
        nargs="*",
        metavar="NAME",
        help=f"also retrain baselines at the same labelling budget: {', '.join(BASELINES)} "
        "(no name: the paper's BL1 and BL2)",
    )
    p.add_argument(
        "--repeats", type=int, default=DEFAULTS["repeats"], help="seeds per method (mean ± std)"
    )
    p.add_argument(
        "--group-by",
        nargs="+",
        metavar="COLUMN",
        help="TestSet/metadata.csv columns to give the accuracy per group of "
        "(default: planted when present)",
    )
    p.add_argument(
        "--quota-factor",
        type=float,
        default=DEFAULTS["quota_factor"],
        help="the assignment's quota factor (the bootstrap target is the largest quota)",
    )
    from hudd_core.assign import QUOTAS
    from hudd_core.balance import BOOTSTRAPS
    from hudd_core.cli.run import HELP
    from hudd_core.retrain import FREEZE

    for key, choices in (("quota", QUOTAS), ("freeze", FREEZE), ("bootstrap", BOOTSTRAPS)):
        p.add_argument("--" + key, default=DEFAULTS[key], choices=choices,
                       help=f"{HELP[key]} (default: {DEFAULTS[key]})")  # fmt: skip
    p.add_argument("--validation", type=float, default=DEFAULTS["validation"],
                   metavar="FRACTION", help=HELP["validation"])  # fmt: skip
    add_preprocessing(p)
    add_channels(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.retrain import run_retrain

    hp = {
        "epochs": args.epochs,
        "lr": args.lr,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "batch_size": args.train_batch_size,
    }
    baselines = True if args.baselines == [] else (args.baselines or False)
    result = run_retrain(
        args.workdir,
        args.data,
        model_name=step_checkpoint(args).stem,
        labels_csv=args.labels,
        baselines=baselines,
        repeats=args.repeats,
        seed=args.seed,
        hp=hp,
        device=args.device,
        eval_batch_size=args.batch_size,
        quota_factor=args.quota_factor,
        image_size=args.image_size,
        mean=args.mean,
        std=args.std,
        group_by=args.group_by,
        progress=not args.quiet,
        quota=args.quota,
        freeze=args.freeze,
        bootstrap=args.bootstrap,
        validation=args.validation,
    )
    print(format_summary(result))
    print(
        f"retrained model: {args.workdir}/DNNModels/{result['retrained_model']}; "
        f"details in {args.workdir}/retrain.json"
    )
    return 0


def format_summary(result: dict) -> str:
    """Test accuracy before and after, per method, with the gain (mean ± std)."""
    from hudd_core.baselines import BASELINES

    lines = [f"test accuracy before retraining: {result['before']['overall']:.2%}"]
    for method in ("hudd", *BASELINES):
        if method in result:
            acc, gain = result[method]["accuracy"], result[method]["gain"]
            line = (
                f"{method:>10}: {acc['mean']:.2%} ± {acc['std']:.2%} "
                f"(gain {gain['mean'] * 100:+.1f} ± {gain['std'] * 100:.1f} pp, "
                f"{result['repeats']} runs)"
            )
            if "validation_accuracy" in result[method]:
                line += f", validation {result[method]['validation_accuracy']['mean']:.2%}"
            lines.append(line)
    for method, s in result.get("versus", {}).items():
        lines.append(f"hudd vs {method}: A12 {s['a12']:.2f}, Mann-Whitney p {s['p_value']:.3g}")
    return "\n".join(lines)
