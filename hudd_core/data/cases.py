"""The case studies of the quality benchmark: their list and split, and their DataSets.

A case file (``benchmarks/cases.toml``) lists ``[[case]]`` tables: ``name``, ``source``
(:data:`SOURCES`), ``arch`` (:data:`ARCHS`), ``seed``, ``split`` (:data:`SPLITS`) and
optionally ``data``, another case whose images this one reuses. :func:`read_cases` reads
and checks it; :func:`generate_case` writes a case's images as DataSets
(docs/CONTRACTS.md), so ``hudd run`` takes them unchanged.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "cases.toml"
    >>> case = '[[case]]\\nname = "{}"\\nsource = "gauges"\\narch = "resnet"\\nseed = 0\\n'
    >>> _ = path.write_text(case.format("a") + 'split = "development"\\n'
    ...                     + case.format("b") + 'split = "held-out"\\n')
    >>> list(read_cases(path)), list(read_cases(path, "held-out"))
    (['a', 'b'], ['b'])
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import ModuleType

from hudd_core.data import gauges, real, signs, simulator
from hudd_core.data.generate import generate

SPLITS = ("development", "held-out")
SCENES: dict[str, ModuleType] = {"eyes": simulator, "signs": signs, "gauges": gauges}
SOURCES = (*SCENES, *real.SOURCES)
ARCHS = ("alexnet", "resnet", "mobilenet_v3_small")
FIELDS = {"name", "source", "arch", "seed", "split", "data"}


def _check(case: dict, where: str, names: set[str]) -> None:
    """A ValueError naming the case and the field that is wrong."""
    unknown = set(case) - FIELDS
    missing = FIELDS - {"data"} - set(case)
    if unknown or missing:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
    for field, allowed in (("split", SPLITS), ("source", SOURCES), ("arch", ARCHS)):
        if case[field] not in allowed:
            raise ValueError(f"{where}: {field} {case[field]!r} is not one of {list(allowed)}")
    if not isinstance(case["seed"], int) or isinstance(case["seed"], bool):
        raise ValueError(f"{where}: seed must be an integer, got {case['seed']!r}")
    if "data" in case and case["data"] not in names:
        raise ValueError(f"{where}: data {case['data']!r} names no case listed before it")


def read_cases(path: str | Path, split: str = "all") -> dict[str, dict]:
    """The cases of ``path`` by name, in file order; those of ``split`` only
    (``development``, ``held-out``, or ``all``). A ValueError names the file and the
    case for an unknown field or value, a duplicate name or a missing split."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
    path = Path(path)
    listed = tomllib.loads(path.read_text()).get("case", [])
    cases: dict[str, dict] = {}
    for i, case in enumerate(listed):
        where = f"{path}: case {i + 1} ({case.get('name', '?')})"
        _check(case, where, set(cases))
        if case["name"] in cases:
            raise ValueError(f"{where}: the name is listed twice")
        cases[case["name"]] = dict(case)
    for s in SPLITS:
        if not any(c["split"] == s for c in cases.values()):
            raise ValueError(f"{path}: no {s} case")
    return {n: c for n, c in cases.items() if split in ("all", c["split"])}


def classes(source: str) -> list[str]:
    """The class names of a source, in class-index order."""
    return list(SCENES[source].CLASSES if source in SCENES else real.SOURCES[source].classes)


def native_size(source: str) -> int | None:
    """The image side a real source comes at (None for a scene: rendered at any size)."""
    return real.SOURCES[source].size if source in real.SOURCES else None


def generate_case(
    root: Path, source: str, seed: int, sizes: dict[str, int], image_size: int
) -> Path:
    """Writes a case's DataSets into ``root`` (kept when already written): a scene's
    images at ``image_size`` (as ``hudd demo`` generates them), a real source's at its
    native size."""
    if source in SCENES:
        generate(root, sizes=sizes, seed=seed, image_size=image_size, progress=False,
                 simulator=SCENES[source])  # fmt: skip
    else:
        real.generate_real(root, source, sizes=sizes, seed=seed)
    return root
