"""One loss-plane workload through hf_landscape and its peers: time, memory, and the centre value.

Workload: a GPT-2 built from a config with random weights (torch.manual_seed(0)) and 16 random
sequences x 128 tokens; the loss of every tool is the mean next-token cross-entropy over the batch
(`peers.common.lm_loss`); the plane is steps x steps points over [-1, 1]^2 along two random
directions, filter-normalized where the tool supports it (see `peers/*_peer.py` and
benchmarks/README.md for what each tool does instead).

    (a) 4 layers, width 256, 4 heads, vocab 4096, context 128          (4.2M parameters)
    (b) 12 layers, width 768, 12 heads, vocab 50257, context 1024      (GPT-2 small, 124M parameters)

Tools: hf_landscape, loss_landscapes (loss-landscapes), landscaper, nngeom, pylandscape (from PyPI;
`benchmarks/wheels.sh` downloads them) and li2018 (the reference code of Li et al., from a local clone
passed with --li-repo; skipped without it).

Each tool runs in its own subprocess, so that peaks do not mix. In it: build the model, take the
reference loss, time the floor (`--floor-evals` plain evaluations of the same loss with no
perturbation, half before the tool and half after it on a freshly built identical model, scaled to
`steps^2` points), then reset the host and GPU peaks and time the tool's whole plane call (directions
included). Reported per tool: wall time, points per second, ratio to the floor,
peak host memory (VmHWM, reset after the floor through /proc/self/clear_refs) and peak GPU memory
(torch.cuda.max_memory_allocated), each also as a ratio to the floor's peak, the tool's centre value
(alpha = beta = 0) against the reference loss (flagged when the relative difference is > 1e-4), and
whether the model's weights are bit-identical afterwards.

    python benchmarks/compare_peers.py --workload a --device cpu --steps 5
    python benchmarks/compare_peers.py --workload both --device cuda --li-repo ../loss-landscape --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):  # `peers` from here; hf_landscape from the checkout when it is not installed
    if path not in sys.path:
        sys.path.insert(0 if path == HERE else len(sys.path), path)

# glibc returning freed activations to the OS makes CPU timings swing (see cpu_overhead.py): pin it
# in every tool's process alike.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}

WORKLOADS: dict[str, dict[str, int]] = {
    "a": {"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab_size": 4096, "n_positions": 128},
    "b": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024},
}
BATCH, SEQ = 16, 128
ALL_TOOLS = ["hf_landscape", "loss_landscapes", "landscaper", "nngeom", "pylandscape", "li2018"]
REL_TOL = 1e-4
MODEL_SEED, DATA_SEED = 0, 1


# --- measurement helpers (used in the child) ----------------------------------------------------------


def host_peak_mib() -> float:
    """Peak resident set size of this process (VmHWM) in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_host_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def fingerprint(model: Any) -> list[tuple[str, str, str, int]]:
    """(name, dtype, device type, integer checksum of the raw bits) per parameter, computed in chunks so
    it allocates little; equal fingerprints mean the weights are (all but surely) bit-identical."""
    import torch

    out = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
            bits = flat.view(ints)
            total = 0
            for chunk in bits.split(1 << 20):
                c = chunk.to(torch.int64)
                total += int(c.sum()) + 3 * int((c * c % 1000003).sum())
            out.append((name, str(p.dtype), p.device.type, total))
    return out


def time_floor(model: Any, ids: Any, n: int, device: str) -> float:
    """Seconds per plain evaluation of the shared loss (after a warm-up), each read back like a tool's."""
    import torch
    from peers.common import lm_loss

    with torch.inference_mode():
        for _ in range(2):
            float(lm_loss(model, ids))
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            float(lm_loss(model, ids))
        sync(device)
        return (time.perf_counter() - start) / n


def build(workload: str, device: str, dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(MODEL_SEED)
    config = GPT2Config(**WORKLOADS[workload])
    model = GPT2LMHeadModel(config).to(device=device, dtype=getattr(torch, dtype)).eval()
    gen = torch.Generator().manual_seed(DATA_SEED)
    ids = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=gen).to(device)
    return model, ids


# --- the child: one tool, one workload ------------------------------------------------------------------


