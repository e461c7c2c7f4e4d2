"""Objectives: what a grid point's loss is. `base.py` is the interface (required methods, optional abilities), one
module per objective (`causal_lm`, `glue`, `multiple_choice`, `generation`) with its data (`text_data`, `glue_data`,
`glue_tasks`, `choice_data`) and loss kernels (`nll`, `fused_nll`, `continuations`); `scorers` the built-in scorers of
generated answers; `loss.py` the differentiable loss that curvature asks for."""

from .base import (
    ABILITIES,
    DifferentiableLoss,
    Evaluation,
    LossTensor,
    Objective,
    StackedEvaluation,
    TokenView,
    abilities,
    supports,
)
from .causal_lm import CausalLMObjective, CausalLMObjectiveConfig
from .generation import GenerationObjective, GenerationObjectiveConfig
from .glue import GlueObjective, GlueObjectiveConfig
from .glue_tasks import GLUE_TASKS, GlueTask, glue_task
from .loss import differentiable_loss, loss_terms, loss_value
from .multiple_choice import MultipleChoiceObjective, MultipleChoiceObjectiveConfig

__all__ = [
    "ABILITIES",
    "CausalLMObjective",
    "CausalLMObjectiveConfig",
    "DifferentiableLoss",
    "Evaluation",
    "GLUE_TASKS",
    "GenerationObjective",
    "GenerationObjectiveConfig",
    "GlueObjective",
    "GlueObjectiveConfig",
    "GlueTask",
    "LossTensor",
    "MultipleChoiceObjective",
    "MultipleChoiceObjectiveConfig",
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
