"""Low-rank (LoRA-subspace) directions: D = B·A per targeted weight, never built at full size.

Full-rank random directions cost two extra copies of every weight (and the engine keeps a third,
the original). For an 8B model in bf16 that is 48 GB more. A low-rank direction stores, for each
targeted weight W, factors B and A with rank r, i.e. r·(rows + cols) numbers instead of rows·cols,
and the engine applies it as a low-rank forward path (as LoRA does, Hu et al. 2021), so no base
weight is ever written.

Factors are in the weight's own layout: `D = B @ A` has W's shape. For `nn.Linear` (out × in) that is
B (out × r), A (r × in); for GPT-2's transposed `Conv1D` (in × out) it is B (in × r), A (r × out).
Normalization follows Li et al. (2018) and is computed from the factors without forming D:
a unit of D (a row for Linear, a column for Conv1D) has squared norm b·(A Aᵀ)·bᵀ for row b of B,
or aᵀ·(Bᵀ B)·a for column a of A.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import BaseConfig, check_choice
from ..errors import ConfigError, DirectionError
from .base import LowRankDirection, quantized_weights, refuse_quantized
from .random import EPS, seed_for, unit_dim
from .registry import kind_config, register_direction_kind

NORMALIZATIONS = ("filter", "layer", "model", "none")


@dataclass
class LowRankDirectionConfig(BaseConfig):
    """How low-rank directions are drawn.

    Args:
        rank (`int`, defaults to 8): r, the rank of every D = B·A.
        target_modules (`list[str]`, *optional*): module names (or name suffixes, like peft's
            `target_modules`) whose weights get a direction, e.g. `["q_proj", "v_proj"]`. By default every
            `nn.Linear`/`Conv1D` except the output embedding (LM head).
        normalization (`str`, defaults to `"filter"`): as for full-rank directions: `"filter"` (each output
            unit of D gets the norm of the same unit of W), `"layer"`, `"model"` or `"none"` (B ~ N(0, 1),
            A ~ N(0, 1/r), so entries of D have unit variance).

    Example:
    ```python
    >>> from hf_landscape import LowRankDirectionConfig
    >>> LowRankDirectionConfig(rank=4, target_modules=["q_proj", "v_proj"]).rank
    4

    ```
    """

    rank: int = field(default=8, metadata={"help": "rank r of each D = B @ A"})
    target_modules: list[str] | None = field(default=None, metadata={"help": "module names or suffixes"})
    normalization: str = field(default="filter", metadata={"help": "filter, layer, model or none"})

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ConfigError(f"`rank` must be an integer >= 1, got {self.rank!r}.")
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                self.target_modules = [self.target_modules]
            if not all(isinstance(t, str) and t for t in self.target_modules):
                raise ConfigError(f"`target_modules` must be a list of module names, got {self.target_modules!r}.")
            self.target_modules = list(self.target_modules)


def target_weights(model: Any, target_modules: list[str] | None) -> dict[str, tuple[str, Any]]:
    """Parameter name -> (module name, module) for the weights that get low-rank directions."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def targeted(module_name: str) -> bool:
        if target_modules is None:
            return output is None or model.get_submodule(module_name) is not output
        return any(
            module_name == t or module_name.endswith("." + t) or re.fullmatch(t, module_name) for t in target_modules
        )

    # Quantized layers are not nn.Linear (or keep no dense weight): refused by name, never silently skipped.
    refuse_quantized({n: k for n, k in quantized_weights(model).items() if targeted(n.rpartition(".")[0])})
    found = {}
    for module_name, module in model.named_modules():
        is_linear = isinstance(module, torch.nn.Linear) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))
        if not is_linear or not isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            continue
        if target_modules is None:
            if module is output:
                continue
        elif not any(
            module_name == t or module_name.endswith("." + t) or re.fullmatch(t, module_name) for t in target_modules
        ):
            continue
        found[f"{module_name}.weight" if module_name else "weight"] = (module_name, module)
    if not found:
        available = sorted(
            {
                n.rpartition(".")[2]
                for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"
            }
        )
        raise DirectionError(
            f"`target_modules` {target_modules!r} matches no nn.Linear/Conv1D module of {type(model).__name__}; "
            f"its linear modules are named {available}."
        )
    for name, (_, module) in found.items():
        weight = module.weight
        if not weight.is_floating_point() or weight.dim() != 2 or weight.__class__ is not torch.nn.Parameter:
            raise DirectionError(
                f"Cannot perturb {name!r}: its weight is a {type(weight).__name__} of dtype {weight.dtype} (quantized or "
                "packed layers have no dense weight to take row norms of); exclude it from `target_modules` or load "
                "the model unquantized."
            )
    return found


