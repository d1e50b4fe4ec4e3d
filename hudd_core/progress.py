"""Progress bars that are drawn only on a terminal.

Under CI, ``nohup`` or ``> log`` a bar would write thousands of carriage-return frames;
there the steps' one-line messages (``hudd: heatmaps ...``, ``... done in 3.1 s``) are the
progress, and :func:`bar` draws nothing.

Example:
    >>> for _ in bar(range(3), desc="demo", enabled=True):  # not a terminal: no output
    ...     pass
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether standard error (where tqdm draws) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled unless ``enabled`` and on a terminal."""
    return tqdm(iterable, disable=not (enabled and on_terminal()), dynamic_ncols=True, **kwargs)
