"""Surfaces over several direction seeds: mean, spread and per-seed samples."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_gpt2

from hf_landscape import CausalLMObjective, ConfigError, LandscapeProbe, Surface

IDS = [[(5 * i + 3 * j) % 90 + 1 for j in range(10 + i)] for i in range(4)]


@pytest.fixture
def probe():
    return LandscapeProbe(build_gpt2(100), CausalLMObjective({"input_ids": IDS}), progress=False)


def test_plane_over_seeds_is_the_mean_and_std_of_single_seed_planes(probe):
    singles = [probe.plane(steps=(3, 3), seed=s).values for s in (0, 1, 2)]
    many = probe.plane(steps=(3, 3), seed=[0, 1, 2])
    np.testing.assert_array_equal(many.samples, np.stack(singles))
    np.testing.assert_allclose(many.values, np.mean(singles, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(many.spread, np.std(singles, axis=0, ddof=1), rtol=0, atol=1e-12)
    assert many.metadata["seeds"] == [0, 1, 2] and len(many.metadata["directions"]) == 6
    assert many.spread[1, 1] == 0.0  # every draw passes through the centre


def test_spread_and_samples_survive_save_and_load(probe, tmp_path):
    line = probe.line(steps=5, seed=[3, 4])
    line.save_pretrained(tmp_path)
    again = Surface.from_pretrained(tmp_path)
    np.testing.assert_array_equal(again.spread, line.spread)
    np.testing.assert_array_equal(again.samples, line.samples)


def test_spread_is_plotted(probe, tmp_path):
    plane = probe.plane(steps=(3, 3), seed=[0, 1])
    written = {p.name for p in plane.save_plots(tmp_path)}
    assert "plot_spread.png" in written
    assert {p.name for p in probe.line(steps=3, seed=[0, 1]).save_plots(tmp_path / "l")} == {"plot_curve.png"}


@pytest.mark.parametrize("seeds", [[0], [1, 1], [0, 1.5]])
def test_bad_seed_lists_are_config_errors(probe, seeds):
    with pytest.raises(ConfigError, match="two or more distinct integers"):
        probe.plane(steps=2, seed=seeds)
