"""The direction kind `"adversarial"`: the worst-case direction at a radius, normalized like a random direction.

A random direction shows the "most-case" landscape; the worst-case one shows how fast the loss can rise at all
(Chen et al. 2025 draw both). This kind finds d maximizing L(θ₀ + r·d) over the directions normalized as random ones
are (Li et al. 2018: each filter of d has the norm of the same filter of θ₀; or each tensor, or the whole model), by
projected gradient ascent: SAM's step first (Foret et al. 2021: d along the gradient at θ₀, then normalized), then
`steps − 1` more, each moving d towards the normalized gradient at θ₀ + r·d and normalizing again (the projection
onto that set). The iterate with the highest loss is kept. With `axes=2` the second direction is the worst one
orthogonal to the first (orthogonal inside every normalization group, as `RandomDirectionConfig(orthogonalize=True)`).

The ascent moves the weights only through `engine.editing` (copied back bit for bit however it ends), with grad on
for exactly the selected weights (`curvature.hvp.differentiable`, every flag given back). Options are
`AdversarialDirectionConfig`'s fields; a plane with one random and one worst-case axis takes one of each:
`probe.plane(directions=[probe.directions(0, axes=1)[0], probe.directions(kind="adversarial", axes=1)[0]])`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import BaseConfig, check_choice, check_patterns
from ..errors import ConfigError
from .base import Direction, select_parameters
from .random import EPS, RandomDirectionConfig, _groups, random_directions, unit_dim
from .registry import kind_config, register_direction_kind

logger = logging.getLogger(__name__)

ADVERSARIAL_NORMALIZATIONS = ("filter", "layer", "model")


@dataclass
class AdversarialDirectionConfig(BaseConfig):
    """How the worst-case direction is found and normalized.

    Args:
        radius (`float`, defaults to 0.1): r, where the loss L(θ₀ + r·d) is raised most, in units of the direction
            (0.1 moves every filter by a tenth of its own norm); match it to the span you will plot, or let
            `probe.basin` choose it.
        steps (`int`, defaults to 10): ascent steps (one gradient each; the first is SAM's).
        step_size (`float`, defaults to 1.0): how far each step moves d towards the normalized gradient before d is
            normalized again, in units of d's own norm (1.0: half-way, in angle, between the two).
        normalization (`str`, defaults to `"filter"`): `"filter"`, `"layer"` or `"model"`, as for random directions.
        include_1d, include, exclude: which weights move, as for random directions (`RandomDirectionConfig`).

    Example:
    ```python
    >>> from hf_landscape.directions.adversarial import AdversarialDirectionConfig
    >>> AdversarialDirectionConfig(radius=0.5).steps
    10

    ```
    """

    radius: float = field(default=0.1, metadata={"help": "radius r at which the loss is raised most"})
    steps: int = field(default=10, metadata={"help": "ascent steps (gradients)"})
    step_size: float = field(default=1.0, metadata={"help": "step towards the normalized gradient"})
    normalization: str = field(default="filter", metadata={"help": "filter, layer or model"})
    include_1d: bool = field(default=False, metadata={"help": "perturb biases and norm weights too"})
    include: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to perturb"})
    exclude: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to leave alone"})

    def __post_init__(self) -> None:
        for name in ("radius", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"`{name}` must be a finite number > 0, got {value!r}; e.g. {name}=0.1.")
            setattr(self, name, float(value))
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"`steps` must be an integer >= 1, got {self.steps!r}.")
        if self.normalization == "none":
            raise ConfigError(
                "`normalization='none'` gives an adversarial direction no norm to keep; use 'filter', 'layer' or "
                "'model'."
            )
        check_choice("normalization", self.normalization, ADVERSARIAL_NORMALIZATIONS)
        if not isinstance(self.include_1d, bool):
            raise ConfigError(f"`include_1d` must be True or False, got {self.include_1d!r}.")
        inc, exc = check_patterns("include", self.include), check_patterns("exclude", self.exclude)
        self.include = list(inc) if inc is not None else None
        self.exclude = list(exc) if exc is not None else None


@register_direction_kind("adversarial", needs_objective=True)
def adversarial_kind(
    model: torch.nn.Module,
    seed: int,
    *,
    axes: int,
    objective: Any,
    progress: bool = False,
    config: AdversarialDirectionConfig | None = None,
    **options: Any,
) -> list[Direction]:
    """The kind `"adversarial"`: `axes` worst-case directions (options: `AdversarialDirectionConfig`'s fields)."""
    return adversarial_directions(
        model, objective, kind_config(AdversarialDirectionConfig, config, options), seed, axes
    )


def adversarial_directions(
    model: torch.nn.Module, objective: Any, config: AdversarialDirectionConfig, seed: int = 0, axes: int = 1
) -> list[Direction]:
    """`axes` worst-case directions at `config.radius` (see the module docstring), each a `Direction` recording its
    config, the loss at the centre and at θ₀ + r·d (`loss_at_radius`) and the loss after every ascent step.

    Raises:
        ObjectiveError: the objective gives no differentiable loss (`loss_terms`), before any work.
    """
    from ..curvature.hvp import differentiable
    from ..engine.editors import editing
    from ..objectives.loss import require_differentiable

    require_differentiable(objective, "An adversarial direction")
    params = select_parameters(model, include=config.include, exclude=config.exclude, include_1d=config.include_1d)
    names = list(params)
    dims = {n: unit_dim(model, n) for n in names}
    found: list[dict[str, torch.Tensor]] = []
    with editing(model, params) as editor:
        weights = {n: o.to(torch.promote_types(o.dtype, torch.float32)) for n, o in zip(names, editor.originals)}
        ascent = _Ascent(model, objective, editor, params, weights, dims, config)
        with differentiable(model, list(params.values())):
            centre, gradient = ascent.gradient({n: torch.zeros_like(w) for n, w in weights.items()})
            # Filters the loss does not see (embeddings of tokens or positions absent from the data) get no gradient;
            # they start, and stay, as the seed's random direction, so d is normalized in full like a random one.
            drawn = random_directions(model, seed, config=_random_config(config), axes=axes)
            for axis in range(axes):
                if _norm(gradient) == 0.0:
                    logger.warning("the gradient is zero at the weights; the ascent starts along a random direction")
                fill = {n: drawn[axis][n].to(weights[n].dtype) for n in names}
                start = ascent.project(ascent.filled(gradient, fill), found)
                found.append(ascent.run(start, found))
    out = []
    for axis, d in enumerate(found):
        record = {"kind": "adversarial", "seed": seed, "axis": axis, **config.to_dict()}
        record.update(centre_loss=centre, loss_at_radius=ascent.best_losses[axis], ascent_losses=ascent.history[axis])
        out.append(Direction({n: d[n].to(params[n].dtype) for n in names}, record))
    return out


def _random_config(config: AdversarialDirectionConfig) -> RandomDirectionConfig:
    return RandomDirectionConfig(
        normalization=config.normalization,
        include_1d=config.include_1d,
        include=config.include,
        exclude=config.exclude,
    )


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors.values()))


