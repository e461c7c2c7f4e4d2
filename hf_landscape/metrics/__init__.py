"""Evaluate-loadable metric modules shipped with hf_landscape, and how to load them offline.

Each subfolder holds one `evaluate.Metric` script named like its folder (`accuracy/accuracy.py`, ...), so
`evaluate.load(path)` loads it from the installed package without the Hugging Face Hub. The scripts compute
with scikit-learn and scipy, like the Hub's modules of the same names, and keep float64 inputs in float64.
They are package data, not importable submodules: `evaluate` copies and imports them itself.

Nothing here computes a loss; `objectives/glue.py` decides which metrics a task reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, ObjectiveError

METRICS_DIR = Path(__file__).resolve().parent
#: the metric modules shipped in this folder
METRIC_NAMES = ("accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr")


def metric_path(name: str) -> Path:
    """The folder of the shipped metric module `name`, which `evaluate.load` accepts.

    Raises:
        ConfigError: `name` is not one of `METRIC_NAMES`.
    """
    if name not in METRIC_NAMES:
        raise ConfigError(f"`name` must be one of the shipped metrics {list(METRIC_NAMES)}, got {name!r}.")
    return METRICS_DIR / name


def load_metric(name: str) -> Any:
    """Load the shipped metric module `name` with `evaluate.load` from its local path (no network).

    Results are kept in memory (`keep_in_memory=True`), so computing a metric writes no cache files.

    Example:
    ```python
    >>> from hf_landscape.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}

    ```

    Raises:
        ConfigError: `name` is not a shipped metric.
        ObjectiveError: `evaluate` (or scikit-learn / scipy) is not installed.
    """
    path = metric_path(name)
    try:
        import evaluate
    except ImportError:
        raise ObjectiveError(
            "Task metrics need the `evaluate` package; install it with `pip install 'hf_landscape[data]'` (or `[glue]`)."
        ) from None
    try:
        return evaluate.load(str(path), keep_in_memory=True)
    except ImportError as err:
        raise ObjectiveError(
            f"The metric module {name!r} could not be loaded ({err}); install the metric packages with "
            "`pip install 'hf_landscape[data]'` (or `[glue]`)."
        ) from None


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]
