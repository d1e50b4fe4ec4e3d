"""hudd_core: a fast, scalable HUDD (heatmap-based unsupervised debugging of DNNs).

The pipeline steps are plain functions in one module each (see README.md):
``distance`` (pairwise heatmap distances) and the steps built on it.
"""

from hudd_core.distance import cdist, pdist, second_level_pdist

__version__ = "0.1.0"
__all__ = ["__version__", "cdist", "pdist", "second_level_pdist"]
