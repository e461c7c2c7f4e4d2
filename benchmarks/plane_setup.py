"""Where a whole `probe.plane` call's time goes besides its grid loop (directions, set-up, evaluation), for a
GPT-2 workload of `gpu_speed.py` on the GPU: cProfile of one 21 x 21 plane after a warm-up plane, top functions
by cumulative time, and the grid loop's own wall time.

    python benchmarks/plane_setup.py [--workload b] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
from gpu_speed import WORKLOADS
from transformers import GPT2Config, GPT2LMHeadModel

from hf_landscape import CausalLMObjective, LandscapeProbe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="b")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**WORKLOADS[args.workload])).to("cuda", getattr(torch, args.dtype)).eval()
    ids = torch.randint(0, model.config.vocab_size, (16, 128)).tolist()
    probe = LandscapeProbe(model, CausalLMObjective({"input_ids": ids}, max_length=128, batch_size=16), progress=False)
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
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
