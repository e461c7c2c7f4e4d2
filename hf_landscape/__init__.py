"""hf_landscape: loss landscapes of Hugging Face transformers models (Li et al. 2018)."""

from .analysis.tokens import TokenLossMap
from .comparison import CompareReport, compare
from .config import BaseConfig
from .curvature import (
    CriticalSharpnessResult,
    EigenResult,
    PacBayesConfig,
    PacBayesResult,
    SharpnessConfig,
    SharpnessResult,
    SpectrumResult,
    TraceResult,
    critical_sharpness,
    hessian_eigenvalues,
    hessian_spectrum,
    hessian_trace,
    pac_bayes_sharpness,
)
from .directions import (
    AdversarialDirectionConfig,
    Direction,
    DirectionSet,
    LowRankDirection,
    LowRankDirectionConfig,
    RandomDirectionConfig,
    direction_kinds,
    interpolation_target,
    low_rank_directions,
    random_directions,
    register_direction_kind,
    select_parameters,
    trajectory_directions,
)
from .errors import (
    ConfigError,
    DependencyError,
    DirectionError,
    HubDirectionError,
    HubError,
    HubModelError,
    HubObjectiveError,
    HubSurfaceError,
    LandscapeError,
    ModelError,
    ObjectiveError,
    SurfaceError,
)
from .objectives import (
    CausalLMObjective,
    CausalLMObjectiveConfig,
    Evaluation,
    GenerationObjective,
    GenerationObjectiveConfig,
    GlueObjective,
    GlueObjectiveConfig,
    MultipleChoiceObjective,
    MultipleChoiceObjectiveConfig,
    Objective,
    TextClassificationObjective,
    TextClassificationObjectiveConfig,
)
from .probe import LandscapeProbe
from .slices import AutoSpan, BasinResult, CurveConfig
from .surface import Surface
from .version import __version__ as __version__

__all__ = [
    "AdversarialDirectionConfig",
    "AutoSpan",
    "BaseConfig",
    "BasinResult",
    "CausalLMObjective",
    "CausalLMObjectiveConfig",
    "CompareReport",
    "ConfigError",
    "DependencyError",
    "CriticalSharpnessResult",
    "CurvatureCallback",
    "CurveConfig",
    "Direction",
    "DirectionError",
    "DirectionSet",
    "EigenResult",
    "Evaluation",
    "GenerationObjective",
    "GenerationObjectiveConfig",
    "GlueObjective",
    "GlueObjectiveConfig",
    "HubDirectionError",
    "HubError",
    "HubModelError",
    "HubObjectiveError",
    "HubSurfaceError",
    "LandscapeCallback",
    "LandscapeError",
    "LandscapeProbe",
    "LowRankDirection",
    "LowRankDirectionConfig",
    "ModelError",
    "MultipleChoiceObjective",
    "MultipleChoiceObjectiveConfig",
    "Objective",
    "ObjectiveError",
    "PacBayesConfig",
    "PacBayesResult",
    "RandomDirectionConfig",
    "SharpnessConfig",
    "SharpnessResult",
    "SpectrumResult",
    "Surface",
    "SurfaceError",
    "TextClassificationObjective",
    "TextClassificationObjectiveConfig",
    "TokenLossMap",
    "TraceResult",
    "compare",
    "critical_sharpness",
    "direction_kinds",
    "hessian_eigenvalues",
    "hessian_spectrum",
    "hessian_trace",
    "interpolation_target",
    "low_rank_directions",
    "pac_bayes_sharpness",
    "random_directions",
    "register_direction_kind",
    "select_parameters",
    "trajectory_directions",
]


def __getattr__(name: str) -> object:
    # `LandscapeCallback` and `CurvatureCallback` subclass transformers' `TrainerCallback`, whose import pulls in the
    # Trainer stack (seconds); they are loaded on first use only.
    if name in ("LandscapeCallback", "CurvatureCallback"):
        from . import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
