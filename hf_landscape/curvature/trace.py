"""Estimates of the trace of the Hessian (or Gauss-Newton matrix, or empirical Fisher): Hutchinson's and Hutch++, with
their standard error and Student-t interval, optionally per layer or per block (`TraceResult`, `hessian_trace`,
`layer_of`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import check_choice, result_fields
from ..errors import ConfigError
from ..stats import DEFAULT_CONFIDENCE, check_confidence, mean_interval
from . import rowspace
from .blocks import Partition, layer_partition, role_partition
from .hvp import FlatParameters, check_int, rademacher, select
from .operators import check_centre, check_operator, operator_for

logger = logging.getLogger(__name__)

TRACE_METHODS = ("hutchinson", "hutch++")


@dataclass
class TraceResult:
    """An estimate of tr(H).

    Args:
        trace: Hutchinson: the mean of zᵀHz over the samples; Hutch++: tr(QᵀHQ) + the mean of z'ᵀHz'.
        stderr: its standard error, std(zᵀHz) / √n over the n random samples.
        samples: matrix-vector products used in all.
        num_parameters: the dimension of H.
        per_layer: layer -> (trace, stderr) of that layer's diagonal block, when asked for.
        confidence: the level of `interval` and `per_layer_intervals` (Student-t over the random samples).
        method: `"hutchinson"` or `"hutch++"`.
        random_samples: how many of the products were random samples (the interval's n; all of them for
            Hutchinson, about a third for Hutch++); None means `samples`.
        per_block: role -> (trace, stderr) of that role's diagonal block, when asked for.
        operator, hvp: the matrix and how its products were made.

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
    method: str = "hutchinson"
    random_samples: int | None = None
    per_block: dict[str, tuple[float, float]] = field(default_factory=dict)
    operator: str = "hessian"
    hvp: str = "exact"

    @property
    def _n(self) -> int:
        return self.samples if self.random_samples is None else self.random_samples

    @property
    def interval(self) -> tuple[float, float]:
        """The `confidence` Student-t interval of the trace over the random samples."""
        return mean_interval(self.trace, self.stderr, self._n, self.confidence)

    @property
    def per_layer_intervals(self) -> dict[str, tuple[float, float]]:
        """layer -> the `confidence` interval of that layer's block trace."""
        return {k: mean_interval(t, e, self._n, self.confidence) for k, (t, e) in self.per_layer.items()}

    @property
    def per_block_intervals(self) -> dict[str, tuple[float, float]]:
        """role -> the `confidence` interval of that role's block trace."""
        return {k: mean_interval(t, e, self._n, self.confidence) for k, (t, e) in self.per_block.items()}

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
            "method": self.method,
            "random_samples": self.random_samples,
            "per_block": {k: list(v) for k, v in self.per_block.items()},
            "per_block_intervals": {k: list(v) for k, v in self.per_block_intervals.items()},
            "operator": self.operator,
            "hvp": self.hvp,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceResult:
        """The result `to_dict` describes."""
        fields = result_fields(cls, data, ("trace", "stderr", "samples", "num_parameters", "per_layer", "confidence"))
        fields["per_layer"] = {k: (float(v[0]), float(v[1])) for k, v in fields["per_layer"].items()}
        fields["per_block"] = {k: (float(v[0]), float(v[1])) for k, v in data.get("per_block", {}).items()}
        for name, default in (
            ("method", "hutchinson"),
            ("random_samples", None),
            ("operator", "hessian"),
            ("hvp", "exact"),
        ):
            fields[name] = data.get(name, default)
        return cls(**fields)


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
    method: str = "hutchinson",
    per_layer: bool = False,
    per_block: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    include_1d: bool = True,
    operator: str = "hessian",
    hvp: str = "exact",
    fd_step: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: bool = True,
) -> TraceResult:
    """An estimate of the trace of the Hessian (or Gauss-Newton matrix, or empirical Fisher), and its standard error,
    from `samples` matrix-vector products.

    `method="hutchinson"`: the mean of zᵀHz over Rademacher (±1) vectors z (Hutchinson 1989). Its variance is
    2·Σ_{i≠j} H_ij² per sample, the least of any i.i.d. distribution with unit variance; it is exact when H is
    diagonal.

    `method="hutch++"` (Meyer, Musco, Musco & Woodruff 2021): a third of the products find the dominant subspace
    (Q = orth(H·S), S Rademacher with samples // 3 columns), a third take its trace exactly (tr(QᵀHQ)), and the rest
    run Hutchinson on what is left, (I − QQᵀ)H(I − QQᵀ). When a few eigenvalues carry most of the trace, as in a
    trained network's Hessian, the variance is far lower for the same number of products (for a positive
    semi-definite H, relative error ε from O(1/ε) products instead of O(1/ε²)). The standard error and interval are
    those of the Hutchinson part (over its samples, given S); it holds samples // 3 vectors of the parameters' size.

    `per_layer` / `per_block` split the estimate into the diagonal blocks' traces, Σ_blocks z_Bᵀ(Hz)_B (and for
    Hutch++ the same split of its two parts), at no extra cost.

    Args:
        model: the model; its weights are not changed. Evaluated in eval mode.
        objective: a `CausalLMObjective`, `GlueObjective`, or callable `loss_fn(model) -> scalar tensor`.
        samples: matrix-vector products in all (>= 2 for Hutchinson, >= 4 for Hutch++).
        seed: the draw of the vectors.
        method: `"hutchinson"` or `"hutch++"`.
        per_layer: also estimate each layer's block (layers as in `layer_of`).
        per_block: also estimate each role's block (`blocks.ROLES`).
        include, exclude, include_1d: which parameters, as for `hessian_eigenvalues`.
        operator, hvp, fd_step: the matrix and its products, as for `hessian_eigenvalues`.
        confidence: the level of the result's intervals.
        progress: tqdm progress bar.
    """
    check_operator(objective, operator, hvp, "`hessian_trace`")
    check_choice("method", method, TRACE_METHODS)
    check_int("samples", samples, 2 if method == "hutchinson" else 4)
    confidence = check_confidence(confidence)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    for name, flag in (("per_layer", per_layer), ("per_block", per_block)):
        if not isinstance(flag, bool):
            raise ConfigError(f"`{name}` must be True or False, got {flag!r}.")
    flat = FlatParameters(select(model, include, exclude, include_1d))
    partitions = {"per_layer": layer_partition(flat, layer_of) if per_layer else None}
    partitions["per_block"] = role_partition(flat, model) if per_block else None
    generator = torch.Generator().manual_seed(seed)
    check_centre(model, objective)
    bar = tqdm(total=samples, desc=method, unit="hvp", disable=not progress, leave=False)
    try:
        with operator_for(model, objective, flat, operator=operator, hvp=hvp, fd_step=fd_step) as op:

            def product(v: torch.Tensor) -> torch.Tensor:
                out = op(v)
                bar.update(1)
                return out

            estimate = _hutchinson if method == "hutchinson" else _hutch_plus_plus
            exact, randoms, groups = estimate(product, flat, samples, generator, partitions)
    finally:
        bar.close()
    result = TraceResult(
        trace=float(exact["total"] + randoms["total"].mean()),
        stderr=float(randoms["total"].std(ddof=1) / math.sqrt(len(randoms["total"]))),
        samples=samples,
        num_parameters=flat.size,
        confidence=confidence,
        method=method,
        random_samples=len(randoms["total"]),
        operator=operator,
        hvp=hvp,
    )
    for attribute, names in groups.items():
        setattr(
            result,
            attribute,
            {
                g: (float(exact[g] + randoms[g].mean()), float(randoms[g].std(ddof=1) / math.sqrt(len(randoms[g]))))
                for g in names
            },
        )
    logger.info("%s: tr = %.6g ± %.2g over %d products", method, result.trace, result.stderr, samples)
    return result


