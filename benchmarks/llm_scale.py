"""LLM scale on one GPU: peak memory and time per grid point of plain evaluation, full-rank directions and
LoRA-subspace (rank-8) directions, for Llama-architecture models built from configs with random bf16 weights.

Models: TinyLlama-1.1B's config (~1.1B parameters) and Llama-3-8B's config (~8.0B). Evaluation set: 32
sequences x 1024 tokens. Model FLOPs utilization (MFU) = 2 * parameters * tokens per point / seconds per
point / the GPU's bf16 matmul rate measured here (as in PaLM, appendix B; the forward pass only).
Speed and memory do not depend on the weights' values, so random weights are as good as trained ones; the
full-rank directions are drawn on the GPU (their values do not matter either; on the CPU an 8B draw takes
minutes).

LoRA planes are timed with the editor's default path (`merged`: each replaced forward multiplies by W + ΔW
where that moves fewer bytes than the fused product, see `engine.POLICY.merge_min_ratio`, the fused product
elsewhere); `--lora-paths merged,fused,hook` also times the fused product everywhere
(`LowRankEditor.merged_linear = False`) and the forward-hook path (`LowRankEditor.fused_linear = False`) in
the same process, `--repeats N` takes the fastest of N planes per path (alternating paths). s / point is the
whole plane call over its points, direction drawing included; the grid loop alone (the surface's
`wall_time_s`) and the set-up (the rest, paid once per plane) are printed too. `--steps` sets the plane
(steps x steps points), so the set-up is spread over as many points as a user's plane would.

    python benchmarks/llm_scale.py [--models 1b,8b] [--steps 3] [--lora-paths merged[,fused][,hook]] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch
from bench_utils import LLAMA_CONFIGS, matmul_rate, write_results
from transformers import LlamaConfig, LlamaForCausalLM

from hf_landscape import CausalLMObjective, Direction, LandscapeProbe
from hf_landscape.engine import LowRankEditor

BATCH = {"1b": 8, "8b": 4}  # sequences per forward: the 8B's 128k-vocab logits are 1 GB per sequence in fp32
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


@torch.no_grad()  # with autograd on, each direction kept a graph holding float32 copies of every weight (+14 GiB at 1.1B)
def gpu_directions(model, seed: int) -> list[Direction]:
    """Full-rank filter-normalized Gaussian directions drawn on the GPU (same memory as the CPU draw)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    out = []
    for _ in range(2):
        tensors = {}
        for name, p in model.named_parameters():
            if p.dim() < 2:
                continue
            d = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
            d.mul_(
                p.float().norm(dim=1, keepdim=True).to(p.dtype)
                / (d.float().norm(dim=1, keepdim=True).to(p.dtype) + 1e-10)
            )
            tensors[name] = d
        out.append(Direction(tensors, {"kind": "random", "drawn_on": "cuda"}))
    return out


