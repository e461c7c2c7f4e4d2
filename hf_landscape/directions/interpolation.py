"""Interpolation to another checkpoint: θ(α) = (1 − α)·θ + α·θ_other (Goodfellow et al. 2015), and paths
through several checkpoints θ₀ → θ₁ → θ₂ → ..., one straight segment between consecutive knots.

The target is kept whole rather than as the difference θ_other − θ, and points are set with
`torch.lerp`, which returns θ_other exactly at α = 1 (and θ exactly at α = 0).
"""

from __future__ import annotations

import math

import torch

from ..errors import DirectionError


def interpolation_target(model: torch.nn.Module, other: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every floating-point parameter of `other`, keyed by name, on `model`'s devices and dtypes.

    Raises:
        DirectionError: the two models' parameter names or shapes differ.
    """
    mine = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
    theirs = {n: p for n, p in other.named_parameters() if p.is_floating_point()}
    missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    if missing or extra:
        raise DirectionError(
            "`other_model` has different parameter names: "
            f"missing {missing[:5]}, unexpected {extra[:5]}; interpolate between checkpoints of one architecture."
        )
    for name, p in mine.items():
        if p.shape != theirs[name].shape:
            raise DirectionError(
                f"`other_model` parameter {name!r} has shape {tuple(theirs[name].shape)}, but the probed model's "
                f"has {tuple(p.shape)}; interpolate between checkpoints of one architecture."
            )
    return {n: theirs[n].detach().to(p.device, p.dtype).clone() for n, p in mine.items()}


def path_segment(t: float, segments: int) -> tuple[int, float]:
    """The segment k and the fraction s of a point t on a path of `segments` straight pieces θ_k → θ_{k+1}
    with knots at t = 0, 1, ..., segments: k = clamp(⌊t⌋, 0, segments − 1), s = t − k. Points before the first
    knot extrapolate the first segment (s < 0), points after the last knot the last one (s > 1).

    Example:
    ```python
    >>> from hf_landscape.directions.interpolation import path_segment
    >>> path_segment(1.25, 2), path_segment(-0.5, 2), path_segment(2.0, 2), path_segment(2.5, 2)
    ((1, 0.25), (0, -0.5), (1, 1.0), (1, 1.5))

    ```
    """
    k = min(max(int(math.floor(t)), 0), segments - 1)
    return k, t - k


@torch.no_grad()
def set_on_path(params: list[torch.Tensor], knots: list[list[torch.Tensor]], t: float) -> None:
    """Set `params` to the point t of the piecewise-linear path through `knots` (each a list of tensors like
    `params`): θ = lerp(θ_k, θ_{k+1}, s) with (k, s) = `path_segment(t, len(knots) − 1)`, recomputed from the
    knots (never accumulated). Exact at every knot: s = 0 copies θ_k, s = 1 is `torch.lerp`'s exact end.
    """
    k, s = path_segment(t, len(knots) - 1)
    torch._foreach_copy_(params, knots[k])
    if s != 0.0:
        torch._foreach_lerp_(params, knots[k + 1], float(s))


def path_knots(
    model: torch.nn.Module, others: list[torch.nn.Module]
) -> tuple[dict[str, torch.nn.Parameter], list[list[torch.Tensor]], dict[str, torch.Tensor]]:
    """The knots of the path θ₀ → θ₁ → ... through `others`: the parameters they set (every floating-point one, in
    model order), each knot's tensors in that order, and the tensors a checkpoint of the path is keyed by."""
    targets = [interpolation_target(model, other) for other in others]
    params = {n: p for n, p in model.named_parameters() if n in targets[0]}
    knots = [[t[n] for n in params] for t in targets]
    every = {f"{k}:{n}": v for k, t in enumerate(targets) for n, v in t.items()}
    return params, knots, targets[0] if len(others) == 1 else every
