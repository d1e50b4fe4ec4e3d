"""The quality benchmark's case studies: the gauge scene, the real sets, the split file."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hudd_core.data import cases, gauges, real
from hudd_core.data.datasets import ImageSet
from hudd_core.data.generate import generate

CASES_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "cases.toml"
# textures: crops drawn per set; digits: all 1,797 dealt to the sets named (sizes ignored)
REAL_SIZES = {"textures": {"TrainingSet": 300, "TestSet": 200},
              "digits": {"TrainingSet": 1, "TestSet": 1}}  # fmt: skip


def digest(root: Path) -> str:
    """BLAKE2b over every file's relative path and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def metadata(folder: Path) -> list[dict]:
    with open(folder / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def pixels(folder: Path, rows: list[dict]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / r["image"])) for r in rows])


# --- the gauge scene -------------------------------------------------------------------


def test_gauge_classes_follow_the_needle_sector():
    p = {"needle": np.array([-130.0, -70.0, -60.0, -1.0, 1.0, 66.0, 70.0, 135.0])}
    got = [gauges.CLASSES[c] for c in gauges.classify(p)]
    assert got == ["low", "low", "normal", "normal", "high", "high", "critical", "critical"]


def test_gauge_planted_regions_differ_in_their_parameter():
    rng = np.random.default_rng(0)
    p = gauges.sample_params(4000, rng, gauges.TEST_RATES)
    planted = p["planted"]
    assert set(planted) == {"none", *gauges.PLANTED}
    assert (np.abs(p["tilt"][planted == "tilted"]) >= 25).all()
    assert (np.abs(p["tilt"][planted == "none"]) <= 6).all()
    assert (p["aspect"][planted == "oblique"] <= 0.6).all()
    assert (p["glare"][planted == "glare"] >= 0.75).all()
    assert (p["shadow"][planted == "shadow"] >= 0.6).all()
    # the causes overlap: some glare images also carry the shadow, or another cause
    glare = planted == "glare"
    second = (p["shadow"] >= 0.6) | (p["aspect"] <= 0.6) | (np.abs(p["tilt"]) >= 25)
    share = (glare & second).sum() / glare.sum()
    assert 0.1 < share < 0.4
    # every cause falls on every class
    labels = gauges.classify(p)
    for r in gauges.PLANTED:
        assert set(labels[planted == r]) == set(range(len(gauges.CLASSES)))


def test_gauge_rendering_shows_the_glare_and_the_shadow():
    rng = np.random.default_rng(1)
    p = gauges.sample_params(64, rng, {})
    plain = gauges.render(p, 32).astype(float)
    lit = gauges.render({**p, "glare": np.full(64, 0.9)}, 32).astype(float)
    dark = gauges.render({**p, "shadow": np.full(64, 0.7)}, 32).astype(float)
    assert (lit.mean(axis=(1, 2)) > plain.mean(axis=(1, 2)) + 5).all()
    assert (dark.mean(axis=(1, 2)) < plain.mean(axis=(1, 2)) - 5).all()


def test_gauge_sets_are_seeded_and_carry_the_planted_column(tmp_path):
    sizes = {"TrainingSet": 40, "TestSet": 60}
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        root = tmp_path / name
        generate(root, sizes=sizes, seed=seed, image_size=32, progress=False, simulator=gauges)
        runs[name] = digest(root)
    assert runs["a"] == runs["b"] != runs["c"]
    rows = metadata(tmp_path / "a" / "TestSet")
    assert list(rows[0]) == ["image", *gauges.PARAMS, "planted"]
    assert {r["planted"] for r in rows} <= {"none", *gauges.PLANTED}
    assert sum(r["planted"] != "none" for r in rows) > 10  # 40% of the test set
    names = [r["image"].split("/")[0] for r in rows]
    needles = np.array([float(r["needle"]) for r in rows])
    assert names == [gauges.CLASSES[c] for c in gauges.classify({"needle": needles})]


