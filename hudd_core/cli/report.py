"""``hudd report``: (re)writes ``T/report.html`` from the work folder's files."""

from __future__ import annotations

import argparse

from hudd_core.cli.common import add_step


def register(sub: argparse._SubParsersAction) -> None:
    p = add_step(sub, "report", "write T/report.html (one self-contained page)", run)
    p.add_argument("--output", help="where to write the page (default T/report.html)")
    p.add_argument(
        "--samples", type=int, default=3, help="members per cluster shown with heatmap overlays"
    )


def run(args: argparse.Namespace) -> int:
    from hudd_core.report import build_report

    path = build_report(args.workdir, args.data, out=args.output, samples=args.samples)
    print(f"wrote {path}")
    return 0
