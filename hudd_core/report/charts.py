"""The report's two inline SVG figures as plain data (pixel geometry; the templates
``embedding.html`` and ``retraining.html`` draw it): the 2-D embedding of the error
images coloured by cluster, and the box plot of the retraining gains per method.

SVG rather than a PNG so that the page can point at the images under the cursor and so
that a test can read the values drawn. Both stay small at any size: the scatter draws
each cluster as one ``<path>`` of zero-length strokes (about 10 bytes a point, integer
coordinates; at most ``MAX_DOTS`` points), and only a capped sample of points carries an
image to show on hover.

Example:
    >>> scatter = embedding_scatter(
    ...     [{"image": "a", "cluster": "1", "x": "0", "y": "0"},
    ...      {"image": "b", "cluster": "2", "x": "1", "y": "1"}], hover={})
    >>> [(g["id"], g["n"], g["d"]) for g in scatter["groups"]]  # one scale for x and y
    [(1, 1, 'M120 410h0'), (2, 1, 'M520 10h0')]
    >>> box = box_plot({"hudd": [0.01, 0.03, 0.02], "BL2": [0.0]})
    >>> [(b["method"], round(b["stats"]["median"], 6), b["box"]) for b in box["boxes"]]
    [('hudd', 2.0, True), ('BL2', 0.0, False)]
"""

from __future__ import annotations

import colorsys

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.ticker import MaxNLocator

from hudd_core.cluster.labels import NOISE

WIDTH, HEIGHT, PAD = 640, 420, 10  # the scatter's viewBox
NOISE_COLOUR = "#9e9e9e"
MAX_DOTS = 20_000  # past this many error images, an even sample is drawn (~10 bytes a dot)
BOX_HEIGHT, BOX_TOP, BOX_BOTTOM, BOX_LEFT, BOX_SLOT = 260, 16, 36, 56, 90
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)  # whiskers at min and max: few runs, no outliers
STATS = ("low", "q1", "median", "q3", "high")


