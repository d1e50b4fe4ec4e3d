"""ClusterModule (HUDD step 3): the error images' heatmaps clustered into root-cause
clusters (RCCs). Each module imports only those above it in this list:

=================  ==============================================================
module             holds
=================  ==============================================================
``labels``         :data:`NOISE`, :func:`relabel`, :func:`inspect_share`, ``layer_rows``
``attach``         the noise joined to its nearest cluster or a miscellaneous group
``knee``           k from the knee of the WICD gradient, the best layer
``wicd``           WICD and silhouette for every k from one walk up the dendrogram
``ward``           the published rule on one layer: :func:`cluster_layer`
``methods``        the catalogue of methods beyond it (``hudd cluster --method``)
``analysis``       RQ1, the (true → predicted) pairs and the 2-D map of the errors
``step``           :func:`run_cluster`: the step over ``T`` (cache, RCC folders)
=================  ==============================================================

The names below are re-exported, imported on first use so that reading the catalogue's
names (as the CLI does) does not load scipy and numba.

Example:
    >>> from hudd_core.cluster import NOISE, k_bounds
    >>> NOISE, k_bounds(30)
    (0, (2, 15))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("NOISE", "inspect_share", "layer_rows", "relabel"), "labels"),
    **dict.fromkeys(
        (
            "BYTES_PER_PAIR",
            "DEFAULT_K_RANGE",
            "MEMORY_HEADROOM",
            "LayerClustering",
            "approximate_reason",
            "available_memory",
            "cluster_layer",
            "exact_memory",
            "k_bounds",
            "random_projection",
            "single_image",
        ),
        "ward",
    ),
    **dict.fromkeys(
        (
            "ANALYSIS_FILES",
            "EXPORT_LIMITS",
            "check_export",
            "export_distances",
            "layer_folder",
            "load_layer",
            "run_cluster",
            "write_layer",
        ),
        "step",
    ),
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hudd_core.cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hudd_core.cluster.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
