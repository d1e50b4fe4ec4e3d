"""``hudd test``: the TestModule (HUDD step 1) over TrainingSet and TestSet.

    hudd test --weights T/DNNModels/demo_alexnet.pt --data DataSets --workdir T
    hudd test --model alexnet --weights model.pt --data DataSets --workdir T --image-size 64

With a checkpoint sidecar (``<name>.json`` beside the weights) the model is rebuilt from it;
otherwise ``--model`` names the architecture and the classes (or keypoint count) come from
the data. The model is stored in ``T/DNNModels`` (checkpoint + sidecar), where the later
steps find it without ``--model``/``--weights``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hudd_core.cli.common import add_step, step_checkpoint
from hudd_core.config import pick
from hudd_core.options import Preprocess


def register(sub: argparse._SubParsersAction) -> None:
    add_step(sub, "test", "step 1: run the DNN on TrainingSet and TestSet", run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.models import BUILTIN
    from hudd_core.models.checkpoint import load_checkpoint, resolve_model_from
    from hudd_core.pipeline import predictor
    from hudd_core.testing import RESULT_FILES, accuracy_by_planted, run_test

    data, workdir = Path(args.data), Path(args.workdir)
    if args.weights is None and args.model in BUILTIN:
        print(
            f"hudd test: warning: no --weights, testing an untrained {args.model}", file=sys.stderr
        )
    if args.weights is None and args.model is not None:
        model, meta = resolve_model_from(vars(args))
        model_file = None
    else:
        model_file = step_checkpoint(args)
        model, meta = load_checkpoint(model_file, trust=args.trust_model_file)
    summary = run_test(model, data, workdir, meta,
                       **pick(args.cfg, "batch_size", "device", "threshold", "num_workers"),
                       prep=Preprocess.from_config(args.cfg), progress=not args.quiet,
                       model_file=model_file, predictor=predictor(args.cfg))  # fmt: skip
    for name, s in summary.items():
        skipped = (
            f", {s['skipped']} skipped (see {workdir / 'skipped.csv'})" if s["skipped"] else ""
        )
        print(
            f"{name}: {s['n']} images, {s['wrong']} wrong, accuracy {s['accuracy']:.2%}{skipped} "
            f"-> {workdir / RESULT_FILES[name]}"
        )
    if "TestSet" in summary:
        print_planted(accuracy_by_planted(data, "TestSet", workdir / RESULT_FILES["TestSet"]))
    return 0


def print_planted(planted: dict) -> None:
    """Accuracy per planted region of the test set (when the set has simulator metadata)."""
    if not planted:
        return
    print("TestSet accuracy per planted region:")
    for region, s in planted.items():
        print(f"  {region:<16} {s['accuracy']:7.2%}  ({s['n']} images)")
