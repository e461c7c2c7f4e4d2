"""Curvature and sharpness of the loss at the model's own weights.

- `hessian_eigenvalues` (`eigen`): the k largest *algebraic* eigenvalues of the Hessian over the selected parameters,
  by thick-restart Lanczos (Wu & Simon 2000) on Hessian-vector products.
- `hessian_trace` (`trace`): Hutchinson's estimate of tr(H) with Rademacher vectors (Hutchinson 1989; Avron & Toledo
  2011), with its standard error, optionally per layer.
- `sharpness` (`sharpness`): worst-case and average ρ-sharpness, plain or adaptive (scale-invariant), as in SAM
  (Foret et al. 2021), ASAM (Kwon et al. 2021) and Andriushchenko et al. 2023.
- `hessian_vector_product`, `directional_derivatives` (`hvp`, `derivatives`): the products they are built from.

All of them need the loss as a *differentiable* scalar, which `Objective.evaluate` (inference mode, floats) does not
give: they ask the objective's `loss_terms` (`objectives.base.DifferentiableLoss`, through `objectives.loss`), and
an objective without it is refused before any work with an error naming `loss_terms`. `objective` can also be any
callable `loss_fn(model) -> scalar tensor`.

What does *not* live here: moving weights over a grid (`engine/`), drawing plotting directions (`directions/`).
Weights are only moved through `engine.editing`, which copies the saved originals back bit for bit however the call
ends.
"""

from .derivatives import directional_derivatives
from .eigen import EigenResult, hessian_eigenvalues
from .hvp import DOUBLE_BACKWARD_ATTENTION, double_backward_attention, hessian_vector_product
from .sharpness import SHARPNESS_KINDS, SharpnessConfig, SharpnessResult, sharpness
from .trace import TraceResult, hessian_trace, layer_of

__all__ = [
    "DOUBLE_BACKWARD_ATTENTION",
    "EigenResult",
    "SHARPNESS_KINDS",
    "SharpnessConfig",
    "SharpnessResult",
    "TraceResult",
    "directional_derivatives",
    "double_backward_attention",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_vector_product",
    "layer_of",
    "sharpness",
]
