"""The k largest algebraic eigenvalues of the Hessian (or Gauss-Newton matrix, or empirical Fisher), by thick-restart
Lanczos (Wu & Simon 2000) on matrix-vector products, with guaranteed residual bounds; optionally per layer or per
block (`EigenResult`, `hessian_eigenvalues`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import result_fields
from ..directions.base import Direction
from ..errors import ConfigError
from . import rowspace
from .blocks import Partition, layer_partition, role_partition
from .hvp import FlatParameters, check_int, check_positive, random_start, select
from .operators import check_centre, check_operator, operator_for
from .trace import layer_of

logger = logging.getLogger(__name__)


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
        per_block: role -> the `EigenResult` of that role's diagonal block (`per_block=True`; roles as in
            `blocks.ROLES`).
        operator: the matrix: `"hessian"`, `"ggn"` or `"fisher"`.
        hvp: how its products were made: `"exact"` or `"finite_difference"`.

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
    per_block: dict[str, EigenResult] = field(default_factory=dict)
    operator: str = "hessian"
    hvp: str = "exact"

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
            "per_block": {name: r.to_dict() for name, r in self.per_block.items()},
            "operator": self.operator,
            "hvp": self.hvp,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EigenResult:
        """The result `to_dict` describes (without eigenvectors, which it does not hold)."""
        names = ("eigenvalues", "residuals", "converged", "iterations", "restarts", "tol", "num_parameters")
        fields = result_fields(cls, data, (*names, "per_layer"))
        fields["eigenvalues"] = np.asarray(fields["eigenvalues"], dtype=np.float64)
        fields["residuals"] = np.asarray(fields["residuals"], dtype=np.float64)
        fields["per_layer"] = {name: cls.from_dict(r) for name, r in fields["per_layer"].items()}
        fields["per_block"] = {name: cls.from_dict(r) for name, r in data.get("per_block", {}).items()}
        fields.update(operator=data.get("operator", "hessian"), hvp=data.get("hvp", "exact"))
        return cls(**fields)


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
    per_block: bool = False,
    operator: str = "hessian",
    hvp: str = "exact",
    fd_step: float | None = None,
    progress: bool = True,
) -> EigenResult:
    """The `k` largest *algebraic* eigenvalues of the Hessian (or Gauss-Newton matrix, or empirical Fisher) of the
    objective at the model's weights.

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
        per_block: the same per role (`blocks.ROLES`: embeddings, attention query/key, attention value/output,
            MLP, norms, head), in `per_block`.
        operator: `"hessian"`, `"ggn"` (generalized Gauss-Newton, positive semi-definite; needs an objective with
            logits) or `"fisher"` (empirical Fisher), see `curvature.operators`.
        hvp: `"exact"` (double backward) or `"finite_difference"` (two gradients, no double-backward graph).
        fd_step: the relative finite-difference step (default u^(1/3) of the weights' dtype).
        progress: tqdm progress bar over Hessian-vector products.

    Returns:
        `EigenResult`; `converged` is False (with a warning) when `max_iter` ran out first.
    """
    check_operator(objective, operator, hvp, "`hessian_eigenvalues`")
    check_int("k", k, 1)
    tol = check_positive("tol", tol)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    for name, flag in (("per_layer", per_layer), ("per_block", per_block), ("offload", offload)):
        if not isinstance(flag, bool):
            raise ConfigError(f"`{name}` must be True or False, got {flag!r}.")
    flat = FlatParameters(select(model, include, exclude, include_1d))
    n = flat.size
    if k > n:
        raise ConfigError(
            f"`k` ({k}) is larger than the number of selected parameters ({n}); pass `k` <= {n}, or select more "
            "parameters (`include=`, `include_1d=True`)."
        )
    check_int("max_iter", max_iter, k)
    if basis_size is not None:
        check_int("basis_size", basis_size, k + 2 if n >= k + 2 else k)
    groups = {"per_layer": layer_partition(flat, layer_of) if per_layer else None}
    groups["per_block"] = role_partition(flat, model) if per_block else None
    basis_device = torch.device("cpu") if offload else flat.device
    options: dict[str, Any] = {"tol": tol, "max_iter": max_iter, "basis_device": basis_device, "seed": seed}
    options.update(progress=progress, dtype=flat.dtype)
    check_centre(model, objective)
    with operator_for(model, objective, flat, operator=operator, hvp=hvp, fd_step=fd_step) as op:

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return op(v).to(basis_device)

        result, vectors = _eigen(matvec, n, k, basis_size, **options)
        for attribute, partition in groups.items():
            if partition is None:
                continue
            for name in partition.groups:
                size = partition.sizes[name]
                restricted = _restricted(op, partition, name, basis_device)
                top = min(k, size)
                per = _eigen(restricted, size, top, None, **{**options, "max_iter": max(max_iter, top)})[0]
                per.operator, per.hvp = operator, hvp  # a block of the same matrix, by the same products
                getattr(result, attribute)[name] = per
        result.operator, result.hvp = operator, hvp
    if return_eigenvectors:
        label = "hessian_eigenvector" if operator == "hessian" else f"{operator}_eigenvector"
        result.eigenvectors = [
            Direction(
                flat.named(vectors[i].to(flat.device)),
                {"kind": label, "index": i, "eigenvalue": float(result.eigenvalues[i]), "seed": seed},
            )
            for i in range(k)
        ]
    return result


def _restricted(
    op: Callable[[torch.Tensor], torch.Tensor], partition: Partition, name: str, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The operator's diagonal block on one group of coordinates: x -> (M·scatter(x)) restricted to the group."""

    def matvec(x: torch.Tensor) -> torch.Tensor:
        return partition.gather(name, op(partition.scatter(name, x.to(partition.flat.device)))).to(device)

    return matvec


def _eigen(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    k: int,
    basis_size: int | None,
    *,
    dtype: torch.dtype,
    tol: float,
    max_iter: int,
    basis_device: torch.device,
    seed: int,
    progress: bool,
) -> tuple[EigenResult, list[torch.Tensor]]:
    """Top-k Ritz pairs of the symmetric `matvec` (dimension n), their residuals and the result."""
    m = min(max(20, 2 * k + 2), n) if basis_size is None else min(basis_size, n)
    lanczos = _thick_restart_lanczos(matvec, n, k, tol, max_iter, m, dtype, basis_device, seed, progress)
    theta, vectors, iterations, restarts = lanczos
    residuals = np.empty(k)
    for i in range(k):
        y = vectors[i]
        residuals[i] = float(torch.linalg.vector_norm(matvec(y).to(y.dtype) - theta[i] * y))
    converged = bool(np.all(residuals <= tol * np.abs(theta[:k])))
    if not converged:
        logger.warning(
            "Lanczos did not reach tol=%g within max_iter=%d Hessian-vector products (relative residuals %s); "
            "raise `max_iter` or `tol`.",
            tol,
            max_iter,
            np.array2string(residuals / np.maximum(np.abs(theta[:k]), 1e-300), precision=2),
        )
    result = EigenResult(
        eigenvalues=np.asarray(theta[:k], dtype=np.float64),
        residuals=residuals,
        converged=converged,
        iterations=iterations,
        restarts=restarts,
        tol=tol,
        num_parameters=n,
    )
    return result, vectors


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
    start = random_start(n, generator, device, dtype)
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
                        w = random_start(n, generator, device, dtype)
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
    h = rowspace.remove(w, basis)
    h2 = rowspace.remove(w, basis)
    return (h + h2).double().cpu().numpy()


def _combine_rows(basis: torch.Tensor, size: int, coefficients: np.ndarray, chunk: int = 1 << 20) -> None:
    """basis[:c] = coefficientsᵀ · basis[:size] in place, column block by column block (no full-size copy). Each
    block is copied to a small contiguous matrix first: as a view its rows lie a whole row length apart, past cuBLAS's
    32-bit indices for a billion-parameter basis (`rowspace`)."""
    coef = torch.from_numpy(np.ascontiguousarray(coefficients.T)).to(basis.device, basis.dtype)
    for lo in range(0, basis.shape[1], chunk):
        block = basis[:size, lo : lo + chunk].contiguous()
        basis[: coef.shape[0], lo : lo + chunk] = coef @ block
