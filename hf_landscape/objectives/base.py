"""The objective interface: what the engine asks of a loss.

An objective tokenizes its data once, `bind`s to a model (checks it, moves the batches to its
device) and then `evaluate`s the model as it stands, as often as the grid needs. It never changes
the weights; the engine does that.
"""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# True while a probe runs with `compile=True` (`engine.compiled_forward`): objectives may compile their loss too.
COMPILING: contextvars.ContextVar[bool] = contextvars.ContextVar("hf_landscape_compiling", default=False)


@dataclass
class Evaluation:
    """The result of one evaluation of an objective.

    Args:
        loss: the objective's value.
        metrics: further numbers computed from the same forward pass (e.g. accuracy).
        sequence_losses: mean loss of each example, in the order the data was given (when asked for).
        token_losses: per example, the loss of each predicted token (`NaN` where masked), when asked for.
    """

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    sequence_losses: np.ndarray | None = None
    token_losses: list[np.ndarray] | None = None


class Objective(ABC):
    """Base class of objectives. Subclasses set `config` and implement the abstract methods."""

    config: Any
    #: the transformers auto class `LandscapeProbe.from_pretrained` loads models with for this objective
    auto_model_class: str = "AutoModelForCausalLM"

    @abstractmethod
    def bind(self, model: torch.nn.Module) -> None:
        """Check `model` can be evaluated and prepare the batches for its device."""

    def expect_dtype(self, dtype: torch.dtype) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Told by the probe that outputs will come in `dtype` (its autocast dtype) rather than the model's own, so
        that one-time set-up for that dtype can start early. Called after `bind`."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, *, details: bool = False) -> Evaluation:
        """Evaluate `model` as it stands (the caller sets eval mode and inference mode)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the exact evaluation data, so two surfaces can tell they saw the same tokens."""

    def describe(self) -> dict[str, Any]:
        """Provenance: the config, the fingerprint and the amount of data."""
        return {"type": type(self).__name__, "config": self.config.to_dict(), "fingerprint": self.fingerprint()}
