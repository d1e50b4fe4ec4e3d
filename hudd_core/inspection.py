"""The engineer's inspection of the root-cause clusters (HUDD step 2 of the tool paper:
write down the unsafe condition each RCC shows, an ISO/PAS 21448 safety-analysis artefact).

After clustering, ``T/inspection.csv`` is written as a template, one row per RCC::

    cluster,size,top_parameters,dominant_pairs,root_cause,unsafe,notes,status,members

``top_parameters`` (the parameters whose variance the cluster reduces most, with the
cluster's mean against the mean over all error images; only with a ``metadata.csv``) and
``dominant_pairs`` (the most frequent true → predicted class pairs) help the engineer;
``root_cause``, ``unsafe`` (``yes``/``no``) and ``notes`` are theirs to fill (and any
column they add, kept like those). ``members`` is a digest of the cluster's images, by
which a later clustering recognises it.

Rewriting never loses what the engineer wrote: a cluster whose members are unchanged keeps
its entries (whatever its id is now); a cluster that shares images with a filled-in entry
of another member set gets that entry's words with ``status`` = ``CHANGED: ...`` (the
flag stays until the engineer has checked the words and cleared it); a filled-in entry
that no current cluster shares an image with stays as a row without a cluster id
(``status`` = ``REMOVED: ...``). The previous clustering's members are kept in
``T/ClusterAnalysis/inspection_members.json`` for that comparison.

Example:
    >>> pair_share([("a", "b"), ("a", "b"), ("c", "b")])
    [('a', 'b', 2), ('c', 'b', 1)]
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from hudd_core.fileio import atomic_write, atomic_write_json

FILE = "inspection.csv"
MEMBERS_FILE = Path("ClusterAnalysis") / "inspection_members.json"
FIELDS = ["cluster", "size", "top_parameters", "dominant_pairs", "root_cause", "unsafe",
          "notes", "status", "members"]  # fmt: skip
ENGINEER = ("root_cause", "unsafe", "notes")
UNSAFE_VALUES = ("yes", "no", "")
TOP_PARAMS = 3
TOP_PAIRS = 3


def members_digest(images: list[str]) -> str:
    """A short digest of a member set (order-free).

    Example:
        >>> members_digest(["b", "a"]) == members_digest(["a", "b"]) != members_digest(["a"])
        True
    """
    return hashlib.sha1("\n".join(sorted(images)).encode()).hexdigest()[:16]


def read_clusters(workdir: str | Path) -> dict[int, list[str]]:
    """``{cluster id: [images]}`` from ``T/clusters.csv`` (ids sorted)."""
    path = Path(workdir) / "clusters.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `hudd cluster` first")
    members: dict[int, list[str]] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                cid = int(row["cluster"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path} line {line}: cluster is not an integer") from None
            members.setdefault(cid, []).append(row["image"])
    return dict(sorted(members.items()))


def pair_share(pairs: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """The (true, predicted) pairs with their counts, most frequent first (ties by name)."""
    counts = sorted(Counter(pairs).items(), key=lambda kv: (-kv[1], kv[0]))
    return [(t, p, n) for (t, p), n in counts]


def _true_predicted(workdir: Path) -> dict[str, tuple[str, str]]:
    """``image -> (expected, predicted)`` of ``T/testResult.csv`` (classifiers; empty for
    keypoint results or without the file)."""
    path = workdir / "testResult.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"expected", "predicted"} <= set(reader.fieldnames or []):
            return {}
        return {r["image"]: (r["expected"], r["predicted"]) for r in reader}


def _parameters(
    data: Path, members: dict[int, list[str]], test_set: str = "TestSet"
) -> dict[int, list[dict]]:
    """Per cluster, every numeric metadata parameter with its variance reduction (sorted,
    largest first; NaN last), the cluster's mean and the mean over all error images."""
    from hudd_core.cluster.analysis import read_metadata, variance_reduction

    path = data / test_set / "metadata.csv"
    if not path.is_file():
        return {}
    meta, params = read_metadata(path)
    if not params:
        return {}
    prefix = f"{test_set}/"
    ids = list(members)
    images = [img for cid in ids for img in members[cid]]
    labels = np.repeat(ids, [len(members[c]) for c in ids])
    keys = [i[len(prefix) :] if i.startswith(prefix) else i for i in images]
    values = np.array(
        [[float(meta[k][p]) if k in meta else np.nan for p in params] for k in keys]
    ).reshape(len(keys), len(params))
    with warnings.catch_warnings():  # images without metadata: NaN means, no warning each
        warnings.simplefilter("ignore", RuntimeWarning)
        red = variance_reduction(values, labels)
        overall = np.nanmean(values, axis=0)
        means = {cid: np.nanmean(values[labels == cid], axis=0) for cid in ids}
    out = {}
    for r, cid in enumerate(ids):
        mean = means[cid]
        rows = [
            {
                "param": p,
                "reduction": float(red[r, j]),
                "cluster_mean": float(mean[j]),
                "overall_mean": float(overall[j]),
            }
            for j, p in enumerate(params)
        ]
        rows.sort(key=lambda d: (np.isnan(d["reduction"]), -np.nan_to_num(d["reduction"])))
        out[cid] = rows
    return out


