"""Shared helpers of the benchmark scripts: timing medians, JSON and Markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(os.environ.get("HUDD_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def time_runs(fn: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_results(name: str, rows: list[dict], columns: list[str], note: str = "") -> Path:
    """Writes ``results/<name>.json`` and ``results/<name>.md`` (a Markdown table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "rows": rows, "note": note}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    if note:
        lines += ["", note]
    md = RESULTS / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return md


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
