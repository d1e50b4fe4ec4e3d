"""``hudd report``: (re)writes ``T/report.html`` from the work folder's files."""

from __future__ import annotations

import argparse

from hudd_core.cli.common import add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write T/report.html (one self-contained page)")
    add_common(p, model=False)
    p.add_argument("--output", help="where to write the page (default T/report.html)")
    p.add_argument(
        "--samples", type=int, default=3, help="members per cluster shown with heatmap overlays"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.report import build_report

    path = build_report(args.workdir, args.data, out=args.output, samples=args.samples)
    print(f"wrote {path}")
    return 0
