"""What a text-classification task reads, predicts and reports (`ClassificationTask`), and its metrics
(`resolve_metrics`: shipped metric names, `evaluate` modules or callables, each a function of the predictions and the
references).

The GLUE tasks are instances of its subclass `GlueTask` (`glue_tasks`). What does not live here: loading the examples
(`classification_data`), the loss (`classification`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, ObjectiveError

#: a metric: `fn(predictions, references) -> float`
MetricFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class ClassificationTask:
    """What a text-classification task reads and reports.

    Args:
        name: the task's name, e.g. `"cola"` or `"subj"` (in the metadata, titles and cards).
        text_columns: one column (single sentences) or two (sentence pairs), in the order the tokenizer receives them.
        num_labels: classes; 1 for a regression task (a single output against a float score); None to take the
            model's own `num_labels` when it is bound.
        label_names: class names by label id (empty when the labels are ids only, or for regression).
        metrics: `(key, metric)` pairs: `key` names the metric in `Evaluation.metrics` and `Surface.metrics`; the
            metric is the name of a shipped metric module (`hf_landscape.metrics.METRIC_NAMES`), an `evaluate`
            module, or a callable `fn(predictions, references) -> float`.
        label_column: the column holding the labels.
    """

    name: str
    text_columns: tuple[str, ...]
    num_labels: int | None
    label_names: tuple[str, ...]
    metrics: tuple[tuple[str, Any], ...]
    label_column: str = "label"

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


def metric_key(metric: Any) -> str:
    """The key a metric is reported under when none is given: a shipped module's name, an `evaluate` module's
    `name`, or a function's `__name__` (a lambda must be named: pass `{"key": fn}`)."""
    if isinstance(metric, str):
        return metric
    name = getattr(metric, "name", None) if hasattr(metric, "compute") else getattr(metric, "__name__", None)
    if not isinstance(name, str) or not name or name == "<lambda>":
        raise ConfigError(
            f"`metrics` holds {metric!r}, which has no name to report it under; pass a dict such as "
            "`metrics={'my_metric': fn}`."
        )
    return name


def metric_pairs(
    metrics: Sequence[Any] | Mapping[str, Any] | None, default: Sequence[str]
) -> tuple[tuple[str, Any], ...]:
    """`metrics` (a list of metrics, or `{key: metric}`) as `(key, metric)` pairs, checked; `default` when None."""
    if metrics is None:
        return tuple((name, name) for name in default)
    if isinstance(metrics, str):
        metrics = [metrics]
    items = list(metrics.items()) if isinstance(metrics, Mapping) else [(metric_key(m), m) for m in metrics]
    keys = [key for key, _ in items]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"`metrics` names a metric twice: {keys}.")
    for key, metric in items:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"`metrics` keys must be non-empty strings, got {key!r}.")
        if not (isinstance(metric, str) or callable(metric) or hasattr(metric, "compute")):
            raise ConfigError(
                f"`metrics[{key!r}]` must be a shipped metric name, an `evaluate` module or a function "
                f"`fn(predictions, references) -> float`, got {type(metric).__name__}."
            )
    return tuple(items)


def resolve_metrics(pairs: Sequence[tuple[str, Any]]) -> dict[str, MetricFn]:
    """`{key: fn(predictions, references) -> float}` for `(key, metric)` pairs (shipped modules loaded offline)."""
    from ..metrics import METRIC_NAMES, load_metric

    out: dict[str, MetricFn] = {}
    for key, metric in pairs:
        if isinstance(metric, str):
            if metric not in METRIC_NAMES:
                raise ConfigError(
                    f"`metrics` names {metric!r}, which is not a shipped metric {list(METRIC_NAMES)}; pass an "
                    "`evaluate` module or a function `fn(predictions, references) -> float` instead."
                )
            out[key] = _module_metric(load_metric(metric), metric)
        elif hasattr(metric, "compute"):
            out[key] = _module_metric(metric, str(getattr(metric, "name", key)))
        else:
            out[key] = _function_metric(metric, key)
    return out


def _module_metric(module: Any, name: str) -> MetricFn:
    def compute(predictions: np.ndarray, references: np.ndarray) -> float:
        result = module.compute(predictions=predictions, references=references)
        if name in result:
            return float(result[name])
        if len(result) == 1:
            return float(next(iter(result.values())))
        raise ObjectiveError(
            f"The metric module {name!r} returned several values {sorted(result)}; wrap it in a function that "
            "returns the one to report."
        )

    return compute


def _function_metric(fn: Callable[..., Any], key: str) -> MetricFn:
    def compute(predictions: np.ndarray, references: np.ndarray) -> float:
        value = fn(predictions, references)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ObjectiveError(
                f"The metric {key!r} returned {type(value).__name__} {value!r:.60}; a metric function returns one "
                "number."
            ) from None

    return compute


def check_columns(text_columns: Any, label_column: Any) -> tuple[tuple[str, ...], str]:
    """The text columns (one or two names) and the label column, checked."""
    if isinstance(text_columns, str):
        text_columns = (text_columns,)
    try:
        columns = tuple(text_columns)
    except TypeError:
        raise ConfigError(f"`text_columns` must be one or two column names, got {text_columns!r}.") from None
    if not 1 <= len(columns) <= 2 or not all(isinstance(c, str) and c for c in columns):
        raise ConfigError(
            f"`text_columns` must be one column (single sentences) or two (sentence pairs), got {text_columns!r}."
        )
    if len(set(columns)) != len(columns):
        raise ConfigError(f"`text_columns` names a column twice: {list(columns)}.")
    if not isinstance(label_column, str) or not label_column or label_column in columns:
        raise ConfigError(
            f"`label_column` must be a column name other than the text columns {list(columns)}, got {label_column!r}."
        )
    return columns, label_column
