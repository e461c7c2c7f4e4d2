"""Directional derivatives of the loss over a plane: the gradient projected on the plane's two directions at its
grid points, dL/dα = ∇L·δ and dL/dβ = ∇L·η (contour plots draw −∇ as arrows)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..directions.base import Direction
from ..directions.prepare import prepare
from ..engine.editors import editing
from ..errors import ConfigError
from ..objectives.loss import loss_terms, require_differentiable


def directional_derivatives(model: torch.nn.Module, objective: Any, surface: Any, *, stride: int = 1) -> Any:
    """Add dL/dα and dL/dβ at the grid points of `surface` (every `stride`-th along each axis, NaN between) as
    `surface.metrics["dL/dalpha"]` and `["dL/dbeta"]`, and return the surface. One forward and backward per point,
    weights restored after (`engine.editing`).

    Args:
        model: the model the plane was made on.
        objective: its objective, with a differentiable loss (`loss_terms`).
        surface: a plane with its two full-rank `directions` at hand.
        stride: compute every `stride`-th point along each axis.
    """
    dirs = surface.directions
    if surface.y is None or not dirs or len(dirs) != 2 or not all(isinstance(d, Direction) for d in dirs):
        raise ConfigError("`surface` must be a plane made here with two full-rank directions (`surface.directions`).")
    if not isinstance(stride, int) or stride < 1:
        raise ConfigError(f"`stride` must be a positive integer, got {stride!r}.")
    require_differentiable(objective, "`directional_derivatives`")
    params, tensors = prepare(model, list(dirs))
    shape = surface.values.shape
    da, db = np.full(shape, np.nan), np.full(shape, np.nan)
    flags = {n: p.requires_grad for n, p in params.items()}
    with editing(model, params) as editor:
        try:
            for p in params.values():
                p.requires_grad_(True)
            for j in range(0, shape[0], stride):
                for i in range(0, shape[1], stride):
                    editor.set_linear((float(surface.x[i]), float(surface.y[j])), tensors)
                    grads = [torch.zeros_like(p) for p in params.values()]
                    for term in loss_terms(model, objective):
                        for g, gi in zip(grads, torch.autograd.grad(term, list(params.values()), allow_unused=True)):
                            if gi is not None:
                                g += gi
                    da[j, i] = sum(float((g.double() * d.double()).sum()) for g, d in zip(grads, tensors[0]))
                    db[j, i] = sum(float((g.double() * d.double()).sum()) for g, d in zip(grads, tensors[1]))
        finally:
            for n, p in params.items():
                p.requires_grad_(flags[n])
    surface.metrics["dL/dalpha"], surface.metrics["dL/dbeta"] = da, db
    return surface
