"""Basin sizes (Chen et al. 2025): the radius at which the loss rises (or a metric falls) by `drop`, along random
directions ("most-case", a mean and interval over seeds) and along the worst-case direction ("worst-case").

Each radius is `search.find_edge` along +d from the weights, d normalized as random directions are (filter, layer or
model), so radii are in units of the weights' own norms. The worst-case direction depends on its radius
(`directions/adversarial.py`): it is found at the mean random radius, the edge along it searched, and the direction
found again at that edge and searched once more (`rounds`), so the direction is worst at about the radius reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..stats import DEFAULT_CONFIDENCE, check_confidence, t_interval
from .search import find_edge, no_edge_error, positive_finite

if TYPE_CHECKING:
    from ..probe import LandscapeProbe


@dataclass
class BasinResult:
    """Basin sizes along random and worst-case directions.

    Args:
        metric: `"loss"` (the radius where the loss rises by `drop`) or a metric name (where it falls by `drop`).
        drop: the worsening at the edge.
        centre: the loss (or metric) at the weights.
        random_radii: the edge along each random direction, in the order of `seeds`.
        random_mean, random_interval: their mean and its t-interval (`confidence`; NaN for one seed).
        worst_radius: the edge along the worst-case direction (None when `adversarial=False`).
        worst_rounds: the radius after each round of the worst-case search.
        ratio: `random_mean / worst_radius`, how much wider the most-case basin is than the worst-case one.
    """

    metric: str = "loss"
    drop: float = 1.0
    centre: float = math.nan
    seeds: list[int] = field(default_factory=list)
    random_radii: list[float] = field(default_factory=list)
    random_mean: float = math.nan
    random_interval: list[float] = field(default_factory=list)
    confidence: float = DEFAULT_CONFIDENCE
    directions: str = "random"
    normalization: str = "filter"
    worst_radius: float | None = None
    worst_rounds: list[float] = field(default_factory=list)
    ratio: float | None = None
    evaluations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-safe values."""
        return asdict(self)


def basin_sizes(
    probe: LandscapeProbe,
    *,
    metric: str,
    drop: float,
    seeds: list[int],
    directions: str,
    normalization: str,
    adversarial: bool,
    rounds: int,
    max_radius: float,
    confidence: float,
    adversarial_options: dict[str, Any],
) -> BasinResult:
    """`probe.basin` (see the module docstring)."""
    from ..directions.adversarial import AdversarialDirectionConfig
    from ..directions.random import RandomDirectionConfig
    from ..objectives.loss import require_differentiable

    drop = positive_finite("drop", drop)
    max_radius = positive_finite("max_radius", max_radius)
    confidence = check_confidence(confidence)
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"`metric` must be 'loss' or a metric name, got {metric!r}.")
    if (
        not seeds
        or len(set(seeds)) != len(seeds)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds)
    ):
        raise ConfigError(f"`seeds` must be distinct integers, at least one, got {seeds!r}.")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"`rounds` must be an integer >= 1, got {rounds!r}.")
    RandomDirectionConfig(normalization=normalization)  # checks it
    if directions not in ("random", "lora", "adapter"):
        raise ConfigError(f"`directions` must be 'random', 'lora' or 'adapter', got {directions!r}.")
    if directions == "adapter":  # the worst case among the adapter's weights too
        from ..directions.adapter import adapter_pattern

        adversarial_options = {"include": [adapter_pattern(probe.model, None)], "include_1d": True,
                               **adversarial_options}  # fmt: skip
    if adversarial:
        require_differentiable(probe.objective, "`basin(adversarial=True)`")
        AdversarialDirectionConfig(normalization=normalization, **adversarial_options)  # checks them before any work

    def value(evaluation: Any) -> float:
        if metric == "loss":
            return float(evaluation.loss)
        if metric not in evaluation.metrics:
            raise ConfigError(f"`metric` {metric!r} is not among the objective's metrics {sorted(evaluation.metrics)}.")
        return float(evaluation.metrics[metric])

    centre = value(probe.evaluate(details=False))
    sign = 1.0 if metric == "loss" else -1.0  # a loss rises, a metric falls
    evaluations = 1

    def edge_along(direction: Any, start: float, what: str) -> float:
        nonlocal evaluations
        with probe.runner.point_session([direction]) as at:
            edge = find_edge(
                lambda r: sign * (value(at((r,))) - centre), drop, start=start, max_radius=max_radius, tol=0.05
            )
        evaluations += len(edge.points)
        if not math.isfinite(edge.radius):
            raise no_edge_error(
                f"`basin`: along {what} the {metric} ({centre:.4g} at the weights)", drop, edge, max_radius,
                "pass a smaller `drop` or a larger `max_radius`.", change="rose" if metric == "loss" else "fell",
            )  # fmt: skip
        return edge.radius

    radii, start = [], 0.1
    for seed in seeds:
        (d,) = probe.directions(seed, axes=1, kind=directions, normalization=normalization)
        start = edge_along(d, start, f"the {directions} direction of seed {seed}")
        radii.append(start)
    mean = float(np.mean(radii))
    interval = list(t_interval(radii, confidence)) if len(radii) > 1 else [math.nan, math.nan]
    result = BasinResult(
        metric=metric, drop=drop, centre=centre, seeds=list(seeds), random_radii=radii, random_mean=mean,
        random_interval=interval, confidence=confidence, directions=directions, normalization=normalization,
    )  # fmt: skip
    if adversarial:
        radius = mean
        for _ in range(rounds):
            options = {"normalization": normalization, **adversarial_options, "radius": radius}
            (worst,) = probe.directions(seeds[0], axes=1, kind="adversarial", **options)
            radius = edge_along(worst, radius / 2, f"the worst-case direction (found at radius {options['radius']:g})")
            result.worst_rounds.append(radius)
        result.worst_radius = radius
        result.ratio = mean / radius
    result.evaluations = evaluations
    return result
