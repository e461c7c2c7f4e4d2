"""Grids: the coordinates of lines and planes, checked before anything is allocated or evaluated.

`grid_axis` turns `steps` and a `span` into coordinates (0 snapped exactly onto the centre); `plane_axes` reads a
plane's `steps` and `span` in any of their accepted forms; `check_grid_size` bounds a grid's points
(`MAX_GRID_POINTS`, or `HF_LANDSCAPE_MAX_POINTS`); `seed_list` checks several direction seeds; `check_point` one
point of `LandscapeProbe.evaluate`. What does not live here: evaluating the points (`engine/`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigError

# Coordinates are in units of the directions, which are normalized to the weights' own norms: at |α| of a million
# the weights are a million times their size and every loss has overflowed; far larger spans only make NaN.
MAX_ABS_COORDINATE = 1e6
# Grids above this many points are refused before anything is allocated (an 8-byte value, a coordinate tuple and a
# forward pass each): a million points is already days of evaluation for a 100M-parameter model on one GPU.
MAX_GRID_POINTS = 10**6
MAX_POINTS_ENV = "HF_LANDSCAPE_MAX_POINTS"


def max_grid_points() -> int:
    """The largest grid allowed: `MAX_GRID_POINTS`, or the environment variable `HF_LANDSCAPE_MAX_POINTS`."""
    text = os.environ.get(MAX_POINTS_ENV)
    if text is None:
        return MAX_GRID_POINTS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"The environment variable {MAX_POINTS_ENV} must be a positive integer, got {text!r}.")
    return limit


def check_grid_size(points: int, argument: str) -> None:
    """Refuse a grid of more than `max_grid_points()` points, before anything of it is allocated."""
    limit = max_grid_points()
    if points > limit:
        raise ConfigError(
            f"`{argument}` asks for {points:,} points, more than the limit of {limit:,} (about {points * 200 / 2**30:.3g} "
            f"GiB of grid bookkeeping and {points:,} forward passes); use fewer steps, or raise the limit with the "
            f"environment variable {MAX_POINTS_ENV}={points}."
        )


def grid_axis(steps: int, span: Sequence[float], argument: str) -> np.ndarray:
    """`steps` evenly spaced coordinates over `span`; validates both (before allocating anything)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ConfigError(f"`{argument}` steps must be an integer >= 2, got {steps!r}.")
    check_grid_size(steps, argument)
    try:
        lo, hi = (float(v) for v in span)
    except (TypeError, ValueError):
        raise ConfigError(f"`{argument}` span must be a pair (low, high), got {span!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ConfigError(f"`{argument}` span must be finite with low < high, got {span!r}; e.g. (-1.0, 1.0).")
    if max(abs(lo), abs(hi)) > MAX_ABS_COORDINATE:
        raise ConfigError(
            f"`{argument}` span {(lo, hi)!r} reaches beyond ±{MAX_ABS_COORDINATE:g}: coordinates are in units of the "
            "directions (normalized to the weights' own size), so every point there overflows to NaN or inf; use "
            "a span such as (-1.0, 1.0)."
        )
    axis = np.linspace(lo, hi, steps)
    # Snap values within rounding of 0 to exactly 0, so a grid through the centre evaluates θ₀ itself.
    axis[np.abs(axis) < 1e-12 * max(abs(lo), abs(hi))] = 0.0
    return axis


def plane_steps(steps: Any) -> tuple[int, int]:
    """A plane's `steps` as (nx, ny): one integer for both axes, or a pair (each checked by `grid_axis`)."""
    if isinstance(steps, int) and not isinstance(steps, bool):
        return steps, steps
    if isinstance(steps, Sequence) and len(steps) == 2:
        return steps[0], steps[1]  # each is validated by grid_axis
    raise ConfigError(f"`steps` must be an integer or a pair (nx, ny), got {steps!r}; e.g. steps=(25, 25).")


def plane_span(span: Any) -> tuple[Any, Any]:
    """A plane's `span` as (x span, y span): one (low, high) for both axes, or a pair of them."""
    if is_pair_of_numbers(span):
        return span, span
    if isinstance(span, Sequence) and len(span) == 2:
        return span[0], span[1]  # each is validated by grid_axis
    raise ConfigError(f"`span` must be (low, high) or ((x_low, x_high), (y_low, y_high)), got {span!r}.")


def is_pair_of_numbers(value: Any) -> bool:
    return (
        isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float, np.number)) for v in value)
    )


