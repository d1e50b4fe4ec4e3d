"""Root-cause clusters on disk (HUDD step 3, for the engineer): ``T/<bestLayer>/Cluster_<id>/``
with copies of the cluster's images, and ``Cluster_<id>.gif`` showing every member one
after the other (600 ms per frame: the paper's 100 images per minute).

Example:
    >>> from PIL import Image, ImageDraw
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     Image.new("L", (64, 32), 80).save(d / f"{i}.png")  # identical frames too
    >>> write_gif([d / f"{i}.png" for i in range(3)], d / "c.gif")
    3
    >>> Image.open(d / "c.gif").n_frames
    3
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hudd_core.data.datasets import open_image
from hudd_core.fileio import atomic_write, fresh_tmp_dir, replace_dir, safe_component

FRAME_MS = 600
GIF_MAX_SIDE = 256
COUNTER_STRIP = 14  # pixels below each frame for its "i/n" counter


def flat_name(image: str) -> str:
    """File name of an image in its RCC folder: its path below the set, ``/`` → ``_``
    (``TestSet/closed/000123.png`` → ``closed_000123.png``), made safe
    (:func:`hudd_core.fileio.safe_component`: never a path, ``..`` or NUL).

    Example:
        >>> flat_name("TestSet/closed/000123.png"), flat_name("TestSet/..")
        ('closed_000123.png', '_..')
    """
    parts = image.split("/")
    return safe_component("_".join(parts[1:] if len(parts) > 1 else parts))


def unique_flat_names(images: list[str]) -> list[str]:
    """:func:`flat_name` of each image, a ``~2``, ``~3``, ... added before the extension
    where two images would get the same name (``a/b_c.png`` and ``a_b/c.png``), so no
    copy overwrites another.

    Example:
        >>> unique_flat_names(["T/a/b_c.png", "T/a_b/c.png", "T/d.png"])
        ['a_b_c.png', 'a_b_c~2.png', 'd.png']
    """
    seen: dict[str, int] = {}
    out = []
    for image in images:
        name = flat_name(image)
        n = seen.get(name, 0) + 1
        seen[name] = n
        if n > 1:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}~{n}.{ext}" if dot and stem else f"{name}~{n}"
        out.append(name)
    return out


# What else lives at the top of T/: a layer of that name gets a ``_`` before it, so its
# RCC folder never replaces a step's output (module names such as ``clusters.csv`` exist).
RESERVED = (
    "Heatmaps", "ImprovementHeatmaps", "ClusterAnalysis", "DNNModels", "UnsafeSet", "Assign",
    "DataSets", "run.json", "trainResult.csv", "testResult.csv", "clusters.csv",
    "unsafe_set.csv", "retrain.json", "report.html", "skipped.csv", "inspection.csv",
)  # fmt: skip


def rcc_folder(workdir: str | Path, layer: str) -> Path:
    """``T/<layer>/``, the RCC folders of ``layer``: its name made safe, and never one of
    the work folder's own files or folders.

    Example:
        >>> rcc_folder("T", "features.10").as_posix(), rcc_folder("T", "Heatmaps").as_posix()
        ('T/features.10', 'T/_Heatmaps')
    """
    return Path(workdir) / safe_component(layer, RESERVED)


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def thumbnail(path: Path | str, max_side: int = GIF_MAX_SIDE) -> Image.Image:
    """The image (a path or a URI) scaled (both ways) so that its longer side is
    ``max_side``: grayscale images stay grayscale ("L": GIFs of them need no colour
    quantisation), others RGB."""
    with open_image(path) as im:
        im = im.convert("L" if im.mode in GRAY_MODES else "RGB")
    scale = max_side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS)


def write_gif(
    paths: list[Path | str], out: Path, frame_ms: int = FRAME_MS, max_side: int = GIF_MAX_SIDE
) -> int:
    """An animated GIF of all ``paths``: one frame each, centred on a common canvas, with
    a strip below showing "i/n" (the engineer knows where they are, and no two frames are
    identical: Pillow would merge those, adding up their durations). Returns the number
    of frames; written through a temporary file and a rename."""
    frames = [thumbnail(p, max_side) for p in paths]
    if not frames:
        return 0
    mode = "L" if all(f.mode == "L" for f in frames) else "RGB"
    w = max(f.width for f in frames)
    h = max(f.height for f in frames)
    white = 255 if mode == "L" else (255, 255, 255)
    canvas = []
    for i, f in enumerate(frames):
        c = Image.new(mode, (w, h + COUNTER_STRIP))
        c.paste(f.convert(mode), ((w - f.width) // 2, (h - f.height) // 2))
        ImageDraw.Draw(c).text((3, h + 1), f"{i + 1}/{len(frames)}", fill=white)
        canvas.append(c)
    atomic_write(
        out,
        lambda tmp: canvas[0].save(
            tmp, format="GIF", save_all=True, append_images=canvas[1:], duration=frame_ms, loop=0
        ),
    )
    return len(canvas)


def write_rcc_folders(
    workdir: Path,
    data: Path,
    layer: str,
    images: list[str],
    labels: np.ndarray,
    *,
    gifs: bool = True,
    progress: bool = False,
) -> Path:
    """Builds ``T/<layer>/`` (one ``Cluster_<id>/`` folder of image copies and one
    ``Cluster_<id>.gif`` per cluster) in a temporary folder, then renames it into place.
    Images missing under ``data`` are skipped with one warning."""
    from hudd_core.progress import bar

    final = rcc_folder(workdir, layer)
    tmp = fresh_tmp_dir(final)
    labels = np.asarray(labels)
    missing = []
    for cid in bar(np.unique(labels).tolist(), desc="RCC folders", enabled=progress):
        folder = tmp / f"Cluster_{int(cid)}"
        folder.mkdir()
        present = []
        rows = np.flatnonzero(labels == cid)
        for i, name in zip(rows, unique_flat_names([images[i] for i in rows]), strict=True):
            src = Path(data) / images[i]
            if not src.is_file():
                missing.append(images[i])
                continue
            shutil.copyfile(src, folder / name)
            present.append(src)
        if gifs and present:
            write_gif(present, tmp / f"Cluster_{int(cid)}.gif")
    if missing:
        warnings.warn(
            f"{len(missing)} clustered images are missing under {data} "
            f"(first: {missing[0]}); their copies and frames are left out",
            RuntimeWarning,
            stacklevel=2,
        )
    replace_dir(tmp, final)
    return final
