"""``T/run.json``: what ran, with which configuration and versions, how long it took, and
whether a step can be skipped on a rerun.

A step is skipped when its recorded *fingerprint* (its options plus the size and
modification time of each input file, and the modification times of input folders and
their sub-folders, which change when a file is added or removed) is unchanged and its
outputs are whole: each output's size and BLAKE2b checksum, recorded when the step
finished, still match (a heatmap folder's ``layers.json`` also has its layer files
verified, :func:`hudd_core.store.verify_folder`). Otherwise it runs again, announced on
stderr when an output is missing or damaged, and so do the steps after it whose inputs
it rewrites. The steps themselves resume partial work (per batch), so a skipped check is
never the only safety net. A damaged ``run.json`` is set aside (``run.json.damaged``)
and every step checks its work again.

Example:
    >>> import tempfile
    >>> T = Path(tempfile.mkdtemp())
    >>> log = RunLog(T, {"seed": 0})
    >>> fp = fingerprint({"k": 2}, [])
    >>> log.fresh("cluster", fp, [])
    False
    >>> log.record("cluster", fp, 1.5, clusters=4)
    >>> RunLog(T, {"seed": 0}).fresh("cluster", fp, [])
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hudd_core.fileio import atomic_write_json, file_digest

log = logging.getLogger("hudd")


class NothingToDo(ValueError):
    """A step found no work: no error-inducing image to explain, only single-image RCCs to
    assign to. An error for the step run alone (``hudd heatmaps``); ``hudd run`` ends the
    chain there, keeping what was computed, and says why."""


def _stat(path: Path) -> list:
    if path.is_file():
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    if path.is_dir():
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
        return [
            str(path),
            path.stat().st_mtime_ns,
            [(p.name, p.stat().st_mtime_ns) for p in subdirs],
        ]
    return [str(path), None]


def fingerprint(options: dict[str, Any], inputs: list[str | Path]) -> str:
    """A digest of ``options`` and the state of the ``inputs`` files and folders."""
    payload = {"options": options, "inputs": [_stat(Path(p)) for p in inputs]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide the results."""
    import numpy
    import scipy
    import torch

    import hudd_core

    return {
        "python": platform.python_version(),
        "hudd_core": hudd_core.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def output_record(workdir: Path, outputs: Sequence[str | Path]) -> dict[str, list]:
    """``{output relative to workdir: [size, BLAKE2b]}`` of the files a step wrote."""
    record = {}
    for p in outputs:
        path = Path(p)
        if path.is_file():
            record[os.path.relpath(path, workdir)] = [path.stat().st_size, file_digest(path)]
    return record


def output_problem(path: Path, recorded: list | None, *, full: bool) -> str | None:
    """Why the output ``path`` is not what its step wrote (None: it is): missing, another
    size or checksum than ``recorded``, or, for a heatmap folder's ``layers.json``, a
    damaged layer file (``full``: every byte checked, else sizes and headers)."""
    if not path.exists():
        return f"{path} is missing"
    if recorded is not None and path.is_file():
        size = path.stat().st_size
        if size != recorded[0]:
            return f"{path} is {size} bytes, {recorded[0]} when it was written"
        if file_digest(path) != recorded[1]:
            return f"{path} changed since it was written (checksum)"
    if path.name == "layers.json":
        from hudd_core.store import verify_folder

        problems = verify_folder(path.parent, full=full)
        return problems[0] if problems else None
    return None


class RunLog:
    """Reads and updates ``T/run.json`` (written atomically after every step)."""

    def __init__(self, workdir: str | Path, config: dict[str, Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.path = self.workdir / "run.json"
        self.data: dict[str, Any] = self._read()
        self.data.setdefault("steps", {})
        if config is not None:
            self.data["config"] = config
        self.data["versions"] = versions()

    def _read(self) -> dict[str, Any]:
        """run.json's content; a damaged one is set aside and announced (every step then
        verifies and reuses what it finds, so nothing computed is lost)."""
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("steps", {}), dict):
                return data
            reason = "not a run record"
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = str(exc)
        aside = self.path.with_name("run.json.damaged")
        os.replace(self.path, aside)
        log.warning("%s is damaged (%s); kept as %s, every step checks its work again",
                    self.path, reason, aside.name)  # fmt: skip
        return {}

    def fresh(self, step: str, fp: str, outputs: list[str | Path], *, verify: str = "full") -> bool:
        """Whether ``step`` completed before with the same fingerprint and its outputs are
        whole (:func:`output_problem`; ``verify``: ``full`` or ``quick``). A damaged or
        missing output is announced on stderr: the step and those after it are rerun."""
        if verify not in ("quick", "full"):
            raise ValueError(f"verify must be 'quick' or 'full', got {verify!r}")
        rec = self.data["steps"].get(step, {})
        if rec.get("fingerprint") != fp:
            return False
        recorded = rec.get("outputs") or {}
        for p in outputs:
            path = Path(p)
            key = os.path.relpath(path, self.workdir)
            problem = output_problem(path, recorded.get(key), full=verify == "full")
            if problem:
                log.warning("%s: %s; %s and the steps after it are computed again",
                            step, problem, step)  # fmt: skip
                return False
        return True

    def record(
        self,
        step: str,
        fp: str | None,
        seconds: float,
        outputs: Sequence[str | Path] = (),
        **info: Any,
    ) -> None:
        """Marks ``step`` complete with its timing, facts (sizes, counts) and the size and
        checksum of its ``outputs``."""
        self.data["steps"][step] = {"fingerprint": fp, "seconds": round(seconds, 3), **info}
        if outputs:
            self.data["steps"][step]["outputs"] = output_record(self.workdir, outputs)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)
