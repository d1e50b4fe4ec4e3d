"""What the report shows, gathered from the work folder's files as plain dicts (one per
section; :mod:`hudd_core.report.html` renders them with the section templates).

The page's size is bounded by design, whatever the number of error images: per cluster
one contact sheet of at most ``SHEET_FRAMES`` members (fewer when there are many
clusters: ``PAGE_FRAMES`` in all), overlays for ``samples`` members, the ``SELECTED``
closest selected improvement images, the 2-D embedding's points (at most
``charts.MAX_DOTS``; ``HOVER_POINTS`` of them with an image on hover, cut from the
contact sheets); everything else is linked, and the "left out" section says what and
where.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np

from hudd_core.cluster import layer_folder
from hudd_core.cluster.labels import NOISE
from hudd_core.data.datasets import image_source
from hudd_core.inspection import cluster_facts, inspection_by_cluster, read_inspection
from hudd_core.plots import dendrogram_png, rq1_plot
from hudd_core.rcc import rcc_folder
from hudd_core.report import charts, media

PAGE_FRAMES = 10_000  # contact-sheet cells on the whole page (100 clusters × 100)
MIN_FRAMES = 12
SELECTED = 20  # selected improvement images shown per cluster (the closest)
SELECTED_CELL = 40
DENDROGRAM_LEAVES = 60
MANY_CLUSTERS = 100  # past this, overlays for one member per cluster
TOP_PAIRS = 3  # (true → predicted) pairs named per cluster, the rest as "other"
HOVER_POINTS = 2000  # embedding points that show their image on hover, on the whole page


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file (empty list when it does not exist)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


@contextmanager
def _row_of(path: Path, line: int) -> Iterator[None]:
    """A row that does not parse stops the report with the file and line named."""
    try:
        yield
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} line {line}: {exc!r} (`hudd cluster` rewrites it)") from exc


class Links:
    """Relative links from the page's folder to files of the work folder (URL-quoted;
    None for a file that does not exist)."""

    def __init__(self, workdir: Path, page: Path):
        self.workdir, self.base = workdir, page.resolve().parent

    def __call__(self, path: Path) -> str | None:
        if not path.exists():
            return None
        return quote(Path(os.path.relpath(path.resolve(), self.base)).as_posix())

    def show(self, path: Path) -> str:
        """``path`` as the engineer finds it: relative to the work folder's parent."""
        try:
            return path.relative_to(self.workdir.parent).as_posix()
        except ValueError:
            return path.as_posix()


