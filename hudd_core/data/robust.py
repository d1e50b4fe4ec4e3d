"""Bad images are skipped, never fatal: they are recorded in ``T/skipped.csv``.

A long run over millions of files must not stop at the first corrupt, truncated,
zero-byte or wrongly sized image. :class:`Skipping` wraps a dataset so that such an item
comes back as a *skip record* instead of raising (also from DataLoader worker processes);
:func:`collate_skipping` separates the good items from the records, and :class:`SkipLog`
appends the records to ``T/skipped.csv`` (``step,image,reason``), one line per image and
step, kept across reruns.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> class Toy(torch.utils.data.Dataset):
    ...     ids = ["a.png", "b.png"]
    ...     def __len__(self): return 2
    ...     def __getitem__(self, i):
    ...         if i == 1: raise ValueError("cannot read image b.png: truncated")
    ...         return torch.zeros(1, 4, 4), 0
    >>> x, y, idx, skipped = collate_skipping([Skipping(Toy())[i] for i in range(2)])
    >>> tuple(x.shape), idx.tolist(), skipped
    ((1, 1, 4, 4), [0], [(1, 'cannot read image b.png: truncated')])
"""

from __future__ import annotations

import csv
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from hudd_core.fileio import shown_name


@dataclass
class Skipping(Dataset):
    """Wraps ``dataset`` (items ``(x, y)``): items become ``(x, y, index, None)``, or
    ``(None, None, index, reason)`` when reading fails with a ``ValueError`` or
    ``OSError`` (the messages name the file) or when ``x`` does not have ``shape``.
    ``ids`` name the items in messages (default: the dataset's ``ids``, else the index)."""

    dataset: Dataset
    shape: Sequence[int] | None = None
    ids: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, i: int) -> str:
        ids = self.ids if self.ids is not None else getattr(self.dataset, "ids", None)
        return str(ids[i]) if ids is not None else f"item {i}"

    def __getitem__(self, i: int):
        try:
            x, y = self.dataset[i]
        except (ValueError, OSError) as exc:
            return None, None, i, str(exc)
        if self.shape is not None and tuple(x.shape) != tuple(self.shape):
            return (
                None,
                None,
                i,
                (
                    f"{self.name(i)}: size {tuple(x.shape)}, expected {tuple(self.shape)} "
                    "(use --image-size to resize)"
                ),
            )
        return x, y, i, None


def common_shape(dataset: Dataset, look: int = 64, enough: int = 16) -> tuple[int, ...] | None:
    """The most common item shape among the first readable items of ``dataset`` (up to
    ``enough`` of them within the first ``look``): the size a set's images should have,
    so that one odd image is skipped rather than all the others. None when none is read.

    Example:
        >>> import torch
        >>> common_shape([(torch.zeros(1, 5, 4), 0), *[(torch.zeros(1, 4, 4), 0)] * 2])
        (1, 4, 4)
    """
    shapes: dict[tuple[int, ...], int] = {}
    for i in range(min(look, len(dataset))):
        try:
            x, _ = dataset[i]
        except (ValueError, OSError):
            continue
        shape = tuple(x.shape)
        shapes[shape] = shapes.get(shape, 0) + 1
        if sum(shapes.values()) >= enough:
            break
    return max(shapes, key=shapes.get) if shapes else None


def collate_skipping(batch):
    """``(x, y, indices, skipped)``: the good items collated, and ``(index, reason)`` for
    the skipped ones. ``x`` and ``y`` are None when the whole batch was skipped."""
    good = [b for b in batch if b[3] is None]
    skipped = [(b[2], b[3]) for b in batch if b[3] is not None]
    if not good:
        return None, None, torch.zeros(0, dtype=torch.int64), skipped
    x, y = default_collate([(b[0], b[1]) for b in good])
    return x, y, torch.tensor([b[2] for b in good]), skipped


class SkipLog:
    """``T/skipped.csv``: ``step,image,reason``, appended and flushed as records arrive;
    a rerun does not repeat a line it already has."""

    HEADER = ("step", "image", "reason")

    def __init__(self, workdir: str | Path) -> None:
        self.path = Path(workdir) / "skipped.csv"
        self.seen: set[tuple[str, str]] = set()
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                self.seen = {(r["step"], r["image"]) for r in csv.DictReader(fh)}

    def add(self, step: str, image: str, reason: str) -> bool:
        """Records one skipped image; False when it was already recorded for ``step``."""
        image = shown_name(image)  # as the file holds it, for the rerun's comparison
        if (step, image) in self.seen:
            return False
        self.seen.add((step, image))
        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symbolic link planted as T/skipped.csv is never written through
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise ValueError(f"{self.path} is a symbolic link: not written through") from None
        with open(fd, "a", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            if new:
                w.writerow(self.HEADER)
            w.writerow((step, image, shown_name(reason).replace("\n", " ")))
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def images(self, step: str | None = None) -> list[str]:
        """The recorded images (of one step, or all)."""
        return sorted(img for s, img in self.seen if step is None or s == step)
