"""The attachment of noise points (hudd_core.cluster.attach): which points join which
cluster, which form the miscellaneous group, the cap, determinism, ``--attach none``, the
published rule untouched, the flags through the CLI, and the record read back."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hudd_core.cluster.attach import attach_noise, check_attach, nearest_clusters, root_causes
from hudd_core.cluster.labels import NOISE


def _blobs() -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Two tight blobs on grids (A: 5 × 4 points 0.1 apart, reach 0.1; B: 5 × 4 points
    0.2 apart, reach 0.2) and six noise points: two within a blob's reach, four beyond."""
    a = np.array([[x, y] for x in np.arange(5) * 0.1 for y in np.arange(4) * 0.1])
    b = np.array([[10.0 + x, y] for x in np.arange(5) * 0.2 for y in np.arange(4) * 0.2])
    noise = {
        "near_a": [0.48, 0.1],  # 0.08 from A's (0.4, 0.1): within A's reach
        "near_b": [10.95, 0.2],  # 0.15 from B's (10.8, 0.2): within B's reach
        "off_a": [0.25, 0.6],  # 0.30 from A: beyond
        "far_b": [10.4, 3.0],  # 2.4 from B
        "middle": [5.0, 5.0],  # 6.6 from A, 6.7 from B
        "far_a": [-4.0, -4.0],  # 5.7 from A
    }
    Z = np.vstack([a, b, np.array(list(noise.values()))])
    labels = np.array([1] * 20 + [2] * 20 + [NOISE] * len(noise))
    return Z, labels, {name: 40 + i for i, name in enumerate(noise)}


def test_points_within_a_cluster_reach_join_it_the_others_form_the_misc_group():
    Z, labels, at = _blobs()
    near, dist, reach = nearest_clusters(Z, labels)
    assert reach == pytest.approx({1: 0.1, 2: 0.2})
    assert near.tolist() == [1, 2, 1, 2, 1, 1]
    assert dist[0] == pytest.approx(0.08) and dist[3] == pytest.approx(2.4)
    att = attach_noise(Z, labels, "misc", 0.15)  # 4 beyond reach, at most 6 (15% of 46) out
    assert att.labels[:40].tolist() == labels[:40].tolist()  # the members keep their ids
    assert att.labels[at["near_a"]] == 1 and att.labels[at["near_b"]] == 2
    assert att.misc == 3
    far = {at[n] for n in ("off_a", "far_b", "middle", "far_a")}
    assert set(np.flatnonzero(att.labels == 3).tolist()) == far
    picked = att.marks[[at["near_a"], at["near_b"], at["middle"]]]
    assert picked.tolist() == ["reach", "reach", "misc"]
    assert set(att.marks[:40].tolist()) == {""}
    record = att.record()
    assert record["attached"] == 2 and record["miscellaneous"] == 4 and record["noise"] == 6
    assert record["unclustered"] == 0 and record["unclustered_share"] == pytest.approx(4 / 46)
    assert root_causes(att.labels, att.misc)[at["middle"]] == NOISE


@pytest.mark.parametrize("mode", ["misc", "nearest"])
def test_the_cap_attaches_the_closest_of_the_others_to_their_nearest_cluster(mode):
    Z, labels, at = _blobs()
    att = attach_noise(Z, labels, mode, 0.05)  # at most 2 of 46 outside: 2 of the 4 join
    assert att.labels[at["off_a"]] == 1 and att.labels[at["far_b"]] == 2  # the closest two
    assert att.marks[at["off_a"]] == att.marks[at["far_b"]] == "cap"
    left = (3 if mode == "misc" else NOISE), ("misc" if mode == "misc" else "")
    for name in ("middle", "far_a"):
        assert (att.labels[at[name]], att.marks[at[name]]) == left
    assert att.record()["unclustered_share"] <= 0.05
    everything = attach_noise(Z, labels, mode, 0.0)  # no cap left: every point to its nearest
    assert everything.labels[40:].tolist() == [1, 2, 1, 2, 1, 1] and everything.misc is None