def cluster_facts(workdir: str | Path, data: str | Path) -> dict[int, dict]:
    """Per RCC (sorted ids): ``size``, ``images``, ``members`` (digest), ``pairs`` (see
    :func:`pair_share`), ``purity`` (share of the dominant pair; None without class
    results) and ``params`` (see :func:`_parameters`; empty without metadata)."""
    workdir, data = Path(workdir), Path(data)
    members = read_clusters(workdir)
    truth = _true_predicted(workdir)
    params = _parameters(data, members)
    facts = {}
    for cid, images in members.items():
        pairs = pair_share([truth[i] for i in images if i in truth])
        known = sum(n for _, _, n in pairs)
        facts[cid] = {
            "size": len(images),
            "images": images,
            "members": members_digest(images),
            "pairs": pairs,
            "purity": pairs[0][2] / known if pairs else None,
            "params": params.get(cid, []),
        }
    return facts


def format_params(params: list[dict], top: int = TOP_PARAMS) -> str:
    """``angle 96% (10.1 vs 15.2 overall); ...`` for the parameters with a reduction.

    Example:
        >>> format_params([{"param": "angle", "reduction": 0.96, "cluster_mean": 10.12,
        ...                 "overall_mean": 15.2}])
        'angle 96% (mean 10.12 vs 15.2 overall)'
    """
    shown = [p for p in params if not np.isnan(p["reduction"])][:top]
    return "; ".join(
        f"{p['param']} {p['reduction']:.0%} (mean {p['cluster_mean']:.4g} vs "
        f"{p['overall_mean']:.4g} overall)"
        for p in shown
    )


def format_pairs(pairs: list[tuple[str, str, int]], top: int = TOP_PAIRS) -> str:
    """``closed->open 10/12 (83%); ...`` (ASCII arrows: spreadsheets open it as is).

    Example:
        >>> format_pairs([("closed", "open", 3), ("up", "open", 1)])
        'closed->open 3/4 (75%); up->open 1/4 (25%)'
    """
    total = sum(n for _, _, n in pairs)
    return "; ".join(f"{t}->{p} {n}/{total} ({n / total:.0%})" for t, p, n in pairs[:top])


