"""Images named by URI in a pool's ``files.txt`` (``s3://bucket/key.png``, ``gs://``,
``hdfs://``, ``file:///abs/path.png``), read through pyarrow's file systems.

pyarrow builds one file system per scheme, authority and query (``?region=...``,
``?endpoint_override=...``: its options) the first time this process reads such a URI,
and it is reused for every other image there (S3 resolves a bucket's region and finds
the credentials once, as pyarrow does: AWS environment variables, config files, the
instance's role). The file systems are never shipped between processes: a forked
DataLoader worker builds its own (the AWS SDK's threads do not survive a fork; the
parent's objects are left untouched there, as destroying them could block) and so does
a Ray task.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> f = Path(tempfile.mkdtemp()) / "a b.txt"
    >>> _ = f.write_bytes(b"hi")
    >>> is_uri(f.as_uri()), is_uri("closed/000123.png"), read_uri(f.as_uri())
    (True, False, b'hi')
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

# (process id, scheme, authority, query) -> (pyarrow FileSystem, the path of its root)
_FILESYSTEMS: dict[tuple[int, str, str, str], tuple[Any, str]] = {}


def is_uri(name: str) -> bool:
    """Whether an entry of ``files.txt`` (or the name part of an image id) is a URI
    (``scheme://...``) rather than a path relative to the folder."""
    return _SCHEME.match(name) is not None


def require_pyarrow(uri: str) -> None:
    """An ImportError naming ``uri`` when pyarrow, which reads it, is not installed."""
    try:
        import pyarrow.fs  # noqa: F401
    except ImportError:
        raise ImportError(
            f"reading {uri} needs pyarrow's file systems: pip install pyarrow"
        ) from None


def build_filesystem(scheme: str, authority: str, query: str) -> tuple[Any, str]:
    """pyarrow's file system for the URIs ``scheme://authority/...?query`` and the path
    of their root in it (``bucket`` for S3, ``/`` for ``file://``): what
    ``FileSystem.from_uri`` makes of the root URI. Cached by :func:`filesystem`."""
    require_pyarrow(f"{scheme}://{authority}/")
    from pyarrow import fs

    root = f"{scheme}://{authority}/" + (f"?{query}" if query else "")
    try:
        return fs.FileSystem.from_uri(root)
    except ValueError as exc:  # ArrowInvalid
        if "Unrecognized filesystem type" in str(exc):
            raise ValueError(f"pyarrow has no file system for the scheme {scheme!r}") from None
        raise ValueError(_first_line(exc)) from None
    except OSError as exc:  # e.g. HDFS without its Java library
        raise OSError(f"cannot open the file system of {root}: {_first_line(exc)}") from None


def filesystem(scheme: str, authority: str, query: str) -> tuple[Any, str]:
    """:func:`build_filesystem`, once per process and key (a failure is not kept: the
    next image tries again)."""
    key = (os.getpid(), scheme, authority, query)
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = build_filesystem(scheme, authority, query)
    return _FILESYSTEMS[key]


def locate(uri: str) -> tuple[Any, str]:
    """The file system holding ``uri`` and the file's path in it (percent-escapes
    decoded; ``#`` is part of the name, a file has no fragment)."""
    parts = urlsplit(uri, allow_fragments=False)
    fs, root = filesystem(parts.scheme, parts.netloc, parts.query)
    return fs, f"{root.rstrip('/')}/{unquote(parts.path).lstrip('/')}"


def read_uri(uri: str) -> bytes:
    """The bytes of the file ``uri`` names. A missing or unreadable file is an OSError,
    a scheme pyarrow does not know a ValueError (pyarrow's reason, first line)."""
    fs, path = locate(uri)
    try:
        with fs.open_input_file(path) as f:
            return f.read()
    except ValueError as exc:  # ArrowInvalid, e.g. a folder
        raise ValueError(_first_line(exc)) from None
    except OSError as exc:
        raise OSError(_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    """pyarrow's messages can run over many lines (HDFS lists every Java path it tried)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
