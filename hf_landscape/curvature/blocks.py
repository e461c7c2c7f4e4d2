"""Groups of coordinates of the flat parameter vector: by layer (`layer_of`) or by role (`role_of`, `parameter_roles`),
as "Sharpness Disparity" (2025) compares the curvature of a transformer's blocks: embeddings, attention query/key,
attention value/output, MLP, norms, head.

A `Partition` names, for each group, the pieces of parameters it holds: a whole parameter, or a slice of one. Slices
are how a fused projection is split: GPT-2's `c_attn` (a `Conv1D` whose output columns are [q | k | v]) gives its
first two thirds of columns (and of its bias) to `attention_qk` and the last third to `attention_vo`; GPT-NeoX's
`query_key_value` (rows laid out per head as [q_h | k_h | v_h]) is split head by head the same way. The curvature
functions use a partition for per-group traces (Σ zᵢ(Hz)ᵢ over a group), per-group eigenvalues (the operator
restricted to a group: gather ∘ H ∘ scatter) and per-group critical sharpness.

What does not live here: the operators themselves (`operators`), the flat vector (`hvp.FlatParameters`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .hvp import FlatParameters

#: the roles `per_block=True` groups parameters by, in report order; names matching no rule are "other"
ROLES = ("embeddings", "attention_qk", "attention_vo", "mlp", "norms", "head", "other")

_HEADS = {"lm_head", "score", "classifier", "cls", "qa_outputs", "pooler", "embed_out", "output_projection"}
_EMBEDDINGS = {"wte", "wpe", "shared", "embed_in"}
_QK = {"q_proj", "k_proj", "query", "key", "q", "k", "q_lin", "k_lin", "q_attn", "wq", "wk"}
_VO = {"v_proj", "o_proj", "value", "v", "o", "v_lin", "out_lin", "wv", "wo_attn"}
_ATTENTION_OUT = {"c_proj", "dense", "out_proj", "o_proj", "o", "out_lin", "output"}
_MLP = {"c_fc", "fc1", "fc2", "fc_in", "fc_out", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"}
_MLP_CONTEXT = {"mlp", "ffn", "feed_forward", "intermediate", "output", "ff", "densereludense", "dense_h_to_4h"}
_FUSED_QKV = {"c_attn": "columns", "query_key_value": "per_head"}


def _is_attention(part: str) -> bool:
    return "attn" in part or "attention" in part


def role_of(name: str) -> str:
    """The role of the parameter `name` (one of `ROLES`; a fused q/k/v projection is `"attention_qkv"`, which
    `parameter_roles` splits). Naming of GPT-2, Llama/Mistral/Qwen, BERT/RoBERTa and GPT-NeoX alike:

    ```python
    >>> from hf_landscape.curvature.blocks import role_of
    >>> [role_of(n) for n in ("transformer.wte.weight", "model.layers.0.self_attn.k_proj.weight",
    ...  "bert.encoder.layer.0.attention.output.dense.weight", "bert.encoder.layer.0.output.dense.weight",
    ...  "model.layers.1.post_attention_layernorm.weight", "lm_head.weight", "transformer.h.0.attn.c_attn.weight")]
    ['embeddings', 'attention_qk', 'attention_vo', 'mlp', 'norms', 'head', 'attention_qkv']

    ```
    """
    parts = [p.lower() for p in name.split(".")]
    modules = parts[:-1] or parts
    last = modules[-1]
    if "norm" in last or re.fullmatch(r"ln(_\w+)?", last):
        return "norms"
    if parts[0] in _HEADS or any(p in _HEADS for p in modules):
        return "head"
    if "embed" in last or last in _EMBEDDINGS or "embeddings" in modules:
        return "embeddings"
    if last in _FUSED_QKV:
        return "attention_qkv"
    if last in _QK:
        return "attention_qk"
    in_attention = any(_is_attention(p) for p in modules[:-1])
    if last in _VO or (in_attention and last in _ATTENTION_OUT):
        return "attention_vo"
    if last in _MLP or any(p in _MLP_CONTEXT for p in modules):
        return "mlp"
    return "other"


@dataclass(frozen=True)
class Piece:
    """Part of the parameter `index` (in `FlatParameters` order): the whole of it when `dim` is None, else the
    slice `start : start + length` along `dim` of its view as `shape`."""

    index: int
    shape: tuple[int, ...] | None = None
    dim: int | None = None
    start: int = 0
    length: int = 0

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        """This piece of `tensor` (a parameter-shaped view), as a view."""
        if self.dim is None:
            return tensor
        shaped = tensor.view(self.shape) if self.shape is not None else tensor
        return shaped.narrow(self.dim, self.start, self.length)


class Partition:
    """Named groups of coordinates of a `FlatParameters` vector, each a list of `Piece`s; no coordinate is in two.

    Args:
        flat: the flat parameters.
        groups: group name -> its pieces.
    """

    def __init__(self, flat: FlatParameters, groups: dict[str, list[Piece]]) -> None:
        self.flat = flat
        self.groups = {name: pieces for name, pieces in groups.items() if pieces}
        self.sizes = {name: sum(self._numel(p) for p in pieces) for name, pieces in self.groups.items()}

    def _numel(self, piece: Piece) -> int:
        if piece.dim is None or piece.shape is None:  # a whole parameter
            return self.flat.numels[piece.index]
        return int(np.prod(piece.shape)) // piece.shape[piece.dim] * piece.length

    def sums(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
        """Σ aᵢbᵢ over each group's coordinates (float64), for two flat vectors."""
        va, vb = self.flat.views(a), self.flat.views(b)
        return {
            name: float(sum((p.of(va[p.index]).double() * p.of(vb[p.index]).double()).sum() for p in pieces))
            for name, pieces in self.groups.items()
        }

    def gather(self, name: str, v: torch.Tensor) -> torch.Tensor:
        """The group's coordinates of the flat vector `v`, as one vector."""
        views = self.flat.views(v)
        return torch.cat([p.of(views[p.index]).reshape(-1) for p in self.groups[name]])

    def scatter(self, name: str, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """A flat vector holding `x` at the group's coordinates and 0 elsewhere."""
        out = self.flat.zeros(x.device) if like is None else torch.zeros_like(like)
        views = self.flat.views(out)
        offset = 0
        for p in self.groups[name]:
            target = p.of(views[p.index])
            n = target.numel()
            target.copy_(x[offset : offset + n].view(target.shape))
            offset += n
        return out

    def mask(self, name: str, v: torch.Tensor) -> torch.Tensor:
        """`v` with every coordinate outside the group set to 0 (a new vector)."""
        return self.scatter(name, self.gather(name, v), like=v)


def layer_partition(flat: FlatParameters, layer_of: Any) -> Partition:
    """The partition by `layer_of(name)`: whole parameters, in first-seen order."""
    groups: dict[str, list[Piece]] = {}
    for i, name in enumerate(flat.names):
        groups.setdefault(layer_of(name), []).append(Piece(i))
    return Partition(flat, groups)


def role_partition(flat: FlatParameters, model: torch.nn.Module) -> Partition:
    """The partition by role (`ROLES`), fused q/k/v projections split as the module docstring says."""
    groups: dict[str, list[Piece]] = {role: [] for role in ROLES}
    heads, hidden = _config_int(model, "num_attention_heads", "n_head"), _config_int(model, "hidden_size", "n_embd")
    for i, (name, param) in enumerate(zip(flat.names, flat.params)):
        role = role_of(name)
        if role != "attention_qkv":
            groups[role].append(Piece(i))
            continue
        kind = _FUSED_QKV[name.split(".")[-2].lower()]
        qk, v = _split_qkv(i, tuple(param.shape), kind, name.endswith("bias"), heads, hidden)
        groups["attention_qk"].append(qk)
        groups["attention_vo"].append(v)
    return Partition(flat, {role: groups[role] for role in ROLES})


def _split_qkv(
    index: int, shape: tuple[int, ...], kind: str, bias: bool, heads: int | None, hidden: int | None
) -> tuple[Piece, Piece]:
    """(q and k, v) pieces of a fused projection: GPT-2's `Conv1D` output columns [q | k | v] (its weight is
    (in, 3·out), its bias (3·out,); a cross-attention's `c_attn` holds [k | v] only), or GPT-NeoX's rows
    [q_h | k_h | v_h] per head ((3·out, in), bias (3·out,))."""
    if kind == "columns":
        dim = len(shape) - 1
        width = shape[dim]
        part = width // 2 if hidden is not None and width == 2 * hidden else width // 3
        return Piece(index, shape, dim, 0, width - part), Piece(index, shape, dim, width - part, part)
    if heads is None or shape[0] % (3 * heads):
        raise ModelError(
            f"A fused query/key/value weight of shape {list(shape)} cannot be split into {heads} heads for "
            "`per_block=True`; pass `per_block=False`, or `include=` the parameters to measure."
        )
    per_head = (heads, 3, shape[0] // (3 * heads), *shape[1:]) if not bias else (heads, 3, shape[0] // (3 * heads))
    return Piece(index, per_head, 1, 0, 2), Piece(index, per_head, 1, 2, 1)


def _config_int(model: torch.nn.Module, *keys: str) -> int | None:
    config = getattr(model, "config", None)
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None
