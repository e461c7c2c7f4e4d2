"""Gaussian directions with filter / layer / model normalization (Li et al. 2018, section 4).

"Visualizing the Loss Landscape of Neural Nets" draws d ~ N(0, I) and rescales each *filter* of d to
the norm of the same filter of the weights, d_ij <- d_ij / ||d_ij|| * ||θ_ij||, so that plots of
networks with different weight scales can be compared. A filter here is one output unit: a row of an
`nn.Linear`/`nn.Embedding` weight (out, in), but a *column* of GPT-2's `Conv1D` weight, stored
transposed as (in, out).

Raw draws come from `draw.py`: entry i of the draw of parameter `name` for (seed, axis) is a counter-based
function of (seed, axis, name, i), computed with integer and exactly rounded float32 operations only. Norms are
sums of squares added as a balanced tree of elementwise additions (`_tree_sum`), not a library reduction whose
order differs between devices, so a direction is drawn and normalized on the device where its weight lives and
equals, bit for bit, the one computed on the CPU: the same seed gives the same direction on any device, and the
direction of a weight does not change when other weights are included or excluded.
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
from . import draw
from .base import Direction, select_parameters
from .draw import GENERATOR, fill_normal, gaussian
from .registry import kind_config, register_direction_kind

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("filter", "layer", "model", "none")
# GPU weights copied to the host (only where their directions are computed there) go through one pinned buffer up to
# this size, tensor by tensor beyond it: pinned memory is scarce.
PINNED_COPY_MAX_BYTES = 2 * 2**30
# Accelerator weights of at least this many elements are drawn on the accelerator (the same bits as the host's): the
# GPU was faster at every size measured (benchmarks/README.md, "Measurements behind defaults").
DEVICE_DRAW_MIN_ELEMENTS = 0
MAX_WORKERS = 16  # threads of `_pmap`
# torch's intra-op threads per `_pmap` task (None: as they are): the tasks already run in parallel, and more threads per
# task oversubscribe the cores (benchmarks/README.md).
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
    """A 63-bit `torch.Generator` seed that depends only on (seed, axis, name) (low-rank factors, sharpness draws)."""
    digest = hashlib.sha256(f"hf_landscape:{seed}:{axis}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


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


def _tree_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over `dim` (kept, size 1) as a balanced tree of elementwise additions: entry k plus entry k + n // 2, the
    odd last entry carried to the next level. Every addition is one exactly rounded operation, so the result is the
    same on every device (a library reduction's order is not)."""
    if x.shape[dim] == 0:
        return x.new_zeros(x.shape[:dim] + (1,) + x.shape[dim + 1 :])
    while x.shape[dim] > 1:
        n = x.shape[dim]
        half = x.narrow(dim, 0, n // 2) + x.narrow(dim, n // 2, n // 2)
        x = torch.cat([half, x.narrow(dim, n - 1, 1)], dim) if n % 2 else half
    return x


def _groups(t: torch.Tensor, dim: int, norm: str) -> tuple[torch.Tensor, int]:
    """(a view of contiguous `t` with one normalization group per row or column, the dimension to sum over)."""
    if norm != "filter" or t.dim() < 2:
        return t.reshape(1, -1), 1  # layer / model / none, and 1-D tensors: the whole tensor
    if dim == 0:
        return t.reshape(t.shape[0], -1), 1
    if t.dim() == 2:
        return t, 0  # GPT-2's Conv1D: a unit is a column
    raise ValueError(f"output units along dimension {dim} of a {t.dim()}-D tensor are not supported")


def _norms(view: torch.Tensor, dim: int) -> torch.Tensor:
    return _sqrt(_tree_sum(view * view, dim))


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root of non-negative float32 `x`, on any device. Library square roots need not
    be (torch's CPU float32 `sqrt` misses by one unit in the last place where the GPU's does not), so the float64
    root rounded to float32 is corrected against the exact squares of the midpoints next to it: a midpoint of
    float32 neighbours has 25 significant bits, its square 50, exact in float64."""
    y = x.double().sqrt().float()
    up, down = torch.nextafter(y, torch.full_like(y, float("inf"))), torch.nextafter(y, torch.zeros_like(y))
    wide = x.double()
    y = torch.where(((y.double() + up.double()) * 0.5).square() < wide, up, y)
    return torch.where(((y.double() + down.double()) * 0.5).square() > wide, down, y)


def _total(t: torch.Tensor) -> float:
    """The sum of all of `t` in float64 (a tree as in `_tree_sum`)."""
    return float(_tree_sum(t.reshape(1, -1).double(), 1))


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
    dims = {n: unit_dim(model, n) for n in params}
    axis_ids = [first_axis + k for k in range(axes)]
    if config.orthogonalize or config.normalization == "model":
        per_axis = _joint_directions(params, dims, config, seed, axis_ids)
    else:
        per_axis = _separate_directions(params, dims, config.normalization, seed, axis_ids)
    return [
        Direction(
            per_axis[k], {"kind": "random", "seed": seed, "axis": axis, "generator": GENERATOR, **config.to_dict()}
        )
        for k, axis in enumerate(axis_ids)
    ]


@register_direction_kind("random")
def random_kind(
    model: torch.nn.Module, seed: int, *, axes: int, config: RandomDirectionConfig | None = None, **options: Any
) -> list[Direction]:
    """The kind `"random"`: full-rank normalized Gaussian directions (options: `RandomDirectionConfig`'s fields)."""
    return random_directions(model, seed, config=kind_config(RandomDirectionConfig, config, options), axes=axes)


def _separate_directions(
    params: Mapping[str, torch.Tensor], dims: dict[str, int], norm: str, seed: int, axis_ids: list[int]
) -> list[dict[str, torch.Tensor]]:
    """filter / layer / none without orthogonalization: every tensor's direction depends on its own draw and weight
    alone. Weights on an accelerator holding `DEVICE_DRAW_MIN_ELEMENTS` or more in all are drawn and normalized
    there, tensor by tensor (no weight crosses the bus); others are computed on the host, where the raw draws of
    all tensors are made first, all chunks at once on the thread pool (numpy releases the GIL), then each tensor is
    normalized in its own task. Both give the same bits."""
    on_device = [n for n, p in params.items() if p.device.type != "cpu"]
    if sum(params[n].numel() for n in on_device) < DEVICE_DRAW_MIN_ELEMENTS:
        on_device = []
    on_host = [n for n in params if n not in on_device]
    host_weights = _host_float32({n: params[n] for n in on_host})
    raw = {(a, n): torch.empty(params[n].shape, dtype=torch.float32) for a in axis_ids for n in on_host}
    tasks = [
        (flat[start : start + draw.CHUNK], start, seed, a, n)
        for (a, n), t in raw.items()
        for flat in [t.view(-1)]
        for start in range(0, flat.numel(), draw.CHUNK)
    ]
    _pmap(lambda i: fill_normal(*tasks[i]), range(len(tasks)))

    def host(n: str) -> list[torch.Tensor]:
        out = _normalized(host_weights[n], [raw.pop((a, n)) for a in axis_ids], dims[n], norm, params[n].dtype)
        return [t.to(params[n].device) for t in out]

    done = _pmap(host, on_host)
    for n in on_device:  # kernels queue on the device; this thread only launches them
        done[n] = _on_device(params[n], n, dims[n], norm, seed, axis_ids)
    return [{n: done[n][k] for n in params} for k in range(len(axis_ids))]


def _normalized(
    w: torch.Tensor, raws: Any, dim: int, norm: str, dtype: torch.dtype | None = None
) -> list[torch.Tensor]:
    """The fresh float32 draws `raws` (one per axis) rescaled in place to `w`'s group norms (Li et al.: d <- d / ||d||
    * ||w|| per unit) and rounded to `dtype` (default `w`'s; round to nearest even, as on any device). The sums of
    squares are made where the tensors live; their roots and ratios, a few numbers per unit, on the host (one copy
    each way), which keeps a GPU from loading the kernels of float64 roots, comparisons and division (~0.1 s at a
    process's first draw)."""
    raws = list(raws)
    if norm != "none":
        w_view, rdim = _groups(w.detach().to(torch.float32), dim, norm)
        squares = [_tree_sum(w_view * w_view, rdim)]
        del w_view  # a float32 copy of the weight: freed before the draws' squares are made
        views = [_groups(d, dim, norm)[0] for d in raws]
        squares += [_tree_sum(v * v, rdim) for v in views]
        roots = _sqrt(torch.stack(squares).cpu())
        scales = (roots[0] / (roots[1:] + EPS)).to(raws[0].device)
        for view, scale in zip(views, scales):
            view.mul_(scale)
    return [d.to(dtype or w.dtype) for d in raws]


def _on_device(w: torch.Tensor, name: str, dim: int, norm: str, seed: int, axis_ids: list[int]) -> list[torch.Tensor]:
    """`_normalized` for a weight on an accelerator, drawn there; on the host if the device runs out of memory (the
    same bits either way)."""
    try:
        return _normalized(w, (gaussian(w.shape, seed, a, name, w.device) for a in axis_ids), dim, norm)
    except torch.OutOfMemoryError:
        logger.warning("Out of memory drawing the direction of %s on %s; drawing it on the CPU.", name, w.device)
        host = w.detach().to("cpu")
        return [
            t.to(w.device) for t in _normalized(host, (gaussian(w.shape, seed, a, name) for a in axis_ids), dim, norm)
        ]


def _joint_directions(
    params: Mapping[str, torch.Tensor],
    dims: dict[str, int],
    config: RandomDirectionConfig,
    seed: int,
    axis_ids: list[int],
) -> list[dict[str, torch.Tensor]]:
    """orthogonalize / model normalization: a tensor's direction depends on the others, so all of them are held at
    once, in float32: on the GPU holding every weight when they fit in its free memory (`_joint_device`), else on the
    host, and moved at the end. Both give the same bits."""
    norm = config.normalization
    keys = [(a, n) for a in axis_ids for n in params]
    device = _joint_device(params, len(axis_ids))
    if device.type == "cpu":
        weights = _host_float32(params)
        raws = _pmap(lambda k: gaussian(params[k[1]].shape, seed, k[0], k[1]), keys)
    else:
        weights = {n: p.detach().to(torch.float32) for n, p in params.items()}
        raws = {k: gaussian(params[k[1]].shape, seed, k[0], k[1], device) for k in keys}
    w_groups = {n: _groups(weights[n], dims[n], norm) for n in weights}
    drawn: list[dict[str, torch.Tensor]] = []  # earlier directions' groups, for orthogonalization
    out = []
    for axis in axis_ids:
        views = {n: _groups(raws.pop((axis, n)), dims[n], norm)[0] for n in weights}
        if config.orthogonalize and drawn:
            if norm in ("model", "none"):
                views = _orthogonalize_global(views, drawn)
            else:
                views = {n: _group_orthogonalize(v, [p[n] for p in drawn], w_groups[n][1]) for n, v in views.items()}
        if norm in ("filter", "layer"):
            views = {n: v * (_norms(*w_groups[n]) / (_norms(v, w_groups[n][1]) + EPS)) for n, v in views.items()}
        elif norm == "model":
            w_norm = sum(_total(w * w) for w in weights.values()) ** 0.5
            d_norm = sum(_total(v * v) for v in views.values()) ** 0.5
            views = {n: v * (w_norm / (d_norm + EPS)) for n, v in views.items()}
        drawn.append(views)
        out.append({n: v.reshape(params[n].shape).to(params[n].dtype).to(params[n].device) for n, v in views.items()})
    return out


def _joint_device(params: Mapping[str, torch.Tensor], axes: int) -> torch.device:
    """Where `_joint_directions` works: the CUDA device holding every weight when float32 copies of the weights and of
    twice the directions (the draws and their rescaled copies) fit in its free memory, else the CPU."""
    devices = {p.device for p in params.values()}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        return torch.device("cpu")
    device = next(iter(devices))
    need = 4 * sum(p.numel() for p in params.values()) * (1 + 2 * axes)
    return device if need <= torch.cuda.mem_get_info(device)[0] else torch.device("cpu")


def _group_orthogonalize(d: torch.Tensor, previous: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Gram-Schmidt of each group of `d` (summed over `dim`) against the same groups of earlier (orthogonal) ones."""
    for p in previous:
        pp = _tree_sum(p * p, dim)
        coef = torch.where(pp > 0, _tree_sum(d * p, dim) / pp.clamp_min(EPS), torch.zeros_like(pp))
        d = d - coef * p
    return d


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


def _pmap(fn: Any, names: Any) -> dict[Any, Any]:
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
    before = sum(_total(v * v) for v in views.values()) ** 0.5
    for p in previous:
        pp = sum(_total(t * t) for t in p.values())
        if pp == 0:
            continue
        coef = sum(_total(views[n].double() * p[n].double()) for n in views) / pp
        views = {n: v - coef * p[n] for n, v in views.items()}
    after = sum(_total(v * v) for v in views.values()) ** 0.5
    return {n: v * (before / (after + EPS)) for n, v in views.items()}