# --- the real sets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory):
    """Each real source written twice at seed 0 and once at seed 1."""
    base = tmp_path_factory.mktemp("real")
    out = {}
    for name in real.SOURCES:
        for run, seed in (("a", 0), ("b", 0), ("c", 1)):
            root = base / f"{name}-{run}" / "DataSets"
            counts = real.generate_real(root, name, sizes=REAL_SIZES[name], seed=seed)
            out[name, run] = (root, counts)
    return out


@pytest.mark.parametrize("name", list(real.SOURCES))
def test_real_sets_are_seeded(real_sets, name):
    (a, counts), (b, _), (c, _) = (real_sets[name, r] for r in "abc")
    assert digest(a) == digest(b) != digest(c)
    assert real.generate_real(a, name, sizes=REAL_SIZES[name], seed=0) == counts  # kept
    if name == "textures":
        assert counts == REAL_SIZES[name]
    else:  # every one of the 1,797 digits once, in training fewer (its regions thinned)
        assert counts["TestSet"] == round(real.DIGIT_SHARES["TestSet"] * 1797)
        assert 0.6 * real.DIGIT_SHARES["TrainingSet"] * 1797 < counts["TrainingSet"]
        assert counts["TrainingSet"] < real.DIGIT_SHARES["TrainingSet"] * 1797


@pytest.mark.parametrize("name", list(real.SOURCES))
def test_real_metadata_has_the_planted_column_and_the_measured_attributes(real_sets, name):
    root, _ = real_sets[name, "a"]
    source = real.SOURCES[name]
    folder = root / "TestSet"
    rows = metadata(folder)
    assert list(rows[0])[-1] == "planted"
    assert set(source.attributes) <= set(rows[0])
    causes = {r["planted"] for r in rows}
    assert causes == {"none", *source.regions, *source.effects}
    images = pixels(folder, rows)
    assert images.shape[1:] == (source.size, source.size)  # the native resolution
    assert [r["image"].split("/")[0] for r in rows] == [
        source.classes[int(float(r["label"]))] for r in rows
    ]
    # the attributes are measured from the images (the real one, before any effect)
    plain = np.array([r["planted"] not in source.effects for r in rows])
    measured = real.measure(images[plain])
    for attr in source.attributes:
        recorded = np.array([float(r[attr]) for r, p in zip(rows, plain, strict=True) if p])
        np.testing.assert_allclose(recorded, measured[attr], rtol=1e-5, atol=1e-6)
    # the effects are rendered: their parameters are set on their images only
    for effect in source.effects:
        on = np.array([r["planted"] == effect for r in rows])
        value = np.array([float(r[effect]) for r in rows])
        assert (value[on] > 0).all() and (value[~on & plain] == 0).all()


@pytest.mark.parametrize("name", list(real.SOURCES))
def test_under_sampled_regions_are_rare_in_training_and_natural_in_test(real_sets, name):
    root, _ = real_sets[name, "a"]
    source = real.SOURCES[name]
    thresholds = real._pool(name, 0)["thresholds"]
    share = {}
    for set_name in ("TrainingSet", "TestSet"):
        rows = metadata(root / set_name)
        plain = [r for r in rows if r["planted"] not in source.effects]
        values = real.measure(pixels(root / set_name, plain))  # from the PNGs
        labels = np.array([source.classes.index(r["image"].split("/")[0]) for r in plain])
        region = real.in_regions(source, values, labels, thresholds)
        share[set_name] = {r: float(np.mean(m)) for r, m in region.items()}
        names = np.array([p["planted"] for p in plain])
        first = next(iter(source.regions))
        for r, m in region.items():  # the planted column names them (the first one wins)
            assert (names[m] == r).all() if r == first else (names[m] != "none").all()
        assert (np.logical_or.reduce(list(region.values())) == (names != "none")).all()
    for r in source.regions:
        assert share["TrainingSet"][r] < 0.04, (r, share)
        assert share["TestSet"][r] > 0.09, (r, share)  # the natural share is 15%


