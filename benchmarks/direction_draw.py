"""Where drawing a plane's two random directions spends its time (`hf_landscape.directions`), for a GPT-2 workload
of `gpu_speed.py` on the GPU: the default (`random.DEVICE_DRAW_MIN_ELEMENTS` picks the GPU or the host) in a
process's first call; then, alternating, the draw on the GPU (every direction drawn and normalized where its
weight lives) and on the host (weights copied over, directions moved back; also the path of `orthogonalize=True` /
`normalization="model"`); the GPU draw stage by stage; and, for scale, torch's own CPU `randn` of the same number
of entries (the raw draws of hf_landscape 0.1-0.5). Checks that the GPU and host directions are equal bit for bit.
Minimum of 3 rounds.

    python benchmarks/direction_draw.py [--workload b] [--dtype bfloat16]
"""

from __future__ import annotations

import time

import torch
from gpu_speed import timed, workload_model, workload_parser

from hf_landscape.directions import draw
from hf_landscape.directions import random as rnd


def clock(fn, rounds: int = 3) -> float:
    return timed(fn, rounds)[1]


def stages(model, params) -> None:
    """The default GPU draw's stages one by one (minimum of 3 rounds)."""
    keys = [(a, n) for a in range(2) for n in params]
    raws = {}

    def raw():
        raws.update({k: draw.gaussian(params[k[1]].shape, 0, k[0], k[1], "cuda") for k in keys})

    def normalize():
        return {
            n: rnd._normalized(params[n], [raws[(a, n)].clone() for a in range(2)], rnd.unit_dim(model, n), "filter")
            for n in params
        }

    raw()
    rows = {
        "raw draws of both axes (hash + inverse CDF)": raw,
        "weight norms, direction norms, rescale, round (incl. a clone)": normalize,
        "clones alone": lambda: {k: t.clone() for k, t in raws.items()},
    }
    for name, fn in rows.items():
        print(f"stage: {name}: {clock(fn):.4f} s", flush=True)


def main() -> None:
    parser = workload_parser(__doc__)
    args = parser.parse_args()
    model = workload_model(args.workload, getattr(torch, args.dtype))
    params = {n: p for n, p in model.named_parameters() if p.dim() >= 2}
    print(f"torch threads {torch.get_num_threads()}, {sum(p.numel() for p in params.values()) / 1e6:.1f}M weights")
    torch.cuda.synchronize()
    start = time.perf_counter()
    rnd.random_directions(model, 0)
    torch.cuda.synchronize()
    where = "GPU" if sum(p.numel() for p in params.values()) >= rnd.DEVICE_DRAW_MIN_ELEMENTS else "host"
    print(f"random_directions (default: {where}), first call of the process: {time.perf_counter() - start:.3f} s")

    def drawn_on(threshold: int):
        rnd.DEVICE_DRAW_MIN_ELEMENTS, default = threshold, rnd.DEVICE_DRAW_MIN_ELEMENTS
        try:
            return rnd.random_directions(model, 0)
        finally:
            rnd.DEVICE_DRAW_MIN_ELEMENTS = default

    rows = {
        "random_directions on the GPU": lambda: drawn_on(0),
        "random_directions on the host, moved to the GPU": lambda: drawn_on(2**62),
        "torch.randn on the host, same number of entries (0.5's raw draws)": lambda: rnd._pmap(
            lambda key: torch.randn(params[key[1]].shape, generator=torch.Generator().manual_seed(key[0])),
            [(a, n) for a in range(2) for n in params],
        ),
    }
    times = {name: float("inf") for name in rows}
    for r in range(3):  # alternating order, minimum over rounds
        for name in list(rows)[:: 1 if r % 2 == 0 else -1]:
            times[name] = min(times[name], clock(rows[name], rounds=1))
    for name, t in times.items():
        print(f"{name}: {t:.4f} s", flush=True)
    on_gpu, on_host = drawn_on(0), drawn_on(2**62)
    equal = all(torch.equal(g.tensors[n], h.tensors[n]) for g, h in zip(on_gpu, on_host) for n in h.tensors)
    print(f"GPU directions equal the host's bit for bit: {equal}")
    stages(model, params)


if __name__ == "__main__":
    main()
