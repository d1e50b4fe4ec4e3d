"""RQ2 on the built-in case studies: HUDD's retraining against every same-budget baseline.

For each case (a built-in case study of ``bench_quality.py`` at a seed and size:
``demo:SEED``, the eyes with the AlexNet-style classifier; ``resnet:SEED``, the same eyes
with the ResNet; ``signs:SEED``, the road signs of :mod:`hudd_core.data.signs` with the
AlexNet-style classifier), the work folder is built once with ``run_demo`` (generate,
train, test, heatmaps, cluster, assign and one HUDD retraining, no baselines), then
``run_retrain`` fine-tunes HUDD's balanced unsafe set and each baseline's images at the same
labelling budget, ``--repeats`` seeds each, sharing the loaded data and the pool's forward
pass. Reported: the test accuracy gain per method (mean ± std, overall and on the planted
regions), HUDD's Vargha–Delaney A12 and Mann–Whitney p against each baseline, and the time
per repeat. Nothing here is tuned: the reference hyper-parameters are used as they are.

``--variants`` adds HUDD configurations beside the reference ``hudd`` (quota by error
mass, ranking by distance, no threshold, weighted bootstrap): each reruns the assignment
with its options (on the saved candidates; ``rank:uncertainty`` recomputes them once) and
retrains HUDD only, at its own labelling budget; the baselines stay at the reference's.
A variant is ``LABEL=key:value,...`` over ``quota``, ``distance_threshold``, ``rank``
(assignment), ``method`` (the clustering before it: ``hdbscan`` = ``--method recommended``)
and ``freeze``, ``bootstrap`` (retraining), or one of :data:`VARIANTS`.
``--validation F`` also reports every method's gain on a held-out F of the TrainingSet
(what :mod:`hudd_core.tuning` chooses on; the test figures are never used to choose).

    python benchmarks/bench_retrain.py --cases demo:0 demo:1 --repeats 5
    python benchmarks/bench_retrain.py --cases demo:0 --repeats 2 --epochs 3   # quick look
    python benchmarks/bench_retrain.py --cases demo:0 --size tiny --repeats 1 --epochs 1 \
        --baselines BL2 --variants uniform uncertainty paper                  # smoke run
    python benchmarks/bench_retrain.py --cases signs:0 resnet:0 --size tiny --repeats 1 \
        --epochs 1 --variants --out /tmp/retrain_smoke                        # other cases

Writes ``benchmarks/results/retrain.json`` and ``retrain.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from hudd_core.baselines import BASELINES
from hudd_core.options import RetrainOptions
from hudd_core.selection import SELECTIONS

RESULTS = Path(__file__).parent / "results"
# method: the cluster step's; select: hudd assign --select (hudd_core.selection)
ASSIGN_OPTIONS = ("method", "quota", "distance_threshold", "rank", "select")
RETRAIN_OPTIONS = ("freeze", "bootstrap")
# The case kinds of --cases: run_demo's options for each (bench_quality.py's case studies).
CASE_KINDS: dict[str, dict[str, str]] = {
    "demo": {},
    "resnet": {"arch": "resnet"},
    "signs": {"scene": "signs"},
}
VARIANTS = {
    "uniform": {"quota": "uniform"},
    "uncertainty": {"rank": "uncertainty"},
    "paper": {"distance_threshold": "paper"},
    "frozen": {"freeze": "features"},
    "once": {"bootstrap": "none"},
    "hdbscan": {"method": "hdbscan"},  # the clusters of `--method recommended`
    # the label-free selections of `hudd assign --select` (at the paper rule's budget)
    **{name: {"select": name} for name in SELECTIONS},
}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``uniform`` (a name of :data:`VARIANTS`) or ``LABEL=key:value,...``.

    >>> parse_variant("u+p=quota:uniform,distance_threshold:paper")
    ('u+p', {'quota': 'uniform', 'distance_threshold': 'paper'})
    """
    if "=" not in text:
        if text not in VARIANTS:
            raise SystemExit(f"--variants: unknown {text!r}; names: {sorted(VARIANTS)} "
                             "or LABEL=key:value,...")  # fmt: skip
        return text, dict(VARIANTS[text])
    label, _, spec = text.partition("=")
    options = dict(item.split(":", 1) for item in spec.split(",") if item)
    unknown = sorted(set(options) - {*ASSIGN_OPTIONS, *RETRAIN_OPTIONS})
    if unknown:
        raise SystemExit(f"--variants {text}: unknown options {unknown}")
    return label, options


