"""Interpolation to another checkpoint: θ(α) = (1 − α)·θ + α·θ_other (Goodfellow et al. 2015).

The target is kept whole rather than as the difference θ_other − θ, and points are set with
`torch.lerp`, which returns θ_other exactly at α = 1 (and θ exactly at α = 0).
"""

from __future__ import annotations

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
