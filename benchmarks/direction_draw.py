"""Where drawing a plane's two random directions spends its time (`hf_landscape.directions.random`), for a GPT-2
workload of `gpu_speed.py` on the GPU: the whole draw, and its stages alone (weights copied to the host, the raw
Gaussian draws, the draw with torch's intra-op threads limited to one per task), and pre-drawing every tensor
(the default) against pre-drawing only tensors of several blocks. Minimum of 3 rounds each.

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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        print(f"random_directions, torch.set_num_threads(1): {clock(rows['random_directions (2 axes)']):.3f} s")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
