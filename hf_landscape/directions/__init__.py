"""Directions in weight space, one module per kind, all keyed by parameter name."""

from .base import Direction, select_parameters
from .interpolation import interpolation_target
from .random import RandomDirectionConfig, random_directions

__all__ = ["Direction", "RandomDirectionConfig", "interpolation_target", "random_directions", "select_parameters"]
