"""PAC-Bayes sharpness (Jiang et al. 2020): the σ found on quadratics, where the expected rise under the documented
noise draws is known in closed form, its interval (exactly where the Student-t bounds over the draws cross the target,
and covering the σ of the true expectation), the magnitude-aware kind, and bad targets refused before any work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t

from hf_landscape import ConfigError, LandscapeProbe, PacBayesConfig, PacBayesResult, pac_bayes_sharpness
from hf_landscape.curvature.sharpness import _gaussian


class Vector(torch.nn.Module):
    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(x.double().clone())


def draws(model: Vector, seed: int, samples: int) -> list[torch.Tensor]:
    """The documented noise: z ~ N(0, I) drawn per (seed, draw, parameter name), the same at every σ."""
    return [_gaussian(seed, i, ["x"], [model.x.detach()])[0] for i in range(samples)]


def test_sigma_and_interval_on_a_quadratic_at_its_minimum_are_exact():
    n, samples, target = 40, 8, 0.1
    a = torch.linspace(1.0, 3.0, n, dtype=torch.float64)
    model = Vector(torch.zeros(n))
    loss_fn = lambda m: 0.5 * (a * m.x**2).sum()  # noqa: E731
    result = pac_bayes_sharpness(model, loss_fn, target=target, samples=samples, rtol=1e-4, progress=False)
    # Each draw's rise is ½σ²·qᵢ with qᵢ = Σ aⱼzᵢⱼ²; the mean rise ½σ²q̄ meets the target at σ = √(2·target/q̄).
    q = np.array([float((a * z**2).sum()) for z in draws(model, 0, samples)])
    half = student_t.ppf(0.975, samples - 1) * q.std(ddof=1) / math.sqrt(samples)
    assert result.sigma == pytest.approx(math.sqrt(2 * target / q.mean()), rel=1e-4)
    assert result.interval[0] == pytest.approx(math.sqrt(2 * target / (q.mean() + half)), rel=1e-4)
    assert result.interval[1] == pytest.approx(math.sqrt(2 * target / (q.mean() - half)), rel=1e-4)
    assert result.flatness == pytest.approx(1 / result.sigma**2) and result.converged


def test_the_interval_covers_the_sigma_of_the_true_expectation():
    # E[L(θ + u)] − L(θ) = ½σ²·tr(A) at a minimum, whatever the draws: the σ it gives lies in the interval in about
    # 95% of seeds (at most 6 misses in 40 has probability above 0.99 when the coverage is 95%).
    n, target = 50, 0.2
    a = torch.linspace(1.0, 3.0, n, dtype=torch.float64)
    truth = math.sqrt(2 * target / float(a.sum()))
    loss_fn = lambda m: 0.5 * (a * m.x**2).sum()  # noqa: E731
    covered = 0
    for seed in range(40):
        result = pac_bayes_sharpness(Vector(torch.zeros(n)), loss_fn, target=target, seed=seed, progress=False)
        covered += result.interval[0] <= truth <= result.interval[1]
    assert covered >= 34


def test_magnitude_aware_noise_is_scaled_by_the_weights():
    n, samples, target = 30, 6, 0.05
    g = torch.Generator().manual_seed(3)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    model = Vector(torch.randn(n, generator=g, dtype=torch.float64))
    theta = model.x.detach().clone()
    loss_fn = lambda m: 0.5 * (a * m.x**2).sum()  # noqa: E731
    result = pac_bayes_sharpness(
        model, loss_fn, target=target, kind="pac_bayes_magnitude", samples=samples, rtol=1e-5, progress=False
    )
    # u = σ·|θ|⊙z: the mean rise is σ·B + ½σ²·C with B = mean gᵀ(|θ|⊙z), C = mean Σ aⱼθⱼ²zⱼ² (g = Aθ).
    zs = draws(model, 0, samples)
    b = float(np.mean([float((a * theta * theta.abs() * z).sum()) for z in zs]))
    c = float(np.mean([float((a * theta**2 * z**2).sum()) for z in zs]))
    assert result.sigma == pytest.approx((-b + math.sqrt(b * b + 2 * c * target)) / c, rel=1e-4)
    assert result.kind == "pac_bayes_magnitude"


def test_the_probe_routes_pac_bayes_kinds_and_restores_the_weights():
    from testing_utils import build_gpt2

    from hf_landscape import CausalLMObjective

    model = build_gpt2(100, n_layer=1, n_embd=16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    probe = LandscapeProbe(model, CausalLMObjective({"input_ids": [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]]}), progress=False)
    result = probe.sharpness(kind="pac_bayes", target=0.1, samples=4)
    assert isinstance(result, PacBayesResult) and 0 < result.interval[0] <= result.sigma <= result.interval[1]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ConfigError, match=r"`rho` is not an option of 'pac_bayes' sharpness; pass `target=`"):
        probe.sharpness(0.05, kind="pac_bayes")


def test_result_round_trip():
    result = pac_bayes_sharpness(Vector(torch.zeros(20)), lambda m: (m.x**2).sum(), samples=3, progress=False)
    again = PacBayesResult.from_dict(result.to_dict())
    assert again == result and again.flatness_interval == result.flatness_interval


@pytest.mark.parametrize("target", [0.0, -0.1, math.nan, True])
def test_a_target_rise_that_is_not_positive_is_refused(target):
    with pytest.raises(ConfigError, match=r"`target` must be a finite rise of the loss > 0"):
        PacBayesConfig(target=target)


def test_bad_options_are_refused_before_any_evaluation():
    calls = []

    def loss_fn(m):
        calls.append(1)
        return (m.x**2).sum()

    for kwargs in ({"samples": 1}, {"kind": "pacbayes"}, {"rtol": 0.0}, {"target": 0.0}):
        with pytest.raises(ConfigError):
            pac_bayes_sharpness(Vector(torch.zeros(3)), loss_fn, progress=False, **kwargs)
    assert calls == []
