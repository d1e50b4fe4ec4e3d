"""The tree scan of image folders (ImageFiles, ImageSet): plain strings from os.scandir,
the same files and order as the former ``Path.rglob`` scan."""

from __future__ import annotations

import os

import pytest

from hudd_core.data.datasets import IMG_EXTENSIONS, ImageFiles, _images_under


def rglob_images(folder):
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMG_EXTENSIONS and p.is_file()
    )


def test_scan_equals_rglob(tmp_path):
    root = tmp_path / "Pool"
    (root / "a" / "b").mkdir(parents=True)
    (root / "dir.png").mkdir()  # a folder with an image name: not an image
    for name in ["x.PNG", "a/y.jpg", "a/b/z.png", "a/b/q.Png", "a/notes.txt", ".png",
                 "a/.hidden.png", "a/b/10.png", "a/b/9.png"]:  # fmt: skip
        (root / name).write_bytes(b"x")
    try:
        os.symlink(root / "x.PNG", root / "a" / "link.png")  # counted (a file)
        os.symlink(root / "missing.png", root / "a" / "broken.png")  # not a file
        os.symlink(root / "a", root / "linked_dir")  # not entered
    except OSError:
        pytest.skip("no symlinks here")
    got = _images_under(root)
    assert got == rglob_images(root)
    assert got == ["a/.hidden.png", "a/b/10.png", "a/b/9.png", "a/b/q.Png", "a/b/z.png",
                   "a/link.png", "a/y.jpg", "x.PNG"]  # fmt: skip
    assert ImageFiles(root).ids == [f"Pool/{n}" for n in got]
