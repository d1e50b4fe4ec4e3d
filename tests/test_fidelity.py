"""Issue 17: fidelity to the published toolset, and every step usable on its own."""

from __future__ import annotations

import ast
import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from hudd_core.cli import main
from hudd_core.options import AssignOptions, Preprocess

RGB_MODEL = """
import torch
from torch import nn


def factory(num_classes=6):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, num_classes),
    )
"""


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _compare_with_toolset(T: Path) -> int:
    """k per layer and the best layer of ``T/ClusterAnalysis`` against the independent
    oracle, over every recorded layer; returns the number of layers compared."""
    import json

    from hudd_testkit.toolset_oracle import best_layer, layer_choice

    layers = json.loads((T / "Heatmaps" / "layers.json").read_text())["layers"]
    summary = json.loads((T / "ClusterAnalysis" / "summary.json").read_text())
    ref = {}
    for layer in layers:
        X = np.load(T / "Heatmaps" / layer["file"]).astype(np.float64)
        if np.ptp(X) == 0:
            continue
        ref[layer["name"]] = layer_choice(X)
        if ref[layer["name"]]["k"] is not None:
            assert summary["layers"][layer["name"]]["k"] == ref[layer["name"]]["k"], layer
    ref = {n: r for n, r in ref.items() if r["k"] is not None}
    assert summary["best_layer"] == best_layer(ref)
    return len(ref)


