"""Features of the clustering methods beyond the heatmaps (issue 12): the layers'
activations (``T/Activations``, ``act-*``), relevance × activation (``rxa-*``) and a
user-given feature extractor (``--feature-model``, ``model-*``), against plain-torch
oracles (forward hooks, hand-computed pooling) and through ``run_cluster``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from hudd_core.cluster import methods as cm
from hudd_core.cluster import run_cluster
from hudd_core.cluster.labels import NOISE
from hudd_core.heatmaps import compute_heatmaps
from hudd_core.lrp import LRP
from hudd_core.models import alexnet
from hudd_testkit.cluster_fixtures import make_workdir, planted_layer


def _hooked_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict:
    """Each named module's output on ``x``, by forward hooks on the unmodified model
    (copied: an in-place ReLU after a convolution overwrites its output)."""
    seen, modules = {}, dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out.clone()))
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def test_activations_are_the_layers_outputs(tmp_path):
    torch.manual_seed(0)
    model = alexnet(3, 1, 32).eval()
    x = torch.rand(7, 1, 32, 32)
    lrp = LRP(model)
    acts = lrp.activations(x)
    modules = [n for n in acts if n != "input"]
    ref = _hooked_outputs(model, x, modules)
    for name in modules:
        torch.testing.assert_close(acts[name], ref[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acts["input"], x)
    # stored as the heatmaps are (same format, resumable), batch by batch
    ids = [f"TestSet/x/{i}.png" for i in range(7)]
    ds = TensorDataset(x, torch.zeros(7, dtype=torch.long))
    s = compute_heatmaps(model, ds, ids, tmp_path / "A", batch_size=3, progress=False,
                         activations=True)  # fmt: skip
    assert s["rows"] == 7
    meta = json.loads((tmp_path / "A" / "layers.json").read_text())
    assert meta["composite"] == "activations/hudd" and meta["complete"]
    for name in modules:
        stored = np.load(tmp_path / "A" / f"{name}.npy")
        np.testing.assert_allclose(stored, ref[name].reshape(7, -1).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="in this process"):
        compute_heatmaps(model, ds, ids, tmp_path / "B", activations=True, progress=False,
                         source=lambda *a, **k: iter(()))  # fmt: skip


def _write_layers(folder, names_shapes: dict, arrays: dict, images: list[str]) -> None:
    """A finished heatmap-format folder (layers.json, index.csv, one .npy per layer)."""
    folder.mkdir(parents=True, exist_ok=True)
    layers = [{"name": n, "shape": s, "file": f"{n}.npy"} for n, s in names_shapes.items()]
    for n, X in arrays.items():
        np.save(folder / f"{n}.npy", X)
    (folder / "layers.json").write_text(json.dumps({"layers": layers, "composite": "x",
                                                    "complete": True}))  # fmt: skip
    with open(folder / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([["row", "image"], *enumerate(images)])


@pytest.fixture
def act_case(tmp_path):
    """A work folder whose heatmaps at ``conv`` carry no group structure but whose
    activations there do (the groups of make_workdir's images)."""
    sizes = (14, 12, 10)
    case = make_workdir(tmp_path, np.random.default_rng(4), sizes=sizes)
    T, n = case["T"], case["n"]
    rng = np.random.default_rng(1)
    flat = np.abs(rng.normal(1.0, 0.05, (n, 64))).astype(np.float32)  # one blob
    np.save(T / "Heatmaps" / "conv.npy", flat)
    groups, _ = planted_layer(np.random.default_rng(2), list(sizes), 64, spread=6.0)
    acts = {"input": np.load(T / "Heatmaps" / "input.npy"), "conv": groups,
            "fc": np.load(T / "Heatmaps" / "fc.npy")}  # fmt: skip
    shapes = {"input": [1, 16, 16], "conv": [4, 4, 4], "fc": [32]}
    _write_layers(T / "Activations", shapes, acts, case["images"])
    case["activations"] = groups
    return case


def _partition(labels) -> set:
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in set(labels.tolist())}


