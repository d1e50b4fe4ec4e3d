"""Quality of the clustering methods on built-in case studies with planted root causes.

    python benchmarks/bench_quality.py                       # every case and method (the table)
    python benchmarks/bench_quality.py --cases signs-s0 --methods hudd hdbscan
    python benchmarks/bench_quality.py --split development --methods hudd recommended

The cases and their split are in ``benchmarks/cases.toml`` (:data:`CASES_FILE`, read by
:func:`hudd_core.data.cases.read_cases`): five sources (the eye, road-sign and gauge
scenes, scikit-learn's real digits, scikit-image's real textures), three architectures;
choices read the ``development`` cases only, the ``held-out`` ones are reported.

Each case is generated, trained, tested and explained once (``hudd run`` steps test and
heatmaps at :data:`QUALITY_SIZE`) and cached under ``--cache`` (default
``$TMPDIR/hudd_quality_cases``; a few hundred MB, not committed). Then every method
clusters the error images' heatmaps, and the planted labels (``metadata.csv``, never
seen by the methods) measure:

- ``k``: clusters (noise not counted), ``unclustered``: noise images;
- ``inspect``: the share of the error images to look at, 5 per cluster and the noise as
  one more group (:func:`hudd_core.cluster.labels.inspect_share`);
- ``rq1``: the share of clusters (≥ 2 members, noise left out) where some parameter's
  variance drops by ≥ 50%, and ``rq1_chance``: the same for the labels shuffled (mean
  of 20 permutations);
- per planted cause: errors, the best purity among the clusters (and that cluster's
  recall), and ``coverage``: the share of the cause's errors in clusters of purity ≥ 0.7;
  ``covered``: the causes with coverage ≥ 0.25;
- ``ari``: adjusted Rand index against the planted regions (``none`` is one region,
  noise one cluster);
- ``oracle``: the most causes covered by any candidate of the method's own search space
  (``hudd``: every layer × every k of its tree; a catalogue method: every candidate it
  chose among, :func:`hudd_core.cluster.methods.search`) chosen **with** the labels
  within an inspection share of :data:`BUDGET` (:mod:`hudd_testkit.oracle`; ties: the
  higher mean coverage, then less inspection), and ``regret`` = oracle − covered
  (negative: the method covered more at a larger inspection share); ``broad``: the same
  oracle over issue 23's broad space (every recorded layer's unit heatmaps and the raw
  pixels × PCA 10 or 20 × HDBSCAN min_cluster_size 3–20 or Ward k 4–20), once per case
  (the JSON rows name each oracle's candidate: ``oracle_candidate``, ``broad_candidate``);
- ``unclustered_share``: the share of the error images outside every root-cause cluster
  after the cluster step's default attachment (``--attach misc --max-unclustered 0.15``,
  :func:`hudd_core.cluster.attach.attach_noise`; the other figures are of the clusters
  as the method left them; the published rule leaves none);
- ``seconds``: the clustering's wall time (all layers, the choice included).

Writes ``results/quality.json`` and ``results/quality.md`` (the README's table), and
``results/quality_summary.{json,md}`` (``--out`` + ``_summary``): per split (development,
held-out) and method, the cases' causes, covered, oracle, mean and worst regret, mean
inspection and unclustered shares, and mean time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_results

from hudd_core.data.cases import read_cases

CASES_FILE = Path(__file__).with_name("cases.toml")
CASES: dict[str, dict] = read_cases(CASES_FILE)
# The cases' size: the demo's "small" scene at half its training (about 250 error images),
# so that the four cases fit minutes on 2 shared cores.
SIZE = "quality"  # and f"{SIZE}-{side}px-{epochs}ep" for another side or training length
QUALITY_SIZE = {
    "sets": {"TrainingSet": 1500, "TestSet": 1000},
    "image_size": 32,
    "epochs": 6,
    "retrain_epochs": 1,
}
COVERAGE_PURITY = 0.7  # a cluster this pure in a cause counts towards the cause's coverage
COVERED = 0.25  # a cause is covered when this share of its errors is in such clusters
SHUFFLES = 20
BUDGET = 0.15  # the oracle's inspection budget (issue 23)
FEATURE_MODEL = "torchvision.models:resnet18"  # the model-* methods' extractor
# torchvision's MobileNetV3 keeps BatchNorm statistics with momentum 0.01: after the
# quality size's 6 epochs (~280 steps) its eval-mode model was near chance (757 of 1,000
# textures wrong, 1,098 of 1,500 training images); 4x as long lets them settle.
ARCH_EPOCHS = {"mobilenet_v3_small": 4 * QUALITY_SIZE["epochs"]}


def case_size(spec: dict) -> str:
    """The demo size (``hudd_core.demo.SIZES``, registered here) a case is generated and
    trained at: :data:`QUALITY_SIZE` at a real source's native side, and the
    architecture's epochs (:data:`ARCH_EPOCHS`)."""
    from hudd_core.data.cases import native_size
    from hudd_core.demo import SIZES

    side = native_size(spec["source"]) or QUALITY_SIZE["image_size"]
    epochs = ARCH_EPOCHS.get(spec["arch"], QUALITY_SIZE["epochs"])
    size = SIZE
    if (side, epochs) != (QUALITY_SIZE["image_size"], QUALITY_SIZE["epochs"]):
        size = f"{SIZE}-{side}px-{epochs}ep"
    SIZES.setdefault(size, {**QUALITY_SIZE, "image_size": side, "epochs": epochs})
    return size


