"""RetrainModule: labels, balancing, fine-tuning, saving, baselines, and clear errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hudd_core import retrain as R
from hudd_core.data import simulator
from hudd_core.data.generate import generate
from hudd_core.models import alexnet
from hudd_core.models.checkpoint import load_checkpoint, save_checkpoint
from hudd_core.options import RetrainOptions

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


HP = {"epochs": 1, "train_batch_size": 16}


def test_retrain_saves_reloads_and_reports(case):
    data, T = case
    result = R.run_retrain(T, data, options=RetrainOptions(**HP), progress=False)
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
    result = R.run_retrain(
        T, data, options=RetrainOptions(**HP, baselines=True, repeats=2), progress=False
    )
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
        R.run_retrain(T, data, options=RetrainOptions(**HP), labels_csv=missing, progress=False)
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
    options = RetrainOptions(**HP, baselines=True, repeats=1)
    result = R.run_retrain(T2, data2, options=options, progress=False)
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
    result = R.run_retrain(
        w.T, w.data, options=RetrainOptions(**HP, baselines=True, repeats=1), progress=False
    )
    assert calls == ["mse"] * 3  # HUDD, BL1, BL2
    model, meta = load_checkpoint(w.T / "DNNModels" / "m_retrained.pt")
    assert meta["task"] == "keypoints"
    assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2 * len(simulator.KEYPOINTS))
    assert 0.0 <= result["hudd"]["accuracy"]["mean"] <= 1.0  # mean pixel error ≤ 4 px


# --- options: --freeze, --bootstrap, --validation, validation-only tuning -----------------


def test_head_is_the_last_linear_and_what_follows_it():
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Sequential(nn.Linear(8, 4), nn.ReLU()),
        nn.Linear(4, 3), nn.Dropout(0.1),
    )  # fmt: skip
    assert R.head_modules(net) == [net[3], net[4]]
    with pytest.raises(ValueError, match=r"--freeze features: Sequential has no nn\.Linear"):
        R.head_modules(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))


def test_freeze_features_changes_only_the_head(case):
    data, T = case
    model, meta = load_checkpoint(T / "DNNModels" / "m.pt")
    train_set = R.ImageSet(data / "TrainingSet", classes=meta["classes"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hp = RetrainOptions(**HP, lr=0.05).hp
    tuned = R.fine_tune(model, train_set, meta, hp, seed=0, device="cpu", progress=False,
                        freeze="features")  # fmt: skip
    after = tuned.state_dict()
    head = {"classifier.7.weight", "classifier.7.bias"}  # the zoo AlexNet's last Linear
    for k in before:
        if k in head:
            assert not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k
    assert all(p.requires_grad for p in tuned.parameters())  # the copy is left trainable
    moved = R.fine_tune(model, train_set, meta, hp, seed=0, device="cpu", progress=False)
    assert not torch.equal(moved.state_dict()["features.0.weight"], before["features.0.weight"])


def _spy_train(monkeypatch) -> list:
    seen = []
    real = R.train

    def spy(model, dataset, **kwargs):
        seen.append(dataset)
        return real(model, dataset, **kwargs)

    monkeypatch.setattr(R, "train", spy)
    return seen


def test_bootstrap_none_adds_exactly_the_selected_images(case, monkeypatch):
    data, T = case
    seen = _spy_train(monkeypatch)
    options = RetrainOptions(**HP, bootstrap="none", baselines=["BL2"], repeats=1)
    result = R.run_retrain(T, data, options=options, progress=False)
    unsafe = [r["image"] for r in csv.DictReader(open(T / "unsafe_set.csv"))]
    assert result["balanced_unsafe_set"] == result["labelling_budget"] == len(unsafe) == 5
    train_part, added = seen[0].datasets
    assert added.ids == unsafe  # each once, in the unsafe set's order
    assert len(train_part) == 48
    assert len(seen[1].datasets[1]) == 5  # BL2 at the same number of added samples
    assert result["options"]["bootstrap"] == "none"
    with pytest.raises(ValueError, match="--bootstrap: 'twice' is not one of weighted, none"):
        R.run_retrain(T, data, options=RetrainOptions(**HP, bootstrap="twice"), progress=False)


def test_validation_split_is_held_out_and_reported(case, monkeypatch):
    data, T = case
    seen = _spy_train(monkeypatch)
    options = RetrainOptions(**HP, validation=0.25, repeats=2, baselines=["BL2"])
    result = R.run_retrain(T, data, options=options, progress=False)
    fit, held = R.validation_split(48, 0.25, seed=0)
    assert len(held) == 12 and not set(fit) & set(held) and len(fit) + len(held) == 48
    train_part = seen[0].datasets[0]
    assert sorted(train_part.indices) == fit.tolist()  # the held-out images never train
    assert result["validation"]["n"] == 12
    for method in ("hudd", "BL2"):
        v = result[method]["validation_accuracy"]
        assert len(v["runs"]) == 2 and all(0 <= a <= 1 for a in v["runs"])
        assert "accuracy" in result[method]  # the test set's, beside it
        gains = [a - result["validation"]["before"] for a in v["runs"]]
        assert result[method]["validation_gain"]["runs"] == pytest.approx(gains)
    # the split is seeded: the same held-out images for another run with that seed
    assert R.validation_split(48, 0.25, seed=0)[1].tolist() == held.tolist()
    assert R.validation_split(48, 0.25, seed=1)[1].tolist() != held.tolist()


@pytest.fixture
def opened_files():
    """The paths every ``open`` (Python's audit event: builtins, io, os, PIL, NumPy) and
    folder listing of this process touches while ``record`` is on."""
    import sys

    state = {"on": False, "paths": []}

    def hook(event, args):
        if state["on"] and event in ("open", "os.listdir", "os.scandir") and args:
            if isinstance(args[0], str | bytes | Path):
                state["paths"].append(str(Path(os.fsdecode(args[0])).resolve()))

    sys.addaudithook(hook)  # audit hooks stay for the process: the flag turns it off
    yield state
    state["on"] = False


def test_no_tuning_reads_the_test_set(case, opened_files):
    from hudd_core.tuning import tune_on_validation

    data, T = case
    test_set = str((data / "TestSet").resolve())
    (T / "retrain.json").unlink(missing_ok=True)
    opened_files["on"] = True
    base = RetrainOptions(**HP, baselines=["BL2"], repeats=1)
    chosen = tune_on_validation([{"freeze": "none"}, {"freeze": "features", "lr": 0.05}],
                                workdir=T, data_root=data, validation=0.25, options=base,
                                progress=False)  # fmt: skip
    opened_files["on"] = False
    touched = opened_files["paths"]
    assert any("TrainingSet" in p for p in touched)  # the hook sees the data being read
    assert not [p for p in touched if p.startswith(test_set)]
    assert not (T / "retrain.json").exists()  # tuning writes nothing
    assert chosen["best"] in ({"freeze": "none"}, chosen["trials"][1]["options"])
    means = [t["validation_gain"]["mean"] for t in chosen["trials"]]
    assert chosen["index"] == means.index(max(means))
    # the positive control: the reported retraining does read the TestSet
    opened_files["paths"].clear()
    opened_files["on"] = True
    R.run_retrain(T, data, options=RetrainOptions(**HP, validation=0.25), progress=False)
    opened_files["on"] = False
    assert [p for p in opened_files["paths"] if p.startswith(test_set)]


def test_tuning_picks_the_best_mean_validation_gain_and_refuses_a_missing_split(case):
    from hudd_core.tuning import tune_on_validation

    gains = {0.1: [0.02, 0.00], 0.01: [0.05, 0.03], 0.001: [0.04, 0.04]}  # means .01 .04 .04

    def trial(options):
        runs = gains[options["lr"]]
        return {"hudd": {"validation_gain": {"mean": sum(runs) / 2, "runs": runs}}}

    got = tune_on_validation([{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.001}], trial=trial)
    assert got["best"] == {"lr": 0.01} and got["index"] == 1  # the tie: the earlier one
    with pytest.raises(ValueError, match="has no validation_gain for 'hudd'"):
        tune_on_validation([{"lr": 0.1}], trial=lambda o: {"hudd": {}})
    data, T = case
    with pytest.raises(ValueError, match="tuning reads no test set: it needs --validation"):
        R.run_retrain(T, data, options=RetrainOptions(**HP), tuning=True, progress=False)


def test_repeats_default_one_alone_five_with_baselines(case, monkeypatch):
    """The single repeats rule (options.resolve_repeats): run_retrain, the configuration
    and hudd run's flags all follow it; an explicit --repeats wins."""
    from hudd_core.config import load_config
    from hudd_core.options import REPEATS_WITH_BASELINES, resolve_repeats

    data, T = case
    trained = []
    monkeypatch.setattr(R, "train", lambda model, dataset, **kw: trained.append(kw["seed"]))
    assert R.run_retrain(T, data, options=RetrainOptions(**HP), progress=False)["repeats"] == 1
    assert trained == [0]  # one fine-tuning, seed 0
    trained.clear()
    result = R.run_retrain(T, data, options=RetrainOptions(**HP, baselines=["BL2"]),
                           progress=False)  # fmt: skip
    assert result["repeats"] == REPEATS_WITH_BASELINES == 5
    assert len(result["hudd"]["accuracy"]["runs"]) == len(result["BL2"]["accuracy"]["runs"]) == 5
    assert sorted(trained) == sorted([0, 1, 2, 3, 4] * 2)  # HUDD and BL2, seeds 0..4
    assert RetrainOptions(baselines=True, repeats=2).runs == 2
    assert resolve_repeats(None, False) == 1 and resolve_repeats(None, ["BL1"]) == 5
    assert resolve_repeats(3, True) == 3
    assert load_config(None, {})["repeats"] == 1
    assert load_config(None, {"baselines": []})["repeats"] == 5
    assert load_config(None, {"baselines": ["BL2"], "repeats": 2})["repeats"] == 2