_Partitions = dict[str, Partition | None]


def _rademacher(flat: FlatParameters, generator: torch.Generator) -> torch.Tensor:
    return rademacher(flat.size, generator, flat.device, flat.dtype)


def _split(partitions: _Partitions, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Σ aᵢbᵢ in all ("total") and per group of every partition asked for."""
    out = {"total": float(torch.dot(a.double(), b.double()))}
    for partition in partitions.values():
        if partition is not None:
            out.update(partition.sums(a, b))
    return out


def _group_names(partitions: _Partitions) -> dict[str, list[str]]:
    return {attribute: list(p.groups) for attribute, p in partitions.items() if p is not None}


def _collect(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def _hutchinson(
    product: Any, flat: FlatParameters, samples: int, generator: torch.Generator, partitions: _Partitions
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, list[str]]]:
    """(exact part: zero, Hutchinson samples of zᵀHz per total and group, the group names)."""
    rows = []
    for _ in range(samples):
        z = _rademacher(flat, generator)
        rows.append(_split(partitions, z, product(z)))
    randoms = _collect(rows)
    return {key: 0.0 for key in randoms}, randoms, _group_names(partitions)


def _hutch_plus_plus(
    product: Any, flat: FlatParameters, samples: int, generator: torch.Generator, partitions: _Partitions
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, list[str]]]:
    """Hutch++ with samples // 3 sketch vectors, as many for tr(QᵀHQ), and the rest for the deflated Hutchinson.

    Per group B the split is tr(P_B H) = Σⱼ (P_B qⱼ)·(H qⱼ) + E[(P_B z')·(H z')] with z' = (I − QQᵀ)z: both parts
    add up over the groups to the whole estimate."""
    k = samples // 3
    basis = torch.stack([product(_rademacher(flat, generator)) for _ in range(k)])  # H·S, one row per column of S
    rank = _orthonormalize_rows(basis)
    q = basis[:rank]
    exact = _collect([_split(partitions, qj, product(qj)) for qj in q]) if rank else {}
    exact_sums = {key: float(v.sum()) for key, v in exact.items()}
    rows = []  # a rank-deficient sketch leaves more products to the Hutchinson part
    for _ in range(samples - k - rank):
        z = _rademacher(flat, generator)
        if rank:
            rowspace.remove(z, q)
        rows.append(_split(partitions, z, product(z)))
    randoms = _collect(rows)
    return {key: exact_sums.get(key, 0.0) for key in randoms}, randoms, _group_names(partitions)


def _orthonormalize_rows(rows: torch.Tensor) -> int:
    """Orthonormalize the rows of `rows` in place (Gram-Schmidt, twice), moving the independent ones to the front;
    return how many there are."""
    rank = 0
    scale = max(float(torch.linalg.vector_norm(r)) for r in rows) if len(rows) else 0.0
    for j in range(rows.shape[0]):
        w = rows[j].clone()
        for _ in range(2):
            if rank:
                rowspace.remove(w, rows[:rank])
        norm = float(torch.linalg.vector_norm(w))
        if norm > 1e-10 * scale and norm > 0.0:
            rows[rank] = w / norm
            rank += 1
    return rank
