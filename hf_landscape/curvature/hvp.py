"""Gradients and Hessian-vector products of the loss over a selection of parameters.

Hessian-vector products are double backward (Pearlmutter 1994): g = ∇L with `create_graph=True`, then ∇(g·v),
summed over the objective's batches with one batch's graph alive at a time (`objectives.loss.loss_terms`). Attention
kernels without a double backward (SDPA's flash / memory-efficient kernels on GPU, flash-attention) are switched to
`"eager"` for the duration and switched back afterwards. `FlatParameters` sees the selected parameters as one flat
vector for the Krylov methods (`eigen`, `trace`); `differentiable` turns grad on for exactly them and gives every
flag back. What does not live here: the eigenvalue and trace estimators, sharpness.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..config import check_patterns
from ..directions.base import Direction, select_parameters
from ..engine.attention import switched_attention
from ..errors import ConfigError
from ..objectives.base import eval_mode
from ..objectives.loss import loss_terms, require_differentiable

logger = logging.getLogger(__name__)

# Attention implementations whose backward is itself differentiable on every device.
DOUBLE_BACKWARD_ATTENTION = ("eager",)


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
def differentiable(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
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


def select(model: torch.nn.Module, include: Any, exclude: Any, include_1d: bool) -> dict[str, torch.nn.Parameter]:
    if not isinstance(include_1d, bool):
        raise ConfigError(f"`include_1d` must be True or False, got {include_1d!r}.")
    inc = check_patterns("include", include)
    exc = check_patterns("exclude", exclude)
    return select_parameters(model, include=inc, exclude=exc, include_1d=include_1d)


def check_int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"`{name}` must be a finite number {bound}, got {value!r}.")
    return float(value)


class FlatParameters:
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


def rademacher(n: int, generator: torch.Generator, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """n random signs ±1, the same for a given `generator` state on every device, drawn fast at any size: one 62-bit
    seed from `generator` starts numpy's PCG64, whose n/8 random bytes go to `device` and are unpacked into signs
    there. (torch's CPU generator takes 8 s for a billion draws, one at a time; this takes a fraction of a second.)"""
    seed = int(torch.randint(0, 1 << 62, (1,), generator=generator))
    packed = np.frombuffer(np.random.default_rng(seed).bytes((n + 7) // 8), dtype=np.uint8)
    bytes_ = torch.from_numpy(packed.copy()).to(device)
    shifts = torch.arange(8, dtype=torch.uint8, device=bytes_.device)
    bits = bytes_.unsqueeze(1).bitwise_right_shift(shifts).bitwise_and_(1).reshape(-1)[:n]
    return bits.to(dtype).mul_(2).sub_(1)


def random_start(n: int, generator: torch.Generator, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """n values spread evenly over (−1, 1), none zero, for a Lanczos start: 16 random bits each (numpy's PCG64,
    seeded from `generator`, so the same on every device, and fast at a billion entries). Unlike signs, values from
    a continuum give no start orthogonal to an eigenvector whose entries are ±c."""
    seed = int(torch.randint(0, 1 << 62, (1,), generator=generator))
    packed = np.frombuffer(np.random.default_rng(seed).bytes(2 * n), dtype=np.int16)
    return torch.from_numpy(packed.copy()).to(device).to(dtype).add_(0.5).div_(32768.0)


def hvp_into(model: torch.nn.Module, objective: Any, flat: FlatParameters, v: torch.Tensor) -> torch.Tensor:
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


def grad_into(model: torch.nn.Module, objective: Any, flat: FlatParameters) -> torch.Tensor:
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
    flat = FlatParameters(params)
    v = torch.cat([vector[n].detach().to(flat.device, flat.dtype).reshape(-1) for n in flat.names])
    with differentiable(model, flat.params), double_backward_attention(model):
        return flat.named(hvp_into(model, objective, flat, v))
