"""Bad input, case by case (issue 7, docs/CONTRACTS.md "Bad input"): each is either skipped
and listed in ``T/skipped.csv`` or stops the step with a message naming the file and the
step, and never damages what earlier runs computed."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from hudd_core.cli import main
from hudd_core.cluster import run_cluster
from hudd_core.fileio import safe_component
from hudd_core.heatmaps import compute_heatmaps
from hudd_core.models import alexnet, kpnet, resnet
from hudd_core.models.checkpoint import save_checkpoint
from hudd_core.rcc import rcc_folder, write_rcc_folders
from hudd_core.testing import run_test
from hudd_testkit.cluster_fixtures import make_workdir


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _hudd(capsys, *args):
    """``hudd ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    capsys.readouterr()
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _test(w, capsys, *extra):
    return _hudd(capsys, "test", "--weights", w.pt, "--data", w.data, "--workdir", w.T,
                 "--device", "cpu", "--quiet", *extra)  # fmt: skip


def _heatmaps(w, capsys, *extra):
    layers = ["--layers", "input", "features.10"]  # two layers are enough here
    return _hudd(capsys, "heatmaps", "--weights", w.pt, "--data", w.data, "--workdir", w.T,
                 "--device", "cpu", "--quiet", *layers, *extra)  # fmt: skip