def frames_per_cluster(n_clusters: int, cap: int = media.SHEET_FRAMES) -> int:
    """Contact-sheet cells per cluster: ``cap``, fewer past ``PAGE_FRAMES`` in all.

    Example:
        >>> frames_per_cluster(100), frames_per_cluster(400), frames_per_cluster(5000)
        (100, 25, 12)
    """
    return max(MIN_FRAMES, min(cap, PAGE_FRAMES // max(1, n_clusters)))


def _sheet(data: Path, images: list[str], n: int, cell: int) -> dict | None:
    """A contact sheet of ``n`` evenly spaced ``images`` (those that open; ``images``:
    those in the sheet, cell by cell)."""
    picked = [(i, media.load_thumbnail(image_source(data, i), cell))
              for i in media.pick_evenly(images, n)]  # fmt: skip
    picked = [(i, t) for i, t in picked if t is not None]
    if not picked:
        return None
    sheet, count = media.contact_sheet([t for _, t in picked], cell)
    cols = sheet.width // cell
    return {
        "uri": media.encoded_uri(sheet),
        "n": count,
        "cols": cols,
        "cell": cell,
        "width": sheet.width,
        "height": sheet.height,
        "images": [i for i, _ in picked],
    }


def summary(workdir: Path, cluster_summary: dict, n_clusters: int) -> dict:
    best = cluster_summary["best_layer"]
    rows = [
        ["error-inducing images", cluster_summary.get("n_images", "")],
        ["clustering method", method_line(cluster_summary)],
        ["root-cause clusters", n_clusters],
    ]
    if "n_unclustered" in cluster_summary:
        rows.append(["unclustered images (noise, cluster 0)", cluster_summary["n_unclustered"]])
    rows += _attach_rows(cluster_summary)
    rows += [["best layer", best], *_selection_rows(cluster_summary)]
    rq1 = cluster_summary.get("rq1")
    if rq1:
        rows.append(
            [
                "clusters with ≥ 50% variance reduction in some parameter",
                f"{fmt_pct(rq1['share_50pct'])} ({rq1['n_with_50pct_reduction']} of "
                f"{rq1['n_evaluated']} non-singletons)",
            ]
        )
        if rq1.get("binary_params"):
            rows.append(
                [
                    "… counting only parameters with more than two values",
                    f"{fmt_pct(rq1.get('share_50pct_continuous'))} (leaving out "
                    f"{', '.join(rq1['binary_params'])})",
                ]
            )
        if "without_attached" in rq1:
            without = rq1["without_attached"]
            rows.append(["… without the attached images (the clusters as the method left them)",
                         f"{fmt_pct(without['share_50pct'])} ({without['n_with_50pct_reduction']}"
                         f" of {without['n_evaluated']} non-singletons)"])  # fmt: skip
    return {"rows": rows, "workdir": str(workdir.resolve())}


def _attach_rows(cluster_summary: dict) -> list[list]:
    """The summary's rows of the noise's attachment (``summary.json`` ``attach``; none
    without one: the published rule, ``--attach none``)."""
    a = cluster_summary.get("attach")
    if not a:
        return []
    misc = a["misc_cluster"]
    return [
        ["noise images attached to their nearest cluster (--attach "
         f"{a['mode']})", f"{a['attached']} of {a['noise']} ({a['attached_within_reach']} within "
         f"the cluster's reach, {a['attached_for_the_cap']} for the cap)"],
        ["miscellaneous group (not a root cause)",
         f"cluster {misc}: {a['miscellaneous']} images" if misc is not None else "none"],
        ["outside every root-cause cluster", f"{fmt_pct(a['unclustered_share'])} (at most "
         f"{fmt_pct(a['max_unclustered'])})"],
    ]  # fmt: skip


def mark_attachment(workdir: Path, data: Path, cards: list[dict], misc: int | None) -> None:
    """Per card, the images attached to it (``T/clusters.csv`` ``attached``: their names
    and a small contact sheet, ``attached``) and whether it is the miscellaneous group
    (``misc``, its label ``miscellaneous``)."""
    by: dict[int, list[str]] = {}
    for r in read_csv(workdir / "clusters.csv"):
        if r.get("attached") in ("reach", "cap"):
            by.setdefault(int(r["cluster"]), []).append(r["image"])
    for card in cards:
        names = by.get(card["id"], [])
        card["misc"] = card["id"] == misc
        if card["misc"]:
            card["label"] = "miscellaneous"
        card["attached"] = {"n": len(names), "images": names,
                            "sheet": _sheet(data, names, SELECTED, SELECTED_CELL)
                            if names else None}  # fmt: skip


def pair_shares(workdir: Path, top: int = TOP_PAIRS) -> dict[int, list[dict]]:
    """Per cluster, from ``T/ClusterAnalysis/pairs.csv``: its ``top`` (true → predicted)
    pairs by count, then ``other`` (the rest together), each ``{pair, n, share}``. A
    cluster without classes (keypoint runs: every pair ``unknown``) has none; so has
    every cluster of an older work folder without the file."""
    path = workdir / "ClusterAnalysis" / "pairs.csv"
    by: dict[int, list[dict]] = {}
    for line, r in enumerate(read_csv(path), start=2):
        with _row_of(path, line):
            row = {"pair": r["pair"].replace("→", " → "), "n": int(r["count"]),
                   "share": float(r["share"])}  # fmt: skip
            by.setdefault(int(r["cluster"]), []).append(row)
    out = {}
    for cid, rows in by.items():
        if all(r["pair"] == "unknown" for r in rows):
            continue
        rows.sort(key=lambda r: -r["n"])  # the file's order; kept for ties
        rest = rows[top:]
        other = [{"pair": "other", "n": sum(r["n"] for r in rest),
                  "share": sum(r["share"] for r in rest)}] if rest else []  # fmt: skip
        out[cid] = rows[:top] + other
    return out


HYPER = {  # what a clusterer's grid share stands for (hudd_core.cluster.methods.GRIDS)
    "hdbscan": "min_cluster_size={m} ({share:.0%} of the error images)",
    "dbscan": "min_samples={m} ({share:.0%} of the error images), eps at the knee of the "
    "distances to the {m}-th neighbour",
    "ward": "with k of the highest silhouette",
}


def _selection_rows(cluster_summary: dict) -> list[list]:
    """How k was chosen at the best layer, the scores there, the share to inspect and
    (the published rule) whether the clustering was exact."""
    info = cluster_summary["layers"][cluster_summary["best_layer"]]
    share = ["images to inspect (5 per cluster)", fmt_pct(cluster_summary.get("inspect_share"))]
    if cluster_summary.get("method", "hudd") != "hudd":
        rows = [
            ["clusters chosen by", cluster_summary.get("selection", "")],
            ["label-free score of the chosen candidate", fmt_num(info["silhouette"])],
            share,
        ]
        finer = cluster_summary.get("finer")
        if finer:  # the second granularity: what the score alone prefers, over the budget
            inspected = fmt_pct(finer.get("inspect"))
            text = f"{finer['k']} clusters at {finer['layer']}, {inspected} inspected"
            rows.append(["a finer partition (the score alone, over the budget)", text])
        return rows
    rows = [
        ["number of clusters chosen by", info["method"]],
        ["WICD at k", fmt_num(info["wicd"])],
        ["silhouette at k", fmt_num(info["silhouette"])],
        share,
    ]
    path = cluster_summary.get("clustering", {})
    if info.get("approximate") or path.get("path") == "approximate":
        reason = path.get("reason") or "large N"
        rows.append(["clustering", f"APPROXIMATE ({reason}: random projection + sampling)"])
    else:
        rows.append(["clustering", "exact (the published toolset's rule)"])
    return rows


def method_line(cluster_summary: dict) -> str:
    r"""The clustering method and its parameters as the cluster step recorded them (a
    summary without ``method`` predates ``--method``: the published rule).

    Example:
        >>> method_line({"method": "hudd", "selection": "wicd-knee"})
        "hudd (the published toolset's rule: Ward per layer, k by wicd-knee)"
        >>> line = method_line({"method": "hdbscan", "best_layer": "conv", "n_images": 400,
        ...     "selection": "label-free score", "method_params": {"features": "unit",
        ...     "reduction": "pca", "clusterer": "hdbscan", "dims": 10, "layers": "spatial",
        ...     "share": 0.05, "seed": 0}})
        >>> print(*line.split("; "), sep="\n")
        hdbscan: unit heatmaps, pca to 10 dimensions, hdbscan min_cluster_size=20 (5% of ...)
        layer conv of the spatial layers by label-free score
        seed 0
    """
    from hudd_core.cluster.methods import grid_size

    name = cluster_summary.get("method", "hudd")
    if name == "hudd":
        selection = cluster_summary.get("selection", "wicd-knee")
        return f"hudd (the published toolset's rule: Ward per layer, k by {selection})"
    p = cluster_summary.get("method_params", {})
    reduction = p.get("reduction", "none")
    if reduction != "none":
        reduction = f"{reduction} to {p.get('dims')} dimensions"
    clusterer = p.get("clusterer", "")
    share = float(p.get("share", 0.0))
    m = grid_size(share, int(cluster_summary.get("n_images", 0)))
    hyper = HYPER.get(clusterer, "").format(m=m, share=share)
    what = FEATURE_WORDS.get(p.get("features", ""), f"{p.get('features', '')} heatmaps")
    where = f"layer {cluster_summary.get('best_layer')} of the {p.get('layers', '')} layers"
    extractor = cluster_summary.get("feature_model")
    if extractor:  # clustered on the extractor's features; best_layer is assign's
        what = f"{what} of {extractor['spec']}" + (
            f" at {extractor['layer']}" if extractor.get("layer") else "")  # fmt: skip
        where = f"assign at heatmap layer {cluster_summary.get('best_layer')}"
    return (
        f"{name}: {what}, {reduction}, {clusterer} {hyper}; {where} by "
        f"{cluster_summary.get('selection', '')}; seed {p.get('seed', '')}"
    )


# How the report names each kind of features (hudd_core.cluster.methods.FEATURES)
FEATURE_WORDS = {"act": "unit activations", "rxa": "unit relevance × activation",
                 "model": "features"}  # fmt: skip


def clusters(
    workdir: Path, data: Path, best: str, links: Links, samples: int, selected: dict[int, int]
) -> list[dict]:
    """One dict per RCC: its facts (:func:`hudd_core.inspection.cluster_facts`), contact
    sheet, overlay strip, links to its folder and full GIF, planted region, the
    engineer's entry and the number of selected improvement images."""
    facts = cluster_facts(workdir, data)
    shares = pair_shares(workdir)
    words = inspection_by_cluster(workdir)
    planted = {int(r["cluster"]): r for r in read_csv(workdir / "ClusterAnalysis" / "planted.csv")}
    hm = media.Heatmaps(workdir)
    n_frames = frames_per_cluster(len(facts))
    if len(facts) > MANY_CLUSTERS:
        samples = min(samples, 1)
    overlay_layers = [x for x in ("input", best) if x in hm.layers] or [best]
    folder = rcc_folder(workdir, best)
    out = []
    for cid, f in facts.items():
        strip = (
            media.overlay_strip(data, media.pick_evenly(f["images"], samples), hm, overlay_layers)
            if samples > 0
            else None
        )
        params = [p for p in f["params"] if not np.isnan(p["reduction"])]
        entry = words.get(cid, {})
        out.append(
            {
                "id": cid,
                "label": charts.cluster_label(cid),
                "size": f["size"],
                "sheet": _sheet(data, f["images"], n_frames, media.SHEET_CELL),
                "gif": links(folder / f"Cluster_{cid}.gif"),
                "folder": links(folder / f"Cluster_{cid}"),
                "folder_shown": links.show(folder / f"Cluster_{cid}"),
                "overlays": None
                if strip is None
                else {
                    "uri": media.encoded_uri(strip[0]),
                    "images": strip[1],
                    "labels": ["image", *(f"{x} relevance" for x in overlay_layers)],
                },
                "pairs": [
                    {"true": t, "pred": p, "n": n, "share": n / f["size"]}
                    for t, p, n in f["pairs"][:TOP_PAIRS]
                ],
                "pair_shares": shares.get(cid, []),
                "purity": f["purity"],
                "params": params[:3],
                "max_reduction": params[0]["reduction"] if params else None,
                "planted": planted.get(cid),
                "root_cause": entry.get("root_cause", ""),
                "unsafe": entry.get("unsafe", ""),
                "notes": entry.get("notes", ""),
                "status": entry.get("status", ""),
                "selected": selected.get(cid, 0),
            }
        )
    return out


def embedding(workdir: Path, cards: list[dict]) -> dict | None:
    """``T/ClusterAnalysis/embedding.csv`` as the scatter of :mod:`charts` (None without
    the file: older work folders). On hover: per cluster an even sample of its contact
    sheet's images (``HOVER_POINTS`` on the page in all), drawn from that sheet."""
    path = workdir / "ClusterAnalysis" / "embedding.csv"
    rows = read_csv(path)
    if not rows:
        return None
    for line, r in enumerate(rows, start=2):
        with _row_of(path, line):
            r["cluster"], r["x"], r["y"] = int(r["cluster"]), float(r["x"]), float(r["y"])
    with_sheet = [c for c in cards if c["sheet"]]
    per = max(1, HOVER_POINTS // max(1, len(with_sheet)))
    hover = {}
    for c in media.pick_evenly(with_sheet, HOVER_POINTS):  # past that many clusters: some
        cells = list(enumerate(c["sheet"]["images"]))
        hover[c["id"]] = [(img, cell) for cell, img in media.pick_evenly(cells, per)]
    scatter = charts.embedding_scatter(rows, hover)
    labels = {c["id"]: c["label"] for c in cards}  # the miscellaneous group's name
    for g in scatter["groups"]:
        g["label"] = labels.get(g["id"], g["label"])
    return scatter


def assignment(workdir: Path, data: Path, cards: list[dict], links: Links) -> dict | None:
    """The unsafe set per cluster (``T/unsafe_set.csv``): how many images were selected
    against the quota ceil(2 × size), their distances, the ``SELECTED`` closest as a
    contact sheet, the folder, and the unsafe condition the engineer named."""
    rows = read_csv(workdir / "unsafe_set.csv")
    if not rows:
        return None
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(int(r["cluster"]), []).append(r)
    groups = []
    for card in cards:
        picked = sorted(by.get(card["id"], []), key=lambda r: float(r["distance"]))
        dist = np.array([float(r["distance"]) for r in picked])
        folder = workdir / "UnsafeSet" / str(card["id"])
        groups.append(
            {
                "id": card["id"],
                "size": card["size"],
                "n": len(picked),
                "quota": math.ceil(2 * card["size"]) if card["size"] > 1 else 0,
                "distance": [float(dist.min()), float(np.median(dist)), float(dist.max())]
                if len(dist)
                else None,
                "closest_share": float(np.mean([r["order"] == "0" for r in picked]))
                if picked
                else None,
                "sheet": _sheet(data, [r["image"] for r in picked], SELECTED, SELECTED_CELL)
                if picked
                else None,
                "folder": links(folder),
                "folder_shown": links.show(folder),
                "gif": links(workdir / "UnsafeSet" / f"Cluster_{card['id']}.gif"),
                "root_cause": card["root_cause"],
                "unsafe": card["unsafe"],
            }
        )
    steps = (read_json(workdir / "run.json") or {}).get("steps") or {}
    select = (steps.get("assign") or {}).get("select")  # hudd assign --select, not the paper's
    return {"groups": groups, "total": len(rows), "csv": links(workdir / "unsafe_set.csv"),
            "select": select, "catch_all": len(by.get(NOISE, []))}  # fmt: skip


def retraining(info: dict | None, cards_or_words: dict[int, dict]) -> dict | None:
    """``T/retrain.json`` as tables: overall and per group, the RCC table with the
    engineer's root cause beside each cluster, and the accuracy per named root cause
    (clusters of one name pooled, weighted by their test images, run by run)."""
    if not info:
        return None
    from hudd_core.baselines import BASELINES

    methods = [m for m in ("hudd", *BASELINES) if m in info]
    groups = []
    extra = [g for g in info["before"] if g not in ("overall", "planted", "rcc", "class")]
    for group in ("planted", "rcc", "class", *extra):
        if group not in info["before"]:
            continue
        names = sorted(info["before"][group], key=lambda g: (not g.isdigit(), g.zfill(9)))
        rows = [
            {
                "name": n,
                "unclustered": group == "rcc" and n.isdigit() and int(n) == NOISE,
                "n": info["before"][group][n]["n"],
                "before": info["before"][group][n]["accuracy"],
                "after": [info[m][group][n] for m in methods],
                "root_cause": _words(cards_or_words, n, "root_cause"),
                "unsafe": _words(cards_or_words, n, "unsafe"),
            }
            for n in names
        ]
        title = {"planted": "planted region", "rcc": "RCC", "class": "class"}.get(group, group)
        groups.append({"key": group, "title": title, "rows": rows})
    return {
        "info": info,
        "methods": methods,
        "box": charts.box_plot({m: info[m].get("gain", {}).get("runs", []) for m in methods}),
        "groups": groups,
        "named": _named_root_causes(info, methods, cards_or_words),
    }


def _words(words: dict[int, dict], name: str, key: str) -> str:
    return words.get(int(name), {}).get(key, "") if name.isdigit() else ""


def _named_root_causes(info: dict, methods: list[str], words: dict[int, dict]) -> list[dict]:
    rcc = info["before"].get("rcc", {})
    named: dict[str, list[str]] = {}
    for name in rcc:
        cause = _words(words, name, "root_cause")
        if cause:
            named.setdefault(cause, []).append(name)
    out = []
    for cause, names in sorted(named.items()):
        n = np.array([rcc[c]["n"] for c in names], dtype=float)
        if n.sum() == 0:
            continue
        before = float(np.dot(n, [rcc[c]["accuracy"] for c in names]) / n.sum())
        after = []
        for m in methods:
            runs = np.array([info[m]["rcc"][c]["runs"] for c in names], dtype=float)
            pooled = n @ runs / n.sum()  # one accuracy per run
            std = float(pooled.std(ddof=1)) if len(pooled) > 1 else 0.0
            after.append({"mean": float(pooled.mean()), "std": std})
        out.append(
            {"cause": cause, "clusters": names, "n": int(n.sum()), "before": before, "after": after}
        )
    return out


def layers(workdir: Path, cluster_summary: dict) -> dict:
    best = cluster_summary["best_layer"]
    rows = [{"name": n, "best": n == best, **i} for n, i in cluster_summary["layers"].items()]
    plots = []
    for name in [best, *(n for n in cluster_summary["layers"] if n != best)]:  # best first
        png = layer_folder(workdir, name) / "knee.png"
        if png.exists():
            plots.append(
                {"name": name, "best": name == best, "uri": media.plot_uri(png.read_bytes())}
            )
    return {"rows": rows, "plots": plots}


def dendrogram(workdir: Path, cluster_summary: dict) -> dict:
    best = cluster_summary["best_layer"]
    k = cluster_summary["layers"][best]["k"]
    path = layer_folder(workdir, best) / "linkage.npy"
    if not path.exists() or k < 2:
        return {"uri": None, "n": None}
    Z = np.load(path)
    png = dendrogram_png(Z, k, leaves=DENDROGRAM_LEAVES)
    return {"uri": media.plot_uri(png), "n": Z.shape[0] + 1}


def rq1(workdir: Path) -> dict | None:
    rows = read_csv(workdir / "ClusterAnalysis" / "variance_reduction.csv")
    info = read_json(workdir / "ClusterAnalysis" / "rq1.json")
    if not rows or info is None:
        return None
    share = info["share_50pct"]
    ids = [int(r["cluster"]) for r in rows]
    best = np.array([float(r["max_reduction"]) if r["max_reduction"] else np.nan for r in rows])
    png = rq1_plot(best, ids, 0.0 if share != share else share)
    return {"uri": media.plot_uri(png), "planted": info.get("planted") or {}}


def left_out(
    workdir: Path,
    cards: list[dict],
    best: str,
    assign: dict | None,
    dendro: dict,
    cluster_summary: dict,
    links: Links,
    scatter: dict | None = None,
) -> list[dict]:
    """What the page leaves out, how much of it it shows, and where the full material is."""
    total = sum(c["size"] for c in cards)
    shown = sum(c["sheet"]["n"] for c in cards if c["sheet"])
    folder = links.show(rcc_folder(workdir, best))
    heatmaps = links.show(workdir / "Heatmaps")
    items = [
        _left(
            "cluster members (contact sheets and their animation)",
            shown,
            total,
            f"{folder}/Cluster_<id>/ (every image) and "
            f"{folder}/Cluster_<id>.gif (every image, 600 ms each)",
        ),
        _left(
            "heatmap overlays",
            sum(len(c["overlays"]["images"]) for c in cards if c["overlays"]),
            total,
            f"{heatmaps}/<layer>.npy (row r = image r of {heatmaps}/index.csv)",
        ),
    ]
    if assign:
        sel = sum(g["sheet"]["n"] for g in assign["groups"] if g["sheet"])
        unsafe = links.show(workdir / "UnsafeSet")
        where = f"{unsafe}/<cluster>/ and {links.show(workdir / 'unsafe_set.csv')}"
        items.append(_left("selected improvement images", sel, assign["total"], where))
    return items + _left_of_the_clustering(workdir, best, dendro, cluster_summary, links, scatter)


def _left_of_the_clustering(
    workdir: Path,
    best: str,
    dendro: dict,
    cluster_summary: dict,
    links: Links,
    scatter: dict | None,
) -> list[dict]:
    """:func:`left_out`'s rows of the dendrogram, the embedding and the other layers."""
    items = []
    if dendro["n"] and dendro["n"] > DENDROGRAM_LEAVES:
        linkage = links.show(layer_folder(workdir, best) / "linkage.npy")
        what = "dendrogram leaves (the last merges are drawn)"
        items.append(_left(what, DENDROGRAM_LEAVES, dendro["n"], linkage))
    if scatter and scatter["dots"] < scatter["n"]:
        embedding = links.show(workdir / "ClusterAnalysis" / "embedding.csv")
        what = "error images drawn in the 2-D embedding"
        items.append(_left(what, scatter["dots"], scatter["n"], embedding))
    others = [n for n in cluster_summary["layers"] if n != best]
    if others:
        where = f"{links.show(workdir / 'ClusterAnalysis')}/<layer>/clusters.csv"
        items.append(_left("clusters of the other layers", 0, len(others), where))
    return items


def _left(what: str, shown: int, total: int, where: str) -> dict:
    """One row of :func:`left_out`."""
    return {"what": what, "shown": shown, "total": total, "where": where}


def fmt_num(v) -> str:
    """A number in 4 significant digits (``–`` for NaN; anything else as text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "–" if math.isnan(f) else f"{f:.4g}"


def fmt_pct(v, digits: int = 1) -> str:
    """A share as a percentage (``–`` for NaN or no number).

    Example:
        >>> fmt_pct(0.4567), fmt_pct(float("nan")), fmt_pct(None), fmt_num(2 / 3)
        ('45.7%', '–', '–', '0.6667')
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(f) else f"{f:.{digits}%}"


def gather(
    workdir: Path, data: Path, page: Path, retraining_info: dict | None, samples: int
) -> dict:
    """Every section's data (see the module docstring)."""
    summary_path = workdir / "ClusterAnalysis" / "summary.json"
    cluster_summary = read_json(summary_path)
    if cluster_summary is None:
        raise FileNotFoundError(f"{summary_path} does not exist: run `hudd cluster` first")
    best = cluster_summary["best_layer"]
    links = Links(workdir, page)
    selected: dict[int, int] = {}
    for r in read_csv(workdir / "unsafe_set.csv"):
        selected[int(r["cluster"])] = selected.get(int(r["cluster"]), 0) + 1
    cards = clusters(workdir, data, best, links, samples, selected)
    misc = (cluster_summary.get("attach") or {}).get("misc_cluster")
    mark_attachment(workdir, data, cards, misc)
    assign = assignment(workdir, data, cards, links)
    dendro = dendrogram(workdir, cluster_summary)
    removed = [r for r in read_inspection(workdir) if r["cluster"] is None]
    scatter = embedding(workdir, cards)
    return {
        "summary": summary(
            workdir, cluster_summary, sum(c["id"] not in (NOISE, misc) for c in cards)
        ),
        "clusters": {
            "cards": cards,
            "best": best,
            "removed": removed,
            "frames": frames_per_cluster(len(cards)),
            "inspection": links(workdir / "inspection.csv"),
            "inspection_shown": links.show(workdir / "inspection.csv"),
        },
        "embedding": scatter,
        "assignment": assign,
        "retraining": retraining(retraining_info, {c["id"]: c for c in cards}),
        "rq1": rq1(workdir),
        "layers": layers(workdir, cluster_summary),
        "dendrogram": dendro,
        "left_out": left_out(workdir, cards, best, assign, dendro, cluster_summary, links, scatter),
    }
