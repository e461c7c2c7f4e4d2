"""Where a whole `probe.plane` call's time goes besides its grid loop (directions, set-up, evaluation), for a
GPT-2 workload of `gpu_speed.py` on the GPU: cProfile of one 21 x 21 plane after a warm-up plane, top functions
by cumulative time, and the grid loop's own wall time. With one point per forward it also times the loop's
parts over the plane's 441 points: setting the weights alone, replaying the recorded evaluation (CUDA graph)
alone, and both, as the grid loop does them.

    python benchmarks/plane_setup.py [--workload b] [--dtype bfloat16] [--points-per-forward auto|k] [--no-graphs]
"""

from __future__ import annotations

import cProfile
import pstats
import time

import torch
from gpu_speed import timed, workload_model, workload_parser

from hf_landscape import CausalLMObjective, LandscapeProbe


def main() -> None:
    parser = workload_parser(__doc__)
    parser.add_argument("--points-per-forward", default="auto")
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--cold", action="store_true", help="profile the process's first plane (after 3 plain losses)")
    args = parser.parse_args()
    k = args.points_per_forward if args.points_per_forward == "auto" else int(args.points_per_forward)
    model = workload_model(args.workload, getattr(torch, args.dtype))
    ids = torch.randint(0, model.config.vocab_size, (16, 128)).tolist()
    probe = LandscapeProbe(
        model,
        CausalLMObjective({"input_ids": ids}, max_length=128, batch_size=16),
        progress=False,
        points_per_forward=k,
        cuda_graphs=not args.no_graphs,
    )
    if args.cold:  # as `compare_peers.py` times a tool: its first plane, after the floor's plain evaluations
        for _ in range(3):
            probe.loss()
    else:
        probe.plane(steps=(3, 3), seed=0)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        directions = probe.directions(seed=0)
        torch.cuda.synchronize()
        print(f"probe.directions alone: {time.perf_counter() - start:.3f} s")
        del directions
    profiler = cProfile.Profile()
    torch.cuda.synchronize()
    start = time.perf_counter()
    profiler.enable()
    plane = probe.plane(steps=(21, 21), seed=0)
    torch.cuda.synchronize()
    profiler.disable()
    total = time.perf_counter() - start
    print(
        f"plane: {total:.3f} s, grid loop {plane.metadata['wall_time_s']:.3f} s, rest {total - plane.metadata['wall_time_s']:.3f} s"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)
    if k == 1 and not args.cold:
        loop_parts(probe, plane)


def loop_parts(probe: LandscapeProbe, plane) -> None:
    """ms per point of the one-point loop's parts, each over the plane's points."""
    from hf_landscape.directions import prepare
    from hf_landscape.engine import editing
    from hf_landscape.engine.graphs import capture_loss

    weights, tensors = prepare(probe.model, plane.directions)
    coords = [(a, b) for b in plane.y for a in plane.x]
    with editing(probe.model, weights) as editor, torch.inference_mode():
        graphed = capture_loss(probe.model, probe.objective)

        def clock(fn) -> float:
            return timed(fn, 3)[1] / len(coords) * 1e3

        sets = clock(lambda: [editor.set_linear(c, tensors) for c in coords])
        if graphed is None:
            print(f"per point: weights {sets:.3f} ms (no graph recorded)")
            return
        replays = clock(lambda: [graphed() for _ in coords])
        both = clock(lambda: [(editor.set_linear(c, tensors), graphed()) for c in coords])
        eager = clock(lambda: [probe.objective.loss_tensor(probe.model) for _ in coords])
        graphed.close()
    print(
        f"per point: weights {sets:.3f} ms, replay {replays:.3f} ms, both {both:.3f} ms, eager evaluation {eager:.3f} ms"
    )


if __name__ == "__main__":
    main()
