"""Writes docs/evidence.md (and the README's headline table) from benchmarks/results/*.json.

Every figure the documentation quotes comes from a results file that a benchmark script
wrote; this script renders them, never a person. Each table names the command that
produced it: the file's own ``command`` entry when it records one, else the command
documented for that results file in :data:`COMMANDS` (the benchmark scripts' docstrings).

    python benchmarks/evidence.py            # rewrite docs/evidence.md and the README table
    python benchmarks/evidence.py --check    # exit 1 when either is stale
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EVIDENCE = ROOT / "docs" / "evidence.md"
README = ROOT / "README.md"
HEADLINE_BEGIN = "<!-- headline: written by benchmarks/evidence.py -->"
HEADLINE_END = "<!-- /headline -->"

# The command that wrote each results file (stem), where the file does not record it.
COMMANDS = {
    "lrp": "python benchmarks/bench_lrp.py",
    "lrp_torchvision": "python benchmarks/bench_lrp.py --models resnet50 mobilenet_v3_large "
    "efficientnet_b0 vit_b_16 --batch 8 --runs 5 --name lrp_torchvision",
    "distance": "python benchmarks/bench_distance.py --scipy-runs 1",
    "cluster": "python benchmarks/bench_cluster.py",
    "cluster_approx": "python benchmarks/bench_cluster.py --approximate --sizes 10000 50000 "
    "--dim 2000 --name cluster_approx",
    "quality": "python benchmarks/bench_quality.py",
    "quality_summary": "python benchmarks/bench_quality.py (written beside quality.json)",
    "assign": "python benchmarks/bench_assign.py",
    "assign_200clusters": "python benchmarks/bench_assign.py --clusters 200 "
    "--contenders numpy faiss_per_cluster faiss --name assign_200clusters",
    "scale_assign": "python benchmarks/scale_assign.py",
    "retrain": "python benchmarks/bench_retrain.py --cases demo:0 --repeats 3",
    "retrain_variants": "python benchmarks/bench_retrain.py --cases demo:0 --repeats 5 "
    "--validation 0.2",
    "retrain_demo1": "python benchmarks/bench_retrain.py --cases demo:1 --repeats 5 --variants",
    "retrain_demo1_hdbscan": "python benchmarks/bench_retrain.py --cases demo:1 --repeats 5 "
    "--baselines BL2 entropy --variants hdbscan",
    "retrain_signs0": "python benchmarks/bench_retrain.py --cases signs:0 --repeats 1 --variants",
    "retrain_resnet0": "python benchmarks/bench_retrain.py --cases resnet:0 --repeats 5 --variants",
    "retrain_select_demo0": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases demo:0 "
    "--repeats 2 --epochs 3 --baselines entropy margin BL2 margin-diverse badge "
    "--variants quota-diverse pool-diverse --name retrain_select_demo0",
    "retrain_select_demo1": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases demo:1 "
    "--repeats 2 --epochs 3 --baselines entropy margin BL2 margin-diverse badge "
    "--variants quota-diverse pool-diverse pool-uncertain --name retrain_select_demo1",
    "retrain_select_demo0_uncertain": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py "
    "--cases demo:0 --repeats 2 --epochs 3 --baselines BL2 --variants pool-uncertain "
    "--name retrain_select_demo0_uncertain",
    "retrain_dev_signs": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:signs-s0 --repeats 1 --baselines BL2 entropy margin deepgini margin-diverse badge "
    "--selections pool-diverse pool-uncertain quota-diverse pool-borda --variants --threads 1 "
    "--name retrain_dev_signs",
    "retrain_dev_signs_uniform": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:signs-s0 --repeats 1 --baselines BL2 --selections pool-uncertain/uniform "
    "pool-diverse/uniform pool-borda/uniform quota-diverse/uniform --variants --threads 1 "
    "--name retrain_dev_signs_uniform",
    "retrain_dev_suite": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:gauges-mobilenet-s0 --repeats 3 --threads 1 --baselines BL2 margin deepgini "
    "--selections pool-uncertain pool-uncertain/uniform pool-borda/uniform "
    "quota-diverse/uniform --variants --out /tmp/dev --name a & (the same with --cases "
    "suite:signs-s1 --name b); then python benchmarks/bench_retrain.py --merge "
    "/tmp/dev/a.json /tmp/dev/b.json --name retrain_dev_suite",
    "retrain_suite": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:textures-resnet-s0 suite:gauges-alexnet-s1 suite:digits-alexnet-s1 suite:signs-s0 "
    "--repeats 5 --threads 1 --baselines BL2 entropy margin deepgini margin-diverse badge "
    "--selections pool-uncertain --variants --out /tmp/halves --name a & (the same with "
    "--cases suite:gauges-resnet-s2 suite:textures-mobilenet-s1 --name b); then "
    "python benchmarks/bench_retrain.py --merge /tmp/halves/a.json /tmp/halves/b.json "
    "--name retrain_suite",
    "retrain_dev_gini50": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:signs-s0 suite:gauges-mobilenet-s0 --repeats 3 --baselines entropy margin deepgini "
    "--selections gini-near/uniform pool-borda/uniform --variants --threads 1 "
    "--gini-share 0.5 --name retrain_dev_gini50",
    "retrain_dev_gini75": "the same with --gini-share 0.75, --baselines BL2 --selections "
    "gini-near/uniform --name retrain_dev_gini75 (run beside it, one core each)",
    "retrain_heldout3": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:signs-mobilenet-s3 suite:textures-resnet-s3 suite:textures-alexnet-s2 --repeats 5 "
    "--baselines BL2 entropy margin deepgini --selections gini-near/uniform --variants "
    "--threads 1 --out /tmp/held --name h1 & (the same with --cases suite:gauges-alexnet-s4 "
    "suite:demo-mobilenet-s3 --name h2); then python benchmarks/bench_retrain.py --merge "
    "/tmp/held/h1.json /tmp/held/h2.json --name retrain_heldout3",
    "retrain_six": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:signs-mobilenet-s3 suite:textures-resnet-s3 suite:textures-alexnet-s2 --repeats 5 "
    "--baselines BL2 entropy margin deepgini margin-diverse badge --selections "
    "gini-near/uniform --variants --threads 1 --root /tmp/ha --out /tmp/held --name e1 & (the "
    "same with --cases suite:gauges-alexnet-s4 suite:demo-mobilenet-s3 --root /tmp/hb --name "
    "e2); then signs:0 with every method, --repeats 3 --name s1 beside --repeats 2 "
    "--first-repeat 3 --name s2 (each on its own copy of the prepared case); then python "
    "benchmarks/bench_retrain.py --merge /tmp/held/e1.json /tmp/held/e2.json /tmp/held/s1.json "
    "/tmp/held/s2.json --name retrain_six",
    "retrain_dev_margin_near": "OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py --cases "
    "suite:signs-s0 --repeats 3 --baselines deepgini margin-diverse badge --selections "
    "gini-near/uniform margin-near/uniform --variants --threads 1 --root /tmp/da --out /tmp/dev "
    "--name m1 & (the same with --cases suite:gauges-mobilenet-s0 --root /tmp/db --name m2); "
    "then python benchmarks/bench_retrain.py --merge /tmp/dev/m1.json /tmp/dev/m2.json --name "
    "retrain_dev_margin_near",
    "scale_ray": "cd benchmarks && python scale_ray.py --sizes 5000 10000",
    "scale_ray_100k": "python benchmarks/scale_ray.py --sizes 100000 --engines ray local "
    "--name scale_ray_100k",
    "scale_ray_1m": "python benchmarks/scale_ray.py --sizes 1000000 --engines ray "
    "--name scale_ray_1m",
    "simulator": "python benchmarks/bench_simulator.py",
    "report_10000": "python benchmarks/bench_report.py",
    "chaos": "python benchmarks/chaos.py --trials 50",
}

# What a reader must know to read a file's figures (where they are not in the file itself).
CONTEXT = {
    "quality": "The development cases chose `recommended` (`hdbscan-budget`); the held-out "
    "cases (`benchmarks/cases.toml`, split fixed before any tuning) were run once after.",
    "retrain": "Three repeats; `retrain_variants` repeats the same case five times.",
    "retrain_select_demo0": "The `--select` selections against the diversity baselines: a "
    "quick look (3 fine-tuning epochs instead of the reference 10, two repeats), not the "
    "reference hyper-parameters; compare within this table only.",
    "retrain_select_demo1": "As `retrain_select_demo0`: 3 epochs, two repeats.",
    "retrain_select_demo0_uncertain": "`pool-uncertain` on `demo:0`, run after "
    "`retrain_select_demo0` with the same seeds and settings.",
    "retrain_dev_signs": "A development case of the suite at the reference hyper-parameters "
    "(10 epochs), one repeat (run with --repeats 3, stopped after the first: the same seeds); "
    "`recommended` was chosen on this and the demo quick looks before any held-out case ran.",
    "retrain_dev_signs_uniform": "As `retrain_dev_signs`, the same seeds (hudd and BL2 "
    "repeat its figures exactly); `NAME/uniform`: the selection's picks resampled as the "
    "baselines' are (uniformly to hudd's balanced size) instead of HUDD's per-cluster bootstrap.",
    "retrain_dev_suite": "Two development cases, three repeats, run after `retrain_suite` "
    "to compare the selections resampled as the baselines are (`/uniform`); nothing was "
    "chosen on them yet.",
    "retrain_suite": "The five held-out cases of `benchmarks/cases.toml` and the development "
    "case `suite:signs-s0`, reference hyper-parameters (10 epochs), five repeats; "
    "`hudd(pool-uncertain)` is `--select recommended`, chosen on development cases before "
    "these runs. Two processes, one core each, ran the two halves at the same time.",
    "retrain_dev_gini50": "`gini-near` (share 0.5 of B by DeepGini alone) on two development "
    "cases, 3 repeats; chose, with `retrain_dev_gini75`, the share and `recommended` before "
    "any held-out case below ran.",
    "retrain_dev_gini75": "As `retrain_dev_gini50`, share 0.75 (the same seeds: hudd repeats "
    "its figures exactly).",
    "retrain_heldout3": "The five held-out cases added for the selections (cases.toml, fixed "
    "before gini-near was written); `hudd(gini-near/uniform)` is `--select recommended`, "
    "chosen on development cases before these runs. Two processes, one core each; a case "
    "stopped before 5 repeats shows the repeats it finished.",
    "retrain_six": "The five held-out cases of retrain_heldout3, prepared again in another "
    "session (the models differ slightly: see docs/retraining.md), with every label-free "
    "baseline, and signs:0 (seen) with every method, its repeats split over two processes; "
    "`hudd(gini-near/uniform)` is `--select recommended`.",
    "retrain_dev_margin_near": "Development cases only (the choice of a next candidate): "
    "margin-near beside gini-near and the three strongest baselines of retrain_six.",
    "scale_ray": "The scaling lines of the note are a model (per-actor rate × actors), not a "
    "measurement.",
}

# Sections of the page: (anchor title, what it shows, results stems by prefix).
SECTIONS = [
    ("LRP heatmaps", "All-layer LRP against Zennit, Captum and one forward + backward pass.",
     ("lrp",)),
    ("Distances", "Condensed Euclidean distances against SciPy, torch.cdist and the bare GEMM.",
     ("distance",)),
    ("Clustering speed", "The ClusterModule against a SciPy implementation of the same rule.",
     ("cluster",)),
    ("Clustering quality", "Planted root causes recovered per method and case study.",
     ("quality",)),
    ("Assignment", "Nearest-cluster search and the AssignModule end to end.",
     ("assign", "scale_assign")),
    ("Retraining", "Test accuracy gain of HUDD's retraining against same-budget baselines.",
     ("retrain",)),
    ("Scale-out", "The assignment with the local and the Ray engine.", ("scale_ray",)),
    ("Other", "The simulator, the report and the chaos trials.", ()),
]  # fmt: skip


def fmt(v: object) -> str:
    """A cell: 3 significant digits for floats, integers as they are."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table(columns: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(c).replace("|", "/") for c in r) + " |" for r in rows]
    return out


