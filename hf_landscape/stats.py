"""Confidence intervals for the numbers the probe reports.

Three sources of uncertainty, three intervals:

- Monte Carlo draws (direction seeds of a surface, Hutchinson probes, the draws of average sharpness): the
  Student-t interval of a mean, `mean ± t_{n−1} · s / √n` (`t_interval`, `mean_interval`).
- The evaluation data (worst-case sharpness, where the perturbation is found by gradient ascent): a
  per-example loss difference averaged over tokens is a ratio Σdᵢ / Σcᵢ; its interval is the delta-method
  (linearized) one for a ratio estimator, treating examples as the sampled units (`ratio_interval`), i.e. how
  much the number would move on another evaluation sample of the same size, given the perturbation found.
- Numerical error (Lanczos eigenvalues): not statistical, see `EigenResult.intervals` in `curvature/eigen.py`.

Quantiles of Student's t come from SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import ConfigError

DEFAULT_CONFIDENCE = 0.95


def check_confidence(confidence: float) -> float:
    """`confidence` as a float in (0, 1), or a `ConfigError` naming the bad value."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"`confidence` must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    return float(confidence)


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t critical value t_{dof, (1 + confidence) / 2}."""
    from scipy.stats import t

    return float(t.ppf(0.5 + check_confidence(confidence) / 2.0, dof))


def mean_interval(mean: float, stderr: float, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """`mean ± t_{n−1} · stderr`: the Student-t interval of a mean of `n` draws with standard error `stderr`.

    NaN bounds for fewer than two draws or a non-finite input (also in `t_interval`).
    """
    if n < 2 or not (math.isfinite(mean) and math.isfinite(stderr)):
        return (math.nan, math.nan)
    half = t_quantile(confidence, n - 1) * stderr
    return (mean - half, mean + half)


def t_interval(samples: Sequence[float] | np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The Student-t interval of the mean of `samples`.

    Example:
    ```python
    >>> from hf_landscape.stats import t_interval
    >>> low, high = t_interval([1.0, 2.0, 3.0])          # mean 2, s = 1, t_{2, 0.975} = 4.303
    >>> round(low, 3), round(high, 3)
    (-0.484, 4.484)

    ```
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):  # e.g. a rise radius that is inf for some draw
        return (math.nan, math.nan)
    return mean_interval(float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)), x.size, confidence)


def ratio_interval(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, tuple[float, float]]:
    """R = Σdᵢ / Σcᵢ and its delta-method interval over the n units i (Cochran, *Sampling Techniques*, 6.3):
    Var(R) ≈ n / (n − 1) · Σ (dᵢ − R·cᵢ)² / (Σcᵢ)², with a Student-t quantile on n − 1 degrees of freedom.
    With every cᵢ = 1 this is the t interval of the mean of the dᵢ.

    Example:
    ```python
    >>> from hf_landscape.stats import ratio_interval
    >>> ratio, (low, high) = ratio_interval([1.0, 2.0, 3.0], [1, 1, 1])
    >>> ratio, round(low, 3), round(high, 3)                # the t interval of the mean of 1, 2, 3
    (2.0, -0.484, 4.484)

    ```
    """
    d = np.asarray(numerators, dtype=np.float64).ravel()
    c = np.asarray(denominators, dtype=np.float64).ravel()
    if d.shape != c.shape:
        raise ConfigError(f"`numerators` and `denominators` differ in length: {d.size} and {c.size}.")
    total = float(c.sum())
    ratio = float(d.sum()) / total
    n = d.size
    if n < 2:
        return ratio, (math.nan, math.nan)
    stderr = math.sqrt(n / (n - 1) * float(np.sum((d - ratio * c) ** 2))) / total
    return ratio, mean_interval(ratio, stderr, n, confidence)
