"""Pool images named by URI in ``ImprovementSet/files.txt`` (issue 13, object stores):
``file://`` URIs to files outside the DataSets root, read through pyarrow's file systems,
give the tensors, the skips and the unsafe set of the same pool listed by relative paths,
with both engines; ``s3://`` URIs reach pyarrow's S3 file system with the bucket and key
(checked without network: a local stand-in for the bucket)."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hudd_core.data import uris
from hudd_core.data.datasets import (
    ImageFiles,
    LabelledImages,
    image_source,
    load_image,
    uri_of,
)
from hudd_testkit.assign_fixtures import make_assign_case, read_skipped, run_assign

BAD = ("missing.png", "corrupt.png")  # listed by URI in every pool built here


@pytest.fixture(autouse=True)
def _fresh_filesystems():
    """Every test builds its own file systems (and leaves none to the next)."""
    uris._FILESYSTEMS.clear()
    yield
    uris._FILESYSTEMS.clear()


def _list(pool: Path, names: list[str]) -> None:
    (pool / "files.txt").write_text("# the pool\n" + "\n".join(names) + "\n")


def uri_copy(data: Path, out: Path, bucket: Path, names: list[str]) -> dict[str, str]:
    """A copy of the DataSets ``data`` at ``out`` whose ImprovementSet/files.txt lists
    ``names``: every other one, and the BAD ones, moved under ``bucket`` (outside
    ``out``) and listed by ``file://`` URI, the rest by relative path. Returns {image id
    in the copy: image id in ``data``}."""
    shutil.copytree(data, out)
    pool = out / "ImprovementSet"
    entries, ids = [], {}
    for k, name in enumerate(names):
        entry = name
        if k % 2 == 0 or name.endswith(BAD):
            target = bucket / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (pool / name).exists():
                shutil.move(pool / name, target)
            entry = target.as_uri()
        entries.append(entry)
        ids[f"ImprovementSet/{entry}"] = f"ImprovementSet/{name}"
    _list(pool, entries)
    return ids


def _add_bad(folder: Path) -> list[str]:
    """A corrupt image in ``folder`` and the name of one that does not exist."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return [f"{folder.name}/corrupt.png", f"{folder.name}/missing.png"]


def _pool_of_modes(tmp_path: Path) -> tuple[Path, list[str]]:
    """DataSets/ImprovementSet with images of several modes and sizes (converted as
    docs/design.md#inputs says), then a corrupt and a missing one; the names, in listing order."""
    pool = tmp_path / "DataSets" / "ImprovementSet"
    rng = np.random.default_rng(0)
    (pool / "a").mkdir(parents=True)
    (pool / "b").mkdir()
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(pool / "a" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)).save(pool / "a" / "rgb.png")
    Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)).save(pool / "b" / "i16.png")
    pal = Image.fromarray(rng.integers(0, 8, (8, 8), dtype=np.uint8)).convert("P")
    pal.save(pool / "b" / "pal.png", transparency=0)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(pool / "b" / "j.jpg")
    names = ImageFiles(pool).names + _add_bad(pool / "b")
    return pool, names


@pytest.mark.parametrize("channels", [1, 3])
def test_uri_pool_reads_the_tensors_of_the_local_files(tmp_path, channels):
    pool, names = _pool_of_modes(tmp_path)
    ids = uri_copy(pool.parent, tmp_path / "URI", tmp_path / "bucket", names)
    _list(pool, names)
    load = {"channels": channels, "image_size": 4, "mean": [0.5] * channels}
    local, remote = (
        ImageFiles(pool, **load),
        ImageFiles(tmp_path / "URI" / "ImprovementSet", **load),
    )
    assert [ids[i] for i in remote.ids] == local.ids  # one id per line, in its order
    assert sum(uri_of(i) is not None for i in remote.ids) == 5
    for k in range(len(names)):
        if names[k].endswith(BAD):
            continue
        assert torch.equal(remote[k][0], local[k][0]), names[k]
    for k in (names.index("b/corrupt.png"), names.index("b/missing.png")):
        uri = uri_of(remote.ids[k])
        with pytest.raises(ValueError, match="cannot read image") as exc:
            remote[k]
        assert str(exc.value).startswith(f"cannot read image {uri}: ")
    with pytest.raises(ValueError, match=r"cannot read image .*b/missing\.png"):
        local[names.index("b/missing.png")]
    k = names.index("b/corrupt.png")  # the local file's message, naming the URI
    with pytest.raises(ValueError) as exc:
        local[k]
    with pytest.raises(ValueError) as uri_exc:
        remote[k]
    assert str(uri_exc.value) == str(exc.value).replace(str(pool / names[k]), uri_of(remote.ids[k]))


