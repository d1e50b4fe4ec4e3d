"""Case studies on real images that ship inside installed packages (nothing is downloaded),
written as DataSets like the scenes (docs/CONTRACTS.md), at each set's native resolution.

Two sources (:data:`SOURCES`):

- ``digits``: scikit-learn's 1,797 handwritten digits (``sklearn.datasets.load_digits``,
  8x8, 17 grey levels scaled to 0..255), ten classes;
- ``textures``: 16x16 crops of scikit-image's bundled 512x512 photographs of ``brick``,
  ``grass``, ``gravel`` and the ``moon``'s surface (``skimage/data/*.png``, read with
  Pillow), the photograph being the class. Each photograph is cut into 32x32 tiles dealt
  to the sets, so no two sets share a pixel.

Planted causes are made in two ways, both recorded in ``metadata.csv`` (``planted``):

- **under-sampled regions of real attributes**, measured from the pixels
  (:func:`measure`): the images whose attribute lies beyond its class's
  :data:`REGION_QUANTILE` quantile (so every class has them), kept in the TrainingSet
  with probability :data:`KEEP_IN_TRAINING` only, and at their natural share in the
  TestSet and the ImprovementSet. ``digits``: ``thin`` (least ink) and ``slanted`` (the
  strongest right lean, from the image's second moments); ``textures``: ``dark`` (lowest
  mean) and ``flat`` (lowest contrast), which overlap each other;
- **rendered effects** drawn at the scenes' rates (rare in training, 10% each in the test
  set, 3% in the pool): ``digits``: ``erased`` (a band of two rows or columns wiped) and
  ``smudge`` (an ink blot); ``textures``: ``glare`` (a bright highlight) and ``blur`` (a
  Gaussian blur, the texture's detail lost).

An image may be in a region and take an effect; ``planted`` then names the effect (the
causes overlap: its attribute is still in the metadata). The measured attributes are of
the real image, before any effect.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "DataSets"
    >>> counts = generate_real(root, "textures", sizes={"TrainingSet": 40, "TestSet": 20})
    >>> counts, sorted(p.name for p in (root / "TestSet").iterdir())[:2]
    ({'TrainingSet': 40, 'TestSet': 20}, ['brick', 'grass'])
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hudd_core.data.generate import MARKER, SETS
from hudd_core.data.simulator import draw_planted
from hudd_core.fileio import write_csv

KEEP_IN_TRAINING = 0.05  # the share of an under-sampled region's images training keeps
REGION_QUANTILE = 0.15  # a region: beyond this quantile of its class's attribute
EFFECT_RATES = {"TrainingSet": 0.006, "TestSet": 0.1, "ImprovementSet": 0.03}
# digits: the share of the 1,797 images dealt to each set (a large test set: its errors)
DIGIT_SHARES = {"TrainingSet": 0.4, "TestSet": 0.45, "ImprovementSet": 0.15}
TEXTURES = ["brick", "grass", "gravel", "moon"]
TILE, CROP = 32, 16
TILE_SHARES = {"TrainingSet": 0.6, "TestSet": 0.25, "ImprovementSet": 0.15}
REFERENCE_CROPS = 4000  # crops over every tile that fix the textures' region thresholds


@dataclass(frozen=True)
class Source:
    """A real image set: its classes, native side, attributes, regions and effects."""

    classes: list[str]
    size: int
    attributes: list[str]  # measured from the pixels (:func:`measure`)
    regions: dict[str, tuple[str, str]]  # region -> (attribute, "low" | "high")
    effects: list[str]
    effect_params: list[str]


SOURCES = {
    "digits": Source(
        classes=[str(d) for d in range(10)],
        size=8,
        attributes=["ink", "slant", "width"],
        regions={"thin": ("ink", "low"), "slanted": ("slant", "high")},
        effects=["erased", "smudge"],
        effect_params=["erased", "erase_axis", "erase_at", "smudge", "smudge_x", "smudge_y"],
    ),
    "textures": Source(
        classes=TEXTURES,
        size=CROP,
        attributes=["brightness", "contrast"],
        regions={"dark": ("brightness", "low"), "flat": ("contrast", "low")},
        effects=["glare", "blur"],
        effect_params=["glare", "glare_x", "glare_y", "blur"],
    ),
}


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """Attributes of ``(N, H, W)`` uint8 images, from their pixels: ``ink``/``brightness``
    (mean, 0..1), ``contrast`` (standard deviation), ``slant`` (the shear ``-mu11/mu02``
    of the intensity's second moments: > 0 leans right) and ``width`` (the intensity's
    horizontal standard deviation, pixels)."""
    x = images.astype(np.float64) / 255
    mass = np.maximum(x.sum(axis=(1, 2)), 1e-9)
    yy, xx = np.mgrid[0 : x.shape[1], 0 : x.shape[2]]
    cx = (x * xx).sum(axis=(1, 2)) / mass
    cy = (x * yy).sum(axis=(1, 2)) / mass
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    mu11 = (x * dx * dy).sum(axis=(1, 2)) / mass
    mu02 = np.maximum((x * dy**2).sum(axis=(1, 2)) / mass, 1e-9)
    mean = x.mean(axis=(1, 2))
    return {
        "ink": mean,
        "brightness": mean,
        "contrast": x.std(axis=(1, 2)),
        "slant": -mu11 / mu02,
        "width": np.sqrt((x * dx**2).sum(axis=(1, 2)) / mass),
    }


def region_thresholds(
    source: Source, values: dict[str, np.ndarray], labels: np.ndarray
) -> dict[str, np.ndarray]:
    """Per region, its attribute's per-class threshold (index = class)."""
    out = {}
    for region, (attr, side) in source.regions.items():
        q = REGION_QUANTILE if side == "low" else 1 - REGION_QUANTILE
        out[region] = np.array(
            [np.quantile(values[attr][labels == c], q) for c in range(len(source.classes))]
        )
    return out


