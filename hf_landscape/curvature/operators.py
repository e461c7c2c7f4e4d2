"""The curvature operators the Krylov methods run on: matrix-free products Mv over the selected parameters, for
M = the Hessian, the generalized Gauss-Newton matrix or the empirical Fisher, each by an exact or a
finite-difference product (`CurvatureOperator`, `check_operator`, `check_centre`).

| `operator`  | M                          | `hvp="exact"`                        | `hvp="finite_difference"`                     |
|-------------|----------------------------|--------------------------------------|-----------------------------------------------|
| `"hessian"` | ∇²L                        | double backward (Pearlmutter 1994)   | (∇L(θ + εv) − ∇L(θ − εv)) / 2ε: two gradients |
| `"ggn"`     | JᵀH_outJ (PSD)             | Jv by double backward, then Jᵀ       | Jv from two forwards, then one backward       |
| `"fisher"`  | Σ gᵣgᵣᵀ, empirical, per row | as for `"ggn"`                       | as for `"ggn"`                                |

The finite-difference products build no double-backward graph, so they run with any attention kernel (SDPA's fused
kernels, flash attention) and on sharded models, at the memory of one gradient plus the saved weights. The step is
ε = h·max(‖θ‖, 1)/‖v‖ (θ the selected weights), so the weights move by h·max(‖θ‖, 1) in norm: h = `fd_step`, by
default u^(1/3)/4 with u the unit roundoff of the weights' dtype (float32: 9.8e-4; float64: 1.2e-6; bfloat16: 0.039).
u^(1/3) is the order of the step that balances the O(h²) truncation error of a central difference against its O(u/h)
rounding error; the factor 1/4 is where the two met on the small GPT-2 and Llama models of the tests, whose
truncation error was 40-250·h² and rounding error 0.2-0.5·u/h (relative to ‖Hv‖). There the relative error of a
product was at most 3e-4 in float32 and 1e-8 in float64 (`docs/curvature.md`); it follows the precision the model
computes in (a float64 Llama, whose RMSNorm computes in float32, errs as a float32 one), and in bfloat16 it is of order
10%: load the model in float32 for trustworthy finite-difference curvature. The gradients are
accumulated in float32 (float64 for a float64 model) as they arrive, one parameter at a time, so no full-size
gradient is ever held twice. The weights are moved through `engine.editing` (set from saved originals, copied back
bit for bit) and the user's `.grad` tensors are put aside and given back.

What does not live here: the estimators (`eigen`, `trace`, `spectrum`), the Gauss-Newton output matrices
(`gauss_newton`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..config import check_choice
from ..engine.editors import editing
from ..errors import ConfigError, ObjectiveError
from ..objectives.base import LogitTerms, supports
from ..objectives.loss import is_loss_fn, loss_terms, loss_value, require_differentiable
from .gauss_newton import gn_difference_into, gn_exact_into
from .hvp import FlatParameters, differentiable, double_backward_attention, hvp_into

OPERATORS = ("hessian", "ggn", "fisher")
HVP_MODES = ("exact", "finite_difference")


def check_operator(objective: Any, operator: Any, hvp: Any, what: str) -> None:
    """Refuse, before any work, an unknown `operator` or `hvp`, or an objective that cannot give what the operator
    needs (a differentiable loss; the logits for `"ggn"` and `"fisher"`)."""
    check_choice("operator", operator, OPERATORS)
    check_choice("hvp", hvp, HVP_MODES)
    require_differentiable(objective, what)
    if operator != "hessian" and not supports(objective, LogitTerms):
        name = "a loss function" if is_loss_fn(objective) else type(objective).__name__
        raise ObjectiveError(
            f"`operator={operator!r}` needs the objective's logits (`logit_terms`, `LogitTerms` in "
            f"`hf_landscape.objectives.base`), and {name} gives only a scalar loss; use `operator='hessian'`, or an "
            "objective with `logit_terms` (`CausalLMObjective`, `GlueObjective`)."
        )


def check_fd_step(fd_step: Any) -> float | None:
    """`fd_step` as a float in (0, 1), or None for the default."""
    if fd_step is None:
        return None
    ok = isinstance(fd_step, (int, float)) and not isinstance(fd_step, bool) and math.isfinite(fd_step)
    if not ok or not 0.0 < fd_step < 1.0:
        raise ConfigError(f"`fd_step` must be a number strictly between 0 and 1 (e.g. 1e-3), or None, got {fd_step!r}.")
    return float(fd_step)


# The default step is this times u^(1/3) (see the module docstring for the measurements behind it).
FD_STEP_FACTOR = 0.25


def default_fd_step(dtype: torch.dtype) -> float:
    """`FD_STEP_FACTOR`·u^(1/3), u the unit roundoff of `dtype` (half the machine epsilon)."""
    return FD_STEP_FACTOR * float((torch.finfo(dtype).eps / 2.0) ** (1.0 / 3.0))


def check_centre(model: torch.nn.Module, objective: Any) -> float:
    """The loss at the weights, or an `ObjectiveError` when it is not finite (before any curvature work)."""
    value = loss_value(model, objective)
    if not math.isfinite(value):
        raise ObjectiveError(
            f"The loss at the model's weights is {value}, so its curvature is undefined; check the weights for NaN or "
            "inf (`any(not p.isfinite().all() for p in model.parameters())`) and the data for examples with no "
            "counted token, or load the model in float32."
        )
    return value


class CurvatureOperator:
    """Mv for one operator and product kind over the flat selected parameters; call it inside `active()`.

    Args:
        model: the model (weights moved only inside `active()`, and restored).
        objective: the objective or `loss_fn`, checked with `check_operator` first.
        flat: the selected parameters.
        operator: `"hessian"`, `"ggn"` or `"fisher"`.
        hvp: `"exact"` or `"finite_difference"`.
        fd_step: the relative step h of the finite differences (see the module docstring).

    `products` counts the products made.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Any,
        flat: FlatParameters,
        *,
        operator: str = "hessian",
        hvp: str = "exact",
        fd_step: float | None = None,
    ) -> None:
        self.model = model
        self.objective = objective
        self.flat = flat
        self.operator = operator
        self.hvp = hvp
        weights_dtype = min((p.dtype for p in flat.params), key=lambda d: torch.finfo(d).bits)
        self.fd_step = check_fd_step(fd_step) or default_fd_step(weights_dtype)
        self.products = 0
        self._editor: Any = None
        self._theta_norm = 1.0

    @property
    def double_backward(self) -> bool:
        """Whether the products differentiate a backward pass (and need attention with a double backward)."""
        return self.hvp == "exact"

    def describe(self) -> dict[str, Any]:
        """What the products were, for a result's record."""
        out: dict[str, Any] = {"operator": self.operator, "hvp": self.hvp}
        if self.hvp == "finite_difference":
            out["fd_step"] = self.fd_step
        return out

    @contextlib.contextmanager
    def active(self) -> Iterator[CurvatureOperator]:
        """Eval mode, grad on for exactly the selected parameters, eager attention where products need a double
        backward, and (finite differences) the weights' editor and the user's `.grad` put aside; all given back."""
        flat = self.flat
        with contextlib.ExitStack() as stack:
            stack.enter_context(differentiable(self.model, flat.params))
            if self.double_backward:
                stack.enter_context(double_backward_attention(self.model))
            else:
                named = dict(zip(flat.names, flat.params))
                self._editor = stack.enter_context(editing(self.model, named))
                stack.enter_context(_grads_put_aside(flat.params))
                self._theta_norm = max(_norm(flat.params), 1.0)
            try:
                yield self
            finally:
                self._editor = None

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """M·v for a flat vector `v` (on any device); the result is on the parameters' device."""
        self.products += 1
        flat, v = self.flat, v.to(self.flat.device)
        if self.hvp == "exact":
            if self.operator == "hessian":
                return hvp_into(self.model, self.objective, flat, v)
            return gn_exact_into(self.model, self.objective, flat, v, self.operator)
        eps = self._step(v)
        if eps == 0.0:
            return flat.zeros()
        vs = flat.as_params(v)
        move = lambda c: self._move(c, vs)  # noqa: E731
        if self.operator == "hessian":
            return self._difference_of_gradients(v, vs, eps)
        return gn_difference_into(self.model, self.objective, flat, v, self.operator, move, eps)

    def _step(self, v: torch.Tensor) -> float:
        norm = float(torch.linalg.vector_norm(v))
        return 0.0 if norm == 0.0 else self.fd_step * self._theta_norm / norm

    def _move(self, c: float, vs: list[torch.Tensor]) -> None:
        if c == 0.0:
            self._editor.restore()
        else:
            self._editor.set_linear((c,), [vs])

    def _difference_of_gradients(self, v: torch.Tensor, vs: list[torch.Tensor], eps: float) -> torch.Tensor:
        """(∇L(θ + εv) − ∇L(θ − εv)) / 2ε, each parameter's gradient added into the float32/64 result as soon as
        autograd has it (a post-accumulate hook), then dropped."""
        flat = self.flat
        out = flat.zeros()
        views = flat.views(out)
        sign = [1.0]

        def hook_for(i: int) -> Any:
            def hook(p: torch.Tensor) -> None:
                if p.grad is not None:  # autograd calls the hook after accumulating, so it is there
                    views[i].add_(p.grad, alpha=sign[0])
                p.grad = None

            return hook

        handles = [p.register_post_accumulate_grad_hook(hook_for(i)) for i, p in enumerate(flat.params)]
        try:
            for s in (1.0, -1.0):
                sign[0] = s
                self._move(s * eps, vs)
                for term in loss_terms(self.model, self.objective):
                    if term.requires_grad:
                        term.backward()
        finally:
            for handle in handles:
                handle.remove()
            for p in flat.params:
                p.grad = None
            self._move(0.0, vs)
        return out.div_(2.0 * eps)


@contextlib.contextmanager
def _grads_put_aside(params: list[torch.nn.Parameter]) -> Iterator[None]:
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        yield
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(torch.linalg.vector_norm(t.detach())) ** 2 for t in tensors))


@contextlib.contextmanager
def operator_for(
    model: torch.nn.Module,
    objective: Any,
    flat: FlatParameters,
    *,
    operator: str = "hessian",
    hvp: str = "exact",
    fd_step: float | None = None,
) -> Iterator[CurvatureOperator]:
    """A `CurvatureOperator`, active for the block."""
    op = CurvatureOperator(model, objective, flat, operator=operator, hvp=hvp, fd_step=fd_step)
    with op.active():
        yield op
