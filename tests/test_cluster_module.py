"""The ClusterModule end to end on a small synthetic work folder: files and formats,
RCC folders and GIFs, resumption, RQ1 tables, the CLI (with the report) and the
approximate path. The report itself: tests/test_report.py."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from hudd_core.cluster import cluster_layer, run_cluster
from hudd_core.cluster.analysis import planted_purity_recall, variance_reduction
from hudd_testkit.cluster_fixtures import make_workdir


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    fx = make_workdir(root, np.random.default_rng(3))
    fx["summary"] = run_cluster(fx["T"], fx["data"], device="cpu", progress=False)
    return fx


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_per_layer_artefacts(clustered):
    T = clustered["T"]
    for layer in ("input", "conv", "fc"):
        folder = T / "ClusterAnalysis" / layer
        Z = np.load(folder / "linkage.npy")
        assert Z.shape == (clustered["n"] - 1, 4)
        wicd = _rows(folder / "wicd.csv")
        assert list(wicd[0]) == ["k", "wicd", "wicd_raw", "silhouette"]
        assert [int(r["k"]) for r in wicd] == list(range(2, clustered["n"] // 2 + 1))
        rows = _rows(folder / "clusters.csv")
        assert [r["image"] for r in rows] == clustered["images"]
        assert (folder / "knee.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(T.rglob(".*tmp*")), "temporary files left behind"


def test_best_layer_recovers_planted_groups(clustered):
    s, T = clustered["summary"], clustered["T"]
    assert s["best_layer"] == "fc"  # the layer built with the clearest structure
    assert json.loads((T / "ClusterAnalysis" / "summary.json").read_text()) == s
    rows = _rows(T / "clusters.csv")
    assert {r["layer"] for r in rows} == {"fc"}
    labels = np.array([int(r["cluster"]) for r in rows])
    assert set(labels) == set(range(1, s["n_clusters"] + 1))
    # every planted group lies within one cluster (k may split a group, never mix two)
    groups = clustered["groups"]
    for c in np.unique(labels):
        assert len(set(groups[labels == c])) == 1


def test_rcc_folders_and_gifs(clustered):
    T, s = clustered["T"], clustered["summary"]
    labels = np.array([int(r["cluster"]) for r in _rows(T / "clusters.csv")])
    for c in range(1, s["n_clusters"] + 1):
        folder = T / "fc" / f"Cluster_{c}"
        assert len(list(folder.iterdir())) == int(np.sum(labels == c))
        with Image.open(T / "fc" / f"Cluster_{c}.gif") as gif:
            assert gif.n_frames == int(np.sum(labels == c))
            assert gif.info["duration"] == 600
            assert gif.size == (256, 256 + 14)  # 16 px images scaled up, + the counter strip


def test_rerun_reuses_complete_layers(clustered):
    T = clustered["T"]
    stamp = (T / "ClusterAnalysis" / "conv" / "linkage.npy").stat().st_mtime_ns
    again = run_cluster(T, clustered["data"], device="cpu", progress=False)
    assert again["layers"] == clustered["summary"]["layers"]
    assert (T / "ClusterAnalysis" / "conv" / "linkage.npy").stat().st_mtime_ns == stamp


def test_variance_reduction_hand_example():
    values = np.array([[1.0, 0.0], [3.0, 10.0], [5.0, 0.0], [7.0, 10.0], [9.0, np.nan]])
    labels = np.array([1, 1, 2, 2, 3])
    red = variance_reduction(values, labels)
    # all: var(1,3,5,7,9) = 8, var(0,10,0,10) = 25; cluster 1: var(1,3) = 1, var(0,10) = 25
    assert red[0] == pytest.approx([1 - 1 / 8, 0.0])
    assert red[1] == pytest.approx([1 - 1 / 8, 0.0])
    assert np.isnan(red[2]).all()  # a singleton has no variance to reduce


def test_planted_purity_recall_hand_example():
    rows = planted_purity_recall(["a", "a", "b", "b", "b", "none"], np.array([1, 1, 1, 2, 2, 2]))
    assert rows[0] == {"cluster": 1, "size": 3, "dominant": "a", "purity": 2 / 3, "recall": 1.0}
    assert rows[1]["dominant"] == "b" and rows[1]["recall"] == pytest.approx(2 / 3)


def test_rq1_files(clustered):
    T, rq1 = clustered["T"], clustered["summary"]["rq1"]
    table = _rows(T / "ClusterAnalysis" / "variance_reduction.csv")
    assert list(table[0]) == ["cluster", "size", "angle", "light", "max_reduction", "max_param"]
    # angle is set by the planted group: every non-singleton cluster reduces it by > 90%
    assert all(float(r["angle"]) > 0.9 for r in table if int(r["size"]) > 1)
    assert rq1["share_50pct"] == 1.0
    labels = np.array([int(r["cluster"]) for r in _rows(T / "clusters.csv")])
    in_region = labels[clustered["groups"] == 0]
    top = np.bincount(in_region).argmax()
    region = rq1["planted"]["region0"]
    assert region["best_cluster"] == top
    assert region["recall"] == pytest.approx(np.mean(in_region == top))
    assert region["purity"] == 1.0  # clusters never mix planted groups here
    assert (T / "ClusterAnalysis" / "rq1.png").exists()


def test_cli_cluster_and_report(clustered, tmp_path):
    from hudd_core.cli import main

    T = tmp_path / "T"
    shutil.copytree(clustered["T"] / "Heatmaps", T / "Heatmaps")
    args = ["--workdir", str(T), "--data", str(clustered["data"]), "--device", "cpu", "--quiet"]
    assert main(["cluster", *args, "--layers", "conv", "fc", "--k-range", "2:6"]) == 0
    summary = json.loads((T / "ClusterAnalysis" / "summary.json").read_text())
    assert set(summary["layers"]) == {"conv", "fc"}
    assert max(int(r["k"]) for r in _rows(T / "ClusterAnalysis" / "fc" / "wicd.csv")) == 6
    (T / "report.html").unlink()
    assert main(["report", *args]) == 0
    assert (T / "report.html").exists()
    assert main(["cluster", *args, "--layers", "nope"]) == 2
    # another best layer: its RCCs replace the previous ones
    best = summary["best_layer"]
    other = "fc" if best == "conv" else "conv"
    assert (T / best).is_dir()
    assert main(["cluster", *args, "--layers", other, "--no-report"]) == 0
    assert (T / other / "Cluster_1").is_dir() and not (T / best).exists()


def test_approximate_path_is_announced():
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(m, 0.2, (40, 300)) for m in (0.0, 1.0, 2.0)]).astype("f4")
    with pytest.warns(RuntimeWarning, match="approximate"):
        res = cluster_layer(X, device="cpu", approx_threshold=100, approx_dims=32, approx_sample=60)
    groups = np.repeat([0, 1, 2], 40)
    assert res.approximate and res.labels.shape == (120,)
    assert all(len(set(groups[res.labels == c])) == 1 for c in range(1, res.k + 1))
