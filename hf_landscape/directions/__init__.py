"""Directions in weight space, one module per kind, all keyed by parameter name."""

from .base import Direction, select_parameters
from .interpolation import interpolation_target
from .low_rank import LowRankDirection, LowRankDirectionConfig, low_rank_directions
from .random import RandomDirectionConfig, random_directions
from .sets import DirectionSet
from .trajectory import load_snapshot, path_losses, read_trajectory, trajectory_directions, trajectory_span

__all__ = [
    "Direction",
    "DirectionSet",
    "LowRankDirection",
    "LowRankDirectionConfig",
    "RandomDirectionConfig",
    "interpolation_target",
    "load_snapshot",
    "low_rank_directions",
    "path_losses",
    "random_directions",
    "read_trajectory",
    "select_parameters",
    "trajectory_directions",
    "trajectory_span",
]
