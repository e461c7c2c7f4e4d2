"""PAC-Bayes sharpness (Jiang, Neyshabur, Mobahi, Krishnan & Bengio 2020, "Fantastic generalization measures and where
to find them", §C.2 and C.3): the largest σ for which Gaussian weight noise raises the expected loss by at most a
target, E_u[L(θ + u)] − L(θ) ≤ target with u ~ N(0, σ²I), or, magnitude-aware, u ~ N(0, σ²·diag((|θ| + η)²)).
Jiang et al. found 1/σ² (their "PAC-Bayes flatness", in the bound's KL term ‖θ‖²/σ²) among the measures that best
predict generalization.

σ is found by bisection on log σ with Monte Carlo: the same `samples` noise draws z₁ … z_M (common random numbers,
drawn per (seed, draw, parameter name)) at every σ, so the mean rise r̄(σ) = mean_i L(θ + σ·s⊙zᵢ) − L(θ) is a smooth
function of σ. Three crossings are bracketed from one set of evaluations: r̄(σ) = target gives σ, and the crossings of
the Student-t bounds r̄ ± t·se give the interval (the upper bound crosses first, at the interval's low end). A loss
that turns NaN or inf counts as a rise above the target.

Weights are moved only through `engine.editing`, which copies the saved originals back bit for bit however the call
ends. What does not live here: the ρ-sharpness kinds (`sharpness`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import BaseConfig, check_choice, check_patterns, result_fields
from ..engine.editors import editing
from ..errors import ConfigError
from ..objectives.loss import loss_value
from ..stats import DEFAULT_CONFIDENCE, check_confidence, t_quantile
from .hvp import check_int, check_positive, select
from .operators import check_centre
from .sharpness import _gaussian, _norm, _set_perturbation

logger = logging.getLogger(__name__)

PAC_BAYES_KINDS = ("pac_bayes", "pac_bayes_magnitude")
# Each search step multiplies or divides σ by this until the crossings are bracketed, at most `MAX_DECADES` times.
GROWTH = 10.0
MAX_DECADES = 24


@dataclass
class PacBayesConfig(BaseConfig):
    """Options of `pac_bayes_sharpness`.

    Args:
        target (`float`, defaults to 0.1): the rise of the expected loss allowed (Jiang et al. use 0.1 of the
            training loss' deviation); must be > 0.
        kind (`str`, defaults to `"pac_bayes"`): `"pac_bayes"`: u ~ N(0, σ²I); `"pac_bayes_magnitude"`: each weight's
            noise scaled by its magnitude, u ~ N(0, σ²(|θ| + eta)²), invariant to rescaling a layer's weights.
        samples (`int`, defaults to 8): noise draws at each σ (the same draws at every σ); the interval is over them.
        rtol (`float`, defaults to 0.02): stop when each crossing is bracketed within a factor 1 + rtol.
        eta (`float`, defaults to 0.0): added to |θ| in the magnitude-aware kind, so that zero weights get noise too.
        sigma_start (`float`, *optional*): the first σ tried (default 1e-3 for the magnitude-aware kind, 1e-3 · the
            root mean square of the weights otherwise); the search widens from there.
        max_evaluations (`int`, defaults to 60): σ values evaluated at most (each `samples` forward passes).
        include, exclude (`list[str]`, *optional*): regular expressions on the parameters to perturb.
        include_1d (`bool`, defaults to `True`): perturb biases and norm weights too.
        seed (`int`, defaults to 0): the noise draws.
        confidence (`float`, defaults to 0.95): the level of the interval.
    """

    target: float = field(default=0.1, metadata={"help": "rise of the expected loss allowed"})
    kind: str = field(default="pac_bayes", metadata={"help": "pac_bayes or pac_bayes_magnitude"})
    samples: int = field(default=8, metadata={"help": "noise draws per sigma"})
    rtol: float = field(default=0.02, metadata={"help": "relative bracket width at which to stop"})
    eta: float = field(default=0.0, metadata={"help": "magnitude offset: noise scale |theta| + eta"})
    sigma_start: float | None = field(default=None, metadata={"help": "first sigma tried"})
    max_evaluations: int = field(default=60, metadata={"help": "sigma values evaluated at most"})
    include: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to perturb"})
    exclude: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to leave alone"})
    include_1d: bool = field(default=True, metadata={"help": "perturb biases and norm weights too"})
    seed: int = field(default=0, metadata={"help": "noise draws"})
    confidence: float = field(default=DEFAULT_CONFIDENCE, metadata={"help": "level of the interval"})

    def __post_init__(self) -> None:
        ok = isinstance(self.target, (int, float)) and not isinstance(self.target, bool)
        if not ok or not math.isfinite(self.target) or self.target <= 0:
            raise ConfigError(
                f"`target` must be a finite rise of the loss > 0 (e.g. 0.1), got {self.target!r}: the loss at the "
                "weights themselves already rises by 0."
            )
        self.target = float(self.target)
        check_choice("kind", self.kind, PAC_BAYES_KINDS)
        check_int("samples", self.samples, 2)
        self.rtol = check_positive("rtol", self.rtol)
        self.eta = check_positive("eta", self.eta, allow_zero=True)
        if self.sigma_start is not None:
            self.sigma_start = check_positive("sigma_start", self.sigma_start)
        check_int("max_evaluations", self.max_evaluations, 3)
        inc, exc = check_patterns("include", self.include), check_patterns("exclude", self.exclude)
        self.include = list(inc) if inc is not None else None
        self.exclude = list(exc) if exc is not None else None
        if not isinstance(self.include_1d, bool):
            raise ConfigError(f"`include_1d` must be True or False, got {self.include_1d!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"`seed` must be an integer, got {self.seed!r}.")
        self.confidence = check_confidence(self.confidence)


@dataclass
class PacBayesResult:
    """A PAC-Bayes sharpness measurement.

    Args:
        sigma: the σ at which the mean rise over the draws meets the target (within `rtol`).
        interval: (σ_low, σ_high): where the upper and lower `confidence` bounds of the mean rise (Student-t over
            the draws) meet the target.
        target, kind: as asked.
        base_loss: L(θ).
        rise, rise_stderr: the mean rise at the evaluated σ nearest `sigma`, and its standard error.
        evaluations: `[σ, mean rise, standard error]` of every σ evaluated, in order.
        converged: every crossing was bracketed within `rtol`.
        config: the full `PacBayesConfig` as a dict.
    """

    sigma: float
    interval: tuple[float, float]
    target: float
    kind: str
    base_loss: float
    rise: float
    rise_stderr: float
    evaluations: list[list[float]]
    converged: bool
    config: dict[str, Any]

    @property
    def flatness(self) -> float:
        """1/σ², the PAC-Bayes flatness measure of Jiang et al. (2020): larger is sharper."""
        return 1.0 / self.sigma**2 if self.sigma > 0 else math.inf

    @property
    def flatness_interval(self) -> tuple[float, float]:
        """(1/σ_high², 1/σ_low²)."""
        low, high = self.interval
        return (1.0 / high**2 if high > 0 else math.inf, 1.0 / low**2 if low > 0 else math.inf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "interval": list(self.interval),
            "flatness": self.flatness,
            "flatness_interval": list(self.flatness_interval),
            "target": self.target,
            "kind": self.kind,
            "base_loss": self.base_loss,
            "rise": self.rise,
            "rise_stderr": self.rise_stderr,
            "evaluations": [list(map(float, e)) for e in self.evaluations],
            "converged": self.converged,
            "config": dict(self.config),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PacBayesResult:
        """The result `to_dict` describes."""
        names = ("sigma", "interval", "target", "kind", "base_loss", "rise", "rise_stderr", "evaluations")
        fields = result_fields(cls, data, (*names, "converged", "config"))
        fields["interval"] = (float(fields["interval"][0]), float(fields["interval"][1]))
        return cls(**fields)


def pac_bayes_sharpness(
    model: torch.nn.Module,
    objective: Any,
    config: PacBayesConfig | None = None,
    *,
    progress: bool = True,
    **config_kwargs: Any,
) -> PacBayesResult:
    """The largest σ for which N(0, σ²) weight noise (or magnitude-scaled noise) raises the expected loss by at most
    `target`, with its interval (see the module docstring); the weights are restored bit for bit.

    Args:
        model: the model.
        objective: any objective (only forward passes), or a callable `loss_fn(model) -> scalar tensor`.
        config: a `PacBayesConfig`, or its fields as keyword arguments (`target=0.1, kind="pac_bayes"`, ...).
        progress: tqdm progress bar over the σ values.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.curvature import pac_bayes_sharpness
    >>> model = torch.nn.Linear(1000, 1, bias=False)
    >>> _ = torch.nn.init.zeros_(model.weight)                  # L = ‖θ‖²: E[L(θ + u)] − L(θ) = 1000·σ²
    >>> r = pac_bayes_sharpness(model, lambda m: (m.weight**2).sum(), target=0.1, samples=4, progress=False)
    >>> round(r.sigma, 2)                                       # √(0.1 / 1000)
    0.01

    ```
    """
    if config is None:
        config = PacBayesConfig(**config_kwargs)
    elif not isinstance(config, PacBayesConfig):
        raise ConfigError(f"`config` must be a PacBayesConfig, got {type(config).__name__}.")
    elif config_kwargs:
        raise ConfigError(f"Pass either `config` or PAC-Bayes options {sorted(config_kwargs)}, not both.")
    params = select(model, config.include, config.exclude, config.include_1d)
    names = list(params)
    base = check_centre(model, objective)
    t = t_quantile(config.confidence, config.samples - 1)
    evaluations: list[list[float]] = []
    bar = tqdm(total=config.max_evaluations, desc=f"{config.kind} sharpness", unit="sigma", disable=not progress)
    try:
        with editing(model, params) as editor:
            work = [o.to(torch.promote_types(o.dtype, torch.float32)) for o in editor.originals]
            scale = [o.abs() + config.eta for o in work] if config.kind == "pac_bayes_magnitude" else None

            def evaluate(sigma: float) -> None:
                rises = np.empty(config.samples)
                for i in range(config.samples):
                    z = _gaussian(config.seed, i, names, work)
                    eps = [sigma * zi for zi in z] if scale is None else [sigma * s * zi for s, zi in zip(scale, z)]
                    _set_perturbation(editor, eps)
                    value = loss_value(model, objective) - base
                    rises[i] = value if math.isfinite(value) else math.inf
                mean = float(rises.mean()) if np.all(np.isfinite(rises)) else math.inf
                stderr = float(rises.std(ddof=1) / math.sqrt(len(rises))) if math.isfinite(mean) else math.inf
                evaluations.append([sigma, mean, stderr])
                bar.update(1)

            start = config.sigma_start or (1e-3 if scale is not None else 1e-3 * _rms(work))
            converged = _search(evaluate, evaluations, start, config, t)
    finally:
        bar.close()
    sigma, low, high = (_crossing(evaluations, config.target, t, c) for c in (0.0, 1.0, -1.0))
    nearest = min(evaluations, key=lambda e: abs(math.log(e[0] / sigma)) if sigma > 0 else e[0])
    result = PacBayesResult(
        sigma=sigma,
        interval=(low, high),
        target=config.target,
        kind=config.kind,
        base_loss=base,
        rise=nearest[1],
        rise_stderr=nearest[2],
        evaluations=evaluations,
        converged=converged,
        config=config.to_dict(),
    )
    if not converged:
        logger.warning(
            "PAC-Bayes search stopped after %d evaluations before bracketing every crossing within rtol=%g; raise "
            "`max_evaluations`.",
            len(evaluations),
            config.rtol,
        )
    logger.info("%s: sigma = %.4g, interval (%.4g, %.4g)", config.kind, sigma, low, high)
    return result


def _rms(tensors: list[torch.Tensor]) -> float:
    count = sum(t.numel() for t in tensors)
    return (_norm(tensors) / math.sqrt(count)) or 1.0


def _brackets(evaluations: list[list[float]], target: float, t: float) -> list[tuple[float, float] | None]:
    """For each statistic (mean + c·t·se, c = +1, 0, −1): (the largest σ below the smallest σ that exceeds the target
    at which it does not exceed it, that smallest σ), or None while a side is missing."""
    out: list[tuple[float, float] | None] = []
    for c in (1.0, 0.0, -1.0):
        over = [e[0] for e in evaluations if not e[1] + c * t * e[2] <= target]
        high = min(over) if over else None
        under = [e[0] for e in evaluations if e[1] + c * t * e[2] <= target and (high is None or e[0] < high)]
        out.append((max(under), high) if under and high is not None else None)
    return out


def _search(evaluate: Any, evaluations: list[list[float]], start: float, config: PacBayesConfig, t: float) -> bool:
    """Evaluate σ values (`evaluate(σ)` appends [σ, mean rise, stderr] to `evaluations`) until the three crossings
    are bracketed within `rtol`; True if they were."""
    run = evaluate
    run(start)
    for _ in range(MAX_DECADES):  # down until even the upper bound is under the target
        bottom = min(evaluations, key=lambda e: e[0])
        if bottom[1] + t * bottom[2] <= config.target:
            break
        run(bottom[0] / GROWTH)
    for _ in range(MAX_DECADES):  # up until even the lower bound is over it
        top = max(evaluations, key=lambda e: e[0])
        if not top[1] - t * top[2] <= config.target:
            break
        run(top[0] * GROWTH)
    while len(evaluations) < config.max_evaluations:
        brackets = _brackets(evaluations, config.target, t)
        bounded = [b for b in brackets if b is not None]
        if len(bounded) < len(brackets):
            return False
        widest = max(bounded, key=lambda b: b[1] / b[0])
        if widest[1] / widest[0] <= 1.0 + config.rtol:
            return True
        run(math.sqrt(widest[0] * widest[1]))
    return False


def _crossing(evaluations: list[list[float]], target: float, t: float, c: float) -> float:
    """Where mean + c·t·se meets the target: interpolated in log σ between the two evaluations bracketing it (the
    smallest σ over the target when nothing is under it, 0; inf when nothing is over it)."""
    over = sorted((e for e in evaluations if not e[1] + c * t * e[2] <= target), key=lambda e: e[0])
    if not over:
        return math.inf
    high = over[0]
    under = [e for e in evaluations if e[0] < high[0] and e[1] + c * t * e[2] <= target]
    if not under:
        return 0.0
    low = max(under, key=lambda e: e[0])
    f_low, f_high = low[1] + c * t * low[2] - target, high[1] + c * t * high[2] - target
    if not math.isfinite(f_high):
        return math.sqrt(low[0] * high[0])
    w = -f_low / (f_high - f_low) if f_high != f_low else 0.5
    return float(math.exp(math.log(low[0]) + w * (math.log(high[0]) - math.log(low[0]))))
