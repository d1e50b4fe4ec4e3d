"""kill -9 (or SIGTERM, a scheduler's stop) in the middle of ``hudd heatmaps``, then a
rerun: ``T/Heatmaps`` is consistent after the kill, the rerun resumes from the stored
batches, and the final files equal those of an uninterrupted run (issue 7)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from hudd_core.models.checkpoint import load_checkpoint
from hudd_core.testing import run_test
from hudd_testkit.waiting import SAFETY, exited, wait_for


def _heatmaps(w, workdir) -> list[str]:
    return [sys.executable, "-m", "hudd_core.cli", "heatmaps", "--weights", str(w.pt),
            "--data", str(w.data), "--workdir", str(workdir), "--device", "cpu",
            "--batch-size", "2", "--quiet"]  # fmt: skip


def _rows_done(progress) -> int:
    try:
        return int(json.loads(progress.read_text())["rows"])
    except (OSError, ValueError, KeyError):  # not written yet
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_kill_during_heatmaps_then_rerun_equals_an_uninterrupted_run(model_workdir, sig):
    w = model_workdir({"TestSet": 40})
    model, meta = load_checkpoint(w.pt)
    run_test(model, w.data, w.T, meta, sets=("TestSet",), device="cpu", progress=False)
    with open(w.T / "testResult.csv") as fh:
        n = sum(",Wrong," in line for line in fh)
    assert n >= 20
    reference = w.root / "reference"
    reference.mkdir()
    shutil.copy(w.T / "testResult.csv", reference / "testResult.csv")
    env = dict(os.environ)

    # 1. killed once some but not all batches are stored (SIGKILL: no handler runs;
    # SIGTERM: the CLI stops like Ctrl-C, exit 130)
    progress = w.T / "Heatmaps" / "progress.json"
    proc = subprocess.Popen(_heatmaps(w, w.T), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    wait_for(lambda: _rows_done(progress) >= 6, "6 stored heatmap rows", ended=exited(proc))
    assert proc.poll() is None, f"heatmaps ended before the kill: {proc.stderr.read()!r}"
    os.kill(proc.pid, sig)
    code = proc.wait(timeout=SAFETY)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130 and "interrupted; completed work is kept" in err, err
    state = json.loads(progress.read_text())
    assert 0 < state["rows"] < n and not state["complete"]
    assert json.loads((w.T / "Heatmaps" / "layers.json").read_text())["complete"] is False

    # 2. the rerun resumes from the stored rows and completes
    rerun = subprocess.run(_heatmaps(w, w.T), env=env, capture_output=True, text=True,
                           timeout=SAFETY)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == state["rows"] and summary["rows"] == n

    # 3. an uninterrupted run elsewhere gives the same files, bit for bit
    once = subprocess.run(_heatmaps(w, reference), env=env, capture_output=True, text=True,
                          timeout=SAFETY)  # fmt: skip
    assert once.returncode == 0, once.stderr
    a, b = w.T / "Heatmaps", reference / "Heatmaps"
    layers = json.loads((a / "layers.json").read_text())
    assert layers == json.loads((b / "layers.json").read_text()) and layers["complete"]
    assert (a / "index.csv").read_bytes() == (b / "index.csv").read_bytes()
    assert len(layers["layers"]) > 10
    for entry in layers["layers"]:
        x = np.load(a / entry["file"], mmap_mode="r")
        assert x.shape[0] == n
        np.testing.assert_array_equal(x, np.load(b / entry["file"], mmap_mode="r"))
    assert json.loads((a / "progress.json").read_text())["complete"] is True
    assert not [p.name for p in a.iterdir() if ".tmp" in p.name]  # no temporaries left
