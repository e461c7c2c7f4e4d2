"""Curvature and sharpness of the loss at the model's own weights.

- `hessian_eigenvalues`: the k largest *algebraic* eigenvalues of the Hessian over the selected parameters,
  by thick-restart Lanczos (Wu & Simon 2000) on Hessian-vector products.
- `hessian_trace`: Hutchinson's estimate of tr(H) with Rademacher vectors (Hutchinson 1989; Avron & Toledo
  2011), with its standard error, optionally per layer.
- `sharpness`: worst-case and average ρ-sharpness, plain or adaptive (scale-invariant), as in SAM (Foret et
  al. 2021), ASAM (Kwon et al. 2021) and Andriushchenko et al. 2023, "A modern look at the relationship
  between sharpness and generalization".

All three need the loss as a *differentiable* scalar, which `Objective.evaluate` (inference mode, floats)
does not give. `loss_terms` yields it batch by batch: each term is one batch's sum of losses divided by
the size of the whole evaluation set, so the terms add up to the objective's value, and gradients and
Hessian-vector products are accumulated one batch at a time (memory does not grow with the data).
`objective` can also be any callable `loss_fn(model) -> scalar tensor` (one term).

Hessian-vector products are double backward (Pearlmutter 1994): g = ∇L with `create_graph=True`, then
∇(g·v). Attention kernels without a double backward (SDPA's flash / memory-efficient kernels on GPU,
flash-attention) are switched to `"eager"` for the duration and switched back afterwards.

What does *not* live here: moving weights over a grid (`engine.py`), drawing plotting directions
(`directions/`). Weights are only moved by `sharpness`, through `engine.editing`, which copies the saved
originals back bit for bit however the call ends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .attention import switched_attention
from .config import BaseConfig, check_choice, check_patterns
from .directions.base import Direction, select_parameters
from .directions.random import seed_for
from .engine import editing
from .errors import ConfigError
from .objectives.base import eval_mode
from .objectives.base import evaluate as evaluate_objective
from .objectives.loss import differentiable_loss, is_loss_fn, loss_terms, loss_value, require_differentiable
from .stats import DEFAULT_CONFIDENCE, check_confidence, mean_interval, ratio_interval, t_interval

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module], torch.Tensor]
__all__ = ["differentiable_loss", "loss_terms", "loss_value"]  # re-exported from objectives.loss
SHARPNESS_KINDS = ("worst", "average", "adaptive", "adaptive_average")
# (per-example loss sums, token counts), or None when the objective gives no per-example losses
_Terms = tuple[np.ndarray, np.ndarray] | None
# Attention implementations whose backward is itself differentiable on every device.
DOUBLE_BACKWARD_ATTENTION = ("eager",)


# --- context: what the curvature computations change and put back -----------------------------------


@contextlib.contextmanager
def double_backward_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run the model with `"eager"` attention (differentiable twice everywhere); restore the original after.

    SDPA's flash kernels (CPU and CUDA), its memory-efficient kernel and flash-attention have no double
    backward, so a Hessian-vector product through them fails. Every config of the model (and its sub-configs) is switched
    and each gets its own value back on exit, however the block ends (`attention.switched_attention`).
    """
    with switched_attention(model, DOUBLE_BACKWARD_ATTENTION[0]) as switched:
        if switched:
            logger.info("switched attention to 'eager' for double backward")
        yield


@contextlib.contextmanager
def _differentiable(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Eval mode, grad on for exactly `params` (off for the rest); every flag restored on exit."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        try:
            for p, _ in saved:
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            with torch.inference_mode(False), torch.enable_grad():
                yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)


def _select(model: torch.nn.Module, include: Any, exclude: Any, include_1d: bool) -> dict[str, torch.nn.Parameter]:
    if not isinstance(include_1d, bool):
        raise ConfigError(f"`include_1d` must be True or False, got {include_1d!r}.")
    inc = check_patterns("include", include)
    exc = check_patterns("exclude", exclude)
    return select_parameters(model, include=inc, exclude=exc, include_1d=include_1d)


def _check_int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return value


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"`{name}` must be a finite number {bound}, got {value!r}.")
    return float(value)


# --- flat vectors over the selected parameters ---------------------------------------------------


