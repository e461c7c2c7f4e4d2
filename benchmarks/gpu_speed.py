"""hf_landscape's own evaluation paths on the GPU, against the no-perturbation floor, in one process.

Workloads (issue 6): (a) GPT-2 from config, 4 layers, width 256, 4 heads, vocab 4096, context 128;
(b) GPT-2-small size, 12 layers, width 768, 12 heads, vocab 50257 (124M parameters). Each on 16 sequences
x 128 tokens, a 21 x 21 filter-normalized plane over [-1, 1]^2. For each dtype (fp32, bf16) it times:
- floor: points x one plain `probe.loss()` (no perturbation);
- one point per forward (`points_per_forward=1`): in-place fused weight updates, the evaluation replayed as a
  CUDA graph (the default, `cuda_graphs=True`) and eager (`cuda_graphs=False`);
- k points per forward (`points_per_forward=k`, vmap over stacked weights), for several k and "auto" (the
  first chunk recorded as a CUDA graph, later ones replayed), and "auto" without CUDA graphs
  (`--looped-ks`: also with SDPA looped per point, as vmap does without `hf_landscape.engine.attention`);
- one point per forward with the forward compiled by `torch.compile(mode="reduce-overhead")` (CUDA graphs);
- `--compiled-ks`: compile=True with k points per forward (the vmapped stacked forward compiled);
- for fp32 models, one point and "auto" points per forward under `autocast="bfloat16"`.
MFU = 2 * parameters * tokens per point / seconds per point / measured bf16 matmul rate.

    python benchmarks/gpu_speed.py [--workloads a,b] [--steps 21] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_utils import matmul_rate, write_results
from transformers import GPT2Config, GPT2LMHeadModel

from hf_landscape import CausalLMObjective, LandscapeProbe

WORKLOADS = {
    "a": dict(n_layer=4, n_embd=256, n_head=4, vocab_size=4096, n_positions=128),
    "b": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024),
}


def workload_model(workload: str, dtype: torch.dtype) -> GPT2LMHeadModel:
    """The GPT-2 of `WORKLOADS[workload]` on the GPU in `dtype`, in eval mode, weights from `torch.manual_seed(0)`."""
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(**WORKLOADS[workload])).to("cuda", dtype).eval()


def workload_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line with `--workload` (default b) and `--dtype` (default bfloat16)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="b")
    parser.add_argument("--dtype", default="bfloat16")
    return parser


def timed(fn, rounds: int = 2):
    best, out = float("inf"), None
    for _ in range(rounds):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, best


def run(
    workload: str,
    dtype: torch.dtype,
    steps: int,
    ks: list,
    rate: float,
    compile_forward: bool,
    looped: list,
    compiled_ks: list = (),
    compiled_modes: list = ("default",),
) -> dict:
    model = workload_model(workload, dtype)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, model.config.vocab_size, (16, 128)).tolist()
    objective = CausalLMObjective({"input_ids": ids}, max_length=128, batch_size=16)
    points = steps * steps
    tokens = 16 * 127
    rows = {}
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=1)
    base = probe.loss()
    _, floor = timed(lambda: [probe.loss() for _ in range(points)])
    rows["floor"] = floor
    eager = LandscapeProbe(model, objective, progress=False, points_per_forward=1, cuda_graphs=False)
    one, t = timed(lambda: eager.plane(steps=(steps, steps), seed=0))
    rows["1 point/forward, no graphs"] = t
    centre_ok = {"1": one.centre == base}
    graphed, t = timed(lambda: probe.plane(steps=(steps, steps), seed=0))
    rows["1 point/forward, CUDA graph"] = t
    centre_ok["graphs_equal_eager"] = bool(np.array_equal(graphed.values, one.values, equal_nan=True))
    # The one-point path's own cost: setting the weights of every point, without the forward.
    from hf_landscape.directions import prepare
    from hf_landscape.engine import editing

    weights, tensors = prepare(probe.model, one.directions)
    coords = [(a, b) for b in one.y for a in one.x]
    with editing(model, weights) as editor:
        _, t_set = timed(lambda: [editor.set_linear(c, tensors) for c in coords])
    rows["weight updates only"] = t_set
    import hf_landscape.engine.attention as attention

    for k in looped:  # without `attention.stacked_attention`: vmap's fallback loops over the points for SDPA
        attention.REGISTERED = False
        p = LandscapeProbe(model, objective, progress=False, points_per_forward=k)
        try:
            _, t = timed(lambda p=p: p.plane(steps=(steps, steps), seed=0))
            rows[f"{k} points/forward, SDPA looped per point"] = t
        except torch.OutOfMemoryError:
            rows[f"{k} points/forward, SDPA looped per point"] = float("nan")
        finally:
            attention.REGISTERED = True
    auto_values = None
    for k in ks:
        p = LandscapeProbe(model, objective, progress=False, points_per_forward=k)
        try:
            surf, t = timed(lambda p=p: p.plane(steps=(steps, steps), seed=0))
        except torch.OutOfMemoryError:
            rows[f"{k} points/forward"] = float("nan")
            continue
        rows[f"{k} points/forward"] = t
        if k == "auto":
            auto_values = surf.values
        centre_ok[str(k)] = abs(surf.centre - base) <= 1e-5 * abs(base)
        centre_ok[f"{k}_max_abs_diff_vs_1"] = float(np.nanmax(np.abs(surf.values - one.values)))
    p = LandscapeProbe(model, objective, progress=False, cuda_graphs=False)  # "auto" without CUDA graphs
    surf, t = timed(lambda p=p: p.plane(steps=(steps, steps), seed=0))
    rows["auto points/forward, no graphs"] = t
    if auto_values is not None:  # bitwise where "auto" takes the same path both ways; where it records one point
        # with graphs but stacks without ((b) in fp32), cuBLAS's batched and single fp32 products differ at 1e-7
        centre_ok["auto_with_and_without_graphs_equal"] = bool(np.array_equal(surf.values, auto_values, equal_nan=True))
    if dtype == torch.float32:  # fp32 weights, matrix products in bf16 (`autocast="bfloat16"`)
        for k in (1, "auto"):
            p = LandscapeProbe(model, objective, progress=False, points_per_forward=k, autocast="bfloat16")
            surf, t = timed(lambda p=p: p.plane(steps=(steps, steps), seed=0))
            rows[f"{k} point(s)/forward, autocast bf16"] = t
            centre_ok[f"autocast_{k}_max_abs_diff_vs_fp32"] = float(np.nanmax(np.abs(surf.values - one.values)))
    import hf_landscape.engine as engine

    default_mode = engine.POLICY.stacked_compile_mode
    for k, mode in [(k, m) for k in compiled_ks for m in compiled_modes]:  # the vmapped stacked forward compiled
        engine.POLICY.stacked_compile_mode = mode
        p = LandscapeProbe(model, objective, progress=False, points_per_forward=k, compile=True)
        name = f"{k} points/forward, compile=True ({mode})"
        try:
            surf, t = timed(lambda p=p: p.plane(steps=(steps, steps), seed=0))  # the faster round is warm
            rows[name] = t
            centre_ok[f"compiled_{k}_{mode}_max_abs_diff_vs_1"] = float(np.nanmax(np.abs(surf.values - one.values)))
        except Exception as err:  # report, don't hide
            rows[name] = float("nan")
            centre_ok[f"compiled_{k}_{mode}_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        finally:
            engine.POLICY.stacked_compile_mode = default_mode
    if compile_forward:
        compiled = LandscapeProbe(model, objective, progress=False, compile=True)
        try:
            compiled.plane(steps=(3, 3), seed=0)  # compile and capture the graphs
            surf, t = timed(lambda: compiled.plane(steps=(steps, steps), seed=0))
            rows["1 point/forward, compile=True (CUDA graphs)"] = t
            centre_ok["compiled_max_abs_diff_vs_1"] = float(np.nanmax(np.abs(surf.values - one.values)))
        except Exception as err:  # report, don't hide
            rows["1 point/forward, compile=True (CUDA graphs)"] = float("nan")
            centre_ok["compile_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    table = {
        name: {
            "s": t,
            "points_per_s": points / t,
            "x_floor": t / floor,
            "mfu": 2 * params * tokens * points / t / rate,
        }
        for name, t in rows.items()
    }
    return {
        "workload": workload,
        "dtype": str(dtype),
        "params": params,
        "points": points,
        "table": table,
        "checks": centre_ok,
    }


def main() -> None:
    import logging

    logging.basicConfig(format="  [%(name)s] %(message)s")
    logging.getLogger("hf_landscape.engine.runner").setLevel(logging.INFO)  # prints the k that "auto" chooses
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="a,b")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--ks", default="8,32,auto")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--looped-ks", default="", help="also time these k with SDPA looped per point (vmap's own fallback)")
    parser.add_argument("--compiled-ks", default="", help="also time compile=True with these k points per forward")
    parser.add_argument("--compiled-modes", default="default", help="torch.compile modes for --compiled-ks")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    rate = matmul_rate()
    print(f"GPU: {torch.cuda.get_device_name()}  bf16 matmul: {rate / 1e12:.0f} TFLOP/s", flush=True)
    ks = [k if k == "auto" else int(k) for k in args.ks.split(",")]
    results = []
    for w in args.workloads.split(","):
        for dt in args.dtypes.split(","):
            looped = [int(k) for k in args.looped_ks.split(",") if k]
            compiled_ks = [int(k) for k in args.compiled_ks.split(",") if k]
            modes = args.compiled_modes.split(",")
            r = run(w, getattr(torch, dt), args.steps, ks, rate, not args.no_compile, looped, compiled_ks, modes)
            results.append(r)
            print(
                f"\n## workload {w}, {dt}, {r['params'] / 1e6:.1f}M params, {r['points']} points; checks {r['checks']}"
            )
            print("| path | s | points/s | x floor | MFU |\n|---|---|---|---|---|")
            for name, row in r["table"].items():
                print(
                    f"| {name} | {row['s']:.2f} | {row['points_per_s']:.0f} | {row['x_floor']:.2f} | {row['mfu']:.1%} |",
                    flush=True,
                )
    write_results(args.json, rate, results)


if __name__ == "__main__":
    main()
