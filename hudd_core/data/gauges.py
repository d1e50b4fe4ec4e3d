"""A third built-in scene: analogue gauges read by a camera, for factors unlike the eyes' and
the signs'.

Every image shows one round dial (nine ticks, a needle, a hub) on a plain background. The
class is the sector the needle points to, relative to the dial: ``low``, ``normal``,
``high`` or ``critical`` (four sectors of 67.5 degrees from -135 to 135, 0 = up); unlike
the signs' shapes it follows a continuous parameter, so some errors sit at the sector
boundaries. The images are rendered from recorded parameters (needle angle, dial size,
position, in-plane tilt, perspective squash, tones, needle width, a specular glare, a cast
shadow, sensor noise). Four *planted* regions, rare in training and frequent in the test
set, are the root causes a debugging method should find:

- ``tilted``: the whole gauge is turned by 25 to 40 degrees (the needle must be read
  against the ticks, not the image's vertical);
- ``oblique``: seen from the side, the dial is squashed to an ellipse of 0.45 to 0.6;
- ``glare``: a bright specular highlight washes out part of the dial;
- ``shadow``: a hard shadow darkens one side of the image.

The causes overlap: a quarter of the planted images (:data:`OVERLAP`) also take a second
planted region's parameter (``planted`` names the first), so a cause's images share
another cause's look; every cause falls on every class.

Like :mod:`~hudd_core.data.signs`, it is a scene module for
:func:`hudd_core.data.generate.generate`, rendered a batch at a time.

Example:
    >>> rng = np.random.default_rng(0)
    >>> p = sample_params(5, rng, TEST_RATES)
    >>> images = render(p, size=32, rng=rng)
    >>> images.shape, images.dtype, [CLASSES[c] for c in classify({"needle": np.zeros(1)})]
    ((5, 32, 32), dtype('uint8'), ['high'])
"""

from __future__ import annotations

import numpy as np

from hudd_core.data.simulator import draw_planted

CLASSES = ["critical", "high", "low", "normal"]  # sorted: the ImageFolder class index
SECTORS = ["low", "normal", "high", "critical"]  # needle from -135 to 135 degrees
SWEEP = 135.0  # the needle's range is [-SWEEP, SWEEP] degrees, 0 = up, > 0 clockwise
PARAMS = [
    "needle",  # degrees relative to the dial
    "radius",  # dial radius, share of the image side
    "offset_x",  # centre shift, share of the image side
    "offset_y",
    "tilt",  # in-plane rotation of the whole gauge, degrees
    "aspect",  # vertical squash of the dial (1 = seen face on)
    "dial_tone",
    "background_tone",
    "needle_width",  # share of the image side
    "glare",  # strength of the specular highlight, 0 .. 1
    "glare_x",  # its centre, share of the side from the image centre
    "glare_y",
    "shadow",  # darkening of the shadowed side, 0 .. 1
    "shadow_angle",  # direction of the shadow's edge, degrees
    "noise",  # sensor noise standard deviation
]
PLANTED = ["tilted", "oblique", "glare", "shadow"]
TRAIN_RATES = {name: 0.006 for name in PLANTED}
TEST_RATES = {name: 0.1 for name in PLANTED}
FIELD_RATES = {name: 0.03 for name in PLANTED}
OVERLAP = 0.25  # share of the planted images that also take a second region's parameter
TICKS = np.linspace(-SWEEP, SWEEP, 9)  # every other one a sector boundary (drawn longer)


