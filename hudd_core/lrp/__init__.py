"""LRP heatmaps of every layer of a CNN in one pass (HUDD step 2).

>>> import torch
>>> from hudd_core.lrp import LRP
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(4 * 6 * 6, 3)).eval()
>>> sorted(LRP(net)(torch.rand(2, 1, 8, 8)))
['0', '1', '3', 'input']
"""

from hudd_core.lrp.composites import COMPOSITES, Composite, get_composite
from hudd_core.lrp.engine import LRP, layer_relevance, start_relevance
from hudd_core.lrp.graph import UnsupportedOperation, capture

__all__ = [
    "COMPOSITES",
    "LRP",
    "Composite",
    "UnsupportedOperation",
    "capture",
    "get_composite",
    "layer_relevance",
    "start_relevance",
]
