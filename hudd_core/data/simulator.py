"""The built-in eye simulator: procedurally rendered eye images for the HUDD case study.

In the spirit of the paper's gaze-detection (GD) and eye-closure (OC) case studies, every image
is a function of recorded parameters (gaze angles, eyelid openness, head roll, illumination,
glasses, ...). Labels follow from the parameters:

- classifier: a gaze class (``left``/``right``/``up``/``down``/``center``) or ``closed`` when
  the eyelid openness is below ``CLOSED_BELOW`` (see :func:`gaze_class`);
- keypoints: pixel coordinates of the two eye corners, the iris centre and the two eyelid
  midpoints (see :func:`keypoints`).

Some parameter regions are *planted*: rare in the training distribution, frequent in the test
and improvement distributions, so a model trained on the training set fails there for distinct
reasons (the root causes HUDD should find). :data:`PLANTED` names them.

Rendering is vectorised over the batch (NumPy arrays ``(B, H, W)``), no per-pixel loop.

Example:
    >>> rng = np.random.default_rng(0)
    >>> params = sample_params(8, rng, TRAIN_RATES)
    >>> images = render(params, size=64, rng=rng)
    >>> images.shape, images.dtype
    ((8, 64, 64), dtype('uint8'))
    >>> gaze_class(params).shape
    (8,)
"""

from __future__ import annotations

import numpy as np

# Parameters recorded per image, in metadata.csv order (all numeric).
PARAMS = [
    "gaze_h",  # horizontal iris angle, degrees; > 0 looks to the image's right
    "gaze_v",  # vertical iris angle, degrees; > 0 looks up
    "openness",  # eyelid opening, 0 = closed .. 1 = wide open
    "head_roll",  # in-plane rotation of the eye, degrees
    "illumination",  # global light level, multiplies the scene
    "pupil_size",  # pupil radius / iris radius
    "offset_x",  # eye centre shift in pixels (at 64 px; scales with the size)
    "offset_y",
    "blur",  # Gaussian blur sigma in pixels (at 64 px)
    "noise",  # sensor noise standard deviation (absolute, 0..1 scale)
    "glasses",  # 1 when a glasses frame with lens glare occludes the eye
    "skin_tone",  # skin brightness before illumination
    "iris_tone",  # iris brightness before illumination
]

# Classes, in sorted order (the class index of ImageFolder).
CLASSES = ["center", "closed", "down", "left", "right", "up"]
KEYPOINTS = ["corner_left", "corner_right", "iris", "lid_upper", "lid_lower"]

CLOSED_BELOW = 0.22  # openness below this: class "closed"
CENTER_H = 15.0  # |gaze_h| below this and |gaze_v| below CENTER_V: class "center"
CENTER_V = 10.0
GAZE_H_MAX = 40.0
GAZE_V_MAX = 30.0
BORDER_MARGIN = 0.3  # gaze closer than this (normalised units) to a class boundary: borderline

# Planted (under-represented) regions and how each is drawn.
PLANTED = ["borderline_gaze", "dark", "glasses", "head_roll", "half_closed"]
TRAIN_RATES = {name: 0.006 for name in PLANTED}  # ~0.6% each: rare, but not absent
TEST_RATES = {name: 0.1 for name in PLANTED}  # test set: 10% each, so errors are many
# The improvement set stands for field data: the rare conditions are rare (3% each), so
# labelling random images finds few of them, which is what HUDD's selection is for.
FIELD_RATES = {name: 0.03 for name in PLANTED}


def gaze_margin(gaze_h: np.ndarray, gaze_v: np.ndarray) -> np.ndarray:
    """Distance (in units of CENTER_H/CENTER_V) from a gaze to the nearest class boundary.

    The classes are a centre box ``|h| < 1, |v| < 1`` (normalised) and four sectors split by
    the diagonals ``|h| = |v|`` outside it.

    Example:
        >>> float(gaze_margin(np.array([0.0]), np.array([0.0]))[0])
        1.0
    """
    h = np.abs(gaze_h) / CENTER_H
    v = np.abs(gaze_v) / CENTER_V
    inside = (h < 1) & (v < 1)
    to_box_in = np.minimum(1 - h, 1 - v)
    to_box_out = np.hypot(np.maximum(h - 1, 0), np.maximum(v - 1, 0))
    to_diagonal = np.abs(h - v) / np.sqrt(2)
    return np.where(inside, to_box_in, np.minimum(to_box_out, to_diagonal))


