"""Critical sharpness (Kalra et al. 2026): the smallest step η along the gradient (or a given direction d) at which
the loss stops decreasing, L(θ − ηd) = L(θ), and λc = 2/ηc, from one gradient and a handful of forward passes
(`critical_sharpness`, `CriticalSharpnessResult`).

Along the line, φ(η) = L(θ − ηd) − L(θ) = −a·η + ½b·η² − ⅙c·η³ + …, with a = gᵀd, b = dᵀHd and c the third
derivative. So ψ(η) = φ(η)/η is −a at 0 (known from the gradient) and, for a quadratic, linear in η: its root is
ηc = 2a/b and λc = b/a, which for d = g is the Rayleigh quotient gᵀHg/‖g‖², the curvature gradient descent feels.
Beyond second order, λc = (b/a)(1 − cη₀/(3b) + O(η₀²)) with η₀ = 2a/b. The root of ψ is found by the secant method
from (0, −a) and then by Illinois false position on the bracket; a quadratic needs two forwards, a network a few.
The interval is the final bracket [η_low, η_high] (ψ < 0 at η_low, ψ >= 0 at η_high), as λ: [2/η_high, 2/η_low]:
a bound on the search's numerical error for this data, not a statistical interval.

Weights are moved only through `engine.editing`, which copies the saved originals back bit for bit however the call
ends. What does not live here: the Hessian-based measures (`eigen`, `trace`), ρ-sharpness (`sharpness`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import result_fields
from ..directions.base import Direction
from ..engine.editors import editing
from ..errors import ConfigError
from ..objectives.loss import loss_value, require_differentiable
from .blocks import role_partition
from .hvp import FlatParameters, check_int, check_positive, differentiable, grad_into, select
from .operators import check_centre

logger = logging.getLogger(__name__)


@dataclass
class CriticalSharpnessResult:
    """λc = 2/ηc along the gradient (or a given direction).

    Args:
        sharpness: λc = 2/ηc (0 when the loss still decreased at the longest step tried).
        eta: ηc, the step at which L(θ − ηd) returns to L(θ).
        interval: (2/η_high, 2/η_low) from the final bracket of the root.
        base_loss: L(θ).
        slope: a = gᵀd (‖g‖² along the gradient).
        direction: `"gradient"` or `"given"` (a given direction is followed downhill: its sign is flipped when gᵀd < 0).
        evaluations: `[η, L(θ − ηd) − L(θ)]` of every forward, in order.
        converged: the bracket reached `rtol`.
        per_block: role -> the result along the gradient restricted to that role's parameters (`per_block=True`).
    """

    sharpness: float
    eta: float
    interval: tuple[float, float]
    base_loss: float
    slope: float
    direction: str
    evaluations: list[list[float]]
    converged: bool
    per_block: dict[str, CriticalSharpnessResult] = field(default_factory=dict)

    @property
    def forwards(self) -> int:
        """Forward passes the search used (besides the one at θ and the gradient)."""
        return len(self.evaluations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sharpness": self.sharpness,
            "eta": self.eta,
            "interval": list(self.interval),
            "base_loss": self.base_loss,
            "slope": self.slope,
            "direction": self.direction,
            "evaluations": [list(map(float, e)) for e in self.evaluations],
            "converged": self.converged,
            "per_block": {name: r.to_dict() for name, r in self.per_block.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CriticalSharpnessResult:
        """The result `to_dict` describes."""
        names = ("sharpness", "eta", "interval", "base_loss", "slope", "direction", "evaluations", "converged")
        fields = result_fields(cls, data, (*names, "per_block"))
        fields["interval"] = (float(fields["interval"][0]), float(fields["interval"][1]))
        fields["per_block"] = {name: cls.from_dict(r) for name, r in fields["per_block"].items()}
        return cls(**fields)


def critical_sharpness(
    model: torch.nn.Module,
    objective: Any,
    *,
    direction: Direction | Mapping[str, torch.Tensor] | None = None,
    rtol: float = 1e-2,
    max_evaluations: int = 20,
    first_step: float = 1e-2,
    per_block: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    include_1d: bool = True,
    progress: bool = True,
) -> CriticalSharpnessResult:
    """The critical sharpness λc = 2/ηc at the model's weights (see the module docstring).

    Args:
        model: the model; its weights are restored bit for bit. Evaluated in eval mode.
        objective: a `CausalLMObjective`, `GlueObjective`, or callable `loss_fn(model) -> scalar tensor`.
        direction: the direction d to step along (name -> tensor, over the parameters it names; followed downhill);
            by default the gradient over the selected parameters.
        rtol: stop when the bracket of ηc is within a factor 1 + rtol (λc to about `rtol`).
        max_evaluations: forward passes at most per search.
        first_step: the first step moves the weights by `first_step`·max(‖θ‖, 1) in norm (a quadratic's answer
            does not depend on it).
        per_block: also the critical sharpness along the gradient restricted to each role's parameters
            (`blocks.ROLES`), in `per_block`.
        include, exclude, include_1d: which parameters the gradient is over (when no `direction` is given).
        progress: tqdm progress bar over the forward passes.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.curvature import critical_sharpness
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, 1.0]]))
    >>> scales = torch.tensor([1.0, 3.0])                      # H = diag(1, 3), g = (1, 3): gᵀHg/‖g‖² = 2.8
    >>> r = critical_sharpness(model, lambda m: 0.5 * (scales * m.weight[0] ** 2).sum(), progress=False)
    >>> round(r.sharpness, 6), r.forwards
    (2.8, 3)

    ```
    """
    require_differentiable(objective, "`critical_sharpness`")
    rtol = check_positive("rtol", rtol)
    check_int("max_evaluations", max_evaluations, 2)
    first_step = check_positive("first_step", first_step)
    if not isinstance(per_block, bool):
        raise ConfigError(f"`per_block` must be True or False, got {per_block!r}.")
    all_params = dict(model.named_parameters())
    if direction is None:
        params = select(model, include, exclude, include_1d)
    else:
        if per_block:
            raise ConfigError("`per_block=True` follows the gradient; pass either `direction` or `per_block=True`.")
        given = dict(direction.tensors if isinstance(direction, Direction) else direction)
        Direction(given).check_fits(all_params, argument="direction")
        params = {n: all_params[n] for n in all_params if n in given}
    flat = FlatParameters(params)
    partition = role_partition(flat, model) if per_block else None
    base = check_centre(model, objective)
    with differentiable(model, flat.params):
        g = grad_into(model, objective, flat)
    if direction is None:
        d, label = g, "gradient"
    else:
        d = torch.cat([given[n].detach().to(flat.device, flat.dtype).reshape(-1) for n in flat.names])
        label = "given"
    options: dict[str, Any] = {"base": base, "rtol": rtol, "max_evaluations": max_evaluations, "first_step": first_step}
    with editing(model, params) as editor:
        theta_norm = max(math.sqrt(sum(float(torch.linalg.vector_norm(o)) ** 2 for o in editor.originals)), 1.0)
        search = _Search(model, objective, editor, flat, theta_norm, progress, **options)
        result = search.run(g, d, label)
        if partition is not None:
            for name in partition.groups:
                result.per_block[name] = search.run(g, partition.mask(name, g), "gradient")
    logger.info("critical sharpness: %.6g in [%.6g, %.6g]", result.sharpness, *result.interval)
    return result


class _Search:
    """The root of ψ(η) = (L(θ − ηd) − L(θ))/η along one direction at a time."""

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Any,
        editor: Any,
        flat: FlatParameters,
        theta_norm: float,
        progress: bool,
        *,
        base: float,
        rtol: float,
        max_evaluations: int,
        first_step: float,
    ) -> None:
        self.model, self.objective, self.editor, self.flat = model, objective, editor, flat
        self.theta_norm, self.progress, self.base = theta_norm, progress, base
        self.rtol, self.max_evaluations, self.first_step = rtol, max_evaluations, first_step

    def run(self, g: torch.Tensor, d: torch.Tensor, label: str) -> CriticalSharpnessResult:
        a = float(torch.dot(g.double(), d.double()))
        if a < 0:
            d, a = -d, -a
        norm = float(torch.linalg.vector_norm(d))
        evaluations: list[list[float]] = []
        if a == 0.0 or norm == 0.0:
            logger.warning("the slope along the direction is 0 (a critical point): critical sharpness is undefined.")
            return self._result(math.nan, (math.nan, math.nan), a, label, evaluations, False)
        steps = self.flat.as_params(d)
        points = [(0.0, -a)]  # (η, ψ(η)); ψ(0) = −a from the gradient
        bar = tqdm(
            total=self.max_evaluations, desc="critical sharpness", unit="fwd", disable=not self.progress, leave=False
        )
        try:
            eta = self.first_step * self.theta_norm / norm
            while True:
                self.editor.set_linear((-eta,), [steps])
                value = loss_value(self.model, self.objective) - self.base
                evaluations.append([eta, value])
                bar.update(1)
                points.append((eta, value / eta if math.isfinite(value) else math.inf))
                low, high = _bracket(points)
                closed = high is not None and low[0] > 0 and high[0] <= low[0] * (1.0 + self.rtol)
                if closed or len(evaluations) >= self.max_evaluations:
                    break
                eta = self._next(points, low, high)
        finally:
            bar.close()
            self.editor.restore()
        if high is None:
            logger.warning(
                "the loss still decreased at the longest step tried (η = %.3g): λc < %.3g.", low[0], 2 / low[0]
            )
            return self._result(0.0, (0.0, 2.0 / low[0]), a, label, evaluations, False)
        eta_c = _interpolate(low, high)
        interval = (2.0 / high[0], 2.0 / low[0] if low[0] > 0 else math.inf)
        if not closed:
            logger.warning(
                "the critical step was not bracketed within rtol=%g in %d forwards.", self.rtol, len(evaluations)
            )
        return self._result(2.0 / eta_c, interval, a, label, evaluations, closed, eta_c)

    def _next(
        self, points: list[tuple[float, float]], low: tuple[float, float], high: tuple[float, float] | None
    ) -> float:
        """The next step. Before the root is bracketed: the secant through the two longest steps below it, but at
        least 2^k times the longest step after k misses in a row. Once bracketed: false position, moved by ±rtol/2.5
        towards the side the bracket lacks (so that a good estimate closes the bracket at the next step), or the
        geometric midpoint when the last step did not halve the bracket's width in log η."""
        delta = self.rtol / 2.5
        if high is None:
            below = sorted(p for p in points if p[1] < 0)
            (e0, f0), (e1, f1) = below[-2:]
            misses = sum(1 for p in points[1:] if p[1] < 0)
            slope = (f1 - f0) / (e1 - e0)
            root = e1 - f1 / slope if slope > 0 else math.inf
            return min(max(root * (1.0 + delta), 2.0 ** min(misses, 10) * e1), 1e4 * e1)
        root = _interpolate(low, high)
        widths = [_log_width(*_bracket(points[:k])) for k in range(2, len(points) + 1)]
        if len(widths) >= 2 and math.isfinite(widths[-2]) and widths[-1] > 0.5 * widths[-2]:
            return math.sqrt(low[0] * high[0]) if low[0] > 0 else 0.5 * high[0]  # false position stalled: bisect
        eta = root * (1.0 - delta) if root - low[0] > high[0] - root else root * (1.0 + delta)
        return eta if low[0] < eta < high[0] else 0.5 * (low[0] + high[0])

    def _result(
        self,
        sharpness: float,
        interval: tuple[float, float],
        a: float,
        label: str,
        evaluations: list[list[float]],
        converged: bool,
        eta: float = math.nan,
    ) -> CriticalSharpnessResult:
        return CriticalSharpnessResult(
            sharpness=sharpness,
            eta=eta if math.isfinite(eta) else (2.0 / sharpness if sharpness else math.inf),
            interval=interval,
            base_loss=self.base,
            slope=a,
            direction=label,
            evaluations=evaluations,
            converged=converged,
        )


def _bracket(points: list[tuple[float, float]]) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """(the point with ψ >= 0 of smallest η, or None; the point with ψ < 0 of largest η below it)."""
    above = [p for p in points if not p[1] < 0]
    high = min(above) if above else None
    low = max(p for p in points if p[1] < 0 and (high is None or p[0] < high[0]))
    return low, high


def _log_width(low: tuple[float, float], high: tuple[float, float] | None) -> float:
    return math.log(high[0] / low[0]) if high is not None and low[0] > 0 else math.inf


def _interpolate(low: tuple[float, float], high: tuple[float, float]) -> float:
    """The root of the line through (η_low, ψ_low) and (η_high, ψ_high); the midpoint when ψ_high is not finite."""
    if not math.isfinite(high[1]):
        return 0.5 * (low[0] + high[0])
    return low[0] - low[1] * (high[0] - low[0]) / (high[1] - low[1])