def _snapshot(folder):
    """Every file under ``folder`` with its bytes (to show nothing was touched), the
    work folder's lock (``pid N since ...`` of the last command) aside."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != ".lock"}  # fmt: skip


# --- images: skipped by `hudd test`, listed in T/skipped.csv ------------------------------


def _truncated(path):
    good = next(path.parent.glob("*.png")).read_bytes()
    path.write_bytes(good[: len(good) // 2])


def _unreadable(path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    path.chmod(0)


BAD_IMAGES = {
    "zero-byte": ("bad.png", lambda p: p.write_bytes(b"")),
    "corrupt": ("bad.png", lambda p: p.write_bytes(os.urandom(300))),
    "truncated": ("bad.png", _truncated),
    "text-named-png": ("bad.png", lambda p: p.write_text("not an image")),
    "wrong-size": ("bad.png", lambda p: Image.fromarray(np.zeros((20, 32), np.uint8)).save(p)),
    "non-image-file": ("notes.txt", lambda p: p.write_text("a note beside the images")),
    "unreadable": ("bad.png", _unreadable),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_test_skips_bad_images_and_lists_them(kind, model_workdir, capsys):
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads files without read permission")
    w = model_workdir({"TrainingSet": 8, "TestSet": 12})
    name, make = BAD_IMAGES[kind]
    folder = next(p for p in sorted((w.data / "TestSet").iterdir()) if any(p.glob("*.png")))
    make(folder / name)
    code, out, _ = _test(w, capsys)
    assert code == 0  # the run finishes
    bad = f"TestSet/{folder.name}/{name}"
    tested = [r["image"] for r in _rows(w.T / "testResult.csv")]
    assert len(tested) == 12 and bad not in tested
    assert len(_rows(w.T / "trainResult.csv")) == 8
    skipped = _rows(w.T / "skipped.csv")
    assert [(r["step"], r["image"]) for r in skipped] == [("test", bad)]
    assert name in skipped[0]["reason"]  # the reason names the file
    if kind == "wrong-size":
        assert "(1, 20, 32)" in skipped[0]["reason"] and "--image-size" in skipped[0]["reason"]
    if kind != "non-image-file":
        assert "TestSet: 12 images" in out and "1 skipped" in out
    # a rerun does not list it twice
    assert _test(w, capsys)[0] == 0
    assert len(_rows(w.T / "skipped.csv")) == 1


def test_other_channel_counts_are_converted_not_skipped(model_workdir, capsys):
    """docs/design.md#inputs: images get as many channels as the model's first layer takes."""
    w = model_workdir({"TrainingSet": 4, "TestSet": 6})
    folder = w.data / "TestSet" / "closed"
    folder.mkdir(exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(folder / "rgb.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[..., 0], "L").convert("LA").save(folder / "la.png")
    assert _test(w, capsys)[0] == 0
    tested = {r["image"] for r in _rows(w.T / "testResult.csv")}
    assert {"TestSet/closed/rgb.png", "TestSet/closed/rgba.png", "TestSet/closed/la.png"} <= tested
    assert not (w.T / "skipped.csv").exists()


# --- labels.csv / metadata.csv / result files: stop with an error naming the file ---------


def _edit_labels(w, edit):
    path = w.data / "TestSet" / "labels.csv"
    rows = list(csv.reader(open(path, newline="")))
    rows = edit(rows)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _delete_first_image(w):
    path = w.data / "TestSet" / "labels.csv"
    first = _rows(path)[0]["image"]
    (w.data / "TestSet" / first).unlink()
    return path, first


LABEL_PROBLEMS = {
    "missing-file": _delete_first_image,
    "duplicate-name": lambda w: (
        _edit_labels(w, lambda r: [*r, r[1]]),
        _rows(w.data / "TestSet" / "labels.csv")[0]["image"],
    ),
    "escaping-path": lambda w: (
        _edit_labels(w, lambda r: [*r, ["../TrainingSet/x.png", *r[1][1:]]]),
        "../TrainingSet/x.png",
    ),
}


@pytest.mark.parametrize("problem", list(LABEL_PROBLEMS))
def test_labels_csv_problems_stop_test(problem, model_workdir, capsys):
    w = model_workdir({"TrainingSet": 4, "TestSet": 6}, task="keypoints")
    assert _test(w, capsys)[0] == 0
    before = _snapshot(w.T)
    labels, image = LABEL_PROBLEMS[problem](w)
    code, _, err = _test(w, capsys)
    assert code == 2
    assert err.startswith("hudd test: error:")
    assert str(labels) in err and image in err
    assert _snapshot(w.T) == before  # the earlier results are intact


def test_duplicate_in_metadata_csv_stops_cluster(tmp_path, capsys):
    fx = make_workdir(tmp_path, np.random.default_rng(0))
    run_cluster(fx["T"], fx["data"], device="cpu", progress=False)
    before = _snapshot(fx["T"])
    meta = fx["data"] / "TestSet" / "metadata.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([*lines, lines[3]]) + "\n")
    code, _, err = _hudd(capsys, "cluster", "--workdir", fx["T"], "--data", fx["data"],
                         "--device", "cpu", "--quiet", "--no-gifs")  # fmt: skip
    assert code == 2
    assert str(meta) in err and "duplicate" in err and lines[3].split(",")[0] in err
    assert _snapshot(fx["T"]) == before


def test_duplicate_in_test_result_stops_heatmaps(model_workdir, capsys):
    w = model_workdir({"TestSet": 8})
    run_test(*_loaded(w), sets=("TestSet",), device="cpu", progress=False)
    assert _heatmaps(w, capsys)[0] == 0
    before = _snapshot(w.T)
    result = w.T / "testResult.csv"
    lines = result.read_text().splitlines()
    result.write_text("\n".join([*lines, lines[2]]) + "\n")
    before["testResult.csv"] = result.read_bytes()
    code, _, err = _heatmaps(w, capsys)
    assert code == 2
    assert str(result) in err and "twice" in err and lines[2].split(",")[0] in err
    assert _snapshot(w.T) == before


def _loaded(w):
    from hudd_core.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(w.pt)
    return model, w.data, w.T, meta


# --- models and weights ---------------------------------------------------------------------


def test_model_outputs_not_matching_the_classes_stop(model_workdir, capsys):
    w = model_workdir({"TrainingSet": 4, "TestSet": 6})
    assert _test(w, capsys)[0] == 0
    before = _snapshot(w.T)
    # a sidecar claiming the six classes for a five-output model
    kwargs = {**w.meta["kwargs"], "num_classes": 5}
    bad = save_checkpoint(
        alexnet(**kwargs), w.root / "Models", "five", {**w.meta, "kwargs": kwargs}
    )
    code, _, err = _hudd(capsys, "test", "--weights", bad, "--data", w.data, "--workdir", w.T)
    assert code == 2
    assert str(bad) in err and "5 outputs" in err and "'classifier.7'" in err and "6 classes" in err
    assert _snapshot(w.T) == before
    # a model built by hand (no file): the first batch stops the step
    _, data, T, meta = _loaded(w)
    with pytest.raises(ValueError, match=r"test: .*has 5 outputs \(output layer 'classifier.7'\)"):
        run_test(alexnet(**kwargs), data, T, meta, device="cpu", progress=False)
    assert _snapshot(w.T) == before


def test_keypoint_model_not_matching_the_labels_stops(model_workdir):
    w = model_workdir({"TestSet": 6}, task="keypoints")
    model = kpnet(3, 1, 32)  # 6 outputs, the labels have 10 coordinates
    with pytest.raises(ValueError, match=r"test: .*6 outputs .*labels.csv has 10 coordinates"):
        run_test(model, w.data, w.T, w.meta, sets=("TestSet",), device="cpu", progress=False)
    assert not (w.T / "testResult.csv").exists()


def _other_class_count(path):
    torch.save(alexnet(5, 1, 32).state_dict(), path)
    return ["layer 'classifier.7'", "(5, 128) in the file", "(6, 128) in the model"]


def _other_architecture(path):
    torch.save(resnet(6, 1, 32).state_dict(), path)
    return ["layers 'features.0'", "have no weights in the file", "no place for: 'stem"]


def _zero_byte(path):
    path.write_bytes(b"")
    return ["is empty (0 bytes)"]


WEIGHT_PROBLEMS = {
    "other-class-count": _other_class_count,
    "other-architecture": _other_architecture,
    "zero-byte": _zero_byte,
}


@pytest.mark.parametrize("problem", list(WEIGHT_PROBLEMS))
def test_weights_not_fitting_the_architecture_stop(problem, model_workdir, capsys):
    w = model_workdir({"TrainingSet": 4, "TestSet": 6})
    assert _test(w, capsys)[0] == 0
    before = _snapshot(w.T)
    weights = w.root / "plain.pt"  # no sidecar: --model builds the architecture
    expected = WEIGHT_PROBLEMS[problem](weights)
    code, _, err = _hudd(capsys, "test", "--model", "alexnet", "--weights", weights,
                         "--data", w.data, "--workdir", w.T)  # fmt: skip
    assert code == 2
    assert err.startswith("hudd test: error:") and str(weights) in err
    for fragment in expected:
        assert fragment in err
    assert _snapshot(w.T) == before


# --- the error set ----------------------------------------------------------------------------


def test_empty_error_set_stops_heatmaps_and_keeps_them(model_workdir, capsys):
    w = model_workdir({"TestSet": 6})
    run_test(*_loaded(w), sets=("TestSet",), device="cpu", progress=False)
    assert _heatmaps(w, capsys)[0] == 0
    result = w.T / "testResult.csv"
    result.write_text(result.read_text().replace(",Wrong,", ",Correct,"))
    before = _snapshot(w.T)
    code, _, err = _heatmaps(w, capsys)
    assert code == 2
    assert "hudd heatmaps: error:" in err and str(result) in err and "no Wrong image" in err
    assert _snapshot(w.T) == before


def test_single_error_image_is_one_cluster(tmp_path, capsys):
    fx = make_workdir(tmp_path, np.random.default_rng(0), sizes=(1,))
    code, out, _ = _hudd(capsys, "cluster", "--workdir", fx["T"], "--data", fx["data"],
                         "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0 and "1 clusters of 1 error images" in out
    summary = json.loads((fx["T"] / "ClusterAnalysis" / "summary.json").read_text())
    assert summary["n_clusters"] == 1 and summary["best_layer"] != "input"
    assert {v["method"] for v in summary["layers"].values()} == {"single-image"}
    assert [(r["image"], r["cluster"]) for r in _rows(fx["T"] / "clusters.csv")] == [
        (fx["images"][0], "1")
    ]
    rcc = fx["T"] / summary["best_layer"] / "Cluster_1"
    assert [p.name for p in rcc.iterdir()] == [fx["images"][0].split("/", 1)[1].replace("/", "_")]
    assert (fx["T"] / "report.html").is_file()


# --- NaN / inf relevance, images broken since the test ---------------------------------------


def test_nan_relevance_stops_heatmaps_and_keeps_stored_rows(tmp_path):
    torch.manual_seed(0)
    model = alexnet(3, 1, 32).eval()
    x = torch.rand(8, 1, 32, 32)
    ids = [f"TestSet/c/{i}.png" for i in range(8)]
    bad = x.clone()
    bad[5, 0, 3, 3] = float("inf")
    ds = TensorDataset(bad, torch.zeros(8, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"NaN or inf relevance for image TestSet/c/5\.png at layer '"
    ):
        compute_heatmaps(model, ds, ids, tmp_path / "A", batch_size=2, progress=False)
    assert json.loads((tmp_path / "A" / "progress.json").read_text())["rows"] == 4
    stored = np.load(tmp_path / "A" / "features.0.npy")[:4].copy()
    good = TensorDataset(x, torch.zeros(8, dtype=torch.long))
    s = compute_heatmaps(model, good, ids, tmp_path / "A", batch_size=2, progress=False)
    assert s["resumed_from"] == 4  # nothing stored was lost
    np.testing.assert_array_equal(np.load(tmp_path / "A" / "features.0.npy")[:4], stored)


def test_nan_heatmap_rows_stop_cluster_naming_the_image(tmp_path, capsys):
    fx = make_workdir(tmp_path, np.random.default_rng(0))
    run_cluster(fx["T"], fx["data"], device="cpu", progress=False)
    before = {k: v for k, v in _snapshot(fx["T"]).items() if not k.startswith("Heatmaps/")}
    path = fx["T"] / "Heatmaps" / "fc.npy"
    X = np.load(path)
    X[3, 0] = np.nan
    np.save(path, X)
    with pytest.raises(ValueError, match=r"fc\.npy") as info:
        run_cluster(fx["T"], fx["data"], device="cpu", progress=False)
    assert "cluster:" in str(info.value) and f"row 3 ({fx['images'][3]})" in str(info.value)
    after = {k: v for k, v in _snapshot(fx["T"]).items() if not k.startswith("Heatmaps/")}
    assert after == before


@pytest.mark.parametrize("kind", ["corrupt", "wrong-size"])
def test_image_broken_since_the_test_stops_heatmaps_keeping_rows(kind, model_workdir, capsys):
    w = model_workdir({"TestSet": 16})
    run_test(*_loaded(w), sets=("TestSet",), device="cpu", progress=False)
    wrong = [r["image"] for r in _rows(w.T / "testResult.csv") if r["result"] == "Wrong"]
    assert len(wrong) >= 6
    victim = w.data / wrong[5]
    original = victim.read_bytes()
    if kind == "corrupt":
        victim.write_bytes(b"")
    else:
        Image.fromarray(np.zeros((20, 32), np.uint8)).save(victim)
    code, _, err = _heatmaps(w, capsys, "--batch-size", "2")
    assert code == 2 and "hudd heatmaps: error: heatmaps" not in err  # step named once
    assert victim.name in err and "4 of" in err
    assert json.loads((w.T / "Heatmaps" / "progress.json").read_text())["rows"] == 4
    victim.write_bytes(original)
    code, out, _ = _heatmaps(w, capsys, "--batch-size", "2")
    assert code == 0 and json.loads(out)["resumed_from"] == 4


# --- safety: nothing written outside the work folder -------------------------------------------


HOSTILE = ["../../escape", "/tmp/absolute", "..", ".", "", "a\0b", "Heatmaps", "clusters.csv",
           "x" * 300, "C:\\win"]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_component_stays_in_its_folder(name, tmp_path):
    safe = safe_component(name, ["Heatmaps", "clusters.csv"])
    assert "/" not in safe and "\0" not in safe and "\\" not in safe
    assert safe not in ("", ".", "..") and not safe.startswith(".")
    assert len(safe.encode()) <= 200
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    assert safe.lower() not in ("heatmaps", "clusters.csv")
    assert safe_component(name) == safe_component(name)  # stable across runs


@pytest.mark.parametrize("layer", ["../../escape", "/tmp/absolute_hudd", "Heatmaps",
                                   "clusters.csv", "ClusterAnalysis"])  # fmt: skip
def test_hostile_layer_names_write_only_inside_the_work_folder(layer, tmp_path):
    fx = make_workdir(tmp_path / "w", np.random.default_rng(0))
    meta_path = fx["T"] / "Heatmaps" / "layers.json"
    meta = json.loads(meta_path.read_text())
    for entry in meta["layers"]:
        if entry["name"] == "fc":  # the best layer of this fixture
            entry["name"] = layer
    meta_path.write_text(json.dumps(meta))
    outside = sorted(tmp_path.iterdir())
    heatmaps = _snapshot(fx["T"] / "Heatmaps")
    summary = run_cluster(fx["T"], fx["data"], device="cpu", progress=False, gifs=False)
    assert summary["best_layer"] == layer
    assert sorted(tmp_path.iterdir()) == outside  # nothing new beside the work folder
    assert not os.path.exists("/tmp/absolute_hudd")
    assert _snapshot(fx["T"] / "Heatmaps") == heatmaps  # T/Heatmaps is not replaced
    rcc = rcc_folder(fx["T"], layer)
    assert rcc.parent == fx["T"] and (rcc / "Cluster_1").is_dir()
    assert len(_rows(fx["T"] / "clusters.csv")) == fx["n"]
    assert (fx["T"] / "ClusterAnalysis" / safe_component(layer) / "layer.json").is_file()
    assert not list(tmp_path.rglob("escape"))


def test_heatmap_file_names_must_stay_in_the_folder(tmp_path):
    fx = make_workdir(tmp_path, np.random.default_rng(0))
    meta_path = fx["T"] / "Heatmaps" / "layers.json"
    meta = json.loads(meta_path.read_text())
    meta["layers"][0]["file"] = "../../input.npy"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"layers\.json: layer file '\.\./\.\./input\.npy'"):
        run_cluster(fx["T"], fx["data"], device="cpu", progress=False)


def test_rcc_copies_never_overwrite_each_other(tmp_path):
    data = tmp_path / "DataSets"
    images = ["TestSet/a/b_c.png", "TestSet/a_b/c.png", "TestSet/../../up.png"]
    for i, img in enumerate(images):
        (data / img).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(data / img)
    outside = sorted(tmp_path.iterdir())
    write_rcc_folders(tmp_path / "T", data, "fc", images, np.array([1, 1, 1]), gifs=False)
    names = sorted(p.name for p in (tmp_path / "T" / "fc" / "Cluster_1").iterdir())
    assert names == ["_.._.._up.png", "a_b_c.png", "a_b_c~2.png"]
    assert set(tmp_path.iterdir()) == {*outside, tmp_path / "T"}
