"""``hudd retrain``: HUDD steps 5–7 (labels, bootstrap balancing, fine-tuning), baselines.

hudd retrain --workdir T --data DataSets --baselines --repeats 3
hudd retrain --model m.py:factory --weights w.pt --data DataSets --workdir T
"""

from __future__ import annotations

import argparse

from hudd_core.cli.common import add_step, step_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    add_step(sub, "retrain", "retrain the DNN on TrainingSet + balanced unsafe set", run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.pipeline import Run, step_retrain

    result = step_retrain(Run(args.cfg, step_checkpoint(args)))
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
