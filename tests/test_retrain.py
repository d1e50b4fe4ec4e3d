"""RetrainModule: labels, balancing, fine-tuning, saving, baselines, and clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hudd_core import retrain as R
from hudd_core.data import simulator
from hudd_core.data.generate import generate
from hudd_core.models import alexnet
from hudd_core.models.checkpoint import load_checkpoint, save_checkpoint

SIZE = 32


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny case study: DataSets, a checkpoint, clusters.csv and unsafe_set.csv."""
    root = tmp_path_factory.mktemp("case")
    data, T = root / "DataSets", root / "T"
    sizes = {"TrainingSet": 48, "TestSet": 24, "ImprovementSet": 40}
    generate(data, sizes=sizes, image_size=SIZE, seed=5, progress=False)
    torch.manual_seed(0)
    kwargs = {"num_classes": len(simulator.CLASSES), "in_channels": 1, "input_size": SIZE}
    meta = {
        "model": "alexnet",
        "kwargs": kwargs,
        "task": "classifier",
        "classes": simulator.CLASSES,
        "in_channels": 1,
        "input_size": SIZE,
    }
    save_checkpoint(alexnet(**kwargs), T / "DNNModels", "m", meta)
    tests = sorted(p.relative_to(data).as_posix() for p in (data / "TestSet").rglob("*.png"))
    improvement = sorted(
        p.relative_to(data).as_posix() for p in (data / "ImprovementSet").rglob("*.png")
    )
    write(
        T / "clusters.csv",
        ["image", "cluster", "layer"],
        [(img, 1 + i % 2, "features.3") for i, img in enumerate(tests[:6])],
    )
    write(
        T / "unsafe_set.csv",
        ["image", "cluster", "distance", "order"],
        [(img, 1 + i % 2, 0.1 * (i + 1), 0) for i, img in enumerate(improvement[:5])],
    )
    return data, T


