"""loss-landscapes 3.0.6 (marcellodebernardi/loss-landscapes): `loss_landscapes.random_plane`.

The peer's plane: two directions drawn *uniform on [0, 1)* (`rand_u_like`, not Gaussian), the second
made orthogonal to the first, both filter-normalized over *every* parameter (filters = slices along
dim 0, so rows of GPT-2's transposed Conv1D = input units; 1-D parameters are normalized element by
element), then rescaled so one grid step has norm ‖θ‖ / (distance · steps). The walk is cumulative
and in place (`start_point.add_`/`sub_`), a serpentine from θ - (steps/2)·(d1 + d2) that moves
*before* each evaluation, so (in grid steps) α ∈ {-steps/2, ..., steps/2 - 1}, β ∈ {-steps/2 + 1, ...,
steps/2} in even columns but {-steps/2, ..., steps/2 - 1} in odd ones (checked by recording the
weights at every evaluation): the grid is not rectangular, with an odd `steps` it never passes
through θ itself, and the model is left displaced afterwards (`deepcopy_model=False`, the default).

Adapter: `normalization="filter"`, or `"layer"` (each tensor of the direction gets the norm of the
weight tensor) when the model has an all-zero 1-D parameter: the library's filter normalization
divides 0 by 0 there and raises ZeroDivisionError, which is the case for the freshly initialized
GPT-2s of this benchmark (their biases are zero). `distance=0.5`, which makes one step 2/steps in
Li et al.'s units (α = 1: a perturbation of norm ‖θ‖, as a filter-normalized direction has), so the
grid covers ≈[-1, 1]²: α from -1 to 1 - 2/steps, β from -1 + 2/steps to 1 in even columns and from
-1 to 1 - 2/steps in odd ones. The centre value is `loss_landscapes.point(model, metric)`, evaluated before the plane (outside the
timing). The metric is the library's own `metrics.Loss(loss_fn, inputs, target)` with the shared
`lm_loss`. On CUDA the library would fail (it draws directions with `torch.rand` on the CPU and
adds them to CUDA weights in place); the adapter moves each drawn tensor to its parameter's device
and changes nothing else (the draws are the same as on the CPU).
"""

from __future__ import annotations

import numpy as np
import torch

from .common import Context, LMCriterion, Result

NAME = "loss_landscapes"
DIST = "loss-landscapes"
METHOD = (
    "random_plane: uniform[0,1) directions, 'filter' (dim-0 slices, 1-D elementwise) or, where that raises "
    "(all-zero biases), 'layer' normalization of every parameter; cumulative in-place serpentine walk; "
    "distance=0.5 so the grid spans ≈[-1,1]² in Li units, half a step off centre (no (0,0) point for odd "
    "steps) and odd columns one step lower than even ones; model left displaced"
)


def _device_rand_u_like(model_parameters):
    """`model_parameters.rand_u_like`, with each tensor moved to its parameter's device."""

    def rand_u_like(example_vector):
        out = []
        for param in example_vector:
            out.append(torch.rand(size=param.size(), dtype=example_vector[0].dtype).to(param.device))
        return model_parameters.ModelParameters(out)

    return rand_u_like


def prepare(ctx: Context) -> tuple[float, str]:
    """Untimed: the centre value through the library's own `point`, before the plane moves the weights,
    and the normalization the library can run on this model."""
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    criterion = LMCriterion()
    metric = Loss(lambda output, target: criterion(output, target), ctx.ids, ctx.ids)
    with torch.no_grad():
        centre = float(loss_landscapes.point(ctx.model, metric))
    zero_1d = [n for n, p in ctx.model.named_parameters() if p.dim() == 1 and not bool(p.detach().any())]
    normalization = "filter"
    if zero_1d:
        # filter_normalize_ scales a 1-D direction by ‖w‖/‖d‖ = 0 and then each element by |w_f|/|d_f| = 0/0:
        # ZeroDivisionError on any all-zero 1-D parameter, e.g. the zero-initialized biases of a fresh GPT-2.
        normalization = "layer"
        ctx.notes.append(
            f"normalization='layer': 'filter' raises ZeroDivisionError on all-zero 1-D parameters "
            f"({len(zero_1d)} here, e.g. {zero_1d[0]})"
        )
    return centre, normalization


def run(ctx: Context, state: tuple[float, str]) -> Result:
    centre, normalization = state
    import loss_landscapes
    import loss_landscapes.main as ll_main
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface import model_parameters

    if ctx.device != "cpu":
        patched = _device_rand_u_like(model_parameters)
        ll_main.rand_u_like = patched
        model_parameters.rand_u_like = patched
        ctx.notes.append("device fix: the drawn direction tensors are moved to the model's device")

    n = ctx.steps
    criterion = LMCriterion()
    metric = Loss(lambda output, target: criterion(output, target), ctx.ids, ctx.ids)
    torch.manual_seed(ctx.seed)
    with torch.no_grad():
        data = loss_landscapes.random_plane(ctx.model, metric, distance=0.5, steps=n, normalization=normalization)
    # data[i][j]: i-th step along dir_one (α), j-th along dir_two (β); offsets from θ in units of the
    # normalized direction: α_i = (i - n/2) / (0.5 n), β_j = (j + 1 - n/2) / (0.5 n) for even i and
    # (j - n/2) / (0.5 n) for odd i; `y` below is the even columns'.
    k = np.arange(n, dtype=np.float64)
    x = (k - n / 2) / (0.5 * n)
    y = (k + 1 - n / 2) / (0.5 * n)
    return Result(
        values=np.asarray(data, dtype=np.float64).T,
        x=x,
        y=y,
        centre=centre,
        centre_note="no (0,0) on its grid (odd steps): centre = loss_landscapes.point() before the plane",
        grid_note="not rectangular: odd α columns sit one step lower in β than even ones",
    )