def pp(x: float) -> str:
    """A fraction as signed percentage points."""
    return f"{100 * x:+.1f}"


def load_results(folder: Path = RESULTS) -> dict[str, object]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def command_of(stem: str, payload: object) -> str:
    """The file's own ``command``, else :data:`COMMANDS`, else the benchmark script its
    name starts with (``quality_x`` → ``bench_quality.py``; see its docstring)."""
    if isinstance(payload, dict) and payload.get("command"):
        return str(payload["command"])
    if stem in COMMANDS:
        return COMMANDS[stem]
    for prefix in sorted({stem, stem.split("_")[0]}, key=len, reverse=True):
        for script in (f"bench_{prefix}.py", f"{prefix}.py"):
            if (ROOT / "benchmarks" / script).is_file():
                return f"python benchmarks/{script} (see its docstring for {stem})"
    return f"unknown: no benchmark script writes {stem}.json"


def machine_line(payload: dict) -> str:
    m = payload.get("machine") or {}
    if not m:
        return ""
    gpu = m.get("gpu") or "no GPU"
    return (f"Machine: {m.get('cpu_count')} CPUs, {m.get('torch_threads')} torch threads, "
            f"{gpu}, torch {m.get('torch')}, Python {m.get('python')}.")  # fmt: skip


def render_rows(payload: dict) -> list[str]:
    """A ``write_results`` file: every column of its rows, then its note."""
    rows = payload.get("rows", [])
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns and not isinstance(r[c], dict | list)]
    out = table(columns, [[r.get(c) for c in columns] for r in rows]) if rows else []
    note = str(payload.get("note", "")).strip()
    if note:
        out += ["", note.replace("\n", "<br>")]
    return out


