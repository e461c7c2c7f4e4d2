"""The direction kind `"adapter"`: for a peft `PeftModel`, Gaussian directions over one LoRA adapter's weights only,
filter-normalized to them, so a plane shows the landscape of the fine-tune the adapter holds."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError
from .base import Direction
from .random import RandomDirectionConfig, random_directions
from .registry import kind_config, register_direction_kind


@register_direction_kind("adapter")
def adapter_directions(
    model: Any,
    seed: int,
    *,
    axes: int,
    config: RandomDirectionConfig | None = None,
    adapter_name: str | None = None,
    **options: Any,
) -> list[Direction]:
    """`axes` random directions over the LoRA weights of `adapter_name` (default: the active adapter), with the
    other options of `RandomDirectionConfig` (`normalization`, ...)."""
    pattern = adapter_pattern(model, adapter_name)
    cfg = kind_config(RandomDirectionConfig, config, {"include": [pattern], "include_1d": True, **options})
    dirs = random_directions(model, seed, config=cfg, axes=axes)
    for d in dirs:
        d.config.update(kind="adapter", adapter_name=adapter_name or active_adapter(model))
    return dirs


def active_adapter(model: Any) -> str | None:
    """The active adapter of a `PeftModel` (the first, when several are active)."""
    active = getattr(model, "active_adapter", None)
    return active if isinstance(active, str) else (list(active)[0] if active else None)


def adapter_pattern(model: Any, adapter_name: str | None) -> str:
    """A regex selecting the LoRA weights of one adapter of a PeftModel."""
    if not hasattr(model, "peft_config"):
        raise ConfigError(
            "`directions='adapter'` needs a peft `PeftModel` (with LoRA adapters); wrap the model with "
            "`peft.get_peft_model` or load one with `PeftModel.from_pretrained`."
        )
    names = sorted(model.peft_config)
    adapter = adapter_name or active_adapter(model)
    if adapter is None or adapter not in names:
        raise ConfigError(f"`adapter_name` {adapter_name!r} is not an adapter of this model; it has {names}.")
    active = getattr(model, "active_adapters", None) or [active_adapter(model)]
    if adapter not in active:
        raise ConfigError(
            f"`adapter_name` {adapter!r} is not active (active: {list(active)}), so perturbing it cannot change the "
            f"loss; call `model.set_adapter({adapter!r})` first."
        )
    return rf"\.lora_(A|B|embedding_A|embedding_B)\.{re.escape(adapter)}(\.weight)?$"