class _Ascent:
    """Projected gradient ascent of L(θ₀ + r·d) over normalized directions d (float32 work tensors)."""

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Any,
        editor: Any,
        params: dict[str, torch.nn.Parameter],
        weights: dict[str, torch.Tensor],
        dims: dict[str, int],
        config: AdversarialDirectionConfig,
    ) -> None:
        self.model, self.objective, self.editor, self.params = model, objective, editor, params
        self.weights, self.dims, self.config = weights, dims, config
        self.norm = config.normalization
        self.best_losses: list[float] = []
        self.history: list[list[float]] = []

    def set(self, d: dict[str, torch.Tensor]) -> None:
        """θ = θ₀ + r·d, from the saved originals."""
        p = self.editor.params
        self.editor.set_linear((self.config.radius,), [[d[n].to(q.device, q.dtype) for n, q in zip(d, p)]])

    def gradient(self, d: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
        """L(θ₀ + r·d) and its gradient with respect to the weights, summed over the objective's batches."""
        from ..objectives.loss import loss_terms

        self.set(d)
        total = 0.0
        grads = {n: torch.zeros_like(w) for n, w in self.weights.items()}
        for term in loss_terms(self.model, self.objective):
            total += float(term.detach())
            if not term.requires_grad:
                continue
            for n, g in zip(self.params, torch.autograd.grad(term, list(self.params.values()), allow_unused=True)):
                if g is not None:
                    grads[n].add_(g.to(grads[n].dtype))
        return total, grads

    def filled(self, g: dict[str, torch.Tensor], fill: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`g` with every normalization group that is all zeros taken from `fill` instead."""
        if self.norm == "model":
            return g if _norm(g) > 0.0 else fill
        out = {}
        for n, t in g.items():
            view, rdim = _groups(t.contiguous(), self.dims[n], self.norm)
            other = _groups(fill[n].contiguous(), self.dims[n], self.norm)[0]
            zero = view.pow(2).sum(rdim, keepdim=True) == 0
            out[n] = torch.where(zero, other, view).reshape(t.shape)
        return out

    def project(self, d: dict[str, torch.Tensor], earlier: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """d orthogonalized against `earlier` directions and normalized to the weights' norms, group by group
        (filter, layer) or as a whole (model)."""
        if self.norm == "model":
            d = {n: t.clone() for n, t in d.items()}
            for e in earlier:
                coef = sum(float((d[n].double() * e[n].double()).sum()) for n in d) / max(
                    sum(float(e[n].double().pow(2).sum()) for n in d), EPS
                )
                d = {n: t - coef * e[n] for n, t in d.items()}
            scale = _norm(self.weights) / (_norm(d) + EPS)
            return {n: t * scale for n, t in d.items()}
        out = {}
        for n, t in d.items():
            view, rdim = _groups(t.contiguous().clone(), self.dims[n], self.norm)
            for e in earlier:
                ev = _groups(e[n].contiguous(), self.dims[n], self.norm)[0]
                ee = (ev * ev).sum(rdim, keepdim=True)
                share = torch.where(ee > 0, (view * ev).sum(rdim, keepdim=True) / ee.clamp_min(EPS), 0.0)
                view = view - share * ev
            w_view = _groups(self.weights[n].contiguous(), self.dims[n], self.norm)[0]
            w_norm = w_view.pow(2).sum(rdim, keepdim=True).sqrt()
            view = view * (w_norm / (view.pow(2).sum(rdim, keepdim=True).sqrt() + EPS))
            out[n] = view.reshape(t.shape)
        return out

    def run(self, start: dict[str, torch.Tensor], earlier: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Ascend from `start` (already normalized): evaluate, step towards the normalized gradient, normalize; the
        iterate with the highest loss."""
        d, losses = start, []
        best: tuple[float, dict[str, torch.Tensor]] = (-math.inf, start)
        for step in range(self.config.steps):
            loss, grad = self.gradient(d)
            losses.append(loss)
            if loss > best[0] or not math.isfinite(best[0]):
                best = (loss, d)
            if not math.isfinite(loss) or _norm(grad) == 0.0:
                logger.warning("adversarial direction: the gradient is %s at step %d; stopping there", loss, step)
                break
            if step + 1 < self.config.steps:
                g = self.project(grad, earlier)
                d = self.project({n: t + self.config.step_size * g[n] for n, t in d.items()}, earlier)
        self.best_losses.append(best[0])
        self.history.append(losses)
        logger.info("adversarial direction at radius %g: loss %s over the ascent", self.config.radius, losses)
        return best[1]