@pytest.mark.slow
def test_rgb_model_file_runs_every_step_alone(tmp_path, model_workdir, capsys):
    ws = model_workdir({"TrainingSet": 48, "TestSet": 48, "ImprovementSet": 40}, name="rgb")
    (tmp_path / "m.py").write_text(RGB_MODEL)
    spec = f"{tmp_path / 'm.py'}:factory"
    import importlib.util

    loader = importlib.util.spec_from_file_location("rgb_m", tmp_path / "m.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    weights = tmp_path / "w.pt"
    torch.save(module.factory().state_dict(), weights)
    T = ws.root / "T2"
    common = ["--data", str(ws.data), "--workdir", str(T), "--quiet"]
    model = ["--model", spec, "--weights", str(weights)]
    assert main(["test", *model, *common]) == 0
    stored = T / "DNNModels" / "w.json"
    assert stored.is_file() and '"in_channels": 3' in stored.read_text()
    assert main(["heatmaps", *model, *common]) == 0
    assert main(["cluster", *common, "--no-report"]) == 0
    assert main(["assign", *model, *common]) == 0
    assert (T / "unsafe_set.csv").is_file()
    assert main(["retrain", *model, *common, "--epochs", "1", "--baselines"]) == 0
    assert main(["retrain", *common, "--epochs", "1"]) == 0  # the stored checkpoint
    assert _compare_with_toolset(T) >= 4  # "another case": every layer of this model


@pytest.mark.slow
def test_demo_k_per_layer_equals_the_toolset_rule(tmp_path):
    from hudd_core.demo import run_demo

    run_demo(tmp_path / "demo", size="tiny", baselines=False, progress=False)
    assert _compare_with_toolset(tmp_path / "demo") >= 8


@pytest.mark.slow
def test_keypoint_demo_runs_every_step(tmp_path):
    from hudd_core.demo import run_demo

    result = run_demo(tmp_path / "kp", size="tiny", task="keypoints", progress=False)
    assert "stopped" not in result, result.get("stopped")
    for step in ("test", "heatmaps", "cluster", "assign", "retrain", "report"):
        assert step in result, step
    rows = _rows(tmp_path / "kp" / "unsafe_set.csv")
    assert rows and {r["image"].split("/")[0] for r in rows} == {"ImprovementSet"}


def test_rcc_keypoints_and_keypoint_start():
    from hudd_core.heatmaps import keypoint_start

    out = torch.arange(8.0).reshape(1, 8)
    assert keypoint_start(out, 2).tolist() == [[0, 0, 0, 0, 4, 5, 0, 0]]
    with pytest.raises(ValueError, match="keypoint 4"):
        keypoint_start(out, 4)


def test_bl1_labels_the_budget_and_keeps_the_failing_ones(tmp_path):
    from hudd_core.baselines import Pool, baseline_sample
    from hudd_core.data.datasets import LabelledImages

    n = 200
    images = LabelledImages(tmp_path, [f"ImprovementSet/{i}.png" for i in range(n)],
                      np.zeros(n, dtype=np.int64), 1, "classifier")  # fmt: skip
    correct = np.ones(n, dtype=bool)
    correct[::10] = False  # 20 wrong images
    pool = Pool(images, correct)
    rng = np.random.default_rng(7)
    labelled = rng.choice(n, size=30, replace=False)  # what BL1 draws with seed 7
    added, kept = baseline_sample("BL1", pool, 30, 100, seed=7)
    wrong_labelled = {f"ImprovementSet/{i}.png" for i in labelled if not correct[i]}
    assert kept == len(wrong_labelled) and set(added.ids) == wrong_labelled
    assert len(added) == 100
    added2, kept2 = baseline_sample("BL2", pool, 30, 100, seed=7)
    assert kept2 == 30 and len(added2) == 100 and len(set(added2.ids)) == 30
    oracle, kept3 = baseline_sample("BL1-oracle", pool, 30, 100, seed=7)
    assert kept3 == 20 and all(not correct[int(i.split("/")[1][:-4])] for i in oracle.ids)
    none = Pool(images, np.ones(n, dtype=bool))
    empty, zero = baseline_sample("BL1", none, 30, 100, seed=7)
    assert (len(empty), zero) == (0, 0)


def test_bootstrap_target_follows_the_quota_factor():
    from hudd_core.balance import bootstrap_target

    assert bootstrap_target({1: 10, 2: 3}, 2.0) == 20
    assert bootstrap_target({1: 10, 2: 3}, 1.5) == 15
    with pytest.raises(ValueError, match="quota-factor"):
        bootstrap_target({1: 3}, 0.0)


def _assign_case(ws, n_clusters=7):
    from hudd_core.heatmaps import run_heatmaps
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_core.testing import run_test

    model, meta = load_checkpoint(ws.pt)
    run_test(model, ws.data, ws.T, meta, progress=False)
    run_heatmaps(ws.T, ws.data, model, meta, layers=["features.10"], progress=False)
    index = _rows(ws.T / "Heatmaps" / "index.csv")
    labels = np.arange(len(index)) % n_clusters + 1
    with open(ws.T / "clusters.csv", "w") as fh:
        fh.write("image,cluster,layer\n")
        fh.writelines(f"{r['image']},{c},features.10\n" for r, c in zip(index, labels, strict=True))
    return model, meta


def test_assign_ranks_every_cluster_and_signs_what_it_depends_on(model_workdir):
    from hudd_core.assign import run_assign
    from hudd_core.heatmaps import batch_relevance

    ws = model_workdir({"TrainingSet": 12, "TestSet": 40, "ImprovementSet": 60}, name="assign")
    model, _ = _assign_case(ws)
    calls = []
    f = batch_relevance(model, "features.10", device="cpu")

    def counted(x):
        calls.append(len(x))
        return f(x)

    local = AssignOptions(backend="numpy", gifs=False)
    kw = {"input_shape": (1, 32, 32), "options": local, "progress": False}
    s = run_assign(ws.T, ws.data, counted, explained_by={"weights": "a"}, **kw)
    assert s["top"] == 7  # every cluster is ranked (the reference)
    z = np.load(ws.T / "Assign" / "candidates.npz")
    assert z["cluster_idx"].shape[1] == 7
    first = sum(calls)
    run_assign(ws.T, ws.data, counted, explained_by={"weights": "a"}, **kw)
    assert sum(calls) == first  # same model: resumed, nothing recomputed
    run_assign(ws.T, ws.data, counted, explained_by={"weights": "b"}, **kw)
    assert sum(calls) == 2 * first  # other weights: the candidates are recomputed
    kw["options"] = AssignOptions(backend="numpy", gifs=False, top=2)
    run_assign(ws.T, ws.data, counted, explained_by={"weights": "b"}, **kw)
    assert np.load(ws.T / "Assign" / "candidates.npz")["cluster_idx"].shape[1] == 2


def test_assign_applies_the_preprocessing(model_workdir):
    from hudd_core.assign import run_assign
    from hudd_core.models import alexnet

    ws = model_workdir({"TrainingSet": 12, "TestSet": 40, "ImprovementSet": 30}, name="prep")
    _assign_case(ws, n_clusters=3)
    small = alexnet(6, 1, 16).eval()
    seen = []

    def relevance(x):  # a 16 × 16 model's relevance at its last pooling layer
        seen.append(tuple(x.shape[1:]))
        return torch.rand(len(x), 1024)

    # heatmaps of the 32 × 32 model stand for the members; only the input path matters here
    s = run_assign(ws.T, ws.data, relevance, options=AssignOptions(backend="numpy", gifs=False),
                   prep=Preprocess(image_size=16, mean=[0.5], std=[0.25]), input_shape=(1, 16, 16),
                   progress=False)  # fmt: skip
    assert s["skipped"] == 0 and seen and set(seen) == {(1, 16, 16)}
    assert small is not None


def test_exact_clustering_whenever_it_fits():
    from hudd_core.cluster import BYTES_PER_PAIR, approximate_reason, exact_memory

    assert exact_memory(1000) == BYTES_PER_PAIR * 1000 * 999 // 2
    assert approximate_reason(30000, None, memory=1 << 40) == ""  # 1 TiB: exact
    assert "GiB" in approximate_reason(30000, None, memory=8 << 30)
    assert "approx-threshold" in approximate_reason(50, 40, memory=1 << 40)


def test_approximate_path_is_announced_and_recorded(tmp_path):
    from hudd_core.cluster import run_cluster
    from hudd_testkit.cluster_fixtures import make_workdir

    paths = make_workdir(tmp_path, np.random.default_rng(3), sizes=(30, 25, 20))
    with pytest.warns(RuntimeWarning, match="approx-threshold"):
        s = run_cluster(paths["T"], paths["data"], approx_threshold=50, device="cpu",
                        gifs=False, progress=False)  # fmt: skip
    assert (
        s["clustering"]["path"] == "approximate" and "75 error images" in s["clustering"]["reason"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        s = run_cluster(paths["T"], paths["data"], device="cpu", gifs=False, progress=False)
    assert s["clustering"] == {"path": "exact", "reason": "", "bytes_per_pair": 32}


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_export_distances_equals_scipy(tmp_path, fmt):
    from hudd_core.cluster import export_distances

    X = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    images = [f"TestSet/a/{i}.png" for i in range(6)]
    path = export_distances(tmp_path, X, images, fmt)
    if fmt == "csv":
        rows = list(csv.reader(open(path)))
        values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    else:
        from openpyxl import load_workbook

        rows = list(load_workbook(path).active.iter_rows(values_only=True))
        values = np.array([r[1:] for r in rows[1:]], dtype=np.float64)
    assert list(rows[0][1:]) == images and [r[0] for r in rows[1:]] == images
    assert np.allclose(values, cdist(X.astype(np.float64), X.astype(np.float64)), atol=1e-5)
    with pytest.raises(ValueError, match="limit"):
        export_distances(tmp_path, X, ["x"] * 6000, "csv")


def test_run_checks_option_values_before_the_first_step(tmp_path):
    from hudd_core.config import load_config
    from hudd_core.pipeline import run_pipeline

    cases = [({"backend": "fais"}, "--backend"), ({"composite": "nope"}, "--composite"),
             ({"selection": "elbow"}, "--selection"), ({"top": 0}, "--top"),
             ({"baselines": ["BL3"]}, "BL3"), ({"quota_factor": -1.0}, "quota")]  # fmt: skip
    for bad, match in cases:
        cfg = load_config(None, {"workdir": str(tmp_path / "T"), **bad})
        with pytest.raises(ValueError, match=match):
            run_pipeline(cfg)
        assert not (tmp_path / "T").exists()  # nothing ran, nothing was written


def test_cli_one_line_for_bad_input_traceback_for_bugs(tmp_path, capsys, monkeypatch):
    import hudd_core.cli.cluster as cluster_cli

    code = main(["cluster", "--workdir", str(tmp_path / "missing"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Heatmaps" in err

    def oserror(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "T" / "x.npy"))

    monkeypatch.setattr(cluster_cli, "run", oserror)
    assert main(["cluster", "--quiet"]) == 2
    assert "x.npy" in capsys.readouterr().err

    def bug(args):
        raise TypeError("a programming error")

    monkeypatch.setattr(cluster_cli, "run", bug)
    with pytest.raises(TypeError, match="programming error"):
        main(["cluster", "--quiet"])


def test_no_progress_frames_off_a_terminal(tmp_path):
    code = (
        "from hudd_core.data.generate import generate;"
        f"generate({str(tmp_path / 'D')!r}, sizes={{'TestSet': 64}}, image_size=32)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "\r" not in out.stderr and "generate" not in out.stderr


# A step never imports a later step (docs/design.md#layering: dependencies point one way).
ORDER = ["testing", "heatmaps", "cluster", "assign", "balance", "retrain", "report"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_steps_import_only_earlier_steps():
    root = Path(__file__).parent.parent / "hudd_core"
    for i, step in enumerate(ORDER):
        path = root / f"{step}.py" if (root / f"{step}.py").is_file() else root / step
        files = [path] if path.is_file() else sorted(path.glob("*.py"))
        later = {f"hudd_core.{s}" for s in ORDER[i + 1 :]}
        for f in files:
            bad = {m for m in _imports(f) if any(m == s or m.startswith(s + ".") for s in later)}
            assert not bad, f"{f.name} imports later steps {sorted(bad)}"


def _pool(tmp_path, n=50, classes=4, seed=0):
    from hudd_core.baselines import Pool
    from hudd_core.data.datasets import LabelledImages

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * rng.uniform(0.1, 3, (n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    images = LabelledImages(tmp_path, [f"ImprovementSet/{i}.png" for i in range(n)],
                            np.zeros(n, dtype=np.int64), 1, "classifier")  # fmt: skip
    return Pool(images, rng.random(n) > 0.3, probs), probs


@pytest.mark.parametrize("name", ["entropy", "margin", "deepgini"])
def test_uncertainty_baselines_take_the_b_most_uncertain(tmp_path, name):
    from hudd_core.baselines import baseline_sample

    pool, p = _pool(tmp_path)
    score = {  # written from the definitions, one image at a time
        "entropy": [-sum(q * np.log(q) for q in row) for row in p],
        "margin": [-(sorted(row)[-1] - sorted(row)[-2]) for row in p],
        "deepgini": [1 - sum(q * q for q in row) for row in p],
    }[name]
    expected = {f"ImprovementSet/{i}.png" for i in np.argsort(score)[::-1][:12]}
    added, distinct = baseline_sample(name, pool, 12, 40, seed=3)
    assert distinct == 12 and set(added.ids) == expected and len(added) == 40


def test_a12_and_mann_whitney_on_known_inputs():
    from hudd_core.baselines import mann_whitney_p, vargha_delaney_a12, versus

    x, y = [0.05, 0.04, 0.06, 0.05], [0.01, 0.05, 0.02, 0.00]
    wins = sum((a > b) + 0.5 * (a == b) for a in x for b in y) / 16
    assert vargha_delaney_a12(x, y) == pytest.approx(wins) == pytest.approx(0.875)
    # complete separation of 5 and 5: exact two-sided p = 2 / C(10, 5)
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert mann_whitney_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert versus(x, {"BL2": y})["BL2"]["a12"] == pytest.approx(0.875)


def test_group_by_names_a_missing_column(model_workdir):
    from hudd_core.data.datasets import ImageSet
    from hudd_core.retrain import test_groups

    ws = model_workdir({"TestSet": 12}, name="groups")
    test_set = ImageSet(ws.data / "TestSet", classes=ws.meta["classes"])
    groups = test_groups(ws.T, ws.data, test_set, ws.meta, ["glasses"])
    assert set(groups["glasses"].values()) <= {"0", "1", "0.0", "1.0", "True", "False"}
    assert "planted" in test_groups(ws.T, ws.data, test_set, ws.meta)
    with pytest.raises(ValueError, match="no such column"):
        test_groups(ws.T, ws.data, test_set, ws.meta, ["weather"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet", "mobilenet_v3_small", "vit"])
def test_demo_runs_end_to_end_with_other_architectures(tmp_path, arch):
    from hudd_core.demo import run_demo

    result = run_demo(tmp_path / arch, size="tiny", arch=arch, baselines=False, progress=False)
    assert result["checkpoint"].endswith(f"demo_{arch}.pt")
    assert "stopped" not in result or result["stopped"]["step"] in ("assign", "retrain")
    assert {"test", "heatmaps", "cluster"} <= set(result)
    with pytest.raises(ValueError, match="--arch"):
        run_demo(tmp_path / "x", size="tiny", arch="lenet", progress=False)


def test_demo_runs_on_the_road_sign_scene(tmp_path):
    from hudd_core.data import signs
    from hudd_core.demo import run_demo
    from hudd_core.models.checkpoint import read_meta

    result = run_demo(tmp_path / "signs", size="tiny", scene="signs", baselines=False,
                      progress=False)  # fmt: skip
    assert read_meta(result["checkpoint"])["classes"] == signs.CLASSES
    data = Path(result["data"])
    assert sorted(p.name for p in (data / "TestSet").iterdir() if p.is_dir()) == signs.CLASSES
    with open(data / "ImprovementSet" / "metadata.csv", newline="") as f:
        planted = {row["planted"] for row in csv.DictReader(f)}
    assert planted <= {"none", *signs.PLANTED}
    tested = set(result["planted"]) - {"none"}  # about half the TestSet is planted
    assert tested and tested <= set(signs.PLANTED)
    with pytest.raises(ValueError, match="scene"):
        run_demo(tmp_path / "x", size="tiny", scene="signs", task="keypoints", progress=False)
    with pytest.raises(ValueError, match="scene"):
        run_demo(tmp_path / "y", size="tiny", scene="roads", progress=False)


def test_retraining_reads_images_with_the_preprocessing(model_workdir):
    from hudd_core.data.datasets import LabelledImages, load_image

    ws = model_workdir({"TestSet": 4}, name="prep_retrain")
    first = sorted((ws.data / "TestSet").rglob("*.png"))[0].relative_to(ws.data).as_posix()
    prep = {"image_size": 16, "mean": [0.5], "std": [0.25]}
    ds = LabelledImages(ws.data, [first], np.zeros(1, dtype=np.int64), 1, "classifier", prep)
    x, _ = ds[0]
    plain = load_image(ws.data / first, 1, 16)
    assert x.shape == (1, 16, 16)
    assert torch.allclose(x, (plain - 0.5) / 0.25)
    assert ds.subset(np.array([0, 0])).preprocessing == prep  # bootstrap copies keep it
