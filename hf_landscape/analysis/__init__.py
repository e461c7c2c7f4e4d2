"""What a surface says: flatness and sharpness summaries (`summaries`) and per-token loss maps (`tokens`)."""

from .summaries import (
    SUMMARY_FIGURES,
    centre_curvature,
    interpolation_barrier,
    mean_increase_within,
    radial_distance,
    rise_radius,
    summarize,
)
from .tokens import TokenLossMap, check_alphas, token_curvature, token_loss_map

__all__ = [
    "SUMMARY_FIGURES",
    "TokenLossMap",
    "centre_curvature",
    "check_alphas",
    "interpolation_barrier",
    "mean_increase_within",
    "radial_distance",
    "rise_radius",
    "summarize",
    "token_curvature",
    "token_loss_map",
]
