"""The chained pipeline (``hudd run`` / ``hudd demo``): every step, skipping what is
complete and unchanged, re-running what changed, stopping cleanly when there is nothing
to debug, and the configuration file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hudd_core.cli import main
from hudd_core.config import load_config
from hudd_core.demo import run_demo
from hudd_core.pipeline import STEPS, run_pipeline


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A tiny demo run through every step, the baselines' retraining included."""
    work = tmp_path_factory.mktemp("demo")
    run_demo(work, "tiny", progress=False, baselines=True)
    return work


def _cfg(work: Path, **options) -> dict:
    return load_config(
        None,
        {
            "workdir": str(work),
            "data": str(work / "DataSets"),
            "quiet": True,
            "epochs": 1,
            "repeats": 1,
            **options,
        },
    )


def _stamps(work: Path) -> dict[str, int]:
    names = ["testResult.csv", "Heatmaps/index.csv", "clusters.csv", "unsafe_set.csv"]
    return {n: (work / n).stat().st_mtime_ns for n in [*names, "retrain.json"]}


def test_demo_runs_every_step(demo):
    steps = json.loads((demo / "run.json").read_text())["steps"]
    assert {"generate", "train", *STEPS} <= set(steps)
    for step in STEPS[:-1]:
        assert steps[step]["fingerprint"], step
    for out in ("unsafe_set.csv", "retrain.json", "report.html", "UnsafeSet"):
        assert (demo / out).exists(), out
    retrain = json.loads((demo / "retrain.json").read_text())
    assert {"hudd", "BL1", "BL2"} <= set(retrain)  # --baselines: compared with them
    assert "Retraining" in (demo / "report.html").read_text()


def test_rerun_skips_complete_steps_and_reruns_changed_ones(demo, tmp_path):
    work = tmp_path / "T"
    import shutil

    shutil.copytree(demo, work)
    cfg = _cfg(work, weights=str(work / "DNNModels" / "demo_alexnet.pt"), baselines=True)
    run_pipeline(cfg)  # the copy's paths differ: everything is recomputed once
    before = _stamps(work)
    result = run_pipeline(cfg)
    assert _stamps(work) == before  # nothing recomputed
    assert result["test"]["summary"]["TestSet"]["n"] == 32  # facts come from run.json
    run_pipeline({**cfg, "top": 2})  # an assign option: assign and retrain rerun
    after = _stamps(work)
    unchanged = ("testResult.csv", "Heatmaps/index.csv", "clusters.csv")
    assert all(after[n] == before[n] for n in unchanged)
    assert after["unsafe_set.csv"] != before["unsafe_set.csv"]
    assert after["retrain.json"] != before["retrain.json"]


def _copy_with_wrong(demo: Path, tmp_path: Path, keep_wrong: int) -> Path:
    """A copy of the demo's work folder whose testResult.csv keeps only the first
    ``keep_wrong`` Wrong rows (the others become Correct)."""
    import shutil

    work = tmp_path / "T"
    shutil.copytree(demo, work)
    path = work / "testResult.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    wrong = [i for i, r in enumerate(rows) if r[1] == "Wrong"][:keep_wrong]
    rows[1:] = [[r[0], "Wrong" if i in wrong else "Correct", *r[2:]]
                for i, r in enumerate(rows[1:], start=1)]  # fmt: skip
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return work


def test_no_error_inducing_image_stops_cleanly(demo, tmp_path):
    work = _copy_with_wrong(demo, tmp_path, 0)
    result = run_pipeline(_cfg(work, steps=["heatmaps", "cluster"]))
    assert result["stopped"]["step"] == "heatmaps"
    assert "nothing to debug" in result["stopped"]["reason"]
    assert (work / "Heatmaps" / "index.csv").is_file()  # earlier results are kept


