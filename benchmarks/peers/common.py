"""What every adapter shares: the workload, the one loss function, and small helpers.

Every tool computes the same loss: the mean next-token cross-entropy over the whole 16 x 128 batch
(no padding, every position after the first is a target), with the logits upcast to float32.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def lm_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `model` on `ids` (B, L); a 0-dim float32 tensor."""
    logits = model(input_ids=ids, use_cache=False).logits
    return lm_loss_from_logits(logits, ids)


def lm_loss_from_logits(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))


class LMCriterion(torch.nn.Module):
    """`criterion(model_output, targets)` for peers that call `criterion(model(inputs), targets)`.

    `model_output` is what a transformers causal LM returns (it has `.logits`) and `targets` are the
    input ids themselves; the value is `lm_loss`.
    """

    def forward(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        logits = output.logits if hasattr(output, "logits") else output
        return lm_loss_from_logits(logits, targets)


@dataclass
class Context:
    """One tool's run: the model (on its device, in eval mode), the batch, and the grid asked for."""

    model: torch.nn.Module
    ids: torch.Tensor  # (16, 128) int64 on the model's device
    device: str  # "cpu" or "cuda"
    steps: int  # points per axis
    seed: int
    li_repo: str | None = None
    notes: list[str] = field(default_factory=list)  # adapters append deviations and caveats here


@dataclass
class Result:
    """What an adapter returns; `values[j, i]` is at (x[i], y[j]) in the adapter's best mapping of the
    peer's own coordinates to Li et al.'s α, β (α = 1: a perturbation of norm ‖θ‖ of the perturbed weights)."""

    values: np.ndarray
    x: np.ndarray
    y: np.ndarray
    centre: float  # the tool's value at α = β = 0
    centre_note: str = ""  # how `centre` was obtained when the grid has no (0, 0) point
    grid_note: str = ""  # where the grid is not the rectangular product of x and y


def unique_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """`model.parameters()` (tied weights appear once)."""
    return list(model.parameters())


def weight_norms(model: torch.nn.Module) -> tuple[float, float]:
    """(‖θ‖ over parameters with >= 2 dims, ‖θ‖ over all parameters), in float64, tied weights once."""
    sq_2d = sq_all = 0.0
    with torch.no_grad():
        for p in unique_parameters(model):
            s = float(p.detach().double().pow(2).sum())
            sq_all += s
            if p.dim() >= 2:
                sq_2d += s
    return sq_2d**0.5, sq_all**0.5


def centre_index(n: int) -> int:
    if n % 2 == 0:
        raise ValueError(f"--steps must be odd so that the grid passes through the centre, got {n}.")
    return n // 2


def import_submodule(package: str, submodule: str) -> types.ModuleType:
    """Import `package.submodule` from the installed distribution *without* running `package/__init__.py`.

    Some peers' `__init__` imports heavy optional stacks (topology, quantization) that the landscape
    computation never uses; the submodule's own code runs unchanged.
    """
    full = f"{package}.{submodule}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed; run benchmarks/wheels.sh and install .whl/*.whl with --no-deps")
    if package not in sys.modules:
        stub = types.ModuleType(package)
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        stub.__file__ = spec.origin
        sys.modules[package] = stub
    return importlib.import_module(full)


def version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
