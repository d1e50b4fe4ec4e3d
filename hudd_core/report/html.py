"""``T/report.html``: one self-contained page (images and GIFs as base64 data URIs, inline
CSS, no script, nothing fetched) that an engineer opens offline.

Sections: summary; one card per root-cause cluster (its GIF, sample images with the input
relevance and the best layer's relevance overlaid, its size, the parameters whose variance
it reduces most, its planted region); per-layer WICD/knee and silhouette plots; the
dendrogram; the RQ1 figure; and a "Retraining" section that later steps fill
(:func:`retraining_section`).

Example (after ``hudd cluster``)::

    from hudd_core.report import build_report
    build_report("T", "DataSets")   # -> T/report.html
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from hudd_core.cluster import layer_folder
from hudd_core.fileio import atomic_write_text
from hudd_core.plots import dendrogram_png, rq1_plot
from hudd_core.rcc import rcc_folder

THUMB = 112
GIF_EMBED_LIMIT = 2 << 20  # larger GIFs are re-rendered smaller for the page
GIF_EMBED_FRAMES = 200  # ... with at most this many members (2 minutes)
GIF_PAGE_BUDGET = 32 << 20  # all GIFs above this: every one embedded in the lighter form
MANY_CLUSTERS = 60

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
background:#fafafa}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;font-size:14px} th{background:#eee}
.cards{display:flex;flex-wrap:wrap;gap:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;width:620px}
.card h3{margin:0 0 8px 0} .row{display:flex;gap:12px;align-items:flex-start}
.gif img{width:180px;image-rendering:pixelated;border:1px solid #ccc}
.samples{display:grid;grid-template-columns:repeat(6,98px);gap:4px;margin-top:8px}
.samples img{width:98px;height:98px;object-fit:contain;background:#000;
image-rendering:pixelated}
.samples .lbl{font-size:11px;color:#666;text-align:center}
.muted{color:#666;font-size:13px} .plot img{max-width:100%}
details.plot{margin:6px 0} details.plot summary{cursor:pointer;font-weight:600;padding:4px 0}
.retraining{border:2px dashed #999;padding:8px 12px;background:#fff}
"""


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for embedding in the page."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def relevance_map(row: np.ndarray, shape: list[int]) -> np.ndarray:
    """A heatmap row as a 2-D map: reshaped to its layer's shape, channels summed (a
    flat layer becomes one row)."""
    a = np.asarray(row, dtype=np.float32).reshape(shape) if shape else np.asarray(row)
    if a.ndim == 3:
        a = a.sum(axis=0)
    elif a.ndim == 1:
        a = a[None, :]
    return a


def overlay(image: Image.Image, rel: np.ndarray, size: int = THUMB) -> Image.Image:
    """``rel`` (any 2-D size; upsampled bilinearly) over the grayscale image: red for
    positive relevance, blue for negative, scaled by the largest magnitude."""
    from matplotlib import colormaps

    base = image.convert("L").convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    m = float(np.abs(rel).max()) or 1.0
    up = Image.fromarray((rel / m).astype(np.float32), mode="F")
    up = np.asarray(up.resize((size, size), Image.Resampling.BILINEAR))
    rgba = colormaps["bwr"]((np.clip(up, -1, 1) + 1) / 2)
    alpha = np.clip(np.abs(up), 0, 1)[..., None] * 0.85
    out = np.asarray(base, dtype=np.float32) / 255 * (1 - alpha) + rgba[..., :3] * alpha
    return Image.fromarray((out * 255).astype(np.uint8))


class _Heatmaps:
    """Rows of the recorded layers (memory-mapped), by image, for the overlays."""

    def __init__(self, workdir: Path):
        hm = workdir / "Heatmaps"
        self.layers: dict[str, dict] = {}
        self.row: dict[str, int] = {}
        try:
            meta = json.loads((hm / "layers.json").read_text())
            self.layers = {m["name"]: m for m in meta["layers"]}
            self.row = {r["image"]: int(r["row"]) for r in _read_csv(hm / "index.csv")}
        except (OSError, ValueError, KeyError):
            pass
        self.dir = hm
        self._open: dict[str, np.ndarray] = {}

    def get(self, layer: str, image: str) -> np.ndarray | None:
        if layer not in self.layers or image not in self.row:
            return None
        if layer not in self._open:
            path = self.dir / self.layers[layer]["file"]
            if not path.exists():
                return None
            self._open[layer] = np.load(path, mmap_mode="r")
        return relevance_map(self._open[layer][self.row[image]], self.layers[layer]["shape"])


