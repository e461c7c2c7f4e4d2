"""What curvature costs: one Hessian-vector product by finite differences (two gradients, no double backward) and
by double backward (exact), against one gradient, in time and peak memory; then the top-3 eigenvalues (thick-restart
Lanczos) and a spectral density (stochastic Lanczos quadrature) on finite-difference products, with the Lanczos
overhead over the products it made.

Models are Llama-architecture models built from configs with random weights (`torch.manual_seed(0)`; cost does not
depend on the weights' values): `tiny` (a 2-layer, width-64 check), `smollm2` (SmolLM2-135M's config), `1b`
(TinyLlama-1.1B's) and `8b` (Llama-3-8B's). Data: `--sequences` random sequences of `--tokens` tokens
(`torch.Generator().manual_seed(1)`), no padding. Weights in `--dtype` (bfloat16 on CUDA, float32 on the CPU by
default); products, gradients and Lanczos vectors accumulate in float32 (the library's rule: at least float32).

Products run over the parameters `--include` selects (regular expressions on names; default: all of them, except for
`8b`, where the last 4 decoder layers are selected so that the Lanczos vectors fit beside the model on one 80 GB card);
the gradient is over the same selection. The relative error of the finite-difference product is measured against the
exact one for the same Rademacher vector.

The Lanczos vectors live on the GPU where they fit in half its free memory, else on the CPU (`--offload`); a spectrum
whose `--spectrum-steps` vectors fit neither runs without reorthogonalization (the JSON records which).

Time: the fastest of `--rounds` rounds after a warm-up; on a shared machine, where the load drifts between
measurements, the `alternating` task also times gradients and finite-difference products in turn in one process
(gradient first in even rounds, product first in odd ones) and reports the ratio of their fastest rounds. Peak memory:
on CUDA,
`torch.cuda.max_memory_allocated` over the call (weights included); on the CPU, each measurement runs in a fresh
process and the peak resident set above its start is sampled every 2 ms (weights excluded), and beside it the peak of
the bytes glibc's malloc has handed out and not taken back (`mallinfo2`: in-use heap plus mapped blocks, "in use"),
which leaves out the freed heap that malloc keeps. Every task starts its measurement from the same state: the model,
the data and (products) the vector v already made, as a Krylov method holds v before it asks for a product; each
round's result (the gradient, or the product) is dropped before the next round, so no round holds an earlier one's.
Each task that runs out of memory is recorded as such and the next one runs; tasks that would start after
`--budget-s` seconds are skipped.

    python benchmarks/curvature_cost.py --device cuda --models 1b,8b --out curvature_cost.json
    python benchmarks/curvature_cost.py --device cpu --models tiny --eig-steps 20 --spectrum-steps 10 --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch
from bench_utils import LLAMA_CONFIGS
from transformers import LlamaConfig, LlamaForCausalLM

from hf_landscape import CausalLMObjective, hessian_eigenvalues, hessian_spectrum
from hf_landscape.curvature.hvp import FlatParameters, differentiable, grad_into, select
from hf_landscape.curvature.operators import CurvatureOperator, operator_for

CONFIGS = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
    ),
    # HuggingFaceTB/SmolLM2-135M config.json
    "smollm2": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    **LLAMA_CONFIGS,
}
# The last 4 of 32 layers (0.87B parameters, 3.5 GB per float32 vector): the Lanczos basis fits beside the model.
DEFAULT_INCLUDE = {"8b": [r"^model\.layers\.(28|29|30|31)\."]}
PRODUCTS = {"fd_hvp": "finite_difference", "exact_hvp": "exact"}
TASKS = ("gradient", "fd_hvp", "exact_hvp", "alternating", "fd_error", "eigenvalues", "spectrum")

_CACHE: dict[str, Any] = {}


def build(spec: dict) -> tuple[torch.nn.Module, CausalLMObjective]:
    """The model and objective `spec` describes (cached per process)."""
    key = json.dumps({k: spec[k] for k in ("model", "dtype", "device", "sequences", "tokens", "batch_size")})
    if _CACHE.get("key") != key:
        _CACHE.clear()
        if spec["device"] == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        config = LlamaConfig(**CONFIGS[spec["model"]], attn_implementation="sdpa")
        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, spec["dtype"]))  # built in the target dtype: no float32 copy at 8B
        try:
            with torch.device(spec["device"]):
                model = LlamaForCausalLM(config).eval()
        finally:
            torch.set_default_dtype(previous)
        gen = torch.Generator().manual_seed(1)
        ids = torch.randint(0, config.vocab_size, (spec["sequences"], spec["tokens"]), generator=gen).tolist()
        objective = CausalLMObjective({"input_ids": ids}, max_length=spec["tokens"], batch_size=spec["batch_size"])
        _CACHE.update(key=key, model=model, objective=objective)
    return _CACHE["model"], _CACHE["objective"]


class PeakMemory:
    """Peak memory of the block in GiB: CUDA's allocator peak (weights included), or the CPU resident set above its
    start (`peak_gib`) and the bytes malloc has handed out above its start (`in_use_gib`, NaN without glibc's
    `mallinfo2`), both sampled every 2 ms."""

    def __init__(self, device: str) -> None:
        self.device, self.peak_gib, self.in_use_gib = device, float("nan"), float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._start = self._peak = _rss()
            self._in_use_start = self._in_use_peak = _in_use()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss())
            self._in_use_peak = max(self._in_use_peak, _in_use())

    def __exit__(self, *exc: Any) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_gib = torch.cuda.max_memory_allocated() / 2**30
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss())
            self._in_use_peak = max(self._in_use_peak, _in_use())
            self.peak_gib = (self._peak - self._start) / 2**30
            self.in_use_gib = (self._in_use_peak - self._in_use_start) / 2**30


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")
    ]  # fmt: skip


try:
    _MALLINFO2: Any = ctypes.CDLL("libc.so.6").mallinfo2
    _MALLINFO2.restype = _MallInfo2
except (OSError, AttributeError):  # not glibc, or glibc before 2.33
    _MALLINFO2 = None


def _in_use() -> float:
    """Bytes malloc has handed out and not taken back (in-use heap chunks plus mapped blocks), NaN without glibc."""
    if _MALLINFO2 is None:
        return float("nan")
    info = _MALLINFO2()
    return float(info.uordblks + info.hblkhd)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rademacher(flat: FlatParameters, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=flat.device).manual_seed(seed)
    v = torch.randint(0, 2, (flat.size,), generator=gen, device=flat.device).to(flat.dtype)
    return v.mul_(2).sub_(1)


class ProductTimer:
    """Adds up the time spent inside `CurvatureOperator.__call__` (synchronized) for the block: a Lanczos run's time
    over its own products' time is its overhead, measured in one process, whatever the machine's load."""

    def __init__(self, device: str) -> None:
        self.device, self.seconds = device, 0.0

    def __enter__(self) -> ProductTimer:
        self.original = call = CurvatureOperator.__call__

        def timed(op: CurvatureOperator, v: torch.Tensor) -> torch.Tensor:
            _sync(self.device)
            start = time.perf_counter()
            out = call(op, v)
            _sync(self.device)
            self.seconds += time.perf_counter() - start
            return out

        CurvatureOperator.__call__ = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        CurvatureOperator.__call__ = self.original  # type: ignore[method-assign]


def placement(spec: dict, flat: FlatParameters, vectors: int) -> tuple[bool, bool]:
    """(offload, reorthogonalize) for a Lanczos run holding `vectors` vectors: on the GPU where they take at most half
    its free memory, else on the CPU where they take at most half its available memory, else (a spectrum only) three
    vectors without reorthogonalization; on a CPU run, with reorthogonalization where they take at most half the
    available memory. `--offload on|off` forces the place on a GPU."""
    need = vectors * flat.size * flat.dtype.itemsize
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    if spec["device"] != "cuda":  # the vectors live beside the model in the host's memory
        return False, need <= 0.5 * available
    if spec["offload"] != "auto":
        return spec["offload"] == "on", True
    if need <= 0.5 * torch.cuda.mem_get_info()[0]:
        return False, True
    return True, need <= 0.5 * available


def run_task(spec: dict, task: str) -> dict:
    """One measurement: seconds (fastest of `spec["rounds"]`), peak GiB, and what the task found."""
    model, objective = build(spec)
    device = spec["device"]
    flat = FlatParameters(select(model, spec["include"], None, True))
    out: dict[str, Any] = {"task": task, "selected": flat.size}
    best = float("inf")
    timed = ("gradient", "fd_hvp", "exact_hvp", "alternating")
    rounds = spec["rounds"] + 1 if task in timed else 1  # the first is a warm-up
    if task in ("eigenvalues", "spectrum"):  # one untimed product first, as the products' own first round is
        with operator_for(model, objective, flat, hvp="finite_difference") as op:
            op(rademacher(flat, 0))
        _sync(device)
    v = rademacher(flat, 0) if task in (*PRODUCTS, "alternating") else None  # made before the measurement
    inside = ProductTimer(device) if task in ("eigenvalues", "spectrum") else contextlib.nullcontext()
    with PeakMemory(device) as peak, inside:
        if task == "gradient":
            with differentiable(model, flat.params):
                for round_ in range(rounds):
                    _sync(device)
                    start = time.perf_counter()
                    g = grad_into(model, objective, flat)
                    _sync(device)
                    best = min(best, time.perf_counter() - start) if round_ else best
                    out["norm"] = float(torch.linalg.vector_norm(g))
                    del g
        elif task in PRODUCTS:
            with operator_for(model, objective, flat, hvp=PRODUCTS[task]) as op:
                for round_ in range(rounds):
                    _sync(device)
                    start = time.perf_counter()
                    hv = op(v)
                    _sync(device)
                    best = min(best, time.perf_counter() - start) if round_ else best
                    out["norm"] = float(torch.linalg.vector_norm(hv))
                    del hv
        elif task == "alternating":
            calls = {"gradient": lambda: grad_into(model, objective, flat), "fd_hvp": lambda: op(v)}
            fastest = dict.fromkeys(calls, float("inf"))
            with operator_for(model, objective, flat, hvp="finite_difference") as op:
                for round_ in range(rounds):
                    for name in sorted(calls, reverse=bool(round_ % 2)):
                        _sync(device)
                        start = time.perf_counter()
                        result = calls[name]()
                        _sync(device)
                        if round_:
                            fastest[name] = min(fastest[name], time.perf_counter() - start)
                        del result
            out.update(gradient_seconds=fastest["gradient"], fd_hvp_seconds=fastest["fd_hvp"])
            out["ratio"] = fastest["fd_hvp"] / fastest["gradient"]
            best = float("nan")
        elif task == "fd_error":
            v = rademacher(flat, 0)
            with operator_for(model, objective, flat, hvp="exact") as op:
                exact = op(v)
            with operator_for(model, objective, flat, hvp="finite_difference") as op:
                approx = op(v)
                out["fd_step"] = op.fd_step
            out["relative_error"] = float(torch.linalg.vector_norm(approx - exact) / torch.linalg.vector_norm(exact))
            best = float("nan")
        elif task == "eigenvalues":
            offload, _ = placement(spec, flat, spec["basis_size"] + 1)
            out["offload"] = offload
            _sync(device)
            start = time.perf_counter()
            result = hessian_eigenvalues(
                model, objective, k=3, tol=spec["eig_tol"], max_iter=spec["eig_steps"], basis_size=spec["basis_size"],
                include=spec["include"], hvp="finite_difference", offload=offload, progress=False,
            )  # fmt: skip
            _sync(device)
            best = time.perf_counter() - start
            out.update(
                eigenvalues=[float(x) for x in result.eigenvalues],
                residuals=[float(x) for x in result.residuals],
                products=result.iterations + len(result.eigenvalues),
                converged=bool(result.converged),
            )
        elif task == "spectrum":
            offload, reorthogonalize = placement(spec, flat, spec["spectrum_steps"] + 1)
            offload = offload and reorthogonalize
            out.update(offload=offload, reorthogonalize=reorthogonalize)
            _sync(device)
            start = time.perf_counter()
            spectrum = hessian_spectrum(
                model, objective, steps=spec["spectrum_steps"], probes=spec["spectrum_probes"],
                include=spec["include"], hvp="finite_difference", offload=offload, reorthogonalize=reorthogonalize,
                progress=False,
            )  # fmt: skip
            _sync(device)
            best = time.perf_counter() - start
            finite = spectrum.nodes[np.isfinite(spectrum.nodes)]
            out.update(
                products=int(finite.size),
                trace=float(spectrum.trace),
                trace_interval=[float(x) for x in spectrum.trace_interval],
                nodes_min=float(finite.min()),
                nodes_max=float(finite.max()),
                nodes=spectrum.nodes.tolist(),
                weights=spectrum.weights.tolist(),
            )
    out["seconds"] = best
    if isinstance(inside, ProductTimer):  # the run's own products: what the Lanczos time is set against
        out["products_seconds"] = inside.seconds
    out["peak_gib"] = peak.peak_gib
    out["in_use_gib"] = peak.in_use_gib
    return out


def run_isolated(spec: dict, task: str) -> dict:
    """`run_task` where memory can be read: in this process on CUDA, in a fresh process on the CPU."""
    if spec["device"] == "cuda":
        return run_task(spec, task)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_task, spec, task).result()


def measure_model(spec: dict, deadline: float) -> dict:
    results: dict[str, Any] = {}
    order = [t for t in TASKS if t not in spec["skip"]]
    for task in order:
        if time.perf_counter() > deadline:
            results[task] = {"task": task, "status": "skipped (budget)"}
            continue
        try:
            results[task] = {"status": "ok", **run_isolated(spec, task)}
        except torch.OutOfMemoryError:
            results[task] = {"task": task, "status": "out of memory"}
        except RuntimeError as err:  # the CPU allocator's failure is a plain RuntimeError
            if "can't allocate memory" not in str(err):
                raise
            results[task] = {"task": task, "status": "out of memory (host)"}
        if spec["device"] == "cuda":
            torch.cuda.empty_cache()
        line = {k: v for k, v in results[task].items() if k not in ("nodes", "weights")}
        print(f"[{spec['model']}] {line}", flush=True)
    return results


def ratio(results: dict, task: str, key: str, base: str = "gradient") -> str:
    a, b = results.get(task, {}).get(key), results.get(base, {}).get(key)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return results.get(task, {}).get("status", "-")
    return f"{a:.3g} ({a / b:.2f}×)"


def own(result: dict) -> str:
    """A Lanczos task's time over the time spent in its own products."""
    inside = result.get("products_seconds")
    return f"{result['seconds'] / inside:.3f}" if inside else "-"


