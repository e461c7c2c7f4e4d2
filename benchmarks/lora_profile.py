"""Where a LoRA-subspace grid point's time over a plain forward goes (diagnostic for llm_scale.py).

For each model (the Llama configs of llm_scale.py, random bf16 weights, 32 x 1024 tokens per point):

1. time one point (min of `--repeats`): plain evaluation, the forward-hook path, the fused path and the
   default merged-where-it-pays path (`LowRankEditor.fused_linear`, `merged_linear`), the editor set at (0.5, -0.5) and kept for all repeats, as in a plane;
2. profile one point of each with torch.profiler: GPU busy time (sum of kernel times) against wall time, and
   the aten ops with the most GPU time, by input shape;
3. check that the editor's `set_linear` gives the bits of the former `torch.cat([c * R ...])`, and time both;
4. a 3 x 3 LoRA plane taken apart: drawing the directions, the whole call, the grid loop alone;
5. with `--pieces`, each projection's pieces alone with CUDA events (median of 20) at one forward's shapes
   (the small ones are launch-bound there, so read only the large ones).

    python benchmarks/lora_profile.py [--models 1b,8b] [--out DIR] [--pieces]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from bench_utils import LLAMA_CONFIGS
from llm_scale import BATCH, TARGETS
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from hf_landscape import CausalLMObjective, LandscapeProbe, LowRankDirectionConfig, low_rank_directions
from hf_landscape.engine import LowRankEditor, low_rank_editing

MODES = ("plain", "hook", "fused", "merged")


def wall(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def device_time(avg) -> float:
    for key in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(avg, key):
            return float(getattr(avg, key))
    return 0.0


def profile_point(fn, rows: int) -> dict:
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
    span = (max(e.time_range.end for e in kernels) - min(e.time_range.start for e in kernels)) / 1e3
    ops = []
    for avg in prof.key_averages(group_by_input_shape=True):
        t = device_time(avg) / 1e3
        if t > 0:
            ops.append({"op": avg.key, "shapes": str(avg.input_shapes)[:120], "count": avg.count, "gpu_ms": t})
    ops.sort(key=lambda r: -r["gpu_ms"])
    by_kernel: dict[str, float] = {}
    for e in kernels:
        by_kernel[e.name] = by_kernel.get(e.name, 0.0) + e.time_range.elapsed_us() / 1e3
    top_kernels = sorted(by_kernel.items(), key=lambda kv: -kv[1])[:rows]
    return {
        "gpu_busy_ms": busy,
        "gpu_span_ms": span,
        "kernels": len(kernels),
        "ops": ops[:rows],
        "top_kernels": top_kernels,
    }


def events_median(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def pieces(name: str) -> list[dict]:
    """Per projection shape of one forward (M tokens): each piece of the two paths, ms (median of 20)."""
    cfg = LLAMA_CONFIGS[name]
    m = BATCH[name] * 1024
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    shapes = {"q/o": (h, h), "k/v": (h, kv), "gate/up": (h, i), "down": (i, h)}
    r = 16  # rank 8, two axes
    g = torch.Generator(device="cuda").manual_seed(0)
    return [shape_pieces(label, m, k, n, r, g) for label, (k, n) in shapes.items()]


def shape_pieces(label: str, m: int, k: int, n: int, r: int, g: torch.Generator) -> dict:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g) / k**0.5
    left = torch.randn(k, r, device="cuda", dtype=torch.bfloat16, generator=g)
    right = torch.randn(r, n, device="cuda", dtype=torch.bfloat16, generator=g)
    xl = x @ left
    y = F.linear(x, w)
    row: dict = {"shape": label, "M": m, "K": k, "N": n}
    row["linear"] = events_median(lambda: F.linear(x, w))
    row["x@L"] = events_median(lambda: x @ left)
    row["y.addmm_(xL,R)"] = events_median(lambda: y.addmm_(xl, right))
    row["mm(xL,R)"] = events_median(lambda: torch.mm(xl, right))
    row["C.addmm_(x,Wt)"] = events_median(lambda: y.addmm_(x, w.t()))

    def hook_path():
        yy = F.linear(x, w)
        yy.addmm_(x @ left, right)

    def fused_path():
        c = torch.mm(x @ left, right)
        c.addmm_(x, w.t())

    row["hook total"] = events_median(hook_path)
    row["fused total"] = events_median(fused_path)
    row["out MB"] = m * n * 2 / 1e6
    return row


def set_linear_check(model, dirs) -> dict:
    """The editor's foreach `set_linear` against the former per-module `torch.cat([c * R ...])`: same bits, time."""
    coords = (0.5, -0.25)
    out: dict = {}
    with low_rank_editing(model, dirs) as editor, torch.inference_mode():
        editor.set_linear(coords)
        out["bitwise_equal"] = all(
            torch.equal(slot["right"], torch.cat([c * r for c, r in zip(coords, slot["rights"])], dim=0))
            for slot in editor.slots
        )
        out["new_ms"] = 1e3 * min(wall(lambda: editor.set_linear(coords)) for _ in range(20))
        out["old_ms"] = 1e3 * min(
            wall(lambda: [torch.cat([c * r for c, r in zip(coords, slot["rights"])], dim=0) for slot in editor.slots])
            for _ in range(20)
        )
    return out


