"""Turning directions into what the engine sets: the parameters they touch and per-axis tensor lists.

`as_direction` accepts a `Direction`, a `LowRankDirection` or a plain {parameter name: tensor} dict from a user;
`prepare` checks full-rank directions against the model (names and shapes) and lines their tensors up with the
parameters, on each parameter's device and in its dtype, zeros where an axis leaves a parameter alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import ConfigError, DirectionError
from .base import Direction, LowRankDirection, check_tensors


def as_direction(value: Any, argument: str) -> Direction | LowRankDirection:
    """A user's direction as a `Direction` (or `LowRankDirection`), or a `DirectionError` naming `argument`."""
    if isinstance(value, (Direction, LowRankDirection)):
        return value
    if not isinstance(value, Mapping):
        raise DirectionError(
            f"`{argument}` must be a `Direction`, a `LowRankDirection` or a dict {{parameter name: tensor}}, got "
            f"{value!r:.60} ({type(value).__name__}); e.g. `probe.directions(seed)[0]`."
        )
    check_tensors(value, argument)
    return Direction(dict(value), {"kind": "custom"})


def given_directions(spec: Any, axes: int) -> list[Direction | LowRankDirection]:
    """A user's own directions of a grid, exactly one per axis, each checked (`as_direction`)."""
    spec = list(spec)
    if len(spec) != axes:
        raise ConfigError(f"`directions` must hold {axes} direction(s) here, got {len(spec)}.")
    names = ["direction"] if axes == 1 else [f"directions[{k}]" for k in range(axes)]
    return [as_direction(d, name) for d, name in zip(spec, names)]


def prepare(
    model: torch.nn.Module, directions: Sequence[Any]
) -> tuple[dict[str, torch.nn.Parameter], list[list[torch.Tensor]]]:
    """Check user or drawn full-rank directions against `model`; return the parameters they touch and per-axis tensor
    lists on the parameters' devices and dtypes (zeros where an axis skips a name)."""
    all_params = dict(model.named_parameters())
    checked = [as_direction(d, f"directions[{k}]") for k, d in enumerate(directions)]
    full = [d for d in checked if isinstance(d, Direction)]
    if len(full) != len(checked):
        raise DirectionError("`directions` mixes low-rank and full-rank directions; use one kind for every axis.")
    for k, d in enumerate(full):
        d.check_fits(all_params, argument=f"directions[{k}]")
    names = [n for n in all_params if any(n in d.tensors for d in full)]
    if not names:
        raise DirectionError("`directions` are empty; they must name at least one parameter.")
    params = {n: all_params[n] for n in names}
    tensors = [
        [
            d.tensors[n].to(params[n].device, params[n].dtype) if n in d.tensors else torch.zeros_like(params[n])
            for n in names
        ]
        for d in full
    ]
    return params, tensors
