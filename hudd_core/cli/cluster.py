"""``hudd cluster``: the ClusterModule over ``T/Heatmaps`` (HUDD step 3)."""

from __future__ import annotations

import argparse

from hudd_core.cli.common import add_step
from hudd_core.config import FEATURE_OPTIONS, pick


def register(sub: argparse._SubParsersAction) -> None:
    p = add_step(sub, "cluster", "cluster the error images per layer, pick k and the best "
                 "layer, write the RCCs", run)  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="do not (re)write T/report.html")


def run(args: argparse.Namespace) -> int:
    from hudd_core.cluster import run_cluster
    from hudd_core.inspection import update_inspection

    options = pick(args.cfg, "layers", "k_range", "selection", "device", "approx_threshold",
                   "seed", "gifs", "method", "trust_model_file", "attach", "max_unclustered",
                   *FEATURE_OPTIONS)  # fmt: skip
    summary = run_cluster(args.workdir, args.data, **options, export=args.export_distances,
                          progress=not args.quiet)  # fmt: skip
    best = summary["best_layer"]
    print(
        f"best layer {best}: {summary['n_clusters']} clusters of {summary['n_images']} error "
        f"images (inspect {summary['inspect_share']:.1%} at 5 per cluster)"
    )
    if summary.get("n_unclustered"):
        print(f"method {summary['method']}: {summary['n_unclustered']} images unclustered (0)")
    if summary.get("attach", {}).get("noise"):
        a = summary["attach"]
        misc = f" (cluster {a['misc_cluster']})" if a["misc_cluster"] is not None else ""
        print(
            f"attach {a['mode']}: {a['attached']} of {a['noise']} noise images joined their "
            f"nearest cluster, {a['miscellaneous']} are miscellaneous{misc}; "
            f"{a['unclustered_share']:.0%} outside every root-cause cluster"
        )
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
