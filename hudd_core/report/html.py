"""``T/report.html``: one self-contained page (pictures as data URIs, inline CSS and
script, nothing fetched) that an engineer opens offline, of bounded size at any number of
error images (:mod:`hudd_core.report.gather` says what it keeps and links).

The module only renders: :func:`hudd_core.report.gather.gather` collects each section's
data as plain dicts, and each section has its jinja2 template (``templates/<section>.html``,
autoescaped) inside ``page.html``. Sections: contents, summary, the root-cause clusters
(sortable and filterable overview; per cluster its animation and contact sheet, heatmap
overlays, true → predicted pairs, the parameters whose variance it reduces, and the
engineer's inspection entry from ``T/inspection.csv``), the error images in two
dimensions coloured by cluster (when ``embedding.csv`` exists), the unsafe set, retraining,
RQ1, the layers' WICD/knee plots, the dendrogram, and what the page leaves out.

Example (after ``hudd cluster``)::

    from hudd_core.report import build_report
    build_report("T", "DataSets")   # -> T/report.html (and T/inspection.csv, if new)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from hudd_core.fileio import atomic_write_text
from hudd_core.inspection import update_inspection
from hudd_core.report import gather as G

SECTIONS = [  # (id, title, template); a section whose data is None is left out
    ("summary", "Summary", "summary.html"),
    ("clusters", "Root-cause clusters", "clusters.html"),
    ("embedding", "Error images in two dimensions", "embedding.html"),
    ("assignment", "Unsafe set: selected improvement images", "assignment.html"),
    ("retraining", "Retraining", "retraining.html"),
    ("rq1", "Variance reduction of the simulator parameters (RQ1)", "rq1.html"),
    ("layers", "Layers: WICD, knee and silhouette", "layers.html"),
    ("dendrogram", "Dendrogram", "dendrogram.html"),
    ("left_out", "What this page leaves out", "left_out.html"),
]


@cache
def environment() -> Environment:
    """The templates' environment: autoescaped, strict about undefined names, with the
    number filters ``pct``, ``pct0``, ``num``, ``pct_pm`` (mean ± std) and ``pp`` (gain in
    percentage points)."""
    env = Environment(
        loader=PackageLoader("hudd_core.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=G.fmt_pct,
        pct0=lambda v: G.fmt_pct(v, 0),
        num=G.fmt_num,
        pct_pm=lambda s: f"{s['mean']:.1%} ± {s['std']:.1%}",
        pp=lambda s: f"{s['mean'] * 100:+.1f} ± {s['std'] * 100:.1f} pp",
    )
    return env


def render_section(template: str, data: dict) -> Markup:
    """One section's HTML from its template and data."""
    return Markup(environment().get_template(template).render(**data))


def retraining_section(info: dict | None, words: dict[int, dict] | None = None) -> str:
    """HTML of the "Retraining" section from ``T/retrain.json``: test accuracy before and
    after per method (HUDD, and the baselines BL1/BL2 at the same labelling budget) as
    mean ± std over the repeats, per named root cause (``words``: the engineer's entries
    by cluster id), then per planted region, RCC and class. ``None``: a note that
    retraining has not run yet."""
    data = G.retraining(info, words or {})
    return str(render_section("retraining.html", data or {"info": None}))


def build_report(
    workdir: str | Path,
    data: str | Path,
    *,
    retraining: dict | None = None,
    out: str | Path | None = None,
    samples: int = 3,
) -> Path:
    """Writes ``T/report.html`` from the work folder's files (``T/retrain.json`` when
    ``retraining`` is not given and that file exists), after bringing ``T/inspection.csv``
    up to date with the clustering (:func:`hudd_core.inspection.update_inspection`; the
    engineer's entries are kept). Returns the page's path.

    Args:
        workdir: the work folder ``T`` (after ``hudd cluster``).
        data: the DataSets root, for the images.
        retraining: content for the retraining section.
        out: where to write the page (default ``T/report.html``).
        samples: members per cluster shown with their heatmap overlays.
    """
    workdir, data = Path(workdir), Path(data)
    if not (workdir / "ClusterAnalysis" / "summary.json").is_file():
        raise FileNotFoundError(
            f"{workdir / 'ClusterAnalysis' / 'summary.json'} does not exist: "
            "run `hudd cluster` first"
        )
    update_inspection(workdir, data)
    if retraining is None:
        retraining = G.read_json(workdir / "retrain.json")
    path = Path(out) if out else workdir / "report.html"
    content = G.gather(workdir, data, path, retraining, samples)
    content["retraining"] = content["retraining"] or {"info": None}
    content["assignment"] = content["assignment"] or {"groups": None}
    content["left_out"] = {"items": content["left_out"]}
    sections = [
        {"id": sid, "title": title, "html": render_section(template, content[sid])}
        for sid, title, template in SECTIONS
        if content[sid] is not None
    ]
    env = environment()
    page = env.get_template("page.html").render(
        sections=sections,
        workdir=content["summary"]["workdir"],
        css=Markup(_static("report.css")),
        js=Markup(_static("report.js")),
    )
    return atomic_write_text(path, page)


def _static(name: str) -> str:
    loader = environment().loader
    assert loader is not None
    return loader.get_source(environment(), name)[0]
