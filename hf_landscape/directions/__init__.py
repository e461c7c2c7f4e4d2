"""Directions in weight space, one module per kind, all keyed by parameter name."""

from .base import Direction, select_parameters
from .interpolation import interpolation_target
from .low_rank import LowRankDirection, LowRankDirectionConfig, low_rank_directions
from .random import RandomDirectionConfig, random_directions

__all__ = [
    "Direction",
    "LowRankDirection",
    "LowRankDirectionConfig",
    "RandomDirectionConfig",
    "interpolation_target",
    "low_rank_directions",
    "random_directions",
    "select_parameters",
]
