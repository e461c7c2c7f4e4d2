"""Hessian eigenvalues and trace, sharpness: exact values on quadratics with known Hessians, agreement with the
full Hessian of a tiny GPT-2 (`torch.autograd.functional.hessian`), and the restore guarantees."""

from __future__ import annotations

import functools
import logging
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from testing_utils import record_bars
from torch.func import functional_call

from hf_landscape import CausalLMObjective, ConfigError, ObjectiveError
from hf_landscape.objectives.base import Evaluation, Objective
from hf_landscape.sharpness import (
    SharpnessConfig,
    differentiable_loss,
    double_backward_attention,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    layer_of,
    sharpness,
)

# --- a quadratic with a known Hessian -----------------------------------------------------------------


class TwoTensors(torch.nn.Module):
    """θ = (layer0.weight (3 × 4), layer1.bias (5,)), 17 numbers in float64."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layer0 = torch.nn.Module()
        self.layer1 = torch.nn.Module()
        self.layer0.weight = torch.nn.Parameter(torch.randn(3, 4, generator=g, dtype=torch.float64))
        self.layer1.bias = torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))

    def flat(self) -> torch.Tensor:
        return torch.cat([self.layer0.weight.reshape(-1), self.layer1.bias])


N = 17


def matrix_with_spectrum(eigenvalues, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def quadratic(a: torch.Tensor, b: torch.Tensor | None = None):
    """loss_fn(model) = ½ θᵀAθ + bᵀθ; its Hessian is A everywhere."""
    b = torch.zeros(a.shape[0], dtype=torch.float64) if b is None else b

    def loss_fn(model):
        x = model.flat()
        return 0.5 * x @ a @ x + b @ x

    return loss_fn


def value(a, b, x) -> float:
    return float(0.5 * x @ a @ x + b @ x)


def test_eigenvalues_of_a_known_spectrum():
    spectrum = [9.0, 7.0, 5.0] + list(np.linspace(-2.0, 3.0, N - 3))
    model = TwoTensors()
    result = hessian_eigenvalues(model, quadratic(matrix_with_spectrum(spectrum)), k=3, tol=1e-8, progress=False)
    np.testing.assert_allclose(result.eigenvalues, [9.0, 7.0, 5.0], rtol=1e-8)
    assert result.converged and result.num_parameters == N
    assert np.all(result.residuals <= 1e-8 * np.abs(result.eigenvalues))


def test_eigenvalues_are_largest_algebraic_not_largest_magnitude():
    # Large negative curvature (an unconverged point); the top algebraic eigenvalues are small and positive.
    n = 60
    spectrum = list(np.linspace(-100.0, -10.0, n - 3)) + [0.3, 0.2, 0.1]
    a = matrix_with_spectrum(spectrum)

    class Vector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))

    result = hessian_eigenvalues(
        Vector(), lambda m: 0.5 * m.x @ a @ m.x, k=3, tol=1e-6, max_iter=500, return_eigenvectors=True, progress=False
    )
    np.testing.assert_allclose(result.eigenvalues, [0.3, 0.2, 0.1], rtol=1e-6)
    assert result.converged
    # The vectors returned are those of the top algebraic eigenvalues, in that order: A·y = λ·y, with nothing of the
    # eigenvector of -100 (the largest magnitude, which power iteration would have found).
    bottom = torch.linalg.eigh(a).eigenvectors[:, 0]
    for lam, d in zip([0.3, 0.2, 0.1], result.eigenvectors):
        y = d["x"]
        torch.testing.assert_close(a @ y, lam * y, rtol=0, atol=1e-6)
        assert abs(float(y @ bottom)) < 1e-6


def test_restarted_lanczos_with_a_small_basis_gives_the_same_values():
    spectrum = list(np.linspace(-50.0, 1.0, N - 3)) + [4.0, 3.0, 2.5]
    loss_fn = quadratic(matrix_with_spectrum(spectrum))
    result = hessian_eigenvalues(TwoTensors(), loss_fn, k=3, tol=1e-7, max_iter=400, basis_size=5, progress=False)
    assert result.restarts > 0
    np.testing.assert_allclose(result.eigenvalues, [4.0, 3.0, 2.5], rtol=1e-7)


def test_offloaded_basis_gives_the_same_values():
    loss_fn = quadratic(matrix_with_spectrum(list(np.linspace(-5.0, 6.0, N))))
    a = hessian_eigenvalues(TwoTensors(), loss_fn, k=2, tol=1e-9, progress=False)
    b = hessian_eigenvalues(TwoTensors(), loss_fn, k=2, tol=1e-9, offload=True, progress=False)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12)


def test_eigenvectors_are_name_keyed_unit_eigenvectors():
    a = matrix_with_spectrum([8.0, 6.0] + [1.0] * (N - 2))
    result = hessian_eigenvalues(TwoTensors(), quadratic(a), k=2, tol=1e-10, return_eigenvectors=True, progress=False)
    for lam, d in zip(result.eigenvalues, result.eigenvectors):
        assert set(d.keys()) == {"layer0.weight", "layer1.bias"}
        y = torch.cat([d["layer0.weight"].reshape(-1), d["layer1.bias"]])
        assert abs(y.norm().item() - 1.0) < 1e-12
        torch.testing.assert_close(a @ y, lam * y, rtol=0, atol=1e-8)
        assert d.config["kind"] == "hessian_eigenvector"


def test_unconverged_lanczos_says_so(caplog):
    spectrum = list(np.linspace(-100.0, 0.0, N - 3)) + [0.3, 0.2, 0.1]
    with caplog.at_level(logging.WARNING, logger="hf_landscape.curvature"):
        result = hessian_eigenvalues(
            TwoTensors(), quadratic(matrix_with_spectrum(spectrum)), k=3, tol=1e-12, max_iter=4, progress=False
        )
    assert not result.converged and result.iterations == 4
    assert "did not reach" in caplog.text


def test_hessian_vector_product_is_a_times_v():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 3.0, N)))
    model = TwoTensors()
    v = {"layer0.weight": torch.ones(3, 4, dtype=torch.float64), "layer1.bias": torch.arange(5.0, dtype=torch.float64)}
    hv = hessian_vector_product(model, quadratic(a), v)
    flat_v = torch.cat([v["layer0.weight"].reshape(-1), v["layer1.bias"]])
    torch.testing.assert_close(torch.cat([hv["layer0.weight"].reshape(-1), hv["layer1.bias"]]), a @ flat_v)


def test_trace_of_a_diagonal_hessian_is_exact():
    # z_i² = 1, so zᵀ D z = tr(D) for every Rademacher z.
    diag = torch.linspace(-3.0, 5.0, N, dtype=torch.float64)
    result = hessian_trace(TwoTensors(), quadratic(torch.diag(diag)), samples=5, progress=False)
    assert result.trace == pytest.approx(diag.sum().item(), rel=1e-12)
    assert result.stderr == pytest.approx(0.0, abs=1e-12)


def test_trace_estimate_and_its_standard_error_match_theory():
    a = matrix_with_spectrum(list(np.linspace(-2.0, 4.0, N)))
    samples = 1000
    result = hessian_trace(TwoTensors(), quadratic(a), samples=samples, seed=3, progress=False)
    exact = torch.trace(a).item()
    # Var(zᵀAz) = 2·Σ_{i≠j} A_ij² for Rademacher z.
    off = a - torch.diag(torch.diag(a))
    expected_stderr = (2.0 * (off**2).sum().item() / samples) ** 0.5
    assert abs(result.trace - exact) <= 4 * expected_stderr
    assert result.stderr == pytest.approx(expected_stderr, rel=0.15)


def test_trace_per_layer_blocks_add_up_and_match_block_traces():
    a = matrix_with_spectrum(list(np.linspace(-2.0, 4.0, N)))
    result = hessian_trace(TwoTensors(), quadratic(a), samples=500, per_layer=True, progress=False)
    assert list(result.per_layer) == ["layer0", "layer1"]
    assert sum(t for t, _ in result.per_layer.values()) == pytest.approx(result.trace, rel=1e-12)
    blocks = {"layer0": torch.trace(a[:12, :12]).item(), "layer1": torch.trace(a[12:, 12:]).item()}
    for name, (trace, stderr) in result.per_layer.items():
        assert abs(trace - blocks[name]) <= 4 * stderr


def test_layer_of_groups_by_block():
    assert layer_of("transformer.h.0.attn.c_attn.weight") == "transformer.h.0"
    assert layer_of("model.layers.11.mlp.up_proj.weight") == "model.layers.11"
    assert layer_of("transformer.wte.weight") == "transformer.wte"
    assert layer_of("bias") == "bias"


# --- a tiny GPT-2 against its full Hessian -------------------------------------------------------------

VOCAB = 24
SEQUENCES = [[3, 17, 5, 9, 22, 1, 0, 14, 8, 11], [7, 2, 19, 4, 4, 13, 6], [21, 10, 15, 12, 23]]


@pytest.fixture(scope="module")
def tiny():
    """A float64 GPT-2 with 396 parameters, its objective, and its full Hessian (all parameters, tied once)."""
    from conftest import build_gpt2

    model = build_gpt2(VOCAB, seed=0, n_layer=1, n_embd=4, n_head=1, n_positions=12).double().eval()
    objective = CausalLMObjective({"input_ids": SEQUENCES}, batch_size=2)
    objective.bind(model)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def loss(flat):  # written independently of hf_landscape: per-sequence NLL sums over all predicted tokens
        params = {n: c.view(s) for n, c, s in zip(names, flat.split([s.numel() for s in shapes]), shapes)}
        total = 0.0
        for seq in SEQUENCES:
            ids = torch.tensor([seq])
            logits = functional_call(model, params, (ids,)).logits[0, :-1]
            total = total + F.cross_entropy(logits, ids[0, 1:], reduction="sum")
        return total / sum(len(s) - 1 for s in SEQUENCES)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    model.set_attn_implementation("eager")  # the reference needs a double backward too
    hessian = torch.autograd.functional.hessian(loss, flat, vectorize=True)
    model.set_attn_implementation("sdpa")
    offsets = dict(zip(names, np.cumsum([0] + [s.numel() for s in shapes])))
    return model, objective, hessian, offsets, loss(flat).item()


def test_differentiable_loss_equals_the_objective(tiny):
    model, objective, _, _, reference = tiny
    loss = differentiable_loss(model, objective)
    assert loss.requires_grad
    assert loss.item() == pytest.approx(objective.evaluate(model).loss, rel=1e-12)
    assert loss.item() == pytest.approx(reference, rel=1e-12)


def test_differentiable_loss_of_llama_with_left_padding(llama_model, tokenizer, texts):
    model = llama_model().eval()
    objective = CausalLMObjective(texts[:5], tokenizer, batch_size=2, padding_side="left")
    objective.bind(model)
    loss = differentiable_loss(model, objective)
    assert loss.item() == pytest.approx(objective.evaluate(model).loss, rel=1e-5)


def test_differentiable_loss_of_a_glue_objective():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from hf_landscape import GlueObjective

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=40, n_positions=32, num_labels=2, pad_token_id=0)
    model = GPT2ForSequenceClassification(config).eval()
    objective = GlueObjective("sst2", data={"input_ids": [[5, 6, 7, 8], [9, 10], [11, 12, 13]], "label": [0, 1, 1]})
    objective.bind(model)
    assert differentiable_loss(model, objective).item() == pytest.approx(objective.evaluate(model).loss, rel=1e-6)


def test_top_eigenvalues_match_the_full_hessian(tiny):
    model, objective, hessian, _, _ = tiny
    assert model.config._attn_implementation == "sdpa"  # whose CPU kernel has no double backward
    result = hessian_eigenvalues(model, objective, k=3, tol=1e-6, max_iter=200, progress=False)
    exact = torch.linalg.eigvalsh(hessian).flip(0)[:3].numpy()
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-4)
    assert result.converged and result.num_parameters == hessian.shape[0]
    assert model.config._attn_implementation == "sdpa"


def test_top_eigenvalues_of_a_parameter_subset_match_the_hessian_block(tiny):
    model, objective, hessian, offsets, _ = tiny
    lo, hi = offsets["transformer.h.0.mlp.c_fc.weight"], offsets["transformer.h.0.mlp.c_fc.bias"]
    exact = torch.linalg.eigvalsh(hessian[lo:hi, lo:hi]).flip(0)[:2].numpy()
    result = hessian_eigenvalues(model, objective, k=2, tol=1e-6, include=[r"mlp\.c_fc\.weight"], progress=False)
    assert result.num_parameters == hi - lo
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-4)


def test_trace_matches_the_full_hessian(tiny):
    model, objective, hessian, _, _ = tiny
    result = hessian_trace(model, objective, samples=60, progress=False)
    assert abs(result.trace - torch.trace(hessian).item()) <= 3 * result.stderr


def test_curvature_restores_mode_grad_flags_and_attention(gpt2_model, tokenizer, texts):
    model = gpt2_model(n_layer=1, n_embd=8)
    model.train()
    model.transformer.wpe.weight.requires_grad_(False)
    objective = CausalLMObjective(texts[:3], tokenizer)
    objective.bind(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hessian_trace(model, objective, samples=2, progress=False)
    assert model.training and model.config._attn_implementation == "sdpa"
    assert not model.transformer.wpe.weight.requires_grad and model.transformer.wte.weight.requires_grad
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_attention_implementation_restored_after_an_error(gpt2_model):
    model = gpt2_model(n_layer=1, n_embd=8)
    with pytest.raises(RuntimeError, match="boom"), double_backward_attention(model):
        assert model.config._attn_implementation == "eager"
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_objective_without_a_differentiable_loss_is_rejected():
    with pytest.raises(ObjectiveError, match="differentiable"):
        hessian_trace(TwoTensors(), object(), samples=2, progress=False)


class LossOnly(Objective):
    """Evaluates, but gives no differentiable loss."""

    config = None

    def bind(self, model):
        pass

    def evaluate(self, model, *, details=False):
        return Evaluation(loss=0.0)

    def fingerprint(self):
        return "loss-only"


def test_a_hessian_vector_product_names_itself_when_the_objective_has_no_loss_terms():
    with pytest.raises(ObjectiveError, match=r"^A Hessian-vector product needs an objective with `loss_terms`"):
        hessian_vector_product(TwoTensors(), LossOnly(), {"layer1.bias": torch.ones(5, dtype=torch.float64)})


def test_a_hessian_vector_product_comes_in_each_parameters_dtype():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    x = torch.randn(4, 3, generator=g).to(torch.bfloat16)
    loss_fn = lambda m: (torch.tanh(m(x).float()) ** 2).sum()  # noqa: E731
    vector = {"weight": torch.randn(2, 3, generator=g, dtype=torch.float64)}
    # computed in float32, handed back as the weights are
    assert hessian_vector_product(model, loss_fn, vector)["weight"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"k": 0}, "k"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 2, "k": 3}, "max_iter"),
        ({"include_1d": "yes"}, "include_1d"),
    ],
)
def test_bad_eigen_options_are_config_errors(kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}`"):
        hessian_eigenvalues(TwoTensors(), quadratic(torch.eye(N, dtype=torch.float64)), progress=False, **kwargs)


# --- sharpness ------------------------------------------------------------------------------------------


@pytest.fixture
def quad():
    """A quadratic with mixed curvature and a nonzero gradient at the model's weights."""
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    b = torch.randn(N, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return a, b, TwoTensors()


def test_worst_case_one_step_is_sam(quad):
    a, b, model = quad
    x = model.flat().detach()
    g = a @ x + b
    eps = 0.3 * g / g.norm()  # Foret et al. 2021, eq. 2
    result = sharpness(model, quadratic(a, b), rho=0.3, kind="worst", steps=1, progress=False)
    assert result.sharpness == pytest.approx(value(a, b, x + eps) - value(a, b, x), rel=1e-12)
    assert result.base_loss == pytest.approx(value(a, b, x), rel=1e-12)
    assert result.stderr is None


def test_adaptive_one_step_is_asam(quad):
    a, b, model = quad
    x = model.flat().detach()
    g = a @ x + b
    t = x.abs() + 0.01
    eps = 0.2 * t**2 * g / (t * g).norm()  # Kwon et al. 2021, eq. 11 with T = |θ| + η
    result = sharpness(model, quadratic(a, b), rho=0.2, kind="adaptive", steps=1, eta=0.01, progress=False)
    assert result.sharpness == pytest.approx(value(a, b, x + eps) - value(a, b, x), rel=1e-12)


def test_worst_case_ascent_reaches_the_maximum_over_the_ball(quad):
    a, b, model = quad
    x = model.flat().detach()
    g, rho = a @ x + b, 0.5
    # max of gᵀε + ½εᵀAε over ‖ε‖ ≤ ρ: ε = (μI − A)⁻¹g with μ > λ_max(A) and ‖ε‖ = ρ (bisection on μ).
    lo, hi = torch.linalg.eigvalsh(a)[-1].item() + 1e-12, 1e6
    for _ in range(200):
        mu = (lo + hi) / 2
        eps = torch.linalg.solve(mu * torch.eye(N, dtype=torch.float64) - a, g)
        lo, hi = (mu, hi) if eps.norm() > rho else (lo, mu)
    exact = value(a, b, x + eps) - value(a, b, x)
    result = sharpness(model, quadratic(a, b), rho=rho, kind="worst", steps=50, progress=False)
    assert result.sharpness == pytest.approx(exact, rel=1e-9)


def test_at_a_critical_point_the_ascent_starts_along_the_first_average_draw():
    """Where ∇L = 0 the first step goes along the seed's first Gaussian draw: the point the average kind's first
    sample evaluates, ρ·z₀/‖z₀‖."""
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    model = TwoTensors()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    worst = sharpness(model, quadratic(a), rho=0.5, kind="worst", steps=1, seed=3, progress=False)
    average = sharpness(model, quadratic(a), rho=0.5, kind="average", samples=2, seed=3, progress=False)
    assert worst.losses[0] == pytest.approx(average.losses[0], rel=1e-12)
    assert worst.losses[0] != pytest.approx(average.losses[1], rel=1e-6)


class OneWeight(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))


