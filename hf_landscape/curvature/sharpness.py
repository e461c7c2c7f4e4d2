"""ρ-sharpness at the model's weights: worst-case and average, plain or adaptive (scale-invariant), as in SAM (Foret
et al. 2021), ASAM (Kwon et al. 2021) and Andriushchenko et al. 2023, "A modern look at the relationship between
sharpness and generalization" (`SharpnessConfig`, `SharpnessResult`, `sharpness`).

Weights are moved only through `engine.editing`, which copies the saved originals back bit for bit however the call
ends.
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
from ..directions.random import seed_for
from ..engine.editors import editing
from ..errors import ConfigError
from ..objectives.base import evaluate as evaluate_objective
from ..objectives.loss import is_loss_fn, loss_value, require_differentiable
from ..stats import DEFAULT_CONFIDENCE, check_confidence, ratio_interval, t_interval
from .hvp import FlatParameters, check_int, check_positive, differentiable, grad_into, select

logger = logging.getLogger(__name__)

SHARPNESS_KINDS = ("worst", "average", "adaptive", "adaptive_average")


# (per-example loss sums, token counts), or None when the objective gives no per-example losses
_Terms = tuple[np.ndarray, np.ndarray] | None


@dataclass
class SharpnessConfig(BaseConfig):
    """Options of `sharpness`.

    Args:
        rho (`float`, defaults to 0.05): ρ, the radius of the perturbation ball (‖ε‖₂ ≤ ρ; for the adaptive
            kinds ‖ε / (|θ| + eta)‖₂ ≤ ρ, elementwise).
        kind (`str`, defaults to `"adaptive"`):
            `"worst"`: max over the ball of L(θ + ε) − L(θ), by `steps` of projected normalized gradient ascent
            (the first step is SAM's ε = ρ·g/‖g‖, Foret et al. 2021);
            `"adaptive"`: the same over the elementwise-scaled ball ε = (|θ| + eta)⊙δ, ‖δ‖₂ ≤ ρ (ASAM, Kwon et
            al. 2021; the first step is ε = ρ·T²g/‖Tg‖ with T = |θ| + eta), invariant to rescaling weights;
            `"average"`: E[L(θ + ε)] − L(θ) with ε uniform on the sphere ‖ε‖₂ = ρ (a Gaussian scaled to norm ρ),
            over `samples` draws, with a standard error;
            `"adaptive_average"`: the same with ε = (|θ| + eta)⊙δ, δ uniform on the sphere of radius ρ.
            Andriushchenko et al. (2023) compare all four.
        steps (`int`, defaults to 10): gradient-ascent steps of the worst-case kinds (each one gradient and
            one loss evaluation over the whole evaluation set).
        step_size (`float`, *optional*): length of each normalized ascent step in δ-space, default ρ (so the
            first step lands on SAM's point; later ones move along the sphere, and the best point is kept).
        samples (`int`, defaults to 16): draws of the average kinds (each one loss evaluation).
        eta (`float`, defaults to 0.0): added to |θ| in the adaptive kinds, so that zero weights can move
            (ASAM uses 0.01; Andriushchenko et al. use 0).
        include (`list[str]`, *optional*): regular expressions; only matching parameters are perturbed.
        exclude (`list[str]`, *optional*): regular expressions; matching parameters are left alone.
        include_1d (`bool`, defaults to `True`): perturb biases and norm weights too.
        seed (`int`, defaults to 0): the draws of the average kinds.
        confidence (`float`, defaults to 0.95): the level of the result's `interval`: over the draws for the
            average kinds; over the evaluation examples, at the perturbation found, for the worst-case kinds.

    Example:
    ```python
    >>> from hf_landscape.sharpness import SharpnessConfig
    >>> SharpnessConfig(rho=0.1, kind="worst").steps
    10

    ```
    """

    rho: float = field(default=0.05, metadata={"help": "radius of the perturbation ball"})
    kind: str = field(default="adaptive", metadata={"help": "worst, average, adaptive or adaptive_average"})
    steps: int = field(default=10, metadata={"help": "gradient-ascent steps (worst-case kinds)"})
    step_size: float | None = field(default=None, metadata={"help": "ascent step length, default rho"})
    samples: int = field(default=16, metadata={"help": "random draws (average kinds)"})
    eta: float = field(default=0.0, metadata={"help": "adaptive scale offset: T = |theta| + eta"})
    include: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to perturb"})
    exclude: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to leave alone"})
    include_1d: bool = field(default=True, metadata={"help": "perturb biases and norm weights too"})
    seed: int = field(default=0, metadata={"help": "draws of the average kinds"})
    confidence: float = field(default=DEFAULT_CONFIDENCE, metadata={"help": "level of the confidence interval"})

    def __post_init__(self) -> None:
        self.confidence = check_confidence(self.confidence)
        self.rho = check_positive("rho", self.rho)
        check_choice("kind", self.kind, SHARPNESS_KINDS)
        check_int("steps", self.steps, 1)
        check_int("samples", self.samples, 2)
        if self.step_size is not None:
            self.step_size = check_positive("step_size", self.step_size)
        self.eta = check_positive("eta", self.eta, allow_zero=True)
        inc = check_patterns("include", self.include)
        exc = check_patterns("exclude", self.exclude)
        self.include = list(inc) if inc is not None else None
        self.exclude = list(exc) if exc is not None else None
        if not isinstance(self.include_1d, bool):
            raise ConfigError(f"`include_1d` must be True or False, got {self.include_1d!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"`seed` must be an integer, got {self.seed!r}.")

    @property
    def adaptive(self) -> bool:
        return self.kind in ("adaptive", "adaptive_average")

    @property
    def worst_case(self) -> bool:
        return self.kind in ("worst", "adaptive")


@dataclass
class SharpnessResult:
    """A sharpness measurement.

    Args:
        sharpness: worst case: max over the points visited (θ itself included) of L(θ + ε) − L(θ);
            average: the mean of L(θ + ε) − L(θ) over the draws.
        stderr: standard error of the mean (average kinds); None for the worst-case kinds.
        base_loss: L(θ).
        losses: L(θ + ε) at each ascent step or each draw.
        kind, rho: as asked.
        config: the full `SharpnessConfig` as a dict.
        interval: the `config["confidence"]` confidence interval of `sharpness`, (NaN, NaN) when it cannot be
            had (a callable `loss_fn` gives no per-example losses).
        interval_over: what the interval is over: `"draws"` (average kinds: the Student-t interval over the
            random perturbations) or `"examples"` (worst-case kinds: the perturbation found is kept fixed and the
            per-example loss increases are resampled, the delta-method interval of a ratio of sums over examples,
            see `stats.ratio_interval`; it does not include the ascent's own dependence on the data).
    """

    sharpness: float
    stderr: float | None
    base_loss: float
    losses: np.ndarray
    kind: str
    rho: float
    config: dict[str, Any]
    interval: tuple[float, float] = (math.nan, math.nan)
    interval_over: str = "draws"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sharpness": self.sharpness,
            "stderr": self.stderr,
            "interval": list(self.interval),
            "interval_over": self.interval_over,
            "base_loss": self.base_loss,
            "losses": [float(x) for x in self.losses],
            "kind": self.kind,
            "rho": self.rho,
            "config": dict(self.config),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharpnessResult:
        """The result `to_dict` describes."""
        names = ("sharpness", "stderr", "base_loss", "losses", "kind", "rho", "config", "interval", "interval_over")
        fields = result_fields(cls, data, names)
        fields["losses"] = np.asarray(fields["losses"], dtype=np.float64)
        fields["interval"] = (float(fields["interval"][0]), float(fields["interval"][1]))
        return cls(**fields)


def sharpness(
    model: torch.nn.Module,
    objective: Any,
    config: SharpnessConfig | None = None,
    *,
    progress: bool = True,
    **config_kwargs: Any,
) -> SharpnessResult:
    """ρ-sharpness of the objective at the model's weights (see `SharpnessConfig` for the kinds).

    The weights are moved in place and copied back bit for bit from saved originals however the call ends
    (`engine.editing`); the model runs in eval mode and its train/eval mode is restored.

    Args:
        model: the model.
        objective: a `CausalLMObjective`, `GlueObjective`, or callable `loss_fn(model) -> scalar tensor`.
        config: a `SharpnessConfig`, or its fields as keyword arguments (`rho=0.05, kind="adaptive"`, ...).
        progress: tqdm progress bar.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.sharpness import sharpness
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0]]))
    >>> loss_fn = lambda m: (m.weight**2).sum()          # g = (2, 0): SAM's ε = (ρ, 0)
    >>> r = sharpness(model, loss_fn, rho=0.5, kind="worst", steps=1, progress=False)
    >>> r.sharpness                                      # (1.5² − 1²)
    1.25

    ```
    """
    if config is None:
        config = SharpnessConfig(**config_kwargs)
    elif not isinstance(config, SharpnessConfig):
        raise ConfigError(f"`config` must be a SharpnessConfig, got {type(config).__name__}.")
    elif config_kwargs:
        raise ConfigError(f"Pass either `config` or sharpness options {sorted(config_kwargs)}, not both.")
    if config.worst_case:  # the ascent follows gradients; the average kinds only evaluate
        require_differentiable(objective, f"Sharpness of kind {config.kind!r}")
    params = select(model, config.include, config.exclude, config.include_1d)
    names, plist = list(params), list(params.values())
    with editing(model, params) as editor:
        base, base_terms, masks = _measure(model, objective, None)
        # Work in float32 (float64 for a float64 model); perturbations are cast to each parameter's dtype.
        work = [o.to(torch.promote_types(o.dtype, torch.float32)) for o in editor.originals]
        scale = [o.abs() + config.eta for o in work] if config.adaptive else None
        if config.worst_case:
            losses, best_terms = _ascend(
                model, objective, editor, dict(zip(names, plist)), work, scale, config, progress, masks
            )
            # θ itself (ε = 0) is in the ball, so the maximum is at least 0.
            value, stderr = max([0.0, *(losses - base).tolist()]), None
            interval, over = _examples_interval(value, base_terms, best_terms, config.confidence), "examples"
        else:
            losses = _average(model, objective, editor, names, work, scale, config, progress)
            diffs = losses - base
            value, stderr = float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(len(diffs)))
            interval, over = t_interval(diffs, config.confidence), "draws"
    logger.info(
        "%s sharpness (rho=%g): %.6g, %g%% interval %s",
        config.kind,
        config.rho,
        value,
        100 * config.confidence,
        interval,
    )
    return SharpnessResult(
        sharpness=value,
        stderr=stderr,
        base_loss=base,
        losses=losses,
        kind=config.kind,
        rho=config.rho,
        config=config.to_dict(),
        interval=interval,
        interval_over=over,
    )


def _measure(
    model: torch.nn.Module, objective: Any, masks: list[np.ndarray] | None
) -> tuple[float, _Terms, list[np.ndarray] | None]:
    """The loss at the weights as they stand and, when the objective gives them, its per-example terms: each
    example's sum of token losses and its number of tokens (GLUE: its loss and 1), so that the loss is
    Σ sums / Σ counts; and the token masks used. `masks` (None at the base point) fixes which tokens count,
    so a token whose loss turns NaN at a far point makes its example's sum NaN rather than vanish."""
    if is_loss_fn(objective):
        return loss_value(model, objective), None, None
    evaluation = evaluate_objective(model, objective, details=True)
    if evaluation.token_losses is not None:
        if masks is None:
            masks = [np.isfinite(t) for t in evaluation.token_losses]
        sums = np.array([float(np.sum(t[m])) for t, m in zip(evaluation.token_losses, masks)])
        return evaluation.loss, (sums, np.array([float(m.sum()) for m in masks])), masks
    if evaluation.sequence_losses is not None:
        sums = np.asarray(evaluation.sequence_losses, dtype=np.float64)
        return evaluation.loss, (sums, np.ones_like(sums)), None
    return evaluation.loss, None, None


def _examples_interval(value: float, base: _Terms, best: _Terms, confidence: float) -> tuple[float, float]:
    """The ratio interval of Σ(sᵢ(θ + ε) − sᵢ(θ)) / Σcᵢ over the examples, at the best ε found; (0, 0) when the
    best point is θ itself, (NaN, NaN) without per-example terms."""
    if value == 0.0:
        return (0.0, 0.0)
    if base is None or best is None:
        return (math.nan, math.nan)
    keep = base[1] > 0
    _, interval = ratio_interval(best[0][keep] - base[0][keep], base[1][keep], confidence)
    return interval


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _set_perturbation(editor: Any, eps: list[torch.Tensor]) -> None:
    """θ = θ₀ + ε, from the saved original (never accumulated)."""
    editor.set_linear((1.0,), [[e.to(p.device, p.dtype) for e, p in zip(eps, editor.params)]])


def _ascend(
    model: torch.nn.Module,
    objective: Any,
    editor: Any,
    named: dict[str, torch.nn.Parameter],
    work: list[torch.Tensor],
    scale: list[torch.Tensor] | None,
    config: SharpnessConfig,
    progress: bool,
    masks: list[np.ndarray] | None,
) -> tuple[np.ndarray, _Terms]:
    """Projected normalized gradient ascent in δ, with ε = T⊙δ (T = 1, or |θ| + eta for ASAM), ‖δ‖ ≤ ρ.
    Returns the loss after each step and the per-example terms (see `_measure`) of the highest one.

    At a critical point (∇L = 0, where SAM's ε is undefined) the first step goes along a random direction
    drawn from `config.seed`, so the ascent can still climb the curvature.
    """
    params = list(named.values())
    rho = config.rho
    step = config.step_size if config.step_size is not None else rho
    delta = [torch.zeros_like(w) for w in work]
    losses = np.full(config.steps, np.nan)
    best: tuple[float, _Terms] = (-math.inf, None)
    bar = tqdm(total=config.steps, desc=f"{config.kind} sharpness", unit="step", disable=not progress, leave=False)
    flat = FlatParameters(named)
    try:
        for t in range(config.steps):
            eps = delta if scale is None else [s * d for s, d in zip(scale, delta)]
            _set_perturbation(editor, eps)
            with differentiable(model, params):
                g = flat.views(grad_into(model, objective, flat))
            # The gradient with respect to δ is T⊙∇L(θ + ε).
            u = [gi.to(w.device, w.dtype) for gi, w in zip(g, work)]
            if scale is not None:
                u = [s * ui for s, ui in zip(scale, u)]
            norm = _norm(u)
            if norm == 0.0 and t == 0:
                logger.warning("the gradient is zero at the weights; the ascent starts along a random direction.")
                u = _gaussian(config.seed, 0, list(named), work)
                norm = _norm(u)
            if norm == 0.0 or not math.isfinite(norm):
                logger.warning("the gradient is %s at ascent step %d; stopping the ascent there.", norm, t)
                losses = losses[:t]
                break
            delta = [d + (step / norm) * ui for d, ui in zip(delta, u)]
            d_norm = _norm(delta)
            if d_norm > rho:  # project onto the ball
                delta = [d * (rho / d_norm) for d in delta]
            eps = delta if scale is None else [s * d for s, d in zip(scale, delta)]
            _set_perturbation(editor, eps)
            losses[t], terms, _ = _measure(model, objective, masks)
            if losses[t] > best[0]:
                best = (float(losses[t]), terms)
            bar.update(1)
    finally:
        bar.close()
    return (losses if len(losses) else np.zeros(0)), best[1]


def _gaussian(seed: int, draw: int, names: list[str], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """N(0, I) tensors shaped as `like`, each drawn on the CPU from (seed, draw, parameter name)."""
    return [
        torch.randn(w.shape, generator=torch.Generator().manual_seed(seed_for(seed, draw, n))).to(w.device, w.dtype)
        for n, w in zip(names, like)
    ]


def _average(
    model: torch.nn.Module,
    objective: Any,
    editor: Any,
    names: list[str],
    work: list[torch.Tensor],
    scale: list[torch.Tensor] | None,
    config: SharpnessConfig,
    progress: bool,
) -> np.ndarray:
    """L(θ + ε) for ε = T⊙δ, δ = ρ·z/‖z‖, z ~ N(0, I) drawn per (seed, sample, parameter name)."""
    losses = np.empty(config.samples)
    bar = tqdm(total=config.samples, desc=f"{config.kind} sharpness", unit="draw", disable=not progress, leave=False)
    try:
        for s in range(config.samples):
            z = _gaussian(config.seed, s, names, work)
            factor = config.rho / _norm(z)
            eps = [factor * zi for zi in z] if scale is None else [factor * si * zi for si, zi in zip(scale, z)]
            _set_perturbation(editor, eps)
            losses[s] = loss_value(model, objective)
            bar.update(1)
    finally:
        bar.close()
    return losses
