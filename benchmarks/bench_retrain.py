"""RQ2 on the built-in case studies: HUDD's retraining against every same-budget baseline.

For each case (the simulator demo at a seed and size), the work folder is built once with
``run_demo`` (generate, train, test, heatmaps, cluster, assign; no retraining), then
``run_retrain`` fine-tunes HUDD's balanced unsafe set and each baseline's images at the same
labelling budget, ``--repeats`` seeds each, sharing the loaded data and the pool's forward
pass. Reported: the test accuracy gain per method (mean ± std, overall and on the planted
regions), HUDD's Vargha–Delaney A12 and Mann–Whitney p against each baseline, and the time
per repeat. Nothing here is tuned: the reference hyper-parameters are used as they are.

    python benchmarks/bench_retrain.py --cases demo:0 demo:1 --repeats 5
    python benchmarks/bench_retrain.py --cases demo:0 --repeats 2 --epochs 3   # quick look

Writes ``benchmarks/results/retrain.json`` and ``retrain.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hudd_core.baselines import BASELINES

RESULTS = Path(__file__).parent / "results"


def planted_gain(result: dict, method: str) -> float:
    """Mean gain over the planted regions (every group but ``none``), test-size weighted."""
    before, after = result["before"].get("planted", {}), result[method].get("planted", {})
    groups = [g for g in before if g != "none"]
    if not groups:
        return float("nan")
    n = np.array([before[g]["n"] for g in groups], dtype=float)
    gain = np.array([after[g]["mean"] - before[g]["accuracy"] for g in groups])
    return float((n * gain).sum() / n.sum())


def run_case(case: str, root: Path, repeats: int, epochs: int, baselines: list[str]) -> dict:
    from hudd_core.pipeline import SIZES, run_demo
    from hudd_core.retrain import run_retrain

    kind, seed = case.split(":")
    work = root / f"{kind}_{seed}"
    t = time.perf_counter()
    run_demo(work, "small", int(seed), baselines=False, repeats=1, progress=False)
    prepare = time.perf_counter() - t
    hp = {"epochs": epochs or SIZES["small"]["retrain_epochs"]}
    t = time.perf_counter()
    result = run_retrain(work, work / "DataSets", baselines=baselines, repeats=repeats,
                         seed=int(seed), hp=hp, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t
    methods = ["hudd", *baselines]
    return {
        "case": case,
        "prepare_seconds": prepare,
        "retrain_seconds": seconds,
        "seconds_per_repeat": seconds / repeats,
        "budget": result["labelling_budget"],
        "added_samples": result["balanced_unsafe_set"],
        "before": result["before"]["overall"],
        "gain": {m: result[m]["gain"] for m in methods},
        "planted_gain": {m: planted_gain(result, m) for m in methods},
        "versus": result.get("versus", {}),
    }


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
            cells.append(cell)
        out.append(f"| {r['case']} | " + " | ".join(cells) + f" | {r['seconds_per_repeat']:.0f} |")
    out.append(
        f"\nTest accuracy gain in pp, mean ± std over {repeats} repeats (planted regions in "
        "parentheses); A12: HUDD's Vargha–Delaney effect size against that baseline on the "
        "overall gains (0.5 = no difference)."
    )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=["demo:0", "demo:1"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=0, help="0: the demo's retraining epochs")
    p.add_argument("--baselines", nargs="+", default=[b for b in BASELINES])
    p.add_argument("--root", default="/tmp/hudd_bench_retrain")
    args = p.parse_args()
    rows = [run_case(c, Path(args.root), args.repeats, args.epochs, args.baselines)
            for c in args.cases]  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrain.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows, args.repeats)
    (RESULTS / "retrain.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
