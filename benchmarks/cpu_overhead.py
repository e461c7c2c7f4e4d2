"""Overhead of a plane over the no-perturbation floor, on the CPU (target ratio <= 1.15).

Workload: a GPT-2 from config (4 layers, width 256, 4 heads, vocab 4096, context 128) on 16 sequences
x 128 tokens, a 21 x 21 filter-normalized plane over [-1, 1]^2. The floor is the same number of plain
`probe.loss()` calls. Both are timed in one process, in alternating order, and the minimum over rounds
is kept (shared cores are noisy). Prints the ratio plane / floor; target <= 1.15.

    python benchmarks/cpu_overhead.py [--steps 21] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# glibc returning freed activations to the OS makes CPU timings swing by +-20%: pin it, then re-exec.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
if any(os.environ.get(k) != v for k, v in MALLOC.items()):
    os.environ.update(MALLOC)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_landscape import CausalLMObjective, LandscapeProbe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=4096, n_positions=128)
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (16, 128)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, max_length=128, batch_size=16)
    probe = LandscapeProbe(model, objective, progress=False)
    points = args.steps * args.steps
    probe.loss()  # warm-up
    plane_times, floor_times = [], []
    for r in range(args.rounds):
        order = ("plane", "floor") if r % 2 == 0 else ("floor", "plane")
        for what in order:
            start = time.perf_counter()
            if what == "plane":
                probe.plane(steps=(args.steps, args.steps), seed=r)
                plane_times.append(time.perf_counter() - start)
            else:
                for _ in range(points):
                    probe.loss()
                floor_times.append(time.perf_counter() - start)
        print(f"round {r}: plane {plane_times[-1]:.2f} s, floor {floor_times[-1]:.2f} s", flush=True)
    plane, floor = min(plane_times), min(floor_times)
    print(f"threads={torch.get_num_threads()} points={points} params={sum(p.numel() for p in model.parameters()):,}")
    print(f"plane: {plane:.2f} s ({points / plane:.1f} points/s); floor: {floor:.2f} s ({points / floor:.1f} points/s)")
    print(f"ratio plane/floor = {plane / floor:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
