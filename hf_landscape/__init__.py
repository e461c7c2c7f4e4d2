"""hf_landscape: loss landscapes of Hugging Face transformers models (Li et al. 2018)."""

__version__ = "0.1.0"

from .config import BaseConfig
from .directions import Direction, RandomDirectionConfig, interpolation_target, random_directions, select_parameters
from .errors import ConfigError, DirectionError, HubError, LandscapeError, ModelError, ObjectiveError, SurfaceError
from .objectives import CausalLMObjective, CausalLMObjectiveConfig, Evaluation, Objective
from .probe import LandscapeProbe
from .surface import Surface

__all__ = [
    "BaseConfig",
    "CausalLMObjective",
    "CausalLMObjectiveConfig",
    "ConfigError",
    "Direction",
    "DirectionError",
    "Evaluation",
    "HubError",
    "LandscapeError",
    "LandscapeProbe",
    "ModelError",
    "Objective",
    "ObjectiveError",
    "RandomDirectionConfig",
    "Surface",
    "SurfaceError",
    "interpolation_target",
    "random_directions",
    "select_parameters",
]