def test_nearest_leaves_the_far_points_unclustered_and_none_changes_nothing():
    Z, labels, _ = _blobs()
    att = attach_noise(Z, labels, "nearest", 0.15)
    assert att.misc is None and int(np.sum(att.labels == NOISE)) == 4
    assert att.record()["unclustered"] == 4 and att.record()["attached"] == 2
    none = attach_noise(Z, labels, "none", 0.0)
    assert none.labels.tolist() == labels.tolist() and set(none.marks.tolist()) == {""}
    assert attach_noise(Z, np.zeros(46, int), "misc").labels.tolist() == [0] * 46  # no cluster
    with pytest.raises(ValueError, match="--attach must be one of misc, nearest, none"):
        check_attach("closest", 0.1)
    with pytest.raises(ValueError, match="--max-unclustered must be a share"):
        check_attach("misc", 1.5)


def test_the_attachment_is_deterministic_and_follows_the_images_not_their_order():
    Z, labels, _ = _blobs()
    first, again = (
        attach_noise(Z, labels, "misc", 0.05),
        attach_noise(Z.copy(), labels, "misc", 0.05),
    )
    assert first.labels.tolist() == again.labels.tolist()
    assert first.marks.tolist() == again.marks.tolist()
    order = np.random.default_rng(0).permutation(len(labels))
    moved = attach_noise(Z[order], labels[order], "misc", 0.05)
    assert moved.labels.tolist() == first.labels[order].tolist()
    assert moved.marks.tolist() == first.marks[order].tolist()


# --- the cluster step ----------------------------------------------------------------------


@pytest.fixture()
def scattered(tmp_path):
    """A work folder whose ``conv`` layer holds three planted groups and ten images
    scattered between them (HDBSCAN leaves them as noise)."""
    from hudd_testkit.cluster_fixtures import make_workdir, planted_layer

    sizes = (16, 14, 12, 10)
    case = make_workdir(tmp_path, np.random.default_rng(4), sizes=sizes)
    X, _ = planted_layer(np.random.default_rng(2), [*sizes[:3], 0], 64, spread=6.0)
    rng = np.random.default_rng(5)
    X = np.vstack([X, rng.normal(0.0, 6.0, (10, 64)).astype(np.float32)])
    np.save(case["T"] / "Heatmaps" / "conv.npy", X)
    return case


def _rows(T) -> list[dict]:
    return list(csv.DictReader(open(T / "clusters.csv")))


def test_run_cluster_attaches_in_the_space_the_method_clustered(scattered):
    from hudd_core.cluster import methods as cm
    from hudd_core.cluster import run_cluster

    T, data = scattered["T"], scattered["data"]
    raw = run_cluster(T, data, method="hdbscan", layers=["conv"], gifs=False, progress=False,
                      attach="none")  # fmt: skip
    assert "attached" not in _rows(T)[0] and "attach" not in raw and raw["n_unclustered"] > 0
    s = run_cluster(T, data, method="hdbscan", layers=["conv"], gifs=False, progress=False,
                    max_unclustered=0.05)  # fmt: skip
    rows = _rows(T)
    labels = np.array([int(r["cluster"]) for r in rows])
    marks = [r["attached"] for r in rows]
    # the oracle: the method's own clusters and reduced features, attached by hand
    X = cm.features(np.load(T / "Heatmaps" / "conv.npy"), "unit")
    res = cm.cluster_features({"conv": X}, cm.METHODS["hdbscan"], seed=0)
    expected = attach_noise(res.reduced, res.labels, "misc", 0.05)
    assert labels.tolist() == expected.labels.tolist() and marks == expected.marks.tolist()
    assert s["attach"] == expected.record() and s["attach"]["unclustered_share"] <= 0.05
    assert s["n_clusters"] == raw["n_clusters"] == res.k and s["n_unclustered"] == 0
    on_disk = json.loads((T / "ClusterAnalysis" / "summary.json").read_text())
    assert on_disk["attach"] == s["attach"]
    assert sum(m in ("reach", "cap") for m in marks) == s["attach"]["attached"]
    assert marks.count("misc") == s["attach"]["miscellaneous"]
    # RQ1: the miscellaneous group is no cluster; without the attached, the method's clusters
    rq1 = json.loads((T / "ClusterAnalysis" / "rq1.json").read_text())
    assert rq1["attached"] == s["attach"]["attached"] and rq1["misc_cluster"] == expected.misc
    assert rq1["without_attached"]["n_evaluated"] == raw["rq1"]["n_evaluated"]
    assert rq1["without_attached"]["share_50pct"] == raw["rq1"]["share_50pct"]
    sizes = np.bincount(labels)
    assert rq1["n_evaluated"] == int(np.sum(sizes[1 : res.k + 1] > 1))


