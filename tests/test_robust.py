"""Bad images are skipped and recorded, never fatal (hudd_core.data.robust)."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from hudd_core.data.datasets import ImageFiles
from hudd_core.data.robust import SkipLog, Skipping, collate_skipping


def make_pool(folder):
    folder.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(folder / f"ok{i}.png")
    (folder / "empty.png").write_bytes(b"")  # zero-byte
    (folder / "text.png").write_text("not an image at all")  # non-image with an image name
    good = (folder / "ok0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(folder / "wrongsize.png")
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), "RGBA").save(folder / "rgba.png")
    (folder / "notes.txt").write_text("ignored: not an image extension")


def test_bad_images_are_skipped_with_reasons(tmp_path):
    make_pool(tmp_path / "Pool")
    pool = ImageFiles(tmp_path / "Pool", channels=1)
    assert "Pool/notes.txt" not in pool.ids
    loader = DataLoader(
        Skipping(pool, shape=(1, 16, 16)), batch_size=4, collate_fn=collate_skipping, num_workers=2
    )
    kept, skipped = [], {}
    for x, _, idx, bad in loader:
        if x is not None:
            assert x.shape[1:] == (1, 16, 16)
        kept += [pool.ids[i] for i in idx]
        skipped.update({pool.ids[i]: reason for i, reason in bad})
    assert sorted(kept) == sorted([f"Pool/ok{i}.png" for i in range(5)] + ["Pool/rgba.png"])
    assert set(skipped) == {
        "Pool/empty.png",
        "Pool/text.png",
        "Pool/truncated.png",
        "Pool/wrongsize.png",
    }
    for name, reason in skipped.items():
        assert name.split("/")[1] in reason  # every reason names the file
    assert "--image-size" in skipped["Pool/wrongsize.png"]


def test_skiplog_appends_once_per_step(tmp_path):
    log = SkipLog(tmp_path)
    assert log.add("heatmaps", "TestSet/a.png", "cannot read image a.png: truncated")
    assert not log.add("heatmaps", "TestSet/a.png", "again")
    assert log.add("assign", "TestSet/a.png", "x")
    again = SkipLog(tmp_path)  # a rerun keeps what was recorded
    assert not again.add("heatmaps", "TestSet/a.png", "again")
    rows = list(csv.DictReader(open(tmp_path / "skipped.csv")))
    assert [(r["step"], r["image"]) for r in rows] == [
        ("heatmaps", "TestSet/a.png"),
        ("assign", "TestSet/a.png"),
    ]
    assert again.images("assign") == ["TestSet/a.png"]


def test_a_file_list_chooses_the_pool(tmp_path):
    import pytest

    pool = tmp_path / "ImprovementSet"
    make_pool(pool)
    (pool / "files.txt").write_text("# chosen images\nok3.png\n\nok1.png\nmissing.png\n")
    ds = ImageFiles(pool)
    assert ds.ids == ["ImprovementSet/ok3.png", "ImprovementSet/ok1.png",
                      "ImprovementSet/missing.png"]  # fmt: skip
    x, _, idx, skipped = collate_skipping([Skipping(ds, (1, 16, 16))[i] for i in range(3)])
    assert idx.tolist() == [0, 1] and x.shape[0] == 2
    assert skipped[0][0] == 2 and "missing.png" in skipped[0][1]
    (pool / "files.txt").write_text("ok1.png\n../T/run.json\n")
    with pytest.raises(ValueError, match=r"files\.txt, line 2: '\.\./T/run\.json'"):
        ImageFiles(pool)
    (pool / "files.txt").write_text("ok1.png\nok1.png\n")
    with pytest.raises(ValueError, match=r"more than once: 'ok1\.png'"):
        ImageFiles(pool)
