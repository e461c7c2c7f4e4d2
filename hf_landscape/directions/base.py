"""`Direction`: a perturbation of a model keyed by parameter name, and how parameters are chosen.

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
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import DirectionError


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
        """Write the tensors to a safetensors file (atomically), with the config in its metadata."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        save_file(tensors, tmp, metadata={"hf_landscape_direction": json.dumps(self.config, sort_keys=True)})
        os.replace(tmp, path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Direction:
        """Read a direction written by `save_pretrained`."""
        from safetensors import safe_open

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DirectionError(f"`path` {path!r} is not a file; pass a file written by `Direction.save_pretrained`.")
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        if "hf_landscape_direction" not in meta:
            raise DirectionError(
                f"{path!r} holds no hf_landscape direction metadata; it was not written by hf_landscape."
            )
        return cls(load_file(path), json.loads(meta["hf_landscape_direction"]))

    def check_fits(self, params: Mapping[str, torch.Tensor], argument: str = "directions") -> None:
        """Raise a `DirectionError` unless every tensor names a parameter of the same shape."""
        unknown = sorted(set(self.tensors) - set(params))
        if unknown:
            raise DirectionError(
                f"`{argument}` names parameters the model does not have: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}; build directions on this model's architecture."
            )
        for name, t in self.tensors.items():
            if tuple(t.shape) != tuple(params[name].shape):
                raise DirectionError(
                    f"`{argument}`[{name!r}] has shape {tuple(t.shape)} but the parameter has "
                    f"{tuple(params[name].shape)}; build directions on this model's architecture."
                )
