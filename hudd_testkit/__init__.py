"""Test helpers shared by ``tests/`` and ``benchmarks/``: fixtures (work folders, report
and assign cases), fault trials and independent oracles (zennit's LRP, the HUDD toolset's
clustering), importable as ``hudd_testkit.<module>`` wherever hudd_core is installed.

The oracles never call hudd_core's own functions for what they check, so that a test
compares our implementation with an independent one, never with itself. Nothing is
imported here: each module brings only its own dependencies (zennit, a browser, ...).
"""
