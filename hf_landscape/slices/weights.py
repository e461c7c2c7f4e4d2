"""Which weights a curve or a plane through several models moves, and each model's values of them.

Every floating-point parameter, or, for a peft `PeftModel`, only the active adapter's LoRA weights (the base weights
must then be the same in every model): a curve between two LoRA fine-tunes of an LLM costs adapter-sized memory.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..directions.adapter import adapter_pattern
from ..errors import DirectionError


def moving_weights(
    model: torch.nn.Module, others: list[torch.nn.Module], what: str
) -> tuple[dict[str, torch.nn.Parameter], list[list[torch.Tensor]]]:
    """The parameters of `model` that move (name -> parameter, in model order) and each of `others`' values of them
    (float32 copies on `model`'s devices, in that order); `what` names the call in errors.

    Raises:
        DirectionError: a model's parameter names or shapes differ from `model`'s, or (PeftModels) its base weights
            differ, before any work.
    """
    mine = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
    pattern = re.compile(adapter_pattern(model, None)) if hasattr(model, "peft_config") else None
    keep = {n for n in mine if pattern is None or pattern.search(n)}
    for index, other in enumerate(others):
        _check_like(model, mine, other, keep, f"{what}: model {index + 1}")
    params = {n: p for n, p in mine.items() if n in keep}
    values = []
    for other in others:
        theirs = dict(other.named_parameters())
        values.append([_float(theirs[n].detach(), p.device) for n, p in params.items()])
    return params, values


def _float(t: torch.Tensor, device: Any) -> torch.Tensor:
    return t.to(device=device, dtype=torch.promote_types(t.dtype, torch.float32), copy=True)


@torch.no_grad()
def _check_like(
    model: torch.nn.Module, mine: dict[str, torch.nn.Parameter], other: Any, keep: set[str], label: str
) -> None:
    if not isinstance(other, torch.nn.Module):
        raise DirectionError(f"{label} must be a torch model of the probed model's architecture, got {type(other)}.")
    theirs = {n: p for n, p in other.named_parameters() if p.is_floating_point()}
    missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    if missing or extra:
        raise DirectionError(
            f"{label} has different parameter names: missing {missing[:5]}, unexpected {extra[:5]}; use models of "
            "one architecture."
        )
    for name, p in mine.items():
        q = theirs[name]
        if p.shape != q.shape:
            raise DirectionError(
                f"{label}: parameter {name!r} has shape {tuple(q.shape)}, but the probed model's has "
                f"{tuple(p.shape)}; use models of one architecture."
            )
        if name not in keep and not torch.equal(p.detach(), q.detach().to(p.device, p.dtype)):
            raise DirectionError(
                f"{label}: base weight {name!r} differs from the probed model's; only the adapter weights move "
                "between PeftModels, so they must share one base model (merge the adapters to use every weight)."
            )