def write(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


HP = {"epochs": 1, "batch_size": 16}


def test_retrain_saves_reloads_and_reports(case):
    data, T = case
    result = R.run_retrain(T, data, hp=HP, progress=False)
    saved = T / "DNNModels" / "m_retrained.pt"
    model, meta = load_checkpoint(saved)
    assert meta["retrained_from"] == "m.pt"
    x = torch.rand(2, 1, SIZE, SIZE)
    assert model(x).shape == (2, len(simulator.CLASSES))
    on_disk = json.loads((T / "retrain.json").read_text())
    assert on_disk["labelling_budget"] == 5
    # Bootstrap: both clusters resampled to the largest quota ceil(2 x 3) = 6.
    assert on_disk["balanced_unsafe_set"] == 12
    assert set(on_disk["before"]["rcc"]) == {"1", "2"}
    assert 0.0 <= result["hudd"]["accuracy"]["mean"] <= 1.0
    assert "planted" in result["hudd"] and "class" in result["hudd"]


def test_baselines_and_repeats(case):
    data, T = case
    result = R.run_retrain(T, data, hp=HP, baselines=True, repeats=2, progress=False)
    for method in ("hudd", "BL1", "BL2"):
        assert len(result[method]["accuracy"]["runs"]) == 2
        assert result[method]["accuracy"]["std"] >= 0.0
    from hudd_core.report.html import retraining_section

    page = retraining_section(result)  # what report.html shows
    for method in ("hudd", "BL1", "BL2"):
        acc = result[method]["accuracy"]
        assert f"<td>{method}</td><td>{acc['mean']:.1%} ± {acc['std']:.1%}</td>" in page
    assert "per planted region" in page and "per RCC" in page and "per class" in page


def test_labels_from_folders_and_from_csv(case, tmp_path):
    data, T = case
    _, meta = load_checkpoint(T / "DNNModels" / "m.pt")
    imgs = [r["image"] for r in csv.DictReader(open(T / "unsafe_set.csv"))]
    from_folders = R.label_images(data, imgs, meta)
    expected = [simulator.CLASSES.index(i.split("/")[1]) for i in imgs]
    assert from_folders.tolist() == expected
    labels = tmp_path / "labels.csv"
    write(labels, ["image", "label"], [(i, "closed") for i in imgs])
    assert set(R.label_images(data, imgs, meta, labels).tolist()) == {
        simulator.CLASSES.index("closed")
    }


def test_refuses_labels_that_do_not_match(case, tmp_path):
    data, T = case
    _, meta = load_checkpoint(T / "DNNModels" / "m.pt")
    imgs = [r["image"] for r in csv.DictReader(open(T / "unsafe_set.csv"))]
    bad = tmp_path / "bad.csv"
    write(bad, ["image", "label"], [(imgs[0], "sideways")] + [(i, "closed") for i in imgs[1:]])
    with pytest.raises(ValueError, match=rf"label 'sideways' of {imgs[0]} is not one of"):
        R.label_images(data, imgs, meta, bad)
    missing = tmp_path / "missing.csv"
    write(missing, ["image", "label"], [(i, "closed") for i in imgs[1:]])
    with pytest.raises(ValueError, match=rf"no label for {imgs[0]}"):
        R.run_retrain(T, data, labels_csv=missing, hp=HP, progress=False)
    with pytest.raises(ValueError, match="image,label"):
        write(bad, ["file", "class"], [(imgs[0], "closed")])
        R.label_images(data, imgs, meta, bad)


def test_accuracy_table():
    table = R.accuracy_table(
        np.array([True, False, True]), ["a", "b", "c"], {"rcc": {"a": "1", "b": "1"}}
    )
    assert table["overall"] == pytest.approx(2 / 3)
    assert table["rcc"] == {"1": {"n": 2, "accuracy": 0.5}}


def test_retrain_leaves_out_images_the_test_skipped(case, tmp_path):
    import shutil

    from hudd_core.testing import run_test

    data, T = case
    data2, T2 = tmp_path / "DataSets", tmp_path / "T"
    shutil.copytree(data, data2)
    shutil.copytree(T, T2)
    for set_name in ("TestSet", "TrainingSet"):
        next(iter(sorted((data2 / set_name).rglob("*.png")))).write_bytes(b"not a png")
    model, meta = load_checkpoint(T2 / "DNNModels" / "m.pt")
    run_test(model, data2, T2, meta, progress=False)
    assert "TestSet" in (T2 / "skipped.csv").read_text()
    result = R.run_retrain(T2, data2, hp=HP, baselines=True, progress=False)
    assert sum(g["n"] for g in result["before"]["class"].values()) == 24 - 1


def test_keypoint_model_retrains_with_mse_and_pixel_error_accuracy(model_workdir, monkeypatch):
    w = model_workdir({"TrainingSet": 24, "TestSet": 16, "ImprovementSet": 12}, task="keypoints")
    improvement = sorted(p.relative_to(w.data).as_posix()
                         for p in (w.data / "ImprovementSet").glob("*.png"))  # fmt: skip
    tests = sorted(p.relative_to(w.data).as_posix() for p in (w.data / "TestSet").glob("*.png"))
    rccs = [(img, 1 + i % 2, "features.3") for i, img in enumerate(tests[:6])]
    unsafe = [(img, 1 + i % 2, 0.1 * (i + 1), 0) for i, img in enumerate(improvement[:6])]
    write(w.T / "clusters.csv", ["image", "cluster", "layer"], rccs)
    write(w.T / "unsafe_set.csv", ["image", "cluster", "distance", "order"], unsafe)
    calls = []
    real_train = R.train

    def spy(*args, **kwargs):
        calls.append(kwargs["loss"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(R, "train", spy)
    result = R.run_retrain(w.T, w.data, hp=HP, baselines=True, progress=False)
    assert calls == ["mse"] * 3  # HUDD, BL1, BL2
    model, meta = load_checkpoint(w.T / "DNNModels" / "m_retrained.pt")
    assert meta["task"] == "keypoints"
    assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2 * len(simulator.KEYPOINTS))
    assert 0.0 <= result["hudd"]["accuracy"]["mean"] <= 1.0  # mean pixel error ≤ 4 px
