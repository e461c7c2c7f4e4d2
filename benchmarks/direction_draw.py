"""Where drawing a plane's two random directions spends its time (`hf_landscape.directions.random`), for a GPT-2
workload of `gpu_speed.py` on the GPU: the whole draw; pre-drawing every tensor (the default) against pre-drawing
only tensors of several blocks; the stages one by one (weights to the host, raw draws into fresh and into
faulted-in buffers, rescaling and rounding, copies to the GPU pageable and pinned, a new pinned buffer); and the
draw with torch's intra-op threads left as they are while the pool runs (the default limits them to one).
Minimum of 3 rounds each.

    python benchmarks/direction_draw.py [--workload b] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import torch
from gpu_speed import WORKLOADS, timed
from transformers import GPT2Config, GPT2LMHeadModel

from hf_landscape.directions import random as rnd


def clock(fn, rounds: int = 3) -> float:
    return timed(fn, rounds)[1]


def stages(model, params) -> None:
    """The filter-normalized draw's stages one by one, as `random_directions` runs them (minimum of 3 rounds)."""
    keys = [(a, n) for a in range(2) for n in params]
    seeds = {k: rnd.block_seed(0, k[0], k[1], 0, 1) for k in keys}
    weights = rnd._host_float32(params)
    w_norms = rnd._pmap(lambda n: rnd._group_norms(rnd._as_units(weights[n], rnd.unit_dim(model, n))), weights)
    views = {}

    def fresh():
        views.update(rnd._pmap(lambda k: torch.randn(params[k[1]].shape, generator=gen(k)), keys))

    def gen(k):
        return torch.Generator().manual_seed(seeds[k])

    def reused():
        rnd._pmap(lambda k: torch.randn(params[k[1]].shape, generator=gen(k), out=views[k]), keys)

    def scale_cast():
        def one(k):
            v = rnd._as_units(views[k], rnd.unit_dim(model, k[1]))
            torch.mul(v, w_norms[k[1]] / (rnd._group_norms(v) + rnd.EPS), out=v)
            return views[k].to(params[k[1]].dtype)

        return rnd._pmap(one, keys)

    fresh()
    dtype_views = scale_cast()
    nbytes = sum(rnd._padded(t.numel() * t.element_size()) for t in dtype_views.values())
    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def pinned_h2d():
        offset, out = 0, {}
        for k, t in dtype_views.items():
            size = t.numel() * t.element_size()
            view = pinned[offset : offset + size].view(t.dtype).view(t.shape)
            view.copy_(t)
            out[k] = view.to("cuda", non_blocking=True)
            offset += rnd._padded(size)
        return out

    rows = {
        "weights to the host (pinned, widened)": lambda: rnd._host_float32(params),
        "raw draws into fresh buffers": fresh,
        "raw draws into buffers already faulted in": reused,
        "rescale in place + round to the weight dtype": scale_cast,
        "to the GPU, pageable (as now)": lambda: rnd._pmap(lambda k: dtype_views[k].to("cuda"), keys),
        "to the GPU through a pinned buffer": pinned_h2d,
        "allocate a pinned buffer of the directions' size": lambda: torch.empty(
            nbytes, dtype=torch.uint8, pin_memory=True
        ),
    }
    for name, fn in rows.items():  # a fresh pinned buffer once (a second would come from torch's cache)
        print(f"stage: {name}: {clock(fn, rounds=1 if 'pinned buffer of' in name else 3):.3f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="b")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**WORKLOADS[args.workload])).to("cuda", getattr(torch, args.dtype)).eval()
    params = dict(model.named_parameters())
    params = {n: p for n, p in params.items() if p.dim() >= 2}
    print(f"torch threads {torch.get_num_threads()}, {sum(p.numel() for p in params.values()) / 1e6:.1f}M weights")
    rows = {
        "random_directions (2 axes)": lambda: rnd.random_directions(model, 0),
        "weights to the host (float32)": lambda: rnd._pmap(lambda n: params[n].detach().to("cpu").float(), params),
        "raw randn of both axes": lambda: rnd._pmap(
            lambda key: torch.randn(params[key[1]].shape, generator=torch.Generator().manual_seed(key[0])),
            [(a, n) for a in range(2) for n in params],
        ),
    }
    for name, fn in rows.items():
        print(f"{name}: {clock(fn):.3f} s", flush=True)
    default = rnd.PREDRAW_MIN_ELEMENTS
    best = {"every tensor pre-drawn (default)": float("inf"), "only multi-block tensors pre-drawn": float("inf")}
    for r in range(6):  # alternating, minimum of 3 each
        name = list(best)[r % 2]
        rnd.PREDRAW_MIN_ELEMENTS = default if r % 2 == 0 else rnd.DRAW_BLOCK
        best[name] = min(best[name], clock(rows["random_directions (2 axes)"], rounds=1))
    rnd.PREDRAW_MIN_ELEMENTS = default
    for name, t in best.items():
        print(f"random_directions, {name}: {t:.3f} s")
    stages(model, params)
    rnd.POOL_INTRAOP_THREADS = None
    try:
        print(
            f"random_directions, intra-op threads left at {torch.get_num_threads()}: "
            f"{clock(rows['random_directions (2 axes)']):.3f} s"
        )
    finally:
        rnd.POOL_INTRAOP_THREADS = 1


if __name__ == "__main__":
    main()
