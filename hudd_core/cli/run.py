"""``hudd run``: every HUDD step in one resumable run, from CLI options or a TOML file.

    hudd run --weights gaze.pt --model alexnet --data DataSets --workdir T
    hudd run --config hudd.toml --device cuda --num-workers 8 --log-file T/hudd.log
    hudd run --config hudd.toml --steps assign retrain report --baselines --repeats 3

Options given on the command line override the file; the file's keys are the option
names with underscores (docs/CONTRACTS.md). A rerun skips the steps that are complete and
unchanged and resumes an interrupted one; ``T/run.json`` records what ran. The flags,
their defaults and help are the options table's (:data:`hudd_core.options.OPTIONS`).
"""

from __future__ import annotations

import argparse

from hudd_core.cli.common import add_grouped, setup_logging
from hudd_core.options import OPTIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="all steps, resumable, from options or a TOML file")
    p.add_argument("--config", help="TOML file with the options (command line overrides it)")
    add_grouped(p, OPTIONS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.config import load_config
    from hudd_core.lock import workdir_lock
    from hudd_core.pipeline import run_pipeline

    cfg = load_config(args.config, {k: getattr(args, k) for k in OPTIONS})
    setup_logging(cfg["quiet"], cfg["log_file"])
    with workdir_lock(cfg["workdir"]):
        result = run_pipeline(cfg)
    summarise(result)
    return 0


def summarise(result: dict) -> None:
    """The figures an engineer looks at first, one line a step."""
    if "test" in result:
        for name, s in result["test"]["summary"].items():
            print(f"test: {name} accuracy {s['accuracy']:.2%} ({s['wrong']} of {s['n']} wrong)")
    if "cluster" in result:
        c = result["cluster"]
        line = (
            f"cluster: best layer {c['best_layer']}, {c['n_clusters']} RCCs of "
            f"{c['n_images']} error images (inspect {c['inspect_share']:.1%})"
        )
        if "rq1_share_50pct" in c:
            line += f", RQ1 {c['rq1_share_50pct']:.0%}"
        print(line)
    if "assign" in result:
        a = result["assign"]
        print(
            f"assign: {a['selected']} of {a['improvement_images']} improvement images "
            f"selected, {a['skipped']} skipped"
        )
    if "retrain" in result:
        from hudd_core.cli.retrain import format_summary

        print(format_summary(result["retrain"]))
    if "stopped" in result:
        print(f"stopped at {result['stopped']['step']}: {result['stopped']['reason']}")
    if "report" in result:
        print(f"report: {result['report']['path']}")
