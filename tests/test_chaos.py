"""Chaos trials on the small demo pipeline (issue 15; ``benchmarks/chaos.py`` runs more):
each ends in the clean run's exact ``clusters.csv`` and ``unsafe_set.csv``, or in a clear
error after which a rerun gives them (nothing computed is lost)."""

from __future__ import annotations

import pytest

from hudd_testkit import chaos_trials

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return chaos_trials.prepare(tmp_path_factory.mktemp("chaos"))


def _check(records: list[dict]) -> None:
    failed = [r for r in records if r["outcome"] == "FAILED"]
    assert not failed, "\n".join(f"{r['kind']}: {r['detail']}" for r in failed)


def test_clean_run_has_results(lab):
    assert all(lab.reference.values()) and lab.reference["clusters.csv"].count(b"\n") > 10


def test_kill_9_at_random_moments(lab):
    records = chaos_trials.run_trials(lab, ["kill"] * 20, seed=1)
    _check(records)
    assert sum(r["detail"].startswith("killed") for r in records) >= 10  # mostly mid-run


def test_damaged_intermediates(lab):
    _check(chaos_trials.run_trials(lab, ["corrupt"] * 8 + ["kill+corrupt"] * 2, seed=2))


def test_full_disk(lab):
    reason = chaos_trials.disk_full_unavailable(lab.root)
    if reason:
        pytest.skip(f"no small tmpfs to fill: {reason}")
    records = chaos_trials.run_trials(lab, ["disk-full"] * 2, seed=3)
    _check(records)
    assert any(r["outcome"] == "clear error" and "are free" in r["detail"] for r in records)


def test_two_concurrent_runs(lab):
    records = chaos_trials.run_trials(lab, ["concurrent"], seed=4)
    _check(records)
    assert "is in use by pid" in records[0]["detail"]
