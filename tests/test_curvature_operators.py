"""The curvature operators: generalized Gauss-Newton and empirical Fisher products against JᵀH_outJ built by autograd
on a tiny float64 GPT-2, finite-difference Hessian-vector products against exact ones (their error and its step
rule), the objectives' logits, and operators an objective cannot give refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_gpt2
from testing_utils import ExactCurvature

from hf_landscape import CausalLMObjective, GlueObjective, ObjectiveError, hessian_eigenvalues, hessian_trace
from hf_landscape.curvature.gauss_newton import term_loss
from hf_landscape.curvature.hvp import FlatParameters, select
from hf_landscape.curvature.operators import default_fd_step, operator_for

IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(10 + i % 3)] for i in range(4)]


@pytest.fixture(scope="module")
def exact():
    case = ExactCurvature()
    return case, case.hessian(), case.ggn(), case.ggn(empirical_fisher=True)


def products(model, objective, vectors, **options):
    flat = FlatParameters(select(model, None, None, True))
    with operator_for(model, objective, flat, **options) as op:
        return [op(v) for v in vectors]


def random_vectors(n: int, count: int, dtype=torch.float64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64).to(dtype) for _ in range(count)]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# --- Gauss-Newton and Fisher against autograd -----------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["ggn", "fisher"])
@pytest.mark.parametrize("hvp", ["exact", "finite_difference"])
def test_gauss_newton_products_match_the_matrix_built_by_autograd(exact, operator, hvp):
    case, _, ggn, fisher = exact
    matrix = ggn if operator == "ggn" else fisher
    vectors = random_vectors(matrix.shape[0], 3)
    got = products(case.model, case.objective, vectors, operator=operator, hvp=hvp)
    for v, mv in zip(vectors, got):
        assert relative_error(mv, matrix @ v) < (1e-10 if hvp == "exact" else 1e-7)


def test_gauss_newton_top_eigenvalues_and_trace_are_the_matrixs(exact):
    case, _, ggn, _ = exact
    result = hessian_eigenvalues(
        case.model, case.objective, k=3, tol=1e-8, max_iter=300, operator="ggn", return_eigenvectors=True,
        progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(result.eigenvalues, torch.linalg.eigvalsh(ggn).flip(0)[:3].numpy(), rtol=1e-6)
    assert result.operator == "ggn" and result.converged
    assert [d.config["kind"] for d in result.eigenvectors] == ["ggn_eigenvector"] * 3
    sizes = dict(zip(case.names, [s.numel() for s in case.shapes]))
    name = "transformer.h.0.attn.c_attn.weight"
    index = torch.arange(case.offsets[name], case.offsets[name] + sizes[name])
    trace = hessian_trace(
        case.model, case.objective, samples=3 * len(index) + 2, method="hutch++", operator="ggn",
        include=[r"c_attn\.weight"], progress=False,
    )  # fmt: skip
    assert trace.trace == pytest.approx(float(torch.trace(ggn[index][:, index])), rel=1e-8)
    assert (trace.operator, trace.hvp) == ("ggn", "exact")


def test_the_gauss_newton_matrix_is_positive_semidefinite_where_the_hessian_is_not(exact):
    _, hessian, ggn, _ = exact
    assert float(torch.linalg.eigvalsh(hessian)[0]) < -1e-3  # a random initialization is no minimum
    assert float(torch.linalg.eigvalsh(ggn)[0]) > -1e-12


def test_logit_terms_add_up_to_the_objective(exact):
    case = exact[0]
    with torch.enable_grad():
        total = sum(float(term_loss(t).detach()) for t in case.objective.logit_terms(case.model))
    assert total == pytest.approx(case.objective.evaluate(case.model).loss, rel=1e-12)


def glue_case(regression: bool):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    labels = 1 if regression else 3
    config = GPT2Config(n_layer=1, n_embd=4, n_head=1, vocab_size=20, n_positions=16, num_labels=labels, pad_token_id=0)
    model = GPT2ForSequenceClassification(config).double().eval()
    ids = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [3, 4, 5, 6]]
    task, y = ("stsb", [0.5, 2.0, 4.5, 3.0]) if regression else ("mnli", [0, 2, 1, 2])
    objective = GlueObjective(task, data={"input_ids": ids, "label": y}, batch_size=2)
    objective.bind(model)
    return model, objective, ids, y


@pytest.mark.parametrize("regression", [False, True], ids=["cross-entropy", "squared-error"])
def test_gauss_newton_of_a_glue_objective_matches_autograd(regression):
    from torch.func import functional_call

    model, objective, ids, y = glue_case(regression)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def logits(flat):
        params = {n: c.view(s) for n, c, s in zip(names, flat.split([s.numel() for s in shapes]), shapes)}
        return functional_call(model, params, (torch.tensor(ids),)).logits

    jac = torch.autograd.functional.jacobian(lambda f: logits(f).reshape(-1), theta).view(len(ids), -1, theta.numel())
    with torch.no_grad():
        if regression:  # (z₀ − y)²: H_out = 2 on the one logit
            h_out = torch.full((len(ids), 1, 1), 2.0, dtype=torch.float64)
        else:
            p = torch.softmax(logits(theta), dim=-1)
            h_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    ggn = torch.einsum("rvp,rvw,rwq->pq", jac, h_out, jac) / len(ids)
    (v,) = random_vectors(theta.numel(), 1)
    (gv,) = products(model, objective, [v], operator="ggn")
    assert relative_error(gv, ggn @ v) < 1e-10


# --- finite differences ---------------------------------------------------------------------------------------------


def make_gpt2(dtype):
    return build_gpt2(100, seed=0).to(dtype).eval(), CausalLMObjective({"input_ids": IDS}, batch_size=4)


@pytest.mark.parametrize(("dtype", "bound"), [(torch.float64, 1e-8), (torch.float32, 3e-4)])
def test_finite_difference_products_are_within_the_documented_error_of_exact_ones(dtype, bound):
    model, objective = make_gpt2(dtype)
    n = sum(p.numel() for p in model.parameters())
    vectors = random_vectors(n, 3, dtype=dtype)
    exact = products(model, objective, vectors, hvp="exact")
    fd = products(model, objective, vectors, hvp="finite_difference")
    errors = [relative_error(a, b) for a, b in zip(fd, exact)]
    assert max(errors) < bound, errors


def test_the_finite_difference_error_is_second_order_in_the_step():
    model, objective = make_gpt2(torch.float64)
    n = sum(p.numel() for p in model.parameters())
    (v,) = random_vectors(n, 1)
    (exact,) = products(model, objective, [v], hvp="exact")
    errors = [
        relative_error(products(model, objective, [v], hvp="finite_difference", fd_step=h)[0], exact)
        for h in (1e-2, 1e-3)
    ]
    assert 80 < errors[0] / errors[1] < 120  # ten times the step, a hundred times the truncation error


def test_the_default_step_is_a_quarter_of_the_cube_root_of_the_unit_roundoff():
    assert default_fd_step(torch.float32) == pytest.approx(0.25 * (2.0**-24) ** (1 / 3))
    assert default_fd_step(torch.float64) == pytest.approx(0.25 * (2.0**-53) ** (1 / 3))


def test_finite_differences_run_without_a_double_backward_and_leave_attention_alone(monkeypatch):
    import hf_landscape.curvature.operators as operators

    model, objective = make_gpt2(torch.float32)
    assert model.config._attn_implementation == "sdpa"
    seen = []
    for name in ("grad", "backward"):
        real = getattr(torch.autograd, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(bool(kwargs.get("create_graph", False)))
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, name, spy)
    monkeypatch.setattr(operators, "double_backward_attention", lambda m: pytest.fail("attention was switched"))
    result = hessian_eigenvalues(model, objective, k=1, max_iter=5, hvp="finite_difference", progress=False)
    assert result.hvp == "finite_difference"
    assert len(seen) >= 2 * 5 and not any(seen)  # two gradients per product, none with a graph of its own


def test_finite_differences_give_back_weights_and_grads(monkeypatch):
    model, objective = make_gpt2(torch.float32)
    first = next(model.parameters())
    first.grad = torch.full_like(first, 0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hessian_trace(model, objective, samples=2, hvp="finite_difference", progress=False)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert torch.equal(first.grad, torch.full_like(first, 0.5))
    assert all(p.grad is None for p in list(model.parameters())[1:])


def test_a_finite_difference_product_holds_one_parameters_gradient_at_a_time():
    # Each gradient is added into the product and dropped as autograd delivers it, so the product's memory is one
    # gradient's working set plus the saved weights and the result, never a second full-size gradient.
    model, objective = make_gpt2(torch.float32)
    flat = FlatParameters(select(model, None, None, True))
    held: list[int] = []

    def count(_: torch.Tensor) -> None:
        held.append(sum(q.grad is not None for q in flat.params))

    handles = [p.register_post_accumulate_grad_hook(count) for p in flat.params]
    try:
        with operator_for(model, objective, flat, hvp="finite_difference") as op:
            op(torch.ones(flat.size))
    finally:
        for handle in handles:
            handle.remove()
    assert held == [1] * (2 * len(flat.params))  # two gradients, each parameter's seen alone


# --- what an objective cannot give ------------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["ggn", "fisher"])
def test_gauss_newton_of_a_loss_function_is_refused_before_any_work(operator):
    model = torch.nn.Linear(3, 1)
    calls = []

    def loss_fn(m):
        calls.append(1)
        return (m.weight**2).sum()

    with pytest.raises(
        ObjectiveError, match=rf"`operator='{operator}'` needs the objective's logits.*operator='hessian'"
    ):
        hessian_eigenvalues(model, loss_fn, k=1, operator=operator, progress=False)
    assert calls == []
