"""Waiting for an event (a file written, a shard stored, a lock taken), never for a time.

A test that kills a process "after a few seconds", or that expects a count "within 240 s",
passes or fails with the machine's load. These helpers poll for the event itself; their
only time limit, :data:`SAFETY`, is a net against a hang, far beyond any run on a loaded
machine, and it fails with a message that names the awaited event.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

# Seconds after which an awaited event is taken to never happen (a hang, not slowness).
SAFETY = 1800.0
POLL = 0.005  # short: the tests kill processes between two of their writes


class NeverHappened(AssertionError):
    """The awaited event did not happen within :data:`SAFETY` seconds."""


def wait_for(
    event: Callable[[], bool],
    what: str,
    *,
    ended: Callable[[], bool] = lambda: False,
    limit: float = SAFETY,
) -> bool:
    """Polls ``event`` until it holds (True) or ``ended`` holds first (False: what was
    awaited can no longer happen, e.g. the process exited). Raises :class:`NeverHappened`
    naming ``what`` after ``limit`` seconds.

    Example:
        >>> wait_for(lambda: True, "nothing")
        True
        >>> wait_for(lambda: False, "a file", ended=lambda: True)
        False
    """
    give_up = time.monotonic() + limit
    while not event():
        if ended():
            return event()  # the last write may have come just before the end
        if time.monotonic() > give_up:
            raise NeverHappened(f"{what}: not seen within {limit:.0f} s (a hang?)")
        time.sleep(POLL)
    return True


def exited(proc: subprocess.Popen) -> Callable[[], bool]:
    """``ended`` for :func:`wait_for`: whether ``proc`` has exited."""
    return lambda: proc.poll() is not None
