"""``hudd run``: every HUDD step in one resumable run, from CLI options or a TOML file.

    hudd run --weights gaze.pt --model alexnet --data DataSets --workdir T
    hudd run --config hudd.toml --device cuda --num-workers 8 --log-file T/hudd.log
    hudd run --config hudd.toml --steps assign retrain report --baselines --repeats 3

Options given on the command line override the file; the file's keys are the option
names with underscores (docs/CONTRACTS.md). A rerun skips the steps that are complete and
unchanged and resumes an interrupted one; ``T/run.json`` records what ran.
"""

from __future__ import annotations

import argparse

from hudd_core.config import DEFAULTS

HELP = {
    "model": "built-in name, file.py:factory or package.module:factory",
    "weights": ".pt state_dict or .safetensors (copied to T/DNNModels)",
    "trust_model_file": "allow unpickling a whole model file (only for files you trust)",
    "data": "folder with TrainingSet/TestSet/ImprovementSet",
    "workdir": "work folder (the paper's T/)",
    "device": "auto, cpu or cuda",
    "num_workers": "DataLoader decoding workers",
    "limit": "only the first N improvement images",
    "quiet": "warnings only, no progress bars",
    "log_file": "also write the step messages to this file",
    "layers": "layer names to record and cluster (None: all)",
    "batch_size": "images per batch (test, heatmaps, assign)",
    "seed": "seed of clustering tie-breaks, bootstrap and retraining",
    "image_size": "resize images to this square side",
    "in_channels": "without a sidecar: 1 or 3 (default: what the model's first layer takes)",
    "model_name": "checkpoint in T/DNNModels when several are there",
    "export_distances": "cluster: also write each layer's distance matrix as csv or xlsx",
    "mean": "per-channel mean to subtract",
    "std": "per-channel std to divide by",
    "threshold": "keypoint models: Wrong above this mean pixel error",
    "composite": "LRP rules: hudd (reference), epsilon-plus, ...",
    "float16": "store float16 heatmaps",
    "approx_threshold": "above this many error images, approximate clustering (announced; "
    "default: only when the exact path does not fit in memory)",
    "gifs": "the animated GIFs of the RCCs and the unsafe set",
    "top": "assign: closest clusters kept per image (default: all, the reference)",
    "quota_factor": "assign: a cluster takes up to ceil(factor x its error images)",
    "quota": "assign: mass = ceil(factor x errors) per cluster (reference), uniform = the "
    "same total budget split evenly (retrain: the bootstrap target follows it)",
    "distance_threshold": "assign: none (reference) or paper = only images as close to a "
    "cluster as its members are to each other",
    "rank": "assign: order inside a cluster's candidates: distance (reference) or "
    "uncertainty (softmax entropy; classifiers only)",
    "freeze": "retrain: none (reference) or features = fine-tune only the classifier head "
    "(the last Linear and what follows it)",
    "bootstrap": "retrain: weighted (reference: every RCC resampled to the largest quota) or "
    "none (the selected images once)",
    "validation": "retrain: fraction of the TrainingSet held out of fine-tuning; reports "
    "validation_accuracy per method (0: off)",
    "epochs": "retrain: fine-tuning epochs",
    "lr": "retrain: SGD learning rate",
    "momentum": "retrain: SGD momentum",
    "weight_decay": "retrain: SGD weight decay",
    "train_batch_size": "retrain: fine-tuning batch size",
    "k_range": "numbers of clusters to scan, LO:HI",
    "selection": "wicd-knee (reference) or silhouette",
    "method": "cluster: hudd (the published rule), recommended, or a method of "
    "hudd_core.cluster.methods (README: Clustering methods)",
    "feature_model": "cluster, model-* methods: the feature extractor, a spec as --model "
    "(torchvision.models:NAME, file.py:factory, package.module:factory; built without "
    "arguments)",
    "feature_weights": "cluster: the extractor's state_dict (read with weights_only)",
    "feature_layer": "cluster: the extractor module whose output are the features "
    "(default: the model's output)",
    "feature_size": "cluster: resize images to this side for the extractor",
    "feature_mean": "cluster: the extractor's per-channel mean",
    "feature_std": "cluster: the extractor's per-channel std",
    "backend": "assign: auto, faiss, faiss-gpu, torch or numpy",
    "labels": "CSV image,label for the unsafe set (default: the ImprovementSet's labels)",
    "baselines": "also retrain baselines at the same labelling budget: BL1, BL2, BL1-oracle "
    "(no name: the paper's BL1 and BL2)",
    "repeats": "seeds per retraining method",
    "group_by": "retrain: metadata.csv columns to give the accuracy per group of "
    "(default: planted when present)",
    "verify": "checks of reused outputs: full (every byte) or quick (sizes, headers)",
    "engine": "test, assign, heatmaps --improvement: local (this process) or ray (Ray Data; "
    "RAY_ADDRESS joins a cluster)",
    "ray_concurrency": "ray: model actors (one model copy each)",
    "ray_cpus_per_actor": "ray: CPUs reserved per actor (its torch threads)",
    "ray_gpus_per_actor": "ray: GPUs per actor (0: CPU actors; 0.5: two actors per GPU)",
    "ray_shard_size": "ray: images per Parquet shard (the resume unit)",
    "steps": f"steps to run, in order (default: {' '.join(DEFAULTS['steps'])})",
}
# Options whose default is None: their type.
TYPES = {
    "model": str,
    "weights": str,
    "data": str,
    "workdir": str,
    "limit": int,
    "log_file": str,
    "image_size": int,
    "mean": float,
    "std": float,
    "layers": str,
    "labels": str,
    "model_name": str,
    "in_channels": int,
    "approx_threshold": int,
    "top": int,
    "export_distances": str,
    "feature_model": str,
    "feature_weights": str,
    "feature_layer": str,
    "feature_size": int,
    "feature_mean": float,
    "feature_std": float,
}
LISTS = {"mean", "std", "layers", "steps", "group_by", "feature_mean", "feature_std"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="all steps, resumable, from options or a TOML file")
    p.add_argument("--config", help="TOML file with the options (command line overrides it)")
    for key, default in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if key == "baselines":  # a flag that may name the baselines
            p.add_argument(flag, nargs="*", default=None, metavar="NAME", help=HELP[key])
        elif default is True:  # on by default: the option turns it off
            p.add_argument(
                "--no-" + key.replace("_", "-"),
                dest=key,
                action="store_false",
                default=None,
                help=f"without {HELP.get(key, key)}",
            )
        elif default is False:
            p.add_argument(flag, action="store_true", default=None, help=HELP.get(key))
        else:
            kind = TYPES.get(key) or (str if key in LISTS else type(default))
            p.add_argument(
                flag,
                type=kind,
                nargs="+" if key in LISTS else None,
                default=None,
                help=f"{HELP.get(key, '')} (default: {default})".strip(),
            )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hudd_core.cli.common import setup_logging
    from hudd_core.config import load_config
    from hudd_core.lock import workdir_lock
    from hudd_core.pipeline import run_pipeline

    cfg = load_config(args.config, {k: getattr(args, k) for k in DEFAULTS})
    setup_logging(cfg["quiet"], cfg["log_file"])
    with workdir_lock(cfg["workdir"]):
        result = run_pipeline(cfg)
    summarise(result)
    return 0


def summarise(result: dict) -> None:
    """The figures an engineer looks at first, one line a step."""
    if "test" in result:
        for name, s in result["test"]["summary"].items():
            print(f"test: {name} accuracy {s['accuracy']:.2%} ({s['wrong']} of {s['n']} wrong)")
    if "cluster" in result:
        c = result["cluster"]
        line = (
            f"cluster: best layer {c['best_layer']}, {c['n_clusters']} RCCs of "
            f"{c['n_images']} error images (inspect {c['inspect_share']:.1%})"
        )
        if "rq1_share_50pct" in c:
            line += f", RQ1 {c['rq1_share_50pct']:.0%}"
        print(line)
    if "assign" in result:
        a = result["assign"]
        print(
            f"assign: {a['selected']} of {a['improvement_images']} improvement images "
            f"selected, {a['skipped']} skipped"
        )
    if "retrain" in result:
        from hudd_core.cli.retrain import format_summary

        print(format_summary(result["retrain"]))
    if "stopped" in result:
        print(f"stopped at {result['stopped']['step']}: {result['stopped']['reason']}")
    if "report" in result:
        print(f"report: {result['report']['path']}")
