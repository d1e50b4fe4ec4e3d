"""Crash-safe writes for the work folder: every file is written under a temporary sibling
name and renamed into place, so an interruption at any point (SIGINT, SIGTERM, kill -9)
leaves the previous file or the new one, never half of one.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> path = write_csv(d / "a.csv", ["image", "cluster"], [["x.png", 1]])
    >>> (d / "a.csv").read_text()
    'image,cluster\\nx.png,1\\n'
    >>> sorted(p.name for p in d.iterdir())
    ['a.csv']
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("hudd")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
_MAX_BYTES = 200  # below the usual 255-byte file-name limit, with room for suffixes


def safe_component(name: object, reserved: Collection[str] = ()) -> str:
    """``name`` (a class, cluster, layer or image name read from the data, a CSV or a
    model) as ONE path component that stays inside the folder it is joined to: path
    separators, NUL and other control characters and characters Windows forbids become
    ``_``; a name that is empty, starts with a dot (``..``, ``.``, hidden and temporary
    names) or is one of ``reserved`` (case-insensitive: the folder's own files) gets a
    ``_`` in front; a name longer than 200 bytes is cut and ends with a hash of the
    whole. Ordinary names (``features.0``, ``closed``, ``000123.png``) are returned
    unchanged. Every output path built from such a name goes through this function.

    Example:
        >>> [safe_component(n) for n in ["features.0", "../../x", "/etc/passwd", "..", "a\\0b"]]
        ['features.0', '_.._.._x', '_etc_passwd', '_..', 'a_b']
        >>> safe_component("Heatmaps", reserved={"heatmaps"})
        '_Heatmaps'
    """
    text = _UNSAFE.sub("_", str(name))
    if not text or text.startswith(".") or text.lower() in {r.lower() for r in reserved}:
        text = "_" + text
    if len(text.encode()) > _MAX_BYTES:
        digest = hashlib.sha256(str(name).encode("utf-8", "surrogateescape")).hexdigest()[:12]
        head = text.encode()[: _MAX_BYTES - 13].decode("utf-8", "ignore")
        text = f"{head}~{digest}"
    return text


def shown_name(name: str) -> str:
    """``name`` as text any file takes: bytes that are not UTF-8 (kept by the file
    system, ``surrogateescape``) become ``\\xNN``.

    Example:
        >>> shown_name(b"caf\\xe9.png".decode("utf-8", "surrogateescape"))
        'caf\\\\xe9.png'
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def temporary_sibling(path: Path) -> Path:
    """``.<stem>.tmp<suffix>`` beside ``path`` (the suffix kept: writers such as
    ``np.save`` and Pillow go by it)."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, fsync: bool = False) -> Path:
    """Calls ``write(tmp)`` on a temporary sibling of ``path``, then renames it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep the half-written copy
        raise
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """``text`` (UTF-8) into ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` into ``path``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, payload: Any, *, fsync: bool = False) -> Path:
    """``payload`` as indented JSON into ``path``, atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, default=str), fsync=fsync)


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable[Any]]) -> Path:
    """A CSV file (``\\n`` line ends) with ``header`` and ``rows``, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)

    return atomic_write(path, write)


def save_signed_npz(path: Path, signature: dict, **arrays: Any) -> Path:
    """``arrays`` and a JSON ``signature`` into ``path`` (a resume point), atomically."""
    sig = json.dumps(signature, sort_keys=True)
    return atomic_write(path, lambda tmp: np.savez(tmp, signature=sig, **arrays))


def load_signed_npz(path: Path, signature: dict) -> dict[str, np.ndarray] | None:
    """The arrays :func:`save_signed_npz` wrote to ``path``, or None when there is no such
    file or it was saved for another ``signature`` (other inputs: start afresh). A resume
    point that cannot be read whole (truncated, bytes changed: the zip's CRC catches
    them) is announced on stderr and also means starting afresh: it is only a cache."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["signature"])) != signature:
                return None
            return {k: z[k] for k in z.files if k != "signature"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s is damaged (%s); the work it saved is recomputed", path, exc)
        return None


def read_json(path: Path, way_forward: str) -> Any:
    """The JSON document in ``path``; a file that cannot be parsed (truncated, bytes
    changed) is a ValueError naming it and ``way_forward``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}): {way_forward}") from exc


def chain_digest(previous: str, data: bytes | memoryview) -> str:
    """BLAKE2b (128 bits) of ``previous`` (a hex digest, ``""`` to start) and ``data``: a
    file written block by block is checksummed as it is written, and verified by
    replaying the same blocks, without ever hashing it whole.

    Example:
        >>> chain_digest(chain_digest("", b"ab"), b"c") != chain_digest("", b"abc")
        True
    """
    h = hashlib.blake2b(bytes.fromhex(previous), digest_size=16)
    h.update(data)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """BLAKE2b (128 bits) of the whole file, read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``format_bytes(3 << 30) == '3.0 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def ensure_free_space(folder: Path, need: int, what: str, ways: str) -> None:
    """A ValueError naming ``what`` needs ``need`` bytes, the space free in ``folder``
    and ``ways`` out, when ``need`` does not fit; checked before a step writes, so a
    full disk stops it cleanly instead of in the middle."""
    folder = Path(folder)
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ValueError(
            f"{what} needs {format_bytes(need)} but only {format_bytes(free)} are free in "
            f"{probe}: {ways}"
        )


def preallocate(fd: int, offset: int, length: int) -> None:
    """Reserves ``length`` bytes from ``offset`` of the open file ``fd`` on disk
    (``posix_fallocate``; where the file system lacks it, zeros are written), so that
    a memmap over them never meets a full disk (SIGBUS): a full disk is an ``OSError``
    (ENOSPC) here, before anything depends on the file."""
    if length <= 0:
        return
    try:
        os.posix_fallocate(fd, offset, length)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    os.lseek(fd, offset, os.SEEK_SET)
    zeros = bytes(1 << 22)
    left = length
    while left > 0:
        left -= os.write(fd, zeros[: min(left, len(zeros))])


def fresh_tmp_dir(final: Path) -> Path:
    """An empty sibling folder ``.<name>.tmp`` to build ``final`` in."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> None:
    """Moves the finished folder ``tmp`` to ``final``, replacing what was there (the old
    folder is renamed aside first, so ``final`` is never a mix of both)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
