"""Curvature and sharpness under their older name: the functions live in `hf_landscape.curvature` (`eigen`, `trace`,
`sharpness`, `hvp`), the differentiable loss in `hf_landscape.objectives.loss`."""

from .curvature import (
    DOUBLE_BACKWARD_ATTENTION,
    SHARPNESS_KINDS,
    EigenResult,
    SharpnessConfig,
    SharpnessResult,
    TraceResult,
    double_backward_attention,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    layer_of,
    sharpness,
)
from .objectives.loss import differentiable_loss, loss_terms, loss_value

__all__ = [
    "DOUBLE_BACKWARD_ATTENTION",
    "EigenResult",
    "SHARPNESS_KINDS",
    "SharpnessConfig",
    "SharpnessResult",
    "TraceResult",
    "differentiable_loss",
    "double_backward_attention",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_vector_product",
    "layer_of",
    "loss_terms",
    "loss_value",
    "sharpness",
]
