"""The objective interface: what the engine asks of a loss, what it may ask, and how it asks.

An objective tokenizes its data once, `bind`s to a model (checks it, moves the batches to its device) and then
`evaluate`s the model as it stands, as often as the grid needs. It never changes the weights; the engine does that.

Required (`Objective`, an abstract base class): `bind`, `evaluate` (one point), `fingerprint`, and `describe` (by
default from `self.config`). That is enough for every line, plane and interpolation: one point per forward, eager.

Optional abilities, declared as `typing.Protocol`s (in the manner of torchtune's `recipes/interfaces.py`): an objective
that has one gets the faster or wider path that needs it; one that has not is told what to add.

| ability              | methods                                  | what it buys                                       |
|----------------------|------------------------------------------|----------------------------------------------------|
| `StackedEvaluation`  | `evaluate_points`, `loss_points`         | several grid points per forward (`points_per_forward`) |
| `LossTensor`         | `loss_tensor`, `num_tokens`              | deferred loss reads and CUDA graphs on a GPU       |
| `DifferentiableLoss` | `loss_terms`                             | curvature, SAM sharpness, directional derivatives  |
| `TokenView`          | `active_examples`, `tokenizer`           | per-token loss maps and token curvature            |
| `LogitTerms`         | `logit_terms`                            | Gauss-Newton and Fisher curvature (`operator="ggn"`) |

Callers ask `supports(objective, Ability)` (or `require(...)`, which raises an `ObjectiveError` naming the methods to
add), never `hasattr`. `CausalLMObjective` declares all five, `MultipleChoiceObjective` `StackedEvaluation` and
`DifferentiableLoss`, `GlueObjective` `DifferentiableLoss` and `LogitTerms`, `GenerationObjective` none: it decodes
greedily, reading every step's tokens back, so it also declares `eager_only` (no stacking, CUDA graphs or compile).

`eval_mode` and `evaluate` are how the engine, the curvature functions and the objectives themselves run a model:
in eval mode, with every module's own train/eval flag given back afterwards.
"""

from __future__ import annotations

import contextlib
import contextvars
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ConfigError, ObjectiveError

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
    """Base class of objectives: the required interface. Subclasses set `config` (a `BaseConfig`, for `describe`) or
    override `describe`, and implement the abstract methods; the optional abilities are the protocols below."""

    config: Any
    #: the transformers auto class `LandscapeProbe.from_pretrained` loads models with for this objective
    auto_model_class: str = "AutoModelForCausalLM"
    #: True for an objective whose evaluation reads values back to the host as it runs (greedy decoding reads every
    #: step's tokens): the engine evaluates it eagerly, one point per forward, and refuses `compile=True`
    eager_only: bool = False

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


def check_objective(objective: Any) -> None:
    """Refuse, before any work, an `objective` that is not an `Objective`."""
    if not isinstance(objective, Objective):
        raise ConfigError(
            f"`objective` must be an hf_landscape `Objective` (e.g. `CausalLMObjective(texts, tokenizer)`), "
            f"got {type(objective).__name__}."
        )


# --- optional abilities ---------------------------------------------------------------------------------------


@runtime_checkable
class StackedEvaluation(Protocol):
    """Several grid points in one forward: the engine stacks k perturbed copies of the weights (`torch.func.vmap`)
    and passes `forward(inputs)`, which returns the logits of all k points stacked on a leading axis."""

    def evaluate_points(self, model: torch.nn.Module, forward: Callable[..., Any], k: int) -> list[Evaluation]:
        """The `Evaluation` of each of the `k` points (one host sync in all)."""
        ...

    def loss_points(self, model: torch.nn.Module, forward: Callable[..., Any], k: int) -> torch.Tensor:
        """The `k` losses as a float64 tensor on the device, not yet read by the host."""
        ...


@runtime_checkable
class LossTensor(Protocol):
    """The loss as a device tensor the host has not read yet: on a GPU the grid loop reads many points' losses in one
    sync and records the evaluation as a CUDA graph (`engine.graphs`)."""

    @property
    def num_tokens(self) -> int:
        """Tokens one evaluation reads (sizes the GPU work: 2 · parameters · tokens FLOPs)."""
        ...

    def loss_tensor(self, model: torch.nn.Module) -> torch.Tensor:
        """The loss as a float64 scalar tensor on the model's device; `evaluate(model).loss` is its value."""
        ...


