"""Work-folder integrity (issue 15): damaged or partial intermediates are detected and
recomputed (or stop with an error naming the file and the way forward), a full disk is a
clean error, one writer per work folder, and damaged bookkeeping never turns into a
wrong result."""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hudd_core import store as store_mod
from hudd_core.fileio import load_signed_npz, read_json, save_signed_npz
from hudd_core.lock import WorkdirBusy, workdir_lock
from hudd_core.runstate import RunLog
from hudd_core.store import HeatmapStore, check_npy, read_heatmap_index, verify_folder

SHAPES = {"input": (1, 4, 4), "fc": (3,)}
IMAGES = [f"TestSet/c/{i}.png" for i in range(10)]


def _fill(folder: Path, rng, *, finish: bool = True, rows: int = 10) -> dict[str, np.ndarray]:
    """A heatmap folder of ``rows`` rows stored in batches of 4 (finished when all are)."""
    full = {k: rng.standard_normal((10, *s)).astype(np.float32) for k, s in SHAPES.items()}
    s = HeatmapStore.open(folder, IMAGES, SHAPES, composite="hudd")
    for a in range(0, rows, 4):
        s.write({k: v[a : min(a + 4, rows)] for k, v in full.items()})
    if finish:
        s.finish()
    return {k: v.reshape(10, -1) for k, v in full.items()}


def _workdir(tmp_path: Path, rng) -> tuple[Path, dict]:
    T = tmp_path / "T"
    full = _fill(T / "Heatmaps", rng)
    return T, full


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# --- heatmap files: size, header, checksum ---------------------------------------------------


def test_finished_folder_records_size_and_checksum(tmp_path, rng):
    T, _ = _workdir(tmp_path, rng)
    meta = json.loads((T / "Heatmaps" / "layers.json").read_text())
    assert meta["bounds"] == [4, 8, 10] and meta["complete"]
    for e in meta["layers"]:
        assert e["bytes"] == (T / "Heatmaps" / e["file"]).stat().st_size
        assert len(e["blake2b"]) == 32
    assert verify_folder(T / "Heatmaps", full=True) == []
    layers, images = read_heatmap_index(T, verify="full")
    assert images == IMAGES and [e["name"] for e in layers] == ["input", "fc"]


def test_truncated_heatmap_file_is_an_error_naming_it_and_is_never_extended(tmp_path, rng):
    T, _ = _workdir(tmp_path, rng)
    path = T / "Heatmaps" / "fc.npy"
    with open(path, "r+b") as fh:
        fh.truncate(140)
    with pytest.raises(ValueError, match=r"fc\.npy is 140 bytes.*truncated.*rerun `hudd heatmaps`"):
        read_heatmap_index(T)
    assert path.stat().st_size == 140  # reading never zero-extends it back to full size


