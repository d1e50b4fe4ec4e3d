"""The choices of the options whose values are other modules' registries.

The option table (:mod:`hudd_core.options`) sits below every step, so it cannot name the
LRP composites, the clustering methods or the search backends; the CLI and the pipeline's
validation read them here, from the modules that define them (imported only when asked).

Example:
    >>> "hudd" in dynamic_choices("composite"), dynamic_choices("seed")
    (True, None)
"""

from __future__ import annotations


def dynamic_choices(name: str) -> tuple | None:
    """The choices of ``name`` that the option table cannot hold (lower modules'
    registries: composites, clustering methods, search backends); None for the others."""
    if name == "composite":
        from hudd_core.lrp.composites import COMPOSITES

        return tuple(sorted(COMPOSITES))
    if name == "method":
        from hudd_core.cluster.methods import METHOD_NAMES

        return METHOD_NAMES
    if name == "backend":
        from hudd_core.search import BACKENDS

        return BACKENDS
    return None
