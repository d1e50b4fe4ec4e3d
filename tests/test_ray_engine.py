"""The Ray engine (issue 13) on a local Ray cluster of 2 CPUs (or the cluster of
``RAY_ADDRESS``): the same result files as the local engine, resume from the Parquet
shards after a driver killed with kill -9, and the same result when an actor process is
killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from hudd_core.options import AssignOptions, RayOptions  # noqa: E402
from hudd_testkit.assign_fixtures import LAYER, add_bad_images, make_assign_case  # noqa: E402
from hudd_testkit.assign_fixtures import read_skipped as _skipped  # noqa: E402
from hudd_testkit.assign_fixtures import run_assign as _assign  # noqa: E402
from hudd_testkit.waiting import SAFETY, NeverHappened, exited, wait_for  # noqa: E402


@pytest.fixture
def case(model_workdir):
    """``(w, reference)`` of :func:`assign_fixtures.make_assign_case`."""
    return make_assign_case(model_workdir)


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_ray_assign_equals_local(ray_cluster, case, backend):
    w, reference = case
    local = _assign(w, reference, "local", backend=backend)
    got = _assign(w, w.T, "ray", backend=backend)
    assert got == local and got["selected"] > 0 and got["skipped"] == 2
    assert (w.T / "unsafe_set.csv").read_text() == (reference / "unsafe_set.csv").read_text()
    assert _skipped(w.T) == _skipped(reference)
    for c in local["quotas"]:
        a = sorted(p.name for p in (w.T / "UnsafeSet" / str(c)).iterdir())
        assert a == sorted(p.name for p in (reference / "UnsafeSet" / str(c)).iterdir())
    shards = sorted((w.T / "Assign" / "shards").glob("part-*.parquet"))
    assert len(shards) == -(-local["improvement_images"] // 16)


def test_ray_assign_rerun_reuses_shards_and_other_inputs_start_afresh(ray_cluster, case):
    w, _ = case
    first = _assign(w, w.T, "ray")
    shards = sorted((w.T / "Assign" / "shards").glob("part-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert _assign(w, w.T, "ray") == first
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # nothing recomputed
    # another --top: other candidates, the shards are recomputed
    _assign(w, w.T, "ray", top=1)
    assert [p.stat().st_mtime_ns for p in shards] != stamps


def test_ray_assign_selection_options_equal_local(ray_cluster, case):
    w, reference = case
    options = {"quota": "uniform", "distance_threshold": "paper", "rank": "uncertainty"}
    local = _assign(w, reference, "local", **options)
    got = _assign(w, w.T, "ray", **options)
    assert got == local and got["selected"] > 0 and "thresholds" in got
    assert (w.T / "unsafe_set.csv").read_text() == (reference / "unsafe_set.csv").read_text()
    chosen = (reference / "unsafe_set.csv").read_text()
    _assign(w, reference, "local")
    assert (reference / "unsafe_set.csv").read_text() != chosen  # the options do change it


def test_ray_assign_refuses_uncertainty_for_keypoint_models(case):
    from hudd_core.engine_ray import ray_assign
    from hudd_core.models.checkpoint import load_checkpoint

    w, _ = case
    model, _ = load_checkpoint(w.pt)
    with pytest.raises(ValueError, match="--rank uncertainty: a keypoint regressor"):
        ray_assign(w.T, w.data, model, LAYER, {1: 0}, options=AssignOptions(rank="uncertainty"),
                   input_shape=(1, 32, 32), progress=False)  # fmt: skip
    assert not (w.T / "Assign").exists()  # refused before any work


def test_ray_test_step_equals_local(ray_cluster, model_workdir):
    from hudd_core.engine_ray import ray_predictor
    from hudd_core.models.checkpoint import load_checkpoint
    from hudd_core.testing import run_test

    w = model_workdir({"TrainingSet": 20, "TestSet": 30})
    add_bad_images(w.data / "TestSet")
    model, meta = load_checkpoint(w.pt)
    reference = w.root / "reference"
    kw = {"device": "cpu", "progress": False, "batch_size": 8}
    local = run_test(model, w.data, reference, meta, **kw)
    predictor = ray_predictor(RayOptions(shard_size=16))
    got = run_test(model, w.data, w.T, meta, **kw, predictor=predictor)
    assert got == local and got["TestSet"]["skipped"] == 2
    for name in ("trainResult.csv", "testResult.csv"):
        assert (w.T / name).read_text() == (reference / name).read_text()
    assert _skipped(w.T) == _skipped(reference)


def _ancestors(pid: int):
    """The parent, grandparent, ... process ids of ``pid`` (from ``/proc/<pid>/stat``)."""
    while pid > 1:
        try:
            stat = (Path("/proc") / str(pid) / "stat").read_text()
        except OSError:
            return
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        yield pid


def _actor_pids() -> list[int]:
    """The processes of Ray Data's model actors (their title) of this test's own local
    cluster: its raylet descends from this process, so another cluster on the machine
    (a benchmark's) is left alone; any on the machine with ``RAY_ADDRESS``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and title.startswith(b"ray::MapWorker") and b"Actor" in title:
            pid = int(entry.name)
            if os.environ.get("RAY_ADDRESS") or os.getpid() in _ancestors(pid):
                pids.append(pid)
    return pids


def _kill_an_actor_after_first_shard(shards: Path, killed: dict, done: threading.Event) -> None:
    """Waits for the first completed shard and a model actor process (or for the run to
    be ``done`` without them), then kill -9 of the actor."""
    pids: list[int] = []

    def shard_and_actor() -> bool:
        pids[:] = _actor_pids() if list(shards.glob("part-*.parquet")) else []
        return bool(pids)

    try:
        if wait_for(shard_and_actor, "a stored shard and a model actor", ended=done.is_set):
            killed["shards_before"] = len(list(shards.glob("part-*.parquet")))
            os.kill(pids[0], signal.SIGKILL)
            killed["pid"] = pids[0]
    except NeverHappened as never:
        killed["never"] = str(never)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor process in /proc")
def test_actor_killed_mid_run_gives_the_same_result(ray_cluster, case):
    w, reference = case
    local = _assign(w, reference, "local", batch_size=2)  # the batches of the Ray run
    killed: dict = {}
    done = threading.Event()
    killer = threading.Thread(target=_kill_an_actor_after_first_shard,
                              args=(w.T / "Assign" / "shards", killed, done))  # fmt: skip
    killer.start()
    try:
        got = _assign(w, w.T, "ray", batch_size=2, ray_shard_size=4)
    finally:
        done.set()
        killer.join()
    assert "pid" in killed, killed.get("never", "the run ended before a shard and an actor")
    assert killed["shards_before"] < -(-local["improvement_images"] // 4)  # mid-run
    assert got == local
    assert (w.T / "unsafe_set.csv").read_text() == (reference / "unsafe_set.csv").read_text()
    assert _skipped(w.T) == _skipped(reference)


def test_driver_killed_with_kill_9_resumes_from_its_shards(ray_cluster, case):
    w, reference = case
    local = _assign(w, reference, "local", batch_size=2)  # the batches of the Ray run
    shards = w.T / "Assign" / "shards"
    cmd = [sys.executable, "-m", "hudd_core.cli", "assign", "--engine", "ray", "--workdir",
           str(w.T), "--data", str(w.data), "--device", "cpu", "--batch-size", "2",
           "--ray-shard-size", "4", "--backend", "numpy", "--quiet"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def two_shards() -> bool:
        return len(list(shards.glob("part-*.parquet"))) >= 2

    wait_for(two_shards, "two shards of the Ray assign", ended=exited(proc))
    assert proc.poll() is None, f"assign ended before the kill: {proc.stderr.read()!r}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=SAFETY) == -signal.SIGKILL
    proc.stderr.close()
    kept = {p: p.stat().st_mtime_ns for p in shards.glob("part-*.parquet")}
    total = -(-local["improvement_images"] // 4)
    assert 2 <= len(kept) < total and not (w.T / "unsafe_set.csv").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SAFETY)
    assert rerun.returncode == 0, rerun.stderr
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # resumed, not recomputed
    assert len(list(shards.glob("part-*.parquet"))) == total
    assert (w.T / "unsafe_set.csv").read_text() == (reference / "unsafe_set.csv").read_text()
    assert _skipped(w.T) == _skipped(reference)


def test_ray_options_are_checked(ray_cluster, case):
    w, _ = case
    with pytest.raises(ValueError, match="--ray-concurrency must be a positive integer"):
        _assign(w, w.T, "ray", ray_concurrency=0)
    with pytest.raises(ValueError, match="--ray-gpus-per-actor must be 0 or more"):
        _assign(w, w.T, "ray", ray_gpus_per_actor=-1.0)
    np.testing.assert_equal(list((w.T / "Assign").glob("shards")), [])


def test_ray_improvement_heatmaps_equal_local_and_resume(ray_cluster, model_workdir):
    from hudd_core.engine_ray import ray_heatmap_source
    from hudd_core.heatmaps import run_heatmaps
    from hudd_core.models.checkpoint import load_checkpoint

    w = model_workdir({"ImprovementSet": 40})
    model, meta = load_checkpoint(w.pt)
    kw = {"layers": ["features.3", LAYER], "improvement": True, "device": "cpu",
          "batch_size": 8, "progress": False}  # fmt: skip
    run_heatmaps(w.root / "reference", w.data, model, meta, **kw)
    source = ray_heatmap_source(RayOptions(shard_size=16))
    got = run_heatmaps(w.T, w.data, model, meta, **kw, source=source)
    assert got["rows"] == 40 and got["resumed_from"] == 0
    a, b = w.T / "ImprovementHeatmaps", w.root / "reference" / "ImprovementHeatmaps"
    assert (a / "index.csv").read_bytes() == (b / "index.csv").read_bytes()
    for name in ("features.3", LAYER):
        np.testing.assert_array_equal(np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy"))
    # an unreadable image stops the step naming it; the rows before it are kept
    (w.data / "ImprovementSet" / "up" / "zz_broken.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"zz_broken\.png"):
        run_heatmaps(w.T, w.data, model, meta, **kw, source=source)


def test_ray_assign_select_equals_local(ray_cluster, case):
    """--select on Ray: the actors' softmax and features give the local engine's unsafe
    set (and another one than the paper's rule)."""
    w, reference = case
    paper = _assign(w, reference, "local")
    chosen = (reference / "unsafe_set.csv").read_text()
    local = _assign(w, reference, "local", select="pool-diverse")
    got = _assign(w, w.T, "ray", select="pool-diverse")
    assert got == local and got["select"] == "pool-diverse"
    assert got["selected"] == paper["selected"] > 0
    assert (w.T / "unsafe_set.csv").read_text() == (reference / "unsafe_set.csv").read_text()
    assert (reference / "unsafe_set.csv").read_text() != chosen
