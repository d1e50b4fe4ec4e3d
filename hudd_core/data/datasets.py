"""Reading a DataSets folder (``TrainingSet``, ``TestSet``, ...) as a torch Dataset.

Classifier sets are class sub-folders of images (class index = sorted folder names, as
torchvision's ImageFolder); keypoint sets are images plus ``labels.csv``
(``image,x0,y0,x1,y1,...``). Images become tensors plainly (docs/design.md#inputs): pixel / 255 as
float32, as many channels as the model takes, optional resize and mean/std normalisation.

Example:
    >>> import tempfile
    >>> from hudd_core.data.generate import generate
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = generate(root, sizes={"TestSet": 12}, progress=False)
    >>> ds = ImageSet(root / "TestSet")
    >>> x, y = ds[0]
    >>> tuple(x.shape), x.dtype, ds.ids[0].startswith("TestSet/"), ds.task
    ((1, 64, 64), torch.float32, True, 'classifier')
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from hudd_core.data.uris import is_uri, read_uri, require_pyarrow
from hudd_core.fileio import shown_name

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(folder: Path) -> list[str]:
    """Class names of a classifier set: its sub-folders, sorted (ImageFolder's order)."""
    return sorted(e.name for e in Path(folder).iterdir() if e.is_dir())


def _images_under(folder: Path) -> list[str]:
    """Image files under ``folder`` (by extension), relative POSIX paths, sorted: the files
    ``folder.rglob("*")`` finds (symlinked folders are not entered, unreadable ones are
    passed over), but as plain strings from ``os.scandir``. No ``Path`` object per file:
    listing 100k images takes 18 MB instead of 57 MB and 0.2 s instead of 1.7 s."""
    found: list[str] = []
    todo = [("", str(folder))]
    while todo:
        prefix, path = todo.pop()
        try:
            with os.scandir(path) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        todo.append((f"{prefix}{e.name}/", e.path))
                    elif os.path.splitext(e.name)[1].lower() in IMG_EXTENSIONS and e.is_file():
                        found.append(prefix + e.name)
        except PermissionError:
            continue
    found.sort()
    return found


FILE_LIST = "files.txt"  # optional: the images of a folder listed instead of scanned


def _listed_images(folder: Path) -> list[str]:
    """The images listed in ``folder/files.txt``, in its order: paths relative to
    ``folder``, or URIs (``s3://bucket/key.png``, ``file:///abs/x.png``: any scheme
    pyarrow's file systems read), kept verbatim; blank lines and ``#`` comments ignored.
    Listing a pool of millions of images once saves scanning the tree on every run and
    lets the engineer choose them (or name them in an object store)."""
    path = folder / FILE_LIST
    names: list[str] = []
    checked = False  # pyarrow, once there is a URI
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_uri(entry):
            if not checked:
                try:
                    require_pyarrow(entry)
                except ImportError as exc:
                    raise ValueError(f"{path}, line {number}: {exc}") from None
                checked = True
            names.append(entry)
            continue
        rel = PurePosixPath(entry)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{path}, line {number}: {entry!r} is not a path inside {folder}")
        names.append(rel.as_posix())
    seen: set[str] = set()
    twice = [n for n in names if n in seen or seen.add(n)]
    if twice:
        raise ValueError(f"{path} lists images more than once: {_first(twice)}")
    return names


def _other_files_under(folder: Path) -> list[str]:
    """Files under ``folder`` that are no image by their extension (hidden ones aside)."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() not in IMG_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def check_names(path: Path, names: Sequence[str]) -> None:
    """The ``image`` column of a set's CSV (``labels.csv``, ``metadata.csv``): every name
    once, and relative to the set folder (no absolute path, no ``..``); a ValueError
    naming the file and the offending names otherwise."""
    seen: set[str] = set()
    dups = [n for n in names if n in seen or seen.add(n)]
    if dups:
        raise ValueError(f"{path}: duplicate image names {_first(sorted(set(dups)))}")
    bad = [
        n
        for n in names
        if not n
        or "\0" in n
        or n.startswith(("/", "\\"))
        or ".." in n.replace("\\", "/").split("/")
        or (len(n) > 1 and n[1] == ":")
    ]
    if bad:
        raise ValueError(
            f"{path}: image names must be paths relative to the set folder, got {_first(bad)}"
        )


def read_labels(folder: Path) -> tuple[list[str], np.ndarray]:
    """``labels.csv`` of a keypoint set (``folder`` is the set, or the CSV file itself):
    image names and an ``(N, 2K)`` float32 array."""
    path = Path(folder)
    if path.is_dir():
        path = path / "labels.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0][0] != "image":
        raise ValueError(f"{path}: expected a header 'image,x0,y0,...'")
    width = len(rows[0])
    short = [r[0] if r else "(empty line)" for r in rows[1:] if len(r) != width]
    if short:
        raise ValueError(f"{path}: rows without {width} fields: {_first(short)}")
    try:
        values = np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric coordinate ({exc})") from exc
    names = [r[0] for r in rows[1:]]
    check_names(path, names)
    return names, values.reshape(len(rows) - 1, width - 1)


def read_metadata(folder: str | Path) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """``metadata.csv`` of a set, or None: image names and one array per column (numeric
    columns as float64, others such as ``planted`` as strings)."""
    path = Path(folder) / "metadata.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or not rows[0] or rows[0][0] != "image":
        raise ValueError(f"{path}: expected a header 'image,<param>,...'")
    header, body = rows[0], rows[1:]
    check_names(path, [r[0] if r else "" for r in body])
    columns = {}
    for j, name in enumerate(header[1:], start=1):
        raw = [r[j] for r in body]
        try:
            columns[name] = np.array(raw, dtype=np.float64)
        except ValueError:
            columns[name] = np.array(raw)
    return [r[0] for r in body], columns


# Pillow's own limit against decompression bombs (89 478 485 pixels): larger images are
# skipped with the reason, never decoded (``max_pixels`` raises it, up to twice Pillow's
# limit, where ``PIL.Image.open`` itself refuses unless ``PIL.Image.MAX_IMAGE_PIXELS``
# is raised too).
PIXEL_LIMIT = Image.MAX_IMAGE_PIXELS
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode(im: Image.Image, channels: int) -> Image.Image | np.ndarray:
    """An opened image as the model sees it, by these documented conversions:
    EXIF orientation applied (the photo as it is displayed); an animated file's first
    frame; palette images through RGBA when they carry transparency; the alpha channel
    (RGBA, LA, PA) dropped, colours kept; CMYK and YCbCr by Pillow's conversion to RGB;
    then grayscale (``L``, ITU-R 601 luma) or RGB. 16-bit grayscale (``I;16``) keeps its
    precision: a 2-D array already scaled to [0, 1] (value / 65535) is returned. Other
    modes (floating-point, 32-bit integer of unknown range) are a ValueError."""
    im.seek(0)  # animated GIF/PNG/WebP: the first frame
    im = ImageOps.exif_transpose(im)
    if im.mode in _SIXTEEN_BIT:
        if im.mode == "I" and im.getextrema()[1] > 65535:
            raise ValueError(f"32-bit integer pixels of range {im.getextrema()} (16-bit expected)")
        return np.asarray(im, dtype=np.float32) / 65535.0
    if im.mode == "F":
        raise ValueError("floating-point pixels (mode F) have no defined range")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    return im.convert("L" if channels == 1 else "RGB")


def _pixels(im: Image.Image | np.ndarray, channels: int, size: int | None) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` float32 in [0, 1], resized (bilinear) to ``size``."""
    if isinstance(im, np.ndarray):  # 16-bit grayscale, already in [0, 1]
        f = Image.fromarray(im)  # float32: mode F
        if size is not None and f.size != (size, size):
            f = f.resize((size, size), Image.BILINEAR)
        a = np.array(f, dtype=np.float32)  # writable: torch shares it
        return a if channels == 1 else np.repeat(a[..., None], 3, axis=2)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255.0


def uri_of(image: str) -> str | None:
    """The URI an image id of the files under ``T/`` names (``ImprovementSet/s3://b/k.png``:
    the pool's ``files.txt`` listed ``s3://b/k.png``), or None for a local image."""
    name = image.partition("/")[2]
    return name if is_uri(name) else None


def image_source(data_root: str | Path, image: str) -> Path | str:
    """What to open for an image id of the files under ``T/`` (``<Set>/<name>``): the URI
    when the pool's ``files.txt`` named the image by one (the id is then
    ``ImprovementSet/s3://bucket/key.png``), else ``data_root / image``.

    Example:
        >>> image_source("DataSets", "ImprovementSet/s3://b/k.png")
        's3://b/k.png'
        >>> image_source("DataSets", "TestSet/closed/1.png").as_posix()
        'DataSets/TestSet/closed/1.png'
    """
    uri = uri_of(image)
    return uri if uri is not None else Path(data_root) / image


def open_image(source: str | Path) -> Image.Image:
    """``PIL.Image.open`` of a local file, or of the bytes of a URI read through pyarrow
    (:func:`hudd_core.data.uris.read_uri`): one opening for every reader, so a URI image is
    decoded, checked and refused exactly as a local file is."""
    if isinstance(source, str) and is_uri(source):
        try:
            return Image.open(io.BytesIO(read_uri(source)))
        except UnidentifiedImageError:  # it would show the buffer, not the file
            raise UnidentifiedImageError(f"cannot identify image file {source!r}") from None
    return Image.open(source)


def copy_image(source: str | Path, target: Path) -> None:
    """The file ``source`` (a path or a URI, see :func:`image_source`) copied to ``target``."""
    if isinstance(source, str) and is_uri(source):
        target.write_bytes(read_uri(source))
    else:
        shutil.copyfile(source, target)


def load_image(
    path: str | Path,
    channels: int,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    max_pixels: int | None = None,
) -> torch.Tensor:
    """One image as a ``(channels, H, W)`` float32 tensor in [0, 1] (then normalised);
    ``channels`` is 1 (grayscale) or 3 (RGB), converting the file as :func:`decode`
    says. ``path`` is a local file or a URI (:func:`open_image`). A missing, corrupt or
    truncated file, or one of more than ``max_pixels`` pixels (default
    :data:`PIXEL_LIMIT`, Pillow's; a decompression bomb is never decoded), is a
    ValueError naming the file (the steps skip it into ``T/skipped.csv``)."""
    if channels not in (1, 3):
        raise ValueError(f"models taking {channels} input channels are not supported (1 or 3)")
    limit = PIXEL_LIMIT if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():  # the size is checked below, against our limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = open_image(path)
        with im:
            w, h = im.size
            if w * h > limit:
                raise ValueError(
                    f"{w} x {h} = {w * h} pixels, above the limit of {limit} (a decompression "
                    "bomb, or an image that needs max_pixels raised)"
                )
            a = _pixels(decode(im, channels), channels, image_size)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        # PIL's errors for corrupt, truncated and oversized files
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    x = torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())
    if mean is not None or std is not None:
        m = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float32)
        s = torch.tensor(std if std is not None else [1.0], dtype=torch.float32)
        x = (x - m.view(-1, 1, 1)) / s.view(-1, 1, 1)
    return x