def test_the_ascent_stops_where_the_gradient_vanishes():
    loss_fn = lambda m: torch.clamp(m.w, max=0.5).sum()  # noqa: E731 - slope 1 below 0.5, flat above
    result = sharpness(OneWeight(), loss_fn, rho=1.0, kind="worst", steps=5, progress=False)
    assert result.losses.tolist() == [0.5]  # one unit step to w = 1, where the gradient is 0: stopped there
    assert result.sharpness == 0.5


def test_an_ascent_that_cannot_start_has_no_losses_and_no_sharpness():
    loss_fn = lambda m: torch.sqrt(m.w).sum()  # noqa: E731 - an infinite gradient at w = 0
    result = sharpness(OneWeight(), loss_fn, rho=1.0, kind="worst", steps=5, progress=False)
    assert result.losses.shape == (0,) and result.losses.dtype == np.float64
    assert result.sharpness == 0.0 and result.interval == (0.0, 0.0)  # θ itself is the best point


def test_sharpness_losses_are_float64():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    assert sharpness(TwoTensors(), quadratic(a), rho=0.1, steps=2, progress=False).losses.dtype == np.float64


def test_a_bad_step_size_is_named():
    with pytest.raises(ConfigError, match="^`step_size`"):
        SharpnessConfig(step_size=0.0)


