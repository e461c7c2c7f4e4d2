"""A user's whole LLM plane on one GPU, end to end: build the model, make the objective and the probe, draw
LoRA-subspace directions, evaluate a 21 x 21 plane and save it, each stage timed, with the plain loss as the floor.

Model: a Llama-architecture model built from a config with random bf16 weights (`--model 8b`: Llama-3-8B's config;
`1b`: TinyLlama-1.1B's), built directly on the GPU. Evaluation set: `--sequences` x `--tokens` random token ids
(default 4 x 1024 per point, one forward per point). Directions: `plane(directions="lora", rank=8,
target_modules=[q,k,v,o,gate,up,down]_proj)` with the editor's default path. Reported: seconds per stage, the
plane's wall time and its grid loop (the surface's `wall_time_s`), s / point against one plain `probe.loss()`,
peak GPU memory against the plain evaluation's, and whether the centre equals the plain loss bit for bit.

    python benchmarks/llm_plane.py [--model 8b] [--steps 21] [--sequences 4] [--tokens 1024] [--out DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from bench_utils import LLAMA_CONFIGS
from transformers import LlamaConfig, LlamaForCausalLM

from hf_landscape import CausalLMObjective, LandscapeProbe

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


CONFIGS = {
    **LLAMA_CONFIGS,
    # a check of the script itself on the CPU: `--model tiny --device cpu --steps 3`
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=512),
}


def _sync_time() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="8b", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--out", default=None, help="folder for the saved surface (default: a temporary folder)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    stages: dict[str, float] = {}

    start = _sync_time()
    torch.manual_seed(0)
    config = LlamaConfig(**CONFIGS[args.model], attn_implementation="sdpa")
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    stages["build model"] = _sync_time() - start

    start = _sync_time()
    ids = torch.randint(0, config.vocab_size, (args.sequences, args.tokens)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, max_length=args.tokens, batch_size=args.sequences)
    probe = LandscapeProbe(model, objective, progress=False)
    stages["objective and probe"] = _sync_time() - start

    start = _sync_time()
    probe.loss()  # the first evaluation: kernels, allocator
    stages["first loss"] = _sync_time() - start
    plain = []
    for _ in range(3):
        _reset_peak()
        t0 = _sync_time()
        loss = probe.loss()
        plain.append((_sync_time() - t0, _peak_gib(), loss))
    plain_s, plain_gib, plain_loss = min(plain)

    _reset_peak()
    start = _sync_time()
    surface = probe.plane(
        steps=(args.steps, args.steps), seed=0, directions="lora", rank=args.rank, target_modules=TARGETS
    )
    plane_s = _sync_time() - start
    plane_gib = _peak_gib()
    stages["plane (directions, grid, restore)"] = plane_s

    start = _sync_time()
    with tempfile.TemporaryDirectory() as tmp:
        surface.save_pretrained(args.out or tmp)
    stages["save"] = _sync_time() - start

    points = args.steps**2
    grid_s = surface.metadata["wall_time_s"]
    result = {
        "model": args.model,
        "parameters": params,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "points": points,
        "tokens_per_point": args.sequences * args.tokens,
        "stages_s": stages,
        "end_to_end_s": sum(stages.values()),
        "plain_s_per_point": plain_s,
        "plain_peak_gib": plain_gib,
        "plane_s_per_point": plane_s / points,
        "grid_s_per_point": grid_s / points,
        "time_ratio": plane_s / points / plain_s,
        "grid_time_ratio": grid_s / points / plain_s,
        "plane_peak_gib": plane_gib,
        "memory_ratio": plane_gib / plain_gib,
        "centre_equals_loss": surface.centre == plain_loss,
        "loss_range": [float(surface.values.min()), float(surface.values.max())],
    }
    print("| stage | s |\n|---|---|")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| end to end | {result['end_to_end_s']:.2f} |")
    print(
        f"\n{args.model} ({params / 1e9:.2f}B), {points} points of {args.sequences} x {args.tokens} tokens: "
        f"{result['plane_s_per_point']:.4f} s / point (grid loop {result['grid_s_per_point']:.4f}), plain "
        f"{plain_s:.4f} s -> x{result['time_ratio']:.3f} (grid x{result['grid_time_ratio']:.3f}); peak "
        f"{plane_gib:.1f} GiB against {plain_gib:.1f} (x{result['memory_ratio']:.3f}); centre == loss: "
        f"{result['centre_equals_loss']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
