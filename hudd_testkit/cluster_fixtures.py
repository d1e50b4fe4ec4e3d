"""Synthetic inputs of the ClusterModule: heatmap layers with planted cluster structure,
test-set images and their metadata (shared by the tests and the benchmark)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image


def planted_layer(rng, sizes: list[int], dim: int, spread: float, noise: float = 1.0):
    """Rows drawn around one random centre per group (group g gets sizes[g] rows), with
    per-row positive scales as relevance magnitudes vary. Returns (X float32, groups)."""
    groups = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(0.0, spread, (len(sizes), dim))
    X = centres[groups] + rng.normal(0.0, noise, (len(groups), dim))
    return X.astype(np.float32), groups


def make_workdir(root: Path, rng, sizes=(12, 9, 7, 5), side: int = 16) -> dict:
    """Writes ``root/T/Heatmaps`` (layers input, conv, fc; ``fc`` has the clearest
    structure), ``root/DataSets/TestSet/<class>/*.png`` and its ``metadata.csv`` (param
    ``angle`` set by the group, ``light`` random, ``planted`` = group name for groups
    0 and 1). Returns paths and the true groups."""
    T, data = root / "T", root / "DataSets"
    hm = T / "Heatmaps"
    hm.mkdir(parents=True)
    (data / "TestSet").mkdir(parents=True)
    sizes = list(sizes)
    n = sum(sizes)
    specs = {"input": ([1, side, side], 0.6), "conv": ([4, 4, 4], 1.5), "fc": ([32], 6.0)}
    groups = None
    layers = []
    for name, (shape, spread) in specs.items():
        X, groups = planted_layer(rng, sizes, int(np.prod(shape)), spread)
        np.save(hm / f"{name}.npy", X)
        layers.append({"name": name, "shape": shape, "file": f"{name}.npy"})
    (hm / "layers.json").write_text(
        json.dumps({"layers": layers, "composite": "hudd", "complete": True})
    )
    images, meta = [], []
    for i, g in enumerate(groups):
        cls = "open" if i % 2 else "closed"
        rel = f"{cls}/{i:05d}.png"
        (data / "TestSet" / cls).mkdir(exist_ok=True)
        pixels = (rng.random((side, side)) * 60 + 40 * g).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(data / "TestSet" / rel)
        images.append(f"TestSet/{rel}")
        planted = f"region{g}" if g < 2 else "none"
        meta.append([rel, 10.0 * g + rng.normal(0, 0.5), rng.uniform(0, 1), planted])
    with open(hm / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "image"])
        w.writerows(enumerate(images))
    with open(data / "TestSet" / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "angle", "light", "planted"])
        w.writerows(meta)
    return {"T": T, "data": data, "images": images, "groups": groups, "n": n}