def test_the_published_rule_is_untouched(scattered):
    from hudd_core.cluster import run_cluster

    T, data = scattered["T"], scattered["data"]
    written = {}
    for attach, cap in (("none", 0.15), ("misc", 0.0), ("nearest", 0.5)):
        s = run_cluster(T, data, gifs=False, progress=False, device="cpu", attach=attach,
                        max_unclustered=cap)  # fmt: skip
        assert "attach" not in s and "n_unclustered" not in s
        files = [T / "clusters.csv", *(T / "ClusterAnalysis").glob("*.csv"),
                 T / "ClusterAnalysis" / "rq1.json"]  # fmt: skip
        written[attach] = {p.name: p.read_bytes() for p in files}
    assert written["none"] == written["misc"] == written["nearest"]
    assert _rows(T)[0].keys() == {"image", "cluster", "layer"}


def test_the_flags_through_the_cli_and_the_report(scattered):
    from hudd_core.cli import main

    T, data = scattered["T"], scattered["data"]
    args = ["--workdir", str(T), "--data", str(data), "--device", "cpu", "--quiet", "--no-gifs"]
    assert main(["cluster", *args, "--method", "hdbscan", "--layers", "conv",
                 "--attach", "nearest", "--max-unclustered", "0"]) == 0  # fmt: skip
    rows = _rows(T)
    assert all(r["cluster"] != "0" for r in rows)  # no cap left: every image in a cluster
    summary = json.loads((T / "ClusterAnalysis" / "summary.json").read_text())
    assert summary["attach"]["mode"] == "nearest" and summary["attach"]["max_unclustered"] == 0
    assert summary["attach"]["attached"] == summary["attach"]["noise"] > 0
    attached = [r["image"] for r in rows if r["attached"]]
    page = (T / "report.html").read_text()
    assert "noise images attached to their nearest cluster (--attach nearest)" in page
    assert "… without the attached images" in page
    assert page.count('<div class="attached"><b>attached:</b>') >= 1
    assert all(img in page for img in attached)  # each named under its sheet
    assert main(["cluster", *args, "--method", "hdbscan", "--layers", "conv"]) == 0
    summary = json.loads((T / "ClusterAnalysis" / "summary.json").read_text())
    misc = summary["attach"]["misc_cluster"]
    page = (T / "report.html").read_text()
    assert misc == summary["n_clusters"] + 1  # the default: the far ones, one group
    assert f'<h3>Miscellaneous <span class="muted">(cluster {misc}:' in page
    n_real = summary["n_clusters"]
    assert f"<tr><th>root-cause clusters</th><td>{n_real}</td></tr>" in page
    assert f'<a href="#cluster-{misc}">miscellaneous</a>' in page  # the 2-D map's legend
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["cluster", *args, "--attach", "closest"])
    assert main(["cluster", *args, "--method", "dbscan", "--max-unclustered", "2"]) == 2


def test_hudd_run_reruns_the_cluster_step_when_the_attachment_changes():
    """The settings are in the cluster step's fingerprint (a rerun with the same ones
    skips it) and checked before the first step."""
    from hudd_core.options import DEFAULTS
    from hudd_core.pipeline import SPECS, validate
    from hudd_core.runstate import fingerprint

    spec = SPECS["cluster"]
    base = {k: DEFAULTS[k] for k in spec.options}
    same = fingerprint(dict(base), [])
    assert fingerprint(base, []) == same
    assert fingerprint({**base, "attach": "nearest"}, []) != same
    assert fingerprint({**base, "max_unclustered": 0.1}, []) != same
    validate(dict(DEFAULTS))
    with pytest.raises(ValueError, match="--max-unclustered"):
        validate({**DEFAULTS, "max_unclustered": -0.1})
