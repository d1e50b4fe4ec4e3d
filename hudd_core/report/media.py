"""The report's pictures, small by construction: per cluster one contact sheet (at most
``SHEET_FRAMES`` evenly spaced members, ``SHEET_CELL`` px cells, WebP) that the page also
plays as the cluster's animation, one strip of heatmap overlays for a handful of members,
and data URIs to embed them.

Example:
    >>> from PIL import Image
    >>> sheet, n = contact_sheet([Image.new("L", (32, 16), 9)] * 12, cell=8, cols=5)
    >>> sheet.size, n
    ((40, 24), 12)
    >>> pick_evenly(list(range(10)), 4)
    [0, 3, 6, 9]
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, features

from hudd_core.data.datasets import image_source, open_image
from hudd_core.rcc import GRAY_MODES

SHEET_FRAMES = 100  # one minute of animation at the paper's 100 images per minute
SHEET_CELL = 48
SHEET_COLS = 10
OVERLAY_CELL = 72
QUALITY = 70


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for embedding in the page."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encoded_uri(im: Image.Image) -> str:
    """The picture as a lossy WebP data URI (JPEG where Pillow lacks WebP): thumbnails of
    photographs compress 4-5x better than PNG at no visible cost at this size."""
    buf = io.BytesIO()
    if features.check("webp"):
        im.save(buf, format="WEBP", quality=QUALITY, method=6)
        return data_uri(buf.getvalue(), "image/webp")
    im.convert("RGB").save(buf, format="JPEG", quality=QUALITY)
    return data_uri(buf.getvalue(), "image/jpeg")


def plot_uri(png: bytes, colors: int = 32) -> str:
    """A matplotlib PNG as a data URI, reduced to a ``colors`` palette (a plot has a few
    colours plus their anti-aliasing: a quarter of the bytes, no visible change)."""
    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("RGB").quantize(colors, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return data_uri(min(buf.getvalue(), png, key=len), "image/png")


def pick_evenly(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced, first and last included."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def load_thumbnail(path: Path | str, cell: int) -> Image.Image | None:
    """The image (a path or a URI) fitted into ``cell`` × ``cell`` (aspect kept),
    grayscale images kept grayscale; None when it is missing or unreadable (the page
    says how many)."""
    try:
        with open_image(path) as im:
            im = im.convert("L" if im.mode in GRAY_MODES else "RGB")
    except (OSError, ValueError):
        return None
    scale = cell / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)


def contact_sheet(
    thumbs: list[Image.Image], cell: int = SHEET_CELL, cols: int = SHEET_COLS
) -> tuple[Image.Image, int]:
    """The thumbnails in a grid of ``cols`` columns of ``cell`` px squares (each centred
    on black), row by row. Returns the sheet and its number of cells."""
    mode = "L" if all(t.mode == "L" for t in thumbs) else "RGB"
    cols = max(1, min(cols, len(thumbs)))
    rows = -(-len(thumbs) // cols)
    sheet = Image.new(mode, (cols * cell, rows * cell))
    for i, t in enumerate(thumbs):
        x, y = (i % cols) * cell, (i // cols) * cell
        sheet.paste(t.convert(mode), (x + (cell - t.width) // 2, y + (cell - t.height) // 2))
    return sheet, len(thumbs)


def relevance_map(row: np.ndarray, shape: list[int]) -> np.ndarray:
    """A heatmap row as a 2-D map: reshaped to its layer's shape, channels summed (a
    flat layer becomes one row)."""
    a = np.asarray(row, dtype=np.float32).reshape(shape) if shape else np.asarray(row)
    if a.ndim == 3:
        a = a.sum(axis=0)
    elif a.ndim == 1:
        a = a[None, :]
    return a


def overlay(image: Image.Image, rel: np.ndarray, size: int = OVERLAY_CELL) -> Image.Image:
    """``rel`` (any 2-D size; upsampled bilinearly) over the grayscale image: red for
    positive relevance, blue for negative, scaled by the largest magnitude."""
    from matplotlib import colormaps

    base = image.convert("L").convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    m = float(np.abs(rel).max()) or 1.0
    up = Image.fromarray((rel / m).astype(np.float32), mode="F")
    up = np.asarray(up.resize((size, size), Image.Resampling.BILINEAR))
    rgba = colormaps["bwr"]((np.clip(up, -1, 1) + 1) / 2)
    alpha = np.clip(np.abs(up), 0, 1)[..., None] * 0.85
    out = np.asarray(base, dtype=np.float32) / 255 * (1 - alpha) + rgba[..., :3] * alpha
    return Image.fromarray((out * 255).astype(np.uint8))


class Heatmaps:
    """Rows of the recorded layers (memory-mapped), by image, for the overlays. Reads
    ``T/Heatmaps/layers.json`` and ``index.csv`` itself (a plain reader: the report does
    not import the steps that wrote them)."""

    def __init__(self, workdir: Path):
        hm = Path(workdir) / "Heatmaps"
        self.layers: dict[str, dict] = {}
        self.row: dict[str, int] = {}
        try:
            meta = json.loads((hm / "layers.json").read_text())
            self.layers = {m["name"]: m for m in meta["layers"]}
            with open(hm / "index.csv", newline="") as f:
                self.row = {r["image"]: int(r["row"]) for r in csv.DictReader(f)}
        except (OSError, ValueError, KeyError):
            pass
        self.dir = hm
        self._open: dict[str, np.ndarray] = {}

    def get(self, layer: str, image: str) -> np.ndarray | None:
        """The image's relevance at ``layer`` as a 2-D map, or None if not recorded."""
        if layer not in self.layers or image not in self.row:
            return None
        if layer not in self._open:
            path = self.dir / self.layers[layer]["file"]
            if not path.exists():
                return None
            self._open[layer] = np.load(path, mmap_mode="r")
        return relevance_map(self._open[layer][self.row[image]], self.layers[layer]["shape"])


def overlay_strip(
    data: Path, images: list[str], hm: Heatmaps, layers: list[str], cell: int = OVERLAY_CELL
) -> tuple[Image.Image, list[str]] | None:
    """One picture: a row per image (those that exist), its columns the image and its
    relevance at each of ``layers`` (black where not recorded). Returns it and the images
    shown, or None when none exists."""
    rows, shown = [], []
    for img in images:
        try:
            with open_image(image_source(data, img)) as im:
                im = im.convert("RGB")
        except (OSError, ValueError):
            continue
        views = [im.resize((cell, cell), Image.Resampling.BILINEAR)]
        for layer in layers:
            rel = hm.get(layer, img)
            views.append(
                overlay(im, rel, cell) if rel is not None else Image.new("RGB", (cell,) * 2)
            )
        rows.append(views)
        shown.append(img)
    if not rows:
        return None
    strip = Image.new("RGB", (cell * len(rows[0]), cell * len(rows)))
    for r, views in enumerate(rows):
        for c, v in enumerate(views):
            strip.paste(v, (c * cell, r * cell))
    return strip, shown