@runtime_checkable
class DifferentiableLoss(Protocol):
    """The loss with autograd on, batch by batch: curvature (Hessian eigenvalues and trace), worst-case sharpness
    and directional derivatives take gradients and Hessian-vector products of it (`objectives.loss`)."""

    def loss_terms(self, model: torch.nn.Module) -> Iterator[torch.Tensor]:
        """Differentiable scalar terms, one per batch, that add up to the loss."""
        ...


@runtime_checkable
class TokenView(Protocol):
    """Per-token losses with the tokens they belong to (`LandscapeProbe.token_loss_map`, `token_curvature`);
    `evaluate(model, details=True)` gives `token_losses`."""

    #: the tokenizer that decodes the ids, or None (an attribute, so objectives may set it)
    tokenizer: Any

    @property
    def active_examples(self) -> list[tuple[list[int], list[int]]]:
        """(input ids, labels) of every example the loss covers, in data order."""
        ...


#: the per-row losses `LogitTerm.loss` names; each has a closed-form Hessian in the logits (`curvature.gauss_newton`)
OUTPUT_LOSSES = ("cross_entropy", "squared_error")


@dataclass
class LogitTerm:
    """One batch's share of the loss as a function of its logits: `scale · Σ_rows ℓ(logits[row], targets[row])`.

    Args:
        logits: `(rows, classes)`, differentiable in the weights: the rows that count (a causal LM's counted
            predictions, a classifier's examples).
        targets: `(rows,)`: class ids for `"cross_entropy"`, target values for `"squared_error"` (which reads
            `logits[:, 0]`).
        loss: one of `OUTPUT_LOSSES`: softmax cross-entropy, or the squared error (z₀ − y)².
        scale: what the row sum is multiplied by (1 / the number of tokens or examples of the whole set), so the
            terms add up to the objective's value.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    loss: str
    scale: float


@runtime_checkable
class LogitTerms(Protocol):
    """The loss batch by batch as logits and a per-row loss of them (`LogitTerm`): the generalized Gauss-Newton
    matrix JᵀH_outJ and the empirical Fisher (`curvature`, `operator="ggn"` / `"fisher"`) need the logits, which a
    scalar loss does not give."""

    def logit_terms(self, model: torch.nn.Module) -> Iterator[LogitTerm]:
        """One `LogitTerm` per batch (autograd on, one batch's graph alive at a time); their losses add up to the
        objective's value."""
        ...


#: each optional ability and the members an objective adds to have it
ABILITIES: dict[type, tuple[str, ...]] = {
    StackedEvaluation: ("evaluate_points", "loss_points"),
    LossTensor: ("loss_tensor", "num_tokens"),
    DifferentiableLoss: ("loss_terms",),
    TokenView: ("active_examples", "tokenizer"),
    LogitTerms: ("logit_terms",),
}


def supports(objective: Any, ability: type) -> bool:
    """Whether `objective` has the optional `ability` (one of `ABILITIES`): it declares it as a base class, or has
    every member the protocol lists."""
    return isinstance(objective, ability)


def abilities(objective: Any) -> list[str]:
    """The names of the optional abilities `objective` has, e.g. `['DifferentiableLoss']` for a `GlueObjective`."""
    return [ability.__name__ for ability in ABILITIES if supports(objective, ability)]


def require(objective: Any, ability: type, what: str) -> None:
    """Raise an `ObjectiveError` unless `objective` has `ability`, naming what needs it and the members to add."""
    if supports(objective, ability):
        return
    members = " and ".join(f"`{m}`" for m in ABILITIES[ability])
    raise ObjectiveError(
        f"{what} needs an objective with {members} ({ability.__name__} in `hf_landscape.objectives.base`); "
        f"{type(objective).__name__} has not: add {members} to it, or use an objective that has them "
        "(`CausalLMObjective`)."
    )


# --- how a model is run ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the block; on exit, however it comes, every submodule gets its own `training` flag back.

    `model.train(was_training)` would set one flag for all of them, waking a user's frozen dropout or a `PeftModel`'s
    inner model; this restores each module's flag as it was. Every method that switches modes does it here.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def evaluate(model: torch.nn.Module, objective: Objective, *, details: bool = False) -> Evaluation:
    """One evaluation of `objective` on `model` as it stands, in eval and inference mode."""
    with eval_mode(model), torch.inference_mode():
        return objective.evaluate(model, details=details)
