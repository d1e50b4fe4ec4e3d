"""``hudd cluster``: the ClusterModule over ``T/Heatmaps`` (HUDD step 3)."""

from __future__ import annotations

import argparse

from hudd_core.cli.common import add_common
from hudd_core.cluster.methods import METHOD_NAMES
from hudd_core.config import DEFAULTS, FEATURE_OPTIONS, parse_k_range, pick


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="cluster the error images per layer, pick k and the best layer, write the RCCs",
    )
    add_common(p, model=False)
    p.add_argument("--trust-model-file", action="store_true",
                   help="allow unpickling a whole --feature-model weights file (only files "
                   "you trust)")  # fmt: skip
    p.add_argument("--layers", nargs="+", help="only these recorded layers (default: all)")
    p.add_argument(
        "--k-range",
        type=parse_k_range,
        default=DEFAULTS["k_range"],
        metavar="LO:HI",
        help="numbers of clusters to scan, also capped at N/2 (default 2:500)",
    )
    p.add_argument(
        "--selection",
        choices=["wicd-knee", "silhouette"],
        default="wicd-knee",
        help="how k (and the best layer) is chosen (default: the reference rule)",
    )
    p.add_argument(
        "--method",
        choices=METHOD_NAMES,
        default=DEFAULTS["method"],
        help="hudd: the published rule (default); recommended: what the quality benchmark "
        "found best; or a named features x reduction x clusterer, hdbscan-stable (chosen by "
        "stability over subsamples), ensemble or concat (several layers at once) (README: "
        "Clustering methods); density methods leave unclustered images as cluster 0",
    )
    p.add_argument(
        "--approx-threshold",
        type=int,
        help="above this many error images, approximate clustering (announced; default: "
        "only when the exact path does not fit in memory, 32 bytes a pair of images)",
    )
    p.add_argument(
        "--export-distances",
        choices=["csv", "xlsx"],
        help="also write each layer's distance matrix to T/ClusterAnalysis/<layer>/ "
        "(up to 5000 error images for csv, 1000 for xlsx)",
    )
    add_feature_model(p)
    p.add_argument("--no-gifs", action="store_true", help="skip the animated GIFs")
    p.add_argument("--no-report", action="store_true", help="do not (re)write T/report.html")
    p.set_defaults(func=run)


def add_feature_model(p: argparse.ArgumentParser) -> None:
    """The ``--feature-*`` options of the ``model-*`` methods (:mod:`hudd_core.feature_model`)."""
    from hudd_core.cli.run import HELP

    for key, kind in (("feature_model", str), ("feature_weights", str), ("feature_layer", str),
                      ("feature_size", int)):  # fmt: skip
        p.add_argument("--" + key.replace("_", "-"), type=kind, help=HELP[key])
    for key in ("feature_mean", "feature_std"):
        p.add_argument("--" + key.replace("_", "-"), type=float, nargs="+", help=HELP[key])


def run(args: argparse.Namespace) -> int:
    from hudd_core.cluster import run_cluster
    from hudd_core.inspection import update_inspection

    summary = run_cluster(
        args.workdir,
        args.data,
        layers=args.layers,
        k_range=args.k_range,
        selection=args.selection,
        device=args.device,
        approx_threshold=args.approx_threshold,
        seed=args.seed,
        gifs=not args.no_gifs,
        export=args.export_distances,
        progress=not args.quiet,
        method=args.method,
        **pick(vars(args), *FEATURE_OPTIONS, "trust_model_file"),
    )
    best = summary["best_layer"]
    print(
        f"best layer {best}: {summary['n_clusters']} clusters of {summary['n_images']} error "
        f"images (inspect {summary['inspect_share']:.1%} at 5 per cluster)"
    )
    if summary.get("n_unclustered"):
        print(f"method {summary['method']}: {summary['n_unclustered']} images unclustered (0)")
    if summary["clustering"]["path"] == "approximate":
        print(f"clustering: approximate ({summary['clustering']['reason']})")
    if "rq1" in summary:
        rq1 = summary["rq1"]
        print(
            f"RQ1: {rq1['share_50pct']:.0%} of clusters reduce some parameter's variance by ≥ 50%"
        )
    print(f"inspection template: {update_inspection(args.workdir, args.data)}")
    if not args.no_report:
        from hudd_core.report import build_report

        print(f"report: {build_report(args.workdir, args.data)}")
    return 0
