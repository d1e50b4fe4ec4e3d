"""One writer per work folder: ``hudd`` holds an exclusive ``fcntl.flock`` on ``T/.lock``
while a command that writes to ``T/`` runs, so a second run stops at once instead of
interleaving its files with the first's. The lock belongs to the open file, so it dies
with its holder (even after kill -9): a lock file left behind never blocks. Read-only
commands take it shared: they may run together, never beside a writer. The file holds
``pid N since <time>`` of the writer, for the message the next one gets.

Example:
    >>> import tempfile
    >>> T = tempfile.mkdtemp()
    >>> with workdir_lock(T):
    ...     try:
    ...         with workdir_lock(T):
    ...             pass
    ...     except WorkdirBusy as busy:
    ...         print(str(busy).split(" is in use by pid ")[1].split()[0] == str(os.getpid()))
    True
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK = ".lock"


class WorkdirBusy(ValueError):
    """Another ``hudd`` process is writing to the work folder."""


def _holder(path: Path) -> str:
    """Who holds the lock: ``pid N since ...`` of the writer, from the file, or readers
    (a shared lock can still be had; they write nothing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return "a read-only hudd command"
        except BlockingIOError:
            return text or "another hudd process"
    finally:
        os.close(fd)


@contextmanager
def workdir_lock(workdir: str | Path, *, shared: bool = False) -> Iterator[Path]:
    """Holds ``workdir/.lock`` (created with the folder if needed) for the ``with`` block:
    exclusively, or ``shared`` with other readers. A :class:`WorkdirBusy` (a
    ``ValueError``) names the holder when the lock is taken."""
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusy(
                f"{folder} is in use by {_holder(path)}: wait until it ends, or give this "
                "command another --workdir"
            ) from None
        if not shared:
            since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {since}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