def test_worst_sharpness_names_itself_when_the_objective_has_no_loss_terms():
    with pytest.raises(ObjectiveError, match=r"^Sharpness of kind 'worst' needs an objective with `loss_terms`"):
        sharpness(TwoTensors(), LossOnly(), rho=0.1, kind="worst", progress=False)


@pytest.mark.parametrize(
    ("name", "layer"),
    [("h.0.bias", "h.0"), ("transformer.h.0.attn.c_attn.weight", "transformer.h.0"), ("wte.weight", "wte")],
)
def test_a_parameter_belongs_to_the_layer_of_its_block_index(name, layer):
    assert layer_of(name) == layer


def test_worst_case_at_a_critical_point_climbs_the_top_curvature(caplog):
    # ∇L(0) = 0: SAM's step is undefined; from a random start the ascent finds ½·λ_max·ρ² along the top eigenvector.
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    model = TwoTensors()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    with caplog.at_level(logging.WARNING, logger="hf_landscape.curvature"):
        result = sharpness(model, quadratic(a), rho=0.5, kind="worst", steps=200, progress=False)
    assert "random direction" in caplog.text
    assert result.sharpness == pytest.approx(0.5 * 4.0 * 0.5**2, rel=1e-6)


def sphere_average_moments(g: torch.Tensor, a: torch.Tensor, rho: float) -> tuple[float, float]:
    """Mean and standard deviation of gᵀε + ½εᵀAε for ε uniform on the sphere of radius ρ in Rⁿ: E[εεᵀ] = ρ²I/n,
    odd moments vanish, and for u uniform on the unit sphere Var(uᵀAu) = 2(n·tr(A²) − tr(A)²) / (n²(n + 2))."""
    n = g.numel()
    tr, tr2 = torch.trace(a).item(), torch.trace(a @ a).item()
    mean = 0.5 * rho**2 * tr / n
    var = rho**2 * float(g @ g) / n + 0.25 * rho**4 * 2 * (n * tr2 - tr**2) / (n**2 * (n + 2))
    return mean, var**0.5


def test_average_sharpness_matches_its_expectation(quad):
    a, b, model = quad
    rho, samples = 0.5, 400
    mean, std = sphere_average_moments(a @ model.flat().detach() + b, a, rho)
    expected_stderr = std / samples**0.5
    result = sharpness(model, quadratic(a, b), rho=rho, kind="average", samples=samples, progress=False)
    assert len(result.losses) == samples
    assert abs(result.sharpness - mean) <= 4 * expected_stderr
    assert result.stderr == pytest.approx(expected_stderr, rel=0.15)


class TwinTensors(torch.nn.Module):
    """Two equal-shaped float64 tensors holding the same values."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        values = torch.randn(3, 4, generator=g, dtype=torch.float64)
        self.first = torch.nn.Parameter(values.clone())
        self.second = torch.nn.Parameter(values.clone())


def test_equal_shaped_tensors_get_their_own_noise():
    """L = ½‖w₁ − w₂‖² is 0 at w₁ = w₂ and stays 0 under any noise that moves both tensors alike: each draw is
    ½‖ε₁ − ε₂‖² > 0 only if each tensor's noise is drawn from its own name."""
    model = TwinTensors()
    rho, samples, n = 0.5, 200, 24
    result = sharpness(
        model,
        lambda m: 0.5 * (m.first - m.second).pow(2).sum(),
        rho=rho,
        kind="average",
        samples=samples,
        progress=False,
    )
    assert result.base_loss == 0.0
    assert (result.losses > 0).all()
    # ε uniform on the ρ-sphere of R^n, H = [[I, −I], [−I, I]]: E = ½ρ²·tr(H)/n = ½ρ², Var = ρ⁴ / (2(n + 2)).
    expected_stderr = (rho**4 / (2 * (n + 2)) / samples) ** 0.5
    assert abs(result.sharpness - 0.5 * rho**2) <= 4 * expected_stderr
    assert result.stderr == pytest.approx(expected_stderr, rel=0.2)


def test_adaptive_average_sharpness_matches_its_expectation(quad):
    a, b, model = quad
    x = model.flat().detach()
    t = torch.diag(x.abs())
    rho, samples = 0.5, 400
    # ε = T·δ, δ uniform on the ρ-sphere: gᵀTδ + ½δᵀ(TAT)δ
    mean, std = sphere_average_moments(t @ (a @ x + b), t @ a @ t, rho)
    expected_stderr = std / samples**0.5
    result = sharpness(model, quadratic(a, b), rho=rho, kind="adaptive_average", samples=samples, progress=False)
    assert abs(result.sharpness - mean) <= 4 * expected_stderr
    assert result.stderr == pytest.approx(expected_stderr, rel=0.15)


