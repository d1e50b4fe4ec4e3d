"""``T/run.json``: what ran, with which configuration and versions, how long it took, and
whether a step can be skipped on a rerun.

A step is skipped when its recorded *fingerprint* (its options plus the size and
modification time of each input file, and the modification times of input folders and
their sub-folders, which change when a file is added or removed) is unchanged and its
outputs exist; otherwise it runs again, and so do the steps after it, whose inputs it
rewrites. The steps themselves resume partial work (per batch), so a skipped check is
never the only safety net.

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
import platform
from pathlib import Path
from typing import Any

from hudd_core.fileio import atomic_write_json


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


class RunLog:
    """Reads and updates ``T/run.json`` (written atomically after every step)."""

    def __init__(self, workdir: str | Path, config: dict[str, Any] | None = None) -> None:
        self.path = Path(workdir) / "run.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.setdefault("steps", {})
        if config is not None:
            self.data["config"] = config
        self.data["versions"] = versions()

    def fresh(self, step: str, fp: str, outputs: list[str | Path]) -> bool:
        """Whether ``step`` completed before with the same fingerprint and its outputs exist."""
        rec = self.data["steps"].get(step, {})
        return rec.get("fingerprint") == fp and all(Path(p).exists() for p in outputs)

    def record(self, step: str, fp: str | None, seconds: float, **info: Any) -> None:
        """Marks ``step`` complete with its timing and facts (sizes, counts)."""
        self.data["steps"][step] = {"fingerprint": fp, "seconds": round(seconds, 3), **info}
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)