def render_quality(payload: dict) -> list[str]:
    """Per split (development first): :func:`render_quality_split`."""
    rows = payload["rows"]
    splits = sorted({r.get("split", "") for r in rows}, key=lambda s: (s != "development", s))
    out: list[str] = []
    for split in splits:
        mine = [r for r in rows if r.get("split", "") == split]
        out += ([f"**{split}**", ""] if split else []) + render_quality_split(mine) + [""]
    note = str(payload.get("note", "")).strip()
    return out + ([note] if note else [])


def render_quality_split(rows: list[dict]) -> list[str]:
    """Method × case: causes covered / causes, and the inspection share; totals."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["case"]): r for r in rows}
    body = []
    for m in methods:
        line: list[object] = [f"`{m}`"]
        covered = total = 0
        for c in cases:
            r = cell.get((m, c))
            if r is None:
                line.append("")
                continue
            covered, total = covered + r["covered"], total + len(r["causes"])
            line.append(f"{r['covered']}/{len(r['causes'])} · {r['inspect']:.2f}")
        rq1 = [cell[(m, c)]["rq1"] for c in cases if (m, c) in cell]
        line += [f"{covered}/{total}", f"{min(rq1):.2f}"]
        body.append(line)
    out = table(["method", *cases, "covered in all", "RQ1 min"], body)
    out += ["", "Cell: planted causes covered / planted causes · share of the error images to "
            "inspect (5 per cluster, the unclustered as one more group)."]  # fmt: skip
    times = [[f"`{m}`", *(cell[(m, c)]["seconds"] if (m, c) in cell else "" for c in cases)]
             for m in methods]  # fmt: skip
    out += ["", "Clustering wall time over all layers, seconds:", "", *table(["method", *cases],
                                                                            times)]  # fmt: skip
    return out


def render_retrain(payload: list) -> list[str]:
    """Per case: every method's gain (overall, planted), budget, HUDD's A12 against it."""
    out: list[str] = []
    for case in payload:
        gain, planted = case["gain"], case.get("planted_gain", {})
        versus = case.get("versus", {})
        val = case.get("validation_gain", {})
        budget = case["budget"] if isinstance(case["budget"], dict) else {"hudd": case["budget"]}
        repeats = len(gain["hudd"]["runs"])
        out += [f"Case `{case['case']}`: test accuracy before {100 * case['before']:.1f}%, "
                f"{repeats} repeat(s), {case['added_samples']} added samples per method, "
                f"{case['seconds_per_repeat']:.0f} s per repeat.", ""]  # fmt: skip
        columns = ["method", "gain (pp)", "planted (pp)", "B", "A12 of hudd vs it (p)"]
        if val:
            columns.append("validation gain (pp)")
        body = []
        for name, g in gain.items():
            vs = versus.get(name)
            row: list[object] = [
                f"`{name}`",
                f"{pp(g['mean'])} ± {100 * g['std']:.1f}",
                pp(planted[name]) if name in planted else "",
                budget.get(name, budget["hudd"]),
                f"{vs['a12']:.2f} ({vs['p_value']:.2g})" if vs else "",
            ]
            if val:
                row.append(pp(val[name]["mean"]) if name in val else "")
            body.append(row)
        out += [*table(columns, body), ""]
    out.append("Gain: test accuracy after − before, mean ± std over the repeats; planted: on the "
               "images of the planted regions; B: labelling budget (the baselines use the "
               "reference hudd's); A12: Vargha–Delaney effect size of hudd's gains against the "
               "method's (0.5 = no difference), p: two-sided Mann–Whitney.")  # fmt: skip
    return out


def render_body(stem: str, payload: object) -> list[str]:
    """The tables of one results file by its kind; a shape this script does not know is
    said, not guessed."""
    try:
        if stem.startswith("quality") and not stem.endswith("_summary"):
            return render_quality(payload)  # type: ignore[arg-type]
        if stem.startswith("retrain"):
            return render_retrain(payload)  # type: ignore[arg-type]
        return render_rows(payload)  # type: ignore[arg-type]
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        return [f"Not rendered: `benchmarks/evidence.py` does not know this file's layout "
                f"({type(exc).__name__}: {exc})."]  # fmt: skip


def render(stem: str, payload: object) -> list[str]:
    body = render_body(stem, payload)
    lines = [f"### {stem}", "", f"`{command_of(stem, payload)}` → `benchmarks/results/{stem}.json`"]
    m = machine_line(payload) if isinstance(payload, dict) else ""
    context = [CONTEXT[stem]] if stem in CONTEXT else []
    return lines + ([m] if m else []) + context + ["", *body, ""]


def section_of(stem: str) -> str:
    for title, _, prefixes in SECTIONS:
        if any(stem == p or stem.startswith(p + "_") for p in prefixes):
            return title
    return "Other"


def _row(results: dict, stem: str, key: str, value: object) -> dict | None:
    payload = results.get(stem)
    if not isinstance(payload, dict):
        return None
    return next((r for r in payload.get("rows", []) if r.get(key) == value), None)


def retrain_cases(results: dict) -> list[tuple[str, dict]]:
    """One ``(stem, case)`` per retraining case: the run with the most repeats, then the
    most methods."""
    best: dict[str, tuple[tuple[int, int], str, dict]] = {}
    for stem in sorted(s for s in results if s.startswith("retrain")):
        for case in results[stem]:
            rank = (len(case["gain"]["hudd"]["runs"]), len(case["gain"]))
            if case["case"] not in best or rank > best[case["case"]][0]:
                best[case["case"]] = (rank, stem, case)
    return [(stem, case) for _, stem, case in best.values()]


def quality_headline(results: dict, link: str = "#") -> list[list[object]]:
    """Per split of ``quality_summary``: the causes the published rule and
    ``recommended`` covered, and recommended's regret against its label oracle."""
    summary = results.get("quality_summary")
    out: list[list[object]] = []
    for split in ("held-out", "development"):
        rows = {r["method"]: r for r in (summary or {}).get("rows", []) if r["split"] == split}
        if "hudd" not in rows or "recommended" not in rows:
            continue
        hudd, rec = rows["hudd"], rows["recommended"]
        out.append([f"planted causes found, {rec['cases']} {split} case studies",
                    f"the published rule (`hudd`): {hudd['covered']}/{hudd['causes']}",
                    f"`--method recommended`: {rec['covered']}/{rec['causes']}, regret "
                    f"{rec['mean_regret']:.1f} (worst {rec['max_regret']}), inspection "
                    f"{rec['inspect']:.2f}", f"[quality]({link}quality)"])  # fmt: skip
    return out