def test_small_rho_worst_case_is_rho_times_gradient_norm(tiny):
    model, objective, _, _, _ = tiny
    loss = differentiable_loss(model, objective)
    grad_norm = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]).norm()
    rho = 1e-5
    result = sharpness(model, objective, rho=rho, kind="worst", steps=1, progress=False)
    assert result.sharpness == pytest.approx(rho * grad_norm.item(), rel=1e-3)  # first order in ρ
    assert result.base_loss == objective.evaluate(model).loss


@pytest.mark.parametrize("kind", ["worst", "average", "adaptive", "adaptive_average"])
def test_sharpness_restores_weights_bit_for_bit_and_mode(kind, gpt2_model, tokenizer, texts):
    model = gpt2_model(n_layer=1, n_embd=8)
    model.train()
    objective = CausalLMObjective(texts[:3], tokenizer)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    sharpness(model, objective, rho=0.5, kind=kind, steps=2, samples=2, progress=False)
    assert model.training
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_sharpness_restores_weights_after_an_error(quad):
    a, b, model = quad
    before = {n: t.clone() for n, t in model.state_dict().items()}
    calls = {"n": 0}

    def failing(m):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return quadratic(a, b)(m)

    with pytest.raises(RuntimeError, match="boom"):
        sharpness(model, failing, rho=1.0, kind="worst", steps=5, progress=False)
    assert calls["n"] == 3
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"rho": 0.0}, "rho"),
        ({"kind": "sam"}, "kind"),
        ({"steps": 0}, "steps"),
        ({"samples": 1}, "samples"),
        ({"eta": -0.1}, "eta"),
        ({"include": ["("]}, "include"),
    ],
)
def test_bad_sharpness_options_are_config_errors(kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}`"):
        SharpnessConfig(**kwargs)


def test_sharpness_config_round_trip():
    config = SharpnessConfig(rho=0.1, kind="average", samples=8, exclude=["wte"])
    assert SharpnessConfig.from_dict(config.to_dict()) == config


def test_objective_first_bound_under_inference_mode_still_differentiates(gpt2_model, tokenizer, texts):
    model = gpt2_model(n_layer=1, n_embd=8).eval()
    objective = CausalLMObjective(texts[:3], tokenizer)
    with torch.inference_mode():
        expected = objective.evaluate(model).loss  # binds: the batches are inference tensors
    assert differentiable_loss(model, objective).item() == pytest.approx(expected, rel=1e-6)


# --- confidence intervals ---------------------------------------------------------------------------------


def test_eigenvalue_intervals_enclose_an_eigenvalue_even_when_unconverged():
    spectrum = np.array([9.0, 7.0, 5.0] + list(np.linspace(-2.0, 3.0, N - 3)))
    result = hessian_eigenvalues(
        TwoTensors(), quadratic(matrix_with_spectrum(spectrum)), k=3, tol=1e-12, max_iter=6, progress=False
    )
    assert not result.converged
    np.testing.assert_allclose(result.intervals[:, 1] - result.intervals[:, 0], 2 * result.residuals, rtol=1e-12)
    for low, high in result.intervals:
        assert np.any((spectrum >= low) & (spectrum <= high))


def test_trace_interval_is_the_student_t_interval_of_the_samples():
    from scipy.stats import t

    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    result = hessian_trace(TwoTensors(), quadratic(a), samples=10, per_layer=True, confidence=0.9, progress=False)
    half = t.ppf(0.95, 9) * result.stderr
    assert result.interval == pytest.approx((result.trace - half, result.trace + half), rel=1e-12)
    low, high = result.per_layer_intervals["layer1"]
    mean, stderr = result.per_layer["layer1"]
    assert (low + high) / 2 == pytest.approx(mean, rel=1e-12) and high - low == pytest.approx(
        2 * t.ppf(0.95, 9) * stderr
    )
    assert result.to_dict()["confidence"] == 0.9


def test_average_sharpness_interval_is_over_the_draws(quad):
    a, b, model = quad
    result = sharpness(model, quadratic(a, b), rho=0.5, kind="average", samples=8, confidence=0.8, progress=False)
    from hf_landscape.stats import t_interval

    assert result.interval == t_interval(result.losses - result.base_loss, 0.8)
    assert result.interval_over == "draws"


def test_worst_case_interval_is_over_the_examples_at_the_point_found(tiny):
    model, objective, _, _, _ = tiny
    result = sharpness(model, objective, rho=0.05, kind="worst", steps=3, progress=False)
    low, high = result.interval
    assert result.interval_over == "examples"
    assert low < result.sharpness < high
    assert (low + high) / 2 == pytest.approx(result.sharpness, rel=1e-6)  # Σ per-example increases / Σ tokens


def test_worst_case_interval_matches_the_ratio_formula_on_one_step(gpt2_model, tokenizer, texts):
    from hf_landscape.stats import ratio_interval

    model = gpt2_model(n_layer=1, n_embd=8).double().eval()
    objective = CausalLMObjective(texts[:5], tokenizer)
    with torch.no_grad():
        base = objective.evaluate(model, details=True).token_losses
    loss = differentiable_loss(model, objective)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    norm = torch.cat([g.reshape(-1) for g in grads]).norm()
    result = sharpness(model, objective, rho=0.2, kind="worst", steps=1, confidence=0.9, progress=False)
    with torch.no_grad():  # SAM's point, by hand
        for p, g in zip(model.parameters(), grads):
            p.add_(0.2 * g / norm)
        moved = objective.evaluate(model, details=True).token_losses
    d = [np.nansum(m) - np.nansum(b0) for m, b0 in zip(moved, base)]
    c = [np.isfinite(b0).sum() for b0 in base]
    _, expected = ratio_interval(d, c, 0.9)
    np.testing.assert_allclose(result.interval, expected, rtol=1e-9)


class TokensTurningNaN(LossOnly):
    """L = x₀² + x₁² over x = layer1.bias[:2]; two examples of token losses, [x₀², √(1.2 − x₀)] and [x₁² + 1]: the
    second token is finite at x₀ = 1 and NaN beyond x₀ = 1.2."""

    def evaluate(self, model, *, details=False):
        x = model.layer1.bias.detach()
        tokens = [np.array([float(x[0] ** 2), math.sqrt(1.2 - x[0]) if x[0] <= 1.2 else math.nan]),
                  np.array([float(x[1] ** 2 + 1)])]  # fmt: skip
        return Evaluation(loss=float(x[0] ** 2 + x[1] ** 2), token_losses=tokens if details else None)

    def loss_terms(self, model):
        yield model.layer1.bias[0] ** 2 + model.layer1.bias[1] ** 2


def test_a_token_that_turns_nan_at_the_point_found_makes_the_examples_interval_nan():
    """The tokens that count are fixed at θ: a token lost on the way makes its example's increase NaN, not smaller."""
    model = TwoTensors()
    with torch.no_grad():
        model.layer1.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))
    result = sharpness(model, TokensTurningNaN(), rho=0.5, kind="worst", steps=1, include=["layer1"], progress=False)
    assert result.sharpness == pytest.approx(1.5**2 - 1.0)  # SAM's ε = (0.5, 0, ...): x₀ = 1.5, past 1.2
    assert np.isnan(result.interval).all()


class WithAnEmptyExample(TokensTurningNaN):
    """Three examples of token losses; the second has no finite token at all."""

    def evaluate(self, model, *, details=False):
        x = [float(v) for v in model.layer1.bias.detach()[:2]]
        tokens = [np.array([x[0] ** 2, x[0] * x[1] + 1]), np.array([math.nan, math.nan]),
                  np.array([x[0] ** 3, 2 * x[1] ** 2 + x[0]])]  # fmt: skip
        return Evaluation(loss=x[0] ** 2 + x[1] ** 2, token_losses=tokens if details else None)


def test_an_example_without_a_counted_token_is_left_out_of_the_examples_interval():
    from hf_landscape.stats import ratio_interval

    model = TwoTensors()
    with torch.no_grad():
        model.layer1.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))
    result = sharpness(model, WithAnEmptyExample(), rho=0.5, kind="worst", steps=1, include=["layer1"], progress=False)
    # at x = (1.5, 0): increases (2.25 + 1) − (1 + 1) and (3.375 + 1.5) − (1 + 1), over 2 tokens each
    _, expected = ratio_interval(np.array([1.25, 2.875]), np.array([2.0, 2.0]), result.config["confidence"])
    np.testing.assert_allclose(result.interval, expected, rtol=1e-12)


def test_a_loss_function_gives_no_examples_interval(quad):
    a, b, model = quad
    result = sharpness(model, quadratic(a, b), rho=0.3, kind="worst", steps=1, progress=False)
    assert np.isnan(result.interval).all()


def test_bad_confidence_is_a_config_error():
    with pytest.raises(ConfigError, match="`confidence` must be a number strictly between 0 and 1"):
        SharpnessConfig(confidence=95)


def test_per_layer_eigenvalues_are_those_of_each_diagonal_block():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    result = hessian_eigenvalues(
        TwoTensors(), quadratic(a), k=2, tol=1e-10, max_iter=200, per_layer=True, progress=False
    )
    assert list(result.per_layer) == ["layer0", "layer1"]
    blocks = {"layer0": a[:12, :12], "layer1": a[12:, 12:]}  # layer0.weight: 12 numbers, layer1.bias: 5
    for name, block in blocks.items():
        expected = torch.linalg.eigvalsh(block).flip(0)[:2].numpy()
        np.testing.assert_allclose(result.per_layer[name].eigenvalues, expected, rtol=1e-9)
        assert result.per_layer[name].num_parameters == block.shape[0]
    np.testing.assert_allclose(result.eigenvalues, torch.linalg.eigvalsh(a).flip(0)[:2].numpy(), rtol=1e-9)
    assert set(result.to_dict()["per_layer"]) == {"layer0", "layer1"}


def test_worst_case_interval_over_glue_examples_is_the_t_interval_of_their_increases():
    from transformers import BertConfig, BertForSequenceClassification

    from hf_landscape import GlueObjective
    from hf_landscape.stats import t_interval

    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=30)
    model = BertForSequenceClassification(config).double().eval()
    data = {"input_ids": [[2, 5, 3], [2, 7, 8, 3], [2, 9, 3], [2, 11, 12, 13, 3], [2, 4, 3]], "label": [1, 0, 1, 0, 1]}
    objective = GlueObjective("sst2", data=data)
    with torch.no_grad():
        base = objective.evaluate(model, details=True).sequence_losses
    grads = torch.autograd.grad(differentiable_loss(model, objective), list(model.parameters()))
    norm = torch.cat([g.reshape(-1) for g in grads]).norm()
    result = sharpness(model, objective, rho=0.5, kind="worst", steps=1, progress=False)
    with torch.no_grad():  # SAM's point by hand; every example counts once
        for p, g in zip(model.parameters(), grads):
            p.add_(0.5 * g / norm)
        moved = objective.evaluate(model, details=True).sequence_losses
    assert result.interval_over == "examples"
    np.testing.assert_allclose(result.interval, t_interval(moved - base), rtol=1e-9)


# --- what the results record, and the algorithms' own counts --------------------------------------------------


def test_lanczos_counts_its_products_and_restarts():
    """Pinned for these problems and seed 0: a change of the algorithm shows here even where the values converge."""
    restarted = hessian_eigenvalues(
        TwoTensors(),
        quadratic(matrix_with_spectrum(list(np.linspace(-50.0, 1.0, N - 3)) + [4.0, 3.0, 2.5])),
        k=3,
        tol=1e-7,
        max_iter=400,
        basis_size=5,
        progress=False,
    )
    assert (restarted.iterations, restarted.restarts) == (115, 110)
    plain = hessian_eigenvalues(
        TwoTensors(),
        quadratic(matrix_with_spectrum([9.0, 7.0, 5.0] + list(np.linspace(-2.0, 3.0, N - 3)))),
        k=3,
        tol=1e-8,
        progress=False,
    )
    assert (plain.iterations, plain.restarts) == (N, 0)  # the whole space: exact
    n = 60
    a = matrix_with_spectrum(list(np.linspace(-100.0, -10.0, n - 3)) + [0.3, 0.2, 0.1])

    class Vector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))

    default_basis = hessian_eigenvalues(
        Vector(), lambda m: 0.5 * m.x @ a @ m.x, k=3, tol=1e-6, max_iter=500, progress=False
    )
    assert (default_basis.iterations, default_basis.restarts) == (56, 4)  # a basis of max(20, 2k + 2) = 20 vectors


def test_repeated_eigenvalues_are_all_found():
    """A Krylov space of a Hessian with few distinct eigenvalues closes early (an invariant subspace): Lanczos goes
    on from fresh random directions, which find every copy of a repeated eigenvalue."""
    a = matrix_with_spectrum([5.0, 5.0, 5.0] + [1.0] * (N - 3))
    result = hessian_eigenvalues(TwoTensors(), quadratic(a), k=3, tol=1e-10, progress=False)
    np.testing.assert_allclose(result.eigenvalues, [5.0, 5.0, 5.0], rtol=1e-10)
    assert result.converged and result.iterations == N


def test_a_krylov_space_that_closes_on_the_last_vector_of_the_basis_ends_the_search():
    """Three distinct eigenvalues: the Krylov space closes after 3 products, filling a basis of 3. Its Ritz values
    are exact, its coupling to the rest is 0, so Lanczos stops there without a restart."""
    a = matrix_with_spectrum([5.0, 3.0] + [1.0] * (N - 2))
    result = hessian_eigenvalues(TwoTensors(), quadratic(a), k=1, tol=1e-10, basis_size=3, progress=False)
    assert result.eigenvalues[0] == pytest.approx(5.0, rel=1e-10)
    assert (result.iterations, result.restarts, result.converged) == (3, 0, True)


def test_a_zero_hessian_has_converged_zero_eigenvalues_after_one_basis():
    """Every product is 0: each Krylov space closes at once, the residuals and coupling are 0, so the zero Ritz
    values meet tol·|θ| = 0 and the search ends after one basis of 4."""
    zero = torch.zeros(N, N, dtype=torch.float64)
    result = hessian_eigenvalues(TwoTensors(), quadratic(zero), k=2, tol=1e-10, basis_size=4, progress=False)
    assert result.eigenvalues.tolist() == [0.0, 0.0]
    assert (result.iterations, result.restarts, result.converged) == (4, 0, True)


def test_every_eigenvalue_when_k_is_the_dimension():
    spectrum = np.linspace(-5.0, 6.0, N)
    result = hessian_eigenvalues(
        TwoTensors(), quadratic(matrix_with_spectrum(list(spectrum))), k=N, tol=1e-8, progress=False
    )
    np.testing.assert_allclose(result.eigenvalues, spectrum[::-1], rtol=1e-8, atol=1e-10)


def test_eigen_defaults():
    a = matrix_with_spectrum([9.0, 7.0, 5.0] + list(np.linspace(-2.0, 3.0, N - 3)))
    result = hessian_eigenvalues(TwoTensors(), quadratic(a), progress=False)
    assert len(result.eigenvalues) == 3 and result.tol == 1e-3 and result.eigenvectors is None
    again = hessian_eigenvalues(TwoTensors(), quadratic(a), seed=0, k=3, tol=1e-3, progress=False)
    np.testing.assert_array_equal(result.eigenvalues, again.eigenvalues)
    n = 300  # a clustered spectrum that 100 products do not resolve: the default max_iter stops it
    b = matrix_with_spectrum(list(np.linspace(0.0, 1.0, n)))

    class Vector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))

    slow = hessian_eigenvalues(Vector(), lambda m: 0.5 * m.x @ b @ m.x, k=1, tol=1e-14, progress=False)
    assert slow.iterations == 100 and not slow.converged


def test_eigen_result_as_a_dict_and_its_eigenvectors_config():
    a = matrix_with_spectrum([8.0, 6.0] + [1.0] * (N - 2))
    result = hessian_eigenvalues(
        TwoTensors(), quadratic(a), k=2, tol=1e-10, seed=4, return_eigenvectors=True, progress=False
    )
    d = result.to_dict()
    assert d == {
        "eigenvalues": [float(x) for x in result.eigenvalues],
        "residuals": [float(x) for x in result.residuals],
        "intervals": result.intervals.tolist(),
        "converged": True,
        "iterations": result.iterations,
        "restarts": result.restarts,
        "tol": 1e-10,
        "num_parameters": N,
        "operator": "hessian",
        "hvp": "exact",
        "per_block": {},
        **({"confidence": d["confidence"]} if "confidence" in d else {}),
        **({"per_layer": d["per_layer"]} if "per_layer" in d else {}),
    }
    assert result.eigenvalues.dtype == np.float64
    for i, vector in enumerate(result.eigenvectors):
        assert vector.config == {
            "kind": "hessian_eigenvector",
            "index": i,
            "eigenvalue": float(result.eigenvalues[i]),
            "seed": 4,
        }


def test_trace_result_as_a_dict_and_defaults():
    a = matrix_with_spectrum(list(np.linspace(-2.0, 4.0, N)))
    result = hessian_trace(TwoTensors(), quadratic(a), progress=False)
    assert result.samples == 100 and result.per_layer == {}
    again = hessian_trace(TwoTensors(), quadratic(a), samples=100, seed=0, progress=False)
    assert again.trace == result.trace
    d = hessian_trace(TwoTensors(), quadratic(a), samples=4, per_layer=True, progress=False).to_dict()
    assert {"trace", "stderr", "interval", "per_layer", "per_layer_intervals", "samples", "num_parameters"} <= set(d)
    assert d["samples"] == 4 and d["num_parameters"] == N and sorted(d["per_layer"]) == ["layer0", "layer1"]
    assert all(len(v) == 2 for v in d["per_layer_intervals"].values())


def test_lanczos_progress_bar(capsys):
    a = matrix_with_spectrum([9.0, 7.0, 5.0] + list(np.linspace(-2.0, 3.0, N - 3)))
    hessian_eigenvalues(TwoTensors(), quadratic(a), k=3, tol=1e-8, max_iter=50, progress=False)
    assert capsys.readouterr().err == ""
    hessian_eigenvalues(TwoTensors(), quadratic(a), k=3, tol=1e-8, max_iter=50, progress=True)
    err = capsys.readouterr().err
    assert "lanczos" in err and "/50" in err and "hvp" in err


@pytest.mark.parametrize(("kwargs", "argument"), [({"basis_size": 4}, "basis_size"), ({"seed": True}, "seed")])
def test_more_bad_eigen_options(kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}`"):
        hessian_eigenvalues(TwoTensors(), quadratic(torch.eye(N, dtype=torch.float64)), k=3, progress=False, **kwargs)


