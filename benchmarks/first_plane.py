"""A process's first plane on the GPU, with a timeline: making the objective and the probe, drawing the directions,
waiting for the fused loss kernel's background load (`fused_nll`), and the whole plane; then a second plane in the
same process. Before the timing, like `compare_peers.py`'s floor, three plain evaluations warm CUDA, cuBLAS and SDPA.
On a machine whose Triton cache is empty, the first run also shows the kernel's compilation.

    python benchmarks/first_plane.py [--workload b] [--dtype bfloat16]
"""

from __future__ import annotations

import time

import torch
from gpu_speed import workload_model, workload_parser

import hf_landscape.directions.random as random_module
from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.objectives import fused_nll


def main() -> None:
    parser = workload_parser(__doc__)
    args = parser.parse_args()
    model = workload_model(args.workload, getattr(torch, args.dtype))
    ids = torch.randint(0, model.config.vocab_size, (16, 128), device="cuda")
    with torch.no_grad():
        for _ in range(3):
            model(ids, labels=ids).loss.item()
    marks: dict[str, tuple[float, float]] = {}
    draw, wait = random_module.random_directions, fused_nll._wait
    start = 0.0

    def timed_draw(*a, **k):
        torch.cuda.synchronize()
        at = time.perf_counter()
        out = draw(*a, **k)
        torch.cuda.synchronize()
        marks["directions"] = (at - start, time.perf_counter() - at)
        return out

    def timed_wait(device):
        at = time.perf_counter()
        wait(device)
        marks.setdefault("waiting for the loss kernel", (at - start, time.perf_counter() - at))

    random_module.random_directions, fused_nll._wait = timed_draw, timed_wait
    try:
        torch.cuda.synchronize()
        start = time.perf_counter()
        objective = CausalLMObjective({"input_ids": ids.tolist()}, max_length=128, batch_size=16)
        probe = LandscapeProbe(model, objective, progress=False)
        marks["objective + probe"] = (0.0, time.perf_counter() - start)
        probe.plane(steps=(21, 21), span=((-1, 1), (-1, 1)), seed=0)
        torch.cuda.synchronize()
        total = time.perf_counter() - start
    finally:
        random_module.random_directions, fused_nll._wait = draw, wait
    for name, (at, took) in marks.items():
        print(f"  {name}: at {at:.3f} s, took {took:.3f} s")
    print(f"first plane ({args.workload}, {args.dtype}): {total:.3f} s, {441 / total:.1f} points/s")
    again = time.perf_counter()
    probe.plane(steps=(21, 21), span=((-1, 1), (-1, 1)), seed=0)
    torch.cuda.synchronize()
    print(f"second plane: {time.perf_counter() - again:.3f} s, {441 / (time.perf_counter() - again):.1f} points/s")


if __name__ == "__main__":
    main()