def _regions(planted: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per region, the images that take its parameter: its own, and the overlap's
    second region (another one, drawn uniformly)."""
    n = planted.size
    second = np.array(PLANTED)[rng.integers(0, len(PLANTED), n)]
    second = np.where(second == planted, "none", second)
    second = np.where((planted != "none") & (rng.random(n) < OVERLAP), second, "none")
    return {r: (planted == r) | (second == r) for r in PLANTED}


def sample_params(
    n: int, rng: np.random.Generator, rates: dict[str, float]
) -> dict[str, np.ndarray]:
    """``n`` parameter sets (arrays named as :data:`PARAMS`, plus ``planted``); each
    image falls in planted region r with probability ``rates[r]`` (at most one named;
    :data:`OVERLAP` of them take a second region's parameter too)."""
    planted = draw_planted(n, rng, rates, PLANTED)
    is_ = _regions(planted, rng)
    steep = rng.choice([-1.0, 1.0], n) * rng.uniform(25.0, 40.0, n)
    return {
        "needle": rng.uniform(-SWEEP, SWEEP, n),
        "radius": rng.uniform(0.36, 0.44, n),
        "offset_x": rng.uniform(-0.05, 0.05, n),
        "offset_y": rng.uniform(-0.05, 0.05, n),
        "tilt": np.where(is_["tilted"], steep, rng.uniform(-6.0, 6.0, n)),
        "aspect": np.where(is_["oblique"], rng.uniform(0.45, 0.6, n), rng.uniform(0.88, 1.0, n)),
        "dial_tone": rng.uniform(0.75, 0.95, n),
        "background_tone": rng.uniform(0.15, 0.45, n),
        "needle_width": rng.uniform(0.05, 0.075, n),
        "glare": np.where(is_["glare"], rng.uniform(0.75, 0.9, n), rng.uniform(0.0, 0.1, n)),
        "glare_x": rng.uniform(-0.2, 0.2, n),
        "glare_y": rng.uniform(-0.2, 0.2, n),
        "shadow": np.where(is_["shadow"], rng.uniform(0.6, 0.75, n), rng.uniform(0.0, 0.08, n)),
        "shadow_angle": rng.uniform(0.0, 360.0, n),
        "noise": rng.uniform(0.0, 0.03, n),
        "planted": planted,
    }


def classify(params: dict[str, np.ndarray]) -> np.ndarray:
    """The class index (into :data:`CLASSES`) of the needle's sector."""
    width = 2 * SWEEP / len(SECTORS)
    sector = np.clip(((params["needle"] + SWEEP) // width).astype(np.int64), 0, len(SECTORS) - 1)
    return np.array([CLASSES.index(s) for s in SECTORS])[sector]


def _col(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)[:, None, None]


def _soft(d: np.ndarray) -> np.ndarray:
    """Anti-aliased inside mask from a signed distance in pixels (> 0 inside)."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _bar(u, v, angle, start, end, half_width) -> np.ndarray:
    """Mask of a radial bar at ``angle`` (radians, 0 = up, clockwise) from ``start`` to
    ``end`` along it, in the dial's frame (``u`` right, ``v`` up, pixels)."""
    along = u * np.sin(angle) + v * np.cos(angle)
    across = np.abs(u * np.cos(angle) - v * np.sin(angle))
    return _soft(half_width - across) * _soft(along - start) * _soft(end - along)


def render(
    params: dict[str, np.ndarray], size: int = 32, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Grayscale gauge images ``(B, size, size)`` uint8; ``rng`` draws the sensor noise
    (none without it)."""
    grid = np.arange(size, dtype=np.float32) - (size - 1) / 2
    gx = grid[None, None, :] - _col(params["offset_x"] * size)
    gy = -(grid[None, :, None] - _col(params["offset_y"] * size))  # y up
    t = _col(np.deg2rad(params["tilt"]))
    u = np.cos(t) * gx - np.sin(t) * gy  # the dial's frame: the tilt undone ...
    v = (np.sin(t) * gx + np.cos(t) * gy) / _col(params["aspect"])  # ... and the squash
    rho = np.sqrt(u**2 + v**2)
    r = _col(params["radius"] * size)
    disc, face = _soft(r - rho), _soft(0.88 * r - rho)

    marks = np.zeros_like(rho)
    for k, a in enumerate(np.deg2rad(TICKS)):
        inner = 0.58 if k % 2 == 0 else 0.7  # the sector boundaries reach further in
        marks = np.maximum(marks, _bar(u, v, a, inner * r, 0.86 * r, 0.6))
    needle = _bar(u, v, _col(np.deg2rad(params["needle"])), -0.15 * r, 0.8 * r,
                  _col(params["needle_width"] * size / 2))  # fmt: skip
    needle = np.maximum(needle, _soft(0.1 * r - rho))  # the hub

    back = _col(params["background_tone"]) + 0.1 * (grid[None, :, None] / size)
    img = back * (1 - disc) + disc * (0.1 + face * (_col(params["dial_tone"]) - 0.1))
    img = img * (1 - marks) + 0.12 * marks
    img = img * (1 - needle) + 0.05 * needle

    a = _col(np.deg2rad(params["shadow_angle"]))
    side = np.cos(a) * grid[None, None, :] + np.sin(a) * grid[None, :, None]
    img = img * (1 - _col(params["shadow"]) * np.clip(side / 2 + 0.5, 0.0, 1.0))
    dx = grid[None, None, :] - _col(params["glare_x"] * size)
    dy = grid[None, :, None] - _col(params["glare_y"] * size)
    blob = _col(params["glare"]) * np.exp(-(dx**2 + dy**2) / (2 * (0.16 * size) ** 2))
    img = img * (1 - blob) + blob
    if rng is not None:
        img = img + _col(params["noise"]) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
