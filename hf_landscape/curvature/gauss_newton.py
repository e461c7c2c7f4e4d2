"""Products with the generalized Gauss-Newton matrix G = Jᵀ H_out J and the empirical Fisher F = Jᵀ (Σ eeᵀ) J, from
an objective's logits (`objectives.base.LogitTerms`).

J is the Jacobian of the logits in the parameters, H_out the Hessian of the per-row loss in the logits: for softmax
cross-entropy diag(p) − ppᵀ per row (p the softmax), for the squared error (z₀ − y)² the constant 2 on z₀. G is
positive semi-definite (H_out is), and equals the Hessian minus the term Σ (∂ℓ/∂z)·∇²z that the logits' own curvature
adds (Schraudolph 2002; Martens 2020). For cross-entropy, G is also the true Fisher of the model's predictive
distribution. The empirical Fisher replaces H_out by eeᵀ with e = ∂ℓ/∂z = p − onehot(y) (cross-entropy) or
2(z₀ − y) (squared error): it is Σ over rows of gᵣgᵣᵀ, gᵣ the gradient of one row's loss, which is not G (Kunstner
et al. 2019) but costs the same here.

A product Mv takes three steps per batch: u = Jv, r = M_out·u (closed form, float32 or float64), then Jᵀr (one
backward). Jv comes either exactly, by the double-backward trick (Jv = ∂(Jᵀa)·v/∂a with a dummy a; it needs attention
with a double backward, as an exact Hessian-vector product does), or by central differences of the logits,
(z(θ + εv) − z(θ − εv)) / 2ε (two forwards without a graph; any attention kernel works).

What does not live here: the choice between operators and the weights' edits (`operators`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..objectives.base import LogitTerm, LogitTerms
from .hvp import FlatParameters


def logit_terms(model: torch.nn.Module, objective: LogitTerms) -> Iterator[LogitTerm]:
    """The objective's `LogitTerm`s (one per batch)."""
    yield from objective.logit_terms(model)


def _work_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.promote_types(z.dtype, torch.float32)


def output_product(term: LogitTerm, z: torch.Tensor, u: torch.Tensor, matrix: str) -> torch.Tensor:
    """M_out·u for each row of the logits `z` (detached, (rows, classes)) and output-space vectors `u`, scaled by
    `term.scale`: `matrix` is `"ggn"` (the loss's Hessian in the logits) or `"fisher"` (eeᵀ)."""
    dtype = _work_dtype(z)
    z, u = z.to(dtype), u.to(dtype)
    if term.loss == "cross_entropy":
        p = torch.softmax(z, dim=-1)
        if matrix == "ggn":
            out = p * u - p * (p * u).sum(dim=-1, keepdim=True)
        else:
            e = p.clone()
            e[torch.arange(e.shape[0], device=e.device), term.targets.to(e.device)] -= 1.0
            out = e * (e * u).sum(dim=-1, keepdim=True)
    else:  # squared error (z₀ − y)²: ∂ℓ/∂z₀ = 2(z₀ − y), ∂²ℓ/∂z₀² = 2
        out = torch.zeros_like(u)
        if matrix == "ggn":
            out[:, 0] = 2.0 * u[:, 0]
        else:
            e = 2.0 * (z[:, 0] - term.targets.to(z.device, dtype))
            out[:, 0] = e * e * u[:, 0]
    return out * term.scale


def term_loss(term: LogitTerm) -> torch.Tensor:
    """The term's value, scale · Σ_rows ℓ (for checks)."""
    z = term.logits.to(_work_dtype(term.logits))
    if term.loss == "cross_entropy":
        rows = torch.nn.functional.cross_entropy(z, term.targets.to(z.device), reduction="sum")
    else:
        rows = ((z[:, 0] - term.targets.to(z.device, z.dtype)) ** 2).sum()
    return rows * term.scale


def _accumulate(out_views: list[torch.Tensor], grads: tuple[torch.Tensor | None, ...]) -> None:
    for o, h in zip(out_views, grads):
        if h is not None:
            o.add_(h.to(o.device, o.dtype))


def gn_exact_into(
    model: torch.nn.Module, objective: LogitTerms, flat: FlatParameters, v: torch.Tensor, matrix: str
) -> torch.Tensor:
    """Gv (or Fv), Jv by the double-backward trick, summed over the objective's batches."""
    vs = flat.as_params(v.to(flat.device))
    out = flat.zeros()
    views = flat.views(out)
    for term in logit_terms(model, objective):
        z = term.logits
        if not z.requires_grad:
            continue
        a = torch.zeros_like(z, requires_grad=True)
        jta = torch.autograd.grad(z, flat.params, grad_outputs=a, create_graph=True, allow_unused=True)
        pairs = [(g, u) for g, u in zip(jta, vs) if g is not None and g.requires_grad]
        if not pairs:
            continue
        (jv,) = torch.autograd.grad([g for g, _ in pairs], a, grad_outputs=[u for _, u in pairs], retain_graph=True)
        r = output_product(term, z.detach(), jv, matrix).to(z.dtype)
        _accumulate(views, torch.autograd.grad(z, flat.params, grad_outputs=r, allow_unused=True))
    return out


def gn_difference_into(
    model: torch.nn.Module,
    objective: LogitTerms,
    flat: FlatParameters,
    v: torch.Tensor,
    matrix: str,
    move: Callable[[float], None],
    eps: float,
) -> torch.Tensor:
    """Gv (or Fv) with Jv ≈ (z(θ + εv) − z(θ − εv)) / 2ε: per batch two forwards without a graph and one forward
    and backward at θ. `move(c)` sets the weights to θ + c·v (θ itself for c = 0)."""
    out = flat.zeros()
    views = flat.views(out)
    plus, minus, centre = (logit_terms(model, objective) for _ in range(3))
    try:
        while True:
            with torch.no_grad():
                move(eps)
                z_plus = _next(plus)
                move(-eps)
                z_minus = _next(minus)
            move(0.0)
            term = _next(centre)
            if term is None or z_plus is None or z_minus is None:
                break
            z = term.logits
            dtype = _work_dtype(z)
            jv = (z_plus.logits.to(dtype) - z_minus.logits.to(dtype)) / (2.0 * eps)
            del z_plus, z_minus
            if not z.requires_grad:
                continue
            r = output_product(term, z.detach(), jv, matrix).to(z.dtype)
            _accumulate(views, torch.autograd.grad(z, flat.params, grad_outputs=r, allow_unused=True))
    finally:
        move(0.0)
    return out


def _next(terms: Iterator[LogitTerm]) -> Any:
    return next(terms, None)
