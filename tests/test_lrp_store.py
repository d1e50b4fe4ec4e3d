"""Heatmap store (CONTRACTS.md format, resumable per batch), the heatmaps step and
``hudd heatmaps``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from hudd_core.heatmaps import compute_heatmaps
from hudd_core.lrp import LRP
from hudd_core.models import alexnet
from hudd_core.store import HeatmapStore


def _batches(rng, n, shapes, step):
    full = {k: rng.standard_normal((n, *s)).astype(np.float32) for k, s in shapes.items()}
    return full, [{k: v[a : a + step] for k, v in full.items()} for a in range(0, n, step)]


def test_store_resumes_after_an_interruption(tmp_path, rng):
    shapes = {"input": (1, 4, 4), "fc": (3,)}
    images = [f"TestSet/c/{i}.png" for i in range(10)]
    full, batches = _batches(rng, 10, shapes, 4)
    s = HeatmapStore.open(tmp_path, images, shapes, composite="hudd")
    s.write(batches[0])
    s.write(batches[1])
    del s  # interrupted: no finish()
    meta = json.loads((tmp_path / "layers.json").read_text())
    assert meta["complete"] is False
    s = HeatmapStore.open(tmp_path, images, shapes, composite="hudd")
    assert s.done == 8
    s.write(batches[2])
    s.finish()
    meta = json.loads((tmp_path / "layers.json").read_text())
    assert meta["complete"] is True and meta["composite"] == "hudd"
    assert [(d["name"], d["shape"], d["file"]) for d in meta["layers"]] == [
        ("input", [1, 4, 4], "input.npy"),
        ("fc", [3], "fc.npy"),
    ]
    for k in shapes:
        got = np.load(tmp_path / f"{k}.npy", mmap_mode="r")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, full[k].reshape(10, -1))
    with open(tmp_path / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["row"]), r["image"]) for r in rows] == list(enumerate(images))


def test_store_restarts_when_the_inputs_change(tmp_path, rng):
    shapes = {"fc": (3,)}
    images = ["a", "b", "c"]
    _, batches = _batches(rng, 3, shapes, 2)
    s = HeatmapStore.open(tmp_path, images, shapes, composite="hudd")
    s.write(batches[0])
    assert HeatmapStore.open(tmp_path, images, shapes, composite="hudd").done == 2
    assert HeatmapStore.open(tmp_path, images, shapes, composite="epsilon-plus").done == 0
    assert HeatmapStore.open(tmp_path, ["a", "b", "d"], shapes, composite="hudd").done == 0
    s = HeatmapStore.open(tmp_path, images, shapes, composite="hudd", float16=True)
    assert s.done == 0
    s.write(batches[0])
    s.write(batches[1])
    s.finish()
    assert np.load(tmp_path / "fc.npy").dtype == np.float16


class _Failing(Dataset):
    """Raises at item ``fail_at`` (an interrupted run), else serves ``base``."""

    def __init__(self, base, fail_at=None):
        self.base, self.fail_at = base, fail_at

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise KeyboardInterrupt
        return self.base[i]


def test_heatmaps_step_resumes_and_matches_one_pass(tmp_path):
    torch.manual_seed(0)
    model = alexnet(3, 1, 32).eval()
    ds = TensorDataset(torch.rand(11, 1, 32, 32), torch.zeros(11, dtype=torch.long))
    ids = [f"TestSet/x/{i}.png" for i in range(11)]
    with pytest.raises(KeyboardInterrupt):
        compute_heatmaps(model, _Failing(ds, 7), ids, tmp_path / "A", batch_size=3,
                         progress=False)  # fmt: skip
    assert json.loads((tmp_path / "A" / "progress.json").read_text())["rows"] == 6
    s = compute_heatmaps(model, ds, ids, tmp_path / "A", batch_size=3, progress=False)
    assert s["resumed_from"] == 6 and s["rows"] == 11
    compute_heatmaps(model, ds, ids, tmp_path / "B", batch_size=4, progress=False)
    expected = LRP(model)(ds.tensors[0])
    for name, ref in expected.items():
        a = np.load(tmp_path / "A" / f"{name}.npy")
        b = np.load(tmp_path / "B" / f"{name}.npy")
        np.testing.assert_allclose(a, ref.reshape(11, -1).numpy(), rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)


def test_cli_heatmaps_over_wrong_images(tmp_path, capsys):
    from hudd_core.cli import main
    from hudd_core.models.checkpoint import save_checkpoint
    from hudd_core.store import read_heatmap_index

    rng = np.random.default_rng(0)
    data, T = tmp_path / "DataSets", tmp_path / "T"
    ids = []
    for c in ("closed", "open"):
        (data / "TestSet" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                data / "TestSet" / c / f"{i}.png"
            )
            ids.append(f"TestSet/{c}/{i}.png")
    torch.manual_seed(0)
    kwargs = {"num_classes": 2, "in_channels": 1, "input_size": 32}
    meta = {"model": "alexnet", "kwargs": kwargs, "task": "classifier",
            "classes": ["closed", "open"], "in_channels": 1, "input_size": 32}  # fmt: skip
    pt = save_checkpoint(alexnet(**kwargs), T / "DNNModels", "m", meta)
    wrong = [ids[1], ids[4], ids[5]]
    with open(T / "testResult.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "result", "expected", "predicted"])
        for i in ids:
            w.writerow([i, "Wrong" if i in wrong else "Correct", "closed", "open"])
    args = ["heatmaps", "--weights", str(pt), "--data", str(data), "--workdir", str(T)]
    assert main([*args, "--list-layers"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "input\t[1, 32, 32]" and "features.0\t[32, 32, 32]" in listed
    assert main([*args, "--quiet", "--layers", "input", "features.3", "--float16"]) == 0
    layers, images = read_heatmap_index(T)
    assert images == wrong
    assert [d["name"] for d in layers] == ["input", "features.3"]
    X = np.load(T / "Heatmaps" / "features.3.npy", mmap_mode="r")
    assert X.shape == (3, 64 * 16 * 16) and X.dtype == np.float16
    assert main([*args, "--quiet", "--layers", "features.3", "--activations"]) == 0
    act_layers, act_images = read_heatmap_index(T, folder="Activations")
    assert act_images == wrong and [d["name"] for d in act_layers] == ["features.3"]
    assert main([*args, "--quiet", "--improvement", "--activations"]) == 2
    assert "--activations: of the Wrong test images only" in capsys.readouterr().err
    (data / "ImprovementSet" / "sub").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
            data / "ImprovementSet" / "sub" / f"{i}.png"
        )
    assert main([*args, "--quiet", "--improvement", "--layers", "classifier.2"]) == 0
    meta = json.loads((T / "ImprovementHeatmaps" / "layers.json").read_text())
    assert meta["complete"] and meta["rows"] == 4
    assert np.load(T / "ImprovementHeatmaps" / "classifier.2.npy").shape == (4, 256)
    with pytest.raises(SystemExit):  # argparse rejects an unknown composite
        main([*args, "--composite", "nope"])
