"""Curvature and sharpness of the loss at the model's own weights.

- `hessian_eigenvalues` (`eigen`): the k largest *algebraic* eigenvalues of the Hessian over the selected parameters,
  by thick-restart Lanczos (Wu & Simon 2000) on Hessian-vector products.
- `hessian_trace` (`trace`): Hutchinson's estimate of tr(H) with Rademacher vectors (Hutchinson 1989; Avron & Toledo
  2011), or Hutch++ (Meyer et al. 2021), with its standard error, optionally per layer or per block.
- `hessian_spectrum` (`spectrum`): the spectral density by stochastic Lanczos quadrature (Ubaru et al. 2017;
  Ghorbani et al. 2019), a `SpectrumResult` that plots, saves and loads.
- `sharpness` (`sharpness`): worst-case and average ρ-sharpness, plain or adaptive (scale-invariant), as in SAM
  (Foret et al. 2021), ASAM (Kwon et al. 2021) and Andriushchenko et al. 2023.
- `pac_bayes_sharpness` (`pac_bayes`): the largest σ of Gaussian weight noise that keeps the expected rise of the
  loss under a target (Jiang et al. 2020), plain or magnitude-aware.
- `critical_sharpness` (`critical`): 2/η for the smallest step η along the gradient at which the loss stops
  decreasing (Kalra et al. 2026).
- the operators (`operators`, `gauss_newton`): Hessian, generalized Gauss-Newton and empirical Fisher products, exact
  or by finite differences, which the eigenvalues, trace and spectrum run on (`operator=`, `hvp=`); parameter groups
  by layer and by role (`blocks`) for `per_layer` / `per_block`.
- `hessian_vector_product`, `directional_derivatives` (`hvp`, `derivatives`): the products they are built from.

All of them need the loss as a *differentiable* scalar, which `Objective.evaluate` (inference mode, floats) does not
give: they ask the objective's `loss_terms` (`objectives.base.DifferentiableLoss`, through `objectives.loss`), and
an objective without it is refused before any work with an error naming `loss_terms`. `objective` can also be any
callable `loss_fn(model) -> scalar tensor`.

What does *not* live here: moving weights over a grid (`engine/`), drawing plotting directions (`directions/`).
Weights are only moved through `engine.editing`, which copies the saved originals back bit for bit however the call
ends.
"""

from .blocks import ROLES, role_of
from .critical import CriticalSharpnessResult, critical_sharpness
from .derivatives import directional_derivatives
from .eigen import EigenResult, hessian_eigenvalues
from .hvp import DOUBLE_BACKWARD_ATTENTION, double_backward_attention, hessian_vector_product
from .operators import HVP_MODES, OPERATORS, CurvatureOperator
from .pac_bayes import PAC_BAYES_KINDS, PacBayesConfig, PacBayesResult, pac_bayes_sharpness
from .sharpness import SHARPNESS_KINDS, SharpnessConfig, SharpnessResult, sharpness
from .spectrum import SpectrumResult, hessian_spectrum
from .trace import TRACE_METHODS, TraceResult, hessian_trace, layer_of

__all__ = [
    "DOUBLE_BACKWARD_ATTENTION",
    "HVP_MODES",
    "OPERATORS",
    "PAC_BAYES_KINDS",
    "ROLES",
    "SHARPNESS_KINDS",
    "TRACE_METHODS",
    "CriticalSharpnessResult",
    "CurvatureOperator",
    "EigenResult",
    "PacBayesConfig",
    "PacBayesResult",
    "SharpnessConfig",
    "SharpnessResult",
    "SpectrumResult",
    "TraceResult",
    "critical_sharpness",
    "directional_derivatives",
    "double_backward_attention",
    "hessian_eigenvalues",
    "hessian_spectrum",
    "hessian_trace",
    "hessian_vector_product",
    "layer_of",
    "pac_bayes_sharpness",
    "role_of",
    "sharpness",
]
