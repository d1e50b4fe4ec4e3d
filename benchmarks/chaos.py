"""Chaos trials on the small demo pipeline (issue 15), and what integrity checks cost.

    python benchmarks/chaos.py --trials 50
    python benchmarks/chaos.py --trials 10 --kinds kill corrupt --seed 3

Fault kinds (cycled in a fixed mix, or ``--kinds``): ``kill`` (kill -9 at a random
moment, then a rerun), ``corrupt`` (a random intermediate of a finished run truncated
or bit-flipped, then a rerun), ``kill+corrupt`` (both), ``disk-full`` (the run on a small
tmpfs, then the space freed and a rerun; skipped with the reason where no tmpfs can be
mounted), ``concurrent`` (two runs on one work folder). Each trial's outcome is
``identical`` (the clean run's exact clusters.csv and unsafe_set.csv), ``clear error``
(exit 2 naming the cause; a rerun then gives the clean results) or ``FAILED``.

Also measured: a rerun of the finished demo (every step verified and skipped) with
``--verify full`` and ``--verify quick``, and the throughput of the full heatmap check.
Writes ``results/chaos.json`` and ``results/chaos.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_results

from hudd_testkit import chaos_trials

MIX = ["kill", "corrupt", "corrupt", "kill+corrupt", "corrupt", "kill", "disk-full",
       "concurrent", "corrupt", "kill"]  # fmt: skip


def rerun_seconds(lab: chaos_trials.Lab, verify: str, repeats: int = 3) -> float:
    """Median seconds of an in-process ``hudd run`` over the finished demo (every step
    verified, then skipped)."""
    from hudd_core.config import load_config
    from hudd_core.pipeline import run_pipeline

    work = lab.work
    chaos_trials.restore(lab.done, work)
    cfg = load_config(None, {"workdir": str(work), "data": str(work / "DataSets"),
                             "weights": str(work / "DNNModels" / "demo_alexnet.pt"),
                             "steps": list(chaos_trials.STEPS), "layers": list(chaos_trials.LAYERS),
                             "gifs": False, "device": "cpu", "batch_size": 8, "quiet": True,
                             "verify": verify})  # fmt: skip
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = run_pipeline(cfg)
        times.append(time.perf_counter() - t)
        assert chaos_trials.results(work) == lab.reference, result
    return float(np.median(times))


def demo_rerun_checks(root: Path) -> dict[str, float]:
    """The tiny ``hudd demo`` (every layer stored), then the seconds of its rerun's
    integrity checks per mode: ``RunLog.fresh`` of every step, as ``hudd run`` calls it."""
    from hudd_core.config import load_config
    from hudd_core.demo import run_demo
    from hudd_core.pipeline import SPECS, Run
    from hudd_core.runstate import RunLog, fingerprint

    work = root / "demo"
    run_demo(work, "tiny", progress=False, baselines=False)
    log = RunLog(work)
    cfg = load_config(None, log.data["config"])
    run = Run(cfg, Path(log.data["steps"]["train"]["checkpoint"]))
    out = {"heatmap_mib": sum(p.stat().st_size for p in (work / "Heatmaps").glob("*.npy")) / 2**20}
    for verify in ("full", "quick"):
        t = time.perf_counter()
        for name, spec in SPECS.items():
            if spec.outputs:
                fp = fingerprint({k: cfg[k] for k in spec.options}, spec.inputs(run))
                outputs = [work / o for o in spec.outputs]
                assert log.fresh(name, fp, outputs, verify=verify), name
        out[f"{verify}_s"] = time.perf_counter() - t
    t = time.perf_counter()
    run_demo(work, "tiny", progress=False, baselines=False)
    out["demo_rerun_s"] = time.perf_counter() - t
    return out


def heatmap_check_throughput(mib: int = 128) -> dict[str, float]:
    """Seconds of the quick and the full check of a finished heatmap folder of ``mib``
    MiB, and the full check's MiB/s."""
    from hudd_core.store import HeatmapStore, verify_folder

    rows, width = 256, mib * (1 << 20) // (256 * 4)
    with tempfile.TemporaryDirectory() as tmp:
        s = HeatmapStore.open(tmp, [f"i{k}" for k in range(rows)], {"layer": (width,)},
                              composite="hudd")  # fmt: skip
        rng = np.random.default_rng(0)
        for _ in range(0, rows, 64):
            s.write({"layer": rng.standard_normal((64, width), dtype=np.float32)})
        s.finish()
        t = time.perf_counter()
        assert verify_folder(tmp) == []
        quick = time.perf_counter() - t
        t = time.perf_counter()
        assert verify_folder(tmp, full=True) == []
        full = time.perf_counter() - t
    return {"mib": mib, "quick_s": quick, "full_s": full, "full_mib_per_s": mib / full}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--kinds", nargs="+", choices=chaos_trials.KINDS, help="default: a mix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", help="folder for the trials (default: a temporary one)")
    args = p.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="hudd-chaos-"))
    t0 = time.perf_counter()
    lab = chaos_trials.prepare(root, args.seed)
    kinds = args.kinds or MIX
    plan = [kinds[i % len(kinds)] for i in range(args.trials)]
    if "disk-full" in plan and (reason := chaos_trials.disk_full_unavailable(root)):
        print(f"disk-full trials skipped: {reason}")
    records = []
    for record in chaos_trials.run_trials(lab, plan, args.seed):
        print(f"{record['trial']:3d} {record['kind']:13s} {record['outcome']:12s} "
              f"{record['seconds']:6.1f} s  {record['detail'][:160]}", flush=True)  # fmt: skip
        records.append(record)
    tally = collections.Counter((r["kind"], r["outcome"]) for r in records)
    rows = [{"kind": k, "outcome": o, "trials": n} for (k, o), n in sorted(tally.items())]
    full, quick = rerun_seconds(lab, "full"), rerun_seconds(lab, "quick")
    check = heatmap_check_throughput()
    demo = demo_rerun_checks(root)
    note = (
        f"{len(records)} trials (seed {args.seed}) in {time.perf_counter() - t0:.0f} s; clean "
        f"run {lab.seconds:.1f} s. Rerun of the finished demo (every step verified and "
        f"skipped, in-process): {full:.3f} s with --verify full, {quick:.3f} s with --verify "
        f"quick. Heatmap folder of {check['mib']} MiB: quick check {check['quick_s']:.4f} s, "
        f"full check {check['full_s']:.2f} s ({check['full_mib_per_s']:.0f} MiB/s). "
        f"Tiny `hudd demo` rerun ({demo['heatmap_mib']:.1f} MiB of heatmaps): "
        f"{demo['demo_rerun_s']:.2f} s in all, of which the integrity checks of every step "
        f"take {demo['full_s']:.3f} s (full) or {demo['quick_s']:.3f} s (quick)."
    )
    write_results("chaos", rows, ["kind", "outcome", "trials"], note)
    (root / "trials.json").write_text(json.dumps(records, indent=2))
    failed = [r for r in records if r["outcome"] == "FAILED"]
    for r in failed:
        print(f"FAILED trial {r['trial']} ({r['kind']}): {r['detail']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