def _img_tag(uri: str, alt: str = "", title: str = "") -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}" title="{html.escape(title)}">'


def _samples_html(images: list[str], data: Path, hm: _Heatmaps, layer: str, n: int) -> str:
    pick = [images[int(i)] for i in np.linspace(0, len(images) - 1, min(n, len(images)))]
    cells, labels = [], ["image", "input relevance", f"{layer} relevance"]
    for img in dict.fromkeys(pick):
        path = data / img
        if not path.exists():
            continue
        with Image.open(path) as im:
            im = im.convert("RGB")
        views = [im.resize((THUMB, THUMB), Image.Resampling.BILINEAR)]
        for name in ("input", layer):
            rel = hm.get(name, img)
            views.append(overlay(im, rel) if rel is not None else None)
        for v, lbl in zip(views, labels, strict=True):
            cells.append(
                f"<div>{_img_tag(data_uri(_png_bytes(v), 'image/png'), img, img)}"
                f'<div class="lbl">{lbl}</div></div>'
                if v is not None
                else f'<div class="lbl">{lbl}: not recorded</div>'
            )
    return f'<div class="samples">{"".join(cells)}</div>' if cells else ""


def _gif_uri(path: Path, members: list[Path], light: bool = False) -> tuple[str | None, str]:
    """The cluster's GIF as a data URI, and a note when the page shows a lighter version
    (large clusters, or ``light``: 96 px, at most ``GIF_EMBED_FRAMES`` evenly spaced
    members)."""
    if not path.exists():
        return None, ""
    data = path.read_bytes()
    if len(data) <= GIF_EMBED_LIMIT and not light:
        return data_uri(data, "image/gif"), ""
    import tempfile

    from hudd_core.rcc import write_gif

    pick = np.unique(np.linspace(0, len(members) - 1, GIF_EMBED_FRAMES).astype(int))
    present = [members[i] for i in pick if members[i].exists()]
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.gif"
        write_gif(present, small, max_side=96)
        data = small.read_bytes()
    rel = html.escape(f"{path.parent.name}/{path.name}")
    note = (
        f"<span class='muted'>page shows {len(present)} of {len(members)} frames; "
        f"all of them: <a href='{rel}'>{rel}</a></span>"
    )
    return data_uri(data, "image/gif"), note


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v, pct: bool = False) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if np.isnan(f):
        return "–"
    return f"{f:.1%}" if pct else f"{f:.4g}"


def _pct(s: dict) -> str:
    return f"{s['mean']:.1%} ± {s['std']:.1%}"


def _pp(s: dict) -> str:
    return f"{s['mean'] * 100:+.1f} ± {s['std'] * 100:.1f} pp"


def retraining_section(info: dict | None) -> str:
    """HTML of the "Retraining" section from ``T/retrain.json``: test accuracy before and
    after per method (HUDD, and the baselines BL1/BL2 at the same labelling budget) as
    mean ± std over the repeats, then the same per planted region, RCC and class.
    ``None``: a note that retraining has not run yet."""
    if not info:
        return (
            '<div class="retraining"><p class="muted">Retraining has not run yet '
            "(<code>hudd retrain --baselines</code> adds accuracy before/after and the "
            "baseline comparisons here).</p></div>"
        )
    methods = [m for m in ("hudd", "BL1", "BL2") if m in info]
    rows = [["before", f"{info['before']['overall']:.1%}", ""]]
    rows += [[m, _pct(info[m]["accuracy"]), _pp(info[m]["gain"])] for m in methods]
    parts = [
        f"<p>Labelling budget {info['labelling_budget']} images "
        f"({info['balanced_unsafe_set']} samples after bootstrap balancing), "
        f"{info['repeats']} run(s) per method; model {html.escape(info['retrained_model'])}."
        "</p>",
        _table(["method", "test accuracy", "gain"], rows),
    ]
    for group in ("planted", "rcc", "class"):
        if group not in info["before"]:
            continue
        names = sorted(info["before"][group], key=lambda g: (not g.isdigit(), g.zfill(9)))
        table = [
            [
                name,
                info["before"][group][name]["n"],
                f"{info['before'][group][name]['accuracy']:.1%}",
                *(_pct(info[m][group][name]) for m in methods),
            ]
            for name in names
        ]
        title = {"planted": "planted region", "rcc": "RCC", "class": "class"}[group]
        parts.append(f"<h4>per {title}</h4>")
        parts.append(_table([title, "n", "before", *methods], table))
    return f'<div class="retraining">{"".join(parts)}</div>'


