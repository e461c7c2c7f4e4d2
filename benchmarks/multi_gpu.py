"""Grid points sharded over GPUs with torchrun / accelerate launch (issue 6, part 3).

A Llama model with TinyLlama-1.1B's config (random bf16 weights; speed does not depend on the values),
32 x 1024 tokens per point, an 11 x 11 plane of full-rank filter-normalized directions drawn on the GPU
from a fixed seed (identical on every GPU). Run once per process count; rank 0 writes the wall time of the
grid and the values:

    python benchmarks/multi_gpu.py --json one.json
    torchrun --nproc_per_node=2 benchmarks/multi_gpu.py --json two.json
    torchrun --nproc_per_node=4 benchmarks/multi_gpu.py --json four.json

then `python benchmarks/multi_gpu.py --compare one.json two.json four.json` prints speed-ups and checks
that every run gave the same values.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bench_utils import LLAMA_CONFIGS

CONFIG = LLAMA_CONFIGS["1b"]  # TinyLlama-1.1B


def run(steps: int, out: str) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_landscape import CausalLMObjective, Direction, LandscapeProbe
    from hf_landscape.engine import distributed_state

    state = distributed_state()
    device = state.device if state is not None else torch.device("cuda", 0)
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**CONFIG)).to(torch.bfloat16).eval()
    g = torch.Generator(device=device).manual_seed(1)
    dirs = []
    for axis in range(2):
        tensors = {}
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                d = torch.randn(p.shape, generator=g, device=device, dtype=torch.float32)
                d *= p.float().norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10)
                tensors[name] = d.to(p.dtype)
        dirs.append(Direction(tensors, {"kind": "random", "axis": axis}))
    ids = torch.randint(0, CONFIG["vocab_size"], (32, 1024), generator=torch.Generator().manual_seed(2)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, max_length=1024, batch_size=8)
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=1)
    probe.loss()  # warm-up
    torch.cuda.synchronize()
    if state is not None:
        torch.distributed.barrier()
    start = time.perf_counter()
    plane = probe.plane(steps=(steps, steps), directions=dirs)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    if state is None or state.is_main_process:
        record = {
            "processes": 1 if state is None else state.num_processes,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "points": steps * steps,
            "wall_s": wall,
            "values": plane.values.tolist(),
        }
        with open(out, "w") as f:
            json.dump(record, f)
        print(f"processes={record['processes']} points={record['points']} wall={wall:.2f}s", flush=True)


def compare(paths: list[str]) -> None:
    runs = [json.load(open(p)) for p in paths]
    base = runs[0]
    print("| processes | wall s | speed-up | values equal the 1-process run |\n|---|---|---|---|")
    for r in runs:
        same = np.array_equal(np.array(r["values"]), np.array(base["values"]), equal_nan=True)
        print(f"| {r['processes']} | {r['wall_s']:.2f} | {base['wall_s'] / r['wall_s']:.2f}x | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--json", default="multi_gpu.json")
    parser.add_argument("--compare", nargs="+", default=None)
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
    else:
        run(args.steps, args.json)


if __name__ == "__main__":
    main()