def plane_axes(steps: Any, span: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The x and y coordinates of a plane and its `grid` record (steps and spans as given), all checked."""
    nx, ny = plane_steps(steps)
    span_x, span_y = plane_span(span)
    x = grid_axis(nx, span_x, "steps/span (x)")
    y = grid_axis(ny, span_y, "steps/span (y)")
    check_grid_size(nx * ny, "steps")
    return x, y, {"steps": [nx, ny], "span": [list(map(float, span_x)), list(map(float, span_y))]}


def points_per_draw(kind: str, steps: Any, span: Any) -> int:
    """How many points one direction draw of a `"line"` or `"plane"` evaluates (checked as the grid itself is)."""
    if kind == "line":
        return grid_axis(steps, span, "steps/span").size
    nx, ny = plane_steps(steps)
    span_x, span_y = plane_span(span)
    return grid_axis(nx, span_x, "steps/span (x)").size * grid_axis(ny, span_y, "steps/span (y)").size


def interpolation_axis(steps: int | None, span: Sequence[float] | None, segments: int) -> tuple[np.ndarray, Any, Any]:
    """The coordinates of an interpolation through `segments` straight pieces (knots at 0, 1, ..., `segments`), and
    its `steps` and `span` with the defaults filled in: span (−0.5, K + 0.5), 20 points per unit of α plus one. Points
    within rounding of a knot are snapped onto it, so every checkpoint on the grid is evaluated exactly."""
    if span is None:
        span = (-0.5, segments + 0.5)
    if steps is None:
        steps = int(round(20 * (float(span[1]) - float(span[0])))) + 1 if is_pair_of_numbers(span) else 41
    x = grid_axis(steps, span, "steps/span")
    scale = 1e-12 * max(1.0, float(np.max(np.abs(x))))
    for knot in range(segments + 1):
        x[np.abs(x - knot) < scale] = float(knot)
    return x, steps, span


def grid_points(axes: list[np.ndarray]) -> list[tuple[float, ...]]:
    """The points of a line (`[x]`) or plane (`[x, y]`, x fastest: row j of the plane is y[j])."""
    if len(axes) == 1:
        return [(float(a),) for a in axes[0]]
    return [(float(a), float(b)) for b in axes[1] for a in axes[0]]


def seed_list(seeds: Sequence[Any]) -> list[int]:
    """`seeds` as a list of two or more distinct integers (several direction draws), or a `ConfigError`."""
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not all(isinstance(v, int) for v in seeds):
        raise ConfigError(f"`seed` as a list needs two or more distinct integers, got {seeds!r}.")
    return seeds


def check_point(point: Sequence[float], directions: Sequence[Any] | None) -> tuple[float, ...]:
    """One point of `LandscapeProbe.evaluate` with one coordinate per direction, finite and within
    `MAX_ABS_COORDINATE`, as floats."""
    if directions is None or len(directions) != len(point):
        raise ConfigError(
            f"`point` {tuple(point)!r} needs one direction per coordinate; pass `directions=` of that length."
        )
    try:
        coords = tuple(float(c) for c in point)
    except (TypeError, ValueError):
        raise ConfigError(f"`point` must be a list of numbers, got {point!r}.") from None
    if not all(math.isfinite(c) and abs(c) <= MAX_ABS_COORDINATE for c in coords):
        raise ConfigError(
            f"`point` {coords!r} must be finite and within ±{MAX_ABS_COORDINATE:g} (coordinates are in units of "
            "the directions); e.g. point=(0.5,)."
        )
    return coords
