"""``T/inspection.csv`` (the engineer's Step 2): the template's facts against hand-counted
values, and the round trip: fill in, rerun, still there; a changed cluster flagged; a
vanished one kept."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hudd_core.inspection import (
    cluster_facts,
    inspection_by_cluster,
    read_inspection,
    update_inspection,
)


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def work(tmp_path) -> tuple[Path, Path]:
    """Six error images in two clusters; class results and one metadata parameter."""
    T, data = tmp_path / "T", tmp_path / "DataSets"
    imgs = [f"TestSet/c/{i}.png" for i in range(6)]
    _write(T / "clusters.csv", ["image", "cluster", "layer"],
           [[im, 1 if i < 4 else 2, "fc"] for i, im in enumerate(imgs)])  # fmt: skip
    truth = [("closed", "open")] * 3 + [("up", "open"), ("left", "right"), ("left", "up")]
    _write(T / "testResult.csv", ["image", "result", "expected", "predicted"],
           [[im, "Wrong", t, p] for im, (t, p) in zip(imgs, truth, strict=True)])  # fmt: skip
    # angle 0,2,4,6 in cluster 1 and 10,10 in cluster 2; light constant
    _write(data / "TestSet" / "metadata.csv", ["image", "angle", "light", "planted"],
           [[im[len("TestSet/"):], a, 1.0, "none"]
            for im, a in zip(imgs, [0, 2, 4, 6, 10, 10], strict=True)])  # fmt: skip
    return T, data


def test_facts_against_hand_counts(work):
    T, data = work
    facts = cluster_facts(T, data)
    assert facts[1]["pairs"] == [("closed", "open", 3), ("up", "open", 1)]
    assert facts[1]["purity"] == 0.75
    assert facts[2]["purity"] == 0.5
    angle = facts[1]["params"][0]
    # all: var(0,2,4,6,10,10) = 14.2222..; cluster 1: var(0,2,4,6) = 5
    assert angle["param"] == "angle"
    assert angle["reduction"] == pytest.approx(1 - 5 / (128 / 9))
    assert angle["cluster_mean"] == 3.0 and angle["overall_mean"] == pytest.approx(32 / 6)
    assert facts[2]["params"][0]["reduction"] == 1.0  # both members at 10
    light = next(p for p in facts[1]["params"] if p["param"] == "light")
    assert light["reduction"] != light["reduction"]  # constant: no variance to reduce (NaN)


def test_template_columns(work):
    T, data = work
    rows = _rows(update_inspection(T, data))
    assert list(rows[0]) == ["cluster", "size", "top_parameters", "dominant_pairs",
                             "root_cause", "unsafe", "notes", "status", "members"]  # fmt: skip
    assert [r["cluster"] for r in rows] == ["1", "2"] and rows[0]["size"] == "4"
    assert rows[0]["dominant_pairs"] == "closed->open 3/4 (75%); up->open 1/4 (25%)"
    assert rows[0]["top_parameters"].startswith("angle 65% (mean 3 vs 5.333 overall)")
    assert "light" not in rows[0]["top_parameters"]
    assert all(r[k] == "" for r in rows for k in ("root_cause", "unsafe", "notes", "status"))


def _fill(T: Path, words: dict[int, tuple[str, str, str]]) -> None:
    rows = _rows(T / "inspection.csv")
    for r in rows:
        if int(r["cluster"]) in words:
            r["root_cause"], r["unsafe"], r["notes"] = words[int(r["cluster"])]
    _write(T / "inspection.csv", list(rows[0]), [list(r.values()) for r in rows])


def test_round_trip_keeps_words_and_flags_changes(work):
    T, data = work
    update_inspection(T, data)
    _fill(T, {1: ("eyes closed, looking up", "Yes", "all at night"), 2: ("left gaze", "no", "")})
    stamp = (T / "inspection.csv").stat().st_mtime_ns
    update_inspection(T, data)  # rerun, nothing changed: the file is left alone
    assert (T / "inspection.csv").stat().st_mtime_ns == stamp
    by = inspection_by_cluster(T)
    assert by[1]["root_cause"] == "eyes closed, looking up" and by[1]["unsafe"] == "yes"
    assert by[1]["notes"] == "all at night" and by[2]["root_cause"] == "left gaze"

    # a new clustering: the ids swap (same members), then one image moves
    rows = _rows(T / "clusters.csv")
    for r in rows:
        r["cluster"] = "2" if r["cluster"] == "1" else "1"
    _write(T / "clusters.csv", list(rows[0]), [list(r.values()) for r in rows])
    update_inspection(T, data)
    by = inspection_by_cluster(T)
    assert by[2]["root_cause"] == "eyes closed, looking up" and by[2]["status"] == ""
    assert by[1]["root_cause"] == "left gaze" and by[1]["status"] == ""

    rows[3]["cluster"] = "1"  # the 4th image leaves the "eyes closed" cluster
    _write(T / "clusters.csv", list(rows[0]), [list(r.values()) for r in rows])
    update_inspection(T, data)
    by = inspection_by_cluster(T)
    for cid, size in ((1, 3), (2, 3)):
        assert by[cid]["status"].startswith("CHANGED"), by[cid]
        assert int(by[cid]["size"]) == size
    assert by[2]["root_cause"] == "eyes closed, looking up"  # carried over, to be checked
    assert "cluster 2 (4 images)" in by[2]["status"]
    assert by[1]["root_cause"] == "left gaze"  # shares 2 images with it: more than 1
    update_inspection(T, data)  # the flag stays until the engineer clears it
    assert inspection_by_cluster(T)[2]["status"].startswith("CHANGED")


def test_entries_without_a_cluster_are_kept(work):
    T, data = work
    update_inspection(T, data)
    _fill(T, {2: ("left gaze", "yes", "")})
    _write(T / "clusters.csv", ["image", "cluster", "layer"], [["TestSet/c/new.png", 1, "fc"]])
    update_inspection(T, data)
    rows = read_inspection(T)
    assert [r["cluster"] for r in rows] == [1, None]
    assert rows[1]["root_cause"] == "left gaze" and rows[1]["status"].startswith("REMOVED")
    update_inspection(T, data)
    assert read_inspection(T)[1]["root_cause"] == "left gaze"


def test_columns_the_engineer_adds_are_kept(work):
    T, data = work
    update_inspection(T, data)
    rows = _rows(T / "inspection.csv")
    for r in rows:
        r["reviewer"] = f"A. Engineer {r['cluster']}"
    _write(T / "inspection.csv", list(rows[0]), [list(r.values()) for r in rows])
    clusters = _rows(T / "clusters.csv")
    for r in clusters:  # ids swap: the added column follows the members
        r["cluster"] = "2" if r["cluster"] == "1" else "1"
    _write(T / "clusters.csv", list(clusters[0]), [list(r.values()) for r in clusters])
    update_inspection(T, data)
    rows = _rows(T / "inspection.csv")
    assert list(rows[0])[-1] == "reviewer"
    assert [r["reviewer"] for r in rows] == ["A. Engineer 2", "A. Engineer 1"]


def test_bad_entries_name_the_file_and_line(work):
    T, data = work
    update_inspection(T, data)
    _fill(T, {2: ("left gaze", "maybe", "")})
    with pytest.raises(ValueError, match=r"inspection.csv line 3: unsafe must be yes, no"):
        read_inspection(T)
    _write(T / "inspection.csv", ["cluster", "notes"], [[1, "x"]])
    with pytest.raises(ValueError, match=r"inspection.csv: missing columns \['root_cause'"):
        update_inspection(T, data)


def test_hudd_cluster_writes_the_template(tmp_path):
    import numpy as np

    from hudd_core.cli import main
    from hudd_testkit.cluster_fixtures import make_workdir

    fx = make_workdir(tmp_path, np.random.default_rng(0))
    args = ["--workdir", str(fx["T"]), "--data", str(fx["data"]), "--device", "cpu", "--quiet"]
    assert main(["cluster", *args, "--layers", "fc", "--no-report"]) == 0
    rows = _rows(fx["T"] / "inspection.csv")
    labels = [int(r["cluster"]) for r in _rows(fx["T"] / "clusters.csv")]
    assert [int(r["cluster"]) for r in rows] == sorted(set(labels))
    assert all(r["top_parameters"].startswith("angle") for r in rows if int(r["size"]) > 1)