def gaze_class(params: dict[str, np.ndarray]) -> np.ndarray:
    """Class index (into CLASSES) of every image: the label as a function of the parameters.

    Example:
        >>> p = {"gaze_h": np.array([-30.0, 0.0, 0.0]), "gaze_v": np.array([0.0, 20.0, 0.0]),
        ...      "openness": np.array([0.8, 0.8, 0.1])}
        >>> [CLASSES[i] for i in gaze_class(p)]
        ['left', 'up', 'closed']
    """
    h = params["gaze_h"] / CENTER_H
    v = params["gaze_v"] / CENTER_V
    horizontal = np.abs(h) >= np.abs(v)
    name = np.where(horizontal, np.where(h < 0, "left", "right"), np.where(v < 0, "down", "up"))
    name = np.where((np.abs(h) < 1) & (np.abs(v) < 1), "center", name)
    name = np.where(params["openness"] < CLOSED_BELOW, "closed", name)
    return np.searchsorted(CLASSES, name)


classify = gaze_class  # the class label of a scene module (hudd_core.data.generate)


def _sample_gaze(n: int, rng: np.random.Generator, borderline: bool) -> tuple:
    """Gaze angles with margin >= BORDER_MARGIN (common) or < BORDER_MARGIN (borderline)."""
    h = np.empty(n)
    v = np.empty(n)
    todo = np.arange(n)
    while todo.size:  # vectorised rejection sampling; borderline accepts ~15%
        th = rng.uniform(-GAZE_H_MAX, GAZE_H_MAX, todo.size)
        tv = rng.uniform(-GAZE_V_MAX, GAZE_V_MAX, todo.size)
        ok = (gaze_margin(th, tv) < BORDER_MARGIN) == borderline
        h[todo[ok]] = th[ok]
        v[todo[ok]] = tv[ok]
        todo = todo[~ok]
    return h, v


def draw_planted(
    n: int, rng: np.random.Generator, rates: dict[str, float], regions: list[str]
) -> np.ndarray:
    """``n`` region names: each of ``regions`` with probability ``rates[r]`` (at most one
    per image), else ``none``; a ValueError for rates below 0 or summing above 1."""
    p = np.array([rates.get(r, 0.0) for r in regions])
    if p.sum() > 1 or (p < 0).any():
        raise ValueError(f"planted rates must be >= 0 and sum to <= 1, got {rates}")
    return rng.choice(["none", *regions], size=n, p=[1 - p.sum(), *p])


def sample_params(
    n: int, rng: np.random.Generator, rates: dict[str, float]
) -> dict[str, np.ndarray]:
    """``n`` parameter sets; each image falls in planted region r with probability
    ``rates[r]`` (at most one region per image), otherwise in the common region ``none``.

    Returns a dict of arrays, one per name in PARAMS, plus ``planted`` (region names).
    A planted image differs from a common one in its region's parameter only, so each
    planted region is one root cause.
    """
    planted = draw_planted(n, rng, rates, PLANTED)
    is_ = {r: planted == r for r in PLANTED}

    gh, gv = _sample_gaze(n, rng, borderline=False)
    bh, bv = _sample_gaze(n, rng, borderline=True)
    gaze_h = np.where(is_["borderline_gaze"], bh, gh)
    gaze_v = np.where(is_["borderline_gaze"], bv, gv)

    # Common openness: closed (20%) or clearly open, never near the threshold.
    closed = rng.random(n) < 0.2
    openness = np.where(closed, rng.uniform(0.0, 0.12, n), rng.uniform(0.45, 1.0, n))
    openness = np.where(is_["half_closed"], rng.uniform(0.14, 0.30, n), openness)

    illumination = np.where(is_["dark"], rng.uniform(0.03, 0.08, n), rng.uniform(0.45, 1, n))
    roll = rng.uniform(-12.0, 12.0, n)
    extreme = rng.choice([-1.0, 1.0], n) * rng.uniform(28.0, 45.0, n)
    head_roll = np.where(is_["head_roll"], extreme, roll)

    return {
        "gaze_h": gaze_h,
        "gaze_v": gaze_v,
        "openness": openness,
        "head_roll": head_roll,
        "illumination": illumination,
        "pupil_size": rng.uniform(0.3, 0.6, n),
        "offset_x": rng.uniform(-4.0, 4.0, n),
        "offset_y": rng.uniform(-3.0, 3.0, n),
        "blur": rng.uniform(0.0, 1.0, n),
        "noise": rng.uniform(0.0, 0.025, n),
        "glasses": is_["glasses"].astype(np.float64),
        "skin_tone": rng.uniform(0.5, 0.75, n),
        "iris_tone": rng.uniform(0.2, 0.45, n),
        "planted": planted,
    }


