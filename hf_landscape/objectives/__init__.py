"""Objectives: what a grid point's loss is. `base.py` is the interface (required methods, optional abilities), one
module per objective (`causal_lm`, `glue`) with its data (`text_data`, `glue_data`, `glue_tasks`) and loss kernels
(`nll`, `fused_nll`); `loss.py` the differentiable loss that curvature asks for."""

from .base import (
    ABILITIES,
    DifferentiableLoss,
    Evaluation,
    LogitTerm,
    LogitTerms,
    LossTensor,
    Objective,
    StackedEvaluation,
    TokenView,
    abilities,
    supports,
)
from .causal_lm import CausalLMObjective, CausalLMObjectiveConfig
from .glue import GlueObjective, GlueObjectiveConfig
from .glue_tasks import GLUE_TASKS, GlueTask, glue_task
from .loss import differentiable_loss, loss_terms, loss_value

__all__ = [
    "ABILITIES",
    "CausalLMObjective",
    "CausalLMObjectiveConfig",
    "DifferentiableLoss",
    "Evaluation",
    "GLUE_TASKS",
    "GlueObjective",
    "GlueObjectiveConfig",
    "GlueTask",
    "LogitTerm",
    "LogitTerms",
    "LossTensor",
    "Objective",
    "StackedEvaluation",
    "TokenView",
    "abilities",
    "differentiable_loss",
    "glue_task",
    "loss_terms",
    "loss_value",
    "supports",
]
