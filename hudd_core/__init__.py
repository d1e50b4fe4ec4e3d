"""hudd_core: a fast, scalable HUDD (heatmap-based unsupervised debugging of DNNs).

One module per pipeline step (README.md); ``import hudd_core`` gives the steps as plain
functions, imported on first use so that ``hudd --help`` stays quick:

=================  ==============================================================
step               function
=================  ==============================================================
1 test             :func:`hudd_core.testing.run_test`
2 heatmaps         :func:`hudd_core.heatmaps.run_heatmaps` (LRP: :mod:`hudd_core.lrp`)
3 distances        :func:`hudd_core.distance.pdist`, ``cdist``, ``second_level_pdist``
3 clusters         :func:`hudd_core.cluster.run_cluster`, report: ``build_report``
4 assign           :func:`hudd_core.assign.run_assign`
5-7 retrain        :func:`hudd_core.retrain.run_retrain`
all                :func:`hudd_core.pipeline.run_pipeline`, ``demo.run_demo``, ``load_config``
=================  ==============================================================

Example:
    >>> import hudd_core
    >>> hudd_core.pdist([[0.0, 0.0], [3.0, 4.0]])
    array([5.])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "pdist": "distance",
    "cdist": "distance",
    "second_level_pdist": "distance",
    "run_test": "testing",
    "run_heatmaps": "heatmaps",
    "compute_heatmaps": "heatmaps",
    "run_cluster": "cluster",
    "cluster_layer": "cluster",
    "build_report": "report",
    "run_assign": "assign",
    "run_retrain": "retrain",
    "run_pipeline": "pipeline",
    "run_demo": "demo",
    "load_config": "config",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hudd_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hudd_core.{_EXPORTS[name]}"), name)