def prepare(
    name: str, cache: Path, *, pool: int = 0, steps: tuple[str, ...] = ("test", "heatmaps")
) -> tuple[Path, Path]:
    """``(workdir, data)`` of a case, generated, trained, tested and explained once
    (``steps``); ``pool``: also an ImprovementSet of that many images (bench_retrain)."""
    from hudd_core.config import load_config
    from hudd_core.data.cases import classes, generate_case
    from hudd_core.demo import SIZES, step_train
    from hudd_core.pipeline import run_pipeline

    spec = CASES[name]
    size = case_size(spec)
    work = cache / name
    work.mkdir(parents=True, exist_ok=True)
    seed = spec["seed"]
    if spec.get("data"):
        data = prepare(spec["data"], cache, pool=pool, steps=steps)[1]
    else:
        cfg = SIZES[size]
        sets = {**cfg["sets"], **({"ImprovementSet": pool} if pool else {})}
        data = generate_case(work / "DataSets", spec["source"], seed, sets,
                             cfg["image_size"])  # fmt: skip
    model = None if spec["arch"] == "alexnet" else spec["arch"]  # alexnet: the demo's default
    checkpoint = step_train(work, data, size, seed, "cpu", False, model=model,
                            classes=classes(spec["source"]))  # fmt: skip
    cfg = load_config(
        None,
        {
            "workdir": str(work),
            "data": str(data),
            "seed": seed,
            "quiet": True,
            "steps": list(steps),
        },
    )
    run_pipeline(cfg, checkpoint=checkpoint)
    return work, data


def ensure_activations(work: Path, data: Path) -> None:
    """``work/Activations`` for the ``act-*`` and ``rxa-*`` methods (once; a forward pass)."""
    from hudd_core.heatmaps import run_heatmaps
    from hudd_core.models.checkpoint import find_checkpoint, load_checkpoint

    model, meta = load_checkpoint(find_checkpoint(work))
    run_heatmaps(work, data, model, meta, activations=True, device="cpu", progress=False)


def extractor_features(case: dict, data: Path) -> np.ndarray:
    """The ``model-*`` methods' features: torchvision's ResNet-18 with seeded random
    weights (no download is possible here, so no ImageNet weights), its ``avgpool``
    output at 64 px."""
    from hudd_core.feature_model import extract_features, load_feature_model

    net = load_feature_model(FEATURE_MODEL, seed=0)
    return extract_features(net, data, case["images"], layer="avgpool", image_size=64,
                            device="cpu", progress=False)  # fmt: skip


def load_case(work: Path, data: Path) -> dict:
    """The heatmap files, the error images, their planted regions and parameters."""
    from hudd_core.cluster.analysis import read_metadata
    from hudd_core.store import read_heatmap_index, read_index

    meta, images = read_heatmap_index(work)
    rows, params = read_metadata(data / "TestSet" / "metadata.csv")
    keys = [i.removeprefix("TestSet/") for i in images]
    acts = work / "Activations"
    return {
        "activations": {m["name"]: acts / m["file"] for m in read_index(acts)[0]}
        if (acts / "layers.json").is_file()
        else None,
        "files": {m["name"]: work / "Heatmaps" / m["file"] for m in meta},
        "shapes": {m["name"]: m["shape"] for m in meta},
        "images": images,
        "regions": [rows[k].get("planted", "none") for k in keys],
        "values": np.array([[float(rows[k][p]) for p in params] for k in keys]),
    }