def test_uri_images_read_by_id_in_the_later_steps(tmp_path):
    """The retraining's images, the report's thumbnails and overlays find URI images by
    their id (:func:`image_source`); a URI image has no class folder to label it."""
    from hudd_core.report import media
    from hudd_core.retrain import label_images

    pool, names = _pool_of_modes(tmp_path)
    ids = uri_copy(pool.parent, tmp_path / "URI", tmp_path / "bucket", names)
    root = tmp_path / "URI"
    uri_id = next(i for i in ids if i.endswith("gray.png"))
    local_path = pool / "a" / "gray.png"
    assert image_source(root, uri_id) == uri_of(uri_id) == (tmp_path / "bucket/a/gray.png").as_uri()
    got = LabelledImages(root, [uri_id], np.array([0]), 1, "classifier")[0][0]
    assert torch.equal(got, load_image(local_path, 1))
    thumb = media.load_thumbnail(image_source(root, uri_id), 16)
    assert thumb.tobytes() == media.load_thumbnail(local_path, 16).tobytes()
    strip, shown = media.overlay_strip(root, [uri_id, "ImprovementSet/a/none.png"],
                                       media.Heatmaps(tmp_path / "T"), [])  # fmt: skip
    assert shown == [uri_id] and strip.size == (media.OVERLAY_CELL, media.OVERLAY_CELL)
    meta = {"task": "classifier", "classes": ["a", "b"]}
    assert label_images(pool.parent, ["ImprovementSet/a/gray.png"], meta).tolist() == [0]
    with pytest.raises(ValueError, match=r"no label for ImprovementSet/file://.*give --labels"):
        label_images(root, [uri_id], meta)


def _uri_case(model_workdir) -> tuple:
    """The assign case twice: ``w.data``'s pool listed by relative paths (``reference``
    is its T), and a copy of the data whose files.txt lists half of the same images, the
    corrupt one and a missing one by ``file://`` URI (``uri_data``, T = ``w.T``)."""
    w, reference = make_assign_case(model_workdir)
    pool = w.data / "ImprovementSet"
    names = ImageFiles(pool).names + _add_bad(pool / "left")
    ids = uri_copy(w.data, w.root / "URIData", w.root / "bucket", names)
    _list(pool, names)
    return w, reference, w.root / "URIData", ids


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _copies(T: Path, cluster: int) -> list[bytes]:
    return sorted(p.read_bytes() for p in (T / "UnsafeSet" / str(cluster)).iterdir())


def test_local_engine_on_a_uri_pool_selects_the_same_images(model_workdir):
    w, reference, uri_data, ids = _uri_case(model_workdir)
    local = run_assign(w, reference, "local")
    got = run_assign(w, w.T, "local", data=uri_data)
    assert got == local and got["selected"] > 0 and got["skipped"] == 4
    rows, expected = _rows(w.T / "unsafe_set.csv"), _rows(reference / "unsafe_set.csv")
    assert any(uri_of(r["image"]) for r in rows) and any(not uri_of(r["image"]) for r in rows)
    assert [{**r, "image": ids[r["image"]]} for r in rows] == expected
    for c in local["quotas"]:  # the copies and GIFs of URI images too
        assert _copies(w.T, c) == _copies(reference, c)
        assert (w.T / "UnsafeSet" / f"Cluster_{c}.gif").is_file()
    skipped = read_skipped(w.T)
    expected_skips = [(s, i) for s, i, _ in read_skipped(reference)]
    assert sorted((s, ids[i]) for s, i, _ in skipped) == expected_skips
    reasons = {uri_of(i): r for _, i, r in skipped if uri_of(i)}
    assert set(BAD) <= {u.rsplit("/", 1)[1] for u in reasons}
    for uri, reason in reasons.items():
        assert reason.startswith(f"cannot read image {uri}: ")


def test_ray_engine_on_a_uri_pool_equals_the_local_engine(ray_cluster, model_workdir):
    w, reference, uri_data, _ = _uri_case(model_workdir)
    local = run_assign(w, reference, "local", data=uri_data)
    got = run_assign(w, w.T, "ray", data=uri_data)
    assert got == local and got["skipped"] == 4
    assert (w.T / "unsafe_set.csv").read_text() == (reference / "unsafe_set.csv").read_text()
    assert read_skipped(w.T) == read_skipped(reference)
    for c in local["quotas"]:
        assert _copies(w.T, c) == _copies(reference, c)


# --- pyarrow's file systems, without network -----------------------------------------------


