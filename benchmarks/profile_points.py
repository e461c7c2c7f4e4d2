"""Where one grid point's time goes on the GPU: the plain evaluation (the floor) and k stacked points per forward,
for a GPT-2 workload of `gpu_speed.py`, under the torch profiler (top CUDA kernels, GPU busy fraction).

    python benchmarks/profile_points.py [--workload b] [--dtype bfloat16] [--k 16] [--compile] [--graph]
"""

from __future__ import annotations

import time

import torch
from gpu_speed import workload_model, workload_parser
from torch.profiler import ProfilerActivity, profile

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.directions import prepare
from hf_landscape.engine import StackedPoints, evaluate


def report(name: str, fn, points: int) -> None:
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    gpu = sum(e.self_device_time_total for e in events) / 1e3
    print(
        f"\n### {name}: wall {wall * 1e3:.1f} ms for {points} point(s) = {wall * 1e3 / points:.2f} ms/point; "
        f"GPU kernel time {gpu:.1f} ms ({gpu / (wall * 1e3):.0%} busy)"
    )
    print(events.table(sort_by="self_device_time_total", row_limit=14, max_name_column_width=60))


def main() -> None:
    parser = workload_parser(__doc__)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="also profile a compile=True plane")
    parser.add_argument("--graph", action="store_true", help="also profile 32 replays of the recorded evaluation")
    parser.add_argument("--skip-stacked", action="store_true")
    args = parser.parse_args()
    model = workload_model(args.workload, getattr(torch, args.dtype))
    ids = torch.randint(0, model.config.vocab_size, (16, 128)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, max_length=128, batch_size=16)
    probe = LandscapeProbe(model, objective, progress=False)
    report("plain evaluation (floor)", lambda: evaluate(model, objective), 1)
    dirs = probe.directions(0)
    params, tensors = prepare(probe.model, dirs)
    stacked = StackedPoints(model, params, tensors)
    coords = [(0.1 * i, -0.05 * i) for i in range(args.k)]
    with torch.inference_mode():
        if not args.skip_stacked:
            report(f"{args.k} stacked points", lambda: stacked.evaluate(objective, coords), args.k)
            report(f"{args.k} stacked points: building the weights only", lambda: stacked.stacked(coords), args.k)
        if args.graph:  # the one-point evaluation recorded as a CUDA graph (the default one-point path on a GPU)
            from hf_landscape.engine.graphs import capture_loss

            graphed = capture_loss(model, objective)
            if graphed is not None:
                report("32 replays of the recorded evaluation", lambda: [graphed() for _ in range(32)], 32)
                graphed.close()
    if args.compile:  # one point per forward, CUDA graphs, loss compiled too: a 5 x 5 plane after a warm-up plane
        compiled = LandscapeProbe(model, objective, progress=False, compile=True)
        compiled.plane(steps=(3, 3), seed=0)
        report("compile=True, a 5 x 5 plane", lambda: compiled.plane(steps=(5, 5), seed=0), 25)


if __name__ == "__main__":
    main()