def cluster_with(method: str, case: dict, seed: int) -> dict:
    """One method on a case's heatmaps: its ``labels``, ``layer``, ``seconds`` and
    ``params``, ``space`` (the candidates of its own search space, for the oracle) and
    ``unclustered_share`` (after the cluster step's default attachment)."""
    from hudd_core.cluster import methods as cm
    from hudd_core.cluster.attach import DEFAULT_MODE, MAX_UNCLUSTERED, attach_noise
    from hudd_core.cluster.knee import best_layer
    from hudd_core.cluster.ward import cluster_layer
    from hudd_core.cluster.wicd import labels_at
    from hudd_testkit.oracle import Candidate

    files = case["files"]
    t = time.perf_counter()
    m = cm.resolve(method)
    if m is None:  # the published rule, as run_cluster runs it (without the files)
        results = {}
        for name, path in files.items():
            results[name] = cluster_layer(
                np.load(path, mmap_mode="r"), name=name, device="cpu", seed=seed
            )
        best = best_layer({n: r.at_k() for n, r in results.items()})
        seconds = time.perf_counter() - t
        space = [Candidate(f"{n} k={k}", labels_at(r.linkage, int(k)))
                 for n, r in results.items() for k in r.ks]  # fmt: skip
        return {"labels": results[best].labels, "layer": best, "seconds": seconds,
                "params": {}, "space": space, "unclustered_share": 0.0}  # fmt: skip
    layers = cm.method_inputs(m, files, len(case["images"]), case.get("activations"),
                              case.get("extracted"))  # fmt: skip
    res, among = cm.search(layers, m, seed=seed, shapes=case["shapes"])
    seconds = time.perf_counter() - t
    att = attach_noise(res.reduced, res.labels, DEFAULT_MODE, MAX_UNCLUSTERED)
    return {
        "labels": res.labels,
        "layer": res.layer,
        "seconds": seconds,
        "params": {"share": res.share, **m.params()},
        "space": [Candidate(f"{c.layer} share={c.share}", c.labels) for c in among],
        "unclustered_share": att.record()["unclustered_share"],
    }


def pixel_rows(data: Path, images: list[str]) -> np.ndarray:
    """The error images' raw pixels in [0, 1], one row each (the broad oracle's
    features beside the heatmaps)."""
    from PIL import Image

    rows = []
    for image in images:
        with Image.open(data / image) as im:
            rows.append(np.asarray(im, dtype=np.float64).ravel() / 255.0)
    return np.stack(rows)


def broad_oracle(case: dict, data: Path, seed: int):
    """The label oracle over issue 23's broad space (:mod:`hudd_testkit.oracle`)."""
    from hudd_testkit import oracle as orc

    feats = {n: orc.unit_rows(np.load(p, mmap_mode="r")) for n, p in case["files"].items()}
    feats["pixels"] = pixel_rows(data, case["images"])
    return orc.oracle(orc.broad_candidates(feats, seed), case["regions"], BUDGET)


def rq1_share(values: np.ndarray, labels: np.ndarray) -> float:
    """RQ1 over the non-noise clusters of ≥ 2 members (NaN when there are none)."""
    from hudd_core.cluster.analysis import variance_reduction
    from hudd_core.cluster.labels import NOISE

    ids, sizes = np.unique(labels, return_counts=True)
    red = variance_reduction(values, labels)
    evaluated = [r for r in range(len(ids)) if sizes[r] > 1 and ids[r] != NOISE]
    if not evaluated:
        return float("nan")
    hits = [r for r in evaluated if np.nanmax(np.append(red[r], -np.inf)) >= 0.5]
    return len(hits) / len(evaluated)


def cause_scores(regions: list[str], labels: np.ndarray) -> dict[str, dict]:
    """Per planted cause: errors, best purity (and its cluster's recall), coverage."""
    from hudd_core.cluster.labels import NOISE

    regions_a = np.array(regions)
    out = {}
    for cause in sorted(set(regions) - {"none"}):
        is_c = regions_a == cause
        best = (0.0, 0.0)
        covered = 0
        for cid in np.unique(labels).tolist():
            if cid == NOISE:
                continue
            members = labels == cid
            hit = int(np.sum(is_c & members))
            purity = hit / int(members.sum())
            best = max(best, (purity, hit / int(is_c.sum())))
            if purity >= COVERAGE_PURITY and members.sum() >= 2:
                covered += hit
        out[cause] = {
            "errors": int(is_c.sum()),
            "purity": best[0],
            "recall": best[1],
            "coverage": covered / int(is_c.sum()),
        }
    return out


def evaluate(case: dict, labels: np.ndarray, seed: int) -> dict:
    """The figures of one clustering of a case (see the module's docstring)."""
    from sklearn.metrics import adjusted_rand_score

    from hudd_core.cluster.labels import NOISE, inspect_share

    rng = np.random.default_rng(seed)
    chance = [rq1_share(case["values"], rng.permutation(labels)) for _ in range(SHUFFLES)]
    causes = cause_scores(case["regions"], labels)
    return {
        "k": len(set(labels.tolist()) - {NOISE}),
        "unclustered": int(np.sum(labels == NOISE)),
        "inspect": inspect_share(labels),
        "rq1": rq1_share(case["values"], labels),
        "rq1_chance": float(np.nanmean(chance)),
        "ari": float(adjusted_rand_score(case["regions"], labels)),
        "causes": causes,
        "covered": sum(c["coverage"] >= COVERED for c in causes.values()),
    }


