"""Mode-connecting curves between two models (Garipov et al. 2018): θ(t) from θ_a (t = 0) to θ_b (t = 1) through
a bend θ_bend that is trained so that the loss stays low all along the curve.

- `"bezier"`: the quadratic Bézier curve θ(t) = (1 − t)²·θ_a + 2t(1 − t)·θ_bend + t²·θ_b.
- `"polychain"`: two straight segments θ_a → θ_bend (t ≤ ½) → θ_b.

Training minimizes E_{t ~ U[0, 1]} L(θ(t)) over θ_bend: each step draws t, sets the weights to θ(t), takes the
gradient g of the loss there and hands ∂θ(t)/∂θ_bend · g (a scalar times g: 2t(1 − t) for Bézier) to Adam. The bend
starts at the midpoint (θ_a + θ_b)/2, where the curve is the straight path. The weights move only through
`engine.editing` (copied back bit for bit however it ends), grad on for exactly the moving weights
(`curvature.hvp.differentiable`). For a `PeftModel` only the adapter's weights bend (`weights.moving_weights`).
The curve is then evaluated on a grid of t with `engine.GridRunner.run_placed`; t = 0 and t = 1 copy each model's
own weights, so the ends equal each model's loss bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..analysis.summaries import interpolation_barrier
from ..config import BaseConfig, check_choice
from ..directions.base import Direction
from ..directions.interpolation import set_on_path
from ..errors import ConfigError, DirectionError
from ..grid import grid_axis
from ..provenance import path_metadata, surface_metadata
from ..surface import Surface, grid_surface
from .weights import moving_weights

if TYPE_CHECKING:
    from ..probe import LandscapeProbe

logger = logging.getLogger(__name__)

CURVE_KINDS = ("bezier", "polychain")


@dataclass
class CurveConfig(BaseConfig):
    """How a mode-connecting curve is shaped and trained.

    Args:
        kind (`str`, defaults to `"bezier"`): `"bezier"` (quadratic Bézier) or `"polychain"` (two segments).
        train_steps (`int`, defaults to 100): Adam steps on the bend, one t ~ U[0, 1] and one full gradient of the
            training objective each; 0 keeps the straight path (the bend at the midpoint).
        lr (`float`, defaults to 0.01): Adam's learning rate on the bend.
        seed (`int`, defaults to 0): the draws of t.

    Example:
    ```python
    >>> from hf_landscape.slices.curves import CurveConfig
    >>> CurveConfig(kind="polychain", train_steps=50).lr
    0.01

    ```
    """

    kind: str = field(default="bezier", metadata={"help": "bezier or polychain"})
    train_steps: int = field(default=100, metadata={"help": "Adam steps on the bend"})
    lr: float = field(default=0.01, metadata={"help": "Adam's learning rate"})
    seed: int = field(default=0, metadata={"help": "seed of the draws of t"})

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, CURVE_KINDS)
        for name in ("train_steps", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"`{name}` must be an integer >= 0, got {value!r}.")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"`lr` must be a finite number > 0, got {lr!r}; e.g. lr=0.01.")
        self.lr = float(lr)


def coefficients(kind: str, t: float) -> tuple[float, float, float]:
    """The weights of (θ_a, θ_bend, θ_b) at the point t of the curve.

    Example:
    ```python
    >>> from hf_landscape.slices.curves import coefficients
    >>> coefficients("bezier", 0.5), coefficients("polychain", 0.25)
    ((0.25, 0.5, 0.25), (0.5, 0.5, 0.0))

    ```
    """
    if kind == "bezier":
        return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
    if t <= 0.5:
        return 1.0 - 2.0 * t, 2.0 * t, 0.0
    return 0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0


@torch.no_grad()
def set_on_curve(
    params: list[torch.Tensor],
    start: list[torch.Tensor],
    bend: list[torch.Tensor],
    end: list[torch.Tensor],
    kind: str,
    t: float,
) -> None:
    """Set `params` to θ(t), computed in float32 (or wider) from the three knots; t = 0 copies `start` and t = 1
    `end` exactly (`end` holds values of the params' dtype)."""
    if t == 0.0:
        torch._foreach_copy_(params, start)
        return
    if t == 1.0:
        torch._foreach_copy_(params, end)
        return
    ca, cb, cc = coefficients(kind, t)
    for p, a, b, c in zip(params, start, bend, end):
        p.copy_(a.to(b.dtype) * ca + b * cb + c * cc)


def train_bend(
    model: torch.nn.Module,
    objective: Any,
    editor: Any,
    params: dict[str, torch.nn.Parameter],
    end: list[torch.Tensor],
    config: CurveConfig,
) -> tuple[list[torch.Tensor], list[float]]:
    """Train the bend (see the module docstring); returns it (float32 or wider) and the loss at every step."""
    from ..curvature.hvp import differentiable
    from ..objectives.loss import loss_terms

    start = editor.originals
    bend = [(a.to(c.dtype) + c) * 0.5 for a, c in zip(start, end)]
    losses: list[float] = []
    if config.train_steps == 0:
        return bend, losses
    optimizer = torch.optim.Adam(bend, lr=config.lr)
    draws = torch.Generator().manual_seed(config.seed)
    weights = list(params.values())
    with differentiable(model, weights):
        for _ in range(config.train_steps):
            t = float(torch.rand((), generator=draws, dtype=torch.float64))
            set_on_curve(editor.params, start, bend, end, config.kind, t)
            total = 0.0
            grads = [torch.zeros_like(b) for b in bend]
            for term in loss_terms(model, objective):
                total += float(term.detach())
                if term.requires_grad:
                    for g, piece in zip(grads, torch.autograd.grad(term, weights, allow_unused=True)):
                        if piece is not None:
                            g.add_(piece.to(g.dtype))
            losses.append(total)
            if not math.isfinite(total):
                logger.warning("curve training: the loss is %s at t = %.3f; stopping there", total, t)
                break
            share = coefficients(config.kind, t)[1]
            for b, g in zip(bend, grads):
                b.grad = g.mul_(share)
            optimizer.step()
    return bend, losses


def connect_models(
    probe: LandscapeProbe,
    other: Any,
    config: CurveConfig,
    *,
    steps: int,
    objective: Any,
    checkpoint_dir: Any,
    checkpoint_every: int,
) -> Surface:
    """`probe.connect`: train the curve's bend, evaluate the curve and the straight path at `steps` points of t."""
    from ..engine.editors import editing
    from ..hub.models import check_materialized
    from ..objectives.loss import require_differentiable

    training = probe.objective if objective is None else objective
    require_differentiable(training, "`connect` (training the curve)")
    x = grid_axis(steps, (0.0, 1.0), "steps")
    if not isinstance(other, torch.nn.Module):
        raise DirectionError(f"`other` must be a torch model of the probed model's architecture, got {type(other)}.")
    check_materialized(other, "other")
    model = probe.model
    params, (end_f32,) = moving_weights(model, [other], "`connect`")
    end = [e.to(p.dtype) for e, p in zip(end_f32, params.values())]
    began = time.perf_counter()
    with editing(model, params) as editor:
        bend, losses = train_bend(model, training, editor, params, end_f32, config)

    def on_curve(editor: Any, point: tuple[float, ...]) -> None:
        set_on_curve(editor.params, editor.originals, bend, end, config.kind, point[0])

    def on_line(editor: Any, point: tuple[float, ...]) -> None:
        set_on_path(editor.params, [editor.originals, end], point[0])

    names = list(params)
    keyed = {f"end:{n}": e for n, e in zip(names, end)} | {f"bend:{n}": b for n, b in zip(names, bend)}
    runner = probe.runner
    curve = runner.run_placed(
        "curve", [x], params, on_curve, fingerprint=keyed, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, desc="curve",
    )  # fmt: skip
    line = runner.run_placed("interpolation", [x], params, on_line, fingerprint=keyed, desc="straight path")
    bend_direction = Direction(
        {n: b.detach().clone() for n, b in zip(names, bend)},
        {"kind": "curve_bend", "curve": config.kind, "seed": config.seed},
    )
    record = {"steps": [steps], "span": [[0.0, 1.0]]}
    meta = surface_metadata(
        "curve", runner, probe.provenance, directions=[bend_direction], seed=config.seed, grid=record,
        wall=time.perf_counter() - began,
    )  # fmt: skip
    meta.update(path_metadata(probe.provenance, model, [other]))
    straight = Surface(x, np.asarray(line.values, dtype=float))
    meta["curve"] = {
        **config.to_dict(),
        "barrier": interpolation_barrier(Surface(x, np.asarray(curve.values, dtype=float))),
        "linear_barrier": interpolation_barrier(straight),
        "linear_values": straight.values.tolist(),
        "train_losses": losses,
        "moving_parameters": sum(p.numel() for p in params.values()),
        "training_objective": None if objective is None else _describe(objective),
    }
    return grid_surface([x], curve.values, curve.metrics, meta, directions=[bend_direction], partials=curve.partials)


def _describe(objective: Any) -> Any:
    describe = getattr(objective, "describe", None)
    return describe() if callable(describe) else type(objective).__name__