def test_real_sets_load_as_datasets(real_sets):
    for name in real.SOURCES:
        root, counts = real_sets[name, "a"]
        data = ImageSet(root / "TestSet", classes=cases.classes(name))
        assert len(data) == counts["TestSet"]


def test_textures_sets_share_no_pixels():
    tiles = real._deal_tiles(512, 0)
    seen = [{tuple(t) for t in tiles[s]} for s in tiles]
    assert sum(map(len, seen)) == (512 // real.TILE) ** 2 and not (
        seen[0] & seen[1] or seen[0] & seen[2]
    )


# --- the split file --------------------------------------------------------------------


def test_the_split_file_lists_every_case_with_a_split():
    every = cases.read_cases(CASES_FILE)
    dev = cases.read_cases(CASES_FILE, "development")
    held = cases.read_cases(CASES_FILE, "held-out")
    assert dev and held and set(dev) | set(held) == set(every) and not set(dev) & set(held)
    assert all(c["split"] in cases.SPLITS for c in every.values())
    assert len(every) >= 10
    assert len({c["source"] for c in every.values()}) >= 5
    assert {c["arch"] for c in every.values()} == set(cases.ARCHS)
    assert len(held) >= 4
    held_sources = {c["source"] for c in held.values()}
    assert "gauges" in held_sources and held_sources & set(real.SOURCES)


def _write(tmp_path: Path, *entries: str) -> Path:
    path = tmp_path / "cases.toml"
    path.write_text("\n".join(f"[[case]]\n{e}" for e in entries))
    return path


CASE = 'source = "digits"\narch = "resnet"\nseed = 0\n'


def test_an_unknown_split_is_an_error(tmp_path):
    path = _write(tmp_path, f'name = "a"\n{CASE}split = "development"',
                  f'name = "b"\n{CASE}split = "heldout"')  # fmt: skip
    with pytest.raises(ValueError, match=r"case 2 \(b\): split 'heldout'"):
        cases.read_cases(path)
    with pytest.raises(ValueError, match="split must be one of"):
        cases.read_cases(CASES_FILE, "test")


@pytest.mark.parametrize(
    "entry, error",
    [
        (f'name = "b"\n{CASE}', r"missing \['split'\]"),
        (f'name = "b"\n{CASE}split = "held-out"\nsize = 3', r"unknown fields \['size'\]"),
        (f'name = "a"\n{CASE}split = "held-out"', "listed twice"),
        (f'name = "b"\n{CASE}split = "held-out"\ndata = "z"', "names no case"),
        ('name = "b"\nsource = "mnist"\narch = "resnet"\nseed = 0\nsplit = "held-out"',
         "source 'mnist'"),
    ],
)  # fmt: skip
def test_a_malformed_case_is_an_error(tmp_path, entry, error):
    path = _write(tmp_path, f'name = "a"\n{CASE}split = "development"', entry)
    with pytest.raises(ValueError, match=error):
        cases.read_cases(path)


def test_both_splits_must_have_a_case(tmp_path):
    path = _write(tmp_path, f'name = "a"\n{CASE}split = "development"')
    with pytest.raises(ValueError, match="no held-out case"):
        cases.read_cases(path)


@pytest.mark.parametrize("source", ["gauges", "textures"])
def test_generate_case_writes_the_datasets_layout(tmp_path, source):
    sizes = {"TrainingSet": 24, "TestSet": 16}
    root = cases.generate_case(tmp_path / "DataSets", source, 3, sizes, image_size=32)
    side = cases.native_size(source) or 32
    for set_name, n in sizes.items():
        data = ImageSet(root / set_name, classes=cases.classes(source))
        assert len(data) == n == len(metadata(root / set_name))
        assert data[0][0].shape[-2:] == (side, side)
    assert (root / "simulator.json").is_file()  # what hudd demo's training reads
