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

from hudd_core.cli.common import add_step, step_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    add_step(sub, "assign", "step 4: the improvement images closest to the RCCs", run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.pipeline import Run, step_assign

    s = step_assign(Run(args.cfg, step_checkpoint(args)))
    print(
        f"{s['selected']} of {s['improvement_images']} improvement images selected at layer "
        f"{s['layer']} ({s['backend']}), {s['skipped']} skipped -> {args.workdir}/unsafe_set.csv"
    )
    for c, n in s["per_cluster"].items():
        print(f"  cluster {c}: {n} of quota {s['quotas'][c]}")
    return 0
