"""A second built-in scene: road signs by the wayside, for a case study unlike the eyes.

Every image shows one sign (a ``circle``, ``diamond``, ``square`` or ``triangle``: the
class) on a textured background, rendered from recorded parameters (size, rotation,
position, tones, fog, motion blur, background clutter, an occluding pole). Five
*planted* regions, rare in training and frequent in the test set, are the root causes a
debugging method should find; each differs from the common region in its own
parameters only:

- ``distant``: the sign is small (a third of its usual size);
- ``fog``: a bright haze lowers the contrast;
- ``occluded``: a dark pole crosses the sign;
- ``clutter``: strong stripes on the background;
- ``motion_blur``: a long horizontal blur.

The module has the interface :func:`hudd_core.data.generate.generate` takes
(``CLASSES``, ``PARAMS``, ``PLANTED``, the rates, :func:`sample_params`, :func:`render`,
:func:`classify`); rendering is vectorised over the batch.

Example:
    >>> rng = np.random.default_rng(0)
    >>> p = sample_params(6, rng, TEST_RATES)
    >>> render(p, size=32, rng=rng).shape, classify(p).shape
    ((6, 32, 32), (6,))
"""

from __future__ import annotations

import numpy as np

from hudd_core.data.simulator import draw_planted

CLASSES = ["circle", "diamond", "square", "triangle"]
PARAMS = [
    "shape",  # class index into CLASSES
    "radius",  # sign half-size, share of the image side
    "rotation",  # degrees
    "offset_x",  # centre shift, share of the image side
    "offset_y",
    "sign_tone",  # brightness of the sign's face
    "background_tone",
    "fog",  # 0 = clear .. 1 = only haze
    "motion_blur",  # horizontal blur length, share of the image side
    "clutter",  # amplitude of the background stripes
    "clutter_angle",  # degrees
    "occluded",  # 1 when a pole crosses the sign
    "noise",  # sensor noise standard deviation
]
PLANTED = ["distant", "fog", "occluded", "clutter", "motion_blur"]
TRAIN_RATES = {name: 0.006 for name in PLANTED}
TEST_RATES = {name: 0.1 for name in PLANTED}
FIELD_RATES = {name: 0.03 for name in PLANTED}


def sample_params(
    n: int, rng: np.random.Generator, rates: dict[str, float]
) -> dict[str, np.ndarray]:
    """``n`` parameter sets (arrays named as :data:`PARAMS`, plus ``planted``); each
    image falls in planted region r with probability ``rates[r]`` (at most one)."""
    planted = draw_planted(n, rng, rates, PLANTED)
    is_ = {r: planted == r for r in PLANTED}
    return {
        "shape": rng.integers(0, len(CLASSES), n).astype(np.float64),
        "radius": np.where(is_["distant"], rng.uniform(0.09, 0.13, n), rng.uniform(0.26, 0.36, n)),
        "rotation": rng.uniform(-12.0, 12.0, n),
        "offset_x": rng.uniform(-0.08, 0.08, n),
        "offset_y": rng.uniform(-0.08, 0.08, n),
        "sign_tone": rng.uniform(0.75, 0.95, n),
        "background_tone": rng.uniform(0.25, 0.5, n),
        "fog": np.where(is_["fog"], rng.uniform(0.8, 0.9, n), rng.uniform(0.0, 0.2, n)),
        "motion_blur": np.where(
            is_["motion_blur"], rng.uniform(0.3, 0.4, n), rng.uniform(0.0, 0.04, n)
        ),
        "clutter": np.where(is_["clutter"], rng.uniform(0.35, 0.5, n), rng.uniform(0.0, 0.05, n)),
        "clutter_angle": rng.uniform(0.0, 180.0, n),
        "occluded": is_["occluded"].astype(np.float64),
        "noise": rng.uniform(0.0, 0.03, n),
        "planted": planted,
    }