def readable_path(folder: Path, name: str, follow_symlinks: bool = False) -> Path | str:
    """``folder / name``, the file an item reads, once it is safe to read: a name that is
    not valid UTF-8 (it could not be written to the CSVs under ``T/``), or a symbolic
    link (the file or a folder on its way) to a place outside the DataSets root
    (``folder``'s parent), is a ValueError naming it, so the step skips it into
    ``T/skipped.csv``; ``follow_symlinks`` reads such links. A URI listed in
    ``files.txt`` is returned as it is: it names its file explicitly, wherever it is."""
    if is_uri(name):
        return name
    path = folder / name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{shown_name(str(path))}: the file name is not valid UTF-8 (rename the file)"
        ) from None
    if not follow_symlinks:
        root, target = folder.resolve().parent, path.resolve()
        if not target.is_relative_to(root):
            raise ValueError(
                f"{path} is a symbolic link to {target}, outside {root}: not read "
                "(follow_symlinks=True reads such links)"
            )
    return path


class ImageSet(Dataset):
    """One set of a DataSets folder. Items are ``(image tensor, target)``: a class index
    (int64) for classifiers, ``(2K,)`` float32 pixel coordinates for keypoint sets.

    Attributes: ``task`` ("classifier"/"keypoints"), ``ids`` (image paths relative to the
    DataSets root, as in every file under T/), ``names`` (relative to the set folder),
    ``classes`` (classifier), ``targets``, ``other_files`` (classifier: files in the class
    folders that are no image by their extension; they are not items).

    A keypoint set's ``labels.csv`` must name every image once, relative to the set, and
    every named image must exist: otherwise a ValueError names the CSV and the images.
    Reading an item follows :func:`readable_path` (``follow_symlinks``) and
    :func:`load_image` (``max_pixels``): what they refuse is a ValueError the steps skip.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        task: str = "auto",
        channels: int = 1,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        classes: Sequence[str] | None = None,
        max_pixels: int | None = None,
        follow_symlinks: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.max_pixels, self.follow_symlinks = max_pixels, follow_symlinks
        if not self.folder.is_dir():
            raise FileNotFoundError(f"data set folder {self.folder} does not exist")
        if task == "auto":
            task = "keypoints" if (self.folder / "labels.csv").is_file() else "classifier"
        self.task = task
        self.channels, self.image_size, self.mean, self.std = channels, image_size, mean, std
        self.scale = 1.0  # keypoints follow a resize
        if task == "classifier":
            found = find_classes(self.folder)
            self.classes = list(classes) if classes is not None else found
            extra = set(found) - set(self.classes)
            if extra:
                raise ValueError(
                    f"{self.folder}: class folders {sorted(extra)} are not among "
                    f"the model's classes {self.classes}"
                )
            self.names = [f"{c}/{n}" for c in found for n in _images_under(self.folder / c)]
            self.other_files = [
                f"{c}/{n}" for c in found for n in _other_files_under(self.folder / c)
            ]
            index = {c: i for i, c in enumerate(self.classes)}
            self.targets = np.array([index[n.split("/", 1)[0]] for n in self.names], np.int64)
        elif task == "keypoints":
            self.classes, self.other_files = [], []
            self.names, self.targets = read_labels(self.folder)
            missing = [n for n in self.names if not (self.folder / n).is_file()]
            if missing:
                raise ValueError(
                    f"{self.folder / 'labels.csv'} names {len(missing)} image(s) that do not "
                    f"exist in {self.folder}: {_first(missing)}"
                )
            if image_size is not None and self.names:
                with Image.open(self.folder / self.names[0]) as im:
                    self.scale = image_size / im.size[0]
        else:
            raise ValueError(f"task must be 'classifier', 'keypoints' or 'auto', got {task!r}")
        self.ids = [f"{self.folder.name}/{n}" for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = readable_path(self.folder, self.names[i], self.follow_symlinks)
        x = load_image(path, self.channels, self.image_size, self.mean, self.std,
                       max_pixels=self.max_pixels)  # fmt: skip
        if self.task == "classifier":
            return x, torch.tensor(self.targets[i])
        return x, torch.from_numpy(self.targets[i] * self.scale)


class ImageFiles(Dataset):
    """Every image under ``folder`` (recursively, sorted; or the ones ``folder/files.txt``
    lists, in its order: relative paths or URIs), unlabeled: items are ``(image tensor,
    index)``. For the improvement pool, which needs no labels. A listed file that is
    missing or unreadable is skipped where it is read (``T/skipped.csv``), as a corrupt
    image is.

    ``ids`` are ``<folder name>/<name>``, relative to ``folder``'s parent (the DataSets
    root) as in files under T/; for a URI ``ImprovementSet/s3://bucket/key.png``
    (:func:`image_source` gives back what to open).
    ``max_pixels`` and ``follow_symlinks`` as for :class:`ImageSet`.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        channels: int = 1,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_pixels: int | None = None,
        follow_symlinks: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.max_pixels, self.follow_symlinks = max_pixels, follow_symlinks
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist")
        listed = (self.folder / FILE_LIST).is_file()
        self.names = _listed_images(self.folder) if listed else _images_under(self.folder)
        self.ids = [f"{self.folder.name}/{n}" for n in self.names]
        self.channels, self.image_size, self.mean, self.std = channels, image_size, mean, std

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = readable_path(self.folder, self.names[i], self.follow_symlinks)
        x = load_image(path, self.channels, self.image_size, self.mean, self.std,
                       max_pixels=self.max_pixels)  # fmt: skip
        return x, i


@dataclass
class LabelledImages(Dataset):
    """Images of the DataSets root (ids relative to it) with their targets, possibly
    repeated (bootstrap duplicates)."""

    data_root: Path
    ids: list[str]
    targets: np.ndarray
    channels: int
    task: str
    preprocessing: dict[str, Any] = field(default_factory=dict)  # image_size, mean, std

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = load_image(image_source(self.data_root, self.ids[i]), self.channels,
                       **self.preprocessing)  # fmt: skip
        t = self.targets[i]
        return x, torch.tensor(t) if self.task == "classifier" else torch.from_numpy(t)

    def subset(self, index: np.ndarray) -> LabelledImages:
        return LabelledImages(
            self.data_root,
            [self.ids[i] for i in index],
            self.targets[index],
            self.channels,
            self.task,
            self.preprocessing,
        )