def headline(results: dict, link: str = "#") -> list[str]:
    """The headline table: speed and quality against the peers, from the results files;
    ``link`` prefixes the anchors of the evidence page."""
    body: list[list[object]] = []
    for model in ("alexnet64", "resnet64"):
        r = _row(results, "lrp", "model", model)
        if r:
            body.append([f"all-layer LRP, {model}, batch {r['batch']}", "Zennit 0.5",
                         f"{r['ours/zennit_throughput']:.1f}× faster, "
                         f"max rel. diff {r['max_rel_diff_vs_zennit']:.0g}",
                         f"[lrp]({link}lrp)"])  # fmt: skip
    r = _row(results, "lrp_torchvision", "model", "resnet50")
    if r:
        body.append(["all-layer LRP, torchvision resnet50 at 224", "Zennit 0.5",
                     f"{r['ours/zennit_throughput']:.1f}× faster",
                     f"[lrp_torchvision]({link}lrp_torchvision)"])  # fmt: skip
    for row in (results.get("distance") or {}).get("rows", []):
        body.append([f"pdist, N = {row['N']}, D = {row['D']}", "SciPy `pdist`",
                     f"{row['scipy/ours']:.1f}× faster, max rel. err {row['max_rel_err']:.0e}",
                     f"[distance]({link}distance)"])  # fmt: skip
    for row in (results.get("cluster") or {}).get("rows", []):
        same = "same k on every layer" if row.get("same_k") else "k differs"
        body.append([f"clustering, N = {row['N']}, 3 layers", "the published rule in SciPy",
                     f"{row['ref/ours_cluster']:.1f}× faster, {same}",
                     f"[cluster]({link}cluster)"])  # fmt: skip
    body += quality_headline(results, link)
    for stem, case in retrain_cases(results):
        gain = case["gain"]
        label_free = [n for n in gain if n not in ("hudd", "BL1-oracle") and "(" not in n]
        if not label_free:
            continue
        best = max(label_free, key=lambda n: gain[n]["mean"])
        body.append([f"retraining gain, `{case['case']}`, {len(gain['hudd']['runs'])} repeat(s)",
                     f"best same-budget baseline ({best}): {pp(gain[best]['mean'])} pp",
                     f"HUDD {pp(gain['hudd']['mean'])} pp" + recommended_gain(gain),
                     f"[{stem}]({link}{stem})"])  # fmt: skip
    return table(["measure", "peer", "hudd_core", "evidence"], body)


