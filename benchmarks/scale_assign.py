"""Assignment at scale: synthetic improvement images through the AssignModule end to end.

For each pool size, a fresh subprocess runs :func:`hudd_core.assign.run_assign` over a
simulator ImprovementSet of that many 32 × 32 grey PNGs: decoding in DataLoader workers,
real LRP relevance at the selected layer (``hudd_core.heatmaps.batch_relevance`` on the
demo model), the nearest member of every RCC, the top candidates kept, the greedy quota
selection, ``T/unsafe_set.csv`` and ``T/UnsafeSet/`` (no GIFs). Reported per size:
images/s (the whole ``run_assign`` call) and peak memory: the main process's ``VmHWM``,
the largest DataLoader worker's ``VmHWM`` and the peak proportional set size (PSS) of the
whole process tree, sampled every second (shared pages counted once).

Set-up (reused when already in ``--folder``): ``T/`` from the small demo's own steps
(generate, train, then ``test``, ``heatmaps``, ``cluster`` of :func:`run_pipeline`), and
one simulator ImprovementSet per size under ``pools/<n>/DataSets``.

    python benchmarks/scale_assign.py                             # 25k and 100k images
    python benchmarks/scale_assign.py --sizes 5000 --name scale_assign_5k
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_results

HERE = Path(__file__).resolve()


def proc_status(pid: int | str, key: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` in bytes (None once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


# --- set-up -------------------------------------------------------------------------------


def prepare(folder: Path, sizes: list[int], seed: int) -> tuple[Path, Path]:
    """``T/`` with RCCs (the small demo's steps up to clustering) and the pools."""
    from hudd_core.config import load_config
    from hudd_core.data.generate import generate
    from hudd_core.demo import step_generate, step_train
    from hudd_core.pipeline import run_pipeline

    workdir = folder / "T"
    t = time.perf_counter()
    data_root = step_generate(workdir, "small", seed, progress=True)
    checkpoint = step_train(workdir, data_root, "small", seed, "cpu", progress=True)
    cfg = load_config(
        None,
        {
            "workdir": str(workdir),
            "data": str(data_root),
            "seed": seed,
            "device": "cpu",
            "quiet": True,
            "steps": ["test", "heatmaps", "cluster"],
        },
    )
    result = run_pipeline(cfg, checkpoint=checkpoint)
    facts = {k: result.get("cluster", {}).get(k) for k in ("best_layer", "n_images", "n_clusters")}
    print(f"T/ ready in {time.perf_counter() - t:.0f} s: {facts}", flush=True)
    for n in sizes:
        t = time.perf_counter()
        # A different seed from the demo's own sets; 32 x 32 like the model's input.
        generate(pool_root(folder, n), sizes={"ImprovementSet": n}, seed=seed + 1000,
                 image_size=32, progress=True)  # fmt: skip
        print(f"pool of {n} ready in {time.perf_counter() - t:.0f} s", flush=True)
    return workdir, checkpoint


def pool_root(folder: Path, n: int) -> Path:
    return folder / "pools" / str(n) / "DataSets"


# --- one size, in a fresh process -----------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    import torch

    from hudd_core.assign import read_rccs, run_assign
    from hudd_core.heatmaps import batch_relevance
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_core.options import AssignOptions

    workdir = Path(args.workdir)
    layer, _, _ = read_rccs(workdir)
    model, meta = load_checkpoint(args.checkpoint)
    relevance = batch_relevance(model, layer, device="cpu")
    shape = (meta["in_channels"], meta["input_size"], meta["input_size"])
    rss_ready = proc_status("self", "VmRSS")
    t = time.perf_counter()
    summary = run_assign(workdir, args.data, relevance,
                         options=AssignOptions(backend=args.backend, top=args.top, gifs=False),
                         input_shape=shape, batch_size=args.batch_size,
                         num_workers=args.num_workers, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t
    out = {
        "seconds": seconds,
        "rss_ready": rss_ready,
        "vmhwm_main": proc_status("self", "VmHWM"),
        "torch_threads": torch.get_num_threads(),
        "layer": layer,
        "summary": {k: summary[k] for k in ("improvement_images", "selected", "backend")},
    }
    Path(args.result).write_text(json.dumps(out))


def run_size(args: argparse.Namespace, workdir: Path, checkpoint: Path, n: int) -> dict:
    # A fresh assignment: no candidates to resume from, no earlier unsafe set.
    for stale in ("Assign", "UnsafeSet"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    (workdir / "unsafe_set.csv").unlink(missing_ok=True)
    fd, result = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(HERE), "--child", "--workdir", str(workdir), "--checkpoint",
           str(checkpoint), "--data", str(pool_root(args.folder, n)), "--result", result,
           "--backend", args.backend, "--top", str(args.top), "--batch-size",
           str(args.batch_size), "--num-workers", str(args.num_workers)]  # fmt: skip
    proc = subprocess.Popen(cmd)
    peak_pss, worker_hwm, workers_seen = 0, 0, set()
    while proc.poll() is None:
        kids = descendants(proc.pid)
        workers_seen.update(kids)
        peak_pss = max(peak_pss, pss(proc.pid) + sum(pss(k) for k in kids))
        for k in kids:
            worker_hwm = max(worker_hwm, proc_status(k, "VmHWM") or 0)
        time.sleep(1.0)  # reading smaps costs CPU: sparse samples on a 2-core machine
    if proc.returncode != 0:
        raise SystemExit(f"the assignment of {n} images failed (exit {proc.returncode})")
    out = json.loads(Path(result).read_text())
    os.unlink(result)
    mb = 2**20
    row = {
        "images": n,
        "seconds": out["seconds"],
        "images_per_s": n / out["seconds"],
        "peak_rss_main_MB": out["vmhwm_main"] / mb,
        "rss_before_assign_MB": out["rss_ready"] / mb,
        "peak_rss_worker_MB": worker_hwm / mb,
        "peak_pss_tree_MB": peak_pss / mb,
        "workers": len(workers_seen),
        # What grows with N by design: the kept candidates (cluster int32 + distance
        # float32 per kept cluster, the pool position int64 per image).
        "candidates_MB": n * (args.top * 8 + 8) / mb,
        "selected": out["summary"]["selected"],
        "backend": out["summary"]["backend"],
        "layer": out["layer"],
        "torch_threads": out["torch_threads"],
    }
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "hudd_scale")
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 100_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--name", default="scale_assign")
    ap.add_argument("--prepare-only", action="store_true", help="set up T/ and the pools only")
    # internal: one size in a fresh process
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    workdir, checkpoint = prepare(args.folder, args.sizes, args.seed)
    if args.prepare_only:
        return
    rows = [run_size(args, workdir, checkpoint, n) for n in args.sizes]
    cols = ["images", "seconds", "images_per_s", "peak_rss_main_MB", "rss_before_assign_MB",
            "peak_rss_worker_MB", "peak_pss_tree_MB", "candidates_MB", "selected",
            "backend"]  # fmt: skip
    note = (
        f"run_assign end to end (decode in {args.num_workers} DataLoader workers, LRP "
        f"relevance at {rows[0]['layer']} on the CPU with {rows[0]['torch_threads']} torch "
        f"threads, batch {args.batch_size}, top {args.top}, no GIFs), one fresh process per "
        "size; peak_rss_main: VmHWM of that process; rss_before_assign: its RSS with the "
        "model loaded, before run_assign; peak_rss_worker: the largest DataLoader worker's "
        "VmHWM; peak_pss_tree: peak PSS of the process and its workers, sampled every second; "
        "candidates: N × (top × 8 + 8) bytes, the kept candidates"
    )
    write_results(args.name, rows, cols, note)


if __name__ == "__main__":
    main()
