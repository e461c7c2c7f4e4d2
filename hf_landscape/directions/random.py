"""Gaussian directions with filter / layer / model normalization (Li et al. 2018, section 4).

"Visualizing the Loss Landscape of Neural Nets" draws d ~ N(0, I) and rescales each *filter* of d to
the norm of the same filter of the weights, d_ij <- d_ij / ||d_ij|| * ||θ_ij||, so that plots of
networks with different weight scales can be compared. A filter here is one output unit: a row of an
`nn.Linear`/`nn.Embedding` weight (out, in), but a *column* of GPT-2's `Conv1D` weight, stored
transposed as (in, out).

Directions are drawn on the CPU in float32 from a generator seeded by (seed, axis, parameter name),
so the same seed gives the same direction on any machine and device, and the direction of a weight
does not change when other weights are included or excluded. A tensor of more than `DRAW_BLOCK`
elements is drawn in blocks of `DRAW_BLOCK` elements (row-major), each from its own generator seeded by
(seed, axis, name, block), so that the blocks of one large tensor (an embedding, an LLM's weights) are
drawn in parallel; every tensor of at most `DRAW_BLOCK` elements is one block from the (seed, axis, name)
generator, as in hf_landscape 0.1.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import BaseConfig, check_choice, check_patterns
from ..errors import ConfigError
from .base import Direction, select_parameters

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("filter", "layer", "model", "none")
# Elements per generator (see the module docstring). Changing it changes the directions of larger tensors.
DRAW_BLOCK = 1 << 22
# Tensors above this many elements have their raw draws made first, all blocks of all of them at once on the thread
# pool; the others are drawn in their own task, next to their rescaling. The directions are the same either way.
# 0 (everything drawn first) took GPT-2 small's two directions from 0.72 to 0.395 s on a 16-core H100 host;
# pre-drawing only the embedding's blocks (DRAW_BLOCK) measured 0.435-0.505 s there in other runs, and on 2 shared
# cores the two are within that machine's noise (`benchmarks/direction_draw.py` compares them in one process).
PREDRAW_MIN_ELEMENTS = 0
# Weights on a GPU are copied to the host through one pinned buffer (one fast copy per tensor, no staging) when
# they take at most this many bytes; larger models are copied tensor by tensor, as pinned memory is scarce.
PINNED_COPY_MAX_BYTES = 2 * 2**30
MAX_WORKERS = 16  # threads of `_pmap`
# torch's intra-op threads while `_pmap`'s tasks run (None: left as they are). Each task is already one of many in
# parallel, and every pool thread that also forks torch's intra-op threads oversubscribes the cores: on a 16-core
# H100 host, (a)'s two directions (GPT-2, 4.2M weights) took 58 ms with one intra-op thread against 90 ms with 16
# (GPT-2 small's, 524 against 540 ms; `benchmarks/direction_draw.py`).
POOL_INTRAOP_THREADS: int | None = 1
EPS = 1e-10  # as in Li et al.'s code, so an all-zero filter gets a zero direction instead of NaN


@dataclass
class RandomDirectionConfig(BaseConfig):
    """How Gaussian directions are drawn and normalized.

    Args:
        normalization (`str`, defaults to `"filter"`):
            `"filter"`: each output unit of the direction gets the norm of the same unit of the weight
            (Li et al. 2018); `"layer"`: each tensor gets the norm of its weight; `"model"`: the whole
            direction gets the norm of all selected weights; `"none"`: raw N(0, 1) entries.
        include_1d (`bool`, defaults to `False`):
            Perturb parameters with fewer than two dimensions (biases, LayerNorm/RMSNorm weights).
            Off by default, as in the paper. When on, each such tensor is one unit.
        include (`list[str]`, *optional*):
            Regular expressions; only parameters whose name matches one are perturbed.
        exclude (`list[str]`, *optional*):
            Regular expressions; parameters whose name matches one are left alone.
        orthogonalize (`bool`, defaults to `False`):
            Make each later direction orthogonal to the earlier ones. It is done inside each
            normalization group (unit, tensor or model) before that group is rescaled, so the result
            is both exactly orthogonal and exactly normalized.

    Example:
    ```python
    >>> from hf_landscape import RandomDirectionConfig
    >>> RandomDirectionConfig(normalization="layer", exclude=[r"wte|wpe"]).normalization
    'layer'

    ```
    """

    normalization: str = field(default="filter", metadata={"help": "filter, layer, model or none"})
    include_1d: bool = field(default=False, metadata={"help": "perturb biases and norm weights too"})
    include: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to perturb"})
    exclude: list[str] | None = field(default=None, metadata={"help": "regexes of parameters to leave alone"})
    orthogonalize: bool = field(default=False, metadata={"help": "orthogonalize later directions"})

    def __post_init__(self) -> None:
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        for name in ("include_1d", "orthogonalize"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        inc = check_patterns("include", self.include)
        exc = check_patterns("exclude", self.exclude)
        self.include = list(inc) if inc is not None else None
        self.exclude = list(exc) if exc is not None else None


def seed_for(seed: int, axis: int, name: str) -> int:
    """A 63-bit generator seed that depends only on (seed, axis, parameter name)."""
    digest = hashlib.sha256(f"hf_landscape:{seed}:{axis}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def draw_blocks(numel: int) -> list[tuple[int, int]]:
    """The (start, stop) element ranges drawn from one generator each: one block up to `DRAW_BLOCK` elements."""
    if numel <= DRAW_BLOCK:
        return [(0, numel)]
    return [(start, min(start + DRAW_BLOCK, numel)) for start in range(0, numel, DRAW_BLOCK)]


def block_seed(seed: int, axis: int, name: str, block: int, blocks: int) -> int:
    """The generator seed of block `block` of `blocks` (a parameter name never contains "@")."""
    return seed_for(seed, axis, name if blocks == 1 else f"{name}@{block}")


def gaussian(shape: torch.Size | tuple[int, ...], seed: int, axis: int, name: str) -> torch.Tensor:
    """The raw N(0, 1) draw of parameter `name` for (seed, axis): float32, on the CPU, in blocks as described in
    the module docstring (drawn one after the other here; `random_directions` draws blocks in parallel)."""
    out = torch.empty(shape, dtype=torch.float32)
    flat = out.view(-1)
    blocks = draw_blocks(flat.numel())
    for b, (start, stop) in enumerate(blocks):
        _draw(flat, start, stop, block_seed(seed, axis, name, b, len(blocks)))
    return out


def _draw(flat: torch.Tensor, start: int, stop: int, seed: int) -> None:
    torch.randn(stop - start, generator=torch.Generator().manual_seed(seed), out=flat[start:stop])


def unit_dim(model: torch.nn.Module, name: str) -> int:
    """The dimension that indexes output units of parameter `name`: 1 for GPT-2's `Conv1D`, else 0."""
    module_name, _, _ = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return 0
    # transformers' Conv1D stores its weight transposed, (in_features, out_features) = (nx, nf).
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return 1
    return 0