def read_inspection(workdir: str | Path) -> list[dict]:
    """The rows of ``T/inspection.csv`` (empty list without it), ``cluster`` as int (None
    for a ``REMOVED`` entry) and ``unsafe`` lower-cased. A ValueError names the file and
    line of a missing column, a cluster id that is not an integer, or an ``unsafe`` that
    is not yes/no/empty."""
    path = Path(workdir) / FILE
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet may add a BOM
        reader = csv.DictReader(f)
        missing = [c for c in ("cluster", *ENGINEER) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (expected {','.join(FIELDS)})")
        columns = FIELDS + [c for c in (reader.fieldnames or []) if c and c not in FIELDS]
        rows = []
        for line, row in enumerate(reader, start=2):
            row = {k: (row.get(k) or "").strip() for k in columns}
            row["unsafe"] = row["unsafe"].lower()
            if row["unsafe"] not in UNSAFE_VALUES:
                raise ValueError(
                    f"{path} line {line}: unsafe must be yes, no or empty, got {row['unsafe']!r}"
                )
            try:
                row["cluster"] = int(row["cluster"]) if row["cluster"] else None
            except ValueError:
                raise ValueError(
                    f"{path} line {line}: cluster {row['cluster']!r} is not an integer"
                ) from None
            rows.append(row)
    return rows


def engineer_columns(row: dict) -> list[str]:
    """The row's columns that are the engineer's: ``root_cause``, ``unsafe``, ``notes``
    and any column they added (kept like those)."""
    return [*ENGINEER, *(k for k in row if k not in FIELDS)]


def filled(row: dict) -> bool:
    """Whether the engineer wrote anything in the row."""
    return any(row.get(k) for k in engineer_columns(row))


def _carry(cid: int, images: list[str], digest: str, old: list[dict], previous: dict):
    """The engineer's words for the new cluster and its status: an entry of the same
    member set, else the filled-in entry sharing most images (flagged), else nothing."""
    for row in old:  # the same members: the words stay, and so does a flag not yet cleared
        if row["members"] == digest:
            status = row["status"] if row["status"].startswith("CHANGED") else ""
            return {k: row[k] for k in engineer_columns(row)}, status, row
    mine = set(images)
    best, shared = None, 0
    for row in old:
        n = len(mine & set(previous.get(row["members"], ())))
        if filled(row) and row["cluster"] is not None and n > shared:
            best, shared = row, n
    if best is None:
        return dict.fromkeys(ENGINEER, ""), "", None
    was = len(previous[best["members"]])
    status = (
        f"CHANGED: entry of cluster {best['cluster']} ({was} images) of the previous "
        f"clustering; {shared} of them are among this cluster's {len(images)}: check it"
    )
    return {k: best[k] for k in engineer_columns(best)}, status, best


def update_inspection(workdir: str | Path, data: str | Path) -> Path:
    """Writes ``T/inspection.csv`` for the current ``T/clusters.csv``, keeping every entry
    the engineer made (module docstring). The file is left alone when nothing changed.
    Returns its path."""
    workdir = Path(workdir)
    facts = cluster_facts(workdir, data)
    path = workdir / FILE
    old = read_inspection(workdir)
    members_path = workdir / MEMBERS_FILE
    previous = json.loads(members_path.read_text()) if members_path.is_file() else {}
    rows, used = [], set()
    for cid, f in facts.items():
        words, status, source = _carry(cid, f["images"], f["members"], old, previous)
        if source is not None:
            used.add(id(source))
        rows.append(
            {
                "cluster": cid,
                "size": f["size"],
                "top_parameters": format_params(f["params"]),
                "dominant_pairs": format_pairs(f["pairs"]),
                **words,
                "status": status,
                "members": f["members"],
            }
        )
    for row in old:  # filled-in entries no current cluster took over stay, without an id
        if filled(row) and id(row) not in used:
            status = row["status"]
            if row["cluster"] is not None:
                status = (
                    f"REMOVED: entry of cluster {row['cluster']} ({row['size']} images) of a "
                    "previous clustering; no current cluster shares its images"
                )
            rows.append({**row, "cluster": "", "status": status})
    # The members of every digest mentioned, for the next comparison (old ones kept).
    keep = {r["members"] for r in rows}
    members = {d: m for d, m in previous.items() if d in keep}
    members.update({f["members"]: f["images"] for f in facts.values()})
    if members != previous:
        atomic_write_json(members_path, members)
    text = _csv_text(rows)
    if not path.is_file() or _csv_text(old) != text:  # compared as read: case, line ends
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _csv_text(rows: list[dict]) -> str:
    """The file's text: our columns, then those the engineer added (in their order)."""
    import io

    columns = list(dict.fromkeys([*FIELDS, *(k for r in rows for k in r)]))
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows)
    return buf.getvalue()


def inspection_by_cluster(workdir: str | Path) -> dict[int, dict]:
    """``{cluster: row}`` of ``T/inspection.csv`` (rows with a cluster id)."""
    return {r["cluster"]: r for r in read_inspection(workdir) if r["cluster"] is not None}
