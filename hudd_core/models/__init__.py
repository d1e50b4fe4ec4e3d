"""The model zoo and model loading (see ``zoo`` and ``loading``)."""

from hudd_core.models.loading import load_model, read_weights, resolve_factory
from hudd_core.models.zoo import BUILTIN, alexnet, kpnet, resnet

__all__ = ["BUILTIN", "alexnet", "kpnet", "load_model", "read_weights", "resnet", "resolve_factory"]