def test_smallest_eigen_options_are_accepted():
    a = matrix_with_spectrum([9.0, 7.0, 5.0] + list(np.linspace(-2.0, 3.0, N - 3)))
    assert hessian_eigenvalues(TwoTensors(), quadratic(a), k=1, tol=1e-8, progress=False).eigenvalues[
        0
    ] == pytest.approx(9.0)
    five = hessian_eigenvalues(TwoTensors(), quadratic(a), k=3, basis_size=5, tol=1e-6, max_iter=400, progress=False)
    np.testing.assert_allclose(five.eigenvalues, [9.0, 7.0, 5.0], rtol=1e-5)

    class Two(torch.nn.Module):  # two parameters: the basis may be as small as k
        def __init__(self):
            super().__init__()
            self.x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    b = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    two = hessian_eigenvalues(Two(), lambda m: 0.5 * m.x @ b @ m.x, k=2, basis_size=2, tol=1e-10, progress=False)
    np.testing.assert_allclose(two.eigenvalues, [3.0, 1.0], rtol=1e-10)


def test_eigenvalues_of_the_parameters_left_after_exclude():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    result = hessian_eigenvalues(TwoTensors(), quadratic(a), k=2, tol=1e-10, exclude=["layer1"], progress=False)
    assert result.num_parameters == 12
    np.testing.assert_allclose(result.eigenvalues, torch.linalg.eigvalsh(a[:12, :12]).flip(0)[:2].numpy(), rtol=1e-9)


