"""The report (``T/report.html``) on a work folder as every step leaves it: sections,
table of contents and links, the engineer's words in every section, the bounded size,
escaping, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fixtures import make_report_case

from hudd_core.report import build_report, gather

SECTIONS = [
    "summary",
    "clusters",
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
    from report_browser import find_chromium, probe, screenshot

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
    by_size = sorted(ids.tolist(), key=lambda c: (-sizes[ids == c][0], c))
    assert found["order"]["default"] == by_size  # largest first
    kept = [c for c, n in zip(ids.tolist(), sizes.tolist(), strict=True) if n >= cut]
    assert found["order"]["by_id_filtered"] == kept == found["order"]["cards_by_id_filtered"]
    png = screenshot(case["page"], tmp_path / "report.png", browser)
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[:2] == (3000, 1400) and rgb.std() > 10  # something was drawn