def child(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Fill `out` step by step (so that a failure still reports what was measured before it)."""
    import numpy as np
    import torch
    from peers import adapter
    from peers.common import Context, lm_loss

    mod = adapter(args.child)
    model, ids = build(args.workload, args.device, args.dtype)
    cuda = args.device == "cuda"
    points = args.steps * args.steps
    out["num_parameters"] = sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        out["reference_loss"] = float(lm_loss(model, ids))
    before = fingerprint(model)

    ctx = Context(model=model, ids=ids, device=args.device, steps=args.steps, seed=args.seed, li_repo=args.li_repo)
    state = mod.prepare(ctx) if hasattr(mod, "prepare") else None  # untimed: imports, centre of loss_landscapes

    # The floor: the same loss with no perturbation, in this process, half of the evaluations before the
    # tool and half after it (on a freshly built, identical model), so that drifting machine load hits
    # both alike; its memory peaks are those of the first half.
    n_floor = args.floor_evals or points
    n_before = max(1, n_floor // 2)
    gc.collect()
    reset_ok = reset_host_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    per_eval_before = time_floor(model, ids, n_before, args.device)
    floor = {
        "evals_timed": [n_before],
        "seconds_per_eval_before": per_eval_before,
        "host_peak_mib": host_peak_mib(),
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    out["floor"] = floor

    # The tool: its whole plane call, directions included.
    gc.collect()
    sync(args.device)
    reset_ok = reset_host_peak() and reset_ok
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = mod.run(ctx, state)
    sync(args.device)
    wall = time.perf_counter() - start
    host = host_peak_mib()
    gpu = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    if not reset_ok:
        ctx.notes.append("host peak could not be reset after the floor: it is max(floor, tool)")

    values = np.asarray(result.values, dtype=np.float64)
    out.update(
        points=points,
        seconds=wall,
        points_per_second=points / wall,
        host_peak_mib=host,
        gpu_peak_mib=gpu,
        centre=result.centre,
        centre_note=result.centre_note,
        grid_note=result.grid_note,
        values_shape=list(values.shape),
        values_min=float(np.nanmin(values)),
        values_max=float(np.nanmax(values)),
        nonfinite=int((~np.isfinite(values)).sum()),
        x=[float(v) for v in result.x],
        y=[float(v) for v in result.y],
        restored=fingerprint(model) == before,
        notes=ctx.notes,
        method=mod.METHOD,
    )

    # The second half of the floor, on a fresh copy of the model (the tool may have left it displaced,
    # cast or moved).
    del ctx, state, result, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    model, ids = build(args.workload, args.device, args.dtype)
    n_after = max(1, n_floor - n_before)
    per_eval_after = time_floor(model, ids, n_after, args.device)
    per_eval = (per_eval_before * n_before + per_eval_after * n_after) / (n_before + n_after)
    floor.update(
        evals_timed=[n_before, n_after],
        seconds_per_eval_after=per_eval_after,
        seconds_per_eval=per_eval,
        seconds=per_eval * points,
    )


# --- the parent -------------------------------------------------------------------------------------


def versions(li_repo: str | None) -> dict[str, Any]:
    from peers.common import version_of

    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "numpy", "hf_landscape", "loss-landscapes", "landscaper", "nngeom"):
        out[dist] = version_of(dist)
    out["pylandscape"] = version_of("pylandscape")
    out["pyhessian"] = version_of("pyhessian")
    if li_repo:
        try:
            sha = subprocess.run(
                ["git", "-C", li_repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            sha = ""
        out["li2018"] = sha or "unknown commit"
    return out


def run_tool(tool: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    if tool == "li2018" and not args.li_repo:
        return {
            "tool": tool,
            "workload": workload,
            "skipped": "no --li-repo given (a clone of tomgoldstein/loss-landscape)",
        }
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "result.json")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            tool,
            "--workload",
            workload,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--steps",
            str(args.steps),
            "--seed",
            str(args.seed),
            "--floor-evals",
            str(args.floor_evals),
            "--child-out",
            result_file,
        ]
        if args.li_repo:
            cmd += ["--li-repo", args.li_repo]
        env = {**os.environ, **MALLOC, "TOKENIZERS_PARALLELISM": "false"}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.tool_timeout)
        except subprocess.TimeoutExpired:
            return {"tool": tool, "workload": workload, "error": f"timed out after {args.tool_timeout} s"}
        if os.path.exists(result_file):
            with open(result_file) as f:
                out = json.load(f)
        else:
            out = {"tool": tool, "workload": workload, "error": f"exit code {proc.returncode}, no result"}
        out["process_seconds"] = time.perf_counter() - start
        if "error" in out or args.verbose:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            out["log_tail"] = tail
        return out


def fmt(value: Any, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def print_table(workload: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    cfg = WORKLOADS[workload]
    done = [r for r in rows if "seconds" in r]
    params = done[0]["num_parameters"] if done else None
    refs = {round(r["reference_loss"], 6) for r in done}
    print()
    print(
        f"== workload {workload}: GPT-2 {cfg['n_layer']} layers, width {cfg['n_embd']}, {cfg['n_head']} heads, "
        f"vocab {cfg['vocab_size']}, context {cfg['n_positions']}; {BATCH} x {SEQ} tokens; "
        f"{fmt(params, ',')} parameters; {args.device} {args.dtype}; {args.steps} x {args.steps} points"
    )
    if done:
        ref = done[0]["reference_loss"]
        same = "same in every process" if len(refs) == 1 else f"DIFFERS between processes: {sorted(refs)}"
        floors = ", ".join(f"{r['floor']['seconds_per_eval'] * 1e3:.1f}" for r in done)
        print(f"reference loss (plain, unperturbed) = {ref:.6f} ({same}); floor ms/eval per process: {floors}")
    header = (
        f"{'tool':<16} {'version':<9} {'wall s':>9} {'pts/s':>8} {'x floor':>8} {'host MiB':>9} {'x fl':>5} "
        f"{'GPU MiB':>8} {'x fl':>5} {'centre':>10} {'|centre-ref|':>12} {'restored':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        tool = r["tool"]
        version = r.get("version") or ""
        if "skipped" in r:
            print(f"{tool:<16} {version:<9} skipped: {r['skipped']}")
            continue
        if "seconds" not in r:
            print(f"{tool:<16} {version:<9} ERROR: {r.get('error', '?')}")
            continue
        fl = r["floor"]
        ratio_t = r["seconds"] / fl["seconds"]
        ratio_h = r["host_peak_mib"] / fl["host_peak_mib"]
        ratio_g = r["gpu_peak_mib"] / fl["gpu_peak_mib"] if r["gpu_peak_mib"] is not None else None
        diff = abs(r["centre"] - r["reference_loss"])
        flag = " FLAG" if not diff <= REL_TOL * abs(r["reference_loss"]) else ""
        centre_mark = "*" if r.get("centre_note") else ""
        print(
            f"{tool:<16} {version:<9} {r['seconds']:>9.2f} {r['points_per_second']:>8.2f} {ratio_t:>8.2f} "
            f"{r['host_peak_mib']:>9.0f} {ratio_h:>5.2f} {fmt(r['gpu_peak_mib'], '8.0f'):>8} "
            f"{fmt(ratio_g, '5.2f'):>5} {r['centre']:>10.6f}{centre_mark:1}{diff:>11.2e}{flag} "
            f"{'yes' if r['restored'] else 'NO':>8}"
        )
    print("x floor: wall / (points x one plain loss evaluation); host/GPU x fl: peak / the floor's peak.")
    print("restored: the model's weights are bit-identical after the call. *: see the centre note below.")
    for r in rows:
        if "method" in r:
            notes = "; ".join(r["notes"])
            print(f"  {r['tool']}: {r['method']}" + (f" [{notes}]" if notes else ""))
            if r.get("centre_note"):
                print(f"      * centre: {r['centre_note']}")
        if r.get("log_tail"):
            print(f"  {r['tool']} log tail:")
            for line in r["log_tail"]:
                print(f"      {line}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["a", "b", "both"], default="a")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--steps", type=int, default=21, help="points per axis (odd, so the grid has a centre)")
    parser.add_argument("--seed", type=int, default=0, help="direction seed given to every tool")
    parser.add_argument(
        "--tools", default=",".join(ALL_TOOLS), help=f"comma-separated, from {','.join(ALL_TOOLS)} (default: all)"
    )
    parser.add_argument("--li-repo", default=None, help="local clone of github.com/tomgoldstein/loss-landscape")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="also write the results here")
    parser.add_argument(
        "--floor-evals", type=int, default=0, help="plain evaluations timed for the floor (default: steps^2)"
    )
    parser.add_argument("--tool-timeout", type=float, default=3600.0, help="seconds before a tool's process is killed")
    parser.add_argument("--verbose", action="store_true", help="print the tail of every tool's own output")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 3 or args.steps % 2 == 0:
        parser.error(f"--steps must be odd and >= 3 (the grid must pass through the centre), got {args.steps}")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in ALL_TOOLS]
    if unknown:
        parser.error(f"unknown tool(s) {unknown}; choose from {ALL_TOOLS}")
    args.tools = tools
    if args.li_repo:
        args.li_repo = os.path.abspath(os.path.expanduser(args.li_repo))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        if args.device is None:
            args.device = "cpu"
        out: dict[str, Any] = {"tool": args.child, "workload": args.workload}
        try:
            child(args, out)
        except Exception as exc:  # reported in the table; the other tools still run
            out["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        with open(args.child_out, "w") as f:
            json.dump(out, f)
        return

    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available here")
    from peers import adapter

    info = versions(args.li_repo)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(
        f"device: {args.device} ({device_name}); torch {info['torch']}, transformers {info['transformers']}, "
        f"threads {torch.get_num_threads()}, cores {os.cpu_count()}"
    )
    workloads = ["a", "b"] if args.workload == "both" else [args.workload]
    report: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "child_out")},
        "device_name": device_name,
        "versions": info,
        "workloads": {},
    }
    for workload in workloads:
        rows = []
        for tool in args.tools:
            dist = adapter(tool).DIST
            version = info.get(dist) if dist else (info.get("li2018", "")[:8] if args.li_repo else None)
            print(f"[{workload}] {tool} ...", end=" ", flush=True)
            row = run_tool(tool, workload, args)
            row["version"] = version
            state = "skipped" if "skipped" in row else ("error" if "error" in row else f"{row['seconds']:.1f} s")
            print(state, flush=True)
            rows.append(row)
        print_table(workload, rows, args)
        report["workloads"][workload] = {
            "config": {**WORKLOADS[workload], "batch": BATCH, "seq_len": SEQ},
            "rows": rows,
        }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