def test_hessian_vector_product_takes_a_vector_in_another_dtype():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 3.0, N)))
    v = {"layer0.weight": torch.ones(3, 4), "layer1.bias": torch.arange(5.0)}  # float32, the model float64
    hv = hessian_vector_product(TwoTensors(), quadratic(a), v)
    flat_v = torch.cat([v["layer0.weight"].reshape(-1), v["layer1.bias"]]).double()
    assert hv["layer1.bias"].dtype == torch.float64
    torch.testing.assert_close(torch.cat([hv["layer0.weight"].reshape(-1), hv["layer1.bias"]]), a @ flat_v)
    from hf_landscape import DirectionError

    with pytest.raises(DirectionError, match="`vector`"):
        hessian_vector_product(TwoTensors(), quadratic(a), {"layer0.weight": torch.ones(2, 2)})


def test_a_callable_objective_is_an_objective_not_a_loss_function():
    from hf_landscape.objectives.base import Evaluation, Objective
    from hf_landscape.objectives.loss import loss_value

    class Both(Objective):
        def __call__(self, model):
            raise AssertionError("called as a loss function")

        def bind(self, model):
            pass

        def evaluate(self, model, *, details=False):
            return Evaluation(loss=2.5)

        def fingerprint(self):
            return "0"

    assert loss_value(TwoTensors(), Both()) == 2.5
    assert loss_value(TwoTensors(), lambda m: torch.tensor(1.5)) == 1.5


# --- sharpness: the parameters it perturbs and what it reports ------------------------------------------------


@pytest.mark.parametrize("selection", [{"include": ["first"]}, {"exclude": ["second"]}])
def test_average_sharpness_perturbs_only_the_selected_tensors(selection):
    """L = ½‖w₁ − w₂‖² at w₁ = w₂ with only w₁ perturbed: every draw gives ½‖ε₁‖² = ½ρ², exactly."""
    rho = 0.5
    result = sharpness(
        TwinTensors(),
        lambda m: 0.5 * (m.first - m.second).pow(2).sum(),
        rho=rho,
        kind="average",
        samples=5,
        progress=False,
        **selection,
    )
    np.testing.assert_allclose(result.losses, 0.5 * rho**2, rtol=1e-12)


def test_sharpness_result_records_its_kind_rho_config_and_stderr(quad):
    a, b, model = quad
    config = SharpnessConfig(rho=0.3, kind="average", samples=6, seed=2)
    result = sharpness(model, quadratic(a, b), config=config, progress=False)
    assert (result.kind, result.rho, result.config) == ("average", 0.3, config.to_dict())
    diffs = result.losses - result.base_loss
    assert result.stderr == pytest.approx(float(np.std(diffs, ddof=1) / np.sqrt(6)), rel=1e-12)


def test_sharpness_seed_must_be_an_integer():
    with pytest.raises(ConfigError, match="`seed`"):
        SharpnessConfig(seed=True)
    with pytest.raises(ConfigError, match="`exclude`"):
        SharpnessConfig(exclude=["("])


def test_sharpness_progress_bars(quad, capsys):
    a, b, model = quad
    sharpness(model, quadratic(a, b), rho=0.3, kind="worst", steps=3, progress=True)
    err = capsys.readouterr().err
    assert "worst sharpness" in err and "/3" in err and re.search(r"[?\d]step/s|s/step\]", err)
    sharpness(model, quadratic(a, b), rho=0.3, kind="average", samples=4, progress=True)
    err = capsys.readouterr().err
    assert "average sharpness" in err and "/4" in err and re.search(r"[?\d]draw/s|s/draw\]", err)
    sharpness(model, quadratic(a, b), rho=0.3, kind="average", samples=4, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("kind", "unit", "total"), [("worst", "step", 3), ("average", "draw", 4)])