class _Flat:
    """The selected parameters seen as one flat vector (in model order), for the Krylov methods."""

    def __init__(self, params: dict[str, torch.nn.Parameter]) -> None:
        self.names = list(params)
        self.params = list(params.values())
        self.numels = [p.numel() for p in self.params]
        self.size = sum(self.numels)
        self.device = self.params[0].device
        dtype = torch.float32
        for p in self.params:
            dtype = torch.promote_types(dtype, p.dtype)
        self.dtype = dtype  # at least float32, float64 for a float64 model

    def zeros(self, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(self.size, dtype=self.dtype, device=device or self.device)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [c.view(p.shape) for c, p in zip(flat.split(self.numels), self.params)]

    def as_params(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [v.to(p.device, p.dtype) for v, p in zip(self.views(flat), self.params)]

    def named(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            n: v.detach().to(p.device, p.dtype).clone() for n, v, p in zip(self.names, self.views(flat), self.params)
        }


def _hvp_into(model: torch.nn.Module, objective: Any, flat: _Flat, v: torch.Tensor) -> torch.Tensor:
    """H·v, summed over the objective's batches (one batch's graph alive at a time)."""
    vs = flat.as_params(v.to(flat.device))
    out = flat.zeros()
    out_views = flat.views(out)
    for term in loss_terms(model, objective):
        if not term.requires_grad:
            continue
        grads = torch.autograd.grad(term, flat.params, create_graph=True, allow_unused=True)
        # A parameter the loss is linear in (or does not use) contributes nothing to H·v.
        pairs = [(g, u) for g, u in zip(grads, vs) if g is not None and g.requires_grad]
        if not pairs:
            continue
        dot = torch.stack([(g * u).sum(dtype=flat.dtype) for g, u in pairs]).sum()
        hv = torch.autograd.grad(dot, flat.params, allow_unused=True)
        for o, h in zip(out_views, hv):
            if h is not None:
                o.add_(h.to(o.device, o.dtype))
    return out


def _grad_into(model: torch.nn.Module, objective: Any, flat: _Flat) -> torch.Tensor:
    """∇L, summed over the objective's batches."""
    out = flat.zeros()
    out_views = flat.views(out)
    for term in loss_terms(model, objective):
        if not term.requires_grad:
            continue
        grads = torch.autograd.grad(term, flat.params, allow_unused=True)
        for o, g in zip(out_views, grads):
            if g is not None:
                o.add_(g.to(o.device, o.dtype))
    return out


def hessian_vector_product(
    model: torch.nn.Module, objective: Any, vector: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """H·v for a name-keyed vector `v` (H over exactly the parameters `vector` names), at the model's weights.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.sharpness import hessian_vector_product
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> loss_fn = lambda m: (m.weight**2).sum()          # H = 2·I
    >>> hessian_vector_product(model, loss_fn, {"weight": torch.ones(1, 2)})["weight"].tolist()
    [[2.0, 2.0]]

    ```
    """
    require_differentiable(objective, "A Hessian-vector product")
    all_params = dict(model.named_parameters())
    Direction(dict(vector)).check_fits(all_params, argument="vector")
    params = {n: all_params[n] for n in all_params if n in vector}
    flat = _Flat(params)
    v = torch.cat([vector[n].detach().to(flat.device, flat.dtype).reshape(-1) for n in flat.names])
    with _differentiable(model, flat.params), double_backward_attention(model):
        return flat.named(_hvp_into(model, objective, flat, v))


# --- Hessian eigenvalues: thick-restart Lanczos ------------------------------------------------------


@dataclass
class EigenResult:
    """The k largest algebraic eigenvalues of the Hessian and how well they converged.

    Args:
        eigenvalues: Ritz values, largest first.
        residuals: ‖H·y − λ·y‖ of each unit Ritz vector y, from a fresh Hessian-vector product; H has an
            eigenvalue within that distance of λ (see `intervals`).
        converged: every residual is at most `tol`·|λ|.
        iterations: Hessian-vector products Lanczos used (not counting the k residual checks).
        restarts: thick restarts done.
        tol: the relative tolerance asked for.
        num_parameters: the dimension of the Hessian.
        eigenvectors: the unit Ritz vectors as name-keyed `Direction`s, when asked for.
        per_layer: layer -> the `EigenResult` of that layer's diagonal block of the Hessian (the curvature of
            the loss when only that layer's parameters move), when asked for (`per_layer=True`).

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.sharpness import hessian_eigenvalues
    >>> model = torch.nn.Linear(3, 1, bias=False)
    >>> scales = torch.tensor([3.0, -5.0, 1.0])
    >>> loss_fn = lambda m: 0.5 * (scales * m.weight[0] ** 2).sum()   # H = diag(3, -5, 1)
    >>> r = hessian_eigenvalues(model, loss_fn, k=2, progress=False)
    >>> [round(x, 4) for x in r.eigenvalues.tolist()], r.converged
    ([3.0, 1.0], True)

    ```
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    converged: bool
    iterations: int
    restarts: int
    tol: float
    num_parameters: int
    eigenvectors: list[Direction] | None = None
    per_layer: dict[str, EigenResult] = field(default_factory=dict)

    @property
    def intervals(self) -> np.ndarray:
        """`(k, 2)` array of [λ − r, λ + r] with r the residual: for a symmetric H and a unit vector y, some
        eigenvalue of H lies within ‖H·y − λ·y‖ of λ (Parlett, *The Symmetric Eigenvalue Problem*, thm 4.5.1).
        A guaranteed bound on the numerical error for this objective's data, not a statistical interval."""
        return np.stack([self.eigenvalues - self.residuals, self.eigenvalues + self.residuals], axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no eigenvectors)."""
        return {
            "eigenvalues": [float(x) for x in self.eigenvalues],
            "residuals": [float(x) for x in self.residuals],
            "intervals": self.intervals.tolist(),
            "converged": self.converged,
            "iterations": self.iterations,
            "restarts": self.restarts,
            "tol": self.tol,
            "num_parameters": self.num_parameters,
            "per_layer": {name: r.to_dict() for name, r in self.per_layer.items()},
        }


def hessian_eigenvalues(
    model: torch.nn.Module,
    objective: Any,
    *,
    k: int = 3,
    tol: float = 1e-3,
    max_iter: int = 100,
    basis_size: int | None = None,
    offload: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    include_1d: bool = True,
    seed: int = 0,
    return_eigenvectors: bool = False,
    per_layer: bool = False,
    progress: bool = True,
) -> EigenResult:
    """The `k` largest *algebraic* eigenvalues of the Hessian of the objective at the model's weights.

    Thick-restart Lanczos (Wu & Simon 2000, SIAM J. Matrix Anal. Appl. 22(2)) with full reorthogonalization.
    Lanczos resolves both ends of the spectrum, so a Hessian with large *negative* eigenvalues (any point
    that is not a minimum) is handled: we keep the largest algebraic Ritz values, where power iteration
    would return the largest in magnitude. The basis holds at most `basis_size` vectors: when it is full,
    the best `k + (basis_size − k) // 2` Ritz vectors and the residual direction are kept and Lanczos goes
    on from there, so memory is `basis_size + 1` vectors of the parameters' size whatever `max_iter` is
    (a plain Lanczos with full reorthogonalization would hold `max_iter` of them). `offload=True` keeps
    the basis in CPU memory, leaving one vector at a time on the accelerator.

    Args:
        model: the model; its weights are not changed. Evaluated in eval mode (no dropout).
        objective: a `CausalLMObjective`, `GlueObjective`, or callable `loss_fn(model) -> scalar tensor`.
        k: how many eigenvalues.
        tol: stop when ‖H·y − θ·y‖ ≤ tol·|θ| for each of the top k Ritz pairs (θ, y).
        max_iter: at most this many Hessian-vector products in Lanczos.
        basis_size: Lanczos vectors kept at once (default max(20, 2k + 2), at most the dimension).
        offload: keep the Lanczos basis on the CPU.
        include, exclude: regular expressions on parameter names (as for directions); by default every
            floating-point parameter, each tied weight once.
        include_1d: include biases and norm weights (default True: the Hessian is over every parameter).
        seed: the random start vector.
        return_eigenvectors: also return the unit Ritz vectors as `Direction`s.
        per_layer: also find the top `k` eigenvalues (at most the block's size) of each layer's diagonal block
            (layers as in `layer_of`), one Lanczos run per layer with the same options, in `per_layer`.
        progress: tqdm progress bar over Hessian-vector products.

    Returns:
        `EigenResult`; `converged` is False (with a warning) when `max_iter` ran out first.
    """
    require_differentiable(objective, "`hessian_eigenvalues`")
    _check_int("k", k, 1)
    tol = _check_positive("tol", tol)
    _check_int("max_iter", max_iter, k)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    if not isinstance(per_layer, bool):
        raise ConfigError(f"`per_layer` must be True or False, got {per_layer!r}.")
    flat = _Flat(_select(model, include, exclude, include_1d))
    n = flat.size
    if k > n:
        raise ConfigError(f"`k` ({k}) is larger than the number of selected parameters ({n}).")
    if basis_size is None:
        m = min(max(20, 2 * k + 2), n)
    else:
        _check_int("basis_size", basis_size, k + 2 if n >= k + 2 else k)
        m = min(basis_size, n)
    basis_device = torch.device("cpu") if offload else flat.device

    with _differentiable(model, flat.params), double_backward_attention(model):

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return _hvp_into(model, objective, flat, v).to(basis_device)

        lanczos = _thick_restart_lanczos(hvp, n, k, tol, max_iter, m, flat.dtype, basis_device, seed, progress)
        theta, vectors, iterations, restarts = lanczos
        residuals = np.empty(k)
        for i in range(k):
            y = vectors[i]
            residuals[i] = float(torch.linalg.vector_norm(hvp(y) - theta[i] * y))
    converged = bool(np.all(residuals <= tol * np.abs(theta[:k])))
    if not converged:
        logger.warning(
            "Lanczos did not reach tol=%g within max_iter=%d Hessian-vector products (relative residuals %s); "
            "raise `max_iter` or `tol`.",
            tol,
            max_iter,
            np.array2string(residuals / np.maximum(np.abs(theta[:k]), 1e-300), precision=2),
        )
    eigenvectors = None
    if return_eigenvectors:
        eigenvectors = [
            Direction(
                flat.named(vectors[i].to(flat.device)),
                {"kind": "hessian_eigenvector", "index": i, "eigenvalue": float(theta[i]), "seed": seed},
            )
            for i in range(k)
        ]
    result = EigenResult(
        eigenvalues=np.asarray(theta[:k], dtype=np.float64),
        residuals=residuals,
        converged=converged,
        iterations=iterations,
        restarts=restarts,
        tol=tol,
        num_parameters=n,
        eigenvectors=eigenvectors,
    )
    if per_layer:
        layers: dict[str, list[str]] = {}
        for name in flat.names:
            layers.setdefault(layer_of(name), []).append(name)
        numels = dict(zip(flat.names, flat.numels))
        for layer, names in layers.items():
            size = sum(numels[name] for name in names)
            result.per_layer[layer] = hessian_eigenvalues(
                model,
                objective,
                k=min(k, size),
                tol=tol,
                max_iter=max(max_iter, min(k, size)),
                basis_size=None,
                offload=offload,
                include=[f"^{re.escape(name)}$" for name in names],
                include_1d=True,
                seed=seed,
                progress=progress,
            )
    return result


def _thick_restart_lanczos(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    k: int,
    tol: float,
    max_iter: int,
    m: int,
    dtype: torch.dtype,
    device: torch.device,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, list[torch.Tensor], int, int]:
    """Top-k algebraic Ritz pairs of the symmetric operator `hvp` (dimension n), basis of at most m vectors.

    The projected matrix T = Vᵀ H V is built column by column from full projections (classical Gram-Schmidt,
    twice: "twice is enough", Giraud et al. 2005), so after a restart it holds the Ritz values on its
    diagonal and their couplings to the residual vector in one row (the "arrowhead" of Wu & Simon).
    """
    generator = torch.Generator().manual_seed(seed)
    basis = torch.zeros(m + 1, n, dtype=dtype, device=device)
    t = np.zeros((m + 1, m + 1))
    start = torch.randn(n, generator=generator, dtype=torch.float64).to(device, dtype)
    basis[0] = start / torch.linalg.vector_norm(start)
    first = 0  # the first basis vector whose H-product is not yet in T
    iterations = restarts = 0
    bar = tqdm(total=max_iter, desc="lanczos", unit="hvp", disable=not progress, leave=False)
    try:
        while True:
            size = first
            for j in range(first, m):
                w = hvp(basis[j])
                iterations += 1
                bar.update(1)
                h = _orthogonalize(w, basis[: j + 1])
                t[: j + 1, j] = h
                t[j, : j + 1] = h
                beta = float(torch.linalg.vector_norm(w))
                size = j + 1
                scale = max(float(np.abs(t[: j + 1, : j + 1]).max()), 1e-300)
                if beta <= 1e-10 * scale:
                    # An invariant subspace: its Ritz values are exact. Go on from a fresh random direction.
                    beta = 0.0
                    if size < n:
                        w = torch.randn(n, generator=generator, dtype=torch.float64).to(device, dtype)
                        _orthogonalize(w, basis[: j + 1])
                        basis[j + 1] = w / torch.linalg.vector_norm(w)
                else:
                    basis[j + 1] = w / beta
                t[j + 1, j] = t[j, j + 1] = beta
                if iterations >= max_iter or size == n:
                    break
            theta, s = np.linalg.eigh((t[:size, :size] + t[:size, :size].T) / 2)
            theta, s = theta[::-1].copy(), s[:, ::-1].copy()  # largest algebraic first
            coupling = t[size, size - 1] if size < n else 0.0
            estimates = np.abs(coupling * s[size - 1, :])
            done = bool(np.all(estimates[:k] <= tol * np.abs(theta[:k])))
            if done or iterations >= max_iter or size == n:
                break
            # Thick restart: keep the best `keep` Ritz vectors and the residual direction basis[size].
            keep = min(size - 1, k + max(1, (size - k) // 2))
            _combine_rows(basis, size, s[:, :keep])
            basis[keep] = basis[size]
            t[:] = 0.0
            t[np.arange(keep), np.arange(keep)] = theta[:keep]
            t[keep, :keep] = t[:keep, keep] = coupling * s[size - 1, :keep]
            first = keep
            restarts += 1
    finally:
        bar.close()
    _combine_rows(basis, size, s[:, :k])
    vectors = [basis[i].clone() for i in range(k)]
    logger.info("lanczos: %d Hessian-vector products, %d restarts, top eigenvalues %s", iterations, restarts, theta[:k])
    return theta, vectors, iterations, restarts


def _orthogonalize(w: torch.Tensor, basis: torch.Tensor) -> np.ndarray:
    """Remove from `w` (in place) its components along the orthonormal rows of `basis`; return them."""
    h = basis @ w
    w.sub_(basis.T @ h)
    h2 = basis @ w
    w.sub_(basis.T @ h2)
    return (h + h2).double().cpu().numpy()


def _combine_rows(basis: torch.Tensor, size: int, coefficients: np.ndarray, chunk: int = 1 << 20) -> None:
    """basis[:c] = coefficientsᵀ · basis[:size] in place, column block by column block (no full-size copy)."""
    coef = torch.from_numpy(np.ascontiguousarray(coefficients.T)).to(basis.device, basis.dtype)
    for lo in range(0, basis.shape[1], chunk):
        block = basis[:size, lo : lo + chunk]
        basis[: coef.shape[0], lo : lo + chunk] = coef @ block


# --- Hessian trace: Hutchinson ------------------------------------------------------------------------


@dataclass
class TraceResult:
    """Hutchinson's estimate of tr(H).

    Args:
        trace: the mean of zᵀHz over the samples.
        stderr: its standard error, std(zᵀHz) / √samples.
        samples: how many Rademacher vectors.
        num_parameters: the dimension of H.
        per_layer: layer -> (trace, stderr) of that layer's diagonal block, when asked for.
        confidence: the level of `interval` and `per_layer_intervals` (Student-t over the samples).

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.sharpness import hessian_trace
    >>> model = torch.nn.Linear(3, 1, bias=False)
    >>> loss_fn = lambda m: (m.weight**2).sum()          # H = 2·I, tr = 6, every zᵀHz = 6
    >>> r = hessian_trace(model, loss_fn, samples=4, progress=False)
    >>> r.trace, r.stderr, r.interval
    (6.0, 0.0, (6.0, 6.0))

    ```
    """

    trace: float
    stderr: float
    samples: int
    num_parameters: int
    per_layer: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def interval(self) -> tuple[float, float]:
        """The `confidence` Student-t interval of the trace over the Rademacher samples."""
        return mean_interval(self.trace, self.stderr, self.samples, self.confidence)

    @property
    def per_layer_intervals(self) -> dict[str, tuple[float, float]]:
        """layer -> the `confidence` interval of that layer's block trace."""
        return {k: mean_interval(t, e, self.samples, self.confidence) for k, (t, e) in self.per_layer.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "stderr": self.stderr,
            "interval": list(self.interval),
            "confidence": self.confidence,
            "per_layer_intervals": {k: list(v) for k, v in self.per_layer_intervals.items()},
            "samples": self.samples,
            "num_parameters": self.num_parameters,
            "per_layer": {k: list(v) for k, v in self.per_layer.items()},
        }


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its name up to the first numeric part (the block index), else its module.

    `transformer.h.0.attn.c_attn.weight` -> `transformer.h.0`; `transformer.wte.weight` -> `transformer.wte`;
    `model.norm.weight` -> `model.norm`; `bias` -> `bias`.
    """
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def hessian_trace(
    model: torch.nn.Module,
    objective: Any,
    *,
    samples: int = 100,
    seed: int = 0,
    per_layer: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    include_1d: bool = True,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: bool = True,
) -> TraceResult:
    """Hutchinson's estimate of the Hessian's trace, E[zᵀHz] with z Rademacher (±1), and its standard error.

    With z Rademacher the estimator's variance is 2·Σ_{i≠j} H_ij² per sample, the least of any i.i.d.
    distribution with unit variance (Hutchinson 1989); it is exact when H is diagonal. `per_layer` splits
    zᵀHz into Σ_layers z_Lᵀ(Hz)_L, whose means estimate the traces of the diagonal blocks (the cross terms
    average to zero), at no extra cost.

    Args:
        model: the model; its weights are not changed. Evaluated in eval mode.
        objective: a `CausalLMObjective`, `GlueObjective`, or callable `loss_fn(model) -> scalar tensor`.
        samples: Rademacher vectors (>= 2, for a standard error); each costs one Hessian-vector product.
        seed: the draw of the vectors.
        per_layer: also estimate each layer's block (layers as in `layer_of`).
        include, exclude, include_1d: which parameters, as for `hessian_eigenvalues`.
        confidence: the level of the result's intervals.
        progress: tqdm progress bar.
    """
    require_differentiable(objective, "`hessian_trace`")
    _check_int("samples", samples, 2)
    confidence = check_confidence(confidence)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    if not isinstance(per_layer, bool):
        raise ConfigError(f"`per_layer` must be True or False, got {per_layer!r}.")
    flat = _Flat(_select(model, include, exclude, include_1d))
    layers = [layer_of(n) for n in flat.names]
    groups = list(dict.fromkeys(layers))
    group_index = torch.tensor([groups.index(g) for g in layers])
    generator = torch.Generator().manual_seed(seed)
    totals = np.empty(samples)
    blocks = np.empty((samples, len(groups)))
    bar = tqdm(total=samples, desc="hutchinson", unit="hvp", disable=not progress, leave=False)
    try:
        with _differentiable(model, flat.params), double_backward_attention(model):
            for s in range(samples):
                z = (torch.randint(0, 2, (flat.size,), generator=generator) * 2 - 1).to(flat.device, flat.dtype)
                hz = _hvp_into(model, objective, flat, z)
                per_param = torch.stack(
                    [(a.double() * b.double()).sum() for a, b in zip(flat.views(z), flat.views(hz))]
                )
                per_group = torch.zeros(len(groups), dtype=torch.float64).index_add_(0, group_index, per_param.cpu())
                blocks[s] = per_group.numpy()
                totals[s] = float(per_group.sum())
                bar.update(1)
    finally:
        bar.close()
    result = TraceResult(
        trace=float(totals.mean()),
        stderr=float(totals.std(ddof=1) / math.sqrt(samples)),
        samples=samples,
        num_parameters=flat.size,
        confidence=confidence,
    )
    if per_layer:
        result.per_layer = {
            g: (float(blocks[:, i].mean()), float(blocks[:, i].std(ddof=1) / math.sqrt(samples)))
            for i, g in enumerate(groups)
        }
    logger.info("hutchinson: tr(H) = %.6g ± %.2g over %d samples", result.trace, result.stderr, samples)
    return result


# --- sharpness ----------------------------------------------------------------------------------------


@dataclass
class SharpnessConfig(BaseConfig):
    """Options of `sharpness`.

    Args:
        rho (`float`, defaults to 0.05): ρ, the radius of the perturbation ball (‖ε‖₂ ≤ ρ; for the adaptive
            kinds ‖ε / (|θ| + eta)‖₂ ≤ ρ, elementwise).
        kind (`str`, defaults to `"adaptive"`):
            `"worst"`: max over the ball of L(θ + ε) − L(θ), by `steps` of projected normalized gradient ascent
            (the first step is SAM's ε = ρ·g/‖g‖, Foret et al. 2021);
            `"adaptive"`: the same over the elementwise-scaled ball ε = (|θ| + eta)⊙δ, ‖δ‖₂ ≤ ρ (ASAM, Kwon et
            al. 2021; the first step is ε = ρ·T²g/‖Tg‖ with T = |θ| + eta), invariant to rescaling weights;
            `"average"`: E[L(θ + ε)] − L(θ) with ε uniform on the sphere ‖ε‖₂ = ρ (a Gaussian scaled to norm ρ),
            over `samples` draws, with a standard error;
            `"adaptive_average"`: the same with ε = (|θ| + eta)⊙δ, δ uniform on the sphere of radius ρ.
            Andriushchenko et al. (2023) compare all four.
        steps (`int`, defaults to 10): gradient-ascent steps of the worst-case kinds (each one gradient and
            one loss evaluation over the whole evaluation set).
        step_size (`float`, *optional*): length of each normalized ascent step in δ-space, default ρ (so the
            first step lands on SAM's point; later ones move along the sphere, and the best point is kept).
        samples (`int`, defaults to 16): draws of the average kinds (each one loss evaluation).
        eta (`float`, defaults to 0.0): added to |θ| in the adaptive kinds, so that zero weights can move
            (ASAM uses 0.01; Andriushchenko et al. use 0).
        include (`list[str]`, *optional*): regular expressions; only matching parameters are perturbed.
        exclude (`list[str]`, *optional*): regular expressions; matching parameters are left alone.
        include_1d (`bool`, defaults to `True`): perturb biases and norm weights too.
        seed (`int`, defaults to 0): the draws of the average kinds.
        confidence (`float`, defaults to 0.95): the level of the result's `interval`: over the draws for the
            average kinds; over the evaluation examples, at the perturbation found, for the worst-case kinds.

    Example:
    ```python
    >>> from hf_landscape.sharpness import SharpnessConfig
    >>> SharpnessConfig(rho=0.1, kind="worst").steps
    10

    ```
    """

    rho: float = field(default=0.05, metadata={"help": "radius of the perturbation ball"})
    kind: str = field(default="adaptive", metadata={"help": "worst, average, adaptive or adaptive_average"})
    steps: int = field(default=10, metadata={"help": "gradient-ascent steps (worst-case kinds)"})
    step_size: float | None = field(default=None, metadata={"help": "ascent step length, default rho"})
    samples: int = field(default=16, metadata={"help": "random draws (average kinds)"})
    eta: float = field(default=0.0, metadata={"help": "adaptive scale offset: T = |theta| + eta"})
    include: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to perturb"})
    exclude: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to leave alone"})
    include_1d: bool = field(default=True, metadata={"help": "perturb biases and norm weights too"})
    seed: int = field(default=0, metadata={"help": "draws of the average kinds"})
    confidence: float = field(default=DEFAULT_CONFIDENCE, metadata={"help": "level of the confidence interval"})

    def __post_init__(self) -> None:
        self.confidence = check_confidence(self.confidence)
        self.rho = _check_positive("rho", self.rho)
        check_choice("kind", self.kind, SHARPNESS_KINDS)
        _check_int("steps", self.steps, 1)
        _check_int("samples", self.samples, 2)
        if self.step_size is not None:
            self.step_size = _check_positive("step_size", self.step_size)
        self.eta = _check_positive("eta", self.eta, allow_zero=True)
        inc = check_patterns("include", self.include)
        exc = check_patterns("exclude", self.exclude)
        self.include = list(inc) if inc is not None else None
        self.exclude = list(exc) if exc is not None else None
        if not isinstance(self.include_1d, bool):
            raise ConfigError(f"`include_1d` must be True or False, got {self.include_1d!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"`seed` must be an integer, got {self.seed!r}.")

    @property
    def adaptive(self) -> bool:
        return self.kind in ("adaptive", "adaptive_average")

    @property
    def worst_case(self) -> bool:
        return self.kind in ("worst", "adaptive")


@dataclass
class SharpnessResult:
    """A sharpness measurement.

    Args:
        sharpness: worst case: max over the points visited (θ itself included) of L(θ + ε) − L(θ);
            average: the mean of L(θ + ε) − L(θ) over the draws.
        stderr: standard error of the mean (average kinds); None for the worst-case kinds.
        base_loss: L(θ).
        losses: L(θ + ε) at each ascent step or each draw.
        kind, rho: as asked.
        config: the full `SharpnessConfig` as a dict.
        interval: the `config["confidence"]` confidence interval of `sharpness`, (NaN, NaN) when it cannot be
            had (a callable `loss_fn` gives no per-example losses).
        interval_over: what the interval is over: `"draws"` (average kinds: the Student-t interval over the
            random perturbations) or `"examples"` (worst-case kinds: the perturbation found is kept fixed and the
            per-example loss increases are resampled, the delta-method interval of a ratio of sums over examples,
            see `stats.ratio_interval`; it does not include the ascent's own dependence on the data).
    """

    sharpness: float
    stderr: float | None
    base_loss: float
    losses: np.ndarray
    kind: str
    rho: float
    config: dict[str, Any]
    interval: tuple[float, float] = (math.nan, math.nan)
    interval_over: str = "draws"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sharpness": self.sharpness,
            "stderr": self.stderr,
            "interval": list(self.interval),
            "interval_over": self.interval_over,
            "base_loss": self.base_loss,
            "losses": [float(x) for x in self.losses],
            "kind": self.kind,
            "rho": self.rho,
            "config": dict(self.config),
        }


def sharpness(
    model: torch.nn.Module,
    objective: Any,
    config: SharpnessConfig | None = None,
    *,
    progress: bool = True,
    **config_kwargs: Any,
) -> SharpnessResult:
    """ρ-sharpness of the objective at the model's weights (see `SharpnessConfig` for the kinds).

    The weights are moved in place and copied back bit for bit from saved originals however the call ends
    (`engine.editing`); the model runs in eval mode and its train/eval mode is restored.

    Args:
        model: the model.
        objective: a `CausalLMObjective`, `GlueObjective`, or callable `loss_fn(model) -> scalar tensor`.
        config: a `SharpnessConfig`, or its fields as keyword arguments (`rho=0.05, kind="adaptive"`, ...).
        progress: tqdm progress bar.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape.sharpness import sharpness
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0]]))
    >>> loss_fn = lambda m: (m.weight**2).sum()          # g = (2, 0): SAM's ε = (ρ, 0)
    >>> r = sharpness(model, loss_fn, rho=0.5, kind="worst", steps=1, progress=False)
    >>> r.sharpness                                      # (1.5² − 1²)
    1.25

    ```
    """
    if config is None:
        config = SharpnessConfig(**config_kwargs)
    elif not isinstance(config, SharpnessConfig):
        raise ConfigError(f"`config` must be a SharpnessConfig, got {type(config).__name__}.")
    elif config_kwargs:
        raise ConfigError(f"Pass either `config` or sharpness options {sorted(config_kwargs)}, not both.")
    if config.worst_case:  # the ascent follows gradients; the average kinds only evaluate
        require_differentiable(objective, f"Sharpness of kind {config.kind!r}")
    params = _select(model, config.include, config.exclude, config.include_1d)
    names, plist = list(params), list(params.values())
    with editing(model, params) as editor:
        base, base_terms, masks = _measure(model, objective, None)
        # Work in float32 (float64 for a float64 model); perturbations are cast to each parameter's dtype.
        work = [o.to(torch.promote_types(o.dtype, torch.float32)) for o in editor.originals]
        scale = [o.abs() + config.eta for o in work] if config.adaptive else None
        if config.worst_case:
            losses, best_terms = _ascend(
                model, objective, editor, dict(zip(names, plist)), work, scale, config, progress, masks
            )
            # θ itself (ε = 0) is in the ball, so the maximum is at least 0.
            value, stderr = max([0.0, *(losses - base).tolist()]), None
            interval, over = _examples_interval(value, base_terms, best_terms, config.confidence), "examples"
        else:
            losses = _average(model, objective, editor, names, work, scale, config, progress)
            diffs = losses - base
            value, stderr = float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(len(diffs)))
            interval, over = t_interval(diffs, config.confidence), "draws"
    logger.info(
        "%s sharpness (rho=%g): %.6g, %g%% interval %s",
        config.kind,
        config.rho,
        value,
        100 * config.confidence,
        interval,
    )
    return SharpnessResult(
        sharpness=value,
        stderr=stderr,
        base_loss=base,
        losses=losses,
        kind=config.kind,
        rho=config.rho,
        config=config.to_dict(),
        interval=interval,
        interval_over=over,
    )


def _measure(
    model: torch.nn.Module, objective: Any, masks: list[np.ndarray] | None
) -> tuple[float, _Terms, list[np.ndarray] | None]:
    """The loss at the weights as they stand and, when the objective gives them, its per-example terms: each
    example's sum of token losses and its number of tokens (GLUE: its loss and 1), so that the loss is
    Σ sums / Σ counts; and the token masks used. `masks` (None at the base point) fixes which tokens count,
    so a token whose loss turns NaN at a far point makes its example's sum NaN rather than vanish."""
    if is_loss_fn(objective):
        return loss_value(model, objective), None, None
    evaluation = evaluate_objective(model, objective, details=True)
    if evaluation.token_losses is not None:
        if masks is None:
            masks = [np.isfinite(t) for t in evaluation.token_losses]
        sums = np.array([float(np.sum(t[m])) for t, m in zip(evaluation.token_losses, masks)])
        return evaluation.loss, (sums, np.array([float(m.sum()) for m in masks])), masks
    if evaluation.sequence_losses is not None:
        sums = np.asarray(evaluation.sequence_losses, dtype=np.float64)
        return evaluation.loss, (sums, np.ones_like(sums)), None
    return evaluation.loss, None, None


def _examples_interval(value: float, base: _Terms, best: _Terms, confidence: float) -> tuple[float, float]:
    """The ratio interval of Σ(sᵢ(θ + ε) − sᵢ(θ)) / Σcᵢ over the examples, at the best ε found; (0, 0) when the
    best point is θ itself, (NaN, NaN) without per-example terms."""
    if value == 0.0:
        return (0.0, 0.0)
    if base is None or best is None:
        return (math.nan, math.nan)
    keep = base[1] > 0
    _, interval = ratio_interval(best[0][keep] - base[0][keep], base[1][keep], confidence)
    return interval


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _set_perturbation(editor: Any, eps: list[torch.Tensor]) -> None:
    """θ = θ₀ + ε, from the saved original (never accumulated)."""
    editor.set_linear((1.0,), [[e.to(p.device, p.dtype) for e, p in zip(eps, editor.params)]])


def _ascend(
    model: torch.nn.Module,
    objective: Any,
    editor: Any,
    named: dict[str, torch.nn.Parameter],
    work: list[torch.Tensor],
    scale: list[torch.Tensor] | None,
    config: SharpnessConfig,
    progress: bool,
    masks: list[np.ndarray] | None,
) -> tuple[np.ndarray, _Terms]:
    """Projected normalized gradient ascent in δ, with ε = T⊙δ (T = 1, or |θ| + eta for ASAM), ‖δ‖ ≤ ρ.
    Returns the loss after each step and the per-example terms (see `_measure`) of the highest one.

    At a critical point (∇L = 0, where SAM's ε is undefined) the first step goes along a random direction
    drawn from `config.seed`, so the ascent can still climb the curvature.
    """
    params = list(named.values())
    rho = config.rho
    step = config.step_size if config.step_size is not None else rho
    delta = [torch.zeros_like(w) for w in work]
    losses = np.full(config.steps, np.nan)
    best: tuple[float, _Terms] = (-math.inf, None)
    bar = tqdm(total=config.steps, desc=f"{config.kind} sharpness", unit="step", disable=not progress, leave=False)
    flat = _Flat(named)
    try:
        for t in range(config.steps):
            eps = delta if scale is None else [s * d for s, d in zip(scale, delta)]
            _set_perturbation(editor, eps)
            with _differentiable(model, params):
                g = flat.views(_grad_into(model, objective, flat))
            # The gradient with respect to δ is T⊙∇L(θ + ε).
            u = [gi.to(w.device, w.dtype) for gi, w in zip(g, work)]
            if scale is not None:
                u = [s * ui for s, ui in zip(scale, u)]
            norm = _norm(u)
            if norm == 0.0 and t == 0:
                logger.warning("the gradient is zero at the weights; the ascent starts along a random direction.")
                u = _gaussian(config.seed, 0, list(named), work)
                norm = _norm(u)
            if norm == 0.0 or not math.isfinite(norm):
                logger.warning("the gradient is %s at ascent step %d; stopping the ascent there.", norm, t)
                losses = losses[:t]
                break
            delta = [d + (step / norm) * ui for d, ui in zip(delta, u)]
            d_norm = _norm(delta)
            if d_norm > rho:  # project onto the ball
                delta = [d * (rho / d_norm) for d in delta]
            eps = delta if scale is None else [s * d for s, d in zip(scale, delta)]
            _set_perturbation(editor, eps)
            losses[t], terms, _ = _measure(model, objective, masks)
            if losses[t] > best[0]:
                best = (float(losses[t]), terms)
            bar.update(1)
    finally:
        bar.close()
    return (losses if len(losses) else np.zeros(0)), best[1]


def _gaussian(seed: int, draw: int, names: list[str], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """N(0, I) tensors shaped as `like`, each drawn on the CPU from (seed, draw, parameter name)."""
    return [
        torch.randn(w.shape, generator=torch.Generator().manual_seed(seed_for(seed, draw, n))).to(w.device, w.dtype)
        for n, w in zip(names, like)
    ]


def _average(
    model: torch.nn.Module,
    objective: Any,
    editor: Any,
    names: list[str],
    work: list[torch.Tensor],
    scale: list[torch.Tensor] | None,
    config: SharpnessConfig,
    progress: bool,
) -> np.ndarray:
    """L(θ + ε) for ε = T⊙δ, δ = ρ·z/‖z‖, z ~ N(0, I) drawn per (seed, sample, parameter name)."""
    losses = np.empty(config.samples)
    bar = tqdm(total=config.samples, desc=f"{config.kind} sharpness", unit="draw", disable=not progress, leave=False)
    try:
        for s in range(config.samples):
            z = _gaussian(config.seed, s, names, work)
            factor = config.rho / _norm(z)
            eps = [factor * zi for zi in z] if scale is None else [factor * si * zi for si, zi in zip(scale, z)]
            _set_perturbation(editor, eps)
            losses[s] = loss_value(model, objective)
            bar.update(1)
    finally:
        bar.close()
    return losses
