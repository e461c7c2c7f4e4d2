"""Objectives: what a grid point's loss is. `base.py` is the interface, one module per objective."""

from .base import Evaluation, Objective
from .causal_lm import CausalLMObjective, CausalLMObjectiveConfig
from .glue import GLUE_TASKS, GlueObjective, GlueObjectiveConfig, GlueTask, glue_task

__all__ = [
    "CausalLMObjective",
    "CausalLMObjectiveConfig",
    "Evaluation",
    "GLUE_TASKS",
    "GlueObjective",
    "GlueObjectiveConfig",
    "GlueTask",
    "Objective",
    "glue_task",
]
