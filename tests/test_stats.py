"""Confidence intervals: exact values of the t and ratio intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_landscape import ConfigError
from hf_landscape.stats import mean_interval, ratio_interval, t_interval, t_quantile


def test_t_quantile_known_values():
    assert t_quantile(0.95, 1) == pytest.approx(12.706204736, rel=1e-9)
    assert t_quantile(0.90, 10) == pytest.approx(1.812461123, rel=1e-9)


def test_t_interval_of_known_samples():
    low, high = t_interval([2.0, 4.0, 6.0, 8.0])  # mean 5, s = 2.582, se = 1.291, t_{3} = 3.182
    assert (low + high) / 2 == 5.0
    assert high - low == pytest.approx(2 * 3.182446305 * math.sqrt(20 / 3) / 2, rel=1e-9)


def test_fewer_than_two_samples_give_nan_bounds():
    assert all(math.isnan(v) for v in t_interval([1.0]))
    assert all(math.isnan(v) for v in mean_interval(1.0, 0.1, 1))


def test_ratio_interval_with_unequal_counts_is_the_delta_method():
    d, c = np.array([1.0, 4.0, 2.0, 7.0]), np.array([2.0, 3.0, 1.0, 4.0])
    ratio, (low, high) = ratio_interval(d, c)
    assert ratio == 14.0 / 10.0
    residuals = d - 1.4 * c  # (-1.8, -0.2, 0.6, 1.4)
    stderr = math.sqrt(4 / 3 * float(np.sum(residuals**2))) / 10.0
    assert (low, high) == pytest.approx((1.4 - t_quantile(0.95, 3) * stderr, 1.4 + t_quantile(0.95, 3) * stderr))


def test_ratio_interval_with_unit_counts_is_the_t_interval():
    d = np.array([0.5, 1.5, -0.25, 2.0, 1.0])
    ratio, interval = ratio_interval(d, np.ones(5))
    assert ratio == pytest.approx(d.mean())
    np.testing.assert_allclose(interval, t_interval(d), rtol=1e-12)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95, True, "0.95"])
def test_bad_confidence_is_a_config_error(confidence):
    with pytest.raises(ConfigError, match="confidence"):
        t_interval([1.0, 2.0], confidence)