def timed_plane(probe, directions, kw: dict) -> tuple[float, float]:
    """(seconds of the whole 3 x 3 plane call, seconds of its grid loop)."""
    extra = kw if isinstance(directions, str) else {}
    torch.cuda.synchronize()
    start = time.perf_counter()
    surface = probe.plane(steps=(3, 3), directions=directions, **extra)
    torch.cuda.synchronize()
    return time.perf_counter() - start, surface.metadata["wall_time_s"]


def plane_breakdown(model, objective) -> dict:
    """A 3 x 3 LoRA plane: drawing its directions, the whole call, and the grid loop alone (run_grid's wall)."""
    probe = LandscapeProbe(model, objective, progress=False)
    kw = dict(rank=8, target_modules=TARGETS)
    out: dict = {"draw_s": [], "plane_s": [], "grid_s": [], "predrawn_plane_s": [], "predrawn_grid_s": []}
    for _ in range(2):
        t0 = time.perf_counter()
        dirs = probe.directions(0, kind="lora", **kw)
        torch.cuda.synchronize()
        out["draw_s"].append(time.perf_counter() - t0)
        total, grid = timed_plane(probe, "lora", kw)
        out["plane_s"].append(total)
        out["grid_s"].append(grid)
        total, grid = timed_plane(probe, dirs, kw)
        out["predrawn_plane_s"].append(total)
        out["predrawn_grid_s"].append(grid)
    return out


def run(name: str, repeats: int, rows: int, with_pieces: bool) -> dict:
    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA_CONFIGS[name], attn_implementation="sdpa")
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.eval()
    ids = torch.randint(0, config.vocab_size, (32, 1024)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, max_length=1024, batch_size=BATCH[name])
    dirs = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=8, target_modules=TARGETS), axes=2)
    result: dict = {"model": name, "time_s": {}, "profile": {}}
    losses = {}
    for mode in MODES:
        LowRankEditor.fused_linear = mode in ("fused", "merged")
        LowRankEditor.merged_linear = mode == "merged"  # the default: merged where it pays, fused elsewhere
        with low_rank_editing(model, dirs) as editor:
            if mode != "plain":
                editor.set_linear((0.5, -0.5))
            with torch.inference_mode():
                losses[mode] = objective.evaluate(model).loss  # warm-up; the editor learns its groups
                result["time_s"][mode] = min(wall(lambda: objective.evaluate(model)) for _ in range(repeats))
                result["profile"][mode] = profile_point(lambda: objective.evaluate(model), rows)
            result["profile"][mode]["fused_modules"] = len(editor.patched)
            result["profile"][mode]["hooked_modules"] = len(editor.handles)
    LowRankEditor.fused_linear = LowRankEditor.merged_linear = True
    result["loss"] = losses
    result["set_linear"] = set_linear_check(model, dirs)
    result["plane"] = plane_breakdown(model, objective)
    if with_pieces:
        with torch.inference_mode():
            result["pieces_ms"] = pieces(name)
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="1b,8b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=14)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument(
        "--pieces", action="store_true", help="also time each projection's pieces alone (small ones: launch-bound)"
    )
    args = parser.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    for name in args.models.split(","):
        r = run(name, args.repeats, args.rows, args.pieces)
        with open(os.path.join(args.out, f"lora_profile_{name}.json"), "w") as f:
            json.dump(r, f, indent=1)
        t = r["time_s"]
        print(
            f"\n== {name}: s/point plain {t['plain']:.4f}  hook {t['hook']:.4f} (x{t['hook'] / t['plain']:.3f})"
            f"  fused {t['fused']:.4f} (x{t['fused'] / t['plain']:.3f})"
            f"  merged {t['merged']:.4f} (x{t['merged'] / t['plain']:.3f})  losses {r['loss']}"
        )
        for mode in MODES:
            p = r["profile"][mode]
            print(
                f"-- {mode}: GPU busy {p['gpu_busy_ms']:.1f} ms of {p['gpu_span_ms']:.1f} ms, {p['kernels']} kernels, "
                f"fused/hooked modules {p['fused_modules']}/{p['hooked_modules']}"
            )
            for op in p["ops"]:
                print(f"   {op['gpu_ms']:8.2f} ms {op['count']:5d}x {op['op']} {op['shapes']}")
        print(f"-- set_linear: {r['set_linear']}")
        print(f"-- plane (3 x 3, s): {json.dumps(r['plane'])}")
        if not args.pieces:
            continue
        print("-- pieces (ms, one forward's shapes):")
        for row in r["pieces_ms"]:
            print("   " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
