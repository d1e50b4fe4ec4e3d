"""Heatmap storage (docs/CONTRACTS.md): ``<folder>/<layer>.npy`` (N × D, float32 or
float16), ``index.csv`` (``row,image``) and ``layers.json``, filled batch by batch.

Files are created at full size, their space reserved on disk (``posix_fallocate``) after
a check that it is free, so memory stays one batch whatever N and a full disk is a clear
error before the first row, never a SIGBUS in the middle. After every batch the memmaps
are flushed and ``progress.json`` (rows done, a signature of the inputs, and per layer a
checksum chained over the stored batches) is replaced atomically; a rerun with the same
signature continues from the first row not yet done once the stored rows match their
checksums, any other signature (or damaged rows) starts afresh. ``layers.json`` says
``"complete": true`` only once every row is written, and then records each file's size
and checksum, which :func:`read_heatmap_index` verifies for the steps that read them.

Example:
    >>> import tempfile, numpy as np, torch
    >>> folder = tempfile.mkdtemp()
    >>> store = HeatmapStore.open(folder, ["a.png", "b.png"], {"fc": (3,)}, composite="hudd")
    >>> store.write({"fc": torch.ones(2, 3)})
    >>> store.finish()
    >>> np.load(f"{folder}/fc.npy", mmap_mode="r").shape
    (2, 3)
    >>> verify_folder(folder, full=True)
    []
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from hudd_core.fileio import (
    atomic_write_json,
    chain_digest,
    ensure_free_space,
    format_bytes,
    preallocate,
    read_json,
    safe_component,
    write_csv,
)

log = logging.getLogger("hudd")

PROGRESS = "progress.json"
LAYERS = "layers.json"
INDEX = "index.csv"
VERIFY = ("quick", "full")  # size + header, or also every stored byte against its checksum


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


# --- the .npy files: layout, creation, checks ---------------------------------------------


def _header(rows: int, width: int, dtype: np.dtype) -> bytes:
    """The .npy (version 1.0) header of a C-order ``(rows, width)`` array."""
    import io

    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": (rows, width)}  # fmt: skip
    np.lib.format.write_array_header_1_0(buf, d)
    return buf.getvalue()


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, offset of the data)`` from a .npy file's header, reading nothing
    else; a ValueError when the header is not that of a plain C-order array."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
        if read is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read(fh)
        if fortran or dtype.hasobject:
            raise ValueError("not a plain C-order numeric array")
        return tuple(shape), dtype, fh.tell()


def check_npy(
    path: Path, rows: int | None = None, width: int | None = None, dtype: str | None = None
) -> str | None:
    """Why ``path`` is not a whole ``(rows, width)`` ``dtype`` .npy file (None: it is):
    missing, a damaged header, another shape or dtype, or a size that does not match
    its header (a truncated or extended file). Reads only the header."""
    if not path.is_file():
        return "is missing"
    try:
        shape, dt, offset = npy_layout(path)
    except (ValueError, OSError, SyntaxError) as exc:
        return f"has no valid .npy header ({exc})"
    want_shape = (shape[0] if rows is None else rows, shape[-1] if width is None else width)
    if len(shape) != 2 or shape != want_shape:
        return f"holds an array of shape {shape}, expected {want_shape}"
    if dtype is not None and dt != np.dtype(dtype):
        return f"holds {dt}, expected {dtype}"
    want = offset + math.prod(shape) * dt.itemsize
    size = path.stat().st_size
    if size != want:
        return f"is {size} bytes, its header needs {want} (truncated or extended)"
    return None


def _open_rows(path: Path, mode: str = "r") -> np.memmap:
    """The rows of a .npy file as a memmap; the file's size is checked against its header
    first, so ``r+`` never extends a short file with zeros (numpy's memmap would)."""
    problem = check_npy(path)
    if problem:
        raise ValueError(f"{path} {problem}")
    shape, dtype, offset = npy_layout(path)
    return np.memmap(path, dtype=dtype, mode=mode, offset=offset, shape=shape)


def _block_digest(previous: str, rows: np.ndarray) -> str:
    return chain_digest(previous, memoryview(np.ascontiguousarray(rows)).cast("B"))


def replay_digest(X: np.ndarray, bounds: Sequence[int]) -> str:
    """The chained checksum of ``X``'s rows cut at ``bounds`` (the row counts after each
    stored batch), as :meth:`HeatmapStore.write` computed it."""
    digest, start = "", 0
    for end in bounds:
        digest = _block_digest(digest, X[start:end])
        start = end
    return digest


def _need_bytes(rows: int, widths: Sequence[int], dtype: np.dtype) -> int:
    return sum(len(_header(rows, w, dtype)) + rows * w * dtype.itemsize for w in widths)


def _create(folder: Path, rows: int, layers: Mapping[str, int], dtype: np.dtype) -> None:
    """Every layer's file at full size, its space reserved; checked to fit first."""
    files = [folder / layer_file(k) for k in layers]
    need = _need_bytes(rows, list(layers.values()), dtype)
    reclaimed = sum(f.stat().st_size for f in files if f.is_file())  # replaced below
    total = sum(layers.values())
    what = (f"heatmaps: {folder} ({rows} images x {total} relevance values of "
            f"{len(layers)} layers x {dtype.itemsize} bytes)")  # fmt: skip
    ways = ("store fewer layers (--layers), half the size (--float16), or another "
            "--workdir on a disk with more space")  # fmt: skip
    ensure_free_space(folder, need - reclaimed, what, ways)
    for path, width in zip(files, layers.values(), strict=True):
        head = _header(rows, width, dtype)
        path.unlink(missing_ok=True)  # a symbolic link is replaced, never written through
        with open(path, "xb") as fh:
            fh.write(head)
            fh.flush()
            try:
                preallocate(fh.fileno(), len(head), rows * width * dtype.itemsize)
            except OSError as exc:
                raise ValueError(
                    f"{what}: {path} cannot be reserved ({exc.strerror}, "
                    f"{format_bytes(need)} needed in all): {ways}"
                ) from exc


class HeatmapStore:
    """Writer of one heatmap folder (``T/Heatmaps`` or ``T/ImprovementHeatmaps``)."""

    def __init__(self, folder: Path, images: list[str], layers: dict, meta: dict, state: dict):
        self.folder, self.images, self.layers, self.meta = folder, images, layers, meta
        self.state = state  # progress.json: signature, rows, bounds, digests, complete
        self.arrays = {name: _open_rows(folder / layer_file(name), "r+") for name in layers}

    @property
    def done(self) -> int:
        return int(self.state["rows"])

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
        matches (same images, layers, composite, dtype and model ``fingerprint``) and the
        stored rows are whole (size, header and checksums); damaged files are announced
        on stderr and computed again."""
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
        state = _resumable(folder, sig, images, layers, dtype)
        if state is not None:
            store = cls(folder, images, layers, meta, state)
            _write_if_changed(folder / INDEX, _index_text(images))  # rebuilt if damaged
            if store.complete:  # layers.json is rebuilt from the verified files
                store.finish()
            return store
        # Fresh start: the old progress goes first, so a crash never pairs it with new files.
        (folder / PROGRESS).unlink(missing_ok=True)
        (folder / LAYERS).unlink(missing_ok=True)
        widths = {k: math.prod(v) for k, v in layers.items()}
        _create(folder, len(images), widths, np.dtype(dtype))
        write_csv(folder / INDEX, ["row", "image"], enumerate(images))
        _atomic_json(folder / LAYERS, meta)
        state = {"signature": sig, "rows": 0, "complete": False, "bounds": [],
                 "digests": dict.fromkeys(layers, "")}  # fmt: skip
        _atomic_json(folder / PROGRESS, state)
        return cls(folder, images, layers, meta, state)

    @property
    def complete(self) -> bool:
        return self.done >= len(self.images)

    def write(self, relevance: Mapping[str, torch.Tensor | np.ndarray]) -> None:
        """Appends one batch (rows ``done .. done + B``) of every layer, then records the
        new row count and checksums durably."""
        b = None
        start = self.done
        for name in self.layers:
            r = relevance[name]
            r = r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
            r = r.reshape(len(r), -1)
            if b is None:
                b = len(r)
                if start + b > len(self.images):
                    raise ValueError(f"more rows than the {len(self.images)} images")
            elif len(r) != b:
                raise ValueError(f"layer {name}: {len(r)} rows, other layers {b}")
            self.arrays[name][start : start + b] = r  # converts to float16 when asked
        if not b:
            return
        digests = self.state.setdefault("digests", {})
        for name, arr in self.arrays.items():
            arr.flush()
            digests[name] = _block_digest(digests.get(name, ""), arr[start : start + b])
        self.state["bounds"] = [*self.state.get("bounds", []), start + b]
        self.state["rows"] = start + b
        _atomic_json(self.folder / PROGRESS, self.state)

    def finish(self) -> None:
        """Marks the folder complete: ``layers.json`` gets ``"complete": true`` and each
        file's size and checksum (``bytes``, ``blake2b``, with the batch ``bounds``)."""
        if not self.complete:
            raise ValueError(f"only {self.done} of {len(self.images)} rows are written")
        self.state["complete"] = True
        _atomic_json(self.folder / PROGRESS, self.state)
        meta = {**self.meta, "complete": True, "bounds": self.state.get("bounds", [])}
        digests = self.state.get("digests", {})
        meta["layers"] = [
            {
                **e,
                "bytes": (self.folder / e["file"]).stat().st_size,
                "blake2b": digests.get(e["name"], ""),
            }
            for e in self.meta["layers"]
        ]
        self.meta = meta
        _write_if_changed(self.folder / LAYERS, json.dumps(meta, indent=2))


def _index_text(images: Sequence[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "image"])
    w.writerows(enumerate(images))
    return buf.getvalue()


def _write_if_changed(path: Path, text: str) -> None:
    """``text`` into ``path`` unless it holds it already: an unchanged file keeps its
    modification time, so the steps that read it are not rerun for nothing."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    from hudd_core.fileio import atomic_write_text

    atomic_write_text(path, text, fsync=True)


def _resumable(folder: Path, sig: str, images: list, layers: dict, dtype: str) -> dict | None:
    """The progress state to resume from, or None to start afresh: no progress, another
    signature, or stored rows that are not whole (then announced on stderr)."""
    path = folder / PROGRESS
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("signature") != sig:
            return None
        rows = int(state["rows"])
        bounds = [int(b) for b in state.get("bounds", [])]
        digests = state.get("digests")
        if digests is not None and not isinstance(digests, dict):
            raise TypeError(f"digests is a {type(digests).__name__}")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        log.warning("%s is damaged (%s): the heatmaps are computed again", path, exc)
        return None
    for name, shape in layers.items():
        problem = _check_stored(folder / layer_file(name), len(images), math.prod(shape),
                                dtype, rows, bounds, digests, name)  # fmt: skip
        if problem:
            log.warning("%s %s: the heatmaps are computed again", folder / layer_file(name),
                        problem)  # fmt: skip
            return None
    return state


def _check_stored(path, n, width, dtype, rows, bounds, digests, name) -> str | None:
    """Why the first ``rows`` rows of ``path`` cannot be trusted (None: they can)."""
    problem = check_npy(path, n, width, dtype)
    if problem or digests is None:  # progress of an older version: the size check only
        return problem
    if (bounds[-1] if bounds else 0) != rows or name not in digests:
        return f"has no checksum for its {rows} stored rows"
    if replay_digest(_open_rows(path), bounds) != digests[name]:
        return "does not match its checksum (bytes changed since they were written)"
    return None


# --- reading a finished folder --------------------------------------------------------------


def verify_folder(folder: str | Path, *, full: bool = False) -> list[str]:
    """The problems of a finished heatmap folder, one message per damaged file (empty:
    whole): ``layers.json`` and ``index.csv`` readable and complete, every layer file of
    the recorded size and header, and with ``full`` every stored byte against the
    checksum ``layers.json`` records (a read of every file; ``quick``: headers only)."""
    folder = Path(folder)
    try:
        entries, images = read_index(folder)
    except (ValueError, FileNotFoundError) as exc:
        return [str(exc)]
    meta = json.loads((folder / LAYERS).read_text(encoding="utf-8"))
    problems = []
    for e in entries:
        path = folder / e["file"]
        problem = check_npy(path, len(images), math.prod(e["shape"]), meta.get("dtype"))
        if problem is None and "bytes" in e and path.stat().st_size != e["bytes"]:
            problem = f"is {path.stat().st_size} bytes, {LAYERS} records {e['bytes']}"
        if problem is None and full and e.get("blake2b"):
            if replay_digest(_open_rows(path), meta.get("bounds", [])) != e["blake2b"]:
                problem = f"does not match the checksum {LAYERS} records (bytes changed)"
        if problem:
            problems.append(f"{path} {problem}")
    return problems


def _int_list(value: object) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


def read_index(folder: str | Path) -> tuple[list[dict], list[str]]:
    """``(layers, images)`` of a finished heatmap folder: ``layers.json``'s entries and
    ``index.csv``'s images in row order; a ValueError naming the file when one is
    damaged or the heatmaps are incomplete."""
    folder = Path(folder)
    meta_path, index_path = folder / LAYERS, folder / INDEX
    for p in (meta_path, index_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: run `hudd heatmaps` first")
    again = "rerun `hudd heatmaps` (it rebuilds it from the stored heatmaps)"
    meta = read_json(meta_path, again)
    if not isinstance(meta, dict) or not isinstance(meta.get("layers"), list):
        raise ValueError(f"{meta_path} is damaged (no list of layers): {again}")
    if not meta.get("complete", False):
        raise ValueError(f"{meta_path} says the heatmaps are incomplete: rerun `hudd heatmaps`")
    if not _int_list(meta.get("bounds", [])):
        raise ValueError(f"{meta_path} is damaged (bounds {meta['bounds']!r}): {again}")
    for layer in meta["layers"]:
        if not (isinstance(layer, dict) and {"name", "file", "shape"} <= set(layer)
                and _int_list(layer["shape"]) and isinstance(layer["file"], str)):  # fmt: skip
            raise ValueError(f"{meta_path} is damaged (layer entry {layer!r}): {again}")
        if layer["file"] != safe_component(layer["file"]):
            raise ValueError(f"{meta_path}: layer file {layer['file']!r} is not a plain file name")
    try:
        with open(index_path, newline="", encoding="utf-8") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: int(r["row"]))
        images = [r["image"] for r in rows]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{index_path} is damaged ({exc!r}): {again}") from exc
    if any(img is None for img in images) or [int(r["row"]) for r in rows] != list(
        range(len(rows))
    ):
        raise ValueError(f"{index_path} is damaged (rows are not 0..N-1 once each): {again}")
    if meta.get("rows", len(images)) != len(images):
        raise ValueError(
            f"{index_path} is damaged ({len(images)} rows, {LAYERS} records {meta['rows']}): "
            f"{again}"
        )
    return meta["layers"], images


def read_heatmap_index(
    workdir: Path, *, verify: str = "quick", folder: str = "Heatmaps"
) -> tuple[list[dict], list[str]]:
    """``(layers, images)`` from ``T/Heatmaps/layers.json`` and ``index.csv`` (row order),
    once the layer files are verified (``verify``: ``quick`` = sizes and headers,
    ``full`` = also every byte against its checksum); a damaged file is a ValueError
    naming it and the way forward. ``folder``: another folder of the same format
    (``Activations``)."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
    folder = Path(workdir) / folder
    layers, images = read_index(folder)
    problems = verify_folder(folder, full=verify == "full")
    if problems:
        raise ValueError(
            f"{problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}: "
            "rerun `hudd heatmaps` (it recomputes the damaged heatmaps) or `hudd run`"
        )
    return layers, images