def test_a_sharpness_bar_counts_every_step_and_is_cleared(quad, monkeypatch, kind, unit, total):
    bars = record_bars(monkeypatch, "hf_landscape.curvature.sharpness")
    a, b, model = quad
    sharpness(model, quadratic(a, b), rho=0.3, kind=kind, steps=3, samples=4)  # progress by default
    ((bar, kwargs),) = bars
    assert (bar.n, bar.total, bar.unit) == (total, total, unit)
    assert kwargs["leave"] is False and kwargs["disable"] is False  # shown by default, cleared when done


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rho": 0.0}, "`rho` must be a finite number > 0"),
        ({"rho": float("inf")}, "`rho` must be a finite number > 0"),
        ({"rho": True}, "`rho` must be a finite number > 0"),
        ({"rho": "0.1"}, "`rho` must be a finite number > 0"),
        ({"eta": -0.5}, "`eta` must be a finite number >= 0"),
        ({"steps": True}, "`steps` must be an integer >= 1"),
        ({"include": ["("]}, "`include`"),
    ],
)
def test_sharpness_option_messages(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SharpnessConfig(**kwargs)


@pytest.mark.parametrize("argument", ["include", "exclude"])
def test_curvature_selection_patterns_are_checked(argument):
    with pytest.raises(ConfigError, match=f"`{argument}`"):
        hessian_trace(
            TwoTensors(), quadratic(torch.eye(N, dtype=torch.float64)), samples=2, progress=False, **{argument: ["("]}
        )


def test_parameters_the_loss_does_not_use_have_a_zero_block():
    """layer1.bias takes no part in the loss: its gradient is None, its Hessian block zero."""
    a = matrix_with_spectrum(list(np.linspace(-2.0, 4.0, 12)))
    loss = lambda m: 0.5 * m.layer0.weight.reshape(-1) @ a @ m.layer0.weight.reshape(-1)  # noqa: E731
    result = hessian_trace(TwoTensors(), loss, samples=50, per_layer=True, progress=False)
    assert result.per_layer["layer1"] == (0.0, 0.0)
    hv = hessian_vector_product(
        TwoTensors(),
        loss,
        {"layer0.weight": torch.ones(3, 4, dtype=torch.float64), "layer1.bias": torch.ones(5, dtype=torch.float64)},
    )
    assert torch.equal(hv["layer1.bias"], torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(hv["layer0.weight"].reshape(-1), a @ torch.ones(12, dtype=torch.float64))


def test_average_sharpness_draws_are_reproducible_and_depend_on_the_seed(quad):
    a, b, model = quad
    run = lambda seed: sharpness(model, quadratic(a, b), rho=0.3, kind="average", samples=4, seed=seed, progress=False)  # noqa: E731
    np.testing.assert_array_equal(run(3).losses, run(3).losses)
    assert not np.array_equal(run(3).losses, run(4).losses)


def test_ascent_from_a_critical_point_depends_on_the_seed():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))

    def run(seed):
        model = TwoTensors()
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return sharpness(model, quadratic(a), rho=0.5, kind="worst", steps=2, seed=seed, progress=False).losses

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_worst_case_step_size(quad):
    a, b, model = quad
    x = model.flat().detach()
    g = a @ x + b
    eps = 0.1 * g / g.norm()  # one step of length 0.1, inside the ball of radius 0.3
    result = sharpness(model, quadratic(a, b), rho=0.3, kind="worst", steps=1, step_size=0.1, progress=False)
    assert result.sharpness == pytest.approx(value(a, b, x + eps) - value(a, b, x), rel=1e-12)


def test_adaptive_ascent_over_two_steps(quad):
    """ASAM's projected ascent in δ, ε = T⊙δ, T = |θ| + η: two steps, by hand."""
    a, b, model = quad
    x = model.flat().detach()
    t, rho = x.abs() + 0.01, 0.2
    delta, best = torch.zeros_like(x), 0.0
    for _ in range(2):
        u = t * (a @ (x + t * delta) + b)
        delta = delta + (rho / u.norm()) * u
        delta = delta * min(1.0, rho / float(delta.norm()))
        best = max(best, value(a, b, x + t * delta) - value(a, b, x))
    result = sharpness(model, quadratic(a, b), rho=rho, kind="adaptive", steps=2, eta=0.01, progress=False)
    assert result.sharpness == pytest.approx(best, rel=1e-10)


def test_lanczos_draws_from_its_own_seed_not_the_global_generator():
    a = matrix_with_spectrum([5.0, 5.0, 5.0] + [1.0] * (N - 3))  # breakdowns: fresh random directions are drawn too
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        runs.append(
            hessian_eigenvalues(
                TwoTensors(), quadratic(a), k=3, tol=1e-10, seed=7, return_eigenvectors=True, progress=False
            )
        )
    np.testing.assert_array_equal(runs[0].eigenvalues, runs[1].eigenvalues)
    for d0, d1 in zip(runs[0].eigenvectors, runs[1].eigenvectors):
        assert torch.equal(d0["layer1.bias"], d1["layer1.bias"])
    other = hessian_eigenvalues(
        TwoTensors(), quadratic(a), k=3, tol=1e-10, seed=8, return_eigenvectors=True, progress=False
    )
    assert not torch.equal(other.eigenvectors[0]["layer1.bias"], runs[0].eigenvectors[0]["layer1.bias"])


class Vector(torch.nn.Module):
    """θ = one float64 vector of `n` numbers."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))

    def flat(self) -> torch.Tensor:
        return self.theta


def basis_rows(monkeypatch, **kwargs) -> int:
    """The most vectors of the parameters' size that one `hessian_eigenvalues` call allocates at once."""
    n = 40
    shapes = []
    zeros = torch.zeros

    def spy(*size, **options):
        shapes.append(tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size)
        return zeros(*size, **options)

    monkeypatch.setattr(torch, "zeros", spy)
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, n)))
    hessian_eigenvalues(Vector(n), quadratic(a), tol=1e-8, max_iter=200, progress=False, **kwargs)
    monkeypatch.undo()
    return max(s[0] for s in shapes if len(s) == 2 and s[1] == n)


@pytest.mark.parametrize(("kwargs", "rows"), [({"k": 3}, 21), ({"k": 10}, 23), ({"k": 2, "basis_size": 6}, 7)])
def test_the_lanczos_basis_holds_its_size_plus_the_residual(monkeypatch, kwargs, rows):
    """`basis_size` vectors and the residual direction; by default max(20, 2k + 2) of them."""
    assert basis_rows(monkeypatch, **kwargs) == rows


def test_random_start_values_are_the_16_bit_grid_over_minus_one_to_one():
    from hf_landscape.curvature.hvp import random_start

    v = random_start(1 << 20, torch.Generator().manual_seed(0), "cpu", torch.float64)
    k = v * 65536  # an odd integer: (2i + 1) / 65536 for a 16-bit i
    assert torch.equal(k, k.round()) and bool((k.remainder(2) == 1).all())
    assert (float(v.min()), float(v.max())) == (-32767.5 / 32768, 32767.5 / 32768)  # every value hit at 2^20 draws


def test_the_lanczos_bar_counts_every_product_and_is_cleared(monkeypatch):
    bars = record_bars(monkeypatch, "hf_landscape.curvature.eigen")
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    result = hessian_eigenvalues(TwoTensors(), quadratic(a), k=2, tol=1e-10, max_iter=60)  # progress by default
    ((bar, kwargs),) = bars
    assert (bar.n, bar.total, bar.unit, bar.desc) == (result.iterations, 60, "hvp", "lanczos")
    assert kwargs["leave"] is False and kwargs["disable"] is False