# Eye geometry as fractions of the image side (eye frame: x right, y down, origin at centre).
_HALF_WIDTH = 0.36  # corners at x = +-a
_LOWER = 0.12  # lower lid's depth below the corner line at x = 0
_OPEN = 0.34  # full opening (upper lid above the lower one) at openness 1
_IRIS = 0.13  # iris radius
_IRIS_RANGE_H = 0.75  # iris centre at +-0.75 a when |gaze_h| = GAZE_H_MAX
_IRIS_RANGE_V = 0.45  # iris centre +- 0.45 * _OPEN * side when |gaze_v| = GAZE_V_MAX
_LID_FOLLOW = 0.4  # the upper lid rises/falls with the iris by this fraction of its shift
_LID_Y0 = 0.02  # the corner line sits slightly below the eye centre


def _lift(params: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Upward iris shift in pixels for the vertical gaze."""
    return _IRIS_RANGE_V * _OPEN * size * params["gaze_v"] / GAZE_V_MAX


def _opening(params: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Lid opening at the middle for openness 1: the upper lid follows the vertical gaze."""
    return _OPEN * size + _LID_FOLLOW * _lift(params, size)


def _eye_frame_points(params: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Keypoints in the eye frame (before roll and offset), ``(B, K, 2)`` pixels."""
    a = _HALF_WIDTH * size
    y0 = _LID_Y0 * size
    lower = y0 + _LOWER * size
    upper = lower - params["openness"] * _opening(params, size)
    ix = _IRIS_RANGE_H * a * params["gaze_h"] / GAZE_H_MAX
    iy = y0 - _lift(params, size)
    n = params["gaze_h"].shape[0]
    pts = np.zeros((n, len(KEYPOINTS), 2))
    pts[:, 0] = [-a, y0]
    pts[:, 1] = [a, y0]
    pts[:, 2, 0], pts[:, 2, 1] = ix, iy
    pts[:, 3, 1] = upper
    pts[:, 4, 1] = lower
    return pts


def keypoints(params: dict[str, np.ndarray], size: int = 64) -> np.ndarray:
    """Pixel coordinates ``(B, K, 2)`` of KEYPOINTS: x = column, y = row, pixel centres at
    integer coordinates.

    Example:
        >>> p = sample_params(1, np.random.default_rng(0), {})
        >>> keypoints(p).shape
        (1, 5, 2)
    """
    pts = _eye_frame_points(params, size)
    t = np.deg2rad(params["head_roll"])[:, None]
    c, s = np.cos(t), np.sin(t)
    scale = size / 64
    cx = (size - 1) / 2 + params["offset_x"][:, None] * scale
    cy = (size - 1) / 2 + params["offset_y"][:, None] * scale
    x = c * pts[..., 0] - s * pts[..., 1] + cx
    y = s * pts[..., 0] + c * pts[..., 1] + cy
    return np.stack([x, y], axis=-1)


def _soft(d: np.ndarray) -> np.ndarray:
    """Anti-aliased inside mask from a signed distance in pixels (> 0 inside)."""
    return np.clip(d + 0.5, 0.0, 1.0, out=d + 0.5)


def _col(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)[:, None, None]


def _blur(img: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per-image separable Gaussian blur (sigma per image, 0 = none) by shifted sums."""
    radius = max(1, int(np.ceil(2 * float(sigma.max(initial=0.0)))))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    s = np.maximum(sigma.astype(np.float32), 1e-3)[:, None]
    w = np.exp(-0.5 * (taps[None, :] / s) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    pad = np.pad(img, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    rows = sum(w[:, k, None, None] * pad[:, k : k + img.shape[1]] for k in range(taps.size))
    pad = np.pad(rows, ((0, 0), (0, 0), (radius, radius)), mode="edge")
    return sum(w[:, k, None, None] * pad[:, :, k : k + img.shape[2]] for k in range(taps.size))


def render(
    params: dict[str, np.ndarray],
    size: int = 64,
    rng: np.random.Generator | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """Renders grayscale eye images ``(B, size, size)`` uint8 from ``params``.

    ``rng`` draws the sensor noise (no noise without it). Vectorised over the batch, in
    chunks of ``chunk`` images so the temporaries stay in the CPU cache (3x faster than one
    big batch).
    """
    n = params["gaze_h"].shape[0]
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(0, n, chunk):
        part = {k: v[i : i + chunk] for k, v in params.items()}
        out[i : i + chunk] = _render(part, size, rng)
    return out


def _render(params: dict[str, np.ndarray], size: int, rng: np.random.Generator | None):
    sc = size / 64
    grid = np.arange(size, dtype=np.float32)
    t = np.deg2rad(params["head_roll"]).astype(np.float32)
    c, s = _col(np.cos(t)), _col(np.sin(t))
    du = grid[None, None, :] - ((size - 1) / 2 + _col(params["offset_x"]) * sc)
    dv = grid[None, :, None] - ((size - 1) / 2 + _col(params["offset_y"]) * sc)
    # Into the eye frame: inverse rotation of the pixel offsets.
    x = c * du + s * dv
    y = -s * du + c * dv

    a = _HALF_WIDTH * size
    y0 = _LID_Y0 * size
    shape = np.clip(1 - (x / a) ** 2, 0, None)  # lid curves: parabolas through the corners
    lower = y0 + _LOWER * size * shape
    upper = lower - _col(params["openness"] * _opening(params, size)) * shape
    opening = _soft(np.minimum(np.minimum(y - upper, lower - y), a - np.abs(x)))

    pts = _eye_frame_points(params, size)
    ix, iy = _col(pts[:, 2, 0]), _col(pts[:, 2, 1])
    r = np.sqrt((x - ix) ** 2 + (y - iy) ** 2)
    r_iris = _IRIS * size
    iris = _soft(r_iris - r)
    pupil = _soft(_col(params["pupil_size"]) * r_iris - r)
    glint = _soft(1.2 * sc - np.sqrt((x - ix - 0.35 * r_iris) ** 2 + (y - iy + 0.35 * r_iris) ** 2))

    skin = _col(params["skin_tone"]) * (1 - 0.15 * (y / size + 0.5))  # light from above
    brow = _soft(2.5 * sc - np.abs(y + 0.3 * size + 0.08 * size * shape)) * (np.abs(x) < a * 1.1)
    lash = _soft(1.0 * sc - np.abs(y - upper)) * (np.abs(x) < a)
    eye = 0.92 * (1 - iris) + iris * (_col(params["iris_tone"]) * (1 - pupil) + 0.04 * pupil)
    eye = np.maximum(eye, glint)
    img = skin * (1 - opening) + eye * opening
    img = img * (1 - 0.75 * brow) * (1 - 0.8 * lash)

    g = params["glasses"].astype(bool)
    if g.any():
        img[g] = _glasses(img[g], x[g], y[g], size)
    img = _blur(img * _col(params["illumination"]), params["blur"] * sc)
    if rng is not None:  # sensor noise: absolute, so dark images have a low signal/noise
        img = img + _col(params["noise"]) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _glasses(img: np.ndarray, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """A dark frame around the eye, a tinted lens and a bright diagonal glare band."""
    rim = np.sqrt((x / (0.46 * size)) ** 2 + (y / (0.3 * size)) ** 2)  # elliptic lens, 1 on the rim
    frame = _soft(2.0 * size / 64 - np.abs(rim - 1) * 0.3 * size)
    lens = _soft((1 - rim) * 0.3 * size)
    glare = _soft(0.07 * size - np.abs(x + y + 0.05 * size) / np.sqrt(2)) * lens
    img = img * (1 - 0.25 * lens) + 0.2 * lens  # lens tint lowers contrast
    img = img * (1 - 0.7 * glare) + 0.95 * 0.7 * glare
    return img * (1 - 0.85 * frame)
