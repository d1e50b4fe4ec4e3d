"""The documentation holds: generated pages are current, links resolve, the README's
example runs, and nothing cites a file users never get."""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
CODE_DIRS = ["hudd_core", "hudd_testkit", "tests", "benchmarks", "docs"]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".toml", ".cfg", ".html", ".j2", ".csv"}
# Built from parts, so that this file does not match itself.
FORBIDDEN = ["DESIGN" + ".md", "../" + "shared", "/work" + "/shared"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CITATION = re.compile(r"docs/design\.md#([A-Za-z0-9_-]+)")


def load_evidence():
    spec = importlib.util.spec_from_file_location("evidence", ROOT / "benchmarks" / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prose(text: str) -> list[str]:
    """The lines of a Markdown page outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for line in prose(page.read_text())
            if (m := re.match(r"#{1,6}\s+(.*)", line))}  # fmt: skip


def test_slug_follows_github():
    assert slug("Heatmaps (HeatmapModule)") == "heatmaps-heatmapmodule"
    assert slug("Run state (`hudd run`, `hudd demo`)") == "run-state-hudd-run-hudd-demo"
    assert slug("scale_ray_100k") == "scale_ray_100k"


def test_evidence_page_is_generated_and_current():
    ev = load_evidence()
    results = ev.load_results()
    assert (ROOT / "docs" / "evidence.md").read_text() == ev.evidence_page(results), (
        "docs/evidence.md is stale: run python benchmarks/evidence.py"
    )
    readme = (ROOT / "README.md").read_text()
    assert ev.HEADLINE_BEGIN in readme and ev.HEADLINE_END in readme
    assert ev.readme_with_headline(readme, results) == readme, (
        "the README's headline table is stale: run python benchmarks/evidence.py"
    )
    assert ev.main(["--check"]) == 0


def test_evidence_follows_the_results():
    """A changed figure changes the page, and every results file has a section and a
    command."""
    ev = load_evidence()
    results = ev.load_results()
    page = ev.evidence_page(results)
    for stem in results:
        assert f"### {stem}\n" in page
        assert not ev.command_of(stem, results[stem]).startswith("unknown"), stem
        assert "Not rendered" not in "\n".join(ev.render_body(stem, results[stem])), stem
    changed = copy.deepcopy(results)
    changed["distance"]["rows"][0]["scipy/ours"] = 1.0
    assert ev.evidence_page(changed) != page
    assert "1.0× faster" in "\n".join(ev.headline(changed))


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move details to docs/"


def test_nothing_cites_files_outside_the_repository():
    hits = []
    files = [ROOT / "README.md"]
    for d in CODE_DIRS:
        files += [p for p in (ROOT / d).rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file()]
    for path in files:
        text = path.read_text(errors="replace")
        hits += [f"{path.relative_to(ROOT)}: {f}" for f in FORBIDDEN if f in text]
    assert not hits, hits


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for line in prose(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_design_citations_resolve():
    known = anchors(ROOT / "docs" / "design.md")
    bad = []
    for d in CODE_DIRS:
        for path in (ROOT / d).rglob("*.py"):
            bad += [f"{path.relative_to(ROOT)}: #{a}"
                    for a in CITATION.findall(path.read_text()) if a not in known]  # fmt: skip
    assert not bad, bad


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example_compiles():
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    compile(code, "README.md", "exec")


@pytest.mark.slow
def test_readme_example_runs(model_workdir, tmp_path, monkeypatch, capsys):
    """The README's example on tiny generated data and an untrained model, as after
    ``make demo`` (one fine-tuning epoch instead of the reference's ten)."""
    work = model_workdir({"TrainingSet": 48, "TestSet": 24, "ImprovementSet": 24}, name="demo_run")
    models = work.root / "DNNModels"
    models.mkdir()
    shutil.copy(work.pt, models / "demo_alexnet.pt")
    shutil.copy(work.pt.with_suffix(".json"), models / "demo_alexnet.json")
    code = readme_example()
    assert '"epochs": 10' in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"epochs": 10', '"epochs": 1'), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "root-cause clusters" in out and "images to label" in out
    assert (tmp_path / "T" / "report.html").is_file()
    assert (tmp_path / "T" / "DNNModels" / "demo_alexnet_retrained.pt").is_file()