def test_single_error_image_clusters_then_stops_at_assign(demo, tmp_path):
    work = _copy_with_wrong(demo, tmp_path, 1)
    result = run_pipeline(_cfg(work, steps=["heatmaps", "cluster", "assign", "report"]))
    assert result["cluster"]["n_clusters"] == 1 and result["cluster"]["n_images"] == 1
    assert result["stopped"]["step"] == "assign" and "single image" in result["stopped"]["reason"]
    assert (work / "report.html").is_file()


def test_run_with_an_activation_method_computes_the_activations_once(demo, tmp_path):
    import shutil

    work = tmp_path / "T"
    shutil.copytree(demo, work)
    result = run_pipeline(_cfg(work, method="rxa-hdbscan", steps=["cluster"]))
    meta = json.loads((work / "Activations" / "layers.json").read_text())
    heat = json.loads((work / "Heatmaps" / "layers.json").read_text())
    assert meta["complete"] and meta["rows"] == heat["rows"]
    assert [m["name"] for m in meta["layers"]] == [m["name"] for m in heat["layers"]]
    summary = json.loads((work / "ClusterAnalysis" / "summary.json").read_text())
    assert summary["method"] == "rxa-hdbscan" and result["cluster"]["n_images"] == heat["rows"]


def test_hudd_run_with_a_config_file(demo, tmp_path, capsys):
    import shutil

    work = tmp_path / "T"
    shutil.copytree(demo, work)
    toml = tmp_path / "hudd.toml"
    toml.write_text(
        f'workdir = "{work}"\ndata = "{work / "DataSets"}"\n'
        '[cluster]\nk_range = "2:4"\n[assign]\ntop = 3\n'
    )
    steps = ["--steps", "test", "cluster", "assign", "report"]
    log = ["--quiet", "--log-file", str(tmp_path / "hudd.log")]
    code = main(["run", "--config", str(toml), *steps, "--num-workers", "2", *log])
    assert code == 0
    out = capsys.readouterr().out
    assert "test: TestSet accuracy" in out  # images decoded in 2 DataLoader workers
    assert "cluster: best layer" in out and "assign:" in out and "report:" in out
    run = json.loads((work / "run.json").read_text())
    assert run["config"]["k_range"] == [2, 4] and run["config"]["top"] == 3
    assert "assign: done" in (tmp_path / "hudd.log").read_text()


def test_config_file_errors_name_the_key_and_file(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text('workdir = "T"\nk_ragne = "2:4"\n')
    assert main(["run", "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "k_ragne" in err
    with pytest.raises(ValueError, match="k_range"):
        load_config(None, {"k_range": "4"})
    with pytest.raises(ValueError, match="unknown steps"):
        load_config(None, {"steps": ["test", "explain"]})


def test_weights_are_copied_once_into_the_work_folder(demo, tmp_path):
    from hudd_core.pipeline import prepare_checkpoint

    cfg = _cfg(tmp_path / "T", weights=str(demo / "DNNModels" / "demo_alexnet.pt"))
    first = prepare_checkpoint(cfg)
    assert first == tmp_path / "T" / "DNNModels" / "demo_alexnet.pt"
    stamp = first.stat().st_mtime_ns
    assert prepare_checkpoint(cfg).stat().st_mtime_ns == stamp  # unchanged source: kept
    with pytest.raises(ValueError, match="--model needs --weights"):
        prepare_checkpoint({**cfg, "weights": None, "model": "alexnet"})
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        prepare_checkpoint({**cfg, "weights": str(tmp_path / "nope.pt")})


def test_hudd_assign_cli(demo, tmp_path, capsys):
    import shutil

    work = tmp_path / "T"
    shutil.copytree(demo, work)
    args = ["assign", "--workdir", str(work), "--data", str(work / "DataSets"), "--quiet"]
    assert main([*args, "--backend", "numpy", "--no-gifs", "--limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "of 20 improvement images selected" in out
    with open(work / "unsafe_set.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"image", "cluster", "distance", "order"} <= set(rows[0])