def parse_case(text: str) -> tuple[str, int]:
    """``KIND:SEED`` of ``--cases`` (a kind of :data:`CASE_KINDS`).

    >>> parse_case("signs:1")
    ('signs', 1)
    """
    kind, _, seed = text.partition(":")
    if kind not in CASE_KINDS or not seed.isdigit():
        raise SystemExit(f"--cases {text!r}: expected KIND:SEED, KIND one of {list(CASE_KINDS)}")
    return kind, int(seed)


def assign_with(work: Path, options: dict[str, str], recluster: bool = False) -> dict:
    """Reruns the case's assignment with ``options`` (the others: the reference), and
    first its clustering with ``recluster`` (by ``options``' ``method``, default the
    published rule)."""
    from hudd_core.config import load_config
    from hudd_core.models.checkpoint import find_checkpoint
    from hudd_core.pipeline import Run, step_assign, step_cluster

    cfg = load_config(None, {"workdir": str(work), "data": str(work / "DataSets"),
                             "quiet": True, "gifs": False, **options})  # fmt: skip
    run = Run(cfg, find_checkpoint(work))
    if recluster:
        step_cluster(run)
    return step_assign(run)


def planted_gain(result: dict, method: str) -> float:
    """Mean gain over the planted regions (every group but ``none``), test-size weighted."""
    before, after = result["before"].get("planted", {}), result[method].get("planted", {})
    groups = [g for g in before if g != "none"]
    if not groups:
        return float("nan")
    n = np.array([before[g]["n"] for g in groups], dtype=float)
    gain = np.array([after[g]["mean"] - before[g]["accuracy"] for g in groups])
    return float((n * gain).sum() / n.sum())


def run_case(
    case: str,
    root: Path,
    repeats: int,
    epochs: int,
    baselines: list[str],
    *,
    size: str = "small",
    variants: list[tuple[str, dict[str, str]]] = (),
    validation: float = 0.0,
) -> dict:
    from hudd_core.baselines import versus
    from hudd_core.demo import SIZES, run_demo
    from hudd_core.retrain import run_retrain

    kind, seed = parse_case(case)
    work = root / f"{kind}_{seed}_{size}"
    t = time.perf_counter()
    run_demo(work, size, seed, baselines=False, repeats=1, progress=False, **CASE_KINDS[kind])
    prepare = time.perf_counter() - t
    base = RetrainOptions(epochs=epochs or SIZES[size]["retrain_epochs"], repeats=repeats,
                          validation=validation)  # fmt: skip
    common = {"seed": seed, "progress": False}
    t = time.perf_counter()
    result = run_retrain(work, work / "DataSets", options=replace(base, baselines=baselines),
                         **common)  # fmt: skip
    seconds = time.perf_counter() - t
    methods = ["hudd", *baselines]
    row = {
        "case": case,
        "size": size,
        "prepare_seconds": prepare,
        "retrain_seconds": seconds,
        "seconds_per_repeat": seconds / repeats,
        "budget": {"hudd": result["labelling_budget"]},
        "added_samples": result["balanced_unsafe_set"],
        "before": result["before"]["overall"],
        "gain": {m: result[m]["gain"] for m in methods},
        "planted_gain": {m: planted_gain(result, m) for m in methods},
        "versus": result.get("versus", {}),
    }
    if validation:
        row["validation_gain"] = {m: result[m]["validation_gain"] for m in methods}
    baseline_gains = {b: result[b]["gain"]["runs"] for b in baselines}
    # the reference's retraining outputs, put back after the variants (not recomputed)
    outputs = [work / "retrain.json", work / "Assign" / "candidates.npz"]
    if result.get("retrained_model"):
        outputs += [work / "DNNModels" / result["retrained_model"]]
        outputs += [outputs[-1].with_suffix(".json")]
    kept = {path: path.read_bytes() for path in outputs if variants and path.is_file()}
    clustered = "hudd"
    for label, options in variants:
        name = f"hudd({label})"
        method = options.get("method", "hudd")  # the clusters this variant selects from
        t = time.perf_counter()
        assign_with(work, {k: v for k, v in options.items() if k in ASSIGN_OPTIONS},
                    recluster=method != clustered)  # fmt: skip
        assigned = time.perf_counter() - t
        clustered = method
        retrain = {k: v for k, v in options.items() if k in RETRAIN_OPTIONS}
        if "quota" in options:  # the bootstrap target follows the assignment's quota
            retrain["quota"] = options["quota"]
        t = time.perf_counter()
        got = run_retrain(work, work / "DataSets", options=replace(base, **retrain), **common)
        row.setdefault("variant_seconds", {})[name] = {
            "assign": assigned,
            "retrain_per_repeat": (time.perf_counter() - t) / repeats,
        }
        row.setdefault("variant_added_samples", {})[name] = got["balanced_unsafe_set"]
        row["gain"][name], row["planted_gain"][name] = (
            got["hudd"]["gain"],
            planted_gain(got, "hudd"),
        )
        row["budget"][name] = got["labelling_budget"]
        if validation:
            row["validation_gain"][name] = got["hudd"]["validation_gain"]
        against = {**baseline_gains, "hudd": result["hudd"]["gain"]["runs"]}
        row.setdefault("variant_versus", {})[name] = versus(got["hudd"]["gain"]["runs"], against)
    if variants:  # leave the work folder with the reference's clusters, unsafe set, retraining
        for path, data in kept.items():  # the reference's candidates first: not recomputed
            path.write_bytes(data)
        assign_with(work, {}, recluster=clustered != "hudd")
    return row


