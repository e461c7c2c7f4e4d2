"""Token-level loss maps under their older name: they live in `hf_landscape.analysis.tokens`."""

from .analysis.tokens import TokenLossMap, check_alphas, token_curvature, token_loss_map

__all__ = ["TokenLossMap", "check_alphas", "token_curvature", "token_loss_map"]