def low_rank_directions(
    model: Any,
    seed: int,
    *,
    config: LowRankDirectionConfig | None = None,
    axes: int = 2,
) -> list[LowRankDirection]:
    """Draw `axes` normalized low-rank directions for `model` (see the module docstring).

    Factors are drawn on the CPU in float32 from generators seeded by (seed, axis, name), then moved to
    the weight's device; normalization uses the weight's unit norms, computed on its device in float32.
    """
    config = config or LowRankDirectionConfig()
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    targets = target_weights(model, config.target_modules)
    r = config.rank
    too_big = {n: tuple(m.weight.shape) for n, (_, m) in targets.items() if r > min(m.weight.shape)}
    if too_big:
        name, shape = next(iter(too_big.items()))
        raise ConfigError(
            f"`rank` {r} exceeds min(rows, cols) of {len(too_big)} targeted weight(s), e.g. {name!r} of shape {shape}; "
            f"use rank <= {min(min(s) for s in too_big.values())} or leave those modules out of `target_modules`."
        )
    # The weights' norms are the same for every axis: computed once (each is a pass over a float32 copy of W).
    unit_norms: dict[str, torch.Tensor] = {}
    frob_norms: dict[str, float] = {}
    out = []
    for axis in range(axes):
        factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        w_sq = d_sq = 0.0
        for name, (_, module) in targets.items():
            w = module.weight
            rows, cols = w.shape
            g = torch.Generator().manual_seed(seed_for(seed, axis, f"{name}#low_rank"))
            b = torch.randn(rows, r, generator=g)
            a = torch.randn(r, cols, generator=g) / r**0.5
            b, a = b.to(w.device), a.to(w.device)
            dim = unit_dim(model, name)
            if config.normalization == "filter":
                if name not in unit_norms:
                    unit_norms[name] = w.detach().float().norm(dim=1 - dim)  # norms of W's units
                target = unit_norms[name]
                if dim == 0:  # units are rows: scale rows of B
                    current = ((b @ (a @ a.T)) * b).sum(dim=1).clamp_min(0).sqrt()
                    b = b * (target / (current + EPS)).unsqueeze(1)
                else:  # units are columns (Conv1D): scale columns of A
                    current = ((a * ((b.T @ b) @ a)).sum(dim=0)).clamp_min(0).sqrt()
                    a = a * (target / (current + EPS)).unsqueeze(0)
            elif config.normalization in ("layer", "model"):
                frob = float(torch.trace((b.T @ b) @ (a @ a.T)).clamp_min(0).sqrt())
                if name not in frob_norms:
                    frob_norms[name] = float(w.detach().float().norm())
                w_norm = frob_norms[name]
                if config.normalization == "layer":
                    b = b * (w_norm / (frob + EPS))
                else:
                    w_sq += w_norm**2
                    d_sq += frob**2
            factors[name] = (b, a)
        if config.normalization == "model":
            scale = (w_sq**0.5) / (d_sq**0.5 + EPS)
            factors = {n: (b * scale, a) for n, (b, a) in factors.items()}
        factors = {
            n: (b.to(targets[n][1].weight.dtype), a.to(targets[n][1].weight.dtype)) for n, (b, a) in factors.items()
        }
        cfg = {"kind": "low_rank", "seed": seed, "axis": axis, **dataclasses.asdict(config)}
        out.append(LowRankDirection(factors, cfg))
    return out


# The default span of LoRA-subspace planes: the kind is for pretrained LLMs, whose basin along these directions is about
# ±0.2 wide (SmolLM2-135M: the loss 3.69 doubles within |α| = 0.2 and is 4.4–4.6× at 1; benchmarks/README.md, lora_span.py).
LORA_DEFAULT_SPAN = (-0.2, 0.2)


@register_direction_kind("lora", default_span=LORA_DEFAULT_SPAN)
def lora_kind(
    model: Any, seed: int, *, axes: int, config: LowRankDirectionConfig | None = None, **options: Any
) -> list[LowRankDirection]:
    """The kind `"lora"`: low-rank D = B·A directions, never built at full size (options: `LowRankDirectionConfig`'s
    fields `rank`, `target_modules`, `normalization`)."""
    return low_rank_directions(model, seed, config=kind_config(LowRankDirectionConfig, config, options), axes=axes)


# the same kind, under the name its directions record
register_direction_kind("low_rank", default_span=LORA_DEFAULT_SPAN)(lora_kind)