def markdown(report: dict) -> str:
    cpu = report["device"].startswith("CPU")
    in_use = " gradient in use GiB | FD HVP in use GiB | exact HVP in use GiB |" if cpu else ""
    lines = [
        "| model | selected | gradient s | FD HVP s | exact HVP s | FD HVP ÷ gradient, alternating | gradient GiB | "
        "FD HVP GiB | exact HVP GiB |" + in_use + " FD error |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * 3 * cpu,
    ]
    for name, r in report["models"].items():
        g = r.get("gradient", {})
        err = r.get("fd_error", {}).get("relative_error")
        a = r.get("alternating", {})
        alternating = (
            f"{a['fd_hvp_seconds']:.3g} / {a['gradient_seconds']:.3g} = {a['ratio']:.2f}×"
            if "ratio" in a
            else a.get("status", "-")
        )
        in_use = (
            f" {g.get('in_use_gib', float('nan')):.3g} | {ratio(r, 'fd_hvp', 'in_use_gib')} | "
            f"{ratio(r, 'exact_hvp', 'in_use_gib')} |"
            if cpu
            else ""
        )
        lines.append(
            f"| {name} | {g.get('selected', 0) / 1e6:.1f} M | {g.get('seconds', float('nan')):.3g} | "
            f"{ratio(r, 'fd_hvp', 'seconds')} | {ratio(r, 'exact_hvp', 'seconds')} | {alternating} | "
            f"{g.get('peak_gib', float('nan')):.3g} | {ratio(r, 'fd_hvp', 'peak_gib')} | "
            f"{ratio(r, 'exact_hvp', 'peak_gib')} |{in_use} {'-' if err is None else f'{err:.2g}'} |"
        )
    lines += [
        "",
        "| model | top-3 eigenvalues (FD) | products | s | × its products | spectrum steps × probes | s | "
        "× its products | × the FD HVP row | trace | nodes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["models"].items():
        e, s = r.get("eigenvalues", {}), r.get("spectrum", {})
        hvp = r.get("fd_hvp", {}).get("seconds")
        eig = ", ".join(f"{x:.4g}" for x in e["eigenvalues"]) if "eigenvalues" in e else e.get("status", "-")
        if "trace" in s:
            over = f"{s['seconds'] / (s['products'] * hvp):.2f}" if hvp else "-"
            spectrum = (
                f"{report['spectrum_steps']} × {report['spectrum_probes']} | {s['seconds']:.3g} | {own(s)} | {over} | "
                f"{s['trace']:.4g} | [{s['nodes_min']:.3g}, {s['nodes_max']:.3g}]"
            )
        else:
            spectrum = f"{s.get('status', '-')} | | | | |"
        lines.append(
            f"| {name} | {eig} | {e.get('products', '-')} | {e.get('seconds', float('nan')):.3g} | {own(e)} | "
            f"{spectrum} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--models", default="1b,8b", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--dtype", default=None, help="weights' dtype (default bfloat16 on CUDA, float32 on the CPU)")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--include", default=None, help="regular expressions (comma-separated) of selected names")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds of the gradient and products (fastest)")
    parser.add_argument("--eig-steps", type=int, default=40, help="at most this many products for the top 3")
    parser.add_argument("--eig-tol", type=float, default=1e-2)
    parser.add_argument("--basis-size", type=int, default=6, help="Lanczos vectors held by the eigenvalue search")
    parser.add_argument("--spectrum-steps", type=int, default=20)
    parser.add_argument("--spectrum-probes", type=int, default=1)
    parser.add_argument(
        "--offload", default="auto", choices=["auto", "on", "off"],
        help="hold the Lanczos vectors on the CPU (auto: where they would take over half the free GPU memory; a "
        "spectrum whose vectors fit neither place runs without reorthogonalization, on three vectors)",
    )  # fmt: skip
    parser.add_argument("--skip", default="", help=f"comma-separated tasks to skip, of {', '.join(TASKS)}")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no task after this many seconds")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    start = time.perf_counter()
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    skip = [t for t in args.skip.split(",") if t]
    unknown = [m for m in args.models.split(",") if m not in CONFIGS] + [t for t in skip if t not in TASKS]
    if unknown:
        parser.error(f"unknown model(s) or task(s): {unknown}")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "dtype": dtype,
        "sequences": args.sequences,
        "tokens": args.tokens,
        "spectrum_steps": args.spectrum_steps,
        "spectrum_probes": args.spectrum_probes,
        "models": {},
    }
    for name in args.models.split(","):
        include = args.include.split(",") if args.include else DEFAULT_INCLUDE.get(name)
        spec = dict(
            model=name, dtype=dtype, device=args.device, sequences=args.sequences, tokens=args.tokens,
            batch_size=args.batch_size, include=include, rounds=args.rounds, eig_steps=args.eig_steps,
            eig_tol=args.eig_tol, basis_size=args.basis_size, spectrum_steps=args.spectrum_steps,
            spectrum_probes=args.spectrum_probes, offload=args.offload, skip=skip,
        )  # fmt: skip
        print(f"== {name}: include={include}, {dtype}, {args.sequences} x {args.tokens} tokens", flush=True)
        report["models"][name] = {"include": include, **measure_model(spec, start + args.budget_s)}
        _CACHE.clear()
    report["wall_s"] = time.perf_counter() - start
    table = markdown(report)
    print(f"\n{report['device']}, torch {torch.__version__}, weights {dtype}\n\n{table}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**report, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