def classify(params: dict[str, np.ndarray]) -> np.ndarray:
    """The class index of each sign (its shape)."""
    return params["shape"].astype(np.int64)


def _col(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)[:, None, None]


def _soft(d: np.ndarray) -> np.ndarray:
    """Anti-aliased inside mask from a signed distance in pixels (> 0 inside)."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _inside(shape: np.ndarray, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, > 0 inside) to each image's sign outline of half-size r."""
    circle = r - np.sqrt(x**2 + y**2)
    diamond = (r - (np.abs(x) + np.abs(y))) / np.sqrt(2)
    square = 0.8 * r - np.maximum(np.abs(x), np.abs(y))
    # an upward equilateral triangle: three half-planes
    s3 = np.sqrt(3) / 2
    edges = (y + 0.5 * r, -s3 * x - 0.5 * y + 0.5 * r, s3 * x - 0.5 * y + 0.5 * r)
    tri = np.minimum(np.minimum(edges[0], edges[1]), edges[2])
    return np.choose(shape[:, None, None], [circle, diamond, square, tri])


def _motion_blur(img: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Per-image horizontal box blur of ``length`` pixels (< 1: none)."""
    radius = max(1, int(np.ceil(float(length.max(initial=0.0)) / 2)))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    w = (np.abs(taps)[None, :] <= np.maximum(length, 1.0)[:, None] / 2).astype(np.float32)
    w /= w.sum(axis=1, keepdims=True)
    pad = np.pad(img, ((0, 0), (0, 0), (radius, radius)), mode="edge")
    return sum(w[:, k, None, None] * pad[:, :, k : k + img.shape[2]] for k in range(taps.size))


def render(
    params: dict[str, np.ndarray], size: int = 32, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Grayscale sign images ``(B, size, size)`` uint8; ``rng`` draws the sensor noise
    and the pole's placement (neither without it)."""
    grid = np.arange(size, dtype=np.float32) - (size - 1) / 2
    t = np.deg2rad(params["rotation"]).astype(np.float32)
    c, s = _col(np.cos(t)), _col(np.sin(t))
    du = grid[None, None, :] - _col(params["offset_x"] * size)
    dv = grid[None, :, None] - _col(params["offset_y"] * size)
    x, y = c * du + s * dv, -(-s * du + c * dv)  # y up in the sign's frame
    r = _col(params["radius"] * size)
    d = _inside(params["shape"].astype(np.int64), x, y, r)
    face = _soft(d - np.maximum(1.0, 0.12 * r))  # the face inside a dark rim
    sign = _soft(d)

    a = _col(np.deg2rad(params["clutter_angle"]))
    stripes = np.sin((grid[None, None, :] * np.cos(a) + grid[None, :, None] * np.sin(a)) * 1.3)
    back = _col(params["background_tone"]) + _col(params["clutter"]) * stripes
    back = back + 0.1 * (grid[None, :, None] / size)  # light from above
    img = back * (1 - sign) + sign * (0.08 + face * (_col(params["sign_tone"]) - 0.08))

    occ = params["occluded"].astype(bool)
    if occ.any() and rng is not None:
        k = int(occ.sum())
        angle = _col(np.deg2rad(rng.uniform(60.0, 120.0, k)))
        shift = _col(rng.uniform(-0.1, 0.1, k) * size)
        width = _col(rng.uniform(0.16, 0.22, k) * size)
        line = np.abs(du[occ] * np.sin(angle) - dv[occ] * np.cos(angle) - shift)
        img[occ] = img[occ] * (1 - _soft(width / 2 - line)) + 0.05 * _soft(width / 2 - line)
    img = _motion_blur(img, params["motion_blur"] * size)
    f = _col(params["fog"])
    img = img * (1 - f) + 0.8 * f
    if rng is not None:
        img = img + _col(params["noise"]) * rng.standard_normal(img.shape, dtype=np.float32)
    out = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return out
