"""The assignment on this machine, local engine vs Ray engine, over generated pools.

For each pool size, a simulator ImprovementSet of that many 32 × 32 grey PNGs is
generated (kept in ``--folder``); ``T/`` holds the TestSet results, the heatmaps of its
Wrong images at ``features.10`` and synthetic RCCs over them (round robin into
``--clusters`` clusters: the cost of the assignment depends on the member count and the
clusters, not on how good they are) for a randomly initialised demo AlexNet. Then, in a
fresh process each, ``step_assign`` (``hudd assign``) with ``--engine local`` (2 DataLoader
workers) and ``--engine ray`` (a local Ray cluster of the machine's CPUs, ``--concurrency``
actors). Reported: images/s of the whole step, the driver's peak RSS (``VmHWM``), the
largest worker's peak RSS (DataLoader workers, or Ray's workers and actors) and the peak
PSS of the process tree (sampled every second), and whether both engines wrote the same
``unsafe_set.csv``.

The scaling part of the output is a **model**, not a measurement: the Ray run's steady
rate per actor and its fixed start-up cost extrapolated to N nodes × G GPU actors.

    python benchmarks/scale_ray.py --sizes 20000
    python benchmarks/scale_ray.py --sizes 100000 1000000 --name scale_ray_1m
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_results
from scale_assign import descendants, proc_status, pss

HERE = Path(__file__).resolve()
MB = 2**20


def prepare(folder: Path, n: int, clusters: int, seed: int) -> tuple[Path, Path]:
    """DataSets (TestSet 300 + ImprovementSet ``n``), a random model, T/ up to clusters."""
    import torch

    from hudd_core.data import simulator as sim
    from hudd_core.data.generate import generate
    from hudd_core.heatmaps import run_heatmaps
    from hudd_core.models import alexnet
    from hudd_core.models.checkpoint import load_checkpoint, save_checkpoint
    from hudd_core.testing import read_results, run_test

    root = folder / str(n)
    data, workdir = root / "DataSets", root / "T"
    t = time.perf_counter()
    generate(data, sizes={"TestSet": 300, "ImprovementSet": n}, image_size=32, seed=seed,
             progress=False)  # fmt: skip
    print(f"pool of {n} ready in {time.perf_counter() - t:.0f} s", flush=True)
    pt = workdir / "DNNModels" / "m.pt"
    if not (workdir / "clusters.csv").is_file():
        torch.manual_seed(seed)
        kwargs = {"num_classes": len(sim.CLASSES), "in_channels": 1, "input_size": 32}
        meta = {"model": "alexnet", "kwargs": kwargs, "task": "classifier",
                "classes": list(sim.CLASSES), "in_channels": 1, "input_size": 32}  # fmt: skip
        save_checkpoint(alexnet(**kwargs), workdir / "DNNModels", "m", meta)
        model, meta = load_checkpoint(pt)
        run_test(model, data, workdir, meta, sets=("TestSet",), device="cpu", progress=False)
        run_heatmaps(workdir, data, model, meta, layers=["features.10"], device="cpu",
                     progress=False)  # fmt: skip
        wrong = [i for i, r in read_results(workdir / "testResult.csv").items() if r == "Wrong"]
        with open(workdir / "clusters.csv", "w", newline="") as fh:
            rows = [(img, 1 + k % clusters, "features.10") for k, img in enumerate(wrong)]
            csv.writer(fh).writerows([("image", "cluster", "layer"), *rows])
    return workdir, pt


def child(args: argparse.Namespace) -> None:
    """One assignment in this fresh process; its figures into ``args.result``."""
    from hudd_core.config import load_config
    from hudd_core.pipeline import Run, step_assign

    cfg = load_config(None, {"workdir": args.workdir, "data": args.data, "device": "cpu",
                             "quiet": True, "batch_size": args.batch_size, "top": args.top,
                             "gifs": False, "engine": args.engine, "num_workers": 2,
                             "ray_concurrency": args.concurrency})  # fmt: skip
    t = time.perf_counter()
    summary = step_assign(Run(cfg, Path(args.checkpoint)))
    out = {"seconds": time.perf_counter() - t, "vmhwm_driver": proc_status("self", "VmHWM"),
           "summary": {k: summary[k] for k in ("improvement_images", "selected")}}  # fmt: skip
    Path(args.result).write_text(json.dumps(out))


def run_engine(args: argparse.Namespace, workdir: Path, pt: Path, n: int, engine: str) -> dict:
    for stale in ("Assign", "UnsafeSet"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    (workdir / "unsafe_set.csv").unlink(missing_ok=True)
    fd, result = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(HERE), "--child", "--workdir", str(workdir), "--checkpoint",
           str(pt), "--data", str(workdir.parent / "DataSets"), "--result", result,
           "--engine", engine, "--batch-size", str(args.batch_size), "--top", str(args.top),
           "--concurrency", str(args.concurrency)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local cluster
    proc = subprocess.Popen(cmd, env=env)
    peak_pss, worker_hwm = 0, 0
    while proc.poll() is None:
        kids = descendants(proc.pid)
        peak_pss = max(peak_pss, pss(proc.pid) + sum(pss(k) for k in kids))
        worker_hwm = max([worker_hwm, *(proc_status(k, "VmHWM") or 0 for k in kids)])
        time.sleep(1.0)
    if proc.returncode != 0:
        raise SystemExit(f"{engine}: the assignment of {n} images failed ({proc.returncode})")
    out = json.loads(Path(result).read_text())
    os.unlink(result)
    row = {
        "images": n,
        "engine": engine,
        "seconds": round(out["seconds"], 1),
        "images_per_s": round(n / out["seconds"]),
        "peak_rss_driver_MB": round(out["vmhwm_driver"] / MB),
        "peak_rss_worker_MB": round(worker_hwm / MB),
        "peak_pss_tree_MB": round(peak_pss / MB),
        "selected": out["summary"]["selected"],
        "unsafe_set": (workdir / "unsafe_set.csv").read_text(),
    }
    shutil.copy(workdir / "unsafe_set.csv", workdir.parent / f"unsafe_set_{engine}.csv")
    print({k: v for k, v in row.items() if k != "unsafe_set"}, flush=True)
    return row


def scaling_model(rows: list[dict], concurrency: int) -> str:
    """Ray's measured per-actor rate and start-up cost → N nodes × G actors (a model)."""
    ray_rows = sorted((r for r in rows if r["engine"] == "ray"), key=lambda r: r["images"])
    if not ray_rows:
        return ""
    if len(ray_rows) >= 2:  # two sizes: rate from the slope, start-up from the intercept
        a, b = ray_rows[0], ray_rows[-1]
        rate = (b["images"] - a["images"]) / (b["seconds"] - a["seconds"])
        startup = a["seconds"] - a["images"] / rate
    else:
        rate, startup = ray_rows[0]["images_per_s"], 0.0
    per_actor = rate / concurrency
    lines = [
        f"MODEL (not a measurement): per CPU actor {per_actor:.0f} images/s, fixed cost "
        f"{startup:.1f} s (cluster start, actor start, model and index to each actor); "
        "N nodes with G actors each (one per GPU, or per few cores): images/s ≈ N × G × "
        "r_actor while decoding (about 1 core per 1000 32 × 32 PNG/s here) keeps up."
    ]
    for nodes, actors in ((1, 4), (4, 4), (16, 8)):
        lines.append(f"  {nodes} node(s) × {actors} CPU actors of this speed: "
                     f"≈ {nodes * actors * per_actor:,.0f} images/s")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "hudd_ray")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"])
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=1, help="Ray model actors")
    ap.add_argument("--name", default="scale_ray")
    # internal: one run in a fresh process
    for hidden in ("--workdir", "--checkpoint", "--data", "--result", "--engine"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for n in args.sizes:
        workdir, pt = prepare(args.folder, n, args.clusters, args.seed)
        got = [run_engine(args, workdir, pt, n, e) for e in args.engines]
        texts = [r.pop("unsafe_set") for r in got]
        picks = [{tuple(line.split(",")[:2]) for line in t.splitlines()} for t in texts]
        for r in got:
            r["same_unsafe_set"] = len(set(texts)) == 1
            r["same_images_and_clusters"] = all(p == picks[0] for p in picks)
        rows += got
    cols = ["images", "engine", "seconds", "images_per_s", "peak_rss_driver_MB",
            "peak_rss_worker_MB", "peak_pss_tree_MB", "selected", "same_unsafe_set",
            "same_images_and_clusters"]  # fmt: skip
    note = (
        f"step_assign end to end on this machine ({os.cpu_count()} CPUs), batch "
        f"{args.batch_size}, top {args.top}, {args.clusters} synthetic RCCs, no GIFs; local: "
        f"2 DataLoader workers; ray: a local cluster, {args.concurrency} CPU actor(s), decode "
        "fused into the actor by Ray Data. peak_rss_worker: the largest child process "
        "(DataLoader worker, or Ray worker/actor/raylet); peak_pss_tree: the whole tree.\n\n"
        + scaling_model(rows, args.concurrency)
    )
    write_results(args.name, rows, cols, note)


if __name__ == "__main__":
    main()