def in_regions(
    source: Source, values: dict[str, np.ndarray], labels: np.ndarray, thresholds: dict
) -> dict[str, np.ndarray]:
    """Per region, whether each image lies in it."""
    out = {}
    for region, (attr, side) in source.regions.items():
        t = thresholds[region][labels]
        out[region] = values[attr] <= t if side == "low" else values[attr] >= t
    return out


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.rint(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


def skimage_data() -> Path:
    """scikit-image's bundled data folder, found without importing the package."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the textures case needs scikit-image (pip install scikit-image)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _photographs() -> np.ndarray:
    """The textures' photographs, ``(classes, 512, 512)`` uint8."""
    folder = skimage_data()
    return np.stack([np.asarray(Image.open(folder / f"{n}.png").convert("L")) for n in TEXTURES])


def _deal_tiles(side: int, seed: int) -> dict[str, np.ndarray]:
    """Per set, the ``(row, col)`` of its tiles (the same tiles in every photograph)."""
    per = side // TILE
    order = np.random.default_rng([seed, 7]).permutation(per * per)
    cuts = np.cumsum([round(TILE_SHARES[s] * per * per) for s in SETS])[:-1]
    return {s: np.stack(np.divmod(part, per), axis=1) for s, part in
            zip(SETS, np.split(order, cuts), strict=True)}  # fmt: skip


def _crops(photos: np.ndarray, tiles: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` random crops inside ``tiles``: images, labels and their top-left corners."""
    labels = rng.integers(0, len(photos), n)
    tile = tiles[rng.integers(0, len(tiles), n)]
    y = tile[:, 0] * TILE + rng.integers(0, TILE - CROP + 1, n)
    x = tile[:, 1] * TILE + rng.integers(0, TILE - CROP + 1, n)
    win = np.lib.stride_tricks.sliding_window_view(photos, (CROP, CROP), axis=(1, 2))
    return win[labels, y, x].copy(), labels, np.stack([x, y], axis=1)


def _blot(images: np.ndarray, cx, cy, radius: float, value: float, strength) -> np.ndarray:
    """``images`` blended towards ``value`` under a Gaussian blot per image."""
    h, w = images.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
    a = strength[:, None, None] * np.exp(-d2 / (2 * radius**2))
    return images * (1 - a) + value * a


def _gaussian_blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per-image Gaussian blur (reflecting edges); sigma 0 leaves an image as it is."""
    from scipy.ndimage import gaussian_filter

    out = images.copy()
    for i in np.flatnonzero(sigma > 0):
        out[i] = gaussian_filter(images[i], float(sigma[i]), mode="reflect")
    return out


def apply_effects(
    name: str, images: np.ndarray, effect: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The images with each one's effect (``effect``: names or ``none``) rendered, and
    the effects' parameters (0 where an image has none)."""
    n, side = len(images), images.shape[1]
    x = images.astype(np.float64)
    if name == "digits":
        erased, smudge = effect == "erased", effect == "smudge"
        axis = rng.integers(0, 2, n).astype(np.float64)
        at = rng.integers(2, side - 3, n)
        rows = np.arange(side)
        band = (rows[None, :] >= at[:, None]) & (rows[None, :] < at[:, None] + 2)
        wipe = np.where(axis[:, None, None] == 0, band[:, :, None], band[:, None, :])
        x = np.where(erased[:, None, None] & wipe, 0.0, x)
        sx, sy = rng.uniform(1.5, side - 2.5, n), rng.uniform(1.5, side - 2.5, n)
        x = _blot(x, sx, sy, 1.4, 255.0, np.where(smudge, 1.0, 0.0))
        params = {"erased": erased, "erase_axis": axis * erased, "erase_at": at * erased,
                  "smudge": smudge, "smudge_x": sx * smudge, "smudge_y": sy * smudge}  # fmt: skip
    else:
        glare, blur = effect == "glare", effect == "blur"
        strength = np.where(glare, rng.uniform(0.7, 0.9, n), 0.0)
        gx, gy = rng.uniform(0, side - 1, n), rng.uniform(0, side - 1, n)
        x = _blot(x, gx, gy, 0.22 * side, 255.0, strength)
        sigma = np.where(blur, rng.uniform(1.5, 2.5, n), 0.0)
        x = _gaussian_blur(x, sigma)
        params = {"glare": strength, "glare_x": gx * glare, "glare_y": gy * glare, "blur": sigma}
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out, {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def _draw_set(name: str, set_name: str, n: int, rng: np.random.Generator, pool: dict):
    """``(images, labels, params, region)`` of one set before the effects: its images,
    their classes, their measured attributes (and where they come from), and the region
    each lies in (``none``); the under-sampled regions thinned out in training."""
    source = SOURCES[name]
    if name == "digits":
        images, labels, index = pool["parts"][set_name]
        n, extra = len(images), {"source_index": index}
    else:  # training draws more crops: its regions' are mostly dropped
        need = n if set_name != "TrainingSet" else 2 * n + 16
        images, labels, corner = _crops(pool["photos"], pool["tiles"][set_name], need, rng)
        extra = {"crop_x": corner[:, 0], "crop_y": corner[:, 1]}
    values = measure(images)
    region = in_regions(source, values, labels, pool["thresholds"])
    keep = np.ones(len(images), dtype=bool)
    if set_name == "TrainingSet":
        rare = np.logical_or.reduce(list(region.values()))
        keep = ~rare | (rng.random(len(images)) < KEEP_IN_TRAINING)
    keep &= np.cumsum(keep) <= n
    names = np.full(len(images), "none", dtype=object)
    for r in reversed(list(source.regions)):  # the first region named wins
        names[region[r]] = r
    params = {**extra, **{a: values[a] for a in source.attributes}}
    params = {k: np.asarray(v, dtype=np.float64)[keep] for k, v in params.items()}
    return images[keep], labels[keep], params, names[keep]


def _pool(name: str, seed: int) -> dict:
    """What every set of a source draws from, and the regions' thresholds."""
    source = SOURCES[name]
    if name == "digits":
        images, labels = _digits()
        order = np.random.default_rng([seed, 7]).permutation(len(images))
        cuts = np.cumsum([round(DIGIT_SHARES[s] * len(images)) for s in SETS])[:-1]
        parts = {s: (images[i], labels[i], i) for s, i in
                 zip(SETS, np.split(order, cuts), strict=True)}  # fmt: skip
        return {"parts": parts,
                "thresholds": region_thresholds(source, measure(images), labels)}  # fmt: skip
    photos = _photographs()
    tiles = _deal_tiles(photos.shape[1], seed)
    ref, ref_labels, _ = _crops(photos, np.concatenate(list(tiles.values())), REFERENCE_CROPS,
                                np.random.default_rng([seed, 8]))  # fmt: skip
    return {"photos": photos, "tiles": tiles,
            "thresholds": region_thresholds(source, measure(ref), ref_labels)}  # fmt: skip


def write_real_set(folder: Path, name: str, set_name: str, n: int, seed: int, pool: dict) -> int:
    """One set of a real source into ``folder`` (class folders, ``metadata.csv``)."""
    source = SOURCES[name]
    rng = np.random.default_rng([seed, SETS.index(set_name), 1])
    images, labels, params, region = _draw_set(name, set_name, n, rng, pool)
    rates = {e: EFFECT_RATES[set_name] for e in source.effects}
    effect = draw_planted(len(images), rng, rates, source.effects)
    images, effect_params = apply_effects(name, images, effect, rng)
    planted = np.where(effect != "none", effect, region)
    params = {"label": labels.astype(np.float64), **params, **effect_params}
    for c in source.classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, c) in enumerate(zip(images, labels, strict=True)):
        rel = f"{source.classes[c]}/{i:06d}.png"
        Image.fromarray(image).save(folder / rel, compress_level=1)
        rows.append([rel, *(f"{params[p][i]:.6g}" for p in params), planted[i]])
    write_csv(folder / "metadata.csv", ["image", *params, "planted"], rows)
    return len(images)


def source_version() -> str:
    """A hash of this module: sets written by an older version are written again."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def generate_real(
    root: str | Path, name: str, *, sizes: dict[str, int], seed: int = 0
) -> dict[str, int]:
    """Writes the real source ``name`` (:data:`SOURCES`) into ``root`` (the DataSets
    folder); returns the images per set. ``sizes`` names the sets; ``textures`` draws
    that many crops per set, ``digits`` deals its 1,797 images by :data:`DIGIT_SHARES`
    (the sizes are ignored). Kept when ``root`` holds a complete run of the same
    configuration (``simulator.json``, as the scenes' generator writes it)."""
    if name not in SOURCES:
        raise ValueError(f"real source must be one of {sorted(SOURCES)}, got {name!r}")
    root = Path(root)
    config = {"source": name, "seed": seed, "sizes": sizes, "simulator": f"real-{source_version()}"}
    marker = root / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        counts = done.pop("counts", None)
        if done == {**config, "complete": True}:
            return counts
        for s in SETS:
            shutil.rmtree(root / s, ignore_errors=True)
    elif root.is_dir() and any(root.iterdir()):
        raise ValueError(
            f"{root} is not empty and was not written by the generator; not touching it"
        )
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**config, "complete": False}, indent=2))
    pool = _pool(name, seed)
    counts = {s: write_real_set(root / s, name, s, n, seed, pool) for s, n in sizes.items()}
    marker.write_text(json.dumps({**config, "complete": True, "counts": counts}, indent=2))
    return counts
