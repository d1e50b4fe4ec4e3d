"""``hudd distance``: pairwise distances of the rows of a .npy file (a debugging aid)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hudd_core.cli.common import add_flags, fill_defaults
from hudd_core.fileio import atomic_write, ensure_free_space

FLAGS = ("device", "quiet")  # from the options table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distance", help="condensed Euclidean distances of a .npy matrix")
    p.add_argument("input", type=Path, help="N x D .npy (memory-mapped)")
    p.add_argument("output", type=Path, help="where to write the condensed float64 .npy")
    p.add_argument("--second-level", action="store_true", help="HUDD's row-normalised distance")
    add_flags(p, FLAGS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.distance import pdist, second_level_pdist

    fill_defaults(args, FLAGS)
    if not args.input.exists():
        raise FileNotFoundError(f"{args.input} does not exist")
    X = np.load(args.input, mmap_mode="r")
    n = X.shape[0]
    ensure_free_space(args.output.parent, 8 * n * (n - 1) // 2 + 128,
                      f"{args.output} ({n * (n - 1) // 2} float64 distances)",
                      "write it to a disk with more space")  # fmt: skip
    if args.second_level:
        result, _ = second_level_pdist(X, device=args.device, progress=not args.quiet)
    else:
        result = pdist(X, device=args.device, progress=not args.quiet)
    atomic_write(args.output, lambda tmp: np.save(tmp, result))  # never half-written
    print(f"wrote {result.size} distances to {args.output}")
    return 0
