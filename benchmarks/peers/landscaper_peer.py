"""landscaper 1.3.1 (Vis4SciML/Landscaper): `landscaper.compute.compute_loss_landscape`.

The peer takes user directions (its examples use Hessian eigenvectors) and no filter normalization:
each direction tensor is rescaled to norm sqrt(numel) (unit RMS per tensor), then the whole direction
to ‖θ‖·distance/(steps/2) per grid step, where ‖θ‖ is over *all* parameters. At every point it clones
all weights, adds/subtracts the step direction |k| times per axis (k = steps from the centre), copies
the result into the model, and restores the original weights at the end. It then replaces non-finite
values and adds a little noise to the maximum value(s) of the grid.

Adapter:
- directions: two independent Gaussian draws (seeded CPU generator), zero on 1-D parameters (Li et
  al.'s ignore='biasbn'; a zero tensor stays zero under the peer's normalization). Landscaper's own
  `utils.generate_random_orthogonal_directions` is not used: its Gram-Schmidt subtracts (r·p)·p with
  an unnormalized p, so its second direction is nearly parallel to the first (cosine ≈ -1.0).
- `distance = steps/(steps-1) · ‖θ_2D‖/‖θ_all‖`: the peer's grid index k sits at k·2/steps·distance
  (its `coordinates` say k·2/(steps-1)·distance), so this puts the edge at a perturbation of norm
  ‖θ_2D‖, Li et al.'s α = ±1, with the grid exactly linspace(-1, 1, steps) in those units.
- import: `landscaper/__init__` imports the topology/plotting stack (topopy, nglpy, gudhi, drawsvg,
  coloraide, networkx) that the computation never uses; `landscaper.compute` is imported on its own.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import Context, Result, centre_index, import_submodule, lm_loss, weight_norms

NAME = "landscaper"
DIST = "landscaper"
METHOD = (
    "compute_loss_landscape(dim=2) with Gaussian directions (zero on 1-D params); its normalization is "
    "per-tensor unit-RMS then whole-model (no filter normalization); distance set so the edge norm = ‖θ_2D‖ "
    "(grid = linspace(-1,1)² in Li units); per point: clone all weights + |k| direction adds per axis"
)


def prepare(ctx: Context) -> object:
    return import_submodule("landscaper", "compute")


def run(ctx: Context, compute: object) -> Result:
    model, n = ctx.model, ctx.steps
    gen = torch.Generator().manual_seed(ctx.seed)
    dirs = [
        [
            torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
            if p.dim() >= 2
            else torch.zeros_like(p)
            for p in model.parameters()
        ]
        for _ in range(2)
    ]
    norm_2d, norm_all = weight_norms(model)
    distance = n / (n - 1) * norm_2d / norm_all

    def scalar_fn(m: torch.nn.Module, data: torch.Tensor) -> float:
        return float(lm_loss(m, data))

    loss, _coords = compute.compute_loss_landscape(
        model, ctx.ids, dirs, scalar_fn, steps=n, distance=distance, dim=2, device=ctx.device
    )
    ctx.notes.append(f"distance={distance:.4f} (‖θ_2D‖={norm_2d:.2f}, ‖θ_all‖={norm_all:.2f})")
    x = np.linspace(-1.0, 1.0, n)
    values = np.asarray(loss, dtype=np.float64).T  # loss[i, j]: i along dirs[0] (α), j along dirs[1] (β)
    c = centre_index(n)
    return Result(values=values, x=x, y=x.copy(), centre=float(values[c, c]))
