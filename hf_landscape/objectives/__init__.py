"""Objectives: what a grid point's loss is. `base.py` is the interface (required methods, optional abilities), one
module per objective (`causal_lm`; `classification` with its GLUE presets `glue`; `multiple_choice`; `generation`)
with its data (`text_data`, `classification_data`, `glue_data`, `choice_data`), tasks (`tasks`, `glue_tasks`) and loss
kernels (`nll`, `fused_nll`, `continuations`); `scorers` the built-in scorers of generated answers; `loss.py` the
differentiable loss that curvature asks for."""

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
from .classification import TextClassificationObjective, TextClassificationObjectiveConfig
from .generation import GenerationObjective, GenerationObjectiveConfig
from .glue import GlueObjective, GlueObjectiveConfig
from .glue_tasks import GLUE_TASKS, GlueTask, glue_task
from .loss import differentiable_loss, loss_terms, loss_value
from .multiple_choice import MultipleChoiceObjective, MultipleChoiceObjectiveConfig
from .tasks import ClassificationTask

__all__ = [
    "ABILITIES",
    "CausalLMObjective",
    "CausalLMObjectiveConfig",
    "ClassificationTask",
    "DifferentiableLoss",
    "Evaluation",
    "GLUE_TASKS",
    "GenerationObjective",
    "GenerationObjectiveConfig",
    "GlueObjective",
    "GlueObjectiveConfig",
    "GlueTask",
    "LogitTerm",
    "LogitTerms",
    "LossTensor",
    "MultipleChoiceObjective",
    "MultipleChoiceObjectiveConfig",
    "Objective",
    "StackedEvaluation",
    "TextClassificationObjective",
    "TextClassificationObjectiveConfig",
    "TokenView",
    "abilities",
    "differentiable_loss",
    "glue_task",
    "loss_terms",
    "loss_value",
    "supports",
]