@pytest.mark.parametrize("method", ["act-hdbscan", "rxa-hdbscan"])
def test_activation_methods_cluster_the_activations(act_case, method):
    T = act_case["T"]
    s = run_cluster(T, act_case["data"], method=method, gifs=False, progress=False,
                    attach="none")  # fmt: skip
    labels = np.array([int(r["cluster"]) for r in csv.DictReader(open(T / "clusters.csv"))])
    assert s["best_layer"] == s["features_layer"] == "conv"
    # the oracle: the same method on the features computed here by hand
    X = act_case["activations"].astype(np.float64)
    if method == "rxa-hdbscan":
        X = X * np.load(T / "Heatmaps" / "conv.npy").astype(np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    expected = cm.cluster_features({"conv": X}, cm.METHODS["hdbscan"], seed=0)
    assert _partition(labels) == _partition(expected.labels)
    truth = np.repeat([1, 2, 3], (14, 12, 10))
    kept = labels != NOISE
    assert _partition(labels[kept]) == _partition(truth[kept]) and kept.mean() > 0.8
    # the heatmaps alone (one blob at conv) do not show these groups
    heat = run_cluster(T, act_case["data"], method="hdbscan", layers=["conv"], gifs=False,
                       progress=False)  # fmt: skip
    assert heat["n_clusters"] < 3


def test_activation_methods_name_the_missing_or_stale_activations(act_case):
    T = act_case["T"]
    images = act_case["images"]
    with open(T / "Activations" / "index.csv", "w", newline="") as f:  # two rows swapped
        csv.writer(f).writerows([["row", "image"], *enumerate([images[1], images[0], *images[2:]])])
    with pytest.raises(ValueError, match=r"other images.*heatmaps --activations"):
        run_cluster(T, act_case["data"], method="act-hdbscan", gifs=False, progress=False)
    for f in (T / "Activations").iterdir():
        f.unlink()
    (T / "Activations").rmdir()
    with pytest.raises(ValueError, match="heatmaps --activations"):
        run_cluster(T, act_case["data"], method="rxa-hdbscan", gifs=False, progress=False)
    assert not (T / "clusters.csv").exists()  # nothing written before the error


EXTRACTOR = '''
import torch
from torch import nn


def quadrants():
    """Each quadrant's mean of a 1x1 convolution of the image."""
    return nn.Sequential(nn.Conv2d(1, 1, 1), nn.AdaptiveAvgPool2d(2), nn.Flatten())
'''


def test_feature_model_clusters_its_features_and_assign_gets_a_heatmap_layer(tmp_path):
    sizes = (12, 9, 7, 5)
    case = make_workdir(tmp_path, np.random.default_rng(4), sizes=sizes)
    T, data = case["T"], case["data"]
    (tmp_path / "extractor.py").write_text(EXTRACTOR)
    spec = f"{tmp_path / 'extractor.py'}:quadrants"
    weights = tmp_path / "w.pt"
    torch.save({"0.weight": torch.full((1, 1, 1, 1), 2.0), "0.bias": torch.zeros(1)}, weights)
    with pytest.raises(ValueError, match="--feature-model"):
        run_cluster(T, data, method="model-hdbscan", gifs=False, progress=False)
    s = run_cluster(T, data, method="model-hdbscan", feature_model=spec,
                    feature_weights=weights, gifs=False, progress=False)  # fmt: skip
    assert s["features_layer"] == cm.FEATURE_LAYER and s["best_layer"] in ("conv", "fc")
    assert (
        s["feature_model"]["spec"] == spec and s["layers"][s["best_layer"]]["k"] == s["n_clusters"]
    )
    labels = np.array([int(r["cluster"]) for r in csv.DictReader(open(T / "clusters.csv"))])
    # the oracle: 2 × each quadrant's mean pixel, computed from the files by hand
    F = []
    for img in case["images"]:
        a = np.asarray(Image.open(data / img), dtype=np.float64) / 255.0
        F.append([2 * a[r : r + 8, c : c + 8].mean() for r in (0, 8) for c in (0, 8)])
    from hudd_core.feature_model import extract_features, load_feature_model

    got = extract_features(load_feature_model(spec, weights), data, case["images"], progress=False)
    np.testing.assert_allclose(got, np.array(F), rtol=1e-5, atol=1e-6)
    # without weights the initial ones are drawn from the seed: the same call, the same
    untrained = [extract_features(load_feature_model(spec, seed=s), data, case["images"],
                                  progress=False) for s in (0, 0, 1)]  # fmt: skip
    np.testing.assert_array_equal(untrained[0], untrained[1])
    assert not np.array_equal(untrained[0], untrained[2])
    kept = labels != NOISE
    truth = case["groups"]
    assert _partition(labels[kept]) == _partition(truth[kept]) and kept.mean() > 0.8
    from hudd_core.cli import main

    args = ["cluster", "--workdir", str(T), "--data", str(data), "--quiet", "--no-gifs",
            "--no-report", "--method", "model-dbscan", "--feature-model", spec,
            "--feature-weights", str(weights), "--feature-size", "16"]  # fmt: skip
    assert main(args) == 0
    on_disk = json.loads((T / "ClusterAnalysis" / "summary.json").read_text())
    assert on_disk["method"] == "model-dbscan" and on_disk["feature_model"]["spec"] == spec
    with pytest.raises(ValueError, match="--feature-layer 'nope'"):
        run_cluster(T, data, method="model-dbscan", feature_model=spec, feature_layer="nope",
                    gifs=False, progress=False)  # fmt: skip


def test_assign_layer_is_where_the_clusters_separate_best(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2, 3], 10)
    sep, _ = planted_layer(rng, [10, 10, 10], 16, spread=8.0)
    blob = rng.normal(0, 1, (30, 16)).astype(np.float32)
    d = tmp_path
    np.save(d / "a.npy", blob)
    np.save(d / "b.npy", sep)
    files = {"a": d / "a.npy", "b": d / "b.npy"}
    assert cm.assign_layer(files, labels, {"a": [1, 4, 4], "b": [1, 4, 4]}) == "b"


def test_umap_methods_are_seeded_and_find_obvious_groups():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(0, 0.3, (25, 30)) + 5 * np.eye(30)[i] for i in range(4)])
    truth = np.repeat([1, 2, 3, 4], 25)
    for name in ("umap-hdbscan", "umap-dbscan"):
        a = cm.cluster_features({"conv": X}, cm.METHODS[name], seed=0)
        b = cm.cluster_features({"conv": X.copy()}, cm.METHODS[name], seed=0)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.reduced, b.reduced)
        assert a.reduced.shape == (100, 5)
        kept = a.labels != NOISE
        assert _partition(a.labels[kept]) == _partition(truth[kept]) and kept.mean() > 0.9
