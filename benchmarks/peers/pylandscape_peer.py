"""pylandscape 0.1.3 (balditommaso/PyLandscape): `pylandscape.Surface(...).random_hyperplane(n=2)`.

The peer draws two directions *uniform on [0, 1)* (`torch.rand_like` of every parameter), normalizes
each to unit L2 norm over the whole model (pyhessian's `normalization`), makes the second orthogonal
to the first tensor by tensor, and evaluates `criterion(model(inputs), targets)` on the first batch
of the DataLoader it is given. Every grid point is a `copy.deepcopy` of the model with
`weight = θ + a·d1 + b·d2` (the original model is never touched).

Adapter:
- `random_hyperplane(lams, steps, n=2)`, not `random_surface`: they draw and normalize the same two
  directions in the same order and evaluate the same grid, but `random_surface` then asserts that
  the directions are orthogonal *tensor by tensor* to 1e-6 in float32, which fails on any large
  tensor (GPT-2's 4096 x 256 embedding already gives a dot product of -4.6e-6, so the call raises
  AssertionError before evaluating anything). `random_hyperplane` has no such assert.
- `lams = (-‖θ_all‖, ‖θ_all‖)`: the peer's directions have unit norm, so this puts the edge at a
  perturbation of norm ‖θ_all‖ (α = 1 in Li et al.'s units for a direction over all parameters);
  grid linspace(-1, 1, steps)² in those units.
- criterion: a small `nn.Module` computing the shared `lm_loss` from the model output and the ids;
  DataLoader: one batch of the 16 × 128 ids (inputs and targets are the same tensor).
- the call is wrapped in `torch.no_grad()` (the peer does not disable autograd itself, and its
  deep-copied parameters still require grad, so it would otherwise record a graph at every point).
- seeds: the peer's `seed` argument is stored but unused by `random_surface`; the adapter seeds
  torch's global generator.
- import: `pylandscape/__init__` imports mode connectivity, which needs brevitas (pinned to
  numpy<=1.26.4); `pylandscape.surface` is imported on its own (it needs pyhessian). The wheel also
  pins torch==2.10; it is installed with --no-deps and runs on the installed torch.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import Context, LMCriterion, Result, centre_index, import_submodule, weight_norms

NAME = "pylandscape"
DIST = "pylandscape"
METHOD = (
    "Surface.random_hyperplane(n=2) (= random_surface without its float32 orthogonality assert, which "
    "raises on GPT-2's embedding): uniform[0,1) directions over all params, unit global norm (model-wise), "
    "2nd orthogonalized per tensor; lams=±‖θ_all‖ (grid linspace(-1,1)² in Li units); "
    "a deepcopy of the model per point"
)


def prepare(ctx: Context) -> object:
    return import_submodule("pylandscape", "surface")


def run(ctx: Context, surface_mod: object) -> Result:
    from torch.utils.data import DataLoader, TensorDataset

    ids = ctx.ids
    loader = DataLoader(TensorDataset(ids, ids), batch_size=ids.shape[0], shuffle=False)
    _, norm_all = weight_norms(ctx.model)
    surface = surface_mod.Surface(ctx.model, LMCriterion(), loader, device=torch.device(ctx.device), seed=ctx.seed)
    torch.manual_seed(ctx.seed)
    with torch.no_grad():
        _lams, loss = surface.random_hyperplane(lams=(-norm_all, norm_all), steps=ctx.steps, n=2)
    values = np.asarray(loss, dtype=np.float64).T  # loss[i, j]: i along v1 (α), j along v2 (β)
    x = np.linspace(-1.0, 1.0, ctx.steps)
    c = centre_index(ctx.steps)
    ctx.notes.append(f"lams=±{norm_all:.2f} (‖θ_all‖)")
    return Result(values=values, x=x, y=x.copy(), centre=float(values[c, c]))