def build_report(
    workdir: str | Path,
    data: str | Path,
    *,
    retraining: dict | None = None,
    out: str | Path | None = None,
    samples: int = 6,
) -> Path:
    """Writes ``T/report.html`` from the ClusterModule's files (and ``T/retrain.json`` when
    ``retraining`` is not given and that file exists). Returns the page's path.

    Args:
        workdir: the work folder ``T`` (after ``hudd cluster``).
        data: the DataSets root, for the sample images.
        retraining: content for :func:`retraining_section`.
        samples: images shown per cluster (each with its two overlays).
    """
    workdir, data = Path(workdir), Path(data)
    summary_path = workdir / "ClusterAnalysis" / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path} does not exist: run `hudd cluster` first")
    summary = json.loads(summary_path.read_text())
    if retraining is None and (workdir / "retrain.json").exists():
        retraining = json.loads((workdir / "retrain.json").read_text())
    best = summary["best_layer"]
    rows = _read_csv(workdir / "clusters.csv")
    members: dict[int, list[str]] = {}
    for r in rows:
        members.setdefault(int(r["cluster"]), []).append(r["image"])
    parts = [
        f"<h1>HUDD report</h1><p class='muted'>{html.escape(str(workdir.resolve()))}</p>",
        _summary_html(summary, members),
        "<h2>Root-cause clusters</h2>",
        _clusters_html(workdir, data, best, members, samples),
        "<h2>Layers: WICD, knee and silhouette</h2>",
        _layers_html(workdir, summary),
        "<h2>Dendrogram</h2>",
        _dendrogram_html(workdir, summary),
        _rq1_html(workdir),
        "<h2>Retraining</h2>",
        retraining_section(retraining),  # <- later steps: pass their results here
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>HUDD report</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path = Path(out) if out else workdir / "report.html"
    return atomic_write_text(path, page)


def _summary_html(summary: dict, members: dict[int, list[str]]) -> str:
    best = summary["best_layer"]
    info = summary["layers"][best]
    n = summary.get("n_images", sum(len(v) for v in members.values()))
    rows = [
        ["error-inducing images", n],
        ["root-cause clusters", len(members)],
        ["best layer", best],
        ["number of clusters chosen by", info["method"]],
        ["WICD at k", _fmt(info["wicd"])],
        ["silhouette at k", _fmt(info["silhouette"])],
        ["images to inspect (5 per cluster)", _fmt(summary.get("inspect_share"), pct=True)],
    ]
    if info.get("approximate"):
        rows.append(["clustering", "APPROXIMATE (large N: random projection + sampling)"])
    rq1 = summary.get("rq1")
    if rq1:
        rows.append(
            [
                "clusters with ≥ 50% variance reduction in some parameter",
                f"{_fmt(rq1['share_50pct'], pct=True)} "
                f"({rq1['n_with_50pct_reduction']} of {rq1['n_evaluated']} non-singletons)",
            ]
        )
        if rq1.get("binary_params"):
            rows.append(
                [
                    "… counting only parameters with more than two values",
                    f"{_fmt(rq1.get('share_50pct_continuous'), pct=True)} (leaving out "
                    f"{', '.join(rq1['binary_params'])})",
                ]
            )
    body = "".join(
        f"<tr><th>{html.escape(str(a))}</th><td>{html.escape(str(b))}</td></tr>" for a, b in rows
    )
    return f"<h2>Summary</h2><table>{body}</table>"


def _clusters_html(workdir: Path, data: Path, best: str, members, samples: int) -> str:
    hm = _Heatmaps(workdir)
    red = {
        int(r["cluster"]): r
        for r in _read_csv(workdir / "ClusterAnalysis" / "variance_reduction.csv")
    }
    planted = {int(r["cluster"]): r for r in _read_csv(workdir / "ClusterAnalysis" / "planted.csv")}
    gifs = {cid: rcc_folder(workdir, best) / f"Cluster_{cid}.gif" for cid in members}
    # a page that stays openable: lighter GIFs past GIF_PAGE_BUDGET, fewer samples past
    # MANY_CLUSTERS clusters
    light = sum(p.stat().st_size for p in gifs.values() if p.exists()) > GIF_PAGE_BUDGET
    if len(members) > MANY_CLUSTERS:
        samples = min(samples, 2)
    cards = []
    for cid in sorted(members):
        imgs = members[cid]
        gif, note = _gif_uri(gifs[cid], [data / i for i in imgs], light)
        gif_html = _img_tag(gif, f"Cluster {cid}") if gif else "<p class='muted'>no GIF</p>"
        facts = [f"<b>{len(imgs)}</b> image{'s' if len(imgs) != 1 else ''}"]
        if note:
            facts.append(note)
        if cid in red:
            facts.append(_reduction_html(red[cid]))
        if cid in planted:
            p = planted[cid]
            facts.append(
                f"planted region: <b>{html.escape(p['dominant'])}</b> "
                f"(purity {_fmt(p['purity'], pct=True)}, recall {_fmt(p['recall'], pct=True)})"
            )
        cards.append(
            f'<div class="card" id="cluster-{cid}"><h3>Cluster {cid}</h3>'
            f'<div class="row"><div class="gif">{gif_html}</div>'
            f"<div>{'<br>'.join(facts)}</div></div>"
            f"{_samples_html(imgs, data, hm, best, samples)}</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _reduction_html(row: dict, top: int = 3) -> str:
    skip = {"cluster", "size", "max_reduction", "max_param"}
    vals = [(k, float(v)) for k, v in row.items() if k not in skip and v not in ("", None)]
    vals.sort(key=lambda kv: -kv[1])
    if not vals:
        return "<span class='muted'>variance reduction: n/a (singleton)</span>"
    items = ", ".join(f"{html.escape(k)} {v:.0%}" for k, v in vals[:top])
    return f"largest variance reduction: {items}"


def _layers_html(workdir: Path, summary: dict) -> str:
    rows = [
        [
            name + (" (best)" if name == summary["best_layer"] else ""),
            info["k"],
            info["method"],
            _fmt(info["wicd"]),
            _fmt(info["silhouette"]),
        ]
        for name, info in summary["layers"].items()
    ]
    parts = [_table(["layer", "k", "chosen by", "WICD at k", "silhouette at k"], rows)]
    best = summary["best_layer"]
    for name in [best, *(n for n in summary["layers"] if n != best)]:  # best first, open
        png = layer_folder(workdir, name) / "knee.png"
        if png.exists():
            parts.append(
                f'<details class="plot"{" open" if name == best else ""}>'
                f"<summary>{html.escape(name)}{' (best layer)' if name == best else ''}"
                f"</summary>{_img_tag(data_uri(png.read_bytes(), 'image/png'), name)}</details>"
            )
    return "".join(parts)


def _dendrogram_html(workdir: Path, summary: dict) -> str:
    best = summary["best_layer"]
    path = layer_folder(workdir, best) / "linkage.npy"
    if not path.exists() or summary["layers"][best]["k"] < 2:
        return "<p class='muted'>no linkage</p>"
    png = dendrogram_png(np.load(path), summary["layers"][best]["k"])
    return f'<div class="plot">{_img_tag(data_uri(png, "image/png"), "dendrogram")}</div>'


def _rq1_html(workdir: Path) -> str:
    rows = _read_csv(workdir / "ClusterAnalysis" / "variance_reduction.csv")
    rq1_json = workdir / "ClusterAnalysis" / "rq1.json"
    if not rows or not rq1_json.exists():
        return ""
    rq1 = json.loads(rq1_json.read_text())
    share = rq1["share_50pct"]
    ids = [int(r["cluster"]) for r in rows]
    best = np.array([float(r["max_reduction"]) if r["max_reduction"] else np.nan for r in rows])
    png = rq1_plot(best, ids, 0.0 if share != share else share)
    parts = [
        "<h2>Variance reduction of the simulator parameters (RQ1)</h2>",
        f'<div class="plot">{_img_tag(data_uri(png, "image/png"), "RQ1")}</div>',
    ]
    planted = rq1.get("planted")
    if planted:
        prow = [
            [
                r,
                v["errors"],
                v["best_cluster"],
                _fmt(v["recall"], pct=True),
                _fmt(v["purity"], pct=True),
                ", ".join(map(str, v["dominated_clusters"])) or "–",
            ]
            for r, v in planted.items()
        ]
        parts.append("<h3>Planted regions</h3>")
        header = ["region", "error images", "main cluster", "recall", "purity", "dominates"]
        parts.append(_table(header, prow))
    return "".join(parts)