def recommended_gain(gain: dict) -> str:
    """``; --select recommended +X pp`` where the case ran the recommended selection."""
    from hudd_core.selection import RECOMMENDED, UNIFORM_RESAMPLED

    uniform = "/uniform" if RECOMMENDED in UNIFORM_RESAMPLED else ""  # as retrain resamples it
    got = gain.get(f"hudd({RECOMMENDED}{uniform})")
    return f"; `--select recommended` {pp(got['mean'])} pp" if got else ""


def evidence_page(results: dict) -> str:
    lines = [
        "# Evidence",
        "",
        "Generated by `python benchmarks/evidence.py` from `benchmarks/results/*.json`; do not "
        "edit by hand (`python benchmarks/evidence.py --check` fails when this page is stale). "
        "Each table names the command that wrote its results file; rerun it, then this script.",
        "Absolute timings come from a shared 2-core machine without a GPU unless the machine "
        "line says otherwise: compare the ratios, which the benchmarks measure side by side "
        "in one process.",
        "",
        "## Headline",
        "",
        *headline(results),
        "",
    ]
    by_section: dict[str, list[str]] = {}
    for stem in results:
        by_section.setdefault(section_of(stem), []).append(stem)
    for title, what, _ in SECTIONS:
        stems = by_section.get(title)
        if not stems:
            continue
        lines += [f"## {title}", "", what, ""]
        for stem in stems:
            lines += render(stem, results[stem])
    return "\n".join(lines).rstrip() + "\n"


def readme_with_headline(readme: str, results: dict) -> str:
    """``readme`` with the text between the headline markers replaced (unchanged without
    them)."""
    a, b = readme.find(HEADLINE_BEGIN), readme.find(HEADLINE_END)
    if a < 0 or b < a:
        return readme
    block = "\n".join([HEADLINE_BEGIN, *headline(results, "docs/evidence.md#"), HEADLINE_END])
    return readme[:a] + block + readme[b + len(HEADLINE_END) :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = ap.parse_args(argv)
    results = load_results()
    wanted = {EVIDENCE: evidence_page(results)}
    if README.is_file():
        wanted[README] = readme_with_headline(README.read_text(), results)
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is stale: run python benchmarks/evidence.py")
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
