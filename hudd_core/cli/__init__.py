"""The ``hudd`` command line: one module per sub-command, each with ``register(sub)``.

A sub-command module defines ``register(subparsers)`` that adds its parser and sets
``func`` (called with the parsed arguments; returns an exit code).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import signal
import sys
import threading

# Sub-command modules, in the order of the HUDD steps.
COMMANDS = ["test", "heatmaps", "distance", "cluster", "assign", "retrain", "report", "run", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hudd", description="HUDD: heatmap-based unsupervised debugging of DNNs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hudd_core.cli.{name}").register(sub)
    return parser


def _lock(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The work folder's lock for the command (``hudd run`` takes it once its
    configuration names the folder; only ``--list-layers`` reads without writing)."""
    from hudd_core.lock import workdir_lock

    workdir = getattr(args, "workdir", None)
    if workdir is None or args.command == "run":  # run: the folder may come from --config
        return contextlib.nullcontext()
    return workdir_lock(workdir, shared=bool(getattr(args, "list_layers", False)))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler's stop) ends like Ctrl-C: the step in progress stops between
    # writes, every file in T/ is whole (written under a temporary name, then renamed).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        if getattr(args, "step", None):  # a step: the table's defaults, logging
            from hudd_core.cli.common import prepare

            prepare(args)
        with _lock(args):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hudd: interrupted; completed work is kept, rerun to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        # Bad input (a value, a file, a full disk) is one line naming it; anything else
        # (TypeError, RuntimeError, ...) is a bug and keeps its traceback.
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = exc.filename2 or exc.filename or "a file"
            print(f"hudd {args.command}: error: no space left on the device for {where} "
                  f"({exc.strerror}); completed work is kept: free some space (or choose "
                  "another --workdir) and rerun to resume", file=sys.stderr)  # fmt: skip
            return 2
        # Messages that already start with the step's name are not prefixed twice.
        message = str(exc).removeprefix(f"{args.command}: ")
        print(f"hudd {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
