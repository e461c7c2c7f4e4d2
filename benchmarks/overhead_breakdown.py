"""Where the one-point path's time over the floor goes (diagnostic for gpu_speed.py), GPT-2 small, 441 points.

Times, each over 441 evaluations: (1) the floor; (2) the floor with the weights left at one perturbed point;
(3) per point: weight update then evaluation (the engine's loop); (4) weight updates alone.

    python benchmarks/overhead_breakdown.py [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.directions import prepare
from hf_landscape.engine import editing


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = (
        GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257))
        .to("cuda", getattr(torch, args.dtype))
        .eval()
    )
    ids = torch.randint(0, 50257, (16, 128)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, batch_size=16)
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=1)
    dirs = probe.directions(seed=0)
    params, tensors = prepare(probe.model, dirs)
    coords = [(a / 10 - 1, b / 10 - 1) for b in range(21) for a in range(21)]
    ev = lambda: objective.evaluate(model)  # noqa: E731
    with torch.inference_mode():
        for _ in range(20):
            ev()
    for rnd in range(2):
        floor = timed(lambda: [ev() for _ in coords])
        with editing(model, params) as editor:
            editor.set_linear((0.5, 0.5), tensors)
            with torch.inference_mode():
                perturbed = timed(lambda: [ev() for _ in coords])

            def loop():
                for c in coords:
                    editor.set_linear(c, tensors)
                    with torch.inference_mode():
                        ev()

            engine = timed(loop)
            updates = timed(lambda: [editor.set_linear(c, tensors) for c in coords])
        print(
            f"round {rnd} {args.dtype}: floor {floor:.2f}s  perturbed-weights floor {perturbed:.2f}s  "
            f"engine loop {engine:.2f}s  updates only {updates:.2f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
