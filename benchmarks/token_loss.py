"""The token loss on the GPU: the one-kernel loss (`hf_landscape.objectives.fused_nll`, the default there for
evaluations of at least `MIN_LOGITS` logits) against the float32 log-softmax, in one process, for the GPT-2
workloads of `gpu_speed.py` (the kernel forced on at (a)'s size too, below `MIN_LOGITS`). Rows: the loss alone
on one batch's logits; the recorded one-point evaluation (a CUDA graph replay); a whole 21 x 21 plane with the
default `points_per_forward="auto"`. The two variants alternate, and each row keeps the minimum of its rounds.
The planes' values must agree to float32 rounding.

    python benchmarks/token_loss.py [--workloads a,b] [--dtype bfloat16] [--rounds 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from gpu_speed import WORKLOADS, timed
from transformers import GPT2Config, GPT2LMHeadModel

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.engine.graphs import capture_loss
from hf_landscape.objectives import fused_nll, nll

VARIANTS = ("one kernel", "log-softmax")
DEFAULT_MIN_LOGITS = fused_nll.MIN_LOGITS


def use(variant: str) -> None:
    """The kernel at any size (also below `fused_nll.MIN_LOGITS`, where the default keeps the log-softmax), or never."""
    fused_nll.MIN_LOGITS = 0 if variant == VARIANTS[0] else 1 << 62


def measure(model, objective, logits, batch) -> tuple[dict, np.ndarray]:
    times = {}
    with torch.inference_mode():
        times["loss x 100"] = timed(lambda: [nll.token_nll(logits, batch) for _ in range(100)], 1)[1]
        graph = capture_loss(model, objective)
        times["replay x 100"] = timed(lambda: [graph() for _ in range(100)], 1)[1]
        graph.close()
    probe = LandscapeProbe(model, objective, progress=False)
    surface, times["plane"] = timed(lambda: probe.plane(steps=(21, 21), seed=0), 1)
    return times, surface.values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="a,b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for workload in args.workloads.split(","):
        torch.manual_seed(0)
        config = GPT2Config(**WORKLOADS[workload])
        model = GPT2LMHeadModel(config).to("cuda", getattr(torch, args.dtype)).eval()
        ids = torch.randint(0, config.vocab_size, (16, 128)).tolist()
        objective = CausalLMObjective({"input_ids": ids}, max_length=128, batch_size=16)
        objective.bind(model)
        batch = objective._batches[0]
        with torch.inference_mode(), nll.aligned_output_head(model):
            logits = model(**objective._inputs(batch)).logits
        best = {(row, v): float("inf") for row in ("loss x 100", "replay x 100", "plane") for v in VARIANTS}
        values = {}
        for r in range(2 * args.rounds):
            variant = VARIANTS[r % 2]
            use(variant)
            times, values[variant] = measure(model, objective, logits, batch)
            for row, t in times.items():
                best[row, variant] = min(best[row, variant], t)
        fused_nll.MIN_LOGITS = DEFAULT_MIN_LOGITS
        gap = np.nanmax(np.abs(values[VARIANTS[0]] - values[VARIANTS[1]]) / np.abs(values[VARIANTS[1]]))
        print(f"\n## workload ({workload}), {args.dtype}: planes agree to {gap:.1e} (relative)")
        print("| row | one kernel (ms) | log-softmax (ms) | ratio |\n|---|---|---|---|")
        for row in ("loss x 100", "replay x 100", "plane"):
            a, b = best[row, VARIANTS[0]] * 1e3, best[row, VARIANTS[1]] * 1e3
            print(f"| {row} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
        print(
            f"plane points/s: one kernel {441 / best['plane', VARIANTS[0]]:.0f}, "
            f"log-softmax {441 / best['plane', VARIANTS[1]]:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
