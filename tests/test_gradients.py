"""Directional derivatives on a plane: the gradient projected on its two directions, drawn as arrows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_gpt2

from hf_landscape import CausalLMObjective, ConfigError, LandscapeProbe, Surface

IDS = [[(5 * i + 3 * j) % 90 + 1 for j in range(8 + i)] for i in range(3)]


@pytest.fixture
def probe():
    model = build_gpt2(100).double()
    return LandscapeProbe(model, CausalLMObjective({"input_ids": IDS}), progress=False)


def test_projected_gradient_matches_central_differences(probe):
    plane = probe.plane(steps=(3, 3), span=(-0.5, 0.5), seed=1)
    before = {n: p.clone() for n, p in probe.model.named_parameters()}
    probe.directional_derivatives(plane)
    a, b, h = 0.5, -0.5, 1e-4
    fd_a = (probe.evaluate((a + h, b), plane.directions).loss - probe.evaluate((a - h, b), plane.directions).loss) / (
        2 * h
    )
    fd_b = (probe.evaluate((a, b + h), plane.directions).loss - probe.evaluate((a, b - h), plane.directions).loss) / (
        2 * h
    )
    assert plane.metrics["dL/dalpha"][0, 2] == pytest.approx(fd_a, rel=1e-5)
    assert plane.metrics["dL/dbeta"][0, 2] == pytest.approx(fd_b, rel=1e-5)
    assert all(torch.equal(p, before[n]) for n, p in probe.model.named_parameters())


def test_stride_leaves_nan_between_points_and_arrows_are_drawn(probe, tmp_path):
    plane = probe.directional_derivatives(probe.plane(steps=(3, 3), seed=0), stride=2)
    assert np.isnan(plane.metrics["dL/dalpha"][1, 1]) and np.isfinite(plane.metrics["dL/dalpha"][2, 2])
    fig = plane.plot(kind="contour")
    assert any(type(c).__name__ == "Quiver" for c in fig.axes[0].collections)
    plane.save_pretrained(tmp_path)
    np.testing.assert_array_equal(Surface.from_pretrained(tmp_path).metrics["dL/dbeta"], plane.metrics["dL/dbeta"])


def test_a_line_or_a_plane_without_directions_is_refused(probe):
    with pytest.raises(ConfigError, match="two full-rank directions"):
        probe.directional_derivatives(probe.line(steps=3))