def _as_units(t: torch.Tensor, dim: int) -> torch.Tensor:
    """View `t` as (units, everything else); 1-D and 0-D tensors are a single unit."""
    if t.dim() < 2:
        return t.reshape(1, -1)
    return t.movedim(dim, 0).reshape(t.shape[dim], -1)


def _from_units(u: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    """`u` (units, everything else) viewed back in `like`'s shape (strided where units are not dim 0)."""
    if like.dim() < 2:
        return u.reshape(like.shape)
    moved = list(like.shape)
    moved.insert(0, moved.pop(dim))
    return u.reshape(moved).movedim(0, dim)


def _group_norms(t: torch.Tensor) -> torch.Tensor:
    return t.norm(dim=1, keepdim=True)


def _group_rescale(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rescale each row of `d` to the norm of the same row of `w` (rows = normalization groups)."""
    return d * (_group_norms(w) / (_group_norms(d) + EPS))


def _group_orthogonalize(d: torch.Tensor, previous: list[torch.Tensor]) -> torch.Tensor:
    """Gram-Schmidt of each row of `d` against the same rows of earlier (already orthogonal) ones."""
    for p in previous:
        pp = (p * p).sum(dim=1, keepdim=True)
        coef = torch.where(pp > 0, (d * p).sum(dim=1, keepdim=True) / pp.clamp_min(EPS), torch.zeros_like(pp))
        d = d - coef * p
    return d


def random_directions(
    model: torch.nn.Module,
    seed: int,
    *,
    config: RandomDirectionConfig | None = None,
    axes: int = 2,
    first_axis: int = 0,
) -> list[Direction]:
    """Draw `axes` normalized Gaussian directions for `model`.

    Args:
        model: the model whose weights set the normalization.
        seed: the draw; axis `a` of seed `s` is the same whether one or two axes are drawn, so a line
            with seed 0 runs along the first axis of the plane with seed 0.
        config: a `RandomDirectionConfig`; the default is filter-normalized, 1-D parameters left alone.
        axes: how many directions.
        first_axis: axis index of the first one.

    Returns:
        `list[Direction]`, each keyed by parameter name, in the parameters' dtype and device.
    """
    config = config or RandomDirectionConfig()
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    params = select_parameters(model, include=config.include, exclude=config.exclude, include_1d=config.include_1d)
    norm = config.normalization
    # Work on the CPU in float32 so that the result does not depend on the device (see module docstring).
    # Moved in the weight's own dtype and widened on the CPU: a bf16 weight crosses the bus at half the bytes
    # (a cross-device copy that also converts widens on the device first); the widening is exact.
    weights = _host_float32(params)
    dims = {n: unit_dim(model, n) for n in params}

    def group_view(t: torch.Tensor, name: str) -> torch.Tensor:
        if norm == "filter":
            return _as_units(t, dims[name])
        return t.reshape(1, -1)  # layer / model / none: one group per tensor (model joins them below)

    keys = [(first_axis + k, n) for k in range(axes) for n in weights]
    # Raw draws of the tensors over `PREDRAW_MIN_ELEMENTS` (by default all): every axis's blocks drawn first, all at
    # once on the thread pool (each block depends on its own seed only), so that the blocks of a large tensor run in
    # parallel. Any other tensor is drawn in its own task below, next to its rescaling.
    raw = {
        key: torch.empty(weights[key[1]].shape, dtype=torch.float32)
        for key in keys
        if weights[key[1]].numel() > PREDRAW_MIN_ELEMENTS
    }
    tasks = []
    for axis, name in raw:
        flat = raw[(axis, name)].view(-1)
        blocks = draw_blocks(flat.numel())
        tasks += [(flat, a, b, block_seed(seed, axis, name, i, len(blocks))) for i, (a, b) in enumerate(blocks)]
    _pmap(lambda i: _draw(*tasks[i]), range(len(tasks)))

    def draw(key: tuple[int, str]) -> torch.Tensor:
        axis, name = key
        if key in raw:
            return group_view(raw.pop(key), name)
        return group_view(gaussian(weights[name].shape, seed, axis, name), name)  # its blocks one after another

    def finish(name: str, view: torch.Tensor) -> torch.Tensor:
        w = weights[name]
        full = _from_units(view, w, dims[name]) if norm == "filter" else view.reshape(w.shape)
        # Laid out like the weight and rounded to its dtype on the CPU in one pass (round to nearest even, as on
        # any device), then moved.
        return full.to(params[name].dtype, memory_format=torch.contiguous_format).to(params[name].device)

    if not config.orthogonalize and norm in ("filter", "layer", "none"):
        # Every tensor's direction depends on its own draw and weight alone: draw, rescale and move it to the
        # device in one task, so copies to the device overlap other tensors' draws (same arithmetic as below).
        # The weights' group norms once per weight, not once per axis.
        w_norms = {} if norm == "none" else _pmap(lambda n: _group_norms(group_view(weights[n], n)), weights)

        def whole(key: tuple[int, str]) -> torch.Tensor:
            view = draw(key)
            if norm != "none":  # in place: the fresh draw is this task's own (no second buffer to fault in)
                torch.mul(view, w_norms[key[1]] / (_group_norms(view) + EPS), out=view)
            return finish(key[1], view)

        done = _pmap(whole, keys)
        return [
            Direction(
                {n: done[(first_axis + k, n)] for n in weights},
                {"kind": "random", "seed": seed, "axis": first_axis + k, "draw_block": DRAW_BLOCK, **config.to_dict()},
            )
            for k in range(axes)
        ]
    raws = _pmap(draw, keys)
    drawn: list[dict[str, torch.Tensor]] = []  # group views, kept for orthogonalization
    out = []
    for k in range(axes):
        axis = first_axis + k
        views = {n: raws.pop((axis, n)) for n in weights}
        if config.orthogonalize and drawn:
            if norm in ("model", "none"):
                views = _orthogonalize_global(views, drawn)
            else:
                views = {n: _group_orthogonalize(v, [p[n] for p in drawn]) for n, v in views.items()}
        if norm in ("filter", "layer"):
            views = _pmap(lambda n, views=views: _group_rescale(views[n], group_view(weights[n], n)), views)
        elif norm == "model":
            w_norm = sum(float((w.double() ** 2).sum()) for w in weights.values()) ** 0.5
            d_norm = sum(float((v.double() ** 2).sum()) for v in views.values()) ** 0.5
            views = {n: v * (w_norm / (d_norm + EPS)) for n, v in views.items()}
        drawn.append(views)
        tensors = _pmap(lambda n, views=views: finish(n, views[n]), views)
        out.append(
            Direction(
                tensors, {"kind": "random", "seed": seed, "axis": axis, "draw_block": DRAW_BLOCK, **config.to_dict()}
            )
        )
    return out


def _host_float32(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every parameter as a float32 CPU tensor (exact: widening is). Weights on GPUs cross the bus in their own
    dtype (half the bytes for bf16), all into one pinned buffer with asynchronous copies when they fit in
    `PINNED_COPY_MAX_BYTES` (a pageable copy is staged and synchronous: ~1 GB/s for GPT-2 small on an H100
    host), and are widened on the host in parallel."""
    on_gpu = {n: p for n, p in params.items() if p.device.type == "cuda"}
    nbytes = sum(_padded(p.numel() * p.element_size()) for p in on_gpu.values())
    if not on_gpu or nbytes > PINNED_COPY_MAX_BYTES:
        return _pmap(lambda n: params[n].detach().to("cpu").to(torch.float32), params)
    buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    host: dict[str, torch.Tensor] = {}
    offset = 0
    for n, p in on_gpu.items():
        size = p.numel() * p.element_size()
        view = buffer[offset : offset + size].view(p.dtype).view(p.shape)
        view.copy_(p.detach(), non_blocking=True)
        host[n] = view
        offset += _padded(size)
    for device in {p.device for p in on_gpu.values()}:
        torch.cuda.synchronize(device)
    return _pmap(lambda n: (host[n] if n in host else params[n].detach()).to(torch.float32), params)


def _padded(nbytes: int) -> int:
    return -(-nbytes // 64) * 64  # every view of the buffer starts 64-byte aligned


def _pmap(fn: Any, names: Any) -> dict[Any, torch.Tensor]:
    """{name: fn(name)} computed on a thread pool (torch releases the GIL); the order of names is kept and
    every result depends on its name alone, so the output is the same as a plain loop's."""
    names = list(names)
    workers = min(MAX_WORKERS, os.cpu_count() or 1, max(len(names), 1))
    if workers == 1:
        return {n: fn(n) for n in names}
    threads = torch.get_num_threads()
    if POOL_INTRAOP_THREADS is not None:
        torch.set_num_threads(POOL_INTRAOP_THREADS)  # process-wide: restored below, also after an exception
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(names, pool.map(fn, names)))
    finally:
        torch.set_num_threads(threads)


def _orthogonalize_global(
    views: dict[str, torch.Tensor], previous: list[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Gram-Schmidt over all tensors at once, keeping the direction's norm (model / none)."""
    before = sum(float((v.double() ** 2).sum()) for v in views.values()) ** 0.5
    for p in previous:
        pp = sum(float((t.double() ** 2).sum()) for t in p.values())
        if pp == 0:
            continue
        coef = sum(float((views[n].double() * p[n].double()).sum()) for n in views) / pp
        views = {n: v - coef * p[n] for n, v in views.items()}
    after = sum(float((v.double() ** 2).sum()) for v in views.values()) ** 0.5
    return {n: v * (before / (after + EPS)) for n, v in views.items()}