def palette(ids: list[int]) -> dict[int, str]:
    """A colour per cluster id: matplotlib's tab10 (the plots' C0, C1, ...; its grey left
    for the unclustered) up to 9 clusters, evenly turned hues (golden angle, two
    lightnesses) past that; :data:`NOISE` grey.

    Example:
        >>> palette([0, 1, 2])
        {0: '#9e9e9e', 1: '#1f77b4', 2: '#ff7f0e'}
    """
    real = [c for c in ids if c != NOISE]
    tab = [to_hex(c) for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
    out = {NOISE: NOISE_COLOUR} if NOISE in ids else {}
    for i, c in enumerate(real):
        if len(real) <= len(tab):
            out[c] = tab[i]
        else:
            rgb = colorsys.hls_to_rgb((i * 0.381966) % 1.0, 0.38 + 0.17 * (i % 2), 0.7)
            out[c] = to_hex(rgb)
    return out


def cluster_label(cid: int) -> str:
    """``unclustered`` for the density methods' noise (cluster 0), else the id."""
    return "unclustered" if cid == NOISE else str(cid)


def _fit(xy: np.ndarray) -> np.ndarray:
    """``xy`` into the viewBox, one scale for both axes (distances keep their meaning),
    y upwards, centred; integer pixels."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = min((WIDTH - 2 * PAD) / span[0], (HEIGHT - 2 * PAD) / span[1])
    off = (np.array([WIDTH, HEIGHT]) - 2 * PAD - (hi - lo) * scale) / 2 + PAD
    px = (xy - lo) * scale + off
    px[:, 1] = HEIGHT - px[:, 1]
    return np.rint(px).astype(int)


def embedding_scatter(
    rows: list[dict], hover: dict[int, list[tuple[str, int]]], cap: int = MAX_DOTS
) -> dict:
    """The scatter of ``embedding.csv``'s rows (``image,cluster,x,y``): per cluster (id
    order) its colour, label, size ``n``, path and number of ``dots`` drawn (all, up to
    ``cap`` rows on the page: then an even sample of them); ``hover``: per cluster the
    images that show on hover, each with its cell in the cluster's contact sheet
    (always drawn). ``points``: ``[x, y, cluster, cell, image]`` of those."""
    xy = _fit(np.array([[float(r["x"]), float(r["y"])] for r in rows], float).reshape(-1, 2))
    on_hover = {image for shown in hover.values() for image, _ in shown}
    keep = np.zeros(len(rows), bool)
    keep[np.linspace(0, len(rows) - 1, min(cap, len(rows))).round().astype(int)] = True
    where: dict[str, tuple[int, int]] = {}
    size: dict[int, int] = {}
    paths: dict[int, list[str]] = {}
    for r, (x, y), kept in zip(rows, xy.tolist(), keep.tolist(), strict=True):
        c = int(r["cluster"])
        size[c] = size.get(c, 0) + 1
        paths.setdefault(c, [])
        if kept or r["image"] in on_hover:
            paths[c].append(f"M{x} {y}h0")
        where[r["image"]] = (x, y)
    colours = palette(sorted(paths))
    groups = [
        {
            "id": c,
            "label": cluster_label(c),
            "colour": colours[c],
            "n": size[c],
            "dots": len(paths[c]),
            "d": "".join(paths[c]),
        }
        for c in sorted(paths)
    ]
    points = [
        [*where[image], c, cell, image]
        for c, shown in sorted(hover.items())
        for image, cell in shown
        if image in where
    ]
    return {"groups": groups, "points": points, "n": len(rows),
            "dots": sum(g["dots"] for g in groups), "width": WIDTH, "height": HEIGHT}  # fmt: skip


def box_stats(runs: list[float]) -> dict[str, float]:
    """Whiskers (min, max), quartiles and median of ``runs`` (numpy's linear quantiles)."""
    return dict(zip(STATS, np.quantile(np.asarray(runs, float), QUANTILES).tolist(), strict=True))


def box_plot(runs: dict[str, list[float]], scale: float = 100.0) -> dict:
    """A box per method of its per-repeat values (``runs``, times ``scale``: gains in
    percentage points); a method with one run is drawn as its point alone. Returns the
    axis (``lo``/``hi`` at pixels ``y_lo``/``y_hi``, ticks, the zero line) and per method
    its stats (in the axis' unit), their pixels and its points."""
    values = {m: [float(v) * scale for v in r] for m, r in runs.items() if r}
    every = [v for r in values.values() for v in r] + [0.0]
    ticks = MaxNLocator(nbins=6).tick_values(min(every), max(every))
    lo, hi = float(ticks[0]), float(ticks[-1])
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    y_lo, y_hi = BOX_TOP + BOX_HEIGHT, BOX_TOP

    def y(v: float) -> float:
        return round(y_lo - (v - lo) / (hi - lo) * (y_lo - y_hi), 2)

    boxes = []
    for i, (method, r) in enumerate(values.items()):
        stats = box_stats(r)
        x = BOX_LEFT + BOX_SLOT * (i + 0.5)
        spread = np.linspace(-12, 12, len(r)) if len(r) > 1 else np.zeros(1)
        boxes.append(
            {
                "method": method,
                "x": x,
                "stats": stats,
                "px": {k: y(v) for k, v in stats.items()},
                "points": [(round(x + dx, 2), y(v)) for dx, v in zip(spread, r, strict=True)],
                "box": len(r) > 1,
                "runs": len(r),
            }
        )
    return {
        "boxes": boxes,
        "lo": lo,
        "hi": hi,
        "y_lo": y_lo,
        "y_hi": y_hi,
        "zero": y(0.0),
        "ticks": [(float(t), y(float(t))) for t in ticks if lo <= t <= hi],
        "left": BOX_LEFT,
        "width": BOX_LEFT + BOX_SLOT * max(1, len(boxes)) + 10,
        "height": BOX_TOP + BOX_HEIGHT + BOX_BOTTOM,
    }