def markdown(rows: list[dict], repeats: int) -> str:
    methods = list(rows[0]["gain"])
    out = ["| case | " + " | ".join(methods) + " | s/repeat |",
           "|---|" + "---|" * (len(methods) + 1)]  # fmt: skip
    for r in rows:
        cells = []
        for m in methods:
            g = r["gain"][m]
            cell = (
                f"{100 * g['mean']:+.1f} ± {100 * g['std']:.1f} ({100 * r['planted_gain'][m]:+.1f})"
            )
            if m in r["versus"]:
                cell += f", A12 {r['versus'][m]['a12']:.2f}"
            if "validation_gain" in r:
                cell += f", val {100 * r['validation_gain'][m]['mean']:+.1f}"
            if m in r["budget"]:
                cell += f", B={r['budget'][m]}"
            cells.append(cell)
        out.append(f"| {r['case']} | " + " | ".join(cells) + f" | {r['seconds_per_repeat']:.0f} |")
    out.append(
        f"\nTest accuracy gain in pp, mean ± std over {repeats} repeats (planted regions in "
        "parentheses); A12: HUDD's Vargha–Delaney effect size against that baseline on the "
        "overall gains (0.5 = no difference); val: the gain on the held-out validation "
        "split (--validation); B: the labelling budget of a HUDD configuration (the "
        "baselines use the reference hudd's); hudd(...): the --variants."
    )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=["demo:0", "demo:1"],
                   help=f"KIND:SEED, KIND one of {', '.join(CASE_KINDS)}")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=0, help="0: the demo's retraining epochs")
    p.add_argument("--baselines", nargs="+", default=[b for b in BASELINES])
    p.add_argument("--root", default="/tmp/hudd_bench_retrain")
    p.add_argument("--out", default=str(RESULTS), help="folder of NAME.json / NAME.md")
    p.add_argument("--name", default="retrain", help="the results' file name (no suffix)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch's CPU threads (0: its default); 1 on a shared machine, where "
                   "more threads than free cores make each SGD step ~4x slower")  # fmt: skip
    p.add_argument("--size", default="small", help="demo size: tiny, small, medium, large")
    p.add_argument("--variants", nargs="*", default=["uniform", "uncertainty", "paper"],
                   help=f"HUDD configurations beside the reference: {', '.join(VARIANTS)} "
                   "or LABEL=key:value,... (none: the reference only)")  # fmt: skip
    p.add_argument("--validation", type=float, default=0.0,
                   help="also report gains on this held-out share of the TrainingSet")  # fmt: skip
    args = p.parse_args()
    for case in args.cases:  # before hours of work on the first
        parse_case(case)
    variants = [parse_variant(v) for v in args.variants]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = [run_case(c, Path(args.root), args.repeats, args.epochs, args.baselines,
                     size=args.size, variants=variants, validation=args.validation)
            for c in args.cases]  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows, args.repeats)
    (out / f"{args.name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