def test_truncated_heatmap_file_is_recomputed_on_resume(tmp_path, rng, caplog):
    T, full = _workdir(tmp_path, rng)
    folder = T / "Heatmaps"
    with open(folder / "fc.npy", "r+b") as fh:
        fh.truncate(1000 // 10)
    with caplog.at_level(logging.WARNING, logger="hudd"):
        s = HeatmapStore.open(folder, IMAGES, SHAPES, composite="hudd")
    assert s.done == 0  # started afresh, not resumed over the damaged file
    assert "fc.npy" in caplog.text and "computed again" in caplog.text
    for a in range(0, 10, 5):
        s.write({k: v[a : a + 5] for k, v in full.items()})
    s.finish()
    np.testing.assert_array_equal(np.load(folder / "fc.npy"), full["fc"])


def test_flipped_byte_is_caught_by_the_full_check_only(tmp_path, rng, caplog):
    T, _ = _workdir(tmp_path, rng)
    path = T / "Heatmaps" / "input.npy"
    _, _, offset = store_mod.npy_layout(path)
    _flip(path, offset + 37)
    assert verify_folder(T / "Heatmaps") == []  # quick: size and header are fine
    (problem,) = verify_folder(T / "Heatmaps", full=True)
    assert "input.npy does not match the checksum" in problem
    with pytest.raises(ValueError, match=r"input\.npy does not match"):
        read_heatmap_index(T, verify="full")
    with caplog.at_level(logging.WARNING, logger="hudd"):
        s = HeatmapStore.open(T / "Heatmaps", IMAGES, SHAPES, composite="hudd")
    assert s.done == 0 and "input.npy does not match its checksum" in caplog.text


def test_flipped_byte_in_a_partial_file_restarts_instead_of_resuming(tmp_path, rng):
    folder = tmp_path / "H"
    _fill(folder, rng, finish=False, rows=8)
    assert HeatmapStore.open(folder, IMAGES, SHAPES, composite="hudd").done == 8
    path = folder / "fc.npy"
    _, _, offset = store_mod.npy_layout(path)
    _flip(path, offset + 4 * 3 * 5)  # row 5: a stored one
    assert HeatmapStore.open(folder, IMAGES, SHAPES, composite="hudd").done == 0


def test_damaged_header_is_named(tmp_path, rng):
    T, _ = _workdir(tmp_path, rng)
    path = T / "Heatmaps" / "fc.npy"
    _flip(path, 2)  # inside the magic string
    assert "has no valid .npy header" in check_npy(path)
    with pytest.raises(ValueError, match=r"fc\.npy has no valid \.npy header"):
        read_heatmap_index(T)


@pytest.mark.parametrize("victim", ["layers.json", "index.csv", "progress.json"])
def test_damaged_bookkeeping_of_the_store_is_rebuilt_or_recomputed(victim, tmp_path, rng):
    T, full = _workdir(tmp_path, rng)
    folder = T / "Heatmaps"
    good = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / victim).write_bytes(good[victim][: len(good[victim]) // 2])
    if victim != "progress.json":  # the readers name the file and the way forward
        with pytest.raises(
            ValueError, match=rf"{victim.replace('.', '[.]')}.*rerun `hudd heatmaps`"
        ):
            read_heatmap_index(T)
    s = HeatmapStore.open(folder, IMAGES, SHAPES, composite="hudd")
    if victim == "progress.json":  # the resume state is lost: computed again
        assert s.done == 0
        return
    assert s.done == 10  # the layer files are whole: rebuilt from them, nothing recomputed
    assert (folder / victim).read_bytes() == good[victim]
    assert read_heatmap_index(T, verify="full")[1] == IMAGES
    np.testing.assert_array_equal(np.load(folder / "fc.npy"), full["fc"])


# --- disk space ------------------------------------------------------------------------------


def test_heatmaps_that_do_not_fit_stop_before_writing(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr("hudd_core.fileio.shutil.disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(ValueError) as info:
        HeatmapStore.open(tmp_path / "H", IMAGES, SHAPES, composite="hudd")
    message = str(info.value)
    assert "heatmaps:" in message and "10 images x 19 relevance values of 2 layers" in message
    assert "needs" in message and "1000 B are free" in message
    assert "--layers" in message and "--float16" in message and "--workdir" in message
    assert not list((tmp_path / "H").glob("*.npy"))


def test_full_disk_while_reserving_space_is_a_clean_error(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hudd_core.fileio.os.posix_fallocate", full)
    with pytest.raises(ValueError, match=r"cannot be reserved \(No space left on device"):
        HeatmapStore.open(tmp_path / "H", IMAGES, SHAPES, composite="hudd")


def test_without_fallocate_the_space_is_written(tmp_path, monkeypatch, rng):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr("hudd_core.fileio.os.posix_fallocate", unsupported)
    full = _fill(tmp_path / "H", rng)
    np.testing.assert_array_equal(np.load(tmp_path / "H" / "input.npy"), full["input"])
    size = (tmp_path / "H" / "input.npy").stat()
    assert size.st_blocks * 512 >= size.st_size - 4096  # not sparse: the blocks are there


def test_cli_reports_a_full_disk_as_an_error_keeping_work(tmp_path, monkeypatch, capsys):
    from hudd_core.cli import main, report

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "T" / "x.png"))

    monkeypatch.setattr(report, "run", full)
    assert main(["report", "--workdir", str(tmp_path / "T")]) == 2
    err = capsys.readouterr().err
    assert "hudd report: error: no space left on the device for" in err and "x.png" in err
    assert "completed work is kept" in err


# --- resume points and run.json ---------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_resume_point_is_recomputed(damage, tmp_path, caplog):
    path = tmp_path / "candidates.npz"
    save_signed_npz(path, {"a": 1}, x=np.arange(1000))
    assert load_signed_npz(path, {"a": 1})["x"].sum() == 499500
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        _flip(path, len(data) // 2)
    with caplog.at_level(logging.WARNING, logger="hudd"):
        assert load_signed_npz(path, {"a": 1}) is None
    assert "candidates.npz is damaged" in caplog.text and "recomputed" in caplog.text


def test_read_json_names_the_file_and_the_way_forward(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"a": \x01}')
    with pytest.raises(ValueError, match=r"summary\.json is damaged .*: rerun it"):
        read_json(path, "rerun it")


def test_damaged_run_json_is_set_aside_and_announced(tmp_path, caplog):
    (tmp_path / "run.json").write_text('{"steps": {"te\x01st": 1}}')
    with caplog.at_level(logging.WARNING, logger="hudd"):
        log = RunLog(tmp_path, {"seed": 0})
    assert log.data["steps"] == {} and "run.json is damaged" in caplog.text
    assert (tmp_path / "run.json.damaged").is_file()
    log.record("test", "fp", 1.0)
    assert RunLog(tmp_path).data["steps"]["test"]["fingerprint"] == "fp"


@pytest.mark.parametrize("damage", ["missing", "truncate", "flip"])
def test_a_changed_output_makes_the_step_run_again(damage, tmp_path, caplog):
    out = tmp_path / "clusters.csv"
    out.write_text("image,cluster,layer\na.png,1,fc\nb.png,2,fc\n")
    RunLog(tmp_path).record("cluster", "fp", 1.0, [out])
    assert RunLog(tmp_path).fresh("cluster", "fp", [out])
    if damage == "missing":
        out.unlink()
    elif damage == "truncate":
        out.write_text("image,cluster,layer\na.png,1,fc\n")
    else:
        st = out.stat()
        out.write_text("image,cluster,layer\na.png,1,fc\nb.png,3,fc\n")
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and time: bit rot
    with caplog.at_level(logging.WARNING, logger="hudd"):
        assert not RunLog(tmp_path).fresh("cluster", "fp", [out])
    assert "clusters.csv" in caplog.text and "cluster and the steps after it" in caplog.text


def test_a_damaged_heatmap_file_makes_the_heatmaps_step_run_again(tmp_path, rng, caplog):
    T, _ = _workdir(tmp_path, rng)
    outputs = [T / "Heatmaps" / "index.csv", T / "Heatmaps" / "layers.json"]
    RunLog(T).record("heatmaps", "fp", 1.0, outputs)
    path = T / "Heatmaps" / "fc.npy"
    _, _, offset = store_mod.npy_layout(path)
    _flip(path, offset + 1)
    assert RunLog(T).fresh("heatmaps", "fp", outputs, verify="quick")  # headers only
    with caplog.at_level(logging.WARNING, logger="hudd"):
        assert not RunLog(T).fresh("heatmaps", "fp", outputs, verify="full")
    assert "fc.npy does not match" in caplog.text
    with pytest.raises(ValueError, match="verify must be"):
        RunLog(T).fresh("heatmaps", "fp", outputs, verify="some")


# --- one writer per work folder ---------------------------------------------------------------


def test_second_writer_is_refused_naming_the_first(tmp_path):
    with workdir_lock(tmp_path / "T"):
        with pytest.raises(WorkdirBusy, match=rf"T is in use by pid {os.getpid()} since 20"):
            with workdir_lock(tmp_path / "T"):
                pass
        with pytest.raises(WorkdirBusy):
            with workdir_lock(tmp_path / "T", shared=True):
                pass
    with workdir_lock(tmp_path / "T"):  # released with the block
        pass


def test_readers_share_the_lock_and_keep_writers_out(tmp_path):
    with workdir_lock(tmp_path, shared=True), workdir_lock(tmp_path, shared=True):
        with pytest.raises(WorkdirBusy, match="in use by a read-only hudd command"):
            with workdir_lock(tmp_path):
                pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from hudd_core.lock import workdir_lock
        with workdir_lock({str(tmp_path)!r}):
            print("held", flush=True)
            sys.stdin.read()  # held until killed: no time limit to outrun
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stdout.readline().strip() == b"held"
    with pytest.raises(WorkdirBusy, match=f"pid {proc.pid} since"):
        with workdir_lock(tmp_path):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    proc.stdout.close()
    assert (tmp_path / ".lock").is_file()  # left behind ...
    with workdir_lock(tmp_path):  # ... and no obstacle
        pass


def test_cli_refuses_a_second_run_on_the_same_work_folder(tmp_path, capsys):
    from hudd_core.cli import main

    T = tmp_path / "T"
    with workdir_lock(T):
        code = main(["run", "--workdir", str(T), "--data", str(tmp_path), "--quiet"])
        assert main(["cluster", "--workdir", str(T), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert code == 2 and f"hudd run: error: {T} is in use by pid {os.getpid()}" in err
    assert f"hudd cluster: error: {T} is in use" in err


# --- hostile and odd images ---------------------------------------------------------------


def _load(path, channels=1, **kw):
    from hudd_core.data.datasets import load_image

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a conversion that warns is not a documented one
        return load_image(path, channels, **kw)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 48 KB on disk, 400 M pixels
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"cannot read image .*bomb\.png: .*decompression bomb"):
        _load(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)
    assert _load(path).shape == (1, 16, 16)
    with pytest.raises(ValueError, match=r"16 x 16 = 256 pixels, above the limit of 100"):
        _load(path, max_pixels=100)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_image_is_refused(fmt, tmp_path):
    path = tmp_path / f"cut.{fmt}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"cannot read image .*cut\.{fmt}"):
        _load(path)


def test_cmyk_is_converted_through_rgb(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.new("CMYK", (4, 4), (0, 255, 0, 0)).save(path)  # magenta: RGB (255, 0, 255)
    np.testing.assert_allclose(_load(path, 3)[:, 0, 0].numpy(), [1.0, 0.0, 1.0])
    luma = (299 * 255 + 114 * 255 + 500) // 1000  # ITU-R 601, as Pillow rounds it
    assert _load(path)[0, 0, 0].item() == pytest.approx(luma / 255)


def test_sixteen_bit_grayscale_keeps_its_precision(tmp_path):
    path = tmp_path / "g16.png"
    values = np.array([[0, 100, 1000, 65535]], np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(path)
    x = _load(path)
    np.testing.assert_allclose(x[0].numpy(), values / 65535.0, rtol=1e-6)
    assert 0 < x[0, 0, 1].item() < 1 / 255  # not clipped to 255 levels, nor to white
    rgb = _load(path, 3)
    assert rgb.shape == (3, 4, 4) and torch.equal(rgb[0], rgb[2])
    assert _load(path, image_size=8).shape == (1, 8, 8)


def test_palette_with_transparency_drops_alpha_keeping_colours(tmp_path):
    path = tmp_path / "p.png"
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    im.info["transparency"] = bytes([255, 0] + [255] * 254)  # index 1 fully transparent
    im.save(path, transparency=bytes([255, 0] + [255] * 254))
    assert Image.open(path).info.get("transparency") is not None
    np.testing.assert_allclose(_load(path, 3)[:, 0, 0].numpy(), [200 / 255, 100 / 255, 50 / 255])


def test_animated_image_gives_its_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("L", (4, 4), v) for v in (10, 240)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(path).n_frames == 2
    assert _load(path)[0, 0, 0].item() == pytest.approx(10 / 255, abs=1 / 255)


def test_exif_rotated_photo_is_loaded_as_displayed(tmp_path):
    path = tmp_path / "rotated.png"
    pixels = np.zeros((4, 8), np.uint8)
    pixels[:, 4:] = 255  # left half dark, right half bright; 8 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(path, exif=exif)
    x = _load(path)
    assert x.shape == (1, 8, 4)  # displayed: 4 wide, 8 high
    assert x[0, :4].max().item() == 0 and x[0, 4:].min().item() == 1  # left became top


def test_bomb_in_the_test_set_is_skipped_into_skipped_csv(model_workdir):
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_core.testing import run_test

    w = model_workdir({"TestSet": 8})
    folder = next(p for p in (w.data / "TestSet").iterdir() if p.is_dir())
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")
    model, meta = load_checkpoint(w.pt)
    summary = run_test(model, w.data, w.T, meta, sets=("TestSet",), device="cpu",
                       progress=False)  # fmt: skip
    assert summary["TestSet"]["skipped"] == 1 and summary["TestSet"]["n"] == 8
    rows = (w.T / "skipped.csv").read_text().splitlines()
    assert len(rows) == 2 and "bomb.png" in rows[1] and "decompression bomb" in rows[1]


# --- names cannot escape T/, symbolic links are read only when allowed ------------------------


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("entry", ["../outside.png", "/etc/passwd", "a/../../outside.png"])
def test_files_txt_entries_outside_the_folder_stop(entry, tmp_path):
    from hudd_core.data.datasets import ImageFiles

    pool = tmp_path / "DataSets" / "ImprovementSet"
    _png(pool / "a" / "x.png")
    (pool / "files.txt").write_text(f"a/x.png\n{entry}\n")
    with pytest.raises(ValueError, match=r"files\.txt, line 2: .* is not a path inside"):
        ImageFiles(pool)


@pytest.mark.parametrize("entry", ["../outside.png", "/abs/x.png", "C:\\x.png", "a/../../b.png"])
def test_labels_csv_entries_outside_the_set_stop(entry, tmp_path):
    from hudd_core.data.datasets import ImageSet

    folder = tmp_path / "DataSets" / "TestSet"
    _png(folder / "x.png")
    (folder / "labels.csv").write_text(f"image,x0,y0\nx.png,1,2\n{entry},3,4\n")
    with pytest.raises(ValueError, match=r"labels\.csv: image names must be paths relative"):
        ImageSet(folder)


def _outside_and_set(tmp_path: Path) -> tuple[Path, Path]:
    outside = _png(tmp_path / "private" / "secret.png", 7)
    folder = tmp_path / "DataSets" / "TestSet"
    _png(folder / "closed" / "a.png")
    return outside, folder


def test_symlinked_image_outside_the_data_is_read_only_when_allowed(tmp_path):
    from hudd_core.data.datasets import ImageSet

    outside, folder = _outside_and_set(tmp_path)
    (folder / "closed" / "link.png").symlink_to(outside)
    _png(tmp_path / "DataSets" / "TrainingSet" / "closed" / "t.png", 9)
    (folder / "closed" / "inside.png").symlink_to(tmp_path / "DataSets/TrainingSet/closed/t.png")
    ds = ImageSet(folder)
    assert ds.names == ["closed/a.png", "closed/inside.png", "closed/link.png"]
    assert ds[1][0][0, 0, 0].item() == pytest.approx(9 / 255)  # a link inside DataSets is fine
    with pytest.raises(ValueError, match=r"link\.png is a symbolic link to .*secret\.png, outside"):
        ds[2]
    allowed = ImageSet(folder, follow_symlinks=True)
    assert allowed[2][0][0, 0, 0].item() == pytest.approx(7 / 255)


def test_symlinked_class_folder_outside_the_data_is_not_read(tmp_path):
    from hudd_core.data.datasets import ImageSet

    outside, folder = _outside_and_set(tmp_path)
    (folder / "open").symlink_to(outside.parent, target_is_directory=True)
    ds = ImageSet(folder)
    i = ds.names.index("open/secret.png")
    with pytest.raises(ValueError, match="symbolic link"):
        ds[i]
    assert ImageSet(folder, follow_symlinks=True)[i][0].shape == (1, 8, 8)


def test_files_txt_entry_through_a_symlink_outside_is_not_read(tmp_path):
    from hudd_core.data.datasets import ImageFiles

    outside, _ = _outside_and_set(tmp_path)
    pool = tmp_path / "DataSets" / "ImprovementSet"
    _png(pool / "a.png")
    (pool / "ext").symlink_to(outside.parent, target_is_directory=True)
    (pool / "files.txt").write_text("a.png\next/secret.png\n")
    ds = ImageFiles(pool)
    assert ds[0][0].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="symbolic link"):
        ds[1]


def test_labels_csv_naming_a_symlink_outside_is_not_read(tmp_path):
    from hudd_core.data.datasets import ImageSet

    outside, _ = _outside_and_set(tmp_path)
    folder = tmp_path / "DataSets" / "KeySet"
    _png(folder / "x.png")
    (folder / "y.png").symlink_to(outside)
    (folder / "labels.csv").write_text("image,x0,y0\nx.png,1,2\ny.png,3,4\n")
    ds = ImageSet(folder)
    assert ds[0][0].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="symbolic link"):
        ds[1]


def test_odd_bytes_in_names_never_leave_the_work_folder(model_workdir, tmp_path):
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_core.testing import run_test

    w = model_workdir({"TestSet": 8})
    folder = next(p for p in (w.data / "TestSet").iterdir() if p.is_dir())
    good = next(folder.iterdir()).read_bytes()
    raw = os.fsencode(folder) + b"/bad\xff\xfe name.png"  # not UTF-8
    with open(raw, "wb") as fh:
        fh.write(good)
    (folder / "new\nline\\:x.png").write_bytes(good)  # control and Windows-forbidden characters
    before = sorted(p.name for p in w.root.iterdir())
    model, meta = load_checkpoint(w.pt)
    summary = run_test(model, w.data, w.T, meta, sets=("TestSet",), device="cpu",
                       progress=False)  # fmt: skip
    assert summary["TestSet"]["n"] == 9 and summary["TestSet"]["skipped"] == 1
    skipped = (w.T / "skipped.csv").read_text(encoding="utf-8")
    assert "bad\\xff\\xfe name.png" in skipped and "not valid UTF-8" in skipped
    with open(w.T / "testResult.csv", newline="", encoding="utf-8") as fh:
        images = [r["image"] for r in csv.DictReader(fh)]
    assert f"TestSet/{folder.name}/new\nline\\:x.png" in images  # quoted, read back whole
    assert sorted(p.name for p in w.root.iterdir()) == before  # nothing written beside T/


def test_planted_symlinks_in_the_work_folder_are_not_written_through(tmp_path, rng):
    from hudd_core.data.robust import SkipLog

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    T = tmp_path / "T"
    (T / "Heatmaps").mkdir(parents=True)
    (T / "skipped.csv").symlink_to(victim)
    with pytest.raises(ValueError, match=r"skipped\.csv is a symbolic link"):
        SkipLog(T).add("test", "x.png", "bad")
    (T / "Heatmaps" / "fc.npy").symlink_to(victim)
    _fill(T / "Heatmaps", rng)
    assert victim.read_text() == "keep" and not (T / "Heatmaps" / "fc.npy").is_symlink()


# --- the readers of the later steps -----------------------------------------------------------


def test_damaged_cluster_cache_is_recomputed(tmp_path):
    from hudd_core.cluster import layer_folder, run_cluster
    from hudd_testkit.cluster_fixtures import make_workdir

    fx = make_workdir(tmp_path, np.random.default_rng(0))
    run_cluster(fx["T"], fx["data"], device="cpu", progress=False, gifs=False)
    clean = (fx["T"] / "clusters.csv").read_bytes()
    wicd = layer_folder(fx["T"], "fc") / "wicd.csv"
    st = wicd.stat()
    text = wicd.read_text().replace(",0.", ",9.", 3)  # other WICD values, same size
    wicd.write_text(text)
    os.utime(wicd, ns=(st.st_atime_ns, st.st_mtime_ns))
    (fx["T"] / "clusters.csv").unlink()
    run_cluster(fx["T"], fx["data"], device="cpu", progress=False, gifs=False)
    assert (fx["T"] / "clusters.csv").read_bytes() == clean
    assert wicd.read_text() != text  # rewritten from the heatmaps


@pytest.mark.parametrize("text", ["image,resu\x00lt\nx,Wrong\n", "image,result\nx,Wr\xf6ng\n"])
def test_damaged_test_results_stop_heatmaps_naming_the_file(text, tmp_path):
    from hudd_core.heatmaps import wrong_images

    path = tmp_path / "testResult.csv"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(ValueError, match=r"testResult\.csv is damaged .*rerun `hudd test`"):
        wrong_images(path)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from hudd_core.demo import run_demo

    work = tmp_path_factory.mktemp("demo")
    run_demo(work, "tiny", progress=False, baselines=False)
    return work


def test_truncated_heatmaps_of_a_finished_run_are_recomputed(demo, caplog):
    """The issue's case: a heatmap file cut to 1000 bytes, then `hudd run` again."""
    from hudd_core.demo import run_demo

    clean = {n: (demo / n).read_bytes() for n in ("clusters.csv", "unsafe_set.csv")}
    with open(demo / "Heatmaps" / "features.6.npy", "r+b") as fh:
        fh.truncate(1000)
    with caplog.at_level(logging.WARNING, logger="hudd"):
        run_demo(demo, "tiny", progress=False, baselines=False)
    assert "features.6.npy is 1000 bytes" in caplog.text
    assert "heatmaps and the steps after it are computed again" in caplog.text
    assert {n: (demo / n).read_bytes() for n in clean} == clean
    assert verify_folder(demo / "Heatmaps", full=True) == []


def test_distances_that_do_not_fit_stop_before_computing(tmp_path, monkeypatch, capsys):
    from hudd_core.cli import main

    np.save(tmp_path / "X.npy", np.zeros((100, 3), np.float32))
    real = shutil.disk_usage
    monkeypatch.setattr("hudd_core.fileio.shutil.disk_usage", lambda p: real(p)._replace(free=1000))
    assert main(["distance", str(tmp_path / "X.npy"), str(tmp_path / "D.npy")]) == 2
    err = capsys.readouterr().err
    assert "D.npy (4950 float64 distances) needs 38.8 KiB but only 1000 B are free" in err
    assert not (tmp_path / "D.npy").exists()


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["layers"][0].update(shape="1x4x4"),
        lambda m: m.update(bounds={"a": 1}),
        lambda m: m["layers"][1].update(file=7),
    ],
)
def test_layers_json_of_the_wrong_types_is_damaged(edit, tmp_path, rng):
    T, _ = _workdir(tmp_path, rng)
    path = T / "Heatmaps" / "layers.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"layers\.json is damaged"):
        read_heatmap_index(T)
    assert HeatmapStore.open(T / "Heatmaps", IMAGES, SHAPES, composite="hudd").done == 10
    assert read_heatmap_index(T, verify="full")[1] == IMAGES  # rebuilt from progress.json
