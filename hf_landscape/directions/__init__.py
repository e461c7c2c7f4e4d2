"""Directions in weight space, one module per kind, all keyed by parameter name.

`base` holds the direction types (`Direction`, `LowRankDirection`) and parameter selection; `registry` the kinds
that `probe.plane(directions="name")` draws (`register_direction_kind`): `random` (`random.py`, its device-independent
draw in `draw.py`), `lora` (`low_rank.py`), `adapter` (`adapter.py`), `hessian` and `ggn`
(the top eigenvectors of the curvature, `curvature.py`), `adversarial` (the worst-case direction at a radius,
`adversarial.py`), and any kind a user registers. `interpolation`
and `trajectory` (PCA of a training run) give directions of their own; `prepare` lines directions up with a model's
parameters; `sets` saves the directions of a plane together (`DirectionSet`).
"""

from . import adapter, adversarial, curvature  # noqa: F401  (register their kinds)
from .adversarial import AdversarialDirectionConfig, adversarial_directions
from .base import Direction, LowRankDirection, select_parameters
from .interpolation import interpolation_target
from .low_rank import LowRankDirectionConfig, low_rank_directions
from .prepare import as_direction, prepare
from .random import RandomDirectionConfig, random_directions
from .registry import DIRECTION_KINDS, direction_kinds, draw_directions, register_direction_kind
from .sets import DirectionSet
from .trajectory import load_snapshot, path_losses, read_trajectory, trajectory_directions, trajectory_span

__all__ = [
    "DIRECTION_KINDS",
    "AdversarialDirectionConfig",
    "Direction",
    "DirectionSet",
    "LowRankDirection",
    "LowRankDirectionConfig",
    "RandomDirectionConfig",
    "adversarial_directions",
    "as_direction",
    "direction_kinds",
    "draw_directions",
    "interpolation_target",
    "load_snapshot",
    "low_rank_directions",
    "path_losses",
    "prepare",
    "random_directions",
    "read_trajectory",
    "register_direction_kind",
    "select_parameters",
    "trajectory_directions",
    "trajectory_span",
]