@pytest.mark.parametrize("n", [1, 8, 13, 64])
def test_rademacher_signs_are_the_bits_of_numpys_bytes_in_order(n):
    """Sign i is bit i % 8 (least significant first) of byte i // 8 of PCG64's bytes, seeded by one 62-bit draw
    from the generator: the same probes on every device and in every version."""
    from hf_landscape.curvature.hvp import rademacher

    seed = int(torch.randint(0, 1 << 62, (1,), generator=torch.Generator().manual_seed(7)))
    bits = np.unpackbits(np.frombuffer(np.random.default_rng(seed).bytes(8), dtype=np.uint8), bitorder="little")
    signs = rademacher(n, torch.Generator().manual_seed(7), "cpu", torch.float64)
    assert signs.tolist() == (2.0 * bits[:n] - 1.0).tolist()


def test_a_parameter_the_loss_does_not_use_leaves_worst_sharpness_as_it_is():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, 12)))
    loss_fn = lambda m: 0.5 * m.layer0.weight.reshape(-1) @ a @ m.layer0.weight.reshape(-1)  # noqa: E731
    worst = sharpness(TwoTensors(), loss_fn, rho=0.3, kind="worst", steps=3, progress=False)  # layer1 unused
    alone = sharpness(TwoTensors(), loss_fn, rho=0.3, kind="worst", steps=3, include=["layer0"], progress=False)
    assert worst.sharpness == pytest.approx(alone.sharpness, rel=1e-12)


def test_the_trace_bar_counts_every_sample_and_is_cleared(monkeypatch):
    bars = record_bars(monkeypatch, "hf_landscape.curvature.trace")
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    hessian_trace(TwoTensors(), quadratic(a), samples=5)  # progress by default
    ((bar, kwargs),) = bars
    assert (bar.n, bar.total, bar.unit, bar.desc) == (5, 5, "hvp", "hutchinson")
    assert kwargs["leave"] is False and kwargs["disable"] is False


def test_hessian_eigenvalues_names_itself_when_the_objective_has_no_loss_terms():
    with pytest.raises(ObjectiveError, match=r"^`hessian_eigenvalues` needs an objective with `loss_terms`"):
        hessian_eigenvalues(TwoTensors(), LossOnly(), k=1, progress=False)


@pytest.mark.parametrize("flag", ["per_layer", "per_block", "offload"])
def test_a_flag_of_hessian_eigenvalues_that_is_no_bool_is_named(flag):
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    with pytest.raises(ConfigError, match=rf"^`{flag}`"):
        hessian_eigenvalues(TwoTensors(), quadratic(a), k=1, progress=False, **{flag: "yes"})


@pytest.mark.parametrize(("basis_size", "refused"), [(16, True), (17, False)])
def test_a_basis_holds_at_least_k_plus_two_vectors_where_the_space_has_them(basis_size, refused):
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))  # N = 17 = k + 2 for k = 15
    call = functools.partial(hessian_eigenvalues, TwoTensors(), quadratic(a), k=15, progress=False)
    if refused:
        with pytest.raises(ConfigError, match="^`basis_size`"):
            call(basis_size=basis_size)
    else:
        assert len(call(basis_size=basis_size, max_iter=60).eigenvalues) == 15


def test_the_finite_difference_step_reaches_the_products():
    """On a quartic loss the central difference depends on its step: a step of 0.5 and one of 1e-3 differ."""
    loss_fn = lambda m: (m.flat() ** 4).sum() / 12  # noqa: E731
    found = [
        hessian_eigenvalues(TwoTensors(), loss_fn, k=1, hvp="finite_difference", fd_step=step, progress=False)
        for step in (0.5, 1e-3)
    ]
    assert abs(found[0].eigenvalues[0] - found[1].eigenvalues[0]) > 1e-3


def test_hessian_trace_names_itself_when_the_objective_has_no_loss_terms():
    with pytest.raises(ObjectiveError, match=r"^`hessian_trace` needs an objective with `loss_terms`"):
        hessian_trace(TwoTensors(), LossOnly(), samples=2, progress=False)


@pytest.mark.parametrize("flag", ["per_layer", "per_block"])
def test_a_flag_of_hessian_trace_that_is_no_bool_is_named(flag):
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    with pytest.raises(ConfigError, match=rf"^`{flag}` must be True or False, got 'yes'"):
        hessian_trace(TwoTensors(), quadratic(a), samples=2, progress=False, **{flag: "yes"})


@pytest.mark.parametrize("seed", [1.5, True, "0"])
def test_a_trace_seed_that_is_no_integer_is_named(seed):
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    with pytest.raises(ConfigError, match=rf"^`seed` must be an integer, got {re.escape(repr(seed))}"):
        hessian_trace(TwoTensors(), quadratic(a), samples=2, seed=seed, progress=False)


def test_the_finite_difference_mode_and_step_reach_the_trace():
    """On Σx⁴/12, H = diag(x²) and every zᵀHz is Σx². The central difference along z with step ε adds ε²z³/3 to
    Hz, so ε²n/3 to zᵀHz; with ε = fd_step·‖θ‖/‖z‖ (‖θ‖ > 1, ‖z‖ = √n) that is fd_step²·‖θ‖²/3."""
    model = TwoTensors()
    squares = float((model.flat().detach() ** 2).sum())
    assert squares > 1.0
    loss_fn = lambda m: (m.flat() ** 4).sum() / 12  # noqa: E731
    exact = hessian_trace(model, loss_fn, samples=2, progress=False)
    difference = hessian_trace(model, loss_fn, samples=2, hvp="finite_difference", fd_step=0.5, progress=False)
    assert exact.trace == pytest.approx(squares, rel=1e-12)
    assert difference.trace == pytest.approx(squares * (1 + 0.5**2 / 3), rel=1e-9)
    assert (difference.operator, difference.hvp) == ("hessian", "finite_difference")


def test_per_block_eigenvalues_come_per_role_of_the_model(tiny):
    model, objective, _, _, _ = tiny
    eigen = hessian_eigenvalues(model, objective, k=1, max_iter=5, tol=1.0, per_block=True, progress=False)
    trace = hessian_trace(model, objective, samples=2, per_block=True, progress=False)
    assert len(eigen.per_block) > 1 and set(eigen.per_block) == set(trace.per_block)


def test_per_block_eigenvalues_split_a_gpt_neox_fused_projection_per_head():
    from testing_utils import build_neox

    model = build_neox(40).double()
    objective = CausalLMObjective({"input_ids": [[(5 * i + 3 * j) % 39 + 1 for j in range(8)] for i in range(2)]})
    eigen = hessian_eigenvalues(
        model, objective, k=1, max_iter=5, tol=1.0, per_block=True, include=[r"query_key_value"], progress=False
    )
    assert sorted(eigen.per_block) == ["attention_qk", "attention_vo"]


def test_a_differentiable_loss_names_itself_and_the_objective_without_loss_terms():
    from hf_landscape.objectives.loss import loss_terms

    with pytest.raises(
        ObjectiveError, match=r"^A differentiable loss needs an objective with `loss_terms`.*; LossOnly"
    ):
        next(loss_terms(TwoTensors(), LossOnly()))


def test_a_loss_function_must_return_one_number():
    from hf_landscape.objectives.loss import loss_terms

    with pytest.raises(ObjectiveError, match=r"^`loss_fn\(model\)` must return a scalar tensor, got Tensor \(5,\)"):
        next(loss_terms(TwoTensors(), lambda m: m.layer1.bias * 1.0))


def test_a_callable_with_loss_terms_is_an_objective_not_a_loss_function():
    from hf_landscape.objectives.loss import is_loss_fn

    class Both:
        def __call__(self, model):
            return model.flat().sum()

        def loss_terms(self, model):
            yield model.flat().sum()

    assert not is_loss_fn(Both()) and is_loss_fn(lambda model: model.flat().sum())


def test_a_trace_without_per_block_has_no_blocks():
    a = matrix_with_spectrum(list(np.linspace(-3.0, 4.0, N)))
    assert hessian_trace(TwoTensors(), quadratic(a), samples=2, progress=False).per_block == {}
