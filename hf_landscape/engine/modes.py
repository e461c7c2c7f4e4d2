"""The modes a grid runs in: compiled (`compiled_forward`, `compiling`) and mixed precision (`precision`).

`AUTOCAST_DTYPES` names the autocast dtypes a probe takes; `check_autocast` refuses, before any evaluation, an
autocast dtype the model's half-precision weights cannot run under.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import ConfigError
from ..objectives.base import COMPILING

AUTOCAST_DTYPES: dict[str | None, torch.dtype | None] = {
    None: None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@contextlib.contextmanager
def compiled_forward(model: torch.nn.Module, compiled: Callable[..., Any] | None) -> Iterator[None]:
    """Run `model.forward` as `compiled` (e.g. `torch.compile(..., mode="reduce-overhead")`, CUDA graphs)
    inside the block, and put the model's own forward back on exit. Graphs read the parameters in place,
    so the engine's in-place weight updates reach them."""
    if compiled is None:
        yield
        return
    own = "forward" in model.__dict__
    original = model.__dict__.get("forward")
    model.forward = compiled  # type: ignore[method-assign]
    try:
        with compiling():  # objectives compile their loss as well (`CausalLMObjective`)
            yield
    finally:
        if own:
            model.forward = original  # type: ignore[method-assign,assignment]
        else:
            del model.forward


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Tell objectives that the grid runs compiled, so they compile their loss too (`objectives.base.COMPILING`)."""
    token = COMPILING.set(True)
    try:
        yield
    finally:
        COMPILING.reset(token)


def check_autocast(model: torch.nn.Module, autocast: Any) -> None:
    """`autocast` is one of `AUTOCAST_DTYPES`, and the model's weights can run under it: autocast to one
    half-precision dtype cannot run weights stored in the other (a half-precision op meets weights it cannot cast)."""
    if not (autocast is None or isinstance(autocast, str)) or autocast not in AUTOCAST_DTYPES:
        raise ConfigError(
            f"`autocast` must be one of {list(AUTOCAST_DTYPES)}, got {autocast!r}; e.g. autocast='bfloat16'."
        )
    dtype = AUTOCAST_DTYPES.get(autocast)
    if dtype is None:
        return
    halves = {p.dtype for p in model.parameters() if p.dtype in (torch.float16, torch.bfloat16)} - {dtype}
    if halves:
        other = str(next(iter(halves))).replace("torch.", "")
        raise ConfigError(
            f"`autocast` {autocast!r} cannot evaluate a model whose weights are {other}; pass autocast={other!r} or "
            f"None, or load the model in float32."
        )


def precision(model: torch.nn.Module, autocast: str | None) -> contextlib.AbstractContextManager[Any]:
    """`torch.autocast` to `autocast` on the model's device type, or nothing."""
    if autocast is None:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=AUTOCAST_DTYPES[autocast])
