"""The eye simulator: determinism, labels and keypoints as functions of the parameters,
planted regions, the DataSets layout and the torch Dataset reading it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from hudd_core.data import simulator as sim
from hudd_core.data.datasets import ImageSet, read_metadata
from hudd_core.data.generate import generate


def _params(n: int = 1, **values) -> dict[str, np.ndarray]:
    """A clean, neutral parameter set (no noise, blur, roll or offset) with overrides."""
    base = {
        "gaze_h": 0.0,
        "gaze_v": 0.0,
        "openness": 0.9,
        "head_roll": 0.0,
        "illumination": 1.0,
        "pupil_size": 0.5,
        "offset_x": 0.0,
        "offset_y": 0.0,
        "blur": 0.0,
        "noise": 0.0,
        "glasses": 0.0,
        "skin_tone": 0.65,
        "iris_tone": 0.3,
    }
    base.update(values)
    return {k: np.full(n, v, dtype=np.float64) for k, v in base.items()}


@pytest.mark.parametrize(
    ("h", "v", "openness", "expected"),
    [
        (-30, 0, 0.9, "left"),
        (30, 5, 0.9, "right"),
        (0, 20, 0.9, "up"),
        (5, -20, 0.9, "down"),
        (5, 3, 0.9, "center"),
        (30, 0, 0.1, "closed"),
        (14.9, 9.9, 0.5, "center"),
        (15.1, 0, 0.5, "right"),
        (-30, -19, 0.5, "left"),
        (-30, -21, 0.5, "down"),
        (0, 0, sim.CLOSED_BELOW - 1e-6, "closed"),
        (0, 0, sim.CLOSED_BELOW, "center"),
    ],
)
def test_gaze_class_is_the_stated_function(h, v, openness, expected):
    p = _params(gaze_h=h, gaze_v=v, openness=openness)
    assert sim.CLASSES[sim.gaze_class(p)[0]] == expected


def test_gaze_margin_zero_on_boundaries():
    h = np.array([sim.CENTER_H, 0.0, 30.0, 20.0])
    v = np.array([0.0, sim.CENTER_V, 20.0, 5.0])
    m = sim.gaze_margin(h, v)
    assert np.allclose(m[:3], 0.0)
    assert m[3] > 0.3  # h/v = (1.33, 0.5): clearly "right"


def test_render_deterministic_for_a_seed():
    def run(seed):
        rng = np.random.default_rng(seed)
        p = sim.sample_params(40, rng, sim.TEST_RATES)
        return p, sim.render(p, 32, rng)

    (p1, a), (p2, b), (_, c) = run(5), run(5), run(6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)


def test_render_chunking_does_not_change_images():
    p = sim.sample_params(30, np.random.default_rng(1), sim.TEST_RATES)
    assert np.array_equal(sim.render(p, 32, chunk=7), sim.render(p, 32, chunk=256))


@pytest.mark.parametrize(
    ("h", "v", "roll", "dx", "dy"), [(0, 0, 0, 0, 0), (-30, 15, 0, 2, -1), (25, -12, 30, -3, 2)]
)
def test_iris_keypoint_lands_on_the_rendered_pupil(h, v, roll, dx, dy):
    # Wide-open eye, uniform skin: the pupil is the darkest blob; its centroid is the iris.
    p = _params(gaze_h=h, gaze_v=v, head_roll=roll, offset_x=dx, offset_y=dy, openness=1.0)
    img = sim.render(p, 64)[0].astype(float)
    dark = img < 20  # pupil 0.04 * 255 ~ 10, everything else far brighter
    ys, xs = np.nonzero(dark)
    kp = sim.keypoints(p, 64)[0]
    assert xs.size > 5
    assert abs(xs.mean() - kp[2, 0]) < 1.0 and abs(ys.mean() - kp[2, 1]) < 1.0


def test_corner_keypoints_follow_roll_and_offset():
    kp0 = sim.keypoints(_params(), 64)[0]
    assert kp0[0, 0] < kp0[2, 0] < kp0[1, 0]  # iris between the corners
    assert np.isclose(kp0[0, 1], kp0[1, 1])  # level without roll
    kp = sim.keypoints(_params(head_roll=90.0, offset_x=3.0), 64)[0]
    centre = np.array([31.5 + 3.0, 31.5])
    # A quarter turn maps the corner offset (dx, dy) to (-dy, dx).
    d0 = kp0[0] - 31.5
    assert np.allclose(kp[0] - centre, [-d0[1], d0[0]], atol=1e-9)
    # Keypoints scale with the image size.
    assert np.allclose(sim.keypoints(_params(), 128)[0] - 63.5, 2 * (kp0 - 31.5))


def test_corners_lie_on_the_lid_line_in_the_image():
    # Along the corner line the sclera is visible just inside each corner, skin just outside.
    p = _params(openness=1.0, gaze_h=0.0)
    img = sim.render(p, 64)[0].astype(float)
    kp = sim.keypoints(p, 64)[0]
    y = round(kp[0, 1]) + 1
    left, right = round(kp[0, 0]), round(kp[1, 0])
    assert img[y, left + 3] > img[y, left - 3] + 40  # sclera (0.92) vs skin (~0.6)
    assert img[y, right - 3] > img[y, right + 3] + 40


def test_planted_regions_are_where_their_parameter_says():
    rng = np.random.default_rng(0)
    p = sim.sample_params(4000, rng, sim.TEST_RATES)
    pl = p["planted"]
    assert set(np.unique(pl)) == {"none", *sim.PLANTED}
    assert np.all(p["illumination"][pl == "dark"] < 0.1)
    assert np.all(p["illumination"][pl != "dark"] >= 0.45)
    assert np.all(p["glasses"][pl == "glasses"] == 1) and np.all(p["glasses"][pl != "glasses"] == 0)
    assert np.all(np.abs(p["head_roll"][pl == "head_roll"]) >= 28)
    assert np.all(np.abs(p["head_roll"][pl != "head_roll"]) <= 12)
    margin = sim.gaze_margin(p["gaze_h"], p["gaze_v"])
    assert np.all(margin[pl == "borderline_gaze"] < sim.BORDER_MARGIN)
    assert np.all(margin[pl != "borderline_gaze"] >= sim.BORDER_MARGIN)
    near = np.abs(p["openness"] - sim.CLOSED_BELOW)
    assert np.all(near[pl == "half_closed"] <= 0.08) and np.all(near[pl != "half_closed"] > 0.1)


def test_training_rates_under_represent_planted_regions():
    train = sim.sample_params(20000, np.random.default_rng(0), sim.TRAIN_RATES)["planted"]
    test = sim.sample_params(20000, np.random.default_rng(0), sim.TEST_RATES)["planted"]
    for r in sim.PLANTED:
        assert 0 < np.mean(train == r) < 0.02 and np.mean(test == r) > 0.07


def test_rates_must_be_probabilities():
    with pytest.raises(ValueError, match="sum to <= 1"):
        sim.sample_params(3, np.random.default_rng(0), {"dark": 0.7, "glasses": 0.5})


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_generate_layout_metadata_and_determinism(tmp_path):
    sizes = {"TrainingSet": 40, "TestSet": 30}
    generate(tmp_path / "a", sizes=sizes, seed=3, image_size=32, progress=False)
    generate(tmp_path / "b", sizes=sizes, seed=3, image_size=32, progress=False)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _files(a) == _files(b)
    for f in _files(a):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    names, cols = read_metadata(a / "TestSet")
    assert len(names) == 30 and set(sim.PARAMS) <= set(cols) and "planted" in cols
    # Every image sits in the class folder its parameters say.
    params = {k: cols[k] for k in sim.PARAMS}
    expected = [sim.CLASSES[c] for c in sim.gaze_class(params)]
    assert [n.split("/")[0] for n in names] == expected
    assert all((a / "TestSet" / n).is_file() for n in names)


def test_generate_keeps_a_complete_run_and_refuses_foreign_folders(tmp_path):
    root = tmp_path / "DataSets"
    generate(root, sizes={"TestSet": 5}, image_size=32, progress=False)
    png = next((root / "TestSet").rglob("*.png"))
    stamp = png.stat().st_mtime_ns
    generate(root, sizes={"TestSet": 5}, image_size=32, progress=False)
    assert png.stat().st_mtime_ns == stamp  # same configuration: nothing rewritten
    generate(root, sizes={"TestSet": 7}, image_size=32, progress=False)
    assert len(read_metadata(root / "TestSet")[0]) == 7
    foreign = tmp_path / "mine"
    (foreign / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="not written by the simulator"):
        generate(foreign, sizes={"TestSet": 5}, progress=False)


def test_keypoint_sets_and_dataset(tmp_path):
    generate(
        tmp_path, sizes={"TestSet": 6}, task="keypoints", seed=2, image_size=32, progress=False
    )
    with open(tmp_path / "TestSet" / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image"] + [f"{a}{k}" for k in range(5) for a in "xy"]
    _names, cols = read_metadata(tmp_path / "TestSet")
    params = {k: cols[k] for k in sim.PARAMS}
    kp = sim.keypoints(params, 32).reshape(6, -1)
    assert np.allclose(np.array([r[1:] for r in rows[1:]], float), kp, atol=1e-4)
    ds = ImageSet(tmp_path / "TestSet")
    assert ds.task == "keypoints" and len(ds) == 6
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and y.shape == (10,)
    big = ImageSet(tmp_path / "TestSet", image_size=64)
    assert big[0][0].shape == (1, 64, 64) and torch.allclose(big[0][1], 2 * y)


def test_dataset_classes_channels_normalisation(tmp_path):
    generate(tmp_path, sizes={"TestSet": 12}, image_size=32, progress=False)
    ds = ImageSet(tmp_path / "TestSet", classes=sim.CLASSES)
    x, y = ds[3]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert ds.names[3].split("/")[0] == sim.CLASSES[int(y)]
    assert ds.ids[3] == "TestSet/" + ds.names[3]
    rgb = ImageSet(tmp_path / "TestSet", channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    x3 = rgb[3][0]
    assert x3.shape == (3, 32, 32) and torch.allclose(x3[0], (x[0] - 0.5) / 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="not among"):
        ImageSet(tmp_path / "TestSet", classes=["center", "left"])


def test_corrupt_image_error_names_the_file(tmp_path):
    generate(tmp_path, sizes={"TestSet": 4}, image_size=32, progress=False)
    ds = ImageSet(tmp_path / "TestSet")
    bad = ds.folder / ds.names[1]
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=str(bad.name)):
        ds[1]