COLUMNS = [
    "case",
    "split",
    "method",
    "layer",
    "k",
    "unclustered",
    "inspect",
    "rq1",
    "rq1_chance",
    "covered",
    "oracle",
    "regret",
    "broad",
    "unclustered_share",
    "ari",
    "seconds",
    "coverage",
]


def case_rows(name: str, methods: list[str], cache: Path) -> list[dict]:
    """Every method's row on one case (see the module's docstring)."""
    from hudd_core.cluster import methods as cm
    from hudd_testkit.oracle import oracle

    work, data = prepare(name, cache)
    sources = {cm.needs(m) for m in methods}
    if sources & {"activations", "both"}:
        ensure_activations(work, data)
    case = load_case(work, data)
    if "model" in sources:
        case["extracted"] = extractor_features(case, data)
    seed = CASES[name]["seed"]
    broad = broad_oracle(case, data, seed)
    rows = []
    for method in methods:
        run = cluster_with(method, case, seed)
        best = oracle(run["space"], case["regions"], BUDGET)
        row = {
            "case": name,
            "split": CASES[name]["split"],
            "method": method,
            "layer": run["layer"],
            "seconds": run["seconds"],
            "n_errors": len(run["labels"]),
            "params": run["params"],
            **evaluate(case, run["labels"], seed),
            "oracle": best.covered,
            "oracle_candidate": best.best.name if best.best else None,
            "candidates": len(run["space"]),
            "broad": broad.covered,
            "broad_candidate": broad.best.name if broad.best else None,
            "unclustered_share": run["unclustered_share"],
        }
        row["regret"] = row["oracle"] - row["covered"]
        row["coverage"] = " ".join(f"{c}:{v['coverage']:.2f}" for c, v in row["causes"].items())
        print(json.dumps({k: v for k, v in row.items() if k != "causes"}), flush=True)
        rows.append(row)
    return rows


SUMMARY_COLUMNS = ["split", "method", "cases", "causes", "covered", "oracle", "broad",
                   "mean_regret", "max_regret", "inspect", "unclustered_share",
                   "seconds"]  # fmt: skip


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per split (development first) and method (in the order run), over its cases."""
    out = []
    splits = sorted({r["split"] for r in rows}, key=lambda s: (s != "development", s))
    for split in splits:
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["split"] == split and r["method"] == method]
            if not mine:
                continue
            regret = [r["regret"] for r in mine]
            out.append({
                "split": split, "method": method, "cases": len(mine),
                "causes": sum(len(r["causes"]) for r in mine),
                **{c: sum(r[c] for r in mine) for c in ("covered", "oracle", "broad")},
                "mean_regret": float(np.mean(regret)), "max_regret": max(regret),
                **{c: float(np.mean([r[c] for r in mine]))
                   for c in ("inspect", "unclustered_share", "seconds")},
            })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    from hudd_core.cluster.methods import METHOD_NAMES, RECOMMENDED

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=None,
                   help="these cases only (default: every case of --split)")  # fmt: skip
    p.add_argument("--split", choices=["development", "held-out", "all"], default="all",
                   help=f"the cases of this split of {CASES_FILE.name} (default: all)")  # fmt: skip
    p.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHOD_NAMES),
        default=[m for m in METHOD_NAMES if m != RECOMMENDED],  # it runs as "recommended"
    )
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hudd_quality_cases")
    p.add_argument("--out", default="quality")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    rows = []
    split = read_cases(CASES_FILE, args.split)
    for name in [n for n in (args.cases or split) if n in split]:
        rows += case_rows(name, args.methods, args.cache)
    note = (
        f"coverage: share of a cause's errors in clusters of purity >= {COVERAGE_PURITY}; "
        f"covered: causes with coverage >= {COVERED}; inspect: 5 images per cluster, "
        "the unclustered as one more group; rq1_chance: labels shuffled"
    )
    write_results(args.out, rows, COLUMNS, note)
    summary_note = (
        "per split and method, summed over its cases: causes, covered, oracle (the best "
        "candidate of the method's own search space chosen with the labels, inspection "
        f"share <= {BUDGET}), broad (the same over issue 23's broad space); regret = "
        "oracle - covered (mean and worst case); means of inspect, unclustered_share "
        "(after the default attachment) and seconds"
    )
    write_results(f"{args.out}_summary", summary_rows(rows), SUMMARY_COLUMNS, summary_note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
