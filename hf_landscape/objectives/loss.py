"""The loss as a differentiable scalar: what curvature, sharpness, directional derivatives and trajectories ask.

`Objective.evaluate` gives floats under inference mode. `loss_terms` gives the same loss with autograd on, batch by
batch: each term is one batch's sum of losses divided by the size of the whole evaluation set, so the terms add up to
the objective's value, and gradients and Hessian-vector products are accumulated one batch at a time (memory does not
grow with the data). It asks the objective's declared ability (`base.DifferentiableLoss`); an objective without it
gets an `ObjectiveError` naming `loss_terms`. Wherever an objective is taken here, a plain callable
`loss_fn(model) -> scalar tensor` is taken too (one term).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..errors import ObjectiveError
from .base import DifferentiableLoss, Objective, evaluate, require, supports


def is_loss_fn(objective: Any) -> bool:
    """Whether `objective` is a plain callable `loss_fn(model) -> scalar tensor` rather than an objective."""
    return callable(objective) and not isinstance(objective, Objective) and not supports(objective, DifferentiableLoss)


def require_differentiable(objective: Any, what: str) -> None:
    """Raise an `ObjectiveError` naming `loss_terms` unless `objective` gives a differentiable loss (an objective with
    `loss_terms`, or a callable `loss_fn`), before any work; `what` names what needs it."""
    if is_loss_fn(objective) or supports(objective, DifferentiableLoss):
        return
    if isinstance(objective, Objective):
        require(objective, DifferentiableLoss, what)
    raise ObjectiveError(
        f"`objective` ({type(objective).__name__}) has no differentiable loss; use a `CausalLMObjective` or "
        "`GlueObjective`, give the objective a `loss_terms(model)` method, or pass a callable "
        "`loss_fn(model) -> scalar tensor`."
    )


def loss_terms(model: torch.nn.Module, objective: Any) -> Iterator[torch.Tensor]:
    """Yield the objective's loss as differentiable per-batch terms that add up to its value.

    Each term is (sum of the batch's losses) / (size of the whole evaluation set), computed exactly as the
    objective's `evaluate` computes its value but with autograd on. Take gradients of one term at a time:
    the graph of a batch is freed before the next batch runs.

    Args:
        model: the model, in the mode the caller wants (eval mode for a deterministic loss).
        objective: a `CausalLMObjective`, a `GlueObjective`, any objective with a `loss_terms(model)` method
            (`base.DifferentiableLoss`), or a callable `loss_fn(model) -> scalar tensor`.
    """
    if supports(objective, DifferentiableLoss):
        yield from objective.loss_terms(model)
        return
    require_differentiable(objective, "A differentiable loss")
    value = objective(model)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ObjectiveError(
            f"`loss_fn(model)` must return a scalar tensor, got {type(value).__name__} "
            f"{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}."
        )
    yield value.reshape(())


def differentiable_loss(model: torch.nn.Module, objective: Any) -> torch.Tensor:
    """The objective's loss as one differentiable scalar (the sum of `loss_terms`).

    It keeps every batch's graph alive until you backpropagate, so memory grows with the evaluation set;
    the curvature functions use `loss_terms` instead. Meant for small data and for checks.

    Example:
    ```python
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from hf_landscape import CausalLMObjective
    >>> from hf_landscape.sharpness import differentiable_loss
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)).eval()
    >>> objective = CausalLMObjective({"input_ids": [[1, 2, 3, 4], [5, 6, 7]]})
    >>> loss = differentiable_loss(model, objective)
    >>> loss.requires_grad, abs(loss.item() - objective.evaluate(model).loss) < 1e-5
    (True, True)

    ```
    """
    terms = list(loss_terms(model, objective))
    return torch.stack([t.reshape(()) for t in terms]).sum()


def loss_value(model: torch.nn.Module, objective: Any) -> float:
    """The objective's value at the model as it stands (inference mode), as the probe reports it."""
    if is_loss_fn(objective):
        with torch.no_grad():
            return float(objective(model))
    return evaluate(model, objective).loss
