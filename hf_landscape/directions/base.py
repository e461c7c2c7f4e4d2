"""`Direction` and `LowRankDirection`: perturbations of a model keyed by parameter name, and how parameters are chosen.

A direction is a `dict[str, Tensor]` whose keys are names from `model.named_parameters()` (which
lists tied weights once, so an embedding tied to the LM head is perturbed once). It saves to and
loads from safetensors, with its config in the file's metadata; only safetensors is read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..errors import DirectionError


def quantized_weights(model: torch.nn.Module, names: Iterable[str] | None = None) -> dict[str, str]:
    """Weights a direction cannot perturb because they are stored quantized: parameter name -> what holds it.

    Found two ways: a parameter that is not floating point (bitsandbytes' `Int8Params`, packed 4-bit weights), and a
    module whose weight is not a parameter at all (`torch.ao` quantized layers keep it packed in `_packed_params`,
    invisible to `named_parameters()`). With `names`, only those parameter names are reported.
    """
    found: dict[str, str] = {}
    owners: list[str] = []  # quantized modules found: their own submodules (packed parameter holders) are theirs
    for module_name, module in model.named_modules():
        if any(module_name.startswith(f"{owner}.") for owner in owners):
            continue
        prefix = f"{module_name}." if module_name else ""
        cls = type(module)
        kind = f"{cls.__module__.split('.modules')[0]}.{cls.__name__}"
        packed = ".quantized." in f"{cls.__module__}." and hasattr(module, "weight")
        if hasattr(module, "_packed_params") or packed:
            found[f"{prefix}weight"] = kind
            owners.append(module_name)
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if not param.is_floating_point():
                found[f"{prefix}{param_name}"] = f"{kind}, {str(param.dtype).replace('torch.', '')}"
    if names is not None:
        wanted = set(names)
        found = {n: k for n, k in found.items() if n in wanted}
    return found


def refuse_quantized(found: Mapping[str, str], argument: str = "model") -> None:
    """A `DirectionError` naming the quantized weights that would be left out, and the fix (as the LoRA path does)."""
    if not found:
        return
    names = list(found)  # in model order
    kinds = sorted(set(found.values()))
    raise DirectionError(
        f"`{argument}` holds {len(names)} quantized weight(s) that a direction cannot perturb, e.g. {names[:3]} "
        f"({', '.join(kinds[:3])}); a line or plane would move only the other weights and say nothing of these. "
        "Load the model unquantized (e.g. `dtype=torch.float32`), or leave them out with `exclude=` (low-rank "
        "directions: `target_modules=`)."
    )


def check_tensors(tensors: Any, argument: str) -> None:
    """A `DirectionError` unless `tensors` is a dict {parameter name: tensor} with real (not meta) tensors."""
    if not isinstance(tensors, Mapping):
        raise DirectionError(
            f"`{argument}` must be a dict {{parameter name: tensor}}, got {type(tensors).__name__} {tensors!r:.60}."
        )
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise DirectionError(f"`{argument}` keys must be parameter names (str), got {name!r}.")
        if not isinstance(t, torch.Tensor):
            raise DirectionError(f"`{argument}`[{name!r}] must be a tensor, got {type(t).__name__}.")
        if t.device.type == "meta":
            raise DirectionError(
                f"`{argument}`[{name!r}] is on the meta device (a shape without values); build the direction from "
                "real tensors."
            )


def select_parameters(
    model: torch.nn.Module,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    include_1d: bool = False,
) -> dict[str, torch.nn.Parameter]:
    """The floating-point parameters a direction perturbs, keyed by name, in model order.

    Args:
        model: the model; `named_parameters()` lists a tied weight once, under its first name.
        include: regular expressions; when given, a parameter is kept only if one matches its name
            (`re.search`), e.g. `[r"\\.attn\\."]` for attention only or `[r"\\.h\\.5\\."]` for layer 5.
        exclude: regular expressions; a parameter whose name matches one is dropped (`[r"wte|wpe"]`
            for no embeddings).
        include_1d: keep parameters with fewer than two dimensions (biases, LayerNorm/RMSNorm weights).
            Li et al. (2018) leave them unperturbed, which is the default.
    """
    inc = [re.compile(p) for p in include] if include else None
    exc = [re.compile(p) for p in exclude] if exclude else []

    def chosen(name: str, dim: int) -> bool:
        if dim < 2 and not include_1d:
            return False
        if inc is not None and not any(p.search(name) for p in inc):
            return False
        return not any(p.search(name) for p in exc)

    # A quantized weight the selection would take is refused, not silently skipped (as low-rank directions do).
    refuse_quantized({n: k for n, k in quantized_weights(model).items() if chosen(n, 2)})
    out = {}
    for name, param in model.named_parameters():
        if not param.is_floating_point():
            continue
        if param.dim() < 2 and not include_1d:
            continue
        if inc is not None and not any(p.search(name) for p in inc):
            continue
        if any(p.search(name) for p in exc):
            continue
        out[name] = param
    offloaded = [n for n, p in out.items() if p.device.type == "meta"]
    if offloaded:
        raise DirectionError(
            f"{len(offloaded)} selected weight(s) are offloaded (on the meta device, loaded by accelerate's hooks only "
            f"during a forward), e.g. {offloaded[0]!r}, so they cannot be perturbed in place; use low-rank directions "
            "(`directions='lora'`), leave them out with `exclude=`, or load the model without offloading."
        )
    if not out:
        raise DirectionError(
            f"No parameter matched the selection (include={list(include) if include else None}, "
            f"exclude={list(exclude) if exclude else None}, include_1d={include_1d}); "
            "loosen `include`/`exclude` or set `include_1d=True`."
        )
    return out


@dataclass
class Direction:
    """A direction in weight space, one tensor per parameter name.

    Args:
        tensors: parameter name -> tensor of that parameter's shape.
        config: how it was made (kind, seed, normalization, ...); saved with it as JSON.

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape import Direction
    >>> d = Direction({"w": torch.ones(2, 3)}, {"kind": "custom"})
    >>> d.norm()
    2.449489742783178
    >>> d.save_pretrained("/tmp/dir_example.safetensors")
    >>> Direction.from_pretrained("/tmp/dir_example.safetensors").config["kind"]
    'custom'

    ```
    """

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_tensors(self.tensors, "tensors")
        if not isinstance(self.config, dict):
            raise DirectionError(
                f"`config` must be a dict (how the direction was made), got {type(self.config).__name__} "
                f"{self.config!r:.60}."
            )

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __len__(self) -> int:
        return len(self.tensors)

    def keys(self) -> Iterable[str]:
        return self.tensors.keys()

    def dot(self, other: Direction) -> float:
        """Inner product over the names both directions hold, accumulated in float64."""
        total = 0.0
        for name, t in self.tensors.items():
            if name in other.tensors:
                total += float((t.double() * other.tensors[name].to(t.device).double()).sum())
        return total

    def norm(self) -> float:
        """Euclidean norm over every tensor."""
        return self.dot(self) ** 0.5

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Direction:
        tensors = {k: v.to(device=device, dtype=dtype) for k, v in self.tensors.items()}
        return Direction(tensors, dict(self.config))

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the tensors to a safetensors file (atomically: `io.write_safetensors`), with the config in its
        metadata."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        metadata = {"hf_landscape_direction": json.dumps(io.jsonable(self.config), sort_keys=True)}
        io.write_safetensors(Path(path), tensors, metadata)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Direction:
        """Read a direction written by `save_pretrained`.

        Raises:
            DirectionError: the file is missing, is not safetensors, or holds no valid direction metadata.
        """
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DirectionError(f"`path` {path!r} is not a file; pass a file written by `Direction.save_pretrained`.")
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(path)
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise DirectionError(
                f"{path!r} cannot be read as safetensors ({type(err).__name__}: {err}); pass a file written by "
                "`Direction.save_pretrained`."
            ) from None
        if "hf_landscape_direction" not in meta:
            raise DirectionError(
                f"{path!r} holds no hf_landscape direction metadata; it was not written by hf_landscape."
            )
        try:
            config = json.loads(meta["hf_landscape_direction"])
        except ValueError as err:
            raise DirectionError(f"{path!r} has direction metadata that is not valid JSON ({err}).") from None
        if not isinstance(config, dict):
            raise DirectionError(
                f"{path!r} has a direction config that is a {type(config).__name__}, not a dict; it was not written "
                "by hf_landscape or was edited."
            )
        return cls(tensors, config)

    def check_fits(self, params: Mapping[str, torch.Tensor], argument: str = "directions") -> None:
        """Raise a `DirectionError` unless every tensor names a parameter of the same shape."""
        unknown = sorted(set(self.tensors) - set(params))
        if unknown:
            raise DirectionError(
                f"`{argument}` names parameters the model does not have: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}; build directions on this model's architecture."
            )
        check_tensors(self.tensors, argument)
        for name, t in self.tensors.items():
            if tuple(t.shape) != tuple(params[name].shape):
                raise DirectionError(
                    f"`{argument}`[{name!r}] has shape {tuple(t.shape)} but the parameter has "
                    f"{tuple(params[name].shape)}; build directions on this model's architecture."
                )


@dataclass
class LowRankDirection:
    """A direction whose tensor for each weight is D = B @ A, kept as the factors.

    Args:
        factors: parameter name -> (B, A) with `B @ A` of the parameter's shape.
        config: how it was drawn (kind, seed, axis, rank, ...).

    Example:
    ```python
    >>> import torch
    >>> from hf_landscape import LowRankDirection
    >>> d = LowRankDirection({"w": (torch.ones(3, 1), torch.ones(1, 2))}, {"kind": "low_rank"})
    >>> d.materialize("w").shape
    torch.Size([3, 2])

    ```
    """

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    config: dict[str, Any] = field(default_factory=dict)

    def keys(self) -> Any:
        return self.factors.keys()

    def __len__(self) -> int:
        return len(self.factors)

    def materialize(self, name: str) -> torch.Tensor:
        """D = B @ A for one weight, at full size (for checks; the engine never does this)."""
        b, a = self.factors[name]
        return b.float() @ a.float()

    def num_elements(self) -> int:
        return sum(b.numel() + a.numel() for b, a in self.factors.values())
