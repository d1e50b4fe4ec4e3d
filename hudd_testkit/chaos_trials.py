"""Fault trials on the tiny demo pipeline (issue 15), shared by ``tests/test_chaos.py`` and
``benchmarks/chaos.py``: kill -9 at a random moment, truncated or flipped bytes in a
random intermediate, a full disk (a small tmpfs), two concurrent runs. Every trial must
end in the clean run's exact ``clusters.csv`` and ``unsafe_set.csv``, or in a clear error
(exit 2, ``hudd run: error: ...``, no traceback) after which nothing computed is lost.

The work folder always lives at the same path (``<root>/work``) and is restored from
copies that keep the modification times, so that ``run.json``'s fingerprints of the
pristine state stay valid and only the injected fault differs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hudd_testkit.waiting import SAFETY, exited, wait_for

REPO = Path(__file__).resolve().parents[1]
RESULTS = ("clusters.csv", "unsafe_set.csv")
STEPS = ("test", "heatmaps", "cluster", "assign")
SIZES = {"TrainingSet": 8, "TestSet": 32, "ImprovementSet": 16}
LAYERS = ("features.6", "features.10", "classifier.2")  # a few, to keep a trial short
KINDS = ("kill", "corrupt", "kill+corrupt", "disk-full", "concurrent")
# The user's inputs, not intermediates: damaging them is another experiment.
INPUTS = ("DataSets", "DNNModels", ".lock")


@dataclass
class Lab:
    """The trial folders: ``base`` (data and trained model only), ``done`` (after a clean
    run), ``work`` (where every trial runs), the clean results, the clean run's time and
    its ``writes``: each intermediate (path in ``work``; ``""``, the start) with the
    seconds after the start at which the clean run last wrote it, in that order."""

    root: Path
    reference: dict[str, bytes]
    seconds: float
    writes: list[tuple[str, float]] = field(default_factory=list)

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def work(self) -> Path:
        return self.root / "work"


def command(work: Path) -> list[str]:
    return [sys.executable, "-m", "hudd_core.cli", "run",
            "--weights", str(work / "DNNModels" / "demo_alexnet.pt"),
            "--data", str(work / "DataSets"), "--workdir", str(work), "--steps", *STEPS,
            "--layers", *LAYERS, "--no-gifs", "--device", "cpu", "--batch-size", "8",
            "--quiet"]  # fmt: skip


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def start(work: Path) -> subprocess.Popen:
    return subprocess.Popen(command(work), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = SAFETY) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run(work: Path) -> tuple[int, str]:
    return finish(start(work))


def restore(source: Path, work: Path) -> None:
    """``work`` becomes a copy of ``source`` (modification times kept)."""
    if work.is_mount():
        for child in work.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(source, work, dirs_exist_ok=True)
        shutil.copystat(source, work)
        return
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source, work)


def results(work: Path) -> dict[str, bytes | None]:
    return {n: (work / n).read_bytes() if (work / n).is_file() else None for n in RESULTS}


def prepare(root: Path, seed: int = 0) -> Lab:
    """Simulator data (the demo's generator, few images) and an AlexNet-style classifier
    (He-initialised: most test images are Wrong, which is all the trials need) in
    ``root/base``; one clean run in ``root/done``."""
    from hudd_core.data import simulator
    from hudd_core.data.generate import generate
    from hudd_core.models.checkpoint import save_checkpoint
    from hudd_core.models.loading import load_model
    from hudd_core.models.train import he_init

    root.mkdir(parents=True, exist_ok=True)
    base = root / "base"
    generate(base / "DataSets", sizes=SIZES, seed=seed, image_size=32, progress=False)
    kwargs = {"num_classes": len(simulator.CLASSES), "in_channels": 1, "input_size": 32}
    meta = {"model": "alexnet", "kwargs": kwargs, "task": "classifier",
            "classes": list(simulator.CLASSES), "in_channels": 1, "input_size": 32}  # fmt: skip
    model = he_init(load_model("alexnet", **kwargs), seed=seed)
    save_checkpoint(model, base / "DNNModels", "demo_alexnet", meta)
    lab = Lab(root, {}, 0.0)
    restore(base, lab.work)
    t, started = time.perf_counter(), time.time()  # time.time(): the files' clock
    code, err = run(lab.work)
    lab.seconds = time.perf_counter() - t
    if code != 0:
        raise RuntimeError(f"the clean run failed ({code}): {err}")
    lab.reference = results(lab.work)
    lab.writes = _writes(lab.work, started)
    if lab.done.exists():
        shutil.rmtree(lab.done)
    shutil.copytree(lab.work, lab.done)
    return lab


# --- judging a trial -----------------------------------------------------------------------


def judge(lab: Lab, code: int, err: str) -> tuple[str, str]:
    """``("identical" | "clear error" | "FAILED", detail)`` of a run that ended."""
    if code == 0:
        if results(lab.work) == lab.reference:
            return "identical", ""
        return "FAILED", "finished with other results than the clean run"
    last = err.strip().splitlines()[-1] if err.strip() else ""
    if code == 2 and last.startswith("hudd run: error:") and "Traceback" not in err:
        return "clear error", last
    return "FAILED", f"exit {code}: {err.strip()[-600:]}"


def _after_clear_error(lab: Lab, verdict: tuple[str, str]) -> tuple[str, str]:
    """A clear error must lose nothing: the step outputs from before it are still there
    and a rerun (the cause being gone) ends in the clean results."""
    if verdict[0] != "clear error":
        return verdict
    code, err = run(lab.work)
    again = judge(lab, code, err)
    if again[0] == "identical":
        return "clear error", f"{verdict[1]} (a rerun then gives the clean results)"
    return "FAILED", f"after the error {verdict[1]!r}, the rerun: {again[1]}"


# --- faults --------------------------------------------------------------------------------


def intermediates(work: Path) -> list[Path]:
    """Every file the pipeline wrote (temporaries and the user's inputs aside)."""
    return sorted(
        p
        for p in work.rglob("*")
        if p.is_file()
        and p.relative_to(work).parts[0] not in INPUTS
        and not any(part.startswith(".") and ".tmp" in part for part in p.parts)
    )


def damage(path: Path, rng: random.Random) -> str:
    """Truncates ``path`` or flips bytes in it (half of the flips keep the modification
    time: bit rot, invisible to a size and time check). Returns what was done."""
    data = bytearray(path.read_bytes())
    st = path.stat()
    if not data or rng.random() < 0.4:
        cut = rng.randrange(len(data)) if data else 0
        path.write_bytes(bytes(data[:cut]))
        return f"truncated to {cut} of {len(data)} bytes"
    flips = rng.randint(1, 8)
    for _ in range(flips):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    keep = rng.random() < 0.5
    if keep:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return f"{flips} bit flip(s){', time kept' if keep else ''}"


def _writes(work: Path, started: float) -> list[tuple[str, float]]:
    """:attr:`Lab.writes` of the run that began at ``started`` (epoch seconds)."""
    files = [(str(p.relative_to(work)), p.stat().st_mtime - started) for p in intermediates(work)]
    return [("", 0.0), *sorted(files, key=lambda f: f[1])]


def _kill_moment(lab: Lab, rng: random.Random) -> tuple[str, float]:
    """A moment drawn uniformly over the clean run's writes, as an event and a delay: the
    file last written before it (``""``: the start) and the seconds since. The delay is
    within the gap to the next write, so a kill comes mid-run at any pace of the machine."""
    moment = rng.uniform(0.0, lab.writes[-1][1])
    path, at = max((w for w in lab.writes if w[1] <= moment), key=lambda w: w[1])
    return path, moment - at


def _kill_at_random(lab: Lab, rng: random.Random) -> str:
    path, delay = _kill_moment(lab, rng)
    when = f"{delay:.2f} s after {path or 'the start'}"
    proc = start(lab.work)
    try:
        if wait_for((lab.work / path).exists, f"{path} of the trial run", ended=exited(proc)):
            proc.wait(timeout=delay)
        finish(proc)
        return f"ended before the kill at {when}"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        return f"killed at {when}"


def _rerun_after(lab: Lab, what: str) -> tuple[str, str]:
    """The verdict of a rerun on the damaged work folder, with what was done to it."""
    verdict = _after_clear_error(lab, judge(lab, *run(lab.work)))
    return verdict[0], f"{what}; {verdict[1]}".rstrip("; ")


def trial_kill(lab: Lab, rng: random.Random) -> tuple[str, str]:
    restore(lab.base, lab.work)
    return _rerun_after(lab, _kill_at_random(lab, rng))


def _corrupt_one(lab: Lab, rng: random.Random) -> str:
    files = intermediates(lab.work)
    if not files:
        return "no intermediate yet"
    # Mostly the files later steps read (not the image copies and plots shown to people,
    # which are most of the files but which no step reads back).
    read_back = [f for f in files if f.suffix not in (".png", ".gif", ".html")]
    victim = rng.choice(read_back if read_back and rng.random() < 0.8 else files)
    return f"{victim.relative_to(lab.work)} {damage(victim, rng)}"


def trial_corrupt(lab: Lab, rng: random.Random) -> tuple[str, str]:
    restore(lab.done, lab.work)
    return _rerun_after(lab, _corrupt_one(lab, rng))


def trial_kill_corrupt(lab: Lab, rng: random.Random) -> tuple[str, str]:
    restore(lab.base, lab.work)
    return _rerun_after(lab, f"{_kill_at_random(lab, rng)}, then {_corrupt_one(lab, rng)}")


def _size(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def _mount(work: Path, size: int) -> str | None:
    """Mounts (or resizes) a tmpfs of ``size`` bytes at ``work``; the reason when not."""
    work.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" if not work.is_mount() else f"remount,size={size}"
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(work)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mount is not available ({exc})"
    return None if p.returncode == 0 else f"cannot mount a tmpfs: {p.stderr.strip()}"


def disk_full_unavailable(root: Path) -> str | None:
    """Why a tmpfs cannot be mounted here (None: it can)."""
    probe = root / "mount-probe"
    reason = _mount(probe, 1 << 20)
    if reason is None:
        subprocess.run(["umount", str(probe)], check=False)
    return reason


def trial_disk_full(lab: Lab, rng: random.Random) -> tuple[str, str]:
    inputs, total = _size(lab.base), _size(lab.done)
    room = inputs + (1 << 16) + int(rng.uniform(0.05, 0.9) * (total - inputs))
    if lab.work.exists() and not lab.work.is_mount():
        shutil.rmtree(lab.work)
    reason = _mount(lab.work, room)
    if reason:
        return "skipped", reason
    try:
        restore(lab.base, lab.work)
        code, err = run(lab.work)
        first = judge(lab, code, err)
        if first[0] == "FAILED":
            return first[0], f"{room} bytes of tmpfs: {first[1]}"
        _mount(lab.work, 4 * total)  # space freed: the rerun resumes
        second = judge(lab, *run(lab.work))
        detail = f"{room} bytes of tmpfs: {first[1] or 'fitted'}; after freeing space: "
        if second[0] != "identical":
            return "FAILED", detail + second[1]
        return first[0], detail + "the clean results"
    finally:
        subprocess.run(["umount", str(lab.work)], check=False)


def _holds_lock(work: Path, proc: subprocess.Popen) -> Callable[[], bool]:
    """Whether ``proc`` holds the work folder's lock (its pid in ``.lock``)."""
    lock = work / ".lock"
    return lambda: lock.is_file() and lock.read_text().startswith(f"pid {proc.pid} ")


def trial_concurrent(lab: Lab, rng: random.Random) -> tuple[str, str]:
    restore(lab.base, lab.work)
    first = start(lab.work)
    wait_for(_holds_lock(lab.work, first), "the first run's lock", ended=exited(first))
    second = start(lab.work)
    (c1, e1), (c2, e2) = finish(first), finish(second)
    refused = [e for c, e in ((c1, e1), (c2, e2)) if c == 2 and "is in use by pid" in e]
    ok = [c for c in (c1, c2) if c == 0]
    if len(ok) == 2 or (len(ok) == 1 and len(refused) == 1):
        verdict = judge(lab, 0, "")
        msg = (
            refused[0].strip().splitlines()[-1] if refused else "both finished, one after the other"
        )
        return verdict[0], f"second started once the first held the lock; {msg}"
    return "FAILED", f"exits {c1} and {c2}: {e1[-300:]} | {e2[-300:]}"


TRIALS: dict[str, Callable[[Lab, random.Random], tuple[str, str]]] = {
    "kill": trial_kill,
    "corrupt": trial_corrupt,
    "kill+corrupt": trial_kill_corrupt,
    "disk-full": trial_disk_full,
    "concurrent": trial_concurrent,
}


def run_trials(lab: Lab, plan: list[str], seed: int = 0) -> list[dict]:
    """One record per trial of ``plan`` (fault kinds, in order)."""
    rng = random.Random(seed)
    records = []
    for i, kind in enumerate(plan):
        t = time.perf_counter()
        outcome, detail = TRIALS[kind](lab, rng)
        records.append({"trial": i, "kind": kind, "outcome": outcome, "detail": detail,
                        "seconds": round(time.perf_counter() - t, 2)})  # fmt: skip
    return records
