"""The sub-commands' flags, generated from the options table (:data:`hudd_core.options.OPTIONS`).

``hudd run`` takes every option; each step (``hudd test``, ``heatmaps``, ``cluster``,
``assign``, ``retrain``, ``report``) takes the shared options (:data:`~hudd_core.options.SHARED`:
``--workdir``, ``--model``, ``--data``, ``--device``, ...) and those the table says it reads.
A shared flag that a step does not read is accepted and named in one log line, so a script
can pass the same flags to every step. Every generated flag defaults to None ("not given");
:func:`prepare` fills in the table's defaults (:func:`hudd_core.config.load_config`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hudd_core.options import OPTIONS, SHARED, Option, step_options

log = logging.getLogger("hudd")

METAVARS = {"k_range": "LO:HI", "validation": "FRACTION", "group_by": "COLUMN",
            "baselines": "NAME"}  # fmt: skip


def add_option(p: Any, opt: Option, default: Any = None) -> None:
    """The flag of ``opt`` (default None: not given; ``default`` replaces the table's for
    this command only). An option on by default is turned off by ``--no-<name>``."""
    if opt.name == "baselines":  # a flag that may name the baselines
        p.add_argument(opt.flag, nargs="*", default=None, metavar="NAME", help=opt.help)
    elif opt.type is bool and opt.default is True:
        p.add_argument("--no-" + opt.flag[2:], dest=opt.name, action="store_false",
                       default=None, help=f"without {opt.help}")  # fmt: skip
    elif opt.type is bool:
        p.add_argument(opt.flag, action="store_true", default=None, help=opt.help)
    else:
        from hudd_core.choices import dynamic_choices

        choices = None if opt.list else (opt.choices or dynamic_choices(opt.name))
        text = opt.help
        if default is not None:
            text += f" (this command's default: {default})"
        elif opt.default is not None and "(default" not in opt.help:
            text += f" (default: {opt.default})"
        p.add_argument(opt.flag, type=opt.type, nargs="+" if opt.list else None,
                       default=default, choices=choices, metavar=METAVARS.get(opt.name),
                       help=text)  # fmt: skip


def add_flags(p: Any, names: Iterable[str], defaults: Mapping[str, Any] | None = None) -> None:
    """The flags of the options ``names`` on ``p`` (a parser or an argument group)."""
    defaults = defaults or {}
    for name in names:
        add_option(p, OPTIONS[name], defaults.get(name))


def step_flags(step: str) -> list[str]:
    """The options a step's command takes: the shared ones, then its own.

    >>> step_flags("report")[-1], "model" in step_flags("report")
    ('log_file', True)
    """
    return [*SHARED, *(n for n in step_options(step) if n not in SHARED)]


def add_step(
    sub: argparse._SubParsersAction, step: str, help: str, run: Callable[..., int]
) -> argparse.ArgumentParser:
    """A step's sub-command with its flags from the table; ``run(args)`` gets them filled
    in by :func:`prepare` (``args.cfg``: the whole configuration)."""
    p = sub.add_parser(step, help=help)
    read = [n for n in step_flags(step) if step in OPTIONS[n].steps]
    add_flags(p.add_argument_group(f"options of hudd {step}"), read)
    ignored = p.add_argument_group("shared options this step does not read (accepted, ignored)")
    add_flags(ignored, [n for n in SHARED if n not in read])
    p.set_defaults(func=run, step=step)
    return p


def add_grouped(p: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """The flags of ``names`` in groups: the shared ones, those of no step (the run's
    own), then each step's (an option read by several steps is in its first's group)."""
    names = list(names)
    groups: dict[str, list[str]] = {"shared": [n for n in names if OPTIONS[n].shared]}
    for n in names:
        if not OPTIONS[n].shared:
            steps = OPTIONS[n].steps
            groups.setdefault(steps[0] if steps else "run", []).append(n)
    for title, members in groups.items():
        add_flags(p.add_argument_group(f"{title} options"), members)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Fills a step's options with the table's defaults (``args.cfg``: the configuration),
    sets up logging, and names in one log line the shared flags given that the step does
    not read (accepted, so one command line serves every step)."""
    from hudd_core.config import load_config

    names = step_flags(args.step)
    given = {k: getattr(args, k) for k in names}
    cfg = load_config(None, given)
    for k in names:
        setattr(args, k, cfg[k])
    args.cfg = cfg
    setup_logging(cfg["quiet"], cfg["log_file"])
    unused = [OPTIONS[k].flag for k in SHARED if given[k] is not None and args.step not in
              OPTIONS[k].steps]  # fmt: skip
    if unused:
        log.info("%s: %s not used by this step, ignored", args.step, ", ".join(unused))
    return cfg


def fill_defaults(args: argparse.Namespace, names: Iterable[str]) -> None:
    """The table's default for every option of ``names`` not given (a command that takes
    a few options and no configuration file: ``hudd demo``)."""
    for name in names:
        if getattr(args, name) is None:
            setattr(args, name, OPTIONS[name].default)


def step_checkpoint(args: argparse.Namespace):
    """The checkpoint a step works on (:func:`hudd_core.models.checkpoint.prepare_checkpoint`
    over the parsed options)."""
    from hudd_core.models.checkpoint import prepare_checkpoint

    return prepare_checkpoint(vars(args))


def setup_logging(quiet: bool, log_file: str | None) -> None:
    """Step messages on stderr (warnings only with ``quiet``), and all of them in
    ``log_file`` when given."""
    log.setLevel(logging.INFO)
    log.handlers.clear()
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("hudd: %(message)s"))
    log.addHandler(console)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
