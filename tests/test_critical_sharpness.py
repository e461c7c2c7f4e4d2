"""Critical sharpness (Kalra et al. 2026): on quadratics λc is exactly the Rayleigh quotient gᵀHg/‖g‖² (dᵀHd/gᵀd
along a given direction), from a handful of forwards; on a tiny GPT-2 it equals the Rayleigh quotient of its exact
Hessian to second order, the gap being the third-order term predicted from the exact third derivative; per block it
is the critical sharpness along each block's share of the gradient."""

from __future__ import annotations

import pytest
import torch
from testing_utils import ExactCurvature

from hf_landscape import Direction, critical_sharpness


class Vector(torch.nn.Module):
    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(x.double().clone())


def quadratic(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(0.5, 9.0, n, dtype=torch.float64)) @ q.T
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x0 = torch.randn(n, generator=g, dtype=torch.float64)
    return Vector(x0), (lambda m: 0.5 * m.x @ a @ m.x + b @ m.x), a, a @ x0 + b


def test_on_a_quadratic_it_is_the_rayleigh_quotient_from_three_forwards():
    model, loss_fn, a, g = quadratic()
    result = critical_sharpness(model, loss_fn, rtol=1e-8, progress=False)
    assert result.sharpness == pytest.approx(float(g @ a @ g / (g @ g)), rel=1e-9)
    assert result.slope == pytest.approx(float(g @ g), rel=1e-12)
    assert result.forwards == 3 and result.converged and result.direction == "gradient"
    low, high = result.interval
    assert low <= result.sharpness <= high and high / low <= 1 + 1e-8


def test_along_a_given_direction_it_is_d_h_d_over_g_d_and_a_direction_uphill_is_turned():
    model, loss_fn, a, g = quadratic(seed=1)
    d = torch.linspace(-1.0, 1.0, len(g), dtype=torch.float64)
    for sign in (1.0, -1.0):
        result = critical_sharpness(model, loss_fn, direction={"x": sign * d}, rtol=1e-8, progress=False)
        expected = float(d @ a @ d) / abs(float(g @ d))
        assert result.sharpness == pytest.approx(expected, rel=1e-8) and result.direction == "given"
    as_direction = critical_sharpness(model, loss_fn, direction=Direction({"x": d}), rtol=1e-8, progress=False)
    assert as_direction.sharpness == result.sharpness


def test_on_a_tiny_model_it_is_the_rayleigh_quotient_to_second_order():
    """Tilting the loss by a linear term, L_s(θ) = L(θ) − s·g₀ᵀ(θ − θ₀), scales the gradient by 1 − s and keeps every
    higher derivative. Along the gradient φ(η) = −aη + ½bη² − ⅙cη³ + O(η⁴) (a = ‖g‖², b = gᵀHg, c = ∇³L[g, g, g]),
    so λc = (b/a)(1 − cη₀/(3b) + O(η₀²)), η₀ = 2a/b: the gap to the Rayleigh quotient b/a shrinks as the gradient,
    and is the third-order term computed from the exact Hessian's change along g."""
    case = ExactCurvature()
    theta, hessian = case.theta, case.hessian()
    g0 = torch.autograd.functional.jacobian(case.loss, theta)
    rayleigh = float(g0 @ hessian @ g0 / (g0 @ g0))

    def second(direction, t0):  # d²/dt² L(θ + t·direction) at t0, by autograd on the scalar t
        t = torch.tensor(t0, dtype=torch.float64, requires_grad=True)
        (d1,) = torch.autograd.grad(case.loss(theta + t * direction), t, create_graph=True)
        (d2,) = torch.autograd.grad(d1, t)
        return float(d2)

    def third(direction, h):  # a central difference of the exact second derivative (a third backward through
        return (second(direction, h) - second(direction, -h)) / (2 * h)  # GPT-2 is not exact in torch 2.13)

    tilt = case.params(g0)
    originals = {n: p.detach().clone() for n, p in case.model.named_parameters()}
    case.model.set_attn_implementation("eager")
    gaps, predicted = [], []
    for s in (0.999, 0.9999):
        g = (1 - s) * g0

        def loss_fn(model, s=s):
            linear = sum((tilt[n] * (p - originals[n])).sum() for n, p in model.named_parameters())
            return case.loss_of(model) - s * linear

        result = critical_sharpness(case.model, loss_fn, rtol=1e-9, max_evaluations=40, progress=False)
        a, b = float(g @ g), float(g @ hessian @ g)
        eta0 = 2 * a / b
        c = third(g, 0.05 * eta0)
        gaps.append(result.sharpness / rayleigh - 1)
        predicted.append(-c * eta0 / (3 * b))
    case.model.set_attn_implementation("sdpa")
    assert result.converged
    assert 9 < gaps[0] / gaps[1] < 11  # first order in the gradient: ten times smaller gradient, ten times smaller gap
    for gap, third_order, tolerance in zip(gaps, predicted, (0.06, 0.01)):  # what is left is second order
        assert abs(gap - third_order) < tolerance * abs(third_order)
