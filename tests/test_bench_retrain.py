"""benchmarks/bench_retrain.py: a case is built once up to the assignment and reused on a
restart; the selections are fine-tuned beside the baselines and leave the paper rule's
unsafe set in place."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_retrain as B


def test_parse_case_kinds():
    assert B.parse_case("resnet:2") == ("resnet", 2)
    assert B.parse_case("suite:textures-resnet-s0") == ("suite", "textures-resnet-s0")
    for bad in ("suite:nope", "demo:x", "eyes:0"):
        with pytest.raises(SystemExit):
            B.parse_case(bad)


def test_a_restart_reuses_the_prepared_case(tmp_path):
    work, seed, epochs = B.prepare_case("demo:0", tmp_path, "tiny")
    assert (seed, epochs) == (0, 1)
    steps = json.loads((work / "run.json").read_text())["steps"]
    assert "assign" in steps and "retrain" not in steps  # the benchmark retrains itself
    (work / "retrain.json").write_text("{}")  # what the benchmark's retraining leaves
    stamp = (work / "unsafe_set.csv").stat().st_mtime_ns
    B.prepare_case("demo:0", tmp_path, "tiny")
    assert "retrain" not in json.loads((work / "run.json").read_text())["steps"]
    assert (work / "retrain.json").read_text() == "{}"
    assert (work / "unsafe_set.csv").stat().st_mtime_ns == stamp  # assign not rerun


def test_selections_beside_the_baselines(tmp_path):
    row = B.run_case("demo:0", tmp_path, 2, 1, ["BL2", "entropy"], size="tiny",
                     selections=["pool-borda", "pool-borda/uniform"])  # fmt: skip
    work = tmp_path / "demo_0_tiny"
    uniform = "hudd(pool-borda/uniform)"
    assert list(row["gain"]) == ["hudd", "BL2", "entropy", "hudd(pool-borda)", uniform]
    assert all(len(g["runs"]) == 2 for g in row["gain"].values())
    assert row["budget"]["hudd(pool-borda)"] == row["budget"]["hudd"]  # the paper's B
    assert row["added_per_method"][uniform] == row["added_samples"]  # as the baselines
    against = row["selection_versus"]["hudd(pool-borda)"]
    assert sorted(against) == ["BL2", "entropy", "hudd", uniform]
    assert row["seconds"]["fine_tune_count"] == 2 * 5
    # the paper rule's unsafe set is back (what run.json recorded for the assign step)
    recorded = json.loads((work / "run.json").read_text())["steps"]["assign"]["outputs"]
    from hudd_core.fileio import file_digest

    assert recorded["unsafe_set.csv"][1] == file_digest(work / "unsafe_set.csv")
    assert (work / "Assign" / "candidates_select.npz").is_file()
    # the second repeat alone (--first-repeat 1): the same seeds, the same gains
    later = B.run_case("demo:0", tmp_path, 1, 1, ["BL2", "entropy"], size="tiny",
                       selections=["pool-borda"], first=1)  # fmt: skip
    assert later["first_repeat"] == 1 and row["first_repeat"] == 0
    for m in ("hudd", "entropy", "hudd(pool-borda)"):
        assert later["gain"][m]["runs"] == row["gain"][m]["runs"][1:], m


def test_uniform_sample_keeps_every_pick_once():
    class Rows:
        def __init__(self, rows):
            self.rows = list(rows)

        def __len__(self):
            return len(self.rows)

        def subset(self, idx):
            return Rows(self.rows[i] for i in idx)

    got = B.uniform_sample(Rows("abc"), 8, seed=0).rows
    assert got[:3] == ["a", "b", "c"] and len(got) == 8 and set(got) == {"a", "b", "c"}
    assert B.uniform_sample(Rows("abc"), 2, seed=0).rows == ["a", "b", "c"]  # never fewer


def test_goals_count_the_bar_by_hand():
    def case(name, gains, a12):
        gain = {m: {"mean": v / 100} for m, v in gains.items()}
        versus = {"hudd(s)": {m: {"a12": v} for m, v in a12.items()}}
        return {"case": name, "gain": gain, "selection_versus": versus}

    rows = [  # s best, 2 pp over margin, A12 >= 0.7 against both baselines
        case(
            "a",
            {"hudd": 1, "BL2": 0, "margin": 2, "BL1-oracle": 9, "hudd(s)": 4},
            {"BL2": 0.9, "margin": 0.7},
        ),
        # entropy best, s 3 pp under it and below BL2, A12 under 0.7 against margin
        case(
            "b",
            {"hudd": 1, "BL2": 2, "entropy": 4, "margin": 3, "hudd(s)": 1},
            {"BL2": 0.8, "margin": 0.2, "entropy": 0.0},
        ),
    ]
    g = B.goals(rows, "hudd(s)")
    assert g["cases"] == 2 and g["best"] == ["a"] and g["a12"] == ["a"]
    assert g["below_bl2"] == ["b"] and abs(g["over_uncertainty"] - (2 - 3) / 2) < 1e-9
    assert "| hudd(s) | 2 | 1 | -0.50 | 1 | 1 |" in B.goals_markdown(rows)


def test_merge_writes_the_rows_of_both_files(tmp_path, monkeypatch):
    row = {"case": "a", "repeats": 1, "seconds_per_repeat": 2.0, "budget": {"hudd": 3},
           "gain": {"hudd": {"mean": 0.01, "std": 0.0, "runs": [0.01]}},
           "planted_gain": {"hudd": 0.0},
           "versus": {}}  # fmt: skip
    for name in ("x", "y"):
        (tmp_path / f"{name}.json").write_text(json.dumps([{**row, "case": name}]))
    monkeypatch.setattr(sys, "argv", ["bench_retrain.py", "--merge", str(tmp_path / "x.json"),
                                      str(tmp_path / "y.json"), "--out", str(tmp_path),
                                      "--name", "both"])  # fmt: skip
    B.main()
    assert [r["case"] for r in json.loads((tmp_path / "both.json").read_text())] == ["x", "y"]
    assert "| y | 1 | +1.0 ± 0.0 (+0.0), B=3 | 2 |" in (tmp_path / "both.md").read_text()


def _row(gains: dict[str, list[float]], first: int = 0, **extra) -> dict:
    return {"case": "c", "repeats": len(gains["hudd"]), "seconds_per_repeat": 10.0,
            "first_repeat": first, "gain": {m: {"runs": v} for m, v in gains.items()},
            "planted_gain": {m: float(sum(v)) / len(v) for m, v in gains.items()},
            **extra}  # fmt: skip


def test_merge_unites_the_methods_of_one_case_and_recomputes_a12():
    a = _row({"hudd": [0.0, 0.1], "hudd(s)": [1.0, 3.0]}, selection_versus={"hudd(s)": {}})
    b = _row({"hudd": [0.0, 0.1], "badge": [2.0, 2.0]})
    (row,) = B.combined([a, b])
    assert set(row["gain"]) == {"hudd", "hudd(s)", "badge"} and row["repeats"] == 2
    # hudd(s) against badge: 3 > 2 once, 1 < 2 once of 4 pairs -> 2/4
    assert row["selection_versus"]["hudd(s)"]["badge"]["a12"] == 0.5
    assert row["versus"]["badge"]["a12"] == 0.0  # hudd below badge in every pair
    assert row["seconds_per_repeat"] == 20.0  # both runs' fine-tunings
    with pytest.raises(ValueError, match="c: the runs to merge differ in hudd"):
        B.combined([a, _row({"hudd": [0.0, 0.2], "badge": [2.0, 2.0]})])


def test_merge_joins_the_repeats_of_one_case():
    a = _row({"hudd": [1.0, 2.0], "margin": [0.0, 0.0]})
    b = _row({"hudd": [6.0], "margin": [3.0]}, first=2)
    (row,) = B.combined([a, b])
    assert row["repeats"] == 3 and row["gain"]["hudd"]["runs"] == [1.0, 2.0, 6.0]
    assert row["gain"]["hudd"]["mean"] == 3.0
    assert abs(row["gain"]["hudd"]["std"] - (7.0**0.5)) < 1e-12  # (4 + 1 + 9) / 2
    assert row["planted_gain"]["margin"] == 1.0  # (2 × 0 + 1 × 3) / 3
    with pytest.raises(ValueError, match="same methods"):
        B.combined([a, _row({"hudd": [6.0], "badge": [3.0]}, first=2)])
