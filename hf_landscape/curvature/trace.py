"""Hutchinson's estimate of the Hessian's trace, with its standard error and Student-t interval, optionally per
layer (`TraceResult`, `hessian_trace`, `layer_of`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import result_fields
from ..errors import ConfigError
from ..objectives.loss import require_differentiable
from ..stats import DEFAULT_CONFIDENCE, check_confidence, mean_interval
from .hvp import FlatParameters, check_int, differentiable, double_backward_attention, hvp_into, select

logger = logging.getLogger(__name__)


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceResult:
        """The result `to_dict` describes."""
        fields = result_fields(cls, data, ("trace", "stderr", "samples", "num_parameters", "per_layer", "confidence"))
        fields["per_layer"] = {k: (float(v[0]), float(v[1])) for k, v in fields["per_layer"].items()}
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
    check_int("samples", samples, 2)
    confidence = check_confidence(confidence)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    if not isinstance(per_layer, bool):
        raise ConfigError(f"`per_layer` must be True or False, got {per_layer!r}.")
    flat = FlatParameters(select(model, include, exclude, include_1d))
    layers = [layer_of(n) for n in flat.names]
    groups = list(dict.fromkeys(layers))
    group_index = torch.tensor([groups.index(g) for g in layers])
    generator = torch.Generator().manual_seed(seed)
    totals = np.empty(samples)
    blocks = np.empty((samples, len(groups)))
    bar = tqdm(total=samples, desc="hutchinson", unit="hvp", disable=not progress, leave=False)
    try:
        with differentiable(model, flat.params), double_backward_attention(model):
            for s in range(samples):
                z = (torch.randint(0, 2, (flat.size,), generator=generator) * 2 - 1).to(flat.device, flat.dtype)
                hz = hvp_into(model, objective, flat, z)
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
