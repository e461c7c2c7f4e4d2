"""Flatness and sharpness summaries of a surface: small pure functions of its grid, usable on any plane or line.

`mean_increase_within` (mean loss rise within a radius), `rise_radius` (how far until the loss rises by a threshold),
`centre_curvature` (second differences at the centre), `summarize` (all of them as a table row, with intervals over
the direction draws of a surface made over several seeds) and `interpolation_barrier` (linear mode connectivity).
`CompareReport` (in `comparison`) tabulates them for several models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, SurfaceError
from ..stats import DEFAULT_CONFIDENCE, check_confidence, t_interval

if TYPE_CHECKING:
    from ..surface import Surface

_ON_CIRCLE = 1e-9  # relative slack so grid points on the circle of radius r (up to rounding) count as inside


def _centre_index(surface: Surface) -> tuple[int, ...]:
    """`surface.centre_index`, or a `SurfaceError` when the grid does not pass through the origin."""
    index = surface.centre_index
    if index is None:
        raise SurfaceError(
            "The surface's grid does not pass through the origin; use a span that contains 0, e.g. (-1, 1)."
        )
    return index


def radial_distance(surface: Surface) -> np.ndarray:
    """Distance √(α² + β²) of every grid point from the centre, shaped like `surface.values`."""
    if surface.y is None:
        return np.abs(surface.x)
    xx, yy = np.meshgrid(surface.x, surface.y)
    return np.sqrt(xx**2 + yy**2)


def mean_increase_within(surface: Surface, radius: float) -> float:
    """Mean of L(α, β) − L(0, 0) over the grid points with √(α² + β²) ≤ `radius` (the centre included).

    A flat minimum has a small value, a sharp one a large value. Non-finite losses inside the radius make the
    result non-finite.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.comparison import mean_increase_within
    >>> x = np.array([-1.0, 0.0, 1.0])
    >>> mean_increase_within(Surface(x, x**2), radius=1.0)   # (1 + 0 + 1) / 3
    0.6666666666666666

    ```
    """
    radius = positive_number("radius", radius)
    centre = surface.values[_centre_index(surface)]
    inside = radial_distance(surface) <= radius * (1 + _ON_CIRCLE)
    return float(np.mean(surface.values[inside] - centre))


def rise_radius(surface: Surface, rise: float) -> float:
    """The smallest distance from the centre of a grid point whose loss is at least `rise` above the centre's
    (`inf` when no grid point rises that far). Larger means flatter. NaN losses never count as a rise.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.comparison import rise_radius
    >>> x = np.linspace(-1, 1, 5)
    >>> rise_radius(Surface(x, x**2), rise=0.2), rise_radius(Surface(x, x**2), rise=5.0)
    (0.5, inf)

    ```
    """
    rise = positive_number("rise", rise)
    centre = surface.values[_centre_index(surface)]
    with np.errstate(invalid="ignore"):
        risen = (surface.values - centre) >= rise
    distances = radial_distance(surface)[risen]
    return float(distances.min()) if distances.size else math.inf


def grid_radius(surface: Surface) -> float:
    """The largest distance from the centre of any point of the grid: the furthest `rise_radius` can look."""
    return float(np.max(radial_distance(surface)))


def rise_text(value: float, interval: Sequence[float] | None, r_max: float, digits: int = 4) -> str:
    """`rise_radius` as a table shows it: `"> r_max"` (the grid's largest radius) when no point rose that far, since
    the radius lies beyond the grid, not at infinity; else the value with its interval, if any.

    Example:
    ```python
    >>> from hf_landscape.analysis.summaries import rise_text
    >>> rise_text(float("inf"), [float("nan"), float("nan")], 1.4142), rise_text(0.5, [0.25, 0.75], 1.4142)
    ('> 1.414', '0.5 [0.25, 0.75]')

    ```
    """
    if not math.isfinite(value):
        return f"> {r_max:.{digits}g}"
    text = f"{value:.{digits}g}"
    if interval is not None and all(math.isfinite(v) for v in interval):
        text += f" [{interval[0]:.{digits}g}, {interval[1]:.{digits}g}]"
    return text


def centre_curvature(surface: Surface) -> tuple[float, ...]:
    """Second derivatives of the loss at the centre along each axis, from second differences of the grid:
    `(d²L/dα², d²L/dβ²)` for a plane, `(d²L/dα²,)` for a line. Exact for a quadratic; uneven spacing around the
    centre is allowed. NaN along an axis where the centre is at the edge of the grid.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.comparison import centre_curvature
    >>> x = y = np.linspace(-1, 1, 5)
    >>> xx, yy = np.meshgrid(x, y)
    >>> centre_curvature(Surface(x, 3 * xx**2 + 0.5 * yy**2, y=y))
    (6.0, 1.0)

    ```
    """
    index = _centre_index(surface)
    if surface.y is None:
        return (_second_difference(surface.x, surface.values, index[0]),)
    j, i = index
    return (
        _second_difference(surface.x, surface.values[j, :], i),
        _second_difference(surface.y, surface.values[:, i], j),
    )


def _second_difference(coords: np.ndarray, values: np.ndarray, k: int) -> float:
    if k == 0 or k == len(coords) - 1:
        return math.nan
    h1, h2 = coords[k] - coords[k - 1], coords[k + 1] - coords[k]
    # The second derivative of the parabola through the three points (the usual [1, -2, 1] / h² when h1 == h2).
    return float(2.0 * (h1 * values[k + 1] - (h1 + h2) * values[k] + h2 * values[k - 1]) / (h1 * h2 * (h1 + h2)))


SUMMARY_FIGURES = ("mean_increase", "rise_radius", "curvature_x", "curvature_y", "curvature_mean")


def summarize(
    surface: Surface, *, radius: float = 0.5, rise: float = 0.1, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Any]:
    """Centre loss and metrics, and the flatness / sharpness summaries of one surface, as a table row.

    Keys: `centre_loss`, `centre_<metric>` for each metric of the surface, `mean_increase` (see
    `mean_increase_within`), `rise_radius`, and `curvature_x`, `curvature_y`, `curvature_mean` (see
    `centre_curvature`; a line has `curvature_x` and `curvature_mean` only).

    For a surface made over several direction seeds (`seed=[0, 1, 2]`, which keeps each draw in `samples`),
    every summary figure is computed on each draw: the row holds their mean, and `<figure>_ci` the
    `confidence` Student-t interval of that mean over the draws (`stats.t_interval`). The centre is the same
    point for every draw, so `centre_*` has no interval.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.comparison import summarize
    >>> x = np.linspace(-1, 1, 5)
    >>> draws = np.stack([2 * x**2, 4 * x**2, 6 * x**2])          # curvatures 4, 8, 12 along three draws
    >>> row = summarize(Surface(x, draws.mean(0), samples=draws, spread=draws.std(0, ddof=1)))
    >>> row["curvature_x"], [round(v, 3) for v in row["curvature_x_ci"]]
    (8.0, [-1.937, 17.937])

    ```
    """
    confidence = check_confidence(confidence)
    index = _centre_index(surface)
    row: dict[str, Any] = {"centre_loss": float(surface.values[index])}
    for name in sorted(surface.metrics):
        row[f"centre_{name}"] = float(surface.metrics[name][index])
    row.update(_figures(surface.x, surface.y, surface.values, index, radius, rise))
    samples = surface.samples
    if samples is not None and len(samples) >= 2:
        draws = [_figures(surface.x, surface.y, sample, index, radius, rise) for sample in samples]
        for key in list(row):
            if key in SUMMARY_FIGURES:
                values = np.array([d[key] for d in draws])
                row[key] = float(values.mean())
                row[f"{key}_ci"] = [float(v) for v in t_interval(values, confidence)]
    return row


@dataclass(frozen=True)
class _Draw:
    """One set of values on a surface's grid (the mean, or one direction draw's), read as the summaries read a
    `Surface`."""

    x: np.ndarray
    y: np.ndarray | None
    values: np.ndarray
    centre_index: tuple[int, ...]


def _figures(
    x: np.ndarray, y: np.ndarray | None, values: np.ndarray, index: tuple[int, ...], radius: float, rise: float
) -> dict[str, float]:
    surface: Any = _Draw(x, y, np.asarray(values, dtype=np.float64), index)
    row = {"mean_increase": mean_increase_within(surface, radius), "rise_radius": rise_radius(surface, rise)}
    curvature = centre_curvature(surface)
    for axis, value in zip(("x", "y"), curvature):
        row[f"curvature_{axis}"] = value
    row["curvature_mean"] = float(np.mean(curvature))
    return row


def positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < math.inf:
        raise ConfigError(f"`{name}` must be a positive finite number, got {value!r}.")
    return float(value)


def interpolation_barrier(surface: Surface, between: Sequence[float] = (0.0, 1.0)) -> float:
    """The loss barrier between two points of an interpolation (linear mode connectivity, Frankle et al. 2020):
    max over a ≤ α ≤ b of L(α) − ((b − α)·L(a) + (α − a)·L(b)) / (b − a), from the surface's own points, with
    (a, b) = `between`. Zero or below means the two checkpoints are connected along the line (or path) at this
    resolution. The default (0, 1) is the barrier between the probed model and the other model; on a path
    through several checkpoints (`probe.interpolate([m1, m2])`), (1, 2) is the barrier between m1 and m2, and
    (0, 2) the barrier along the whole path.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.comparison import interpolation_barrier
    >>> x = np.linspace(0, 2, 5)                          # knots at 0, 1, 2
    >>> values = np.array([1.0, 3.0, 1.0, 1.0, 1.0])      # a bump on the first segment only
    >>> interpolation_barrier(Surface(x, values), (0, 1)), interpolation_barrier(Surface(x, values), (1, 2))
    (2.0, 0.0)

    ```

    Raises:
        ConfigError: the surface is not a line, or its grid does not contain both ends of `between`.
    """
    x = surface.x
    if (
        not isinstance(between, (list, tuple))
        or len(between) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in between)
        or not between[0] < between[1]
    ):
        raise ConfigError(f"`between` must be two increasing numbers (a, b), e.g. (0, 1); got {between!r}.")
    a, b = float(between[0]), float(between[1])
    if surface.y is not None or not (np.any(x == a) and np.any(x == b)):
        raise ConfigError(
            f"`surface` must be an interpolation (a line) whose grid contains α = {a:g} and α = {b:g}; its grid runs "
            f"over [{x.min():g}, {x.max():g}] with {len(x)} points (use `steps` that put a point on every knot)."
        )
    v = surface.values
    la, lb = float(v[np.flatnonzero(x == a)[0]]), float(v[np.flatnonzero(x == b)[0]])
    inside = (x >= a) & (x <= b)
    chord = ((b - x[inside]) * la + (x[inside] - a) * lb) / (b - a)
    return float(np.max(v[inside] - chord))
