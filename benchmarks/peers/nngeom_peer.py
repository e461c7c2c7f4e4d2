"""nngeom 0.2.0 (srikumar/nngeom): `nngeom.plane_slice_2d` on an `nngeom.Model` wrapping the torch module.

The peer works on one flat float64 NumPy vector of all parameters (copied off the device): two
Gaussian directions (NumPy generator, seeds `seed` and `seed + 1`), Gram-Schmidt orthonormalized, then
its "filter" normalization, which is per *tensor* (each parameter tensor of the direction gets the
norm of that tensor of the weights: Li et al.'s layer normalization), over every parameter including
biases and LayerNorm weights. Each point builds `base + a·d1 + b·d2` in float64 on the host and copies
it into the model tensor by tensor; the original point is restored at the end.

Adapter: `span=1.0, steps=steps, seed=seed, normalize="filter"`, the grid linspace(-1, 1, steps)² with
α = 1 a perturbation of norm ‖θ_all‖; the loss is `nngeom.Model(module, loss_fn=...)` with the shared
`lm_loss` (the peer evaluates under eval() and no_grad()). NumPy has no bfloat16, so the peer cannot
read a bfloat16 model.
"""

from __future__ import annotations

import numpy as np

from .common import Context, Result, centre_index, lm_loss

NAME = "nngeom"
DIST = "nngeom"
METHOD = (
    "plane_slice_2d(normalize='filter'): Gaussian directions orthonormalized, then *per-tensor* (layer) "
    "normalization over all params incl. 1-D; grid linspace(-1,1)²; each point = float64 NumPy "
    "base + a·d1 + b·d2 on the host, copied into the model"
)


def prepare(ctx: Context) -> None:
    import nngeom  # noqa: F401


def run(ctx: Context, state: None = None) -> Result:
    import nngeom

    model = nngeom.Model(ctx.model, loss_fn=lambda module, batch: lm_loss(module, batch), name="gpt2")
    surface = nngeom.plane_slice_2d(model, ctx.ids, span=1.0, steps=ctx.steps, seed=ctx.seed, normalize="filter")
    values = np.asarray(surface.losses, dtype=np.float64)  # (betas, alphas)
    c = centre_index(ctx.steps)
    return Result(values=values, x=np.asarray(surface.alphas), y=np.asarray(surface.betas), centre=float(values[c, c]))
