"""Heatmap storage (docs/CONTRACTS.md): ``<folder>/<layer>.npy`` (N × D, float32 or
float16), ``index.csv`` (``row,image``) and ``layers.json``, filled batch by batch.

Files are created at full size with ``np.lib.format.open_memmap``, so memory stays one
batch whatever N. After every batch the memmaps are flushed and ``progress.json`` (rows
done, and a signature of the inputs) is replaced atomically; a rerun with the same
signature continues from the first row not yet done, any other signature starts afresh.
``layers.json`` says ``"complete": true`` only once every row is written.

Example:
    >>> import tempfile, numpy as np, torch
    >>> folder = tempfile.mkdtemp()
    >>> store = HeatmapStore.open(folder, ["a.png", "b.png"], {"fc": (3,)}, composite="hudd")
    >>> store.write({"fc": torch.ones(2, 3)})
    >>> store.finish()
    >>> np.load(f"{folder}/fc.npy", mmap_mode="r").shape
    (2, 3)
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from hudd_core.fileio import atomic_write_json, safe_component, write_csv

PROGRESS = "progress.json"


def _atomic_json(path: Path, payload: dict) -> None:
    atomic_write_json(path, payload, fsync=True)


def signature(images: Sequence[str], layers: Mapping[str, Sequence[int]], **extra) -> str:
    """Hash of everything the stored rows depend on (images, layers, options)."""
    h = hashlib.sha256()
    h.update("\n".join(images).encode())
    h.update(json.dumps({k: list(v) for k, v in layers.items()}, sort_keys=True).encode())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def layer_file(name: str) -> str:
    """File name of a layer's heatmaps: the name made safe
    (:func:`hudd_core.fileio.safe_component`) + ``.npy``.

    Example:
        >>> layer_file("features.0"), layer_file("../x")
        ('features.0.npy', '_.._x.npy')
    """
    return safe_component(name + ".npy")


class HeatmapStore:
    """Writer of one heatmap folder (``T/Heatmaps`` or ``T/ImprovementHeatmaps``)."""

    def __init__(self, folder: Path, images: list[str], layers: dict, meta: dict, done: int):
        self.folder, self.images, self.layers, self.meta = folder, images, layers, meta
        self.done = done
        self.arrays = {name: np.load(folder / layer_file(name), mmap_mode="r+") for name in layers}

    @classmethod
    def open(
        cls,
        folder: str | Path,
        images: Sequence[str],
        layers: Mapping[str, Sequence[int]],
        *,
        composite: str,
        float16: bool = False,
        fingerprint: str = "",
    ) -> HeatmapStore:
        """Opens ``folder`` for the given rows and layers, resuming when its progress
        matches (same images, layers, composite, dtype and model ``fingerprint``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        images = list(images)
        layers = {k: tuple(int(d) for d in v) for k, v in layers.items()}
        dtype = "float16" if float16 else "float32"
        sig = signature(images, layers, composite=composite, dtype=dtype, model=fingerprint)
        meta = {
            "layers": [
                {"name": k, "shape": list(v), "file": layer_file(k)} for k, v in layers.items()
            ],
            "composite": composite,
            "dtype": dtype,
            "rows": len(images),
            "complete": False,
        }
        progress = folder / PROGRESS
        if progress.is_file():
            state = json.loads(progress.read_text())
            files_ok = all((folder / layer_file(k)).is_file() for k in layers)
            if state.get("signature") == sig and files_ok:
                return cls(folder, images, layers, meta, int(state["rows"]))
        # Fresh start: the old progress goes first, so a crash never pairs it with new files.
        progress.unlink(missing_ok=True)
        (folder / "layers.json").unlink(missing_ok=True)
        for name, shape in layers.items():
            np.lib.format.open_memmap(
                folder / layer_file(name),
                mode="w+",
                dtype=np.dtype(dtype),
                shape=(len(images), math.prod(shape)),
            ).flush()
        write_csv(folder / "index.csv", ["row", "image"], enumerate(images))
        _atomic_json(folder / "layers.json", meta)
        _atomic_json(progress, {"signature": sig, "rows": 0, "complete": False})
        return cls(folder, images, layers, meta, 0)

    @property
    def complete(self) -> bool:
        return self.done >= len(self.images)

    def write(self, relevance: Mapping[str, torch.Tensor | np.ndarray]) -> None:
        """Appends one batch (rows ``done .. done + B``) of every layer, then records the
        new row count durably."""
        b = None
        for name in self.layers:
            r = relevance[name]
            r = r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
            r = r.reshape(len(r), -1)
            if b is None:
                b = len(r)
                if self.done + b > len(self.images):
                    raise ValueError(f"more rows than the {len(self.images)} images")
            elif len(r) != b:
                raise ValueError(f"layer {name}: {len(r)} rows, other layers {b}")
            arr = self.arrays[name]
            arr[self.done : self.done + b] = r  # converts to float16 when asked
        for arr in self.arrays.values():
            arr.flush()
        self.done += b or 0
        state = json.loads((self.folder / PROGRESS).read_text())
        _atomic_json(self.folder / PROGRESS, {**state, "rows": self.done})

    def finish(self) -> None:
        """Marks the folder complete (``layers.json``: ``"complete": true``)."""
        if not self.complete:
            raise ValueError(f"only {self.done} of {len(self.images)} rows are written")
        self.meta["complete"] = True
        state = json.loads((self.folder / PROGRESS).read_text())
        _atomic_json(self.folder / PROGRESS, {**state, "complete": True})
        _atomic_json(self.folder / "layers.json", self.meta)


def read_heatmap_index(workdir: Path) -> tuple[list[dict], list[str]]:
    """``(layers, images)`` from ``T/Heatmaps/layers.json`` and ``index.csv`` (row order)."""
    hm = Path(workdir) / "Heatmaps"
    meta_path, index_path = hm / "layers.json", hm / "index.csv"
    for p in (meta_path, index_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: run `hudd heatmaps` first")
    meta = json.loads(meta_path.read_text())
    if not meta.get("complete", False):
        raise ValueError(f"{meta_path} says the heatmaps are incomplete: rerun `hudd heatmaps`")
    for layer in meta["layers"]:
        if layer["file"] != safe_component(layer["file"]):
            raise ValueError(f"{meta_path}: layer file {layer['file']!r} is not a plain file name")
    with open(index_path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["row"]))
    images = [r["image"] for r in rows]
    return meta["layers"], images
