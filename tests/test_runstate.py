"""hudd run's configuration and step skipping."""

from __future__ import annotations

import os

import pytest

from hudd_core.config import load_config
from hudd_core.runstate import RunLog, fingerprint


def test_toml_then_command_line(tmp_path):
    cfg_file = tmp_path / "hudd.toml"
    cfg_file.write_text('model = "alexnet"\nworkdir = "T1"\n[cluster]\nk_range = "2:40"\n')
    cfg = load_config(cfg_file, {"workdir": "T2", "seed": None})
    assert (cfg["model"], cfg["workdir"], cfg["k_range"], cfg["seed"]) == (
        "alexnet",
        "T2",
        (2, 40),
        0,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('modle = "alexnet"\n', "unknown setting 'modle'"),
        ("[clusterr]\nk_range = 1\n", r"unknown table \[clusterr\]"),
        ("model = \n", "not valid TOML"),
        ('steps = ["test", "fly"]\n', "unknown steps"),
    ],
)
def test_bad_configuration_names_the_problem(tmp_path, text, message):
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(cfg_file, {})


def test_fingerprint_tracks_options_files_and_folders(tmp_path):
    f, d = tmp_path / "w.pt", tmp_path / "Set"
    f.write_bytes(b"abc")
    (d / "cls").mkdir(parents=True)
    fp = fingerprint({"k": 1}, [f, d])
    assert fp == fingerprint({"k": 1}, [f, d])
    assert fp != fingerprint({"k": 2}, [f, d])
    os.utime(f, ns=(1, 1))
    fp2 = fingerprint({"k": 1}, [f, d])
    assert fp2 != fp
    (d / "cls" / "new.png").write_bytes(b"x")  # adding an image changes its folder
    os.utime(d / "cls", ns=(5, 5))
    assert fingerprint({"k": 1}, [f, d]) != fp2


def test_runlog_fresh_needs_outputs(tmp_path):
    log = RunLog(tmp_path, {"a": 1})
    out = tmp_path / "clusters.csv"
    log.record("cluster", "fp", 2.0, clusters=3)
    assert not RunLog(tmp_path).fresh("cluster", "fp", [out])
    out.write_text("x")
    again = RunLog(tmp_path)
    assert again.fresh("cluster", "fp", [out]) and not again.fresh("cluster", "other", [out])
    assert again.data["config"] == {"a": 1} and "torch" in again.data["versions"]
