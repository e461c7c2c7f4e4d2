"""Objectives: what a grid point's loss is. `base.py` is the interface, one module per objective."""

from .base import Evaluation, Objective
from .causal_lm import CausalLMObjective, CausalLMObjectiveConfig

__all__ = ["CausalLMObjective", "CausalLMObjectiveConfig", "Evaluation", "Objective"]
