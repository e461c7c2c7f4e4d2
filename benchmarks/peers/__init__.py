"""Thin adapters that run one fixed loss-plane workload through hf_landscape and its peers.

Each module has NAME (the --tools name), DIST (the PyPI distribution, None for the Li et al. clone),
METHOD (one line: what the tool computes and how the adapter maps it to the common workload), an
optional untimed `prepare(ctx)`, and `run(ctx, state) -> Result`, which is timed. The module
docstrings give the details and every deviation from a filter-normalized 21 x 21 plane over [-1, 1]^2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TOOLS = {
    "hf_landscape": "hf_landscape_peer",
    "loss_landscapes": "loss_landscapes_peer",
    "landscaper": "landscaper_peer",
    "nngeom": "nngeom_peer",
    "pylandscape": "pylandscape_peer",
    "li2018": "li2018_peer",
}


def adapter(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{TOOLS[name]}")