def test_s3_uris_reach_pyarrow_s3_with_the_bucket_and_key(monkeypatch):
    from pyarrow import fs

    # a region in the URI: pyarrow then asks no server for the bucket's region
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s3, path = uris.locate("s3://my-bucket/pool/left/a%20b.png?region=eu-west-1")
    assert isinstance(s3, fs.S3FileSystem) and s3.region == "eu-west-1"
    assert path == "my-bucket/pool/left/a b.png"
    again, path = uris.locate("s3://my-bucket/x#1.png?region=eu-west-1")
    assert again is s3 and path == "my-bucket/x#1.png"  # one file system per bucket
    local, path = uris.locate("file:///tmp/some%20dir/x.png")
    assert isinstance(local, fs.LocalFileSystem) and path == "/tmp/some dir/x.png"


def test_an_s3_pool_is_read_with_one_file_system_per_bucket(tmp_path, monkeypatch):
    """The bucket stand-in: pyarrow's local file system under ``tmp_path/store``, its root
    the bucket's name as S3's is; the keys it is asked for are those of the URIs."""
    from pyarrow import fs

    store = tmp_path / "store"
    for key in ("b1/x/a.png", "b1/y/b.png", "b2/c.png"):
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), 40 * len(key)).save(store / key)
    built, asked = [], []

    class Recording(fs.SubTreeFileSystem):
        def open_input_file(self, path):
            asked.append(path)
            return super().open_input_file(path)

    def stand_in(scheme, authority, query):
        built.append((scheme, authority, query))
        return Recording(str(store), fs.LocalFileSystem()), authority

    monkeypatch.setattr(uris, "build_filesystem", stand_in)
    pool = tmp_path / "DataSets" / "ImprovementSet"
    pool.mkdir(parents=True)
    _list(pool, ["s3://b1/x/a.png", "s3://b1/y/b.png", "s3://b2/c.png", "s3://b1/gone.png"])
    ds = ImageFiles(pool)
    assert ds.ids[0] == "ImprovementSet/s3://b1/x/a.png"
    for k, key in enumerate(("b1/x/a.png", "b1/y/b.png", "b2/c.png")):
        assert torch.equal(ds[k][0], load_image(store / key, 1))
    with pytest.raises(ValueError, match=r"cannot read image s3://b1/gone\.png: .*gone\.png"):
        ds[3]
    assert built == [("s3", "b1", ""), ("s3", "b2", "")]
    assert asked == ["b1/x/a.png", "b1/y/b.png", "b2/c.png", "b1/gone.png"]


def test_a_scheme_pyarrow_does_not_know_is_skipped_naming_it(tmp_path):
    from hudd_core.data.robust import Skipping

    pool = tmp_path / "DataSets" / "ImprovementSet"
    pool.mkdir(parents=True)
    _list(pool, ["foo://host/a.png"])
    with pytest.raises(ValueError) as exc:
        ImageFiles(pool)[0]
    assert str(exc.value) == (
        "cannot read image foo://host/a.png: pyarrow has no file system for the scheme 'foo'"
    )
    assert Skipping(ImageFiles(pool))[0][3] == str(exc.value)


def test_uris_without_pyarrow_stop_naming_the_line(tmp_path, monkeypatch):
    pool = tmp_path / "DataSets" / "ImprovementSet"
    pool.mkdir(parents=True)
    Image.new("L", (4, 4)).save(pool / "a.png")
    _list(pool, ["a.png", "s3://bucket/k.png"])
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # import pyarrow.fs fails
    with pytest.raises(ValueError, match=r"files\.txt, line 3: reading s3://bucket/k\.png "
                                         r"needs pyarrow.*pip install pyarrow"):  # fmt: skip
        ImageFiles(pool)
    _list(pool, ["a.png"])  # no URI: pyarrow is not needed
    assert len(ImageFiles(pool)) == 1


def test_relative_entries_keep_their_checks_beside_uris(tmp_path):
    pool = tmp_path / "DataSets" / "ImprovementSet"
    pool.mkdir(parents=True)
    uri = (tmp_path / "x.png").as_uri()
    _list(pool, [uri, "../outside.png"])
    with pytest.raises(ValueError, match=r"files\.txt, line 3: '\.\./outside\.png' is not"):
        ImageFiles(pool)
    _list(pool, [uri, uri])
    with pytest.raises(ValueError, match="more than once"):
        ImageFiles(pool)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_builds_its_own_file_system(tmp_path):
    """A DataLoader worker forked after the parent read a URI does not reuse the parent's
    file system object (nor destroy it)."""
    parent, _ = uris.filesystem("file", "", "")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it got a new object, then leave at once
        try:
            inherited = uris._FILESYSTEMS[(os.getppid(), "file", "", "")][0]
            own, _ = uris.filesystem("file", "", "")
            os.write(write, b"new" if own is not inherited and own is not parent else b"same")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        answer = fh.read()
    os.waitpid(pid, 0)
    assert answer == b"new"
    assert uris.filesystem("file", "", "")[0] is parent  # the parent keeps its own
