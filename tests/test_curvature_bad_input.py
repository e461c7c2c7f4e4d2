"""Bad input to the curvature measures: a `LandscapeError` naming the argument, the value and the fix, before any
Hessian-vector product or noisy evaluation; the model given back as it was."""

from __future__ import annotations

import pytest
import torch
from conftest import build_gpt2

from hf_landscape import CausalLMObjective, ConfigError, LandscapeError, LandscapeProbe, ObjectiveError, SharpnessConfig
from hf_landscape.curvature import operators

IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(10)] for i in range(2)]


def make_probe() -> LandscapeProbe:
    model = build_gpt2(100, n_layer=1, n_embd=8)
    return LandscapeProbe(model, CausalLMObjective({"input_ids": IDS}), progress=False)


def count_products(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = operators.CurvatureOperator.__call__

    def counting(self, v):
        calls.append(1)
        return original(self, v)

    monkeypatch.setattr(operators.CurvatureOperator, "__call__", counting)
    return calls


CASES = {
    "k above the dimension": (
        lambda p: p.hessian_eigenvalues(k=10**9),
        r"`k` \(1000000000\) is larger than the number of selected parameters \(\d+\); pass `k` <=",
    ),
    "k above a selection": (
        lambda p: p.hessian_eigenvalues(k=9, include=[r"ln_f\.bias"]),
        r"`k` \(9\) is larger than the number of selected parameters \(8\)",
    ),
    "no probes": (lambda p: p.hessian_spectrum(probes=0), r"`probes` must be an integer >= 1, got 0"),
    "no Lanczos steps": (lambda p: p.hessian_spectrum(steps=0), r"`steps` must be an integer >= 1, got 0"),
    "no samples": (lambda p: p.hessian_trace(samples=0), r"`samples` must be an integer >= 2, got 0"),
    "too few for Hutch++": (
        lambda p: p.hessian_trace(samples=3, method="hutch++"),
        r"`samples` must be an integer >= 4, got 3",
    ),
    "unknown trace method": (lambda p: p.hessian_trace(method="hutchpp"), r"`method` must be one of"),
    "unknown operator": (lambda p: p.hessian_spectrum(operator="fisher_exact"), r"`operator` must be one of"),
    "unknown product": (lambda p: p.hessian_eigenvalues(hvp="forward"), r"`hvp` must be one of"),
    "no target rise": (lambda p: p.sharpness(kind="pac_bayes", target=0), r"`target` must be a finite rise"),
    "negative target": (lambda p: p.sharpness(kind="pac_bayes", target=-0.1), r"`target` must be a finite rise"),
    "a ρ-sharpness config for PAC-Bayes": (
        lambda p: p.sharpness(kind="pac_bayes", config=SharpnessConfig(rho=0.05)),
        r"`config` of 'pac_bayes' sharpness must be a `PacBayesConfig`, got SharpnessConfig",
    ),
    "zero rtol": (lambda p: p.critical_sharpness(rtol=0), r"`rtol` must be a finite number > 0, got 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_options_are_refused_before_any_product(case, monkeypatch):
    call, match = CASES[case]
    probe = make_probe()
    before = {n: p.detach().clone() for n, p in probe.model.named_parameters()}
    products = count_products(monkeypatch)
    with pytest.raises(ConfigError, match=match):
        call(probe)
    assert products == []
    assert all(torch.equal(p, before[n]) for n, p in probe.model.named_parameters())


NAN_CALLS = {
    "eigenvalues": lambda p: p.hessian_eigenvalues(k=1),
    "trace": lambda p: p.hessian_trace(samples=4, method="hutch++"),
    "spectrum": lambda p: p.hessian_spectrum(steps=2),
    "gauss-newton spectrum": lambda p: p.hessian_spectrum(steps=2, operator="ggn"),
    "critical sharpness": lambda p: p.critical_sharpness(),
    "pac-bayes": lambda p: p.sharpness(kind="pac_bayes", target=0.1),
    "hessian plane": lambda p: p.plane(steps=(2, 2), directions="hessian"),
}


@pytest.mark.parametrize("method", list(NAN_CALLS))
def test_nan_at_the_centre_is_refused_before_any_product_and_the_weights_come_back(method, monkeypatch):
    probe = make_probe()
    with torch.no_grad():
        probe.model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    probe.model.train()
    before = {n: p.detach().clone() for n, p in probe.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in probe.model.named_parameters()}
    products = count_products(monkeypatch)
    with pytest.raises(
        ObjectiveError, match=r"The loss at the model's weights is nan.*check the weights for NaN"
    ) as info:
        NAN_CALLS[method](probe)
    assert isinstance(info.value, LandscapeError) and products == []
    for name, p in probe.model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0, equal_nan=True)
        assert p.requires_grad == flags[name]
    assert all(m.training for m in probe.model.modules())
