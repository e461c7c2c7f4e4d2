"""How far along a direction until the loss rises (or a metric falls) by a target: `find_edge`, and the automatic
span of a line or plane built on it (`AutoSpan`, `auto_spans`).

The search brackets, then narrows. From a first radius (`start`) it steps outwards until the worsening reaches the
target or the radius reaches `max_radius`; the centre itself (worsening 0) is the inner end of the first bracket.
Every next radius comes from a power law ΔL ∝ rᵖ through the nearest points evaluated (p = 2, a quadratic basin,
until two points give their own), outwards by ×1.1 to ×10 per step, inside a bracket kept off its ends, and halving
when one end has stayed put twice (Illinois) or the value is not finite. It stops at the first point whose worsening
lies in [target, target·(1 + tol)], or when the bracket is narrower than `rtol` of its outer end, which is then the
edge. The next side and the next axis start from the edge and exponent found before. For a smooth loss near a
minimum this takes one to three evaluations per side.

What does not live here: evaluating a point (`engine.GridRunner.point_session`) and the grids (`engine/`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import BaseConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..surface import Surface

logger = logging.getLogger(__name__)

#: the default rise of `span="auto"`, in the loss's own units (nats for cross-entropy); see `AutoSpan`
DEFAULT_RISE = 1.0


def positive_finite(name: str, value: Any) -> float:
    """`value` as a float, or a `ConfigError` naming `name` unless it is a finite number > 0 (NaN refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


@dataclass
class AutoSpan(BaseConfig):
    """How `span="auto"` finds the span of a line or plane: per axis, the radius along +d and −d at which the loss
    first rises by `rise` above the centre's, then a symmetric span over the wider of the two.

    Args:
        rise (`float`, defaults to 1.0): the rise of the loss at the edge of the span, in the loss's own units (an
            absolute rise, not a fraction of the centre's loss). For a cross-entropy loss 1.0 is one nat: the geometric
            mean of the probabilities given to the right tokens has fallen by a factor e, whatever the centre loss is,
            so the basin's floor fills the picture and its walls close it; a fraction of the centre loss would shrink
            the span to nothing for a model with a near-zero training loss. Use a smaller rise for losses of another
            scale (an MSE, a classifier near chance).
        tol (`float`, defaults to 0.1): the edge's rise lies in [rise, rise·(1 + tol)].
        max_radius (`float`, defaults to 100.0): the largest radius tried, in units of the direction (100 times the
            weights' own norm for normalized directions); reaching it without the rise is an error that says so.
        start (`float`, defaults to 0.1): the first radius tried (a basin in filter-normalized units is typically
            0.01–1 wide); later axes and sides start from the edge found before.
        max_evaluations (`int`, defaults to 16): evaluations per side at most.

    Example:
    ```python
    >>> from hf_landscape import AutoSpan
    >>> AutoSpan(rise=0.5).max_radius
    100.0

    ```
    """

    rise: float = field(default=DEFAULT_RISE, metadata={"help": "rise of the loss at the edge (absolute)"})
    tol: float = field(default=0.1, metadata={"help": "relative tolerance of the edge's rise"})
    max_radius: float = field(default=100.0, metadata={"help": "largest radius tried"})
    start: float = field(default=0.1, metadata={"help": "first radius tried"})
    max_evaluations: int = field(default=16, metadata={"help": "evaluations per side at most"})

    def __post_init__(self) -> None:
        self.rise = positive_finite("rise", self.rise)
        self.tol = positive_finite("tol", self.tol)
        self.max_radius = positive_finite("max_radius", self.max_radius)
        self.start = positive_finite("start", self.start)
        if self.start > self.max_radius:
            raise ConfigError(f"`start` ({self.start:g}) must not exceed `max_radius` ({self.max_radius:g}).")
        n = self.max_evaluations
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ConfigError(f"`max_evaluations` must be an integer >= 2, got {n!r}.")


def auto_span_config(span: Any, rise: Any) -> AutoSpan | None:
    """The `AutoSpan` a grid's `span` and `rise` ask for (`span="auto"` with `rise`, or an `AutoSpan`), or None for a
    numeric span (then `rise` must be None). Checked before any work."""
    if isinstance(span, AutoSpan):
        if rise is not None:
            raise ConfigError("Pass `rise` inside the `AutoSpan` (AutoSpan(rise=...)) or with span='auto', not both.")
        return span
    if isinstance(span, str):
        if span != "auto":
            raise ConfigError(f"`span` must be 'auto', an AutoSpan or numbers (low, high), got {span!r}.")
        return AutoSpan() if rise is None else AutoSpan(rise=rise)
    if rise is not None:
        raise ConfigError(f"`rise` ({rise!r}) only applies to span='auto'; drop it or pass span='auto'.")
    return None


@dataclass
class Edge:
    """Where the worsening first reached the target along one side: the `radius` (`inf` when no radius up to the
    largest tried reached it), the worsening there (`value`), every (radius, worsening) evaluated, in order, and the
    exponent p of the last power-law fit ΔL ∝ rᵖ (where the next search along a similar direction starts from)."""

    radius: float
    value: float
    points: list[tuple[float, float]]
    exponent: float = 2.0


def _exponent(a: tuple[float, float], b: tuple[float, float], default: float) -> float:
    """The exponent p of the power law v ∝ rᵖ through two points (r, v) with 0 < v, 0 < r, kept in [0.5, 4]."""
    (r1, v1), (r2, v2) = sorted([a, b])
    if not (0 < r1 < r2 and 0 < v1 and 0 < v2 and math.isfinite(v2)) or v1 == v2:
        return default
    return min(4.0, max(0.5, math.log(v2 / v1) / math.log(r2 / r1)))


def find_edge(
    worsening: Callable[[float], float],
    target: float,
    *,
    start: float,
    max_radius: float,
    tol: float,
    rtol: float = 1e-3,
    max_evaluations: int = 16,
    exponent: float = 2.0,
) -> Edge:
    """The smallest radius r found with `worsening(r)` ≥ `target` (see the module docstring for the search).

    `worsening(r)` is how much worse the objective is at radius r than at the centre (0 at r = 0): the loss's rise,
    or a metric's fall. A non-finite value counts as beyond the target (the loss has diverged). Each next radius
    comes from a power law ΔL ∝ rᵖ through the nearest points (p = `exponent` until two points give their own; 2 is
    a quadratic basin), kept inside the bracket. Returns an `Edge` with `radius = inf` when the worsening stayed
    below the target up to `max_radius` (or for `max_evaluations` evaluations).

    Example:
    ```python
    >>> from hf_landscape.slices.search import find_edge
    >>> edge = find_edge(lambda r: 4.0 * r * r, 1.0, start=0.1, max_radius=100.0, tol=0.1)
    >>> round(edge.radius, 4), len(edge.points)     # 4r² = 1.05 at r = 0.5123: one step from r = 0.1
    (0.5123, 2)

    ```
    """
    points: list[tuple[float, float]] = []

    def evaluate(r: float) -> float:
        value = float(worsening(r))
        points.append((r, value))
        return value

    def reached(value: float) -> bool:
        return not math.isfinite(value) or value >= target

    aim = target * (1.0 + 0.5 * tol)  # the middle of the accepted band [target, target·(1 + tol)]
    p = exponent
    lo, hi = (0.0, 0.0), (math.nan, math.nan)
    r = min(start, max_radius)
    while True:  # bracket
        value = evaluate(r)
        if reached(value):
            hi = (r, value)
            break
        if lo[1] > 0:
            p = _exponent(lo, (r, value), p)
        lo = (r, value)
        if r >= max_radius or len(points) >= max_evaluations:
            return Edge(math.inf, max(v for _, v in points), points, p)
        factor = (aim / value) ** (1.0 / p) if value > 0 else 10.0
        r = min(max_radius, r * min(10.0, max(1.1, factor)))
    kept = 0  # how many steps in a row the inner end stayed put (or the outer one, negative)
    while not (math.isfinite(hi[1]) and hi[1] <= target * (1.0 + tol)):  # narrow
        width = hi[0] - lo[0]
        if width <= rtol * hi[0] or len(points) >= max_evaluations:
            break
        if abs(kept) >= 2 or not math.isfinite(hi[1]):
            r, kept = lo[0] + 0.5 * width, 0
        else:
            if lo[1] > 0:
                p = _exponent(lo, hi, p)
                r = lo[0] * (aim / lo[1]) ** (1.0 / p)
            else:
                r = hi[0] * (aim / hi[1]) ** (1.0 / p)
            r = min(max(r, lo[0] + 0.05 * width), hi[0] - 0.05 * width)
        value = evaluate(r)
        if reached(value):
            hi, kept = (r, value), (kept - 1 if kept <= 0 else -1)
        else:
            lo, kept = (r, value), (kept + 1 if kept >= 0 else 1)
    return Edge(hi[0], hi[1], points, p)


def no_edge_error(
    what: str, target: float, edge: Edge, max_radius: float, fix: str, *, change: str = "rose"
) -> ConfigError:
    """The error of a search that found no edge: what was searched, the largest radius tried and the most it changed
    (`change`: "rose" for a loss, "fell" for a metric searched as its fall)."""
    largest = max(r for r, _ in edge.points)
    most = edge.value + 0.0  # no "-0" for a value that never moved
    return ConfigError(
        f"{what}: it never {change} by {target:g} up to radius {largest:g} (the largest tried; most seen "
        f"{most:.4g}, limit `max_radius`={max_radius:g}); {fix}"
    )


def auto_spans(
    at: Callable[[Sequence[float]], float], axes: int, config: AutoSpan, *, label: str = ""
) -> dict[str, Any]:
    """The automatic span of each of `axes` axes: `at(coords)` is the loss at θ₀ + Σ coordsᵢ·dᵢ. Returns the record a
    surface keeps in `metadata["auto_span"]`: the settings, the centre loss, and per axis the symmetric `span`, the
    edge and its rise on each side, and every point evaluated as (coordinate, loss).

    Raises:
        ConfigError: the centre loss is not finite, or along some side the loss never rose by `rise` up to
            `max_radius` (the message gives the largest radius tried).
    """
    centre = float(at((0.0,) * axes))
    if not math.isfinite(centre):
        raise ConfigError(f"span='auto' needs a finite loss at the centre, got {centre}; give `span` as numbers.")
    start, exponent = config.start, 2.0
    records = []
    for axis in range(axes):
        sides: dict[str, Edge] = {}
        for sign, name in ((1.0, "+"), (-1.0, "-")):

            def rise(r: float, sign: float = sign, axis: int = axis) -> float:
                coords = [0.0] * axes
                coords[axis] = sign * r
                return float(at(coords)) - centre

            edge = find_edge(
                rise,
                config.rise,
                start=start,
                max_radius=config.max_radius,
                tol=config.tol,
                max_evaluations=config.max_evaluations,
                exponent=exponent,
            )
            if not math.isfinite(edge.radius):
                raise no_edge_error(
                    f"span='auto'{label}: along {name}direction {axis + 1} the loss ({centre:.4g} at the centre)",
                    config.rise,
                    edge,
                    config.max_radius,
                    "pass a smaller `rise`, a larger `max_radius` (AutoSpan(max_radius=...)), or give `span` as "
                    "numbers.",
                )
            sides[name] = edge
            start, exponent = edge.radius, edge.exponent
        half = max(sides["+"].radius, sides["-"].radius)
        records.append(
            {
                "span": [-half, half],
                "edge": {k: e.radius for k, e in sides.items()},
                "rise_at_edge": {k: e.value for k, e in sides.items()},
                "points": [[s * r, centre + v] for s, k in ((1.0, "+"), (-1.0, "-")) for r, v in sides[k].points],
            }
        )
    evaluations = 1 + sum(len(rec["points"]) for rec in records)
    logger.info("span='auto': spans %s in %d evaluations", [rec["span"] for rec in records], evaluations)
    return {
        **config.to_dict(),
        "centre_loss": centre,
        "span": [rec["span"] for rec in records],
        "axes": records,
        "evaluations": evaluations,
    }


def shared_span(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One automatic span for several searches (the draws of several seeds, or several models, which share one grid):
    per axis the widest; the record keeps the settings, the shared `span`, each search (`draws`) and the total
    number of evaluations."""
    axes = len(records[0]["axes"])
    halves = [max(rec["axes"][k]["span"][1] for rec in records) for k in range(axes)]
    settings = {k: v for k, v in records[0].items() if k not in ("axes", "span", "evaluations", "centre_loss")}
    return {
        **settings,
        "span": [[-h, h] for h in halves],
        "draws": list(records),
        "evaluations": sum(rec["evaluations"] for rec in records),
    }


def with_auto_span(surface: Surface, found: dict[str, Any] | None) -> Surface:
    """`surface` with the automatic span's record in `metadata["auto_span"]` (when there was one)."""
    if found is not None:
        surface.metadata["auto_span"] = found
    return surface
