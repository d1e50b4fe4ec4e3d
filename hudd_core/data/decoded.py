"""A data set whose items are read once: decoded, preprocessed, then kept in memory.

Training reads every image once per epoch, for several epochs: decoding the same PNGs
again in each is wasted work. :class:`Decoded` keeps each item as first read, up to a
memory budget; past it the items are read each time as without it. Either way every item
has the same values, so the training is the same.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> d = Decoded(TensorDataset(torch.zeros(4, 2), torch.arange(4)), budget=40)
    >>> [int(d[i][1]) for i in (0, 1, 2, 0)], len(d.items), d.bytes
    ([0, 1, 2, 0], 2, 32)
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

# Bytes of items kept: the demo's training sets take a few MiB; past this a large data
# set is read from disk as usual instead of filling the memory.
BUDGET = 1 << 30


class Decoded(Dataset):
    """``dataset``'s items, each read once and then served from memory while their tensors
    fit in ``budget`` bytes (the later ones are read on every access)."""

    def __init__(self, dataset: Dataset, budget: int = BUDGET) -> None:
        self.dataset, self.budget = dataset, budget
        self.items: dict[int, Any] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        item = self.items.get(i)
        if item is None:
            item = self.dataset[i]
            size = sum(t.numel() * t.element_size() for t in item if isinstance(t, torch.Tensor))
            if self.bytes + size <= self.budget:
                self.items[i] = item
                self.bytes += size
        return item
