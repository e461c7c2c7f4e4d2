"""The spectral density by stochastic Lanczos quadrature: exact Gauss quadrature on quadratics with known spectra,
the nodes of a full Lanczos run are the exact Hessian's (and Gauss-Newton matrix's) eigenvalues on a tiny model, the
density integrates to 1, the implied trace is Hutchinson's with the same probes, and the result plots, saves and
loads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from testing_utils import ExactCurvature

from hf_landscape import ConfigError, LandscapeProbe, SpectrumResult, SurfaceError, hessian_spectrum, hessian_trace
from hf_landscape.curvature.hvp import rademacher


class Vector(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))


def quadratic(eigenvalues, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T
    return Vector(n), (lambda m: 0.5 * m.x @ a @ m.x), a


def probe_vectors(n: int, probes: int, seed: int) -> list[torch.Tensor]:
    """The documented probes: Rademacher vectors from `seed`, divided by √n."""
    g = torch.Generator().manual_seed(seed)
    return [rademacher(n, g, "cpu", torch.float64) / math.sqrt(n) for _ in range(probes)]


@pytest.fixture(scope="module")
def tiny():
    case = ExactCurvature()
    return case, case.hessian(), case.ggn()


@pytest.mark.parametrize("reorthogonalize", [True, False])
def test_each_probes_quadrature_is_exact_for_polynomials_below_twice_its_steps(reorthogonalize):
    spectrum = np.concatenate([[50.0, 20.0, -8.0], np.linspace(-1.0, 2.0, 37)])
    model, loss_fn, a = quadratic(spectrum)
    steps, probes = 6, 3
    result = hessian_spectrum(
        model, loss_fn, steps=steps, probes=probes, seed=4, reorthogonalize=reorthogonalize, progress=False
    )
    for p, v in enumerate(probe_vectors(len(spectrum), probes, seed=4)):
        for power in range(2 * steps):  # Σⱼ τⱼ θⱼᵖ = vᵀAᵖv for p < 2m
            exact = float(v @ torch.linalg.matrix_power(a, power) @ v)
            got = float(np.sum(result.weights[p] * result.nodes[p] ** power))
            assert got == pytest.approx(exact, rel=1e-7, abs=1e-9 * 50.0**power), (p, power)
    assert np.allclose(result.weights.sum(axis=1), 1.0)


def test_a_full_lanczos_run_finds_every_eigenvalue_of_the_tiny_models_hessian(tiny):
    case, hessian, _ = tiny
    names = ["transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias", "transformer.ln_f.weight"]
    index = torch.cat([torch.arange(case.offsets[n], case.offsets[n] + 4) for n in names])
    exact = torch.linalg.eigvalsh(hessian[index][:, index]).numpy()
    result = hessian_spectrum(
        case.model, case.objective, steps=len(index), include=[r"ln_1\.|ln_f\.weight"], progress=False
    )
    assert result.num_parameters == len(index)
    np.testing.assert_allclose(np.sort(result.nodes[0]), exact, rtol=1e-7, atol=1e-9)


def test_gauss_newton_nodes_are_the_gauss_newton_eigenvalues_and_not_negative(tiny):
    case, _, ggn = tiny
    index = torch.arange(case.offsets["transformer.ln_f.weight"], case.offsets["transformer.ln_f.weight"] + 8)
    exact = torch.linalg.eigvalsh(ggn[index][:, index]).numpy()
    result = hessian_spectrum(case.model, case.objective, steps=8, include=[r"ln_f"], operator="ggn", progress=False)
    np.testing.assert_allclose(np.sort(result.nodes[0]), exact, rtol=1e-7, atol=1e-10)
    assert result.nodes.min() > -1e-10 and result.operator == "ggn"


def test_the_density_integrates_to_one_and_averages_the_probes():
    model, loss_fn, _ = quadratic(np.concatenate([[30.0, 10.0], np.linspace(-0.5, 1.0, 28)]))
    result = hessian_spectrum(model, loss_fn, steps=10, probes=4, progress=False)
    assert np.trapezoid(result.density, result.grid) == pytest.approx(1.0, abs=1e-6)
    one = [SpectrumResult.from_dict({**result.to_dict(), "nodes": [row], "weights": [w]}) for row, w in
           zip(result.to_dict()["nodes"], result.weights.tolist())]  # fmt: skip
    np.testing.assert_allclose(
        result.density_at(result.grid), np.mean([s.density_at(result.grid) for s in one], axis=0)
    )
    assert result.sigma == pytest.approx(0.01 * (np.nanmax(result.nodes) - np.nanmin(result.nodes)))


def test_the_trace_implied_is_hutchinsons_with_the_same_probes(tiny):
    case, _, _ = tiny
    spectrum = hessian_spectrum(case.model, case.objective, steps=5, probes=3, seed=2, progress=False)
    trace = hessian_trace(case.model, case.objective, samples=3, seed=2, progress=False)
    assert spectrum.trace == pytest.approx(trace.trace, rel=1e-10)
    assert spectrum.trace_interval == pytest.approx(trace.interval, rel=1e-9)
    assert spectrum.moment(1) * spectrum.num_parameters == pytest.approx(spectrum.trace, rel=1e-10)


def test_a_run_that_exhausts_its_krylov_space_stops_with_exact_nodes():
    model, loss_fn, _ = quadratic([3.0, 3.0, 3.0, 1.0, 1.0])  # two distinct eigenvalues: two steps suffice
    result = hessian_spectrum(model, loss_fn, steps=5, progress=False)
    assert np.isnan(result.nodes[0, 2:]).all() and (result.weights[0, 2:] == 0).all()
    np.testing.assert_allclose(result.nodes[0, :2], [1.0, 3.0], rtol=1e-10)


def test_save_and_load_round_trip(tmp_path):
    model, loss_fn, _ = quadratic(np.linspace(-1.0, 4.0, 20))
    result = hessian_spectrum(model, loss_fn, steps=6, probes=2, progress=False)
    result.save_pretrained(tmp_path / "spectrum")
    assert sorted(p.name for p in (tmp_path / "spectrum").iterdir()) == ["spectrum.json"]
    loaded = SpectrumResult.from_pretrained(tmp_path / "spectrum")
    np.testing.assert_array_equal(loaded.nodes, result.nodes)
    np.testing.assert_array_equal(loaded.density, result.density)
    assert loaded.trace == result.trace and loaded.trace_interval == result.trace_interval
    assert json.loads((tmp_path / "spectrum" / "spectrum.json").read_text())["format"] == "hf_landscape.spectrum"


def test_saving_over_a_different_spectrum_needs_overwrite(tmp_path):
    model, loss_fn, _ = quadratic(np.linspace(-1.0, 4.0, 20))
    hessian_spectrum(model, loss_fn, steps=4, progress=False).save_pretrained(tmp_path)
    other = hessian_spectrum(model, loss_fn, steps=5, progress=False)
    with pytest.raises(SurfaceError, match="already holds a different spectrum"):
        other.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path, overwrite=True)
    assert SpectrumResult.from_pretrained(tmp_path).steps == 5


def test_a_folder_without_a_spectrum_is_refused(tmp_path):
    with pytest.raises(SurfaceError, match="holds no spectrum"):
        SpectrumResult.from_pretrained(tmp_path)


def test_the_plot_has_a_symmetric_log_eigenvalue_axis():
    model, loss_fn, _ = quadratic(np.concatenate([[100.0, -20.0], np.linspace(-0.1, 0.1, 18)]))
    fig = hessian_spectrum(model, loss_fn, steps=8, probes=2, progress=False).plot()
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog" and ax.get_yscale() == "log"
    assert "spectral density" in ax.get_title() and "trace" in ax.get_title()


def test_the_probe_method_hands_on(tiny):
    case, _, _ = tiny
    probe = LandscapeProbe(case.model, case.objective, progress=False)
    result = probe.hessian_spectrum(steps=4, probes=2, hvp="finite_difference")
    assert result.steps == 4 and result.probes == 2 and result.hvp == "finite_difference"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 500}, r"`steps` \(500\) is larger than the number of selected parameters \(396\)"),
        ({"probes": 0}, r"`probes` must be an integer >= 1, got 0"),
        ({"steps": 0}, r"`steps` must be an integer >= 1, got 0"),
        ({"sigma": -1.0}, r"`sigma` must be a finite number > 0, got -1.0"),
    ],
)
def test_bad_spectrum_options_are_refused_before_any_work(tiny, kwargs, match, monkeypatch):
    import hf_landscape.curvature.spectrum as spectrum

    case, _, _ = tiny
    monkeypatch.setattr(spectrum, "check_centre", lambda *a: pytest.fail("the loss was evaluated"))
    with pytest.raises(ConfigError, match=match):
        hessian_spectrum(case.model, case.objective, progress=False, **kwargs)


def test_rademacher_signs_are_balanced_reproducible_and_of_any_length():
    draw = [rademacher(1001, torch.Generator().manual_seed(5), "cpu", torch.float32) for _ in range(2)]
    assert torch.equal(draw[0], draw[1]) and draw[0].shape == (1001,)
    assert set(draw[0].unique().tolist()) == {-1.0, 1.0}
    assert abs(float(draw[0].sum())) < 4 * 1001**0.5  # ±1 with probability 1/2 each: a sum within 4 sigma
    other = rademacher(1001, torch.Generator().manual_seed(6), "cpu", torch.float32)
    assert not torch.equal(draw[0], other)