def run(
    name: str, steps: int, peak_rate: float, lora_paths: list[str], repeats: int, batch_size: int | None = None
) -> dict:
    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA_CONFIGS[name], attn_implementation="sdpa")
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, config.vocab_size, (32, 1024)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, max_length=1024, batch_size=batch_size or BATCH[name])
    probe = LandscapeProbe(model, objective, progress=False)
    tokens = 32 * 1024
    probe.loss()  # warm-up (kernels, allocator)
    rounds = [timed(probe.loss) for _ in range(3)]
    plain_loss, plain_time, plain_mem = min(rounds, key=lambda r: r[1])
    points = steps * steps
    result = {
        "model": name,
        "parameters": params,
        "tokens_per_point": tokens,
        "batch_size": objective.config.batch_size,
        "plain": {"peak_gib": plain_mem, "s_per_point": plain_time},
    }
    best: dict[str, tuple] = {}  # path -> (seconds, peak GiB, grid-loop seconds, centre == plain loss)
    for _ in range(repeats):
        for path in lora_paths:
            LowRankEditor.fused_linear = path in ("fused", "merged")
            LowRankEditor.merged_linear = path == "merged"  # the default
            try:
                lora, t, mem = timed(
                    lambda: probe.plane(steps=(steps, steps), seed=0, directions="lora", rank=8, target_modules=TARGETS)
                )
            finally:
                LowRankEditor.fused_linear = True
                LowRankEditor.merged_linear = True
            if path not in best or t < best[path][0]:
                best[path] = (t, mem, lora.metadata["wall_time_s"], lora.centre == plain_loss)
            del lora  # no surface (and its directions) stays alive into the next plane's peak memory
            gc.collect()
    for path in lora_paths:
        t, mem, grid, centre_ok = best[path]  # grid: the grid loop alone, no direction drawing or set-up
        result[lora_key(path)] = {
            "peak_gib": mem,
            "s_per_point": t / points,
            "grid_s_per_point": grid / points,
            "setup_s": t - grid,
            "centre_equals_loss": centre_ok,
            "lora_memory_ratio": mem / plain_mem,
            "lora_time_ratio": t / points / plain_time,
            "grid_time_ratio": grid / points / plain_time,
        }
    gc.collect()
    torch.cuda.empty_cache()
    try:
        torch.cuda.reset_peak_memory_stats()
        dirs = gpu_directions(model, 0)
        full, t, mem = timed(lambda: probe.plane(steps=(steps, steps), directions=dirs))
        result["full_rank"] = {
            "peak_gib": mem,
            "s_per_point": t / points,
            "centre_equals_loss": full.centre == plain_loss,
        }
    except torch.OutOfMemoryError as err:
        result["full_rank"] = {"error": f"out of memory: {str(err).splitlines()[0]}"}
    for key in ("plain", "full_rank", *map(lora_key, lora_paths)):
        row = result[key]
        if "s_per_point" in row:
            row["mfu"] = 2 * params * tokens / row["s_per_point"] / peak_rate
    first = result[lora_key(lora_paths[0])]
    result["lora_memory_ratio"] = first["lora_memory_ratio"]
    result["lora_time_ratio"] = first["lora_time_ratio"]
    return result


def lora_key(path: str) -> str:
    return "lora_r8" if path == "merged" else f"lora_r8_{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="1b,8b")
    parser.add_argument("--steps", type=int, default=3, help="plane of steps x steps points per method")
    parser.add_argument("--lora-paths", default="merged", help="any of merged (default), fused, hook")
    parser.add_argument("--repeats", type=int, default=1, help="LoRA planes per path; the fastest counts")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per forward (default 8 at 1B, 4 at 8B)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    paths = args.lora_paths.split(",")
    if not paths or any(p not in ("fused", "merged", "hook") for p in paths):
        parser.error("--lora-paths takes fused, merged and/or hook")
    torch.backends.cuda.matmul.allow_tf32 = True
    rate = matmul_rate()
    print(f"GPU: {torch.cuda.get_device_name()}  measured bf16 matmul rate: {rate / 1e12:.0f} TFLOP/s", flush=True)
    results = []
    for name in args.models.split(","):
        r = run(name, args.steps, rate, paths, args.repeats, args.batch_size)
        results.append(r)
        gc.collect()
        torch.cuda.empty_cache()
        print(json.dumps(r, indent=1), flush=True)
    print("\n| model | params | method | peak GiB | s / point | MFU |")
    print("|---|---|---|---|---|---|")
    for r in results:
        rows = [("plain", "plain evaluation"), ("full_rank", "full-rank directions")]
        rows += [(lora_key(p), f"LoRA-subspace r=8 ({p})") for p in paths]
        for key, label in rows:
            row = r[key]
            if "error" in row:
                print(f"| {r['model']} | {r['parameters'] / 1e9:.2f}B | {label} | {row['error']} | | |")
            else:
                print(
                    f"| {r['model']} | {r['parameters'] / 1e9:.2f}B | {label} | {row['peak_gib']:.1f} | {row['s_per_point']:.3f} | {row['mfu']:.1%} |"
                )
        for p in paths:
            row = r[lora_key(p)]
            print(
                f"| {r['model']} | | LoRA ({p}) / plain | memory x{row['lora_memory_ratio']:.3f} "
                f"| time x{row['lora_time_ratio']:.3f} (grid loop alone x{row['grid_time_ratio']:.3f}, "
                f"set-up {row['setup_s']:.2f} s per plane) | |"
            )
    write_results(args.json, rate, results)


if __name__ == "__main__":
    main()
