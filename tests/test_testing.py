"""The TestModule: result files' format, Correct/Wrong decisions, keypoint thresholding,
per-planted-region accuracy, and the ``hudd test`` command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from hudd_core.cli import main
from hudd_core.data import simulator as sim
from hudd_core.data.datasets import ImageSet
from hudd_core.data.generate import generate
from hudd_core.models.checkpoint import save_checkpoint
from hudd_core.testing import (
    accuracy_by_planted,
    classifier_rows,
    keypoint_errors,
    keypoint_rows,
    run_test,
)


class Oracle(nn.Module):
    """Answers from a lookup of the true labels keyed by the image's pixel sum; answers
    wrong on purpose for images listed in ``wrong``."""

    def __init__(self, table: dict[float, int], wrong: set[float], n_out: int) -> None:
        super().__init__()
        self.table, self.wrong, self.n_out = table, wrong, n_out
        self.dummy = nn.Linear(1, 1)  # a parameter, so .to() works as for real models

    def forward(self, x):
        out = torch.zeros(len(x), self.n_out)
        for i, s in enumerate(x.sum(dim=(1, 2, 3)).tolist()):
            key = round(s, 2)
            c = self.table[key]
            out[i, (c + 1) % self.n_out if key in self.wrong else c] = 5.0
        return out


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "DataSets"
    generate(root, sizes={"TrainingSet": 30, "TestSet": 40}, image_size=32, seed=1, progress=False)
    return root


META = {
    "model": "alexnet",
    "kwargs": {},
    "task": "classifier",
    "classes": sim.CLASSES,
    "in_channels": 1,
    "input_size": 32,
}


def _oracle(root, wrong_every: int) -> tuple[Oracle, set[str]]:
    table, wrong, wrong_ids = {}, set(), set()
    for name in ("TrainingSet", "TestSet"):
        ds = ImageSet(root / name)
        for i in range(len(ds)):
            key = round(float(ds[i][0].sum()), 2)
            table[key] = int(ds.targets[i])
            if i % wrong_every == 0:
                wrong.add(key)
                wrong_ids.add(ds.ids[i])
    return Oracle(table, wrong, len(sim.CLASSES)), wrong_ids


def test_result_files_format_and_decisions(data, tmp_path):
    model, wrong_ids = _oracle(data, wrong_every=4)
    work = tmp_path / "T"
    summary = run_test(model, data, work, META, batch_size=7, device="cpu", progress=False)
    for name, file in (("TrainingSet", "trainResult.csv"), ("TestSet", "testResult.csv")):
        with open(work / file, newline="") as fh:
            rows = list(csv.DictReader(fh))
        header = list(rows[0])
        assert header[:4] == ["image", "result", "expected", "predicted"]
        assert header[4:] == [f"score_{c}" for c in sim.CLASSES]
        assert {r["image"] for r in rows} == set(ImageSet(data / name).ids)
        for r in rows:
            assert r["image"].startswith(name + "/")
            assert r["expected"] == r["image"].split("/")[1]  # the class folder
            assert (r["result"] == "Wrong") == (r["image"] in wrong_ids)
            assert (r["result"] == "Correct") == (r["expected"] == r["predicted"])
            scores = np.array([float(r[f"score_{c}"]) for c in sim.CLASSES])
            assert np.isclose(scores.sum(), 1, atol=1e-5)
            assert sim.CLASSES[int(scores.argmax())] == r["predicted"]
        wrong = sum(r["result"] == "Wrong" for r in rows)
        assert summary[name]["wrong"] == wrong and summary[name]["n"] == len(rows)
        assert np.isclose(summary[name]["accuracy"], 1 - wrong / len(rows))
    assert not list(work.glob("*.tmp"))  # atomic writes leave no temporaries


def test_accuracy_by_planted(data, tmp_path):
    model, wrong_ids = _oracle(data, wrong_every=3)
    run_test(model, data, tmp_path, META, sets=("TestSet",), device="cpu", progress=False)
    by = accuracy_by_planted(data, "TestSet", tmp_path / "testResult.csv")
    with open(data / "TestSet" / "metadata.csv") as fh:
        meta = list(csv.DictReader(fh))
    for region, s in by.items():
        members = [f"TestSet/{m['image']}" for m in meta if m["planted"] == region]
        assert s["n"] == len(members)
        assert np.isclose(s["accuracy"], np.mean([i not in wrong_ids for i in members]))


def test_classifier_rows_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
    header, rows = classifier_rows(["a.png", "b.png"], logits, np.array([0, 0]), ["x", "y"])
    assert header == ["image", "result", "expected", "predicted", "score_x", "score_y"]
    assert rows[0][:4] == ["a.png", "Correct", "x", "x"]
    assert rows[1][:4] == ["b.png", "Wrong", "x", "y"]
    assert np.isclose(float(rows[0][4]), 1 / (1 + np.exp(-2)), atol=1e-6)


def test_keypoint_thresholding():
    target = np.zeros((3, 4))
    # Image 0: errors 3 and 4 -> mean 3.5 (Correct at 4 px); image 1: 5 and 4 -> mean 4.5.
    pred = np.array([[3.0, 0, 0, 4.0], [3.0, 4.0, 4.0, 0], [0, 0, 0, 0]])
    err = keypoint_errors(pred, target)
    assert np.allclose(err, [[3, 4], [5, 4], [0, 0]])
    header, rows = keypoint_rows(["a", "b", "c"], pred, target, threshold=4.0)
    assert header == ["image", "result", "mean_error", "max_error", "worst_keypoint"]
    assert [r[1] for r in rows] == ["Correct", "Wrong", "Correct"]
    assert rows[1][2:] == ["4.5", "5", "0"] and rows[0][4] == "1"
    _, strict = keypoint_rows(["a", "b", "c"], pred, target, threshold=3.0)
    assert [r[1] for r in strict] == ["Wrong", "Wrong", "Correct"]
    with pytest.raises(ValueError, match="outputs"):
        keypoint_rows(["a"], np.zeros((1, 2)), np.zeros((1, 4)), 4.0)


class Shift(nn.Module):
    """A fake keypoint regressor: outputs fixed coordinates."""

    def __init__(self, coords: torch.Tensor) -> None:
        super().__init__()
        self.coords = nn.Parameter(coords, requires_grad=False)

    def forward(self, x):
        return self.coords.expand(len(x), -1)


def test_run_test_keypoints(tmp_path):
    root = tmp_path / "DataSets"
    generate(root, sizes={"TestSet": 10}, task="keypoints", image_size=32, progress=False)
    ds = ImageSet(root / "TestSet")
    first = ds[0][1]
    meta = {**META, "task": "keypoints", "classes": []}
    summary = run_test(
        Shift(first.clone()),
        root,
        tmp_path / "T",
        meta,
        sets=("TestSet",),
        threshold=2.5,
        device="cpu",
        progress=False,
    )
    with open(tmp_path / "T" / "testResult.csv") as fh:
        rows = list(csv.DictReader(fh))
    expected = keypoint_errors(first.numpy()[None].repeat(10, 0), ds.targets).mean(axis=1)
    assert rows[0]["result"] == "Correct" and float(rows[0]["mean_error"]) == 0
    assert [r["result"] == "Wrong" for r in rows] == list(expected > 2.5)
    assert summary["TestSet"]["wrong"] == int((expected > 2.5).sum())


def test_cli_test_with_checkpoint(data, tmp_path, capsys):
    from hudd_core.models import alexnet

    torch.manual_seed(0)
    pt = save_checkpoint(
        alexnet(6, 1, 32),
        tmp_path / "DNNModels",
        "m",
        {**META, "kwargs": {"num_classes": 6, "in_channels": 1, "input_size": 32}},
    )
    work = tmp_path / "T"
    code = main(
        [
            "test",
            "--weights",
            str(pt),
            "--data",
            str(data),
            "--workdir",
            str(work),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "TestSet: 40 images" in out and "planted region" in out
    assert (work / "trainResult.csv").is_file() and (work / "testResult.csv").is_file()
    # Without a sidecar, --model builds the architecture from the data's classes.
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(pt, weights_only=True), plain)
    assert (
        main(
            [
                "test",
                "--model",
                "alexnet",
                "--weights",
                str(plain),
                "--data",
                str(data),
                "--workdir",
                str(tmp_path / "T2"),
                "--quiet",
            ]
        )
        == 0
    )
    a = (work / "testResult.csv").read_text()
    assert a == (tmp_path / "T2" / "testResult.csv").read_text()


def test_demo_tiny_end_to_end_and_resume(tmp_path, capsys):
    from hudd_core.demo import run_demo

    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), "--size", "tiny", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "TestSet accuracy" in out and "per planted region" in out and "timings:" in out
    pt = work / "DNNModels" / "demo_alexnet.pt"
    meta = json.loads(pt.with_suffix(".json").read_text())
    assert meta["classes"] == sim.CLASSES and meta["input_size"] == 32
    with open(work / "testResult.csv") as fh:
        assert sum(1 for _ in fh) == 1 + 32
    stamp = pt.stat().st_mtime_ns
    result = run_demo(work, "tiny", progress=False)  # complete: data and model are kept
    assert pt.stat().st_mtime_ns == stamp
    assert set(result["planted"]) <= {"none", *sim.PLANTED}
    assert sum(s["n"] for s in result["planted"].values()) == 32
    run = json.loads((work / "run.json").read_text())
    assert {"generate", "train", "test"} <= set(run["steps"])
    result = run_demo(work, "tiny", seed=1, progress=False)  # another seed: regenerated
    assert pt.stat().st_mtime_ns != stamp


def test_interrupted_test_resumes_after_the_last_saved_batch(model_workdir):
    import numpy as np
    import torch

    from hudd_core.data.datasets import ImageSet
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_core.testing import predict_readable, run_test

    w = model_workdir({"TestSet": 40})
    model, meta = load_checkpoint(w.pt)
    ds = ImageSet(w.data / "TestSet", classes=meta["classes"])
    calls, resuming = [], False

    class Interrupted(torch.nn.Module):  # Ctrl-C while the 5th batch runs
        def forward(self, x):
            calls.append(len(x))
            if len(calls) == 5 and not resuming:
                raise KeyboardInterrupt
            return model(x)

    partial = w.T / ".partial" / "test_TestSet.npz"
    with pytest.raises(KeyboardInterrupt):
        predict_readable(Interrupted(), ds, batch_size=4, resume=partial, save_every=2,
                         progress=False)  # fmt: skip
    with np.load(partial) as z:
        assert int(z["done"]) == 16  # batches 1-4 saved
    calls.clear()
    resuming = True
    resumed = predict_readable(Interrupted(), ds, batch_size=4, resume=partial, progress=False)
    assert len(calls) == 6  # only the 24 images after the saved ones
    once = predict_readable(model, ds, batch_size=4, progress=False)
    for a, b in zip(resumed[:3], once[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    run_test(model, w.data, w.T, meta, sets=("TestSet",), progress=False)
    assert not partial.exists()  # a complete set leaves no resume file
