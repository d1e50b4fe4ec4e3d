"""The report (``T/report.html``) on a work folder as every step leaves it: sections,
table of contents and links, the engineer's words in every section, the bounded size,
escaping, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hudd_core.report import build_report, gather
from hudd_testkit.report_fixtures import make_report_case

SECTIONS = [
    "summary",
    "clusters",
    "embedding",
    "assignment",
    "retraining",
    "rq1",
    "layers",
    "dendrogram",
    "left_out",
]
WORDS = {
    1: ("eyes closed at night", "yes", "dark cabin"),
    2: ("eyes closed at night", "yes", ""),
    3: ("<b>glare</b> & co", "no", "not safety relevant"),
}


def _fill(T: Path, words: dict[int, tuple[str, str, str]]) -> None:
    with open(T / "inspection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["cluster"] and int(r["cluster"]) in words:
            r["root_cause"], r["unsafe"], r["notes"] = words[int(r["cluster"])]
    with open(T / "inspection.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    case = make_report_case(tmp_path_factory.mktemp("report"), 150, 6)
    build_report(case["T"], case["data"])  # writes the inspection template too
    _fill(case["T"], WORDS)
    case["page"] = build_report(case["T"], case["data"])
    case["html"] = case["page"].read_text()
    return case


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_sections_contents_and_self_contained(case):
    page = case["html"]
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page and f'<a href="#{sid}">' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<link" not in page and not re.search(r"<script[^>]*src", page)
    assert "data:image/gif" not in page  # animations come from the contact sheets


def test_cluster_and_selection_link_each_other(case):
    page, T = case["html"], case["T"]
    ids, counts = np.unique(case["labels"], return_counts=True)
    selected = {}
    for r in csv.DictReader(open(T / "unsafe_set.csv")):
        selected[int(r["cluster"])] = selected.get(int(r["cluster"]), 0) + 1
    cards = _section(page, "clusters")
    assign = _section(page, "assignment")
    for cid, n in zip(ids.tolist(), counts.tolist(), strict=True):
        assert f'id="cluster-{cid}"' in cards and f'data-size="{n}"' in cards
        gif = f"conv/Cluster_{cid}.gif"
        assert f'href="{gif}"' in cards and (case["page"].parent / gif).is_file()
        assert f'<a href="#assign-{cid}">{selected[cid]} selected improvement images' in cards
        assert f'<tr id="assign-{cid}"><td><a href="#cluster-{cid}">{cid}</a>' in assign
        assert f"<td>{selected[cid]} / {int(np.ceil(2 * n))}</td>" in assign


def test_engineer_words_beside_each_cluster_everywhere(case):
    page = case["html"]
    esc = "&lt;b&gt;glare&lt;/b&gt; &amp; co"
    assert "<b>glare</b>" not in page  # autoescaped, never markup
    cards, assign, retrain = (_section(page, s) for s in ("clusters", "assignment", "retraining"))
    m = re.search(r'id="cluster-1".*?</article>', cards, re.S)
    assert 'class="root-cause">eyes closed at night<' in m.group(0)
    assert 'class="unsafe-yes">yes<' in m.group(0) and "dark cabin" in m.group(0)
    assert esc in cards and "not safety relevant" in cards
    assert re.search(r'id="assign-3">.*?class="root-cause">' + re.escape(esc), assign)
    assert re.search(
        r'href="#cluster-2">2</a></td><td class="root-cause">eyes closed at night'
        r"</td><td>yes</td>",
        retrain,
    )


def test_accuracy_per_named_root_cause(case):
    """Clusters 1 and 2 carry one name: pooled by test images, run by run (oracle)."""
    info, retrain = case["retrain"], _section(case["html"], "retraining")
    n = [info["before"]["rcc"][c]["n"] for c in ("1", "2")]
    before = sum(k * info["before"]["rcc"][c]["accuracy"] for k, c in zip(n, "12", strict=True))
    cells = []
    for m in ("hudd", "BL1", "BL2"):
        runs = [
            sum(k * info[m]["rcc"][c]["runs"][r] for k, c in zip(n, "12", strict=True)) / sum(n)
            for r in range(3)
        ]
        cells.append(f"<td>{np.mean(runs):.1%} ± {np.std(runs, ddof=1):.1%}</td>")
    row = (
        f'<tr><td class="root-cause">eyes closed at night</td><td><a href="#cluster-1">1</a>, '
        f'<a href="#cluster-2">2</a></td><td>{sum(n)}</td><td>{before / sum(n):.1%}</td>'
        + "".join(cells)
        + "</tr>"
    )
    assert row in retrain


def _sheets(html: str) -> list[Image.Image]:
    out = []
    for uri in re.findall(r'<img class="sheet"[^>]*src="data:image/\w+;base64,([^"]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(uri))) as im:
            out.append(im.copy())
    return out


def test_contact_sheets_are_capped(case, tmp_path, monkeypatch):
    sheet = gather._sheet(case["data"], case["images"][:1] * 250, 100, 48)
    assert sheet["n"] == 100 and (sheet["width"], sheet["height"]) == (480, 480)
    monkeypatch.setattr(gather, "PAGE_FRAMES", 60)  # 6 clusters: 12 frames each at most
    page = build_report(case["T"], case["data"], out=tmp_path / "r.html").read_text()
    sizes = np.unique(case["labels"], return_counts=True)[1]
    cards = _section(page, "clusters")
    for n in sizes:
        assert f"contact sheet: {min(12, n)} of {n} images" in cards
    for im in _sheets(cards):
        assert im.width <= 10 * 48 and im.height <= 2 * 48  # 12 cells in rows of 10
    left = _section(page, "left_out")
    assert f"<td>{sum(np.minimum(sizes, 12))}</td><td>{sizes.sum()}</td>" in left
    assert "Cluster_&lt;id&gt;.gif" in left  # where the rest is


def test_overlays_for_a_handful_of_members(case):
    cards = _section(case["html"], "clusters")
    assert cards.count('class="strip"') == len(np.unique(case["labels"]))
    assert "heatmap overlays of 3 members (columns: image, input relevance, conv relevance" in cards


def test_a_bad_inspection_entry_stops_the_report(case, tmp_path):
    T = tmp_path / "T"
    shutil.copytree(case["T"], T)
    _fill(T, {4: ("x", "maybe", "")})
    with pytest.raises(ValueError, match=r"inspection.csv line \d+: unsafe must be yes, no"):
        build_report(T, case["data"])


@pytest.mark.slow
def test_report_in_headless_chromium(case, tmp_path):
    """No console error, every image loads, every section and the engineer's words show,
    the animations draw; a screenshot is kept in the test's tmp folder."""
    from hudd_testkit.report_browser import find_chromium, probe, screenshot

    browser = find_chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing on CI (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    ids, sizes = np.unique(case["labels"], return_counts=True)
    cut = int(np.median(sizes))
    found = probe(case["page"], browser, min_size=cut)
    assert found["errors"] == [] and found["console"] == []
    assert found["broken"] == [] and found["images"] >= 2 * len(np.unique(case["labels"]))
    assert found["sections"] == SECTIONS and found["toc"] == [f"#{s}" for s in SECTIONS]
    assert {"eyes closed at night", "<b>glare</b> & co"} <= set(found["root_causes"])
    assert found["canvases_drawn"] >= 1
    hover = found["hover"]  # the embedding's first sampled point shows its image
    assert hover["shown"] and hover["drawn"] and hover["text"].endswith(hover["point"][4])
    by_size = sorted(ids.tolist(), key=lambda c: (-sizes[ids == c][0], c))
    assert found["order"]["default"] == by_size  # largest first
    kept = [c for c, n in zip(ids.tolist(), sizes.tolist(), strict=True) if n >= cut]
    assert found["order"]["by_id_filtered"] == kept == found["order"]["cards_by_id_filtered"]
    png = screenshot(case["page"], tmp_path / "report.png", browser)
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[:2] == (3000, 1400) and rgb.std() > 10  # something was drawn


# --- the cluster step's pairs and embedding, the method, the gains' box plot ---------------


def _card(page: str, cid: int) -> str:
    m = re.search(rf'<article class="card" id="cluster-{cid}".*?</article>', page, re.S)
    assert m, f"card {cid} missing"
    return m.group(0)


def test_pair_shares_match_pairs_csv(case):
    """Per card the top 3 pairs of ``pairs.csv`` by count and the rest as "other"."""
    by: dict[int, list[tuple[str, int, float]]] = {}
    for r in csv.DictReader(open(case["T"] / "ClusterAnalysis" / "pairs.csv")):
        by.setdefault(int(r["cluster"]), []).append((r["pair"], int(r["count"]), float(r["share"])))
    assert sorted(by) == np.unique(case["labels"]).tolist()
    for cid, rows in by.items():
        rows = sorted(rows, key=lambda r: -r[1])
        want = [(p.replace("→", " → "), f"{s:.0%}") for p, _, s in rows[:3]]
        if len(rows) > 3:
            want.append(("other", f"{sum(s for _, _, s in rows[3:]):.0%}"))
        card = _card(case["html"], cid)
        shown = re.findall(r'<span class="pair" title="\d+ of \d+">(.*?) (\d+%)</span>', card)
        assert [(html.unescape(p), v) for p, v in shown] == want, cid
        widths = [float(w) for w in re.findall(r'<span style="width:([\d.]+)%"', card)]
        assert sum(widths) == pytest.approx(100, abs=0.3)


def test_keypoint_runs_show_no_pairs(case, tmp_path):
    """No classes (a keypoint regressor's testResult.csv): pairs.csv says "unknown" for
    every image, and the cards name no pair."""
    from hudd_core.cluster.analysis import embedding_of, write_cluster_analysis

    T = tmp_path / "T"
    shutil.copytree(case["T"], T)
    rows = list(csv.DictReader(open(T / "testResult.csv")))
    with open(T / "testResult.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "result", "error"])
        w.writerows([r["image"], r["result"], 9.0] for r in rows)
    write_cluster_analysis(T, case["images"], case["labels"], embedding_of(T / "Heatmaps/conv.npy"))
    cards = _section(build_report(T, case["data"]).read_text(), "clusters")
    assert "true → predicted:" not in cards and 'class="pair"' not in cards


def test_embedding_lists_every_cluster_and_its_colour(case):
    sec = _section(case["html"], "embedding")
    ids, sizes = np.unique(case["labels"], return_counts=True)
    legend = dict(re.findall(r'<li data-cluster="(\d+)" data-colour="(#[0-9a-f]{6})">', sec))
    paths = re.findall(
        r'<path class="dots" data-cluster="(\d+)" stroke="(#[0-9a-f]{6})" d="([^"]*)"', sec
    )
    assert sorted(map(int, legend)) == ids.tolist()
    assert len(set(legend.values())) == len(ids)  # one colour each
    assert {c: col for c, col, _ in paths} == legend
    counts = {int(c): d.count("h0") for c, _, d in paths}
    assert counts == dict(zip(ids.tolist(), sizes.tolist(), strict=True))
    for cid, n in zip(ids.tolist(), sizes.tolist(), strict=True):
        assert re.search(rf'<a href="#cluster-{cid}">{cid}</a> <span class="muted">{n}</span>', sec)
    # hover points: on their cluster's path, ordered along x and y as embedding.csv is
    points = json.loads(
        html.unescape(re.search(r'id="embedding-points">(.*?)</script>', sec, re.S).group(1))
    )
    assert 0 < len(points) <= gather.HOVER_POINTS
    drawn = {int(c): set(re.findall(r"M(\d+) (\d+)h0", d)) for c, _, d in paths}
    emb = {r["image"]: r for r in csv.DictReader(open(case["T"] / "ClusterAnalysis/embedding.csv"))}
    for x, y, c, cell, image in points:
        assert (str(x), str(y)) in drawn[c] and int(emb[image]["cluster"]) == c
        assert cell < int(re.search(r'data-n="(\d+)"', _card(case["html"], c)).group(1))
    ex = np.array([float(emb[p[4]]["x"]) for p in points])
    ey = np.array([float(emb[p[4]]["y"]) for p in points])
    px, py = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    assert np.all(np.diff(px[np.argsort(ex, kind="stable")]) >= 0)
    assert np.all(np.diff(py[np.argsort(ey, kind="stable")]) <= 0)  # y points up


def test_older_work_folders_render_without_the_new_files(case, tmp_path):
    """No embedding.csv/pairs.csv and a summary without ``method`` (before --method):
    no embedding section, the pairs from the class results, the published rule named."""
    T = tmp_path / "T"
    shutil.copytree(case["T"], T)
    (T / "ClusterAnalysis" / "embedding.csv").unlink()
    (T / "ClusterAnalysis" / "pairs.csv").unlink()
    summary = json.loads((T / "ClusterAnalysis" / "summary.json").read_text())
    del summary["method"]
    (T / "ClusterAnalysis" / "summary.json").write_text(json.dumps(summary))
    page = build_report(T, case["data"]).read_text()
    assert '<section id="embedding">' not in page and 'href="#embedding"' not in page
    cards = _section(page, "clusters")
    assert 'class="pair"' not in cards and cards.count("<b>true → predicted:</b>") == len(
        np.unique(case["labels"])
    )
    assert "hudd (the published toolset&#39;s rule: Ward per layer, k by wicd-knee)" in page


def test_method_line_in_the_summary(case):
    row = "<tr><th>clustering method</th><td>hudd (the published toolset&#39;s rule: "
    assert row + "Ward per layer, k by wicd-knee)</td></tr>" in _section(case["html"], "summary")


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> dict:
    """A density method's work folder: cluster 0 holds the unclustered images."""
    case = make_report_case(tmp_path_factory.mktemp("noisy"), 150, 6, noise=True, gifs=False)
    case["html"] = build_report(case["T"], case["data"]).read_text()
    return case


def test_a_density_method_names_its_parameters_and_the_unclustered(noisy):
    page, n0 = noisy["html"], int(np.sum(noisy["labels"] == 0))
    assert n0 > 0
    summary = _section(page, "summary")
    # min_cluster_size: 5% of 150 images = 7.5, rounded to 8
    assert (
        "<tr><th>clustering method</th><td>hdbscan: unit heatmaps, pca to 10 dimensions, "
        "hdbscan min_cluster_size=8 (5% of the error images); layer conv of the spatial "
        "layers by label-free score; seed 0</td></tr>"
    ) in summary
    assert f"<tr><th>unclustered images (noise, cluster 0)</th><td>{n0}</td></tr>" in summary
    assert "<tr><th>root-cause clusters</th><td>5</td></tr>" in summary  # 6 less the noise
    assert "WICD at k" not in summary  # no WICD for a density method
    card = _card(page, 0)
    assert "<h3>Unclustered <span" in card and f"{n0} images" in card
    assert '<a href="#cluster-0">0</a> (unclustered)</td>' in _section(page, "clusters")
    assert '<a href="#cluster-0">0</a> (unclustered)</td>' in _section(page, "retraining")
    sec = _section(page, "embedding")
    assert '<li data-cluster="0" data-colour="#9e9e9e">' in sec
    assert '<a href="#cluster-0">unclustered</a>' in sec
    assert 'id="cluster-1"' in page and "<h3>Cluster 1 <span" in _card(page, 1)


def _boxes(html_text: str) -> tuple[dict, dict[str, dict]]:
    svg = re.search(r'<svg class="box" id="gain-box-plot"(.*?)</svg>', html_text, re.S)
    assert svg, "no box plot"
    axis = dict(re.findall(r'data-([\w-]+)="([^"]*)"', svg.group(1).split(">", 1)[0]))
    boxes = {}
    for m in re.finditer(
        r'<g class="method" data-method="([^"]+)"([^>]*)>(.*?)</g>', svg.group(1), re.S
    ):
        boxes[m.group(1)] = {"attrs": dict(re.findall(r'data-(\w+)="([^"]*)"', m.group(2))),
                             "body": m.group(3)}  # fmt: skip
    return {k: float(v) for k, v in axis.items()}, boxes


def test_gain_box_plot_one_box_per_method_at_numpys_quantiles(case):
    """Whiskers at min and max, box at the quartiles, the median: numpy's quantiles of
    each method's runs in retrain.json (pp), drawn at the axis' scale."""
    info = case["retrain"]
    axis, boxes = _boxes(_section(case["html"], "retraining"))
    methods = [m for m in info if isinstance(info[m], dict) and "gain" in info[m]]
    assert sorted(boxes) == sorted(methods) == ["BL1", "BL2", "hudd"]

    def y(v: float) -> float:
        lo, hi = axis["lo"], axis["hi"]
        return axis["y-lo"] - (v - lo) / (hi - lo) * (axis["y-lo"] - axis["y-hi"])

    for m in methods:
        runs = np.array(info[m]["gain"]["runs"]) * 100
        low, q1, med, q3, high = np.percentile(runs, [0, 25, 50, 75, 100])
        a, body = boxes[m]["attrs"], boxes[m]["body"]
        got = [float(a[k]) for k in ("low", "q1", "median", "q3", "high")]
        assert got == pytest.approx([low, q1, med, q3, high], rel=1e-8)
        assert axis["lo"] <= low and high <= axis["hi"]
        median = re.search(r'class="median"[^>]*y1="([\d.]+)"', body).group(1)
        assert float(median) == pytest.approx(y(med), abs=0.01)
        rect = re.search(r'<rect [^>]*y="([\d.]+)" width="48" height="([\d.]+)"', body)
        assert float(rect.group(1)) == pytest.approx(y(q3), abs=0.01)
        assert float(rect.group(2)) == pytest.approx(y(q1) - y(q3), abs=0.02)
        caps = sorted(float(v) for v in re.findall(r'class="whisker cap"[^>]*y1="([\d.]+)"', body))
        assert caps == pytest.approx(sorted([y(high), y(low)]), abs=0.01)
        assert body.count("<circle") == len(runs)


def test_gain_box_plot_with_one_run_shows_points(case):
    from hudd_core.report import retraining_section

    info = json.loads(json.dumps(case["retrain"]))
    for m in ("hudd", "BL1", "BL2"):
        info[m]["gain"]["runs"] = info[m]["gain"]["runs"][:1]
    _, boxes = _boxes(retraining_section(info))
    assert sorted(boxes) == ["BL1", "BL2", "hudd"]
    for m, b in boxes.items():
        assert "<rect" not in b["body"] and b["body"].count("<circle") == 1
        assert float(b["attrs"]["median"]) == pytest.approx(info[m]["gain"]["runs"][0] * 100)


def test_embedding_draws_an_even_sample_past_its_cap():
    """Past ``cap`` rows an even sample is drawn, plus every image shown on hover; the
    legend still counts every image."""
    from hudd_core.report import charts

    rows = [{"image": f"i{j}", "cluster": str(j % 3 + 1), "x": str(j), "y": str(j % 7)}
            for j in range(100)]  # fmt: skip
    out = charts.embedding_scatter(rows, {2: [("i1", 0), ("i4", 1)]}, cap=10)
    assert [g["n"] for g in out["groups"]] == [34, 33, 33]
    assert out["dots"] == sum(g["d"].count("h0") for g in out["groups"]) == 12  # 10 + 2
    assert [p[4] for p in out["points"]] == ["i1", "i4"]
    drawn = {(g["id"], d) for g in out["groups"] for d in g["d"].split("M")[1:]}
    assert all((2, f"{x} {y}h0") in drawn for x, y, *_ in out["points"])


@pytest.mark.parametrize(
    ("name", "bad"), [("embedding.csv", "x"), ("pairs.csv", "count"), ("pairs.csv", "share")]
)
def test_a_damaged_cluster_analysis_file_names_itself(case, tmp_path, name, bad):
    T = tmp_path / "T"
    shutil.copytree(case["T"], T, ignore=shutil.ignore_patterns("Cluster_*"))
    path = T / "ClusterAnalysis" / name
    rows = list(csv.DictReader(open(path)))
    rows[0][bad] = "n/a"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError, match=rf"{name} line 2: .*n/a.*hudd cluster"):
        build_report(T, case["data"])
